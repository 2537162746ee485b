//! `CLOSE_WAIT` leaks: the peer closed, the owner never did. The truth about
//! which sockets are *still* in `CLOSE_WAIT` comes from the `sock_diag` dump
//! taken when the report is made; the trace adds when each one entered
//! `CLOSE_WAIT`, the call site that created or accepted it, and the code
//! that read end-of-file on it and did not close: from its events, or, in
//! summary mode, which sends nothing for a socket entering `CLOSE_WAIT`,
//! from the kernel's record (`LiveBirths`).

use std::collections::HashMap;

use tcptrace_common::TcpState;

use super::idle::LiveView;
use crate::{
    proc_fds::FdHolder,
    table::{Process, StackRef},
    tally::Tally,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeakKey {
    pub owner: Option<Process>,
    pub call_site: Option<StackRef>,
}

#[derive(Clone, Debug, Default)]
pub struct Leak {
    pub sockets: u64,
    pub oldest_ns: u64,
    /// True when the oldest socket's entry into `CLOSE_WAIT` was not seen
    /// (before tracing started, or its event was lost): its age is at
    /// least `oldest_ns`.
    pub oldest_is_lower_bound: bool,
    pub fds: Vec<FdHolder>,
    pub peers: Vec<std::net::SocketAddr>,
    /// Where end-of-file was read on these sockets (in the session), and
    /// how often.
    pub eof_stacks: Tally<StackRef>,
}

/// Peers listed per leak at most.
const MAX_PEERS: usize = 16;

impl Leak {
    /// Adds `other`'s sockets (the same leak seen through another stack of
    /// the same call site).
    pub fn absorb(&mut self, other: Self) {
        if other.oldest_ns > self.oldest_ns {
            self.oldest_ns = other.oldest_ns;
            self.oldest_is_lower_bound = other.oldest_is_lower_bound;
        }
        self.sockets += other.sockets;
        self.fds.extend(other.fds);
        for peer in other.peers {
            if self.peers.len() < MAX_PEERS && !self.peers.contains(&peer) {
                self.peers.push(peer);
            }
        }
        self.eof_stacks.merge(&other.eof_stacks);
    }
}

/// Groups the sockets in `CLOSE_WAIT` now by owner and call site. A
/// socket's time in `CLOSE_WAIT` is exact when its entry was traced; else
/// it is at least the session's length (`view.elapsed_ns`) for one that
/// was in `CLOSE_WAIT` at the start, and at least the time since a dump
/// first listed it so for one whose entry was lost.
#[must_use]
pub fn leaks(view: &LiveView) -> HashMap<LeakKey, Leak> {
    let &LiveView {
        now,
        table,
        start,
        first_seen,
        births,
        now_ns,
        elapsed_ns,
    } = view;
    let mut leaks: HashMap<LeakKey, Leak> = HashMap::new();
    for socket in now
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::CloseWait)
    {
        let traced = table.find(socket.netns, socket.local, socket.remote);
        // The kernel's record, where summary mode sent nothing for it.
        let kernel = births.get(socket.netns, socket.inode);
        let since = traced
            .filter(|r| r.state == TcpState::CloseWait)
            .and_then(|r| r.state_since_ns)
            .or_else(|| kernel.and_then(|k| k.close_wait_ns));
        let (age, lower_bound) = if let Some(since) = since {
            (now_ns.saturating_sub(since), false)
        } else {
            let (netns, local, remote) = (socket.netns, socket.local, socket.remote);
            let at_start = start
                .was_close_wait(netns, local, remote)
                .then_some(elapsed_ns);
            let listed = first_seen
                .get(netns, local, remote, TcpState::CloseWait)
                .map(|since| now_ns.saturating_sub(since));
            (at_start.max(listed).unwrap_or(0), true)
        };
        let owner = traced.and_then(|r| r.owner).or_else(|| {
            socket
                .holders
                .first()
                .map(|h| Process::named(h.pid, &h.comm))
        });
        let key = LeakKey {
            owner,
            call_site: traced
                .and_then(|r| r.owner_stack)
                .or_else(|| births.stack_of(socket.netns, socket.inode)),
        };
        let leak = leaks.entry(key).or_default();
        leak.sockets += 1;
        if age > leak.oldest_ns || leak.sockets == 1 {
            leak.oldest_ns = age;
            leak.oldest_is_lower_bound = lower_bound;
        }
        leak.fds.extend(socket.holders.iter().cloned());
        if leak.peers.len() < MAX_PEERS && !leak.peers.contains(&socket.remote) {
            leak.peers.push(socket.remote);
        }
        if let Some(eof) = traced
            .and_then(|r| r.eof_stack)
            .or_else(|| kernel.and_then(|k| k.eof_stack))
        {
            leak.eof_stacks.add(eof, 1);
        }
    }
    leaks
}
