//! The JSON line of one event, written straight into a byte buffer.
//!
//! `trace --json` writes a line per state change: at tens of thousands of
//! connections a second, serde's derive (every key escaped, every number and
//! address through `core::fmt`) was two thirds of the session's CPU, and a
//! reader that falls behind loses events. Keys here are literals, numbers
//! go through `itoa`, IPv4 addresses are written octet by octet; every
//! string value still goes through `serde_json`'s escaping, so a comm or
//! pod name chosen by an attacker cannot break the framing. The tests check
//! the line against the serde derive it replaces.

use std::net::SocketAddr;

use tcptrace_common::{Task, TcpState};

use super::Shown;
use crate::{
    container::ContainerLabels,
    event::{comm_str, errno_name, TcpEvent, TcpEventKind},
};

/// Appends `event`'s line (with its newline) to `line`.
pub fn write_event(line: &mut Vec<u8>, event: &TcpEvent, shown: &Shown) {
    static UNNAMED: ContainerLabels = ContainerLabels::EMPTY;
    let labels = shown.labels.map_or(&UNNAMED, |l| &**l);
    let (kind, old, new, state) = match event.what {
        TcpEventKind::StateChange { old, new } => ("state", Some(old), Some(new), None),
        TcpEventKind::Retransmit { state } => ("retransmit", None, None, state),
        TcpEventKind::ResetSent { state, .. } => ("reset_sent", None, None, state),
        TcpEventKind::ResetReceived => ("reset_received", None, None, None),
        TcpEventKind::EofRead => ("eof_read", None, None, None),
        TcpEventKind::SynAckRetransmit => {
            ("syn_ack_retransmit", None, None, Some(TcpState::Listen))
        }
    };
    let mut out = Line(line);
    out.raw(b"{\"type\":");
    out.name(kind);
    out.raw(b",\"time_ns\":");
    // A u64 until the year 2554, and much quicker to write than a u128.
    match u64::try_from(shown.unix_ns) {
        Ok(ns) => out.number(ns),
        Err(_) => out.number(shown.unix_ns),
    }
    out.raw(b",\"ktime_ns\":");
    out.number(event.ts_ns);
    out.raw(b",\"sock\":\"0x");
    out.hex(event.skaddr);
    out.raw(b"\",\"local\":");
    out.address(event.local);
    out.raw(b",\"remote\":");
    out.address(event.remote);
    for (key, state) in [
        (&b",\"old\":"[..], old),
        (b",\"new\":", new),
        (b",\"state\":", state),
    ] {
        if let Some(state) = state {
            out.raw(key);
            out.name(state.name());
        }
    }
    out.raw(b",\"in_old_state_ns\":");
    out.optional_number(event.in_state_ns);
    out.raw(b",\"owner\":");
    match shown.owner {
        Some(owner) => {
            out.raw(b"{\"pid\":");
            out.number(owner.pid);
            out.raw(b",\"comm\":");
            out.string(&owner.comm);
            out.raw(b",\"source\":");
            out.name(owner.source.as_str());
            out.raw(b"}");
        }
        None => out.raw(b"null"),
    }
    if let Some(stack) = event.owner().map(|o| o.stack).filter(|&s| s != 0) {
        out.raw(b",\"owner_stack_id\":");
        out.number(stack);
    }
    out.raw(b",\"actor\":");
    out.task(event.actor.as_ref());
    out.raw(b",\"closer\":");
    out.task(event.closer());
    out.raw(b",\"netns\":");
    out.number(event.sock.netns);
    out.raw(b",\"cgroup_id\":");
    out.number(event.sock.cgroup_id);
    for (key, name) in [
        (&b",\"namespace\":"[..], &labels.namespace),
        (b",\"pod\":", &labels.pod),
        (b",\"container\":", &labels.container),
    ] {
        if !name.is_empty() {
            out.raw(key);
            out.string(name);
        }
    }
    out.raw(b",\"retransmits\":");
    out.number(event.sock.retransmits);
    if let Some(errno) = event.error {
        out.raw(b",\"error\":");
        out.name(errno_name(errno));
    }
    if shown.history_incomplete {
        out.raw(b",\"history_incomplete\":true");
    }
    out.raw(b"}\n");
}

/// A line being written.
struct Line<'a>(&'a mut Vec<u8>);

impl Line<'_> {
    // Inlined: the literals' lengths are then constants, and their copies
    // plain moves instead of a `memmove` call each.
    #[expect(clippy::inline_always, reason = "measured: a call per literal piece")]
    #[inline(always)]
    fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn number(&mut self, n: impl itoa::Integer) {
        self.raw(itoa::Buffer::new().format(n).as_bytes());
    }

    fn optional_number(&mut self, n: Option<u64>) {
        match n {
            Some(n) => self.number(n),
            None => self.raw(b"null"),
        }
    }

    /// One of tcptrace's own names (a record type, a state, an owner's
    /// source, an errno): quoted as it is, for none holds a character JSON
    /// escapes (`names_need_no_escaping`). Anything a process or a
    /// cluster chose goes through `string`.
    fn name(&mut self, name: &'static str) {
        debug_assert!(!needs_escaping(name), "{name:?}");
        self.raw(b"\"");
        self.raw(name.as_bytes());
        self.raw(b"\"");
    }

    /// A JSON string, escaped by `serde_json`.
    fn string(&mut self, text: &str) {
        serde_json::to_writer(&mut *self.0, text).expect("writing to a Vec cannot fail");
    }

    /// Lower-case hexadecimal digits, no leading zeros (`{:x}`).
    fn hex(&mut self, n: u64) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 16];
        let mut start = digits.len();
        let mut rest = n;
        loop {
            start -= 1;
            digits[start] = DIGITS[(rest & 0xf) as usize];
            rest >>= 4;
            if rest == 0 {
                break;
            }
        }
        self.raw(&digits[start..]);
    }

    /// `"ip:port"` as `SocketAddr`'s `Display` writes it.
    fn address(&mut self, address: SocketAddr) {
        match address {
            SocketAddr::V4(v4) => {
                self.raw(b"\"");
                for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        self.raw(b".");
                    }
                    self.number(octet);
                }
                self.raw(b":");
                self.number(v4.port());
                self.raw(b"\"");
            }
            // Rare on the hot path, and `Display` knows the compressed form.
            SocketAddr::V6(_) => {
                use std::io::Write;
                let _ = write!(self.0, "\"{address}\"");
            }
        }
    }

    /// `{"pid","tid","comm"[,"thread"][,"stack_id"]}` or `null`.
    fn task(&mut self, task: Option<&Task>) {
        let Some(task) = task else {
            self.raw(b"null");
            return;
        };
        self.raw(b"{\"pid\":");
        self.number(task.tgid);
        self.raw(b",\"tid\":");
        self.number(task.pid);
        self.raw(b",\"comm\":");
        self.string(&comm_str(&task.comm));
        // The thread's own name, when it is not the process's.
        if task.thread_comm != task.comm {
            self.raw(b",\"thread\":");
            self.string(&comm_str(&task.thread_comm));
        }
        if task.stack != 0 {
            self.raw(b",\"stack_id\":");
            self.number(task.stack);
        }
        self.raw(b"}");
    }
}

/// Whether JSON needs `text` escaped: a quote, a backslash or a control
/// character in it.
fn needs_escaping(text: &str) -> bool {
    text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, sync::Arc};

    use serde::Serialize;
    use serde_json::Value;
    use tcptrace_common::CLOSER_KNOWN;

    use super::*;
    use crate::{
        event::synthetic::{task, Conn},
        owner::{Owner, OwnerSource},
    };

    /// The serde derive this writer replaced: the reference it must equal.
    #[derive(Serialize)]
    struct TaskJson<'a> {
        pid: u32,
        tid: u32,
        comm: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        thread: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        stack_id: Option<u64>,
    }

    impl<'a> TaskJson<'a> {
        fn of(task: &'a Task) -> Self {
            Self {
                pid: task.tgid,
                tid: task.pid,
                comm: comm_str(&task.comm),
                thread: (task.thread_comm != task.comm).then(|| comm_str(&task.thread_comm)),
                stack_id: (task.stack != 0).then_some(task.stack),
            }
        }
    }

    #[derive(Serialize)]
    struct OwnerJson<'a> {
        pid: u32,
        comm: &'a str,
        source: &'static str,
    }

    #[derive(Serialize)]
    struct EventJson<'a> {
        r#type: &'static str,
        time_ns: u128,
        ktime_ns: u64,
        sock: String,
        local: SocketAddr,
        remote: SocketAddr,
        #[serde(skip_serializing_if = "Option::is_none")]
        old: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        new: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        state: Option<&'static str>,
        in_old_state_ns: Option<u64>,
        owner: Option<OwnerJson<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        owner_stack_id: Option<u64>,
        actor: Option<TaskJson<'a>>,
        closer: Option<TaskJson<'a>>,
        netns: u32,
        cgroup_id: u64,
        #[serde(skip_serializing_if = "str::is_empty")]
        namespace: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        pod: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        container: &'a str,
        retransmits: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'static str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        history_incomplete: bool,
    }

    fn reference(event: &TcpEvent, shown: &Shown) -> String {
        static UNNAMED: ContainerLabels = ContainerLabels::EMPTY;
        let labels = shown.labels.map_or(&UNNAMED, |l| &**l);
        let (kind, old, new, state) = match event.what {
            TcpEventKind::StateChange { old, new } => {
                ("state", Some(old.name()), Some(new.name()), None)
            }
            TcpEventKind::Retransmit { state } => {
                ("retransmit", None, None, state.map(TcpState::name))
            }
            TcpEventKind::ResetSent { state, .. } => {
                ("reset_sent", None, None, state.map(TcpState::name))
            }
            TcpEventKind::ResetReceived => ("reset_received", None, None, None),
            TcpEventKind::EofRead => ("eof_read", None, None, None),
            TcpEventKind::SynAckRetransmit => ("syn_ack_retransmit", None, None, Some("LISTEN")),
        };
        let record = EventJson {
            r#type: kind,
            time_ns: shown.unix_ns,
            ktime_ns: event.ts_ns,
            sock: format!("{:#x}", event.skaddr),
            local: event.local,
            remote: event.remote,
            old,
            new,
            state,
            in_old_state_ns: event.in_state_ns,
            owner: shown.owner.map(|o| OwnerJson {
                pid: o.pid,
                comm: &o.comm,
                source: o.source.as_str(),
            }),
            owner_stack_id: event
                .owner()
                .and_then(|o| (o.stack != 0).then_some(o.stack)),
            actor: event.actor.as_ref().map(TaskJson::of),
            closer: event.closer().map(TaskJson::of),
            netns: event.sock.netns,
            cgroup_id: event.sock.cgroup_id,
            namespace: &labels.namespace,
            pod: &labels.pod,
            container: &labels.container,
            retransmits: event.sock.retransmits,
            error: event.error.map(errno_name),
            history_incomplete: shown.history_incomplete,
        };
        serde_json::to_string(&record).unwrap() + "\n"
    }

    /// Both writers' lines for `event`, as text.
    fn both(event: &TcpEvent, shown: &Shown) -> (String, String) {
        let mut line = Vec::new();
        write_event(&mut line, event, shown);
        (String::from_utf8(line).unwrap(), reference(event, shown))
    }

    fn shown<'a>(
        owner: Option<&'a Owner<'a>>,
        labels: Option<&'a Arc<ContainerLabels>>,
    ) -> Shown<'a> {
        Shown {
            owner,
            labels,
            unix_ns: 1_796_178_780_518_491_467,
            history_incomplete: false,
        }
    }

    #[test]
    fn every_kind_of_event_is_written_as_the_serde_derive_wrote_it() {
        let client = task(4242, "curl", 72_111_357_921_702_419);
        let conn = Conn::active(
            0xffff_8881_0ac9_3780,
            client,
            "10.0.0.1:40000",
            "10.0.0.9:80",
        );
        let owner = Owner {
            pid: 4242,
            comm: Cow::Borrowed("curl"),
            source: OwnerSource::Syscall,
        };
        let mut events = vec![
            conn.state(1, TcpState::Close, TcpState::SynSent),
            conn.state(2, TcpState::SynSent, TcpState::Established),
        ];
        let mut closed = conn.state(3, TcpState::Established, TcpState::Close);
        closed.sock.closer = client;
        closed.sock.flags |= CLOSER_KNOWN;
        closed.error = Some(libc::ECONNRESET);
        closed.in_state_ns = Some(1_424_448);
        events.push(closed);
        for what in [
            TcpEventKind::Retransmit {
                state: Some(TcpState::Established),
            },
            TcpEventKind::Retransmit { state: None },
            TcpEventKind::ResetSent {
                state: Some(TcpState::Close),
                by_close: true,
            },
            TcpEventKind::ResetReceived,
            TcpEventKind::EofRead,
            TcpEventKind::SynAckRetransmit,
        ] {
            events.push(TcpEvent { what, ..closed });
        }
        let mut labels = ContainerLabels::EMPTY;
        labels.namespace = "shop".into();
        labels.pod = "cart-7d9\"\\\n\u{1}".into();
        let labels = Arc::new(labels);
        for event in &events {
            for shown in [
                shown(Some(&owner), None),
                shown(None, Some(&labels)),
                Shown {
                    history_incomplete: true,
                    ..shown(Some(&owner), Some(&labels))
                },
            ] {
                let (ours, serde) = both(event, &shown);
                assert_eq!(ours, serde);
            }
        }
    }

    #[test]
    fn untrusted_names_and_ipv6_addresses_are_written_as_the_serde_derive_wrote_them() {
        let mut evil = task(7, "x\"y\\z\n\t", 0);
        evil.thread_comm[..4].copy_from_slice(b"\xff\xfe\"\x7f");
        let conn = Conn::active(0x10, evil, "[2001:db8::1]:443", "[::ffff:10.0.0.1]:5000");
        let mut event = conn.state(5, TcpState::Established, TcpState::FinWait1);
        event.actor = Some(evil);
        let owner = Owner {
            pid: 7,
            comm: comm_str(&evil.comm),
            source: OwnerSource::Listener,
        };
        let (ours, serde) = both(&event, &shown(Some(&owner), None));
        assert_eq!(ours, serde);
        let parsed: Value = serde_json::from_str(&ours).unwrap();
        assert_eq!(parsed["local"], "[2001:db8::1]:443");
        assert_eq!(parsed["actor"]["comm"], "x\"y\\z\n\t");
    }

    #[test]
    fn names_need_no_escaping() {
        let states = TcpState::ALL.map(TcpState::name);
        let sources = [
            OwnerSource::Syscall,
            OwnerSource::Listener,
            OwnerSource::Accept,
            OwnerSource::Snapshot,
        ]
        .map(OwnerSource::as_str);
        let errnos = (0..4096).map(errno_name);
        for name in states.into_iter().chain(sources).chain(errnos) {
            assert!(!needs_escaping(name), "{name:?}");
        }
        assert!(needs_escaping("a\"quote") && needs_escaping("tab\t") && needs_escaping("\\"));
    }

    #[test]
    fn hex_is_lower_case_without_leading_zeros() {
        for n in [0, 1, 0xf, 0x10, 0xffff_8881_0ac9_3780, u64::MAX] {
            let mut line = Vec::new();
            Line(&mut line).hex(n);
            assert_eq!(String::from_utf8(line).unwrap(), format!("{n:x}"));
        }
    }
}
