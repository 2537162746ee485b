//! Daemon counters, updated per event with plain integer adds into
//! preallocated slots (no allocation once a process or peer is known) and
//! turned into Prometheus series only at scrape time.
//!
//! Cardinality is bounded by design: series are keyed by process name and
//! cgroup (container), never by pid; at most `MAX_PROCESSES` distinct keys
//! and `MAX_PEERS` peers are tracked, the rest is folded into "other".

use std::net::SocketAddr;

use tcptrace_common::TcpState;

use crate::{
    diagnose::flows::ConnectFailures,
    event::What,
    pipeline::Observed,
    table::{ClosedBy, Role},
    FastMap,
};

pub const MAX_PROCESSES: usize = 10_000;
pub const MAX_PEERS: usize = 4_096;

/// Upper bounds (seconds) of the latency and lifetime histograms.
pub const BUCKETS: [f64; 15] = [
    0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0,
    7200.0,
];

/// A cumulative-at-export histogram with fixed buckets.
#[derive(Clone, Debug, Default)]
pub struct Buckets {
    pub counts: [u64; BUCKETS.len()],
    pub overflow: u64,
    pub sum: f64,
    pub count: u64,
}

impl Buckets {
    #[expect(clippy::cast_precision_loss, reason = "seconds as f64")]
    pub fn observe_ns(&mut self, ns: u64) {
        let seconds = ns as f64 / 1e9;
        match BUCKETS.iter().position(|&bound| seconds <= bound) {
            Some(i) => self.counts[i] += 1,
            None => self.overflow += 1,
        }
        self.sum += seconds;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.overflow += other.overflow;
        self.sum += other.sum;
        self.count += other.count;
    }

    /// (upper bound, count in that bucket) pairs as prometheus-client wants
    /// them: it accumulates itself, and writes `+Inf` for `f64::MAX`.
    #[must_use]
    pub fn per_bucket(&self) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = BUCKETS.iter().copied().zip(self.counts).collect();
        out.push((f64::MAX, self.overflow));
        out
    }
}

/// Series identity of a process: name and cgroup (mapped to container
/// labels at export), never the pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessKey {
    pub comm: [u8; 16],
    /// The cgroup key of the socket (`SocketRecord::cgroup`, found at its
    /// birth): per container even where the cgroup-v2 id is shared.
    pub cgroup: u64,
}

impl ProcessKey {
    pub const OTHER: Self = Self {
        comm: *b"other\0\0\0\0\0\0\0\0\0\0\0",
        cgroup: 0,
    };
    pub const UNKNOWN: Self = Self {
        comm: *b"unknown\0\0\0\0\0\0\0\0\0",
        cgroup: 0,
    };
}

#[derive(Clone, Debug, Default)]
pub struct ProcessMetrics {
    /// (old, new) state numbers → count.
    pub transitions: FastMap<(TcpState, TcpState), u64>,
    /// By role: active (connect), passive (accept).
    pub opened: [u64; 2],
    /// By side that closed first: local (active close), peer (passive close).
    pub closes: [u64; 2],
    /// By phase: syn, data, fin.
    pub retransmits: [u64; 3],
    /// sent, received.
    pub resets: [u64; 2],
    pub connect_failures: ConnectFailures,
    /// Closing sockets whose FIN was never acknowledged (kernel gave up).
    pub dead_peer_closes: u64,
    pub lifetime: Buckets,
    pub connect_latency: Buckets,
}

#[derive(Clone, Debug, Default)]
pub struct PeerMetrics {
    pub attempts: u64,
    pub connect_latency: Buckets,
    pub connect_failures: ConnectFailures,
    pub dead_peer_closes: u64,
}

#[derive(Default)]
pub struct DaemonMetrics {
    pub processes: FastMap<ProcessKey, ProcessMetrics>,
    pub peers: FastMap<SocketAddr, PeerMetrics>,
    /// Events folded into "other" because the bounds were reached.
    pub folded_processes: u64,
    pub folded_peers: u64,
    /// The kernel's count of resets on unknown sockets (summary mode)
    /// already added to the "unknown" process.
    resets_without_socket: u64,
}

impl DaemonMetrics {
    fn process(&mut self, key: ProcessKey) -> &mut ProcessMetrics {
        let key = if self.processes.len() >= MAX_PROCESSES && !self.processes.contains_key(&key) {
            self.folded_processes += 1;
            ProcessKey::OTHER
        } else {
            key
        };
        self.processes.entry(key).or_default()
    }

    fn peer(&mut self, peer: SocketAddr) -> &mut PeerMetrics {
        let peer = if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&peer) {
            self.folded_peers += 1;
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            peer
        };
        self.peers.entry(peer).or_default()
    }

    /// Summary mode counts resets on unknown sockets in the kernel instead
    /// of sending them: add what is new to the "unknown" process, as the
    /// events would have been.
    pub fn resets_without_socket(&mut self, kernel_total: u64) {
        let new = kernel_total.saturating_sub(self.resets_without_socket);
        if new > 0 {
            self.resets_without_socket = kernel_total;
            self.process(ProcessKey::UNKNOWN).resets[0] += new;
        }
    }

    /// One event that passed the filter.
    pub fn observe(&mut self, seen: &Observed) {
        let Some(record) = seen.record else {
            if let What::ResetSent { .. } = seen.event.what {
                self.process(ProcessKey::UNKNOWN).resets[0] += 1;
            }
            return;
        };
        let owner = record.owner.map_or(ProcessKey::UNKNOWN, |o| ProcessKey {
            comm: o.comm,
            cgroup: record.cgroup,
        });
        let event = seen.event;
        let active = record.role == Role::Active;
        match event.what {
            What::StateChange { old, new } => {
                let process = self.process(owner);
                *process.transitions.entry((old, new)).or_default() += 1;
                match (old, new) {
                    (TcpState::Close, TcpState::SynSent) => process.opened[0] += 1,
                    (TcpState::Listen, TcpState::SynRecv) => process.opened[1] += 1,
                    (TcpState::SynSent, TcpState::Established) => {
                        if let Some(ns) = event.in_state_ns {
                            process.connect_latency.observe_ns(ns);
                            let peer = self.peer(record.remote);
                            peer.connect_latency.observe_ns(ns);
                        }
                    }
                    _ => {}
                }
                if active && (old, new) == (TcpState::Close, TcpState::SynSent) {
                    self.peer(record.remote).attempts += 1;
                }
            }
            What::Retransmit { state } => {
                let phase = match state.unwrap_or(record.state) {
                    TcpState::SynSent | TcpState::SynRecv => 0,
                    TcpState::FinWait1 | TcpState::Closing | TcpState::LastAck => 2,
                    _ => 1,
                };
                self.process(owner).retransmits[phase] += 1;
            }
            What::ResetSent { .. } => self.process(owner).resets[0] += 1,
            What::ResetReceived => self.process(owner).resets[1] += 1,
            What::EofRead => {}
        }
        if seen.closed {
            self.closed(seen, owner);
        }
    }

    fn closed(&mut self, seen: &Observed, owner: ProcessKey) {
        let (Some(record), event) = (seen.record, seen.event) else {
            return;
        };
        let What::StateChange { old, .. } = event.what else {
            return;
        };
        let gave_up = record.retransmits.fin > 0 && event.error == Some(libc::ETIMEDOUT);
        let failed_connect = old == TcpState::SynSent;
        let by_caller = event.actor.is_some();

        let process = self.process(owner);
        match record.closed_by {
            Some(ClosedBy::Local) => process.closes[0] += 1,
            Some(ClosedBy::Peer) => process.closes[1] += 1,
            None => {}
        }
        if let (Some(lifetime), false) = (
            record.lifetime_ns(event.ts_ns),
            record.role == Role::Listener,
        ) {
            process.lifetime.observe_ns(lifetime);
        }
        if gave_up {
            process.dead_peer_closes += 1;
        }
        if failed_connect {
            process.connect_failures.record(event.error, by_caller);
        }

        if gave_up || failed_connect {
            let peer = self.peer(record.remote);
            if gave_up {
                peer.dead_peer_closes += 1;
            }
            if failed_connect {
                peer.connect_failures.record(event.error, by_caller);
            }
        }
    }
}

/// Adds `from` into `into` (rows whose labels turned out equal).
pub fn merge(into: &mut ProcessMetrics, from: &ProcessMetrics) {
    for (key, count) in &from.transitions {
        *into.transitions.entry(*key).or_default() += count;
    }
    for (a, b) in [
        (&mut into.opened[..], &from.opened[..]),
        (&mut into.closes[..], &from.closes[..]),
        (&mut into.retransmits[..], &from.retransmits[..]),
        (&mut into.resets[..], &from.resets[..]),
    ] {
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
    into.connect_failures.add(&from.connect_failures);
    into.dead_peer_closes += from.dead_peer_closes;
    into.lifetime.merge(&from.lifetime);
    into.connect_latency.merge(&from.connect_latency);
}

impl PeerMetrics {
    pub fn merge(&mut self, other: &Self) {
        self.attempts += other.attempts;
        self.connect_latency.merge(&other.connect_latency);
        self.connect_failures.add(&other.connect_failures);
        self.dead_peer_closes += other.dead_peer_closes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_per_bucket_with_overflow_last() {
        let mut b = Buckets::default();
        b.observe_ns(50_000); // 50 µs
        b.observe_ns(2_000_000); // 2 ms
        b.observe_ns(9_000 * 1_000_000_000); // beyond the last bound
        let c = b.per_bucket();
        assert_eq!(c[0], (0.000_1, 1));
        assert_eq!(c[3], (0.005, 1));
        assert_eq!(c.last().copied(), Some((f64::MAX, 1)));
        assert_eq!(b.count, 3);
    }
}
