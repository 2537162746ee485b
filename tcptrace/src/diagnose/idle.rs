//! Live connections, from the `sock_diag` dump taken when the report is
//! made: how old they are, and which sit idle with no keepalive to notice
//! a peer (or a NAT, firewall or load balancer) that dropped them
//! (incident 5 of docs/INCIDENTS.md). The kernel's `tcp_info` says when
//! data last went each way and which timer is armed; the trace adds when
//! each connection was established and the call site that opened it.

use std::{collections::HashMap, net::SocketAddr};

use tcptrace_common::TcpState;

use crate::{
    snapshot::Snapshot,
    table::{Process, SocketTable, StackRef},
};

/// Connections of one owner to one peer from one call site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionKey {
    pub owner: Option<Process>,
    pub peer: SocketAddr,
    pub call_site: Option<StackRef>,
}

#[derive(Clone, Debug, Default)]
pub struct Connections {
    pub established: u64,
    /// Ages (since the handshake) of every connection, in nanoseconds;
    /// for one established before the session, the session's length.
    pub ages_ns: Vec<u64>,
    /// Some connection was established before the session: the oldest
    /// age is at least `oldest_ns`.
    pub oldest_is_lower_bound: bool,
    /// Idle at least the threshold with no keepalive armed.
    pub idle_without_keepalive: u64,
    /// Idle at least the threshold, keepalive armed (protected).
    pub idle_with_keepalive: u64,
    /// The longest idle time among the unprotected ones, milliseconds.
    pub longest_idle_ms: u32,
}

impl Connections {
    #[must_use]
    pub fn oldest_ns(&self) -> u64 {
        self.ages_ns.iter().copied().max().unwrap_or(0)
    }
}

/// Groups the ESTABLISHED sockets in `now` by owner, peer and call site.
/// `idle_ms`: the idle threshold; `elapsed_ns`: the session's length, the
/// least age of a connection established before it.
#[must_use]
pub fn connections(
    now: &Snapshot,
    table: &SocketTable,
    now_ns: u64,
    elapsed_ns: u64,
    idle_ms: u32,
) -> HashMap<ConnectionKey, Connections> {
    let mut groups: HashMap<ConnectionKey, Connections> = HashMap::new();
    for socket in now
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::Established)
    {
        let traced = table.find(socket.netns, socket.local, socket.remote);
        let owner = traced.and_then(|r| r.owner).or_else(|| {
            socket
                .holders
                .first()
                .map(|h| Process::named(h.pid, &h.comm))
        });
        let key = ConnectionKey {
            owner,
            peer: socket.remote,
            call_site: traced.and_then(|r| r.owner_stack),
        };
        let group = groups.entry(key).or_default();
        group.established += 1;
        if let Some(since) = traced.and_then(|r| r.established_ns) {
            group.ages_ns.push(now_ns.saturating_sub(since));
        } else {
            group.ages_ns.push(elapsed_ns);
            group.oldest_is_lower_bound = true;
        }
        let Some(activity) = socket.activity.filter(|a| a.idle_ms >= idle_ms) else {
            continue;
        };
        if activity.keepalive_in_ms.is_some() {
            group.idle_with_keepalive += 1;
        } else {
            group.idle_without_keepalive += 1;
            group.longest_idle_ms = group.longest_idle_ms.max(activity.idle_ms);
        }
    }
    groups
}
