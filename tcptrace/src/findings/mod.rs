//! Findings: what the diagnoses gathered, turned into answers that name
//! the process, the peer and the call site. One module per kind builds
//! it, names its thresholds and writes its text and its daemon log line;
//! the report is the list of them, in the order of `Section::ALL`.

mod accept;
mod churn;
mod close_wait_leak;
mod connect;
mod connection_age;
mod fin_retransmits;
mod idle_connection;
mod listener_in_range;
mod lost_connection;
mod parts;
mod port_pressure;
mod reconnect_loop;
pub(crate) mod text;

use std::{
    cmp::Reverse,
    collections::HashMap,
    io::{self, Write},
    net::SocketAddr,
    time::Duration,
};

pub use accept::Accept;
pub use churn::Churn;
pub use close_wait_leak::{CloseWaitLeak, FdJson};
pub use connect::Connect;
pub use connection_age::{ConnectionAges, AGE_BANDS};
pub use fin_retransmits::DeadPeerFin;
pub use idle_connection::IdleConnections;
pub use listener_in_range::ListenerInRange;
pub use lost_connection::LostConnection;
use parts::rank_findings;
pub use parts::{ClosedFirst, Percentiles, ProcessJson, Processes};
pub use port_pressure::PortPressure;
pub use reconnect_loop::ReconnectLoop;
use serde::Serialize;
use tcptrace_common::TcpState;

use crate::{
    callsite::CallSites,
    diagnose::{
        flows::Flow,
        fold::{fold, Member},
        idle, Diagnoses,
    },
    filter::{Filter, Workloads},
    first_seen::FirstSeen,
    live_births::LiveBirths,
    owner::StartOwners,
    snapshot::Snapshot,
    table::SocketTable,
};

pub struct ReportInput<'a> {
    pub table: &'a SocketTable,
    /// A `sock_diag` dump taken now: every socket the filter's ports allow,
    /// owned or not (`TIME_WAIT` sockets have no owner).
    pub sockets_now: &'a Snapshot,
    /// The same dump restricted to the processes the filter allows.
    pub owned: &'a Snapshot,
    pub filter: &'a Filter,
    /// The filter's verdicts on the workloads of the live sockets.
    pub workloads: &'a Workloads,
    /// `CLOCK_MONOTONIC` now.
    pub now_ns: u64,
    pub elapsed: Duration,
    pub call_sites: &'a CallSites,
    /// Events the kernel could not deliver: findings may be incomplete.
    pub events_lost: u64,
    /// Sockets the kernel could not track (its socket map was full).
    pub sockets_untracked: u64,
    /// Connections idle this long are idle; lives this long are long.
    pub idle_threshold: Duration,
    /// The sockets that existed when the session started.
    pub start: &'a StartOwners,
    /// When each live connection was first listed by a dump.
    pub first_seen: &'a FirstSeen,
    /// Where the live connections the table has no record of were opened.
    pub births: &'a LiveBirths,
}

pub use crate::diagnose::idle::DEFAULT_IDLE_THRESHOLD;

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    Churn(Churn),
    ReconnectLoop(ReconnectLoop),
    CloseWaitLeak(CloseWaitLeak),
    DeadPeerFin(DeadPeerFin),
    LostConnection(LostConnection),
    IdleConnections(IdleConnections),
    /// FIN retransmits the peer acknowledged in the end: a lossy path, not
    /// a dead peer (lower severity; never logged as a dead peer).
    FinRetransmitsRecovered(DeadPeerFin),
    Connect(Connect),
    Accept(Accept),
    ConnectionAges(ConnectionAges),
    PortPressure(PortPressure),
    ListenerInRange(ListenerInRange),
}

/// The report's sections, one per kind of finding, in the order the
/// report lists them: the most urgent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    CloseWaitLeaks,
    DeadPeers,
    LostConnections,
    IdleConnections,
    RecoveredFins,
    ReconnectLoops,
    Churn,
    Connects,
    Accepts,
    ConnectionAges,
    Ports,
    ListenersInRange,
}

impl Section {
    pub const ALL: [Self; 12] = [
        Self::CloseWaitLeaks,
        Self::DeadPeers,
        Self::LostConnections,
        Self::IdleConnections,
        Self::RecoveredFins,
        Self::ReconnectLoops,
        Self::Churn,
        Self::Connects,
        Self::Accepts,
        Self::ConnectionAges,
        Self::Ports,
        Self::ListenersInRange,
    ];

    #[must_use]
    pub fn heading(self) -> &'static str {
        match self {
            Self::CloseWaitLeaks => CloseWaitLeak::HEADING,
            Self::DeadPeers => DeadPeerFin::DEAD_HEADING,
            Self::LostConnections => LostConnection::HEADING,
            Self::IdleConnections => IdleConnections::HEADING,
            Self::RecoveredFins => DeadPeerFin::RECOVERED_HEADING,
            Self::ReconnectLoops => ReconnectLoop::HEADING,
            Self::Churn => Churn::HEADING,
            Self::Connects => Connect::HEADING,
            Self::Accepts => Accept::HEADING,
            Self::ConnectionAges => ConnectionAges::HEADING,
            Self::Ports => PortPressure::HEADING,
            Self::ListenersInRange => ListenerInRange::HEADING,
        }
    }
}

/// A finding the daemon logs once per `key` (process and peer or call
/// site), as a warning with `message` and the finding's JSON.
pub struct LogLine {
    pub message: &'static str,
    pub key: String,
}

impl Finding {
    #[must_use]
    pub fn section(&self) -> Section {
        match self {
            Self::CloseWaitLeak(_) => Section::CloseWaitLeaks,
            Self::DeadPeerFin(_) => Section::DeadPeers,
            Self::LostConnection(_) => Section::LostConnections,
            Self::IdleConnections(_) => Section::IdleConnections,
            Self::ConnectionAges(_) => Section::ConnectionAges,
            Self::ListenerInRange(_) => Section::ListenersInRange,
            Self::FinRetransmitsRecovered(_) => Section::RecoveredFins,
            Self::ReconnectLoop(_) => Section::ReconnectLoops,
            Self::Churn(_) => Section::Churn,
            Self::Connect(_) => Section::Connects,
            Self::Accept(_) => Section::Accepts,
            Self::PortPressure(_) => Section::Ports,
        }
    }

    /// The finding's row (and call sites) in the text report.
    pub fn write_text(&self, out: &mut impl Write, totals: &Totals) -> io::Result<()> {
        match self {
            Self::CloseWaitLeak(l) => l.write_text(out),
            Self::DeadPeerFin(d) | Self::FinRetransmitsRecovered(d) => d.write_text(out),
            Self::ReconnectLoop(r) => r.write_text(out),
            Self::Churn(c) => c.write_text(out),
            Self::Connect(c) => c.write_text(out),
            Self::Accept(a) => a.write_text(out),
            Self::PortPressure(p) => p.write_text(out, totals.network_namespaces > 1),
            Self::LostConnection(l) => l.write_text(out),
            Self::IdleConnections(i) => i.write_text(out),
            Self::ConnectionAges(a) => a.write_text(out),
            Self::ListenerInRange(l) => l.write_text(out),
        }
    }

    /// What the daemon logs of it, if anything: the problems someone must
    /// act on (leaks, dead peers, loops), not the statistics.
    #[must_use]
    pub fn log_line(&self) -> Option<LogLine> {
        match self {
            Self::CloseWaitLeak(l) => Some(l.log_line()),
            Self::DeadPeerFin(d) => Some(d.log_line()),
            Self::ReconnectLoop(r) => Some(r.log_line()),
            Self::LostConnection(l) => Some(l.log_line()),
            Self::IdleConnections(i) => Some(i.log_line()),
            Self::ListenerInRange(l) => Some(l.log_line()),
            Self::FinRetransmitsRecovered(_)
            | Self::Churn(_)
            | Self::Connect(_)
            | Self::Accept(_)
            | Self::ConnectionAges(_)
            | Self::PortPressure(_) => None,
        }
    }

    /// What it says its process holds now in the closing states: the
    /// `TIME_WAIT` its churn left (modelled from its active closes), its
    /// `CLOSE_WAIT` leak. The one place the daemon's gauges and
    /// `tcptrace top` read these from.
    #[must_use]
    pub fn held(&self) -> Option<(Option<&ProcessJson>, Held)> {
        match self {
            Self::Churn(c) if c.time_wait_now > 0 => Some((
                c.process.as_ref(),
                Held {
                    time_wait: c.time_wait_now,
                    ..Held::default()
                },
            )),
            Self::CloseWaitLeak(l) => Some((
                l.process.as_ref(),
                Held {
                    close_wait: l.sockets,
                    close_wait_oldest_s: Some(l.oldest_age_s),
                    ..Held::default()
                },
            )),
            _ => None,
        }
    }

    /// What each process holds, by pid (`tcptrace top`'s rows): a
    /// folded churn row's `TIME_WAIT` split among its processes, the
    /// rest as `held` says.
    #[must_use]
    pub fn held_by_pid(&self) -> Vec<(u32, Option<&ProcessJson>, Held)> {
        let Some((process, held)) = self.held() else {
            return Vec::new();
        };
        match self {
            Self::Churn(c) if !c.time_wait_by_pid.is_empty() => c
                .time_wait_by_pid
                .iter()
                .map(|&(pid, time_wait)| {
                    let held = Held {
                        time_wait,
                        ..Held::default()
                    };
                    (pid, process, held)
                })
                .collect(),
            _ => process
                .map(|p| vec![(p.pid, process, held)])
                .unwrap_or_default(),
        }
    }

    /// The processes it names: its own, and others it lists.
    fn processes_mut(&mut self) -> Option<(&mut Option<ProcessJson>, &mut [ProcessJson])> {
        Some(match self {
            Self::Churn(c) => (&mut c.process, &mut c.closers),
            Self::ReconnectLoop(r) => (&mut r.process, &mut []),
            Self::CloseWaitLeak(l) => (&mut l.process, &mut []),
            Self::DeadPeerFin(d) | Self::FinRetransmitsRecovered(d) => (&mut d.process, &mut []),
            Self::Connect(c) => (&mut c.process, &mut []),
            Self::Accept(a) => (&mut a.process, &mut []),
            Self::LostConnection(l) => (&mut l.process, &mut []),
            Self::IdleConnections(i) => (&mut i.process, &mut []),
            Self::ConnectionAges(a) => (&mut a.process, &mut []),
            Self::ListenerInRange(l) => (&mut l.process, &mut []),
            Self::PortPressure(_) => return None,
        })
    }
}

/// Sockets a process holds in the closing states (`Finding::held`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Held {
    /// Timewait sockets its active closes left.
    pub time_wait: u64,
    /// Sockets in `CLOSE_WAIT` it never closed.
    pub close_wait: u64,
    /// How long the oldest of them has been in `CLOSE_WAIT`.
    pub close_wait_oldest_s: Option<f64>,
}

impl Held {
    /// Adds what another finding says the same process holds.
    pub fn add(&mut self, other: Self) {
        self.time_wait += other.time_wait;
        self.close_wait += other.close_wait;
        self.close_wait_oldest_s = match (self.close_wait_oldest_s, other.close_wait_oldest_s) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub elapsed_s: f64,
    pub connections_closed: u64,
    pub time_wait_kernel: u64,
    /// `FIN_WAIT2` sockets in the kernel: timewait sockets whose peer has
    /// not sent its FIN (full sockets in `FIN_WAIT2` too).
    pub fin_wait2_kernel: u64,
    /// Timewait sockets (either substate) tcptrace models from traced
    /// active closes: no tracepoint fires when one turns from `FIN_WAIT2`
    /// to `TIME_WAIT` (the peer's FIN came late), so only the kernel's
    /// counts tell the substates apart.
    pub time_wait_modelled: u64,
    pub close_wait_kernel: u64,
    /// Network namespaces the kernel counts above cover (tcptrace's own,
    /// and every container's and pod's).
    pub network_namespaces: usize,
    /// Namespaces whose sockets could not be listed, with why: the
    /// kernel counts miss them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces_unreachable: Vec<String>,
    pub live_sockets_traced: usize,
    pub events_lost: u64,
    /// Sockets born while the kernel's socket map was full: their owners
    /// and histories are unknown.
    pub sockets_untracked: u64,
    /// Walks of the kernel's socket map that failed: live connections the
    /// trace has no record of (in summary mode, all of them) miss their
    /// call sites.
    pub socket_map_walks_failed: u64,
    /// Events were lost or sockets untracked: counts and attributions may
    /// be incomplete.
    pub incomplete: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub totals: Totals,
}

impl Report {
    /// Hands every process the findings name to `name` (which gives each
    /// the names of the workload it ran in): the report is built from
    /// the diagnoses alone, names are looked up once per finding after.
    pub fn name_processes(&mut self, mut name: impl FnMut(&mut ProcessJson)) {
        for (process, others) in self.findings.iter_mut().filter_map(Finding::processes_mut) {
            process.iter_mut().chain(others).for_each(&mut name);
        }
    }

    /// The findings of one section, in the report's order.
    pub fn in_section(&self, section: Section) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.section() == section)
    }
}

/// Builds the report from what the diagnoses gathered so far.
#[must_use]
pub fn build_report(diagnoses: &Diagnoses, input: &ReportInput) -> Report {
    let mut report = Report::default();
    let elapsed_ns = u64::try_from(input.elapsed.as_nanos()).unwrap_or(u64::MAX);
    let kernel_timewait = timewait_by_destination(input.sockets_now);
    let (mut churn, mut loops, mut connects, mut accepts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let site = |stack| input.call_sites.get(stack);
    let members = diagnoses.flows.flows.iter().map(|(key, flow)| Member {
        key,
        flow,
        time_wait_now: flow.time_wait.live(input.now_ns),
        owner_site: site(parts::best_stack(&flow.owner_stacks, input.call_sites)),
        close_site: site(parts::best_stack(&flow.close_stacks, input.call_sites)),
    });
    for group in fold(members) {
        report.totals.connections_closed += group.flow.closed;
        report.totals.time_wait_modelled += group.time_wait_now;
        let span_ns = activity_span(&group.flow, input.now_ns);
        churn.extend(Churn::of(&group, span_ns, &kernel_timewait));
        loops.extend(ReconnectLoop::of(&group));
        connects.extend(Connect::of(&group));
        accepts.extend(Accept::of(&group));
    }
    rank_findings(&mut churn, |c| Reverse((c.time_wait_now, c.connections)));
    rank_findings(&mut loops, |l| Reverse(l.attempts));
    rank_findings(&mut connects, |c| Reverse((c.failures.total(), c.attempts)));
    rank_findings(&mut accepts, |a| Reverse(a.established));
    let (dead, recovered) = DeadPeerFin::all(input, diagnoses);
    let mut lost: Vec<LostConnection> = diagnoses
        .lost
        .groups
        .iter()
        .map(|(key, group)| LostConnection::of(key, group, input))
        .collect();
    rank_findings(&mut lost, |l| {
        Reverse(l.keepalive_timeouts + l.retransmit_timeouts + l.reset_after_silence)
    });
    let idle_ms = u32::try_from(input.idle_threshold.as_millis()).unwrap_or(u32::MAX);
    let view = live_view(input, elapsed_ns);
    let live = idle::connections(&view, idle_ms);
    let mut idle: Vec<IdleConnections> = live
        .iter()
        .filter_map(|(key, group)| IdleConnections::of(key, group, input))
        .collect();
    rank_findings(&mut idle, |i| Reverse(i.sockets));
    let mut ages: Vec<ConnectionAges> = live
        .iter()
        .map(|(key, group)| ConnectionAges::of(key, group, input))
        .collect();
    // Oldest first, then those of unknown age (the bits of a float that
    // is not negative order as it does).
    rank_findings(&mut ages, |a| {
        Reverse(a.oldest_age_s.map(|age| age.max(0.0).to_bits()))
    });

    report.totals = Totals {
        elapsed_s: input.elapsed.as_secs_f64(),
        time_wait_kernel: count_state(input.sockets_now, TcpState::TimeWait),
        fin_wait2_kernel: count_state(input.sockets_now, TcpState::FinWait2),
        close_wait_kernel: count_state(input.sockets_now, TcpState::CloseWait),
        network_namespaces: input.sockets_now.namespaces,
        namespaces_unreachable: input.sockets_now.unreachable.clone(),
        live_sockets_traced: input
            .table
            .live()
            .filter(|r| input.filter.matches_record(r, input.workloads))
            .count(),
        events_lost: input.events_lost,
        sockets_untracked: input.sockets_untracked,
        socket_map_walks_failed: input.births.walks_failed,
        incomplete: input.events_lost > 0 || input.sockets_untracked > 0,
        ..report.totals
    };

    // Every finding, in the order of Section::ALL: the text report shows
    // the first rows of each kind and says how many more the JSON has.
    let findings = &mut report.findings;
    findings.extend(
        CloseWaitLeak::all(input, &view)
            .into_iter()
            .map(Finding::CloseWaitLeak),
    );
    findings.extend(dead.into_iter().map(Finding::DeadPeerFin));
    findings.extend(lost.into_iter().map(Finding::LostConnection));
    findings.extend(idle.into_iter().map(Finding::IdleConnections));
    findings.extend(recovered.into_iter().map(Finding::FinRetransmitsRecovered));
    findings.extend(loops.into_iter().map(Finding::ReconnectLoop));
    findings.extend(churn.into_iter().map(Finding::Churn));
    findings.extend(connects.into_iter().map(Finding::Connect));
    findings.extend(accepts.into_iter().map(Finding::Accept));
    findings.extend(ages.into_iter().map(Finding::ConnectionAges));
    findings.extend(
        PortPressure::busiest(input.sockets_now)
            .into_iter()
            .map(Finding::PortPressure),
    );
    findings.extend(
        ListenerInRange::all(input)
            .into_iter()
            .map(Finding::ListenerInRange),
    );
    report
}

/// The window a flow's connections happened in (first birth to last
/// close), not the time since, which an idle end of the session would
/// dilute (ab's 2,700/s read as 259/s). A lone connection's window is its
/// own lifetime: it is measured against the time since it began instead.
fn activity_span(flow: &Flow, now_ns: u64) -> u64 {
    if flow.closed >= 2 && flow.last_ns > flow.first_ns {
        flow.last_ns - flow.first_ns
    } else {
        now_ns.saturating_sub(flow.first_ns.min(now_ns)).max(1)
    }
}

fn count_state(snapshot: &Snapshot, state: TcpState) -> u64 {
    snapshot.sockets.iter().filter(|s| s.state == state).count() as u64
}

/// The kernel's `TIME_WAIT` and `FIN_WAIT2` sockets by destination.
fn timewait_by_destination(snapshot: &Snapshot) -> [HashMap<(u32, SocketAddr), u64>; 2] {
    [TcpState::TimeWait, TcpState::FinWait2].map(|state| by_destination(snapshot, state))
}

/// The kernel's sockets in `state` by network namespace and remote
/// endpoint, and by remote address (port 0) for the server side, where
/// clients come from many ports. (Two pods may talk to the same peer from
/// the same addresses.)
fn by_destination(snapshot: &Snapshot, state: TcpState) -> HashMap<(u32, SocketAddr), u64> {
    let mut counts = HashMap::new();
    for socket in snapshot.sockets.iter().filter(|s| s.state == state) {
        *counts.entry((socket.netns, socket.remote)).or_default() += 1;
        *counts
            .entry((socket.netns, SocketAddr::new(socket.remote.ip(), 0)))
            .or_default() += 1;
    }
    counts
}

/// The live connections as the report looks at them.
fn live_view<'a>(input: &ReportInput<'a>, elapsed_ns: u64) -> idle::LiveView<'a> {
    idle::LiveView {
        now: input.owned,
        table: input.table,
        start: input.start,
        first_seen: input.first_seen,
        births: input.births,
        now_ns: input.now_ns,
        elapsed_ns,
    }
}
