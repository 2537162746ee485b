//! Live connections, from the `sock_diag` dump taken when the report is
//! made: how old they are, and which sit idle with no keepalive to notice
//! a peer (or a NAT, firewall or load balancer) that dropped them
//! (incident 5 of docs/INCIDENTS.md). The kernel's `tcp_info` says when
//! data last went each way and which timer is armed; the trace adds when
//! each connection was established and the call site that opened it.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
};

use tcptrace_common::TcpState;

use crate::{
    first_seen::FirstSeen,
    live_births::LiveBirths,
    owner::StartOwners,
    snapshot::Snapshot,
    table::{Process, SocketTable, StackRef},
};

/// How long a connection may sit idle, or live, before it counts as idle
/// or long-lived: `tcptrace trace`'s `--idle-threshold` default.
pub const DEFAULT_IDLE_THRESHOLD: std::time::Duration = std::time::Duration::from_secs(30);

/// Connections of one owner to one peer from one call site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionKey {
    pub owner: Option<Process>,
    /// The server for a client; the client's address (port 0) for a
    /// server, whose clients come from many ports.
    pub peer: SocketAddr,
    pub call_site: Option<StackRef>,
}

#[derive(Clone, Debug, Default)]
pub struct Connections {
    pub established: u64,
    /// Ages (since the handshake) of the connections whose age is known,
    /// in nanoseconds; for one established before the session, the
    /// session's length.
    pub ages_ns: Vec<u64>,
    /// Connections born during the session that neither the trace nor an
    /// earlier dump has met (summary mode reports a socket when it closes;
    /// a one-off session dumps once, at its end): age unknown.
    pub ages_unknown: u64,
    /// Some connection was established before the session: the oldest
    /// age is at least `oldest_ns`.
    pub oldest_is_lower_bound: bool,
    /// Idle at least the threshold with no keepalive armed.
    pub idle_without_keepalive: u64,
    /// Idle at least the threshold, keepalive armed (protected).
    pub idle_with_keepalive: u64,
    /// The soonest next keepalive probe among those, milliseconds.
    pub next_keepalive_probe_ms: Option<u32>,
    /// The longest idle time among the unprotected ones, milliseconds.
    pub longest_idle_ms: u32,
}

impl Connections {
    #[must_use]
    pub fn oldest_ns(&self) -> u64 {
        self.ages_ns.iter().copied().max().unwrap_or(0)
    }
}

/// The moment the live connections are looked at, and what is known of
/// their past.
pub struct LiveView<'a> {
    pub now: &'a Snapshot,
    pub table: &'a SocketTable,
    /// The sockets that existed when the session started.
    pub start: &'a StartOwners,
    /// When each live connection was first listed by a dump.
    pub first_seen: &'a FirstSeen,
    /// Where the connections the table has no record of were opened.
    pub births: &'a LiveBirths,
    pub now_ns: u64,
    /// The session's length: the least age of a connection established
    /// before it.
    pub elapsed_ns: u64,
}

/// Groups the ESTABLISHED sockets by owner, peer and call site. `idle_ms`:
/// the idle threshold.
#[must_use]
pub fn connections(view: &LiveView, idle_ms: u32) -> HashMap<ConnectionKey, Connections> {
    let LiveView {
        now,
        table,
        start,
        first_seen,
        births,
        now_ns,
        elapsed_ns,
    } = *view;
    let listening: HashSet<(u32, u16)> = now
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen)
        .map(|s| (s.netns, s.local.port()))
        .collect();
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
        let server_side = listening.contains(&(socket.netns, socket.local.port()));
        let key = ConnectionKey {
            owner,
            peer: if server_side {
                SocketAddr::new(socket.remote.ip(), 0)
            } else {
                socket.remote
            },
            call_site: traced
                .and_then(|r| r.owner_stack)
                .or_else(|| births.stack_of(socket.netns, socket.inode)),
        };
        let group = groups.entry(key).or_default();
        group.established += 1;
        // Exact when the trace saw the handshake; else at least the
        // session (it existed at the start) or the time since a dump
        // first listed it, whichever is longer.
        let existed = start
            .existed(socket.netns, socket.local, socket.remote)
            .then_some(elapsed_ns);
        let listed = first_seen
            .get(
                socket.netns,
                socket.local,
                socket.remote,
                TcpState::Established,
            )
            .map(|since| now_ns.saturating_sub(since));
        let established = match traced {
            Some(record) => record.established_ns,
            None => births.established_ns(socket.netns, socket.inode),
        };
        if let Some(since) = established {
            group.ages_ns.push(now_ns.saturating_sub(since));
        } else if let Some(at_least) = existed.max(listed) {
            group.ages_ns.push(at_least);
            group.oldest_is_lower_bound = true;
        } else {
            group.ages_unknown += 1;
        }
        let Some(activity) = socket.activity.filter(|a| a.idle_ms >= idle_ms) else {
            continue;
        };
        if let Some(probe_in) = activity.keepalive_in_ms {
            group.idle_with_keepalive += 1;
            group.next_keepalive_probe_ms = Some(
                group
                    .next_keepalive_probe_ms
                    .map_or(probe_in, |soonest| soonest.min(probe_in)),
            );
        } else {
            group.idle_without_keepalive += 1;
            group.longest_idle_ms = group.longest_idle_ms.max(activity.idle_ms);
        }
    }
    groups
}
