//! `CLOSE_WAIT` leaks: the peer closed, the owner never did. The truth about
//! which sockets are *still* in `CLOSE_WAIT` comes from the `sock_diag` dump
//! taken when the report is made; the trace adds when each one entered
//! `CLOSE_WAIT`, the call site that created or accepted it, and the code
//! that read end-of-file on it and did not close.

use std::collections::HashMap;

use tcptrace_common::TcpState;

use crate::{
    proc_fds::FdHolder,
    snapshot::Snapshot,
    table::{Process, SocketTable, StackRef},
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
    /// True when the oldest socket was already in `CLOSE_WAIT` before tracing
    /// started: its age is at least `oldest_ns`.
    pub oldest_is_lower_bound: bool,
    pub fds: Vec<FdHolder>,
    pub peers: Vec<std::net::SocketAddr>,
    /// Where end-of-file was read on these sockets (in the session), and
    /// how often.
    pub eof_stacks: HashMap<StackRef, u64>,
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
        for (stack, n) in other.eof_stacks {
            *self.eof_stacks.entry(stack).or_default() += n;
        }
    }
}

/// Groups the sockets in `CLOSE_WAIT` now by owner and call site.
/// `elapsed_ns` is the session length: the least age of a socket that was
/// in `CLOSE_WAIT` before the session.
#[must_use]
pub fn leaks(
    now: &Snapshot,
    table: &SocketTable,
    now_ns: u64,
    elapsed_ns: u64,
) -> HashMap<LeakKey, Leak> {
    let mut leaks: HashMap<LeakKey, Leak> = HashMap::new();
    for socket in now
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::CloseWait)
    {
        let traced = table.find(socket.netns, socket.local, socket.remote);
        let since = traced
            .filter(|r| r.state == TcpState::CloseWait)
            .and_then(|r| r.state_since_ns);
        let (age, lower_bound) = match since {
            Some(since) => (now_ns.saturating_sub(since), false),
            None => (elapsed_ns, true),
        };
        let owner = traced.and_then(|r| r.owner).or_else(|| {
            socket
                .holders
                .first()
                .map(|h| Process::named(h.pid, &h.comm))
        });
        let key = LeakKey {
            owner,
            call_site: traced.and_then(|r| r.owner_stack),
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
        if let Some(eof) = traced.and_then(|r| r.eof_stack) {
            *leak.eof_stacks.entry(eof).or_default() += 1;
        }
    }
    leaks
}
