//! Per-flow aggregates: one `Flow` per (owner process, role, peer), fed by
//! every closed socket and every connect, from which the churn, reconnect
//! and connect findings are derived.

use std::net::SocketAddr;

use hdrhistogram::Histogram;
use smallvec::SmallVec;
use tcptrace_common::{Birth, Moment, RetransmitPhase, Side, TcpState, CLOSED_AT_EXIT};

use crate::{
    event::{TcpEvent, TcpEventKind},
    recent_map::RecentMap,
    table::{Process, Role, SocketRecord, StackRef},
    tally::Tally,
};

/// `TCP_TIMEWAIT_LEN`: how long Linux keeps a timewait socket.
pub const TIME_WAIT_SECS: u64 = 60;
/// Recent connection starts kept per flow for back-off analysis.
const RECENT_ATTEMPTS: usize = 64;
/// Flows kept at once (about 14 KB each): a host running thousands of
/// short-lived processes evicts the least recently active flow instead of
/// growing without bound. Evictions are counted.
pub const MAX_FLOWS: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub owner: Option<Process>,
    pub role: Role,
    /// Server endpoint for clients; client address (port 0) for servers.
    pub peer: SocketAddr,
}

/// Why a `connect()` failed, from `sk_err` when `SYN_SENT` ended in CLOSE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnectFailures {
    /// RST answering our SYN (ECONNREFUSED).
    pub refused: u64,
    /// SYN retransmits exhausted (ETIMEDOUT).
    pub timed_out: u64,
    /// ICMP unreachable (EHOSTUNREACH, ENETUNREACH, ...).
    pub unreachable: u64,
    /// Reset during the handshake (ECONNRESET).
    pub reset: u64,
    /// The caller gave up: `close()` or a non-blocking connect abandoned.
    pub aborted: u64,
    /// Any other error.
    pub other: u64,
}

impl ConnectFailures {
    #[must_use]
    pub fn total(&self) -> u64 {
        self.refused + self.timed_out + self.unreachable + self.reset + self.aborted + self.other
    }

    pub fn add(&mut self, other: &Self) {
        self.refused += other.refused;
        self.timed_out += other.timed_out;
        self.unreachable += other.unreachable;
        self.reset += other.reset;
        self.aborted += other.aborted;
        self.other += other.other;
    }

    /// Counts one failed connect by its `sk_err`; `by_caller` when the
    /// CLOSE happened in the caller's own system call.
    pub fn record(&mut self, error: Option<i32>, by_caller: bool) {
        match error {
            Some(libc::ECONNREFUSED) => self.refused += 1,
            Some(libc::ETIMEDOUT) => self.timed_out += 1,
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN) => {
                self.unreachable += 1;
            }
            Some(libc::ECONNRESET | libc::EPIPE) => self.reset += 1,
            None if by_caller => self.aborted += 1,
            _ => self.other += 1,
        }
    }
}

/// One bucket per second of `TIME_WAIT`, and one for the current second.
#[expect(clippy::cast_possible_truncation, reason = "60 fits in any usize")]
const BUCKETS: usize = TIME_WAIT_SECS as usize + 1;

/// A fixed ring of per-second counters over the last `TIME_WAIT_SECS`:
/// how many `TIME_WAIT` sockets a flow still holds, in constant memory.
#[derive(Clone, Debug)]
pub struct TimeWaitWindow {
    buckets: [u32; BUCKETS],
    /// Second (of `ktime`) each bucket counts.
    seconds: [u64; BUCKETS],
}

impl Default for TimeWaitWindow {
    fn default() -> Self {
        Self {
            buckets: [0; BUCKETS],
            seconds: [u64::MAX; BUCKETS],
        }
    }
}

impl TimeWaitWindow {
    pub fn enter(&mut self, ts_ns: u64) {
        let second = ts_ns / 1_000_000_000;
        let slot = usize::try_from(second % (TIME_WAIT_SECS + 1)).unwrap_or(0);
        if self.seconds[slot] != second {
            self.seconds[slot] = second;
            self.buckets[slot] = 0;
        }
        self.buckets[slot] += 1;
    }

    /// Timewait sockets entered less than `TIME_WAIT_SECS` before `now_ns`.
    #[must_use]
    pub fn live(&self, now_ns: u64) -> u64 {
        let now = now_ns / 1_000_000_000;
        self.seconds
            .iter()
            .zip(self.buckets)
            .filter(|(&second, _)| {
                second != u64::MAX && second + TIME_WAIT_SECS > now && second <= now
            })
            .map(|(_, count)| u64::from(count))
            .sum()
    }
}

#[derive(Clone, Debug)]
pub struct Flow {
    pub closed: u64,
    pub active_closes: u64,
    pub passive_closes: u64,
    /// Passive closes where the peer sent nothing before its FIN: it
    /// turned the client away (a connection limit) rather than answered.
    pub rejections: u64,
    /// Connections that sent or received a reset.
    pub resets: u64,
    /// Born → CLOSE, microseconds, for sockets whose birth was seen.
    pub lifetimes_us: Histogram<u32>,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Last event of any kind, for eviction.
    pub last_seen_ns: u64,
    pub time_wait: TimeWaitWindow,
    /// `connect()` attempts (active flows).
    pub attempts: u64,
    /// Connection starts, oldest first: the last `RECENT_ATTEMPTS` count
    /// (see `recent_attempts_ns`); up to twice as many are kept, so that
    /// the oldest half goes in one move instead of one per start.
    attempts_ns: Vec<u64>,
    pub established: u64,
    /// `SYN_SENT` → ESTABLISHED (or `SYN_RECV` → ESTABLISHED for servers), microseconds.
    pub handshake_us: Histogram<u32>,
    pub syn_retransmits: u64,
    /// Segments sent again after the handshake (data, and the FIN or the
    /// data before it): loss on the path. `tcp_retransmit_skb` hits that
    /// went out; summary mode replays them from each socket's history.
    pub data_retransmits: u64,
    pub failures: ConnectFailures,
    pub owner_stacks: Tally<StackRef>,
    pub close_stacks: Tally<StackRef>,
    pub closers: Tally<Process>,
    /// Closed by their closer's exit, not a `close()` (`CLOSED_AT_EXIT`).
    pub closed_at_exit: u64,
    /// Network namespaces its sockets lived in (one, unless its process
    /// moved or the flow folds several pods' processes).
    pub namespaces: SmallVec<[u32; 1]>,
}

fn histogram() -> Histogram<u32> {
    // 1 µs to 1 h at 2 significant digits (1% resolution, about 7 KB);
    // longer values are clamped into the last bucket.
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

impl Flow {
    /// Adds `other`'s counts to this one's (folding the flows of many
    /// processes of one program into one finding). Its `time_wait` window
    /// is not merged: callers sum each flow's live count.
    pub fn absorb(&mut self, other: &Self) {
        self.closed += other.closed;
        self.active_closes += other.active_closes;
        self.passive_closes += other.passive_closes;
        self.rejections += other.rejections;
        self.resets += other.resets;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.lifetimes_us.add(&other.lifetimes_us);
        let _ = self.handshake_us.add(&other.handshake_us);
        self.first_ns = self.first_ns.min(other.first_ns);
        self.last_ns = self.last_ns.max(other.last_ns);
        self.last_seen_ns = self.last_seen_ns.max(other.last_seen_ns);
        self.attempts += other.attempts;
        self.attempts_ns
            .extend_from_slice(other.recent_attempts_ns());
        self.attempts_ns.sort_unstable();
        let excess = self.attempts_ns.len().saturating_sub(RECENT_ATTEMPTS);
        self.attempts_ns.drain(..excess);
        self.established += other.established;
        self.syn_retransmits += other.syn_retransmits;
        self.data_retransmits += other.data_retransmits;
        self.failures.add(&other.failures);
        self.owner_stacks.merge(&other.owner_stacks);
        self.close_stacks.merge(&other.close_stacks);
        self.closers.merge(&other.closers);
        self.closed_at_exit += other.closed_at_exit;
        for &netns in &other.namespaces {
            self.saw_namespace(netns);
        }
    }

    /// The last `RECENT_ATTEMPTS` connection starts, oldest first.
    #[must_use]
    pub fn recent_attempts_ns(&self) -> &[u64] {
        let kept = self.attempts_ns.len();
        &self.attempts_ns[kept.saturating_sub(RECENT_ATTEMPTS)..]
    }

    #[inline]
    fn saw_namespace(&mut self, netns: u32) {
        // Nearly always the one namespace the flow has already.
        if self.namespaces.first() != Some(&netns) && !self.namespaces.contains(&netns) {
            self.namespaces.push(netns);
        }
    }
}

impl Default for Flow {
    fn default() -> Self {
        Self {
            closed: 0,
            active_closes: 0,
            passive_closes: 0,
            rejections: 0,
            resets: 0,
            lifetimes_us: histogram(),
            first_ns: u64::MAX,
            last_ns: 0,
            last_seen_ns: 0,
            time_wait: TimeWaitWindow::default(),
            attempts: 0,
            attempts_ns: Vec::new(),
            established: 0,
            handshake_us: histogram(),
            syn_retransmits: 0,
            data_retransmits: 0,
            failures: ConnectFailures::default(),
            owner_stacks: Tally::default(),
            close_stacks: Tally::default(),
            closers: Tally::default(),
            closed_at_exit: 0,
            namespaces: SmallVec::new(),
        }
    }
}

#[derive(Default)]
pub struct Flows {
    pub flows: RecentMap<FlowKey, Flow>,
    /// Flows dropped to stay within `MAX_FLOWS`.
    pub evicted: u64,
}

impl Flows {
    fn flow(&mut self, record: &SocketRecord) -> &mut Flow {
        self.flow_of(&FlowKey {
            owner: record.owner,
            role: record.role,
            peer: record.peer_key(),
        })
    }

    fn flow_of(&mut self, key: &FlowKey) -> &mut Flow {
        if self.flows.len() >= MAX_FLOWS && !self.flows.contains_key(key) {
            // Only when a new flow arrives at the bound: O(n) is fine.
            let stalest = self
                .flows
                .iter()
                .min_by_key(|(_, f)| f.last_seen_ns)
                .map(|(k, _)| *k);
            if let Some(stalest) = stalest {
                self.flows.remove(&stalest);
                self.evicted += 1;
            }
        }
        self.flows.entry_or_default(key)
    }

    /// Every event on a live socket: connects and handshakes.
    pub fn on_event(&mut self, event: &TcpEvent, record: &SocketRecord) {
        if event.what == TcpEventKind::SynAckRetransmit {
            // `record` is the listener's: the handshake belongs to the
            // passive flow of the client it was answering.
            let flow = self.flow_of(&FlowKey {
                owner: record.owner,
                role: Role::Passive,
                peer: SocketAddr::new(event.remote.ip(), 0),
            });
            flow.last_seen_ns = event.ts_ns;
            flow.saw_namespace(record.netns);
            flow.syn_retransmits += 1;
            return;
        }
        // Only the events a flow counts look it up: this runs for every
        // event the daemon sees, and a connection's other transitions
        // would only refresh its recency, which its close does too.
        let Some(counted) = Counted::of(event) else {
            return;
        };
        let flow = self.flow(record);
        flow.saw(event, record);
        flow.count(counted, event, record);
    }

    /// A socket's final record, with the event that closed it. One lookup.
    pub fn on_closed(&mut self, record: &SocketRecord, event: &TcpEvent) {
        let flow = self.flow(record);
        flow.saw(event, record);
        if let Some(counted) = Counted::of(event) {
            flow.count(counted, event, record);
        }
        if record.role != Role::Listener {
            flow.on_closed(record, event);
        }
    }
}

/// What an event on a socket adds to its flow's counts.
#[derive(Clone, Copy)]
enum Counted {
    /// `connect()`: an attempt, with its call site.
    Attempt,
    /// The handshake completed, with how long it took.
    Established,
    SynRetransmit,
    DataRetransmit,
}

impl Counted {
    /// The count `event` adds to, if any.
    fn of(event: &TcpEvent) -> Option<Self> {
        match event.what {
            TcpEventKind::StateChange { old, new }
                if TcpState::birth(old, new) == Some(Birth::Active) =>
            {
                Some(Self::Attempt)
            }
            TcpEventKind::StateChange { old, new }
                if TcpState::moment(old, new) == Some(Moment::Established) =>
            {
                Some(Self::Established)
            }
            TcpEventKind::Retransmit { state: Some(state) }
                if state.retransmit_phase() == RetransmitPhase::Handshake =>
            {
                Some(Self::SynRetransmit)
            }
            TcpEventKind::Retransmit { state: Some(_) } => Some(Self::DataRetransmit),
            _ => None,
        }
    }
}

impl Flow {
    /// An event of the flow's: when it was last active, and where.
    fn saw(&mut self, event: &TcpEvent, record: &SocketRecord) {
        self.last_seen_ns = self.last_seen_ns.max(event.ts_ns);
        self.saw_namespace(record.netns);
    }

    fn count(&mut self, counted: Counted, event: &TcpEvent, record: &SocketRecord) {
        let flow = self;
        match counted {
            Counted::Attempt => {
                flow.attempts += 1;
                if flow.attempts_ns.len() == 2 * RECENT_ATTEMPTS {
                    flow.attempts_ns.drain(..RECENT_ATTEMPTS);
                }
                // Kept in time order: records read from several CPUs'
                // rings arrive a little out of it (see `pipeline::drain`).
                let at = flow
                    .attempts_ns
                    .iter()
                    .rposition(|&start| start <= event.ts_ns)
                    .map_or(0, |before| before + 1);
                flow.attempts_ns.insert(at, event.ts_ns);
                if let Some(stack) = record.owner_stack {
                    flow.owner_stacks.add(stack, 1);
                }
            }
            Counted::Established => {
                flow.established += 1;
                if let Some(ns) = event.in_state_ns {
                    flow.handshake_us.saturating_record((ns / 1_000).max(1));
                }
            }
            Counted::SynRetransmit => flow.syn_retransmits += 1,
            Counted::DataRetransmit => flow.data_retransmits += 1,
        }
    }

    /// A socket's final record (not a listener's).
    fn on_closed(&mut self, record: &SocketRecord, event: &TcpEvent) {
        let flow = self;
        flow.closed += 1;
        flow.first_ns = flow.first_ns.min(record.born_ns.unwrap_or(event.ts_ns));
        flow.last_ns = flow.last_ns.max(event.ts_ns);
        if let Some(lifetime) = record.lifetime_ns(event.ts_ns) {
            flow.lifetimes_us
                .saturating_record((lifetime / 1_000).max(1));
        }
        match record.closed_by {
            Some(Side::Local) => flow.active_closes += 1,
            Some(Side::Peer) => {
                flow.passive_closes += 1;
                if !record.peer_sent_data {
                    flow.rejections += 1;
                }
            }
            None => {}
        }
        if record.resets_received + record.resets_sent > 0 {
            flow.resets += 1;
        }
        if let Some(stack) = record.closer_stack {
            flow.close_stacks.add(stack, 1);
        }
        // A passive socket's call site is known for sure only at its end:
        // the accept() that took it, or else its listener's listen().
        if record.role == Role::Passive {
            if let Some(stack) = record.owner_stack {
                flow.owner_stacks.add(stack, 1);
            }
        }
        if let Some(closer) = record.closer {
            flow.closers.add(closer, 1);
            if event.sock.flags & CLOSED_AT_EXIT != 0 {
                flow.closed_at_exit += 1;
            }
        }
        if let TcpEventKind::StateChange { old, new } = event.what {
            // Either timewait substate: the tracepoint cannot tell them apart.
            if TcpState::hands_over_to_timewait(old, new) && event.error.is_none() {
                flow.time_wait.enter(event.ts_ns);
            }
            if TcpState::connect_failed(old, new) {
                flow.failures.record(event.error, event.actor.is_some());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_wait_window_forgets_after_sixty_seconds() {
        let mut window = TimeWaitWindow::default();
        let s = 1_000_000_000;
        window.enter(100 * s);
        window.enter(100 * s + 5);
        window.enter(130 * s);
        assert_eq!(window.live(130 * s), 3);
        assert_eq!(window.live(159 * s), 3);
        assert_eq!(window.live(160 * s), 1, "the two from second 100 expired");
        assert_eq!(window.live(200 * s), 0);
        // A bucket reused for a later second starts from zero.
        window.enter(161 * s);
        assert_eq!(window.live(161 * s), 2);
    }

    #[test]
    fn connect_failures_by_cause() {
        let mut f = ConnectFailures::default();
        f.record(Some(libc::ECONNREFUSED), false);
        f.record(Some(libc::ETIMEDOUT), false);
        f.record(Some(libc::EHOSTUNREACH), false);
        f.record(Some(libc::ECONNRESET), false);
        f.record(None, true);
        f.record(None, false);
        assert_eq!(
            (
                f.refused,
                f.timed_out,
                f.unreachable,
                f.reset,
                f.aborted,
                f.other
            ),
            (1, 1, 1, 1, 1, 1)
        );
        assert_eq!(f.total(), 6);
    }
}
