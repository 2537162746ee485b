//! The end-of-session report: every diagnosis turned into findings, each
//! naming the process, the peer and the call site.

use std::{
    cmp::Reverse,
    collections::{hash_map::Entry, HashMap},
    net::SocketAddr,
    time::Duration,
};

use hdrhistogram::Histogram;
use serde::Serialize;
use tcptrace_common::TcpState;

use super::{
    closewait::{self, Leak},
    deadpeer::DeadPeerOutcomes,
    flows::{ConnectFailures, Flow, FlowKey},
    fold::{fold, Folded, Member, MAX_LISTED_PIDS},
    ports,
    reconnect::{self, Backoff},
    Diagnoses,
};
use crate::{
    callsite::{CallSite, CallSites},
    container::ContainerLabels,
    filter::{Filter, Workloads},
    snapshot::Snapshot,
    table::{ProcessId, Role, SocketTable},
};

/// Destinations listed in the ephemeral-port findings.
const MAX_PORT_DESTINATIONS: usize = 10;

pub struct ReportInput<'a> {
    pub table: &'a SocketTable,
    /// A `sock_diag` dump taken now: every socket the filter's ports allow,
    /// owned or not (`TIME_WAIT` sockets have no owner).
    pub now: &'a Snapshot,
    /// The same dump restricted to the processes the filter allows.
    pub owned: &'a Snapshot,
    pub filter: &'a Filter,
    /// The filter's verdicts on the workloads of the live sockets.
    pub workloads: &'a Workloads,
    /// `CLOCK_MONOTONIC` now.
    pub now_ns: u64,
    pub elapsed: Duration,
    pub call_sites: &'a CallSites,
    pub port_range: (u16, u16),
    /// Events the kernel could not deliver: findings may be incomplete.
    pub events_lost: u64,
    /// Sockets the kernel could not track (its socket map was full).
    pub sockets_untracked: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProcessJson {
    pub pid: u32,
    pub comm: String,
    /// Where it ran, by name (`Report::name_processes`): Kubernetes
    /// namespace and pod, and the container's name; left out when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub container: String,
    /// The cgroup key its sockets carried (0: not known), which the
    /// names and the daemon's labels come from.
    #[serde(skip)]
    pub cgroup: u64,
}

impl ProcessJson {
    fn of(process: Option<ProcessId>) -> Option<Self> {
        process.map(|p| Self {
            pid: p.pid,
            comm: p.comm().into_owned(),
            namespace: String::new(),
            pod: String::new(),
            container: String::new(),
            cgroup: p.cgroup,
        })
    }

    /// Takes the names of the workload it ran in.
    pub fn name(&mut self, labels: &ContainerLabels) {
        self.namespace.clone_from(&labels.namespace);
        self.pod.clone_from(&labels.pod);
        self.container.clone_from(&labels.container);
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u32>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedFirst {
    Local,
    Peer,
    Mixed,
    Unknown,
}

impl ClosedFirst {
    fn of(flow: &Flow) -> Self {
        match (flow.active_closes, flow.passive_closes) {
            (0, 0) => Self::Unknown,
            (_, 0) => Self::Local,
            (0, _) => Self::Peer,
            _ => Self::Mixed,
        }
    }
}

/// Connection churn and the `TIME_WAIT` it leaves (story 1).
#[derive(Clone, Debug, Serialize)]
pub struct Churn {
    pub process: Option<ProcessJson>,
    #[serde(flatten)]
    pub processes: Processes,
    pub role: Role,
    pub peer: String,
    pub connections: u64,
    pub per_second: f64,
    pub lifetime_us: Option<Percentiles>,
    pub active_closes: u64,
    pub passive_closes: u64,
    pub closed_first: ClosedFirst,
    /// `TIME_WAIT` sockets this flow holds now, modelled from its active closes.
    pub time_wait_now: u64,
    /// `TIME_WAIT` sockets towards `peer` in the kernel's own dump.
    pub time_wait_kernel: u64,
    pub call_site: Option<CallSite>,
    pub close_call_site: Option<CallSite>,
    pub closers: Vec<ProcessJson>,
}

/// Reconnecting without back-off (story 2).
#[derive(Clone, Debug, Serialize)]
pub struct ReconnectLoop {
    pub process: Option<ProcessJson>,
    #[serde(flatten)]
    pub processes: Processes,
    pub peer: String,
    pub attempts: u64,
    pub per_second: f64,
    pub median_lifetime_us: Option<u64>,
    pub closed_first: ClosedFirst,
    pub failures: u64,
    pub backoff: Backoff,
    pub first_gap_ms: f64,
    pub last_gap_ms: f64,
    pub call_site: Option<CallSite>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FdJson {
    pub pid: u32,
    pub fd: u32,
}

/// Sockets whose peer closed while the owner never did (story 3).
#[derive(Clone, Debug, Serialize)]
pub struct CloseWaitLeak {
    pub process: Option<ProcessJson>,
    pub sockets: u64,
    pub oldest_age_s: f64,
    /// The oldest was in `CLOSE_WAIT` before tracing started: "at least".
    pub age_is_lower_bound: bool,
    pub fds: Vec<FdJson>,
    pub peers: Vec<String>,
    pub call_site: Option<CallSite>,
    /// The code that read end-of-file on these sockets and never closed.
    pub eof_call_site: Option<CallSite>,
}

/// FINs retransmitted to a peer that does not answer (story 3).
#[derive(Clone, Debug, Serialize)]
pub struct DeadPeerFin {
    /// The process whose `close()` sent the FIN.
    pub process: Option<ProcessJson>,
    pub peer: String,
    pub sockets: u64,
    pub retransmits: u64,
    pub max_retransmits: u32,
    pub seconds: f64,
    pub states: Vec<&'static str>,
    pub outcomes: DeadPeerOutcomes,
    pub verdict: String,
    pub call_site: Option<CallSite>,
}

/// Connect latency and failures per destination (story 4).
#[derive(Clone, Debug, Serialize)]
pub struct Connect {
    pub process: Option<ProcessJson>,
    #[serde(flatten)]
    pub processes: Processes,
    pub peer: String,
    pub attempts: u64,
    pub established: u64,
    pub latency_us: Option<Percentiles>,
    pub syn_retransmits: u64,
    pub failures: ConnectFailures,
    pub call_site: Option<CallSite>,
}

/// Accepted connections per server process and client address.
#[derive(Clone, Debug, Serialize)]
pub struct Accept {
    pub process: Option<ProcessJson>,
    #[serde(flatten)]
    pub processes: Processes,
    pub peer: String,
    pub established: u64,
    /// `SYN_RECV` → ESTABLISHED of the accepted socket.
    pub handshake_us: Option<Percentiles>,
    pub syn_ack_retransmits: u64,
}

/// Ephemeral ports tied up towards one destination.
#[derive(Clone, Debug, Serialize)]
pub struct PortPressure {
    /// The network namespace whose ports these are.
    pub netns: u32,
    pub destination: String,
    pub ports_in_use: u64,
    pub time_wait: u64,
    pub range: (u16, u16),
    pub range_size: u64,
    pub percent: f64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    Churn(Churn),
    ReconnectLoop(ReconnectLoop),
    CloseWaitLeak(CloseWaitLeak),
    DeadPeerFin(DeadPeerFin),
    /// FIN retransmits the peer acknowledged in the end: a lossy path, not
    /// a dead peer (lower severity; never logged as a dead peer).
    FinRetransmitsRecovered(DeadPeerFin),
    Connect(Connect),
    Accept(Accept),
    PortPressure(PortPressure),
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub elapsed_s: f64,
    pub connections_closed: u64,
    pub time_wait_kernel: u64,
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
        for finding in &mut self.findings {
            let (process, others): (_, &mut [ProcessJson]) = match finding {
                Finding::Churn(c) => (&mut c.process, &mut c.closers),
                Finding::ReconnectLoop(r) => (&mut r.process, &mut []),
                Finding::CloseWaitLeak(l) => (&mut l.process, &mut []),
                Finding::DeadPeerFin(d) | Finding::FinRetransmitsRecovered(d) => {
                    (&mut d.process, &mut [])
                }
                Finding::Connect(c) => (&mut c.process, &mut []),
                Finding::Accept(a) => (&mut a.process, &mut []),
                Finding::PortPressure(_) => continue,
            };
            process.iter_mut().chain(others).for_each(&mut name);
        }
    }
}

#[expect(clippy::cast_precision_loss, reason = "rates and ages for display")]
fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[expect(clippy::cast_precision_loss, reason = "rates for display")]
fn rate(count: u64, span_ns: u64) -> f64 {
    if span_ns == 0 {
        0.0
    } else {
        count as f64 / secs(span_ns).max(1e-3)
    }
}

/// How many processes of one program a finding folds (see `fold`), and
/// which: one row for a shell loop of 200 curls.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Processes {
    /// Processes folded into this finding.
    pub pids: u64,
    /// Their pids (at most `MAX_LISTED_PIDS`), when more than one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pid_list: Vec<u32>,
}

impl Processes {
    fn of(pids: &[u32]) -> Self {
        Self {
            pids: pids.len().max(1) as u64,
            pid_list: if pids.len() > 1 {
                pids.iter().copied().take(MAX_LISTED_PIDS).collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// Builds the report from what the diagnoses gathered so far.
#[must_use]
#[expect(
    clippy::too_many_lines,
    reason = "one pass over the diagnoses that fills every section of the report in order"
)]
pub fn build_report(diagnoses: &Diagnoses, input: &ReportInput) -> Report {
    let site = |stack| input.call_sites.get(stack);
    let mut report = Report::default();
    let elapsed_ns = u64::try_from(input.elapsed.as_nanos()).unwrap_or(u64::MAX);
    // One rate per row: connections over the window they happened in
    // (first birth to last close), not over the time since, which an idle
    // end of the session diluted (ab's 2,700/s read as 259/s). A lone
    // connection's window is its own lifetime: it is measured against the
    // time since it began instead.
    let activity_span = |flow: &Flow| {
        if flow.closed >= 2 && flow.last_ns > flow.first_ns {
            flow.last_ns - flow.first_ns
        } else {
            input
                .now_ns
                .saturating_sub(flow.first_ns.min(input.now_ns))
                .max(1)
        }
    };

    let kernel_tw = time_wait_by_destination(input.now);
    let mut churn = Vec::new();
    let mut loops = Vec::new();
    let mut connects = Vec::new();
    let mut accepts = Vec::new();
    let members = diagnoses.flows.flows.iter().map(|(key, flow)| Member {
        key,
        flow,
        time_wait_now: flow.time_wait.live(input.now_ns),
        owner_site: site(best_stack(&flow.owner_stacks, input.call_sites)),
        close_site: site(best_stack(&flow.close_stacks, input.call_sites)),
    });
    for group in fold(members) {
        let Folded {
            key,
            ref pids,
            ref flow,
            time_wait_now,
            owner_site,
            close_site,
        } = group;
        let processes = Processes::of(pids);
        report.totals.connections_closed += flow.closed;
        report.totals.time_wait_modelled += time_wait_now;
        if flow.closed > 0 {
            churn.push(Churn {
                process: ProcessJson::of(key.owner),
                processes: processes.clone(),
                role: key.role,
                peer: key.peer.to_string(),
                connections: flow.closed,
                per_second: rate(flow.closed, activity_span(flow)),
                lifetime_us: Percentiles::of(&flow.lifetimes_us),
                active_closes: flow.active_closes,
                passive_closes: flow.passive_closes,
                closed_first: ClosedFirst::of(flow),
                time_wait_now,
                time_wait_kernel: flow
                    .namespaces
                    .iter()
                    .filter_map(|&netns| kernel_tw.get(&(netns, key.peer)))
                    .sum(),
                call_site: owner_site.clone(),
                close_call_site: close_site,
                closers: flow
                    .closers
                    .keys()
                    .filter_map(|c| ProcessJson::of(Some(*c)))
                    .collect(),
            });
        }
        if let Some(mut finding) = reconnect_loop(key, flow, owner_site.clone()) {
            finding.processes = processes.clone();
            loops.push(finding);
        }
        match key.role {
            Role::Active if flow.attempts > 0 => connects.push(Connect {
                process: ProcessJson::of(key.owner),
                processes: processes.clone(),
                peer: key.peer.to_string(),
                attempts: flow.attempts,
                established: flow.established,
                latency_us: Percentiles::of(&flow.handshake_us),
                syn_retransmits: flow.syn_retransmits,
                failures: flow.failures,
                call_site: owner_site,
            }),
            Role::Passive if flow.established > 0 => accepts.push(Accept {
                process: ProcessJson::of(key.owner),
                processes,
                peer: key.peer.to_string(),
                established: flow.established,
                handshake_us: Percentiles::of(&flow.handshake_us),
                syn_ack_retransmits: flow.syn_retransmits,
            }),
            _ => {}
        }
    }
    churn.sort_by_key(|c| Reverse((c.time_wait_now, c.connections)));
    loops.sort_by_key(|l| Reverse(l.attempts));
    connects.sort_by_key(|c| Reverse((c.failures.total(), c.attempts)));
    accepts.sort_by_key(|a| Reverse(a.established));

    // One leak per process and call site of the user's code (its text:
    // the stacks of an interpreted and a compiled path name the same
    // code); the call sites that name no user code are one leak per
    // process, named by the one with the most sockets; sockets without any
    // (born before the session) one more.
    let mut leak_groups: HashMap<_, (Option<CallSite>, Leak)> = HashMap::new();
    for (key, leak) in closewait::leaks(input.owned, input.table, input.now_ns, elapsed_ns) {
        let call_site = site(key.call_site);
        let text = call_site.as_ref().map(|s| {
            s.user_code
                .then(|| (s.function.clone(), s.file.clone(), s.line))
        });
        match leak_groups.entry((key.owner, text)) {
            Entry::Occupied(mut group) => {
                let (named, known) = group.get_mut();
                if leak.sockets > known.sockets {
                    *named = call_site;
                }
                known.absorb(leak);
            }
            Entry::Vacant(group) => {
                group.insert((call_site, leak));
            }
        }
    }
    let mut leaks: Vec<CloseWaitLeak> = leak_groups
        .into_iter()
        .map(|((owner, _), (call_site, leak))| CloseWaitLeak {
            process: ProcessJson::of(owner),
            sockets: leak.sockets,
            oldest_age_s: secs(leak.oldest_ns),
            age_is_lower_bound: leak.oldest_is_lower_bound,
            fds: leak
                .fds
                .iter()
                .map(|h| FdJson {
                    pid: h.pid,
                    fd: h.fd,
                })
                .collect(),
            peers: leak.peers.iter().map(ToString::to_string).collect(),
            call_site,
            eof_call_site: site(best_stack(&leak.eof_stacks, input.call_sites)),
        })
        .collect();
    leaks.sort_by_key(|l| Reverse(l.sockets));

    let mut dead: Vec<DeadPeerFin> = diagnoses
        .dead_peers
        .with_live(
            input
                .table
                .live()
                .filter(|r| input.filter.matches_record(r, input.workloads)),
            input.now_ns,
        )
        .iter()
        .map(|(key, group)| DeadPeerFin {
            process: ProcessJson::of(key.closer),
            peer: key.peer.to_string(),
            sockets: group.sockets,
            retransmits: group.retransmits,
            max_retransmits: group.max_retransmits,
            seconds: secs(group.longest_ns),
            states: group.states.iter().map(|s| s.name()).collect(),
            outcomes: group.outcomes,
            verdict: dead_peer_verdict(
                &group.outcomes,
                group.max_retransmits,
                secs(group.longest_ns),
            ),
            call_site: site(key.close_stack),
        })
        .collect();
    dead.sort_by_key(|d| Reverse(d.retransmits));
    // "Dead" only where the peer never acknowledged (or is gone): FINs
    // acknowledged after a few retransmits crossed a lossy path.
    let (dead, recovered): (Vec<DeadPeerFin>, Vec<DeadPeerFin>) = dead
        .into_iter()
        .partition(|d| d.outcomes.gave_up + d.outcomes.still_trying + d.outcomes.reset > 0);

    let mut pressure: Vec<PortPressure> = ports::use_by_destination(input.now, input.port_range)
        .into_iter()
        .map(|((netns, destination), used)| {
            port_pressure(netns, destination, used, input.port_range)
        })
        .collect();
    pressure.sort_by_key(|p| Reverse(p.ports_in_use));
    // The busiest destinations are what matters; the rest is noise.
    pressure.truncate(MAX_PORT_DESTINATIONS);

    let totals = &mut report.totals;
    totals.elapsed_s = input.elapsed.as_secs_f64();
    totals.time_wait_kernel = count_state(input.now, TcpState::TimeWait);
    totals.close_wait_kernel = count_state(input.now, TcpState::CloseWait);
    totals.network_namespaces = input.now.namespaces;
    totals
        .namespaces_unreachable
        .clone_from(&input.now.unreachable);
    totals.live_sockets_traced = input
        .table
        .live()
        .filter(|r| input.filter.matches_record(r, input.workloads))
        .count();
    totals.events_lost = input.events_lost;
    totals.sockets_untracked = input.sockets_untracked;
    totals.incomplete = input.events_lost > 0 || input.sockets_untracked > 0;

    // Every finding: the text report shows the first rows of each kind
    // and says how many more the JSON report has.
    let findings = &mut report.findings;
    let mut push_all = |items: Vec<Finding>| findings.extend(items);
    push_all(leaks.into_iter().map(Finding::CloseWaitLeak).collect());
    push_all(dead.into_iter().map(Finding::DeadPeerFin).collect());
    push_all(
        recovered
            .into_iter()
            .map(Finding::FinRetransmitsRecovered)
            .collect(),
    );
    push_all(loops.into_iter().map(Finding::ReconnectLoop).collect());
    push_all(churn.into_iter().map(Finding::Churn).collect());
    push_all(connects.into_iter().map(Finding::Connect).collect());
    push_all(accepts.into_iter().map(Finding::Accept).collect());
    push_all(pressure.into_iter().map(Finding::PortPressure).collect());
    report
}

fn reconnect_loop(
    key: &FlowKey,
    flow: &Flow,
    call_site: Option<CallSite>,
) -> Option<ReconnectLoop> {
    if key.role != Role::Active || flow.attempts < reconnect::MIN_ATTEMPTS {
        return None;
    }
    let (backoff, first, last) = reconnect::backoff(&flow.recent_attempts_ns)?;
    let median_lifetime_us = Percentiles::of(&flow.lifetimes_us).map(|p| p.p50);
    let short_lived = median_lifetime_us.is_some_and(|us| us < 1_000_000);
    let failing = flow.failures.total() * 2 >= flow.attempts;
    // A client that closes its own short connections is churn (story 1),
    // and so is one whose server answers and then closes (HTTP/1.0); a
    // loop is the peer refusing, or closing on us without a word, and us
    // coming straight back.
    let rejected = failing || flow.rejections * 2 >= flow.closed.max(1);
    if backoff != Backoff::None || !short_lived && !failing || !rejected {
        return None;
    }
    let starts = &flow.recent_attempts_ns;
    let span = starts.last()?.saturating_sub(*starts.first()?);
    let per_second = rate(u64::try_from(starts.len() - 1).ok()?, span);
    if per_second < 0.5 {
        return None;
    }
    Some(ReconnectLoop {
        processes: Processes::default(),
        process: ProcessJson::of(key.owner),
        peer: key.peer.to_string(),
        attempts: flow.attempts,
        per_second,
        median_lifetime_us,
        closed_first: ClosedFirst::of(flow),
        failures: flow.failures.total(),
        backoff,
        first_gap_ms: secs(first) * 1e3,
        last_gap_ms: secs(last) * 1e3,
        call_site,
    })
}

fn dead_peer_verdict(outcomes: &DeadPeerOutcomes, retransmits: u32, seconds: f64) -> String {
    if outcomes.gave_up > 0 {
        format!(
            "peer never acknowledged; gave up after {retransmits} retransmits over {seconds:.1} s"
        )
    } else if outcomes.still_trying > 0 {
        format!("peer has not acknowledged; still retransmitting ({retransmits} so far over {seconds:.1} s)")
    } else if outcomes.reset > 0 {
        "the peer address answered with a reset: the old peer is gone".to_owned()
    } else {
        format!("acknowledged after {retransmits} retransmits")
    }
}

fn port_pressure(
    netns: u32,
    destination: SocketAddr,
    used: ports::PortUse,
    range: (u16, u16),
) -> PortPressure {
    let range_size = u64::from(range.1 - range.0) + 1;
    #[expect(clippy::cast_precision_loss, reason = "a percentage for display")]
    let percent = used.in_use as f64 * 100.0 / range_size as f64;
    PortPressure {
        netns,
        destination: destination.to_string(),
        ports_in_use: used.in_use,
        time_wait: used.time_wait,
        range,
        range_size,
        percent,
    }
}

fn count_state(snapshot: &Snapshot, state: TcpState) -> u64 {
    snapshot.sockets.iter().filter(|s| s.state == state).count() as u64
}

/// `TIME_WAIT` sockets per network namespace and remote endpoint, and per
/// remote address (port 0) for the server side, where clients come from
/// many ports. (Two pods may talk to the same peer from the same
/// addresses.)
fn time_wait_by_destination(snapshot: &Snapshot) -> HashMap<(u32, SocketAddr), u64> {
    let mut counts = HashMap::new();
    for socket in snapshot
        .sockets
        .iter()
        .filter(|s| s.state == TcpState::TimeWait)
    {
        *counts.entry((socket.netns, socket.remote)).or_default() += 1;
        *counts
            .entry((socket.netns, SocketAddr::new(socket.remote.ip(), 0)))
            .or_default() += 1;
    }
    counts
}

/// The stack that names a group's call site: the most frequent one among
/// those that reach the user's code, else the most frequent. (A JIT
/// runtime's first calls run interpreted, unnamed; later ones compiled and
/// named, on other addresses.)
fn best_stack<S>(
    counts: &std::collections::HashMap<crate::table::StackRef, u64, S>,
    call_sites: &CallSites,
) -> Option<crate::table::StackRef> {
    let user = counts
        .iter()
        .filter(|(&stack, _)| call_sites.names_user_code(stack))
        .max_by_key(|(_, &n)| n);
    user.or_else(|| counts.iter().max_by_key(|(_, &n)| n))
        .map(|(&stack, _)| stack)
}
