//! Ephemeral-port pressure per destination: how many local ports from
//! `net.ipv4.ip_local_port_range` are tied up (`TIME_WAIT` included) towards
//! one remote endpoint, which is what a new `connect()` to it competes for.

use std::{collections::HashMap, net::SocketAddr};

use tcptrace_common::TcpState;

use crate::snapshot::Snapshot;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortUse {
    pub in_use: u64,
    pub time_wait: u64,
}

/// Ports in the ephemeral range in use per network namespace and remote
/// endpoint, from a dump (each namespace has ports of its own).
/// Server-side sockets are left out: their local port is a listener's
/// (which may itself lie in the range: the known trap of story 5), not an
/// ephemeral port taken by `connect()`. Each namespace's own range counts.
#[must_use]
pub fn use_by_destination(snapshot: &Snapshot) -> HashMap<(u32, SocketAddr), PortUse> {
    let listening: std::collections::HashSet<(u32, u16)> = snapshot
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .map(|s| (s.netns, s.local.port()))
        .collect();
    let mut by_destination: HashMap<(u32, SocketAddr), PortUse> = HashMap::new();
    for socket in &snapshot.sockets {
        let port = socket.local.port();
        if socket.state == TcpState::Listen
            || !snapshot.port_range(socket.netns).contains(port)
            || listening.contains(&(socket.netns, port))
        {
            continue;
        }
        let entry = by_destination
            .entry((socket.netns, socket.remote))
            .or_default();
        entry.in_use += 1;
        if socket.state == TcpState::TimeWait {
            entry.time_wait += 1;
        }
    }
    by_destination
}
