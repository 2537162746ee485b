//! Daemon counters, updated per event with plain integer adds into
//! preallocated slots (no allocation once a process or peer is known) and
//! turned into Prometheus series only at scrape time.
//!
//! Cardinality is bounded by design: series are keyed by process name and
//! cgroup (container), never by pid; at most `MAX_PROCESSES` distinct keys
//! and `MAX_PEERS` peers are tracked, the rest is folded into "other".
//! Any local user can name processes at will, so the bound is small enough
//! for /metrics to stay a few megabytes, and a key without events for
//! `EVICT_AFTER` is dropped (counted): a flood of made-up names fills the
//! table only for a while, and never displaces a service that is active.

use std::net::SocketAddr;

use tcptrace_common::{Birth, RetransmitPhase, Side, TcpState, RESET_BY_CLOSE};

use crate::{
    diagnose::{
        flows::ConnectFailures,
        lost::{self, LostCause},
    },
    event::{TcpEvent, TcpEventKind},
    pipeline::Observed,
    recent_map::RecentMap,
    table::{Role, SocketRecord},
};

/// Label sets of processes: each has up to ~60 series (two histograms,
/// ~6.5 KB of /metrics), so 2,000 keep /metrics under 13 MB at worst.
pub const MAX_PROCESSES: usize = 2_000;
pub const MAX_PEERS: usize = 4_096;
/// A process or peer with no event for this long loses its series.
pub const EVICT_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);

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

/// The values of one label of a counter, in the order its counts are kept:
/// the enum names its series, so nobody indexes counts by position.
pub trait LabelValue: Copy + 'static {
    /// The label's name in the series.
    const LABEL: &'static str;
    /// Every value, in the order of `index`.
    const ALL: &'static [Self];
    fn index(self) -> usize;
    fn label_value(self) -> &'static str;
}

/// A counter per value of the label `L` (at most three values).
#[derive(Clone, Copy, Debug)]
pub struct CountsBy<L> {
    counts: [u64; 3],
    label: std::marker::PhantomData<L>,
}

impl<L> Default for CountsBy<L> {
    fn default() -> Self {
        Self {
            counts: [0; 3],
            label: std::marker::PhantomData,
        }
    }
}

impl<L: LabelValue> CountsBy<L> {
    pub fn add(&mut self, value: L, count: u64) {
        self.counts[value.index()] += count;
    }

    #[must_use]
    pub fn get(&self, value: L) -> u64 {
        self.counts[value.index()]
    }

    pub fn merge(&mut self, other: &Self) {
        for value in L::ALL {
            self.add(*value, other.get(*value));
        }
    }

    /// (label value, count) for every value, in `L::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = (L, u64)> + '_ {
        L::ALL.iter().map(|value| (*value, self.get(*value)))
    }
}

/// How an opened connection came to be (a `listen()` opens none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// `connect()`.
    Active,
    /// Accepted from a listener.
    Passive,
}

impl LabelValue for Opened {
    const LABEL: &'static str = "role";
    const ALL: &'static [Self] = &[Self::Active, Self::Passive];
    fn index(self) -> usize {
        self as usize
    }
    fn label_value(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Passive => "passive",
        }
    }
}

/// Which way a reset went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetDirection {
    Sent,
    Received,
}

impl LabelValue for ResetDirection {
    const LABEL: &'static str = "direction";
    const ALL: &'static [Self] = &[Self::Sent, Self::Received];
    fn index(self) -> usize {
        self as usize
    }
    fn label_value(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
        }
    }
}

impl LabelValue for Side {
    const LABEL: &'static str = "closed_first";
    const ALL: &'static [Self] = &[Self::Local, Self::Peer];
    fn index(self) -> usize {
        self as usize
    }
    fn label_value(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Peer => "peer",
        }
    }
}

impl LabelValue for RetransmitPhase {
    const LABEL: &'static str = "phase";
    const ALL: &'static [Self] = &Self::ALL;
    fn index(self) -> usize {
        self as usize
    }
    fn label_value(self) -> &'static str {
        match self {
            Self::Handshake => "syn",
            Self::Data => "data",
            Self::Fin => "fin",
        }
    }
}

impl LabelValue for LostCause {
    const LABEL: &'static str = "cause";
    const ALL: &'static [Self] = &[
        Self::KeepaliveTimeout,
        Self::RetransmitTimeout,
        Self::PeerReset,
    ];
    fn index(self) -> usize {
        self as usize
    }
    fn label_value(self) -> &'static str {
        match self {
            Self::KeepaliveTimeout => "keepalive_timeout",
            Self::RetransmitTimeout => "retransmit_timeout",
            Self::PeerReset => "peer_reset",
        }
    }
}

/// State changes by (old, new): a table indexed by the kernel's state
/// numbers, counted on every event without hashing.
#[derive(Clone, Debug)]
pub struct Transitions([[u64; STATES]; STATES]);

/// One more than the highest state number (`TcpState` numbers 1..=12).
const STATES: usize = 13;

impl Default for Transitions {
    fn default() -> Self {
        Self([[0; STATES]; STATES])
    }
}

impl Transitions {
    pub fn add(&mut self, old: TcpState, new: TcpState, count: u64) {
        self.0[old as usize][new as usize] += count;
    }

    /// The changes seen, ordered by old then new state.
    pub fn iter(&self) -> impl Iterator<Item = ((TcpState, TcpState), u64)> + '_ {
        TcpState::ALL.into_iter().flat_map(move |old| {
            TcpState::ALL.into_iter().filter_map(move |new| {
                let count = self.0[old as usize][new as usize];
                (count != 0).then_some(((old, new), count))
            })
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct ProcessMetrics {
    pub transitions: Transitions,
    pub opened: CountsBy<Opened>,
    /// By the side that closed first: local (active close), peer (passive close).
    pub closes: CountsBy<Side>,
    pub retransmits: CountsBy<RetransmitPhase>,
    pub resets: CountsBy<ResetDirection>,
    /// Established connections that died without a close by either side.
    pub lost: CountsBy<LostCause>,
    pub connect_failures: ConnectFailures,
    /// Closing sockets whose FIN was never acknowledged (kernel gave up).
    pub dead_peer_closes: u64,
    pub lifetime: Buckets,
    pub connect_latency: Buckets,
    /// Kernel time of the last event counted here (`evict_idle`).
    pub last_event_ns: u64,
}

#[derive(Clone, Debug, Default)]
pub struct PeerMetrics {
    pub attempts: u64,
    pub connect_latency: Buckets,
    pub connect_failures: ConnectFailures,
    pub dead_peer_closes: u64,
    /// Kernel time of the last event counted here (`evict_idle`).
    pub last_event_ns: u64,
}

pub struct DaemonMetrics {
    pub processes: RecentMap<ProcessKey, ProcessMetrics>,
    pub peers: RecentMap<SocketAddr, PeerMetrics>,
    /// Events folded into "other" because the bounds were reached.
    pub folded_processes: u64,
    pub folded_peers: u64,
    /// Label sets dropped after `EVICT_AFTER` without events.
    pub evicted: u64,
    /// The kernel's counts of resets on unknown sockets (summary mode)
    /// already added to the "unknown" process, by `ResetDirection`.
    resets_without_socket: [u64; 2],
    /// A silence this long is long: peer resets after it are lost
    /// connections (`lost::cause`).
    long_ns: u64,
}

impl Default for DaemonMetrics {
    fn default() -> Self {
        Self {
            processes: RecentMap::default(),
            peers: RecentMap::default(),
            folded_processes: 0,
            folded_peers: 0,
            evicted: 0,
            resets_without_socket: [0; 2],
            long_ns: lost::duration_ns(crate::diagnose::idle::DEFAULT_IDLE_THRESHOLD),
        }
    }
}

impl DaemonMetrics {
    /// Peer resets after a silence of `long` count as lost from now on.
    pub fn set_idle_threshold(&mut self, long: std::time::Duration) {
        self.long_ns = lost::duration_ns(long);
    }

    /// The counters of `key` for an event at `ts_ns`.
    fn process(&mut self, key: ProcessKey, ts_ns: u64) -> &mut ProcessMetrics {
        let key = if self.processes.len() >= MAX_PROCESSES && !self.processes.contains_key(&key) {
            self.folded_processes += 1;
            ProcessKey::OTHER
        } else {
            key
        };
        let process = self.processes.entry_or_default(&key);
        process.last_event_ns = process.last_event_ns.max(ts_ns);
        process
    }

    fn peer(&mut self, peer: SocketAddr, ts_ns: u64) -> &mut PeerMetrics {
        let peer = if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&peer) {
            self.folded_peers += 1;
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            peer
        };
        let metrics = self.peers.entry_or_default(&peer);
        metrics.last_event_ns = metrics.last_event_ns.max(ts_ns);
        metrics
    }

    /// Drops the processes and peers without events for `EVICT_AFTER` at
    /// kernel time `now_ns` ("other" and "unknown" stay). Returns how many
    /// went.
    pub fn evict_idle(&mut self, now_ns: u64) -> usize {
        let limit = lost::duration_ns(EVICT_AFTER);
        let active = |last: u64| now_ns.saturating_sub(last) <= limit;
        let before = self.processes.len() + self.peers.len();
        self.processes.retain(|key, process| {
            *key == ProcessKey::OTHER
                || *key == ProcessKey::UNKNOWN
                || active(process.last_event_ns)
        });
        self.peers.retain(|_, peer| active(peer.last_event_ns));
        let evicted = before - self.processes.len() - self.peers.len();
        self.evicted += evicted as u64;
        evicted
    }

    /// Summary mode counts resets on unknown sockets in the kernel instead
    /// of sending them: add what is new to the "unknown" process, as the
    /// events would have been.
    pub fn resets_without_socket(&mut self, sent_total: u64, received_total: u64) {
        for (direction, total) in [
            (ResetDirection::Sent, sent_total),
            (ResetDirection::Received, received_total),
        ] {
            let seen = &mut self.resets_without_socket[direction as usize];
            let new = total.saturating_sub(*seen);
            if new > 0 {
                *seen = total;
                self.process(ProcessKey::UNKNOWN, 0)
                    .resets
                    .add(direction, new);
            }
        }
    }

    /// One event that passed the filter.
    pub fn observe(&mut self, seen: &Observed) {
        let ts_ns = seen.event.ts_ns;
        let Some(record) = seen.record else {
            if let TcpEventKind::ResetSent {
                by_close: false, ..
            } = seen.event.what
            {
                self.process(ProcessKey::UNKNOWN, ts_ns)
                    .resets
                    .add(ResetDirection::Sent, 1);
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
            TcpEventKind::StateChange { old, new } => {
                // A socket's end is counted with its last transition: one
                // lookup of its process for both.
                let end = seen
                    .closed
                    .then(|| End::of(record, event, old, new, self.long_ns));
                let process = self.process(owner, ts_ns);
                process.transitions.add(old, new, 1);
                match TcpState::birth(old, new) {
                    Some(Birth::Active) => process.opened.add(Opened::Active, 1),
                    Some(Birth::Passive) => process.opened.add(Opened::Passive, 1),
                    Some(Birth::Listener) | None => {}
                }
                // connect() latency: SYN_SENT to ESTABLISHED.
                let latency = event
                    .in_state_ns
                    .filter(|_| TcpState::connect_completed(old, new));
                if let Some(ns) = latency {
                    process.connect_latency.observe_ns(ns);
                }
                if let Some(end) = &end {
                    end.count(process, record, event);
                }
                if let Some(ns) = latency {
                    self.peer(record.remote, ts_ns)
                        .connect_latency
                        .observe_ns(ns);
                }
                if active && TcpState::birth(old, new) == Some(Birth::Active) {
                    self.peer(record.remote, ts_ns).attempts += 1;
                }
                if let Some(end) = end.filter(|end| end.gave_up || end.failed_connect) {
                    end.count_for_peer(self.peer(record.remote, ts_ns), event);
                }
            }
            TcpEventKind::Retransmit { state } => {
                let phase = state.unwrap_or(record.state).retransmit_phase();
                self.process(owner, ts_ns).retransmits.add(phase, 1);
            }
            // `record` is the listener's: its owner answered the handshake.
            TcpEventKind::SynAckRetransmit => {
                self.process(owner, ts_ns)
                    .retransmits
                    .add(RetransmitPhase::Handshake, 1);
            }
            TcpEventKind::ResetSent { .. } => {
                self.process(owner, ts_ns)
                    .resets
                    .add(ResetDirection::Sent, 1);
            }
            TcpEventKind::ResetReceived => {
                self.process(owner, ts_ns)
                    .resets
                    .add(ResetDirection::Received, 1);
            }
            TcpEventKind::EofRead => {}
        }
    }
}

/// How a socket ended, as its process's and its peer's counters tell it
/// (a socket ends with a state change: see `Observed::closed`).
struct End {
    /// Its FIN was never acknowledged: the kernel gave up on the peer.
    gave_up: bool,
    failed_connect: bool,
    /// The CLOSE happened in a system call (a connect abandoned by `close()`).
    by_caller: bool,
    lost: Option<LostCause>,
}

impl End {
    fn of(
        record: &SocketRecord,
        event: &TcpEvent,
        old: TcpState,
        new: TcpState,
        long_ns: u64,
    ) -> Self {
        Self {
            gave_up: record.retransmits.fin > 0 && event.error == Some(libc::ETIMEDOUT),
            failed_connect: TcpState::connect_failed(old, new),
            by_caller: event.actor.is_some(),
            lost: lost::cause(record, event, long_ns),
        }
    }

    fn count(&self, process: &mut ProcessMetrics, record: &SocketRecord, event: &TcpEvent) {
        if let Some(side) = record.closed_by {
            process.closes.add(side, 1);
        }
        // An abortive close's reset, sent after the CLOSE.
        if event.sock.flags & RESET_BY_CLOSE != 0 {
            process.resets.add(ResetDirection::Sent, 1);
        }
        if let Some(cause) = self.lost {
            process.lost.add(cause, 1);
        }
        if let (Some(lifetime), false) = (
            record.lifetime_ns(event.ts_ns),
            record.role == Role::Listener,
        ) {
            process.lifetime.observe_ns(lifetime);
        }
        if self.gave_up {
            process.dead_peer_closes += 1;
        }
        if self.failed_connect {
            process.connect_failures.record(event.error, self.by_caller);
        }
    }

    fn count_for_peer(&self, peer: &mut PeerMetrics, event: &TcpEvent) {
        if self.gave_up {
            peer.dead_peer_closes += 1;
        }
        if self.failed_connect {
            peer.connect_failures.record(event.error, self.by_caller);
        }
    }
}

/// Adds `from` into `into` (rows whose labels turned out equal).
pub fn merge(into: &mut ProcessMetrics, from: &ProcessMetrics) {
    for ((old, new), count) in from.transitions.iter() {
        into.transitions.add(old, new, count);
    }
    into.opened.merge(&from.opened);
    into.closes.merge(&from.closes);
    into.retransmits.merge(&from.retransmits);
    into.resets.merge(&from.resets);
    into.lost.merge(&from.lost);
    into.connect_failures.add(&from.connect_failures);
    into.dead_peer_closes += from.dead_peer_closes;
    into.lifetime.merge(&from.lifetime);
    into.connect_latency.merge(&from.connect_latency);
    into.last_event_ns = into.last_event_ns.max(from.last_event_ns);
}

impl PeerMetrics {
    pub fn merge(&mut self, other: &Self) {
        self.attempts += other.attempts;
        self.connect_latency.merge(&other.connect_latency);
        self.connect_failures.add(&other.connect_failures);
        self.dead_peer_closes += other.dead_peer_closes;
        self.last_event_ns = self.last_event_ns.max(other.last_event_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ProcessKey {
        let mut comm = [0; 16];
        comm[..name.len()].copy_from_slice(name.as_bytes());
        ProcessKey { comm, cgroup: 0 }
    }

    #[test]
    fn a_flood_of_names_folds_then_expires_without_touching_active_services() {
        const MINUTE: u64 = 60 * 1_000_000_000;
        let mut metrics = DaemonMetrics::default();
        metrics.process(key("service"), 0).dead_peer_closes += 1;
        for i in 0..MAX_PROCESSES + 100 {
            metrics
                .process(key(&format!("flood{i}")), MINUTE)
                .dead_peer_closes += 1;
        }
        assert_eq!(metrics.processes.len(), MAX_PROCESSES + 1, "with \"other\"");
        assert_eq!(metrics.folded_processes, 101);
        // The service stays active; the flood does not.
        metrics
            .process(key("service"), 14 * MINUTE)
            .dead_peer_closes += 1;
        assert_eq!(
            metrics.evict_idle(15 * MINUTE),
            0,
            "nothing idle for 15 min yet"
        );
        assert_eq!(metrics.evict_idle(20 * MINUTE), MAX_PROCESSES - 1);
        assert_eq!(metrics.evicted, (MAX_PROCESSES - 1) as u64);
        assert_eq!(metrics.processes[&key("service")].dead_peer_closes, 2);
        assert!(metrics.processes.contains_key(&ProcessKey::OTHER));
        // Room again for a new name.
        metrics
            .process(key("newcomer"), 20 * MINUTE)
            .dead_peer_closes += 1;
        assert!(metrics.processes.contains_key(&key("newcomer")));
    }

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
