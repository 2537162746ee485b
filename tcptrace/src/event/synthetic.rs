//! Synthetic events for unit tests of the table and the diagnoses.

use std::net::SocketAddr;

use tcptrace_common::{
    SockInfo, Task, TcpState, CLOSER_KNOWN, OWNER_FROM_LISTENER, OWNER_FROM_SYSCALL,
};

use super::{TcpEvent, TcpEventKind};

pub const MS: u64 = 1_000_000;
pub const SEC: u64 = 1_000_000_000;

#[must_use]
pub fn task(pid: u32, comm: &str, stack: u64) -> Task {
    let mut task = Task::NOBODY;
    task.tgid = pid;
    task.pid = pid;
    task.comm[..comm.len()].copy_from_slice(comm.as_bytes());
    task.thread_comm = task.comm;
    task.stack = stack;
    task
}

/// One socket's events, built in order.
pub struct Conn {
    pub skaddr: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub sock: SockInfo,
}

impl Conn {
    /// An active socket owned by `owner` (as after `connect()`).
    #[must_use]
    pub fn active(skaddr: u64, owner: Task, local: &str, remote: &str) -> Self {
        let mut sock = SockInfo::EMPTY;
        sock.owner = owner;
        sock.flags = OWNER_FROM_SYSCALL;
        Self {
            skaddr,
            local: local.parse().expect("local"),
            remote: remote.parse().expect("remote"),
            sock,
        }
    }

    /// A passive socket inheriting `owner` from its listener.
    #[must_use]
    pub fn passive(skaddr: u64, owner: Task, local: &str, remote: &str) -> Self {
        let mut conn = Self::active(skaddr, owner, local, remote);
        conn.sock.flags = OWNER_FROM_LISTENER;
        conn
    }

    fn event(&self, ts_ns: u64, what: TcpEventKind) -> TcpEvent {
        TcpEvent {
            what,
            ts_ns,
            skaddr: self.skaddr,
            local: self.local,
            remote: self.remote,
            sock: self.sock,
            actor: None,
            in_state_ns: None,
            peer_silent_ns: None,
            error: None,
            summary: false,
        }
    }

    #[must_use]
    pub fn state(&self, ts_ns: u64, old: TcpState, new: TcpState) -> TcpEvent {
        self.event(ts_ns, TcpEventKind::StateChange { old, new })
    }

    /// A transition made in `actor`'s system call that names it the closer.
    #[must_use]
    pub fn closed_by(&mut self, ts_ns: u64, old: TcpState, new: TcpState, actor: Task) -> TcpEvent {
        self.sock.closer = actor;
        self.sock.flags |= CLOSER_KNOWN;
        let mut event = self.state(ts_ns, old, new);
        event.actor = Some(actor);
        event
    }

    #[must_use]
    pub fn retransmit(&mut self, ts_ns: u64, state: TcpState) -> TcpEvent {
        self.sock.retransmits += 1;
        self.event(ts_ns, TcpEventKind::Retransmit { state: Some(state) })
    }

    /// The peer's RST arrives.
    #[must_use]
    pub fn reset_received(&self, ts_ns: u64) -> TcpEvent {
        self.event(ts_ns, TcpEventKind::ResetReceived)
    }

    /// The socket dies with `sk_err` = `error`.
    #[must_use]
    pub fn dies(&self, ts_ns: u64, old: TcpState, error: Option<i32>) -> TcpEvent {
        let mut event = self.state(ts_ns, old, TcpState::Close);
        event.error = error;
        event
    }

    /// The socket dies of a reset that came after the peer was silent for
    /// `silent_ns` (as the kernel measures it).
    #[must_use]
    pub fn reset_after_silence(&self, ts_ns: u64, silent_ns: u64) -> TcpEvent {
        let mut event = self.dies(ts_ns, TcpState::Established, Some(libc::ECONNRESET));
        event.peer_silent_ns = Some(silent_ns);
        event
    }
}
