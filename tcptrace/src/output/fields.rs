//! The columns of the live lines (`--fields`), for the text and CSV
//! outputs alike: each field's name, header, width, and its value for an
//! event and for a socket that existed at start. Values are written
//! through `Display` without allocating (the per-event path).

use std::fmt;

use super::{
    text::{pad, Addr, Elapsed, Escaped, WhatText},
    Shown,
};
use crate::{
    clock::TimeOfDay,
    event::{comm_str, errno_name, TcpEvent},
    snapshot::ExistingSocket,
};

/// One column of the live lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Field {
    /// Wall-clock time of day (UTC).
    Time,
    /// Wall-clock time: seconds since the Unix epoch, to the microsecond.
    Timestamp,
    /// The owner's process id.
    Pid,
    /// The owner's process name.
    Comm,
    Local,
    Remote,
    /// What happened: `OLD -> NEW`, a retransmit, a reset, an EOF read.
    Event,
    /// Time spent in the previous state.
    InOld,
    /// The process that acted, when it is not the owner (pid/comm).
    By,
    /// The socket's network namespace (inode).
    Netns,
    /// The owner's cgroup id at the socket's birth.
    Cgroup,
    /// The owner's Kubernetes namespace, pod and container names.
    Namespace,
    Pod,
    Container,
    /// Retransmits of the socket so far.
    Retransmits,
    /// The socket's error (`ECONNREFUSED`, `ETIMEDOUT`, ...).
    Error,
    /// The kernel address of the socket (tells sockets apart).
    Sock,
}

/// The text lines' columns unless `--fields` says otherwise.
pub const TEXT_DEFAULT: &[Field] = &[
    Field::Time,
    Field::Pid,
    Field::Comm,
    Field::Local,
    Field::Remote,
    Field::Event,
    Field::InOld,
    Field::By,
];

/// The CSV columns unless `--fields` says otherwise: every field.
pub const CSV_DEFAULT: &[Field] = &[
    Field::Timestamp,
    Field::Pid,
    Field::Comm,
    Field::Local,
    Field::Remote,
    Field::Event,
    Field::InOld,
    Field::By,
    Field::Netns,
    Field::Cgroup,
    Field::Namespace,
    Field::Pod,
    Field::Container,
    Field::Retransmits,
    Field::Error,
    Field::Sock,
];

impl Field {
    /// The field's name in `--fields` and in the CSV header.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Time => "time",
            Self::Timestamp => "timestamp",
            Self::Pid => "pid",
            Self::Comm => "comm",
            Self::Local => "local",
            Self::Remote => "remote",
            Self::Event => "event",
            Self::InOld => "in_old",
            Self::By => "by",
            Self::Netns => "netns",
            Self::Cgroup => "cgroup",
            Self::Namespace => "namespace",
            Self::Pod => "pod",
            Self::Container => "container",
            Self::Retransmits => "retransmits",
            Self::Error => "error",
            Self::Sock => "sock",
        }
    }

    /// The column's header in the text lines.
    #[must_use]
    pub fn header(self) -> &'static str {
        match self {
            Self::Time => "TIME(UTC)",
            Self::Timestamp => "TIMESTAMP",
            Self::Pid => "PID",
            Self::Comm => "COMM",
            Self::Local => "LOCAL",
            Self::Remote => "REMOTE",
            Self::Event => "EVENT",
            Self::InOld => "IN-OLD",
            Self::By => "BY",
            Self::Netns => "NETNS",
            Self::Cgroup => "CGROUP",
            Self::Namespace => "NAMESPACE",
            Self::Pod => "POD",
            Self::Container => "CONTAINER",
            Self::Retransmits => "RETRANS",
            Self::Error => "ERROR",
            Self::Sock => "SOCK",
        }
    }

    /// Text width, and whether the value is right-aligned (numbers).
    #[must_use]
    pub fn width(self) -> (usize, bool) {
        match self {
            Self::Time => (15, false),
            Self::Timestamp => (17, false),
            Self::Pid | Self::Retransmits => (7, true),
            Self::Comm => (16, false),
            Self::Local | Self::Remote => (22, false),
            Self::Event => (30, false),
            Self::InOld => (8, true),
            Self::By | Self::Error => (0, false),
            Self::Netns | Self::Cgroup => (10, true),
            Self::Namespace | Self::Pod | Self::Container => (20, false),
            Self::Sock => (18, false),
        }
    }
}

/// A field's value for an event.
pub struct EventValue<'a> {
    pub field: Field,
    pub event: &'a TcpEvent,
    pub shown: &'a Shown<'a>,
}

impl fmt::Display for EventValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (event, shown) = (self.event, self.shown);
        let labels = shown.labels;
        match self.field {
            Field::Time => pad(f, format_args!("{}", TimeOfDay(shown.unix_ns))),
            Field::Timestamp => pad(
                f,
                format_args!(
                    "{}.{:06}",
                    shown.unix_ns / 1_000_000_000,
                    shown.unix_ns / 1_000 % 1_000_000
                ),
            ),
            Field::Pid => match shown.owner {
                Some(owner) => fmt::Display::fmt(&owner.pid, f),
                None => f.pad("-"),
            },
            Field::Comm => match shown.owner {
                Some(owner) => Escaped(&owner.comm).fmt(f),
                None => f.pad("-"),
            },
            Field::Local => Addr(event.local).fmt(f),
            Field::Remote => Addr(event.remote).fmt(f),
            Field::Event => WhatText(event.what, event.sock.retransmits).fmt(f),
            Field::InOld => Elapsed(event.in_state_ns).fmt(f),
            Field::By => match &event.actor {
                Some(actor) if shown.owner.is_none_or(|o| o.pid != actor.tgid) => pad(
                    f,
                    format_args!("{}/{}", actor.tgid, Escaped(&comm_str(&actor.comm))),
                ),
                _ => f.pad(""),
            },
            Field::Netns => fmt::Display::fmt(&event.sock.netns, f),
            Field::Cgroup => fmt::Display::fmt(&event.sock.cgroup_id, f),
            Field::Namespace => Escaped(labels.map_or("", |l| &l.namespace)).fmt(f),
            Field::Pod => Escaped(labels.map_or("", |l| &l.pod)).fmt(f),
            Field::Container => Escaped(labels.map_or("", |l| &l.container)).fmt(f),
            Field::Retransmits => fmt::Display::fmt(&event.sock.retransmits, f),
            Field::Error => f.pad(event.error.map_or("", errno_name)),
            Field::Sock => pad(f, format_args!("{:#x}", event.skaddr)),
        }
    }
}

/// A field's value for a socket that existed when the session started:
/// `existing` in the time column, its state as the event, its holders'
/// `pid:fd` as who.
pub struct ExistingValue<'a> {
    pub field: Field,
    pub socket: &'a ExistingSocket,
}

impl fmt::Display for ExistingValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let socket = self.socket;
        let holder = socket.holders.first();
        match self.field {
            Field::Time | Field::Timestamp => f.pad("existing"),
            Field::Pid => match holder {
                Some(h) => fmt::Display::fmt(&h.pid, f),
                None => f.pad("-"),
            },
            Field::Comm => Escaped(holder.map_or("-", |h| &h.comm)).fmt(f),
            Field::Local => Addr(socket.local).fmt(f),
            Field::Remote => Addr(socket.remote).fmt(f),
            Field::Event => f.pad(socket.state.name()),
            Field::InOld | Field::Sock => f.pad("-"),
            Field::By => {
                if socket.holders.is_empty() {
                    return f.pad("-");
                }
                f.write_str("fds ")?;
                for (i, h) in socket.holders.iter().enumerate() {
                    let separator = if i == 0 { "" } else { "," };
                    write!(f, "{separator}{}:{}", h.pid, h.fd)?;
                }
                Ok(())
            }
            Field::Netns => fmt::Display::fmt(&socket.netns, f),
            Field::Cgroup
            | Field::Namespace
            | Field::Pod
            | Field::Container
            | Field::Retransmits
            | Field::Error => f.pad(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn names_are_what_the_flag_takes_and_csv_has_every_field() {
        for field in Field::value_variants() {
            let value = field.to_possible_value().expect("named");
            assert_eq!(value.get_name(), field.name());
        }
        assert_eq!(
            CSV_DEFAULT.len(),
            Field::value_variants().len() - 1,
            "all but `time`"
        );
    }
}
