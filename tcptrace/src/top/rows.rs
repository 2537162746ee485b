//! `tcptrace top`'s rows: what each process did over the last interval
//! (connections opened and closed, connect failures, retransmits,
//! resets), since the start, and what it holds now (`TIME_WAIT`,
//! `CLOSE_WAIT`, from the report's findings).
//!
//! Events are added into a map keyed by pid: an event of a known process
//! adds integers in place; only a new process (or a new peer of one)
//! allocates. Pure: fed `Observed` events and findings, read as sorted
//! rows; the tests feed it synthetic ones.

use std::{net::SocketAddr, time::Duration};

use tcptrace_common::{Birth, TcpState, RESET_BY_CLOSE};

use super::columns::Column;
use crate::{
    container::ContainerLabels,
    event::{comm_str, TcpEventKind},
    findings::{Finding, Held, Report},
    pipeline::Observed,
    table::{Process, Role},
    FastMap,
};

/// Processes tracked at once; the events of more are added to the row
/// of pid 0, "other" (counted in `Rows::folded`).
pub const MAX_ROWS: usize = 4_096;
/// Peers kept per process (the rest are counted in `Row::peers_folded`).
pub const MAX_PEERS: usize = 64;
/// Intervals a row with nothing to show (no event, nothing held) stays.
pub const KEEP_IDLE_INTERVALS: u32 = 30;

/// The pid of the row that takes what the bounds leave out, and of the
/// events whose socket has no known owner.
pub const NO_PID: u32 = 0;

/// Event counts of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections opened: `connect()` or accepted from a listener.
    pub opened: u64,
    /// Connections (not listeners) that reached CLOSE.
    pub closed: u64,
    /// `connect()` that ended in CLOSE from `SYN_SENT`.
    pub connect_failures: u64,
    /// Segments sent again (SYN-ACKs of its listeners included).
    pub retransmits: u64,
    /// Resets sent and received.
    pub resets: u64,
}

impl Counts {
    pub fn add(&mut self, other: Self) {
        self.opened += other.opened;
        self.closed += other.closed;
        self.connect_failures += other.connect_failures;
        self.retransmits += other.retransmits;
        self.resets += other.resets;
    }

    #[must_use]
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// What one event adds to its owner's counts: births and connect
    /// failures by the transition rules (`tcptrace_common::transition`),
    /// an abortive close's reset with its CLOSE (as the pipeline counts
    /// it).
    #[must_use]
    pub fn of(seen: &Observed) -> Self {
        let mut counts = Self::default();
        match seen.event.what {
            TcpEventKind::StateChange { old, new } => {
                if matches!(
                    TcpState::birth(old, new),
                    Some(Birth::Active | Birth::Passive)
                ) {
                    counts.opened = 1;
                }
                if seen.closed && seen.record.is_none_or(|r| r.role != Role::Listener) {
                    counts.closed = 1;
                }
                if TcpState::connect_failed(old, new) {
                    counts.connect_failures = 1;
                }
                if new == TcpState::Close && seen.event.sock.flags & RESET_BY_CLOSE != 0 {
                    counts.resets = 1;
                }
            }
            TcpEventKind::Retransmit { .. } | TcpEventKind::SynAckRetransmit => {
                counts.retransmits = 1;
            }
            TcpEventKind::ResetSent { by_close, .. } => counts.resets = u64::from(!by_close),
            TcpEventKind::ResetReceived => counts.resets = 1,
            TcpEventKind::EofRead => {}
        }
        counts
    }
}

/// One process's row (or one program's: `Rows::by_program`).
#[derive(Clone, Debug)]
pub struct Row {
    /// The process (the lowest pid of a program's row).
    pub pid: u32,
    /// Processes in the row: 1, or those of one program.
    pub processes: u32,
    /// The process name (the thread-group leader's `comm`; untrusted).
    pub comm: [u8; 16],
    /// Its container or pod, by name (empty on the host or when unknown).
    pub container: String,
    /// The interval being counted.
    pub now: Counts,
    /// The last complete interval: what is shown.
    pub last: Counts,
    /// Since the view started.
    pub total: Counts,
    /// What the last report says it holds.
    pub held: Held,
    /// Connections opened per peer since the start: the server for a
    /// client, the client's address (port 0) for a server.
    pub peers: FastMap<SocketAddr, u64>,
    /// Connections to peers past `MAX_PEERS`.
    pub peers_folded: u64,
    /// Complete intervals since its last event.
    idle_intervals: u32,
}

impl Row {
    fn new(pid: u32, comm: [u8; 16], labels: Option<&ContainerLabels>) -> Self {
        Self {
            pid,
            processes: 1,
            comm,
            container: labels.map(container_name).unwrap_or_default(),
            now: Counts::default(),
            last: Counts::default(),
            total: Counts::default(),
            held: Held::default(),
            peers: FastMap::default(),
            peers_folded: 0,
            idle_intervals: 0,
        }
    }

    /// The process name as text.
    #[must_use]
    pub fn name(&self) -> std::borrow::Cow<'_, str> {
        comm_str(&self.comm)
    }

    /// Its peers, most connections first (ties by address).
    #[must_use]
    pub fn top_peers(&self, max: usize) -> Vec<(SocketAddr, u64)> {
        let mut peers: Vec<(SocketAddr, u64)> = self.peers.iter().map(|(a, n)| (*a, *n)).collect();
        peers.sort_by(|(a, a_n), (b, b_n)| b_n.cmp(a_n).then(a.cmp(b)));
        peers.truncate(max);
        peers
    }

    /// Adds another process's row (of the same program).
    fn merge(&mut self, other: &Self) {
        self.pid = self.pid.min(other.pid);
        self.processes += other.processes;
        self.now.add(other.now);
        self.last.add(other.last);
        self.total.add(other.total);
        self.held.add(other.held);
        for (peer, n) in &other.peers {
            if let Some(count) = self.peers.get_mut(peer) {
                *count += n;
            } else if self.peers.len() < MAX_PEERS {
                self.peers.insert(*peer, *n);
            } else {
                self.peers_folded += n;
            }
        }
        self.peers_folded += other.peers_folded;
    }

    fn is_idle(&self) -> bool {
        self.now.is_zero() && self.last.is_zero() && self.held == Held::default()
    }
}

/// A workload's name for a row: the container's, else the pod's.
#[must_use]
pub fn container_name(labels: &ContainerLabels) -> String {
    if labels.container.is_empty() {
        labels.pod.clone()
    } else {
        labels.container.clone()
    }
}

/// The peer a connection is counted against: the server endpoint for a
/// client, the client's address for a server (its ports are all
/// different), as `diagnose::flows` keys its flows.
#[must_use]
pub fn peer_of(role: Role, remote: SocketAddr) -> SocketAddr {
    match role {
        Role::Passive => SocketAddr::new(remote.ip(), 0),
        Role::Active | Role::Listener | Role::Unknown => remote,
    }
}

/// Every process's row.
#[derive(Debug, Default)]
pub struct Rows {
    rows: FastMap<u32, Row>,
    /// Events added to "other" because `MAX_ROWS` processes were tracked.
    pub folded: u64,
}

impl Rows {
    /// One event that passed the filter, counted for its socket's owner.
    pub fn observe(&mut self, seen: &Observed) {
        let counts = Self::counts_and_peer(seen);
        let (pid, comm) = match (seen.record.and_then(|r| r.owner), seen.owner) {
            (Some(owner), _) => (owner.pid, owner.comm),
            (None, Some(owner)) => (owner.pid, Process::of_owner(owner).comm),
            (None, None) => (NO_PID, *b"unknown\0\0\0\0\0\0\0\0\0"),
        };
        self.add(pid, comm, seen.labels.map(|l| &**l), counts.0, counts.1);
    }

    fn counts_and_peer(seen: &Observed) -> (Counts, Option<SocketAddr>) {
        let counts = Counts::of(seen);
        let peer = match (counts.opened, seen.record) {
            (1, Some(record)) => Some(peer_of(record.role, record.remote)),
            _ => None,
        };
        (counts, peer)
    }

    /// Adds `counts` to process `pid`'s row (made when new), and a
    /// connection to `peer`.
    pub fn add(
        &mut self,
        pid: u32,
        comm: [u8; 16],
        labels: Option<&ContainerLabels>,
        counts: Counts,
        peer: Option<SocketAddr>,
    ) {
        if counts.is_zero() {
            return;
        }
        let row = self.row(pid, comm, labels);
        row.now.add(counts);
        row.total.add(counts);
        row.idle_intervals = 0;
        if let Some(peer) = peer {
            if let Some(n) = row.peers.get_mut(&peer) {
                *n += 1;
            } else if row.peers.len() < MAX_PEERS {
                row.peers.insert(peer, 1);
            } else {
                row.peers_folded += 1;
            }
        }
    }

    /// The row of `pid`, made when new (folded into "other" past
    /// `MAX_ROWS`).
    fn row(&mut self, pid: u32, comm: [u8; 16], labels: Option<&ContainerLabels>) -> &mut Row {
        let pid = if self.rows.len() >= MAX_ROWS && !self.rows.contains_key(&pid) {
            self.folded += 1;
            NO_PID
        } else {
            pid
        };
        let row = self
            .rows
            .entry(pid)
            .or_insert_with(|| Row::new(pid, comm, labels));
        // A pid taken by another program (or a name learnt late).
        if pid != NO_PID && row.comm != comm {
            row.comm = comm;
        }
        if row.container.is_empty() {
            if let Some(labels) = labels {
                row.container = container_name(labels);
            }
        }
        row
    }

    /// Closes the interval: its counts become the ones shown, and rows
    /// idle for `KEEP_IDLE_INTERVALS` go.
    pub fn end_interval(&mut self) {
        for row in self.rows.values_mut() {
            row.last = std::mem::take(&mut row.now);
            if row.last.is_zero() {
                row.idle_intervals = row.idle_intervals.saturating_add(1);
            }
        }
        self.rows
            .retain(|_, row| !(row.is_idle() && row.idle_intervals >= KEEP_IDLE_INTERVALS));
    }

    /// What each process holds now, from a report's findings
    /// (`Finding::held`): replaces what the previous report said. A
    /// holder without events yet gets a row.
    pub fn set_held(&mut self, report: &Report) {
        for row in self.rows.values_mut() {
            row.held = Held::default();
        }
        for (pid, process, held) in report.findings.iter().flat_map(Finding::held_by_pid) {
            let Some(process) = process else {
                continue;
            };
            let comm = Process::named(process.pid, &process.comm).comm;
            let labels = ContainerLabels {
                namespace: String::new(),
                pod: process.pod.clone(),
                container: process.container.clone(),
                ..ContainerLabels::EMPTY
            };
            // A folded row's other processes share its name and container.
            self.row(pid, comm, Some(&labels)).held.add(held);
        }
    }

    /// Every row, most first by `column` (ties by pid).
    #[must_use]
    pub fn sorted(&self, column: Column, interval: Duration) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self.rows.values().collect();
        let key = |row: &Row| column.sort_key(row, interval);
        rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.pid.cmp(&b.pid)));
        rows
    }

    /// One row per program (process name and container), unsorted: a
    /// shell loop's processes, or a pre-fork server's master (whose
    /// listener's handshakes it is counted for) and its workers (which
    /// accept and close the connections), as one.
    #[must_use]
    pub fn by_program(&self) -> Vec<Row> {
        let mut programs: FastMap<([u8; 16], &str), Row> = FastMap::default();
        for row in self.rows.values() {
            match programs.entry((row.comm, row.container.as_str())) {
                std::collections::hash_map::Entry::Occupied(mut program) => {
                    program.get_mut().merge(row);
                }
                std::collections::hash_map::Entry::Vacant(program) => {
                    program.insert(row.clone());
                }
            }
        }
        programs.into_values().collect()
    }

    #[must_use]
    pub fn get(&self, pid: u32) -> Option<&Row> {
        self.rows.get(&pid)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use tcptrace_common::TcpState;
    use tcptrace_common::TcpState::{
        CloseWait, Established, FinWait1, FinWait2, LastAck, Listen, SynRecv, SynSent,
    };

    use super::*;
    use crate::{
        event::{
            synthetic::{task, Conn, MS},
            TcpEvent,
        },
        findings::{Churn, CloseWaitLeak, ClosedFirst, ProcessJson, Processes},
        owner::{self, StartOwners},
        table::{Applied, SocketTable},
    };

    /// Events through the real owner and table steps into `rows`, as the
    /// pipeline hands them over.
    fn feed(rows: &mut Rows, table: &mut SocketTable, events: &[TcpEvent]) {
        let start = StartOwners::default();
        for event in events {
            let owner = owner::resolve(event, &start);
            let applied = table.apply_in(event, owner.as_ref(), None);
            let (record, closed) = match &applied {
                Applied::Live(skaddr) => (table.get(*skaddr), false),
                Applied::Closed => (table.closed(), true),
                Applied::Untracked => (None, false),
            };
            rows.observe(&Observed {
                event,
                owner: owner.as_ref(),
                record,
                closed,
                labels: None,
            });
        }
    }

    /// A client's connection from `port`, opened and closed first.
    fn client_conn(skaddr: u64, pid: u32, port: u16, t: u64) -> Vec<TcpEvent> {
        let owner = task(pid, "curl", 0);
        let mut c = Conn::active(skaddr, owner, &format!("10.0.0.2:{port}"), "10.0.0.1:80");
        vec![
            c.state(t, TcpState::Close, SynSent),
            c.state(t + 1, SynSent, Established),
            c.closed_by(t + 2, Established, FinWait1, owner),
            c.state(t + 3, FinWait1, FinWait2),
            c.state(t + 4, FinWait2, TcpState::Close),
        ]
    }

    #[test]
    fn births_closes_and_peers_per_process_and_interval() {
        let (mut rows, mut table) = (Rows::default(), SocketTable::default());
        let mut events = Vec::new();
        for i in 0..3u16 {
            events.extend(client_conn(
                0x1000 + u64::from(i),
                42,
                40_000 + i,
                u64::from(i) * MS,
            ));
        }
        // A server: its listener's birth opens nothing; a passive child
        // does, and closes after the peer did.
        let nginx = task(7, "nginx", 0);
        let listener = Conn::active(0x2000, nginx, "10.0.0.1:80", "0.0.0.0:0");
        let child = Conn::passive(0x2001, nginx, "10.0.0.1:80", "10.0.0.2:40000");
        events.extend([
            listener.state(10 * MS, TcpState::Close, Listen),
            child.state(11 * MS, Listen, SynRecv),
            child.state(12 * MS, SynRecv, Established),
            child.state(13 * MS, Established, CloseWait),
            child.state(14 * MS, CloseWait, LastAck),
            child.state(15 * MS, LastAck, TcpState::Close),
        ]);
        feed(&mut rows, &mut table, &events);
        rows.end_interval();
        let curl = rows.get(42).expect("curl's row");
        assert_eq!(curl.name(), "curl");
        assert_eq!(
            curl.last,
            Counts {
                opened: 3,
                closed: 3,
                ..Counts::default()
            }
        );
        assert!(curl.now.is_zero(), "a new interval starts empty");
        assert_eq!(
            curl.top_peers(5),
            vec![("10.0.0.1:80".parse().expect("addr"), 3)]
        );
        let server = rows.get(7).expect("nginx's row");
        assert_eq!((server.last.opened, server.last.closed), (1, 1));
        assert_eq!(
            server.top_peers(5),
            vec![("10.0.0.2:0".parse().expect("addr"), 1)],
            "a server's peer is the client's address, whatever its port"
        );
        // Next interval: nothing new, the totals stay.
        rows.end_interval();
        let curl = rows.get(42).expect("curl's row");
        assert!(curl.last.is_zero());
        assert_eq!(curl.total.opened, 3);
    }

    #[test]
    fn failures_retransmits_and_resets() {
        let (mut rows, mut table) = (Rows::default(), SocketTable::default());
        let owner = task(50, "client", 0);
        let refused = Conn::active(0x3000, owner, "10.0.0.2:41000", "10.0.0.1:81");
        let mut lossy = Conn::active(0x3001, owner, "10.0.0.2:41001", "10.0.0.1:80");
        let events = [
            refused.state(MS, TcpState::Close, SynSent),
            refused.reset_received(2 * MS),
            refused.dies(3 * MS, SynSent, Some(libc::ECONNREFUSED)),
            lossy.state(4 * MS, TcpState::Close, SynSent),
            lossy.retransmit(5 * MS, SynSent),
            lossy.state(6 * MS, SynSent, Established),
            lossy.retransmit(7 * MS, Established),
        ];
        feed(&mut rows, &mut table, &events);
        rows.end_interval();
        let row = rows.get(50).expect("client's row");
        assert_eq!(
            row.last,
            Counts {
                opened: 2,
                closed: 1,
                connect_failures: 1,
                retransmits: 2,
                resets: 1,
            }
        );
    }

    #[test]
    fn an_abortive_close_counts_its_reset_with_the_close() {
        let (mut rows, mut table) = (Rows::default(), SocketTable::default());
        let owner = task(60, "app", 0);
        let mut conn = Conn::active(0x4000, owner, "10.0.0.2:42000", "10.0.0.1:80");
        let opened = [
            conn.state(MS, TcpState::Close, SynSent),
            conn.state(2 * MS, SynSent, Established),
        ];
        feed(&mut rows, &mut table, &opened);
        let mut close = conn.closed_by(3 * MS, Established, TcpState::Close, owner);
        close.sock.flags |= RESET_BY_CLOSE;
        feed(&mut rows, &mut table, &[close]);
        rows.end_interval();
        assert_eq!(rows.get(60).expect("row").last.resets, 1);
    }

    #[test]
    fn idle_rows_go_after_a_while_unless_they_hold_sockets() {
        let mut rows = Rows::default();
        let one = Counts {
            opened: 1,
            ..Counts::default()
        };
        rows.add(1, *b"a\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", None, one, None);
        rows.add(2, *b"b\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", None, one, None);
        rows.row(2, *b"b\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", None)
            .held
            .time_wait = 3;
        for _ in 0..=KEEP_IDLE_INTERVALS {
            rows.end_interval();
        }
        assert!(rows.get(1).is_none(), "idle for {KEEP_IDLE_INTERVALS}");
        assert!(rows.get(2).is_some(), "it holds TIME_WAIT sockets");
    }

    #[test]
    fn one_row_per_program() {
        let mut rows = Rows::default();
        let counts = |opened, closed| Counts {
            opened,
            closed,
            ..Counts::default()
        };
        let nginx = *b"nginx\0\0\0\0\0\0\0\0\0\0\0";
        let curl = *b"curl\0\0\0\0\0\0\0\0\0\0\0\0";
        let (server, client): (SocketAddr, SocketAddr) = (
            "10.0.0.1:80".parse().expect("addr"),
            "10.0.0.2:0".parse().expect("addr"),
        );
        // The master is counted for its listener's handshakes, the
        // workers for the closes of the connections they accepted.
        rows.add(100, nginx, None, counts(4, 0), Some(client));
        rows.add(101, nginx, None, counts(0, 3), None);
        rows.add(102, nginx, None, counts(0, 1), None);
        for pid in 200..205 {
            rows.add(pid, curl, None, counts(1, 1), Some(server));
        }
        let in_pod = ContainerLabels {
            container: "api".to_owned(),
            ..ContainerLabels::EMPTY
        };
        rows.add(300, curl, Some(&in_pod), counts(1, 0), Some(server));
        rows.end_interval();
        let mut programs = rows.by_program();
        programs.sort_by_key(|r| r.pid);
        let summary: Vec<(u32, u32, &str, u64, u64)> = programs
            .iter()
            .map(|r| {
                (
                    r.pid,
                    r.processes,
                    r.container.as_str(),
                    r.last.opened,
                    r.last.closed,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (100, 3, "", 4, 4),
                (200, 5, "", 5, 5),
                (300, 1, "api", 1, 0)
            ],
            "a program in a container is a program of its own"
        );
        assert_eq!(programs[1].top_peers(1), [(server, 5)]);
    }

    #[test]
    fn rows_are_bounded() {
        let mut rows = Rows::default();
        let one = Counts {
            retransmits: 1,
            ..Counts::default()
        };
        for pid in 1..=u32::try_from(MAX_ROWS).expect("fits") + 10 {
            rows.add(pid, [b'x'; 16], None, one, None);
        }
        assert_eq!(rows.len(), MAX_ROWS + 1, "with \"other\"");
        assert_eq!(rows.folded, 10);
        assert_eq!(rows.get(NO_PID).expect("other").now.retransmits, 10);
    }

    #[test]
    fn sorted_by_each_column_most_first() {
        let mut rows = Rows::default();
        let counts = |opened, retransmits| Counts {
            opened,
            retransmits,
            ..Counts::default()
        };
        rows.add(10, [b'a'; 16], None, counts(5, 0), None);
        rows.add(11, [b'b'; 16], None, counts(1, 9), None);
        rows.add(12, [b'c'; 16], None, counts(5, 1), None);
        rows.end_interval();
        rows.row(11, [b'b'; 16], None).held = Held {
            time_wait: 0,
            close_wait: 2,
            close_wait_oldest_s: Some(90.0),
        };
        let pids = |column| {
            rows.sorted(column, Duration::from_secs(1))
                .iter()
                .map(|r| r.pid)
                .collect::<Vec<_>>()
        };
        assert_eq!(pids(Column::Connections), [10, 12, 11], "ties by pid");
        assert_eq!(pids(Column::Retransmits), [11, 12, 10]);
        assert_eq!(pids(Column::CloseWait)[0], 11);
        assert_eq!(pids(Column::CloseWaitOldest)[0], 11);
    }

    fn process(pid: u32, comm: &str) -> ProcessJson {
        ProcessJson {
            pid,
            comm: comm.to_owned(),
            namespace: String::new(),
            pod: String::new(),
            container: String::new(),
            cgroup: 0,
        }
    }

    fn churn(pid: u32, comm: &str, time_wait_now: u64) -> Finding {
        Finding::Churn(Churn {
            process: Some(process(pid, comm)),
            processes: Processes::default(),
            role: Role::Active,
            peer: "10.0.0.1:80".to_owned(),
            connections: 3,
            per_second: 1.0,
            lifetime_us: None,
            active_closes: 3,
            passive_closes: 0,
            closed_first: ClosedFirst::Local,
            resets: 0,
            time_wait_now,
            time_wait_by_pid: Vec::new(),
            time_wait_kernel: 0,
            fin_wait2_kernel: 0,
            call_site: None,
            close_call_site: None,
            closers: Vec::new(),
            closers_total: 0,
            closed_at_exit: 0,
        })
    }

    fn leak(pid: u32, comm: &str, sockets: u64, oldest_age_s: f64) -> Finding {
        Finding::CloseWaitLeak(CloseWaitLeak {
            process: Some(process(pid, comm)),
            sockets,
            oldest_age_s,
            age_is_lower_bound: false,
            fds: Vec::new(),
            peers: Vec::new(),
            call_site: None,
            eof_call_site: None,
        })
    }

    #[test]
    fn held_sockets_come_from_the_findings() {
        let mut rows = Rows::default();
        let report = Report {
            findings: vec![
                churn(42, "curl", 3),
                churn(42, "curl", 2),
                leak(43, "leaky", 4, 12.5),
            ],
            ..Report::default()
        };
        rows.set_held(&report);
        assert_eq!(rows.get(42).expect("curl").held.time_wait, 5);
        let leaky = rows.get(43).expect("a holder without events has a row");
        assert_eq!(leaky.name(), "leaky");
        assert_eq!(
            (leaky.held.close_wait, leaky.held.close_wait_oldest_s),
            (4, Some(12.5))
        );
        // The next report replaces what the last one said.
        rows.set_held(&Report::default());
        assert_eq!(rows.get(42).expect("curl").held, Held::default());
    }
}
