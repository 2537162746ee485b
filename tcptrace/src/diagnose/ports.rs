//! Ephemeral-port pressure per destination: how many local ports from
//! `net.ipv4.ip_local_port_range` are tied up (`TIME_WAIT` included) towards
//! one remote endpoint, which is what a new `connect()` to it competes for.

use std::{collections::HashMap, fs, net::SocketAddr};

use tcptrace_common::TcpState;

use crate::snapshot::Snapshot;

/// The kernel's default range, 32768–60999 (28,232 ports).
pub const DEFAULT_RANGE: (u16, u16) = (32768, 60999);

/// `net.ipv4.ip_local_port_range` of tcptrace's network namespace.
#[must_use]
pub fn local_port_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| parse_range(&text))
        .unwrap_or(DEFAULT_RANGE)
}

fn parse_range(text: &str) -> Option<(u16, u16)> {
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    let (low, high) = (parts.next()?.ok()?, parts.next()?.ok()?);
    (low <= high).then_some((low, high))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortUse {
    pub in_use: u64,
    pub time_wait: u64,
}

/// Ports in the ephemeral range in use per network namespace and remote
/// endpoint, from a dump (each namespace has ports of its own).
/// Server-side sockets are left out: their local port is a listener's
/// (which may itself lie in the range: the known trap of story 5), not an
/// ephemeral port taken by `connect()`. `range` is tcptrace's namespace's:
/// other namespaces are assumed to keep the default they were created with.
#[must_use]
pub fn use_by_destination(
    snapshot: &Snapshot,
    range: (u16, u16),
) -> HashMap<(u32, SocketAddr), PortUse> {
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
            || port < range.0
            || port > range.1
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sysctl() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_range("1024 65535"), Some((1024, 65535)));
        assert_eq!(parse_range("9 1"), None);
        assert_eq!(parse_range(""), None);
    }
}
