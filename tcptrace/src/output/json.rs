//! One JSON object per line, for scripts. Strings go through `serde_json`, so
//! an attacker-chosen comm cannot break the framing.

use std::{
    io::{self, Write},
    net::SocketAddr,
};

use serde::Serialize;

use super::{Shown, Sink};
use crate::{
    container::ContainerLabels,
    event::{comm_str, errno_name, TcpEvent, TcpEventKind},
    findings::{Finding, Report},
    session::SessionCounts,
    snapshot::ExistingSocket,
};

pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    fn line(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }
}

#[derive(Serialize)]
struct TaskJson<'a> {
    pid: u32,
    tid: u32,
    comm: std::borrow::Cow<'a, str>,
    /// The thread's own name, when it is not the process's.
    #[serde(skip_serializing_if = "Option::is_none")]
    thread: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack_id: Option<u64>,
}

impl<'a> TaskJson<'a> {
    fn of(task: &'a tcptrace_common::Task) -> Self {
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
struct FindingLine<'a> {
    r#type: &'static str,
    #[serde(flatten)]
    finding: &'a Finding,
}

#[derive(Serialize)]
struct OwnerJson<'a> {
    pid: u32,
    comm: &'a str,
    source: &'static str,
}

/// A socket address as `0x...`, written straight into the output: the
/// per-event path allocates nothing (serde writes `SocketAddr` the same
/// way, through a stack buffer).
struct Hex(u64);

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:#x}", self.0))
    }
}

#[derive(Serialize)]
struct EventJson<'a> {
    r#type: &'static str,
    time_ns: u128,
    ktime_ns: u64,
    sock: Hex,
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
    /// The owner's workload by name (its cgroup's, recorded at the
    /// socket's birth); left out when empty.
    #[serde(skip_serializing_if = "str::is_empty")]
    namespace: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pod: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    container: &'a str,
    retransmits: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    /// The socket's record missed a transition (events were lost).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    history_incomplete: bool,
}

impl<W: Write> Sink for JsonLines<W> {
    fn start(&mut self, existing: &[ExistingSocket], shown: usize) -> io::Result<()> {
        self.line(&serde_json::json!({
            "type": "start",
            "existing_sockets": existing.len(),
            "existing_shown": shown,
        }))
    }

    fn existing(&mut self, socket: &ExistingSocket) -> io::Result<()> {
        let holders: Vec<_> = socket
            .holders
            .iter()
            .map(|h| serde_json::json!({"pid": h.pid, "fd": h.fd, "comm": &*h.comm}))
            .collect();
        self.line(&serde_json::json!({
            "type": "existing",
            "netns": socket.netns,
            "state": socket.state.name(),
            "local": socket.local.to_string(),
            "remote": socket.remote.to_string(),
            "inode": socket.inode,
            "uid": socket.uid,
            "holders": holders,
        }))
    }

    fn event(&mut self, event: &TcpEvent, shown: &Shown) -> io::Result<()> {
        static UNNAMED: ContainerLabels = ContainerLabels::EMPTY;
        let (owner, unix_ns) = (shown.owner, shown.unix_ns);
        let labels = shown.labels.unwrap_or(&UNNAMED);
        let (kind, old, new, state) = match event.what {
            TcpEventKind::StateChange { old, new } => {
                ("state", Some(old.name()), Some(new.name()), None)
            }
            TcpEventKind::Retransmit { state } => (
                "retransmit",
                None,
                None,
                state.map(tcptrace_common::TcpState::name),
            ),
            TcpEventKind::ResetSent { state, .. } => (
                "reset_sent",
                None,
                None,
                state.map(tcptrace_common::TcpState::name),
            ),
            TcpEventKind::ResetReceived => ("reset_received", None, None, None),
            TcpEventKind::EofRead => ("eof_read", None, None, None),
            TcpEventKind::SynAckRetransmit => ("syn_ack_retransmit", None, None, Some("LISTEN")),
        };
        let record = EventJson {
            r#type: kind,
            time_ns: unix_ns,
            ktime_ns: event.ts_ns,
            sock: Hex(event.skaddr),
            local: event.local,
            remote: event.remote,
            old,
            new,
            state,
            in_old_state_ns: event.in_state_ns,
            owner: owner.map(|o| OwnerJson {
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
        self.line(&record)
    }

    fn summary(&mut self, s: &SessionCounts) -> io::Result<()> {
        self.line(&serde_json::json!({ "type": "summary", "summary": s }))
    }

    fn report(&mut self, report: &Report) -> io::Result<()> {
        for finding in &report.findings {
            self.line(&FindingLine {
                r#type: "finding",
                finding,
            })?;
        }
        self.line(&serde_json::json!({ "type": "report_totals", "totals": report.totals }))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
