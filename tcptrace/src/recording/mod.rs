//! Recordings: a tracing session saved (`trace --write FILE`) so that its
//! diagnoses can be run again later, elsewhere, without BPF or root
//! (`tcptrace report FILE`).
//!
//! A recording holds what the pipeline learnt, not the kernel's raw
//! records: raw records need the tracepoint layouts of the machine that
//! wrote them, and their stack captures need that machine's binaries and
//! processes to be unwound and named. So it keeps each event as the socket
//! table saw it (decoded, summary records unfolded, stack captures
//! canonical), with the cgroup key its socket's record took, and at the end
//! what only the live machine could tell: each capture's call site, each
//! cgroup's names, the owners' cgroups, the kernel's records of live
//! connections, the closing socket dump and the session's counters.
//!
//! The format is JSON lines, one [`Entry`] per line (gzip-compressed when
//! the file name ends in `.gz`), in this order: a [`Header`], the start
//! dump, the events, then the call sites, cgroups and live births, and the
//! end. A recording cut short (the session killed, the disk full) has no
//! end: it can still be replayed, and the report says what is missing.
//! [`FORMAT_VERSION`] changes whenever an entry changes meaning.

mod reader;
mod recorder;
mod replay;

use serde::{Deserialize, Serialize};

pub use recorder::Recorder;
pub use replay::{replay, ReplayOptions};

use crate::{
    callsite::CallSite,
    clock::WallClock,
    container::ContainerLabels,
    event::TcpEvent,
    filter::Filter,
    output::Escaped,
    session::{SessionCounts, SessionOptions},
    snapshot::Snapshot,
    table::StackRef,
};

/// What the first line says a recording is.
pub const FORMAT: &str = "tcptrace-recording";

/// The version this tcptrace writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// One line of a recording.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    Header(Header),
    /// The sockets that existed when tracing started.
    Start(Dump),
    /// One event as the socket table saw it.
    Event(RecordedEvent),
    /// The call site of a canonical stack capture (see `CallSites`).
    CallSite {
        pid: u32,
        stack: u64,
        site: CallSite,
    },
    /// What a cgroup key stands for.
    Cgroup(RecordedCgroup),
    /// What the kernel recorded of a live connection (its start, and a
    /// `CLOSE_WAIT`'s), for those the event stream does not tell (see
    /// `LiveBirths`).
    Birth(RecordedBirth),
    /// The session's end: the sockets then, and its counters.
    End(End),
}

/// Where, when and how a recording was made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    pub version: u32,
    /// The tcptrace that wrote it.
    pub tcptrace: String,
    pub hostname: String,
    pub kernel: String,
    /// When the session started (Unix time, seconds).
    #[serde(default)]
    pub started_unix_s: u64,
    /// Realtime minus monotonic at the start: event times are
    /// `CLOCK_MONOTONIC`, shown as wall-clock time.
    pub clock_offset_ns: i64,
    /// The session's filter: events outside it may be missing (the kernel
    /// programs drop them), so a replay can narrow it, never widen it.
    pub filter: Filter,
    /// Whether the kernel sent one summary per socket (`--report-only`)
    /// rather than every event: the events are the same, their actors
    /// fewer.
    pub summary_mode: bool,
    pub idle_threshold_ms: u64,
}

impl Header {
    /// The header of a session starting now on this machine.
    #[must_use]
    pub fn new(session: &SessionOptions, clock: WallClock) -> Self {
        let read = |file: &str| {
            std::fs::read_to_string(file)
                .map(|text| text.trim().to_owned())
                .unwrap_or_default()
        };
        Self {
            format: FORMAT.to_owned(),
            version: FORMAT_VERSION,
            tcptrace: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            started_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            clock_offset_ns: clock.offset_ns(),
            filter: session.filter.clone(),
            summary_mode: session.probe.summary,
            idle_threshold_ms: u64::try_from(session.idle_threshold.as_millis())
                .unwrap_or(u64::MAX),
        }
    }
}

impl std::fmt::Display for Header {
    /// Where and when it was recorded, and with what filter; every text
    /// escaped (a recording may come from anywhere).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        let started = std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.started_unix_s);
        write!(
            f,
            "recorded on {} (Linux {}) from {} by tcptrace {}",
            Escaped(&self.hostname),
            Escaped(&self.kernel),
            humantime::format_rfc3339_seconds(started),
            Escaped(&self.tcptrace)
        )?;
        let filter = &self.filter;
        let mut flags = String::new();
        for pid in &filter.pids {
            let _ = write!(flags, " --pid {pid}");
        }
        for port in &filter.ports {
            let _ = write!(flags, " --port {port}");
        }
        for (flag, values) in [
            ("--comm", &filter.comms),
            ("--namespace", &filter.namespaces),
            ("--pod", &filter.pods),
            ("--container", &filter.containers),
            ("--cgroup", &filter.cgroups),
        ] {
            for value in values {
                let _ = write!(flags, " {flag} {value}");
            }
        }
        if flags.is_empty() {
            write!(f, ", every socket")?;
        } else {
            write!(f, ", filtered by{}", Escaped(&flags))?;
        }
        if self.summary_mode {
            write!(f, " (--report-only: no live lines)")?;
        }
        Ok(())
    }
}

/// A socket dump, with the cgroup key of every process holding a socket
/// in it (for workload filters and the report's names).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Dump {
    pub sockets: Snapshot,
    pub processes: Vec<ProcessCgroup>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct ProcessCgroup {
    pub pid: u32,
    pub cgroup: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecordedEvent {
    #[serde(rename = "e")]
    pub event: TcpEvent,
    /// The cgroup key of the socket's record (0: none).
    #[serde(rename = "k", default, skip_serializing_if = "is_zero")]
    pub cgroup: u64,
}

/// The borrowed form of the entries the recorder writes from the
/// session's own values (same JSON as [`Entry`]), without copying them.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum EntryRef<'a> {
    Start(DumpRef<'a>),
    Event {
        e: &'a TcpEvent,
        #[serde(skip_serializing_if = "is_zero")]
        k: u64,
    },
    End {
        now_ns: u64,
        dump: DumpRef<'a>,
        counts: &'a SessionCounts,
    },
}

#[derive(Serialize)]
struct DumpRef<'a> {
    sockets: &'a Snapshot,
    processes: &'a [ProcessCgroup],
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(value: &u64) -> bool {
    *value == 0
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecordedCgroup {
    pub key: u64,
    pub labels: ContainerLabels,
    /// The cgroup-v1 path of a key made from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v1_path: Option<String>,
    /// The session's workload verdict on it, when its filter had
    /// workload criteria (cgroup paths can only be judged live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecordedBirth {
    pub netns: u32,
    pub inode: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub established_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_wait_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eof_stack: Option<StackRef>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct End {
    /// `CLOCK_MONOTONIC` when the report was made: ages are counted to it.
    pub now_ns: u64,
    pub dump: Dump,
    pub counts: SessionCounts,
}

#[cfg(test)]
mod tests {
    use tcptrace_common::TcpState;

    use super::*;
    use crate::event::synthetic::{task, Conn, MS};

    fn line(event: &TcpEvent, cgroup: u64) -> String {
        serde_json::to_string(&EntryRef::Event {
            e: event,
            k: cgroup,
        })
        .unwrap()
    }

    #[test]
    fn an_event_line_reads_back_as_written() {
        let conn = Conn::active(
            0xffff_8880_0000_1000,
            task(41, "curl", 7),
            "10.0.0.1:40000",
            "10.0.0.9:80",
        );
        let event = conn.state(3 * MS, TcpState::Close, TcpState::SynSent);
        let text = line(&event, 12);
        // The format, pinned: a change here is a new FORMAT_VERSION.
        assert!(
            text.starts_with(
                r#"{"event":{"e":{"what":{"StateChange":{"old":"Close","new":"SynSent"}},"ts_ns":3000000,"skaddr":18446612682070036480,"local":"10.0.0.1:40000","remote":"10.0.0.9:80","sock":{"owner":{"tgid":41,"pid":41,"comm":"curl","thread_comm":"curl","stack":7},"#
            ),
            "{text}"
        );
        assert!(text.ends_with(r#""summary":false},"k":12}}"#), "{text}");
        let Entry::Event(read) = serde_json::from_str(&text).unwrap() else {
            panic!("not an event: {text}");
        };
        assert_eq!(read.cgroup, 12);
        assert_eq!(read.event.what, event.what);
        assert_eq!(read.event.sock, event.sock);
        assert_eq!(
            (read.event.local, read.event.remote),
            (event.local, event.remote)
        );
        assert_eq!(line(&read.event, read.cgroup), text);
        // No cgroup, no key.
        assert!(line(&event, 0).ends_with(r#""summary":false}}}"#));
    }

    #[test]
    fn any_task_name_reads_back_exactly() {
        let mut conn = Conn::active(1, task(41, "ok", 0), "10.0.0.1:40000", "10.0.0.9:80");
        // A name that is not UTF-8, and one with bytes after its NUL.
        conn.sock.owner.comm = *b"\xffbad\0\0\0\0\0\0\0\0\0\0\0\0";
        conn.sock.closer.comm = *b"a\0b\0\0\0\0\0\0\0\0\0\0\0\0\0";
        let event = conn.state(MS, TcpState::Close, TcpState::SynSent);
        let text = line(&event, 0);
        let Entry::Event(read) = serde_json::from_str(&text).unwrap() else {
            panic!("not an event: {text}");
        };
        assert_eq!(read.event.sock, event.sock, "{text}");
        for bad in [r#""sixteen-bytes-xx""#, "[1,2]", r#""nul\u0000""#] {
            let broken = text.replacen(
                r#""thread_comm":"ok""#,
                &format!(r#""thread_comm":{bad}"#),
                1,
            );
            assert_ne!(broken, text);
            assert!(serde_json::from_str::<Entry>(&broken).is_err(), "{broken}");
        }
    }

    #[test]
    fn a_header_from_elsewhere_is_shown_escaped() {
        let header = Header {
            format: FORMAT.to_owned(),
            version: FORMAT_VERSION,
            tcptrace: "0.1\x1b[31m".to_owned(),
            hostname: "node\x1b[2J".to_owned(),
            kernel: "6.1".to_owned(),
            started_unix_s: 0,
            clock_offset_ns: 0,
            filter: Filter {
                ports: vec![443],
                comms: vec!["curl\x07".to_owned()],
                ..Filter::default()
            },
            summary_mode: true,
            idle_threshold_ms: 30_000,
        };
        let shown = header.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(
            shown.contains("recorded on node\\u{1b}[2J (Linux 6.1)"),
            "{shown}"
        );
        assert!(
            shown.contains("filtered by --port 443 --comm curl\\u{7}"),
            "{shown}"
        );
    }
}
