//! What a scrape shows, assembled from the daemon's counters, the latest
//! refresh (socket dump and diagnoses) and the kernel's counters.

use std::collections::HashMap;

use tcptrace_common::TcpState;

use crate::{
    container::{ContainerLabels, Containers},
    export::prometheus::{merge_rows, process_labels, top_k, ProcessLabels, Scrape},
    findings::{Finding, ProcessJson, Report, AGE_BANDS},
    metrics::DaemonMetrics,
    snapshot::Snapshot,
};

/// Gauges derived at each refresh (not per scrape: they need a socket dump
/// and a /proc scan).
#[derive(Debug, Default)]
pub struct Refreshed {
    pub sockets: Vec<(ProcessLabels, &'static str, u64)>,
    pub kernel_sockets: Vec<(&'static str, u64)>,
    /// Network namespaces the dump listed, and those it could not (with
    /// why): their sockets are missing from the gauges.
    pub namespaces_listed: u64,
    pub namespaces_unreachable: Vec<String>,
    pub time_wait: Vec<(ProcessLabels, u64)>,
    pub close_wait_oldest: Vec<(ProcessLabels, f64)>,
    pub idle_without_keepalive: Vec<(ProcessLabels, u64)>,
    /// Established connections per process and age band (`AGE_BANDS`).
    pub connection_ages: Vec<(ProcessLabels, [u64; AGE_BANDS.len()])>,
    pub oldest_connection: Vec<(ProcessLabels, f64)>,
    /// Listeners inside the ephemeral port range: (labels, netns, port).
    pub listeners_in_range: Vec<(ProcessLabels, u32, u16)>,
    /// By (network namespace, destination).
    pub ports_in_use: Vec<((String, String), u64)>,
    /// Ports in `ip_local_port_range` by network namespace: tcptrace's own
    /// and each namespace in `ports_in_use`.
    pub port_range_sizes: Vec<(String, u64)>,
}

/// A finding's process's labels: those of the cgroup its sockets were born
/// in, which outlive the process (its `TIME_WAIT` sockets do too).
fn labels_of(containers: &mut Containers, process: Option<&ProcessJson>) -> ProcessLabels {
    match process {
        Some(p) => process_labels(&p.comm, containers.labels(p.cgroup)),
        None => process_labels("unknown", &ContainerLabels::EMPTY),
    }
}

impl Refreshed {
    /// `all`: every socket (for kernel totals); `owned`: those held by the
    /// processes the filter allows (for per-process counts); `containers`:
    /// the daemon's cache, so a container's names are read once for its
    /// life, not once per refresh.
    #[must_use]
    pub fn new(
        all: &Snapshot,
        owned: &Snapshot,
        report: &Report,
        top_peers: usize,
        containers: &mut Containers,
    ) -> Self {
        let mut sockets: HashMap<(ProcessLabels, &'static str), u64> = HashMap::new();
        let mut kernel: HashMap<&'static str, u64> = HashMap::new();
        // Each holder's `/proc/PID/cgroup` read once per refresh.
        let mut holders: HashMap<u32, ContainerLabels> = HashMap::new();
        for socket in &all.sockets {
            *kernel.entry(socket.state.name()).or_default() += 1;
        }
        for socket in &owned.sockets {
            // Each socket once, for the lowest pid holding it: a pre-fork
            // server's listener is shared by its master and every worker,
            // and counting it per holder made 2 listeners read as 6.
            let Some(holder) = socket.holders.iter().min_by_key(|h| h.pid) else {
                continue;
            };
            let container = holders
                .entry(holder.pid)
                .or_insert_with(|| containers.labels_of_pid(holder.pid));
            let labels = process_labels(&holder.comm, container);
            *sockets.entry((labels, socket.state.name())).or_default() += 1;
        }
        let mut time_wait: HashMap<ProcessLabels, u64> = HashMap::new();
        let mut close_wait: HashMap<ProcessLabels, f64> = HashMap::new();
        let mut idle: HashMap<ProcessLabels, u64> = HashMap::new();
        let mut ages: HashMap<ProcessLabels, [u64; AGE_BANDS.len()]> = HashMap::new();
        let mut oldest: HashMap<ProcessLabels, f64> = HashMap::new();
        let mut listeners = Vec::new();
        let mut ports = Vec::new();
        for finding in &report.findings {
            if let Some((process, held)) = finding.held() {
                let labels = labels_of(containers, process);
                if held.time_wait > 0 {
                    *time_wait.entry(labels.clone()).or_default() += held.time_wait;
                }
                if let Some(age) = held.close_wait_oldest_s {
                    let oldest = close_wait.entry(labels).or_default();
                    *oldest = oldest.max(age);
                }
            }
            match finding {
                Finding::IdleConnections(i) => {
                    *idle
                        .entry(labels_of(containers, i.process.as_ref()))
                        .or_default() += i.sockets;
                }
                Finding::ConnectionAges(a) => {
                    let labels = labels_of(containers, a.process.as_ref());
                    let bands = ages.entry(labels.clone()).or_default();
                    for (band, n) in bands.iter_mut().zip(a.by_age) {
                        *band += n;
                    }
                    if let Some(oldest_age) = a.oldest_age_s {
                        let age = oldest.entry(labels).or_default();
                        *age = age.max(oldest_age);
                    }
                }
                Finding::ListenerInRange(l) => {
                    listeners.push((labels_of(containers, l.process.as_ref()), l.netns, l.port));
                }
                Finding::PortPressure(p) => {
                    // Two namespaces (pods) may use ports towards the
                    // same destination: one series each.
                    ports.push(((p.netns.to_string(), p.destination.clone()), p.ports_in_use));
                }
                _ => {}
            }
        }
        let mut sockets: Vec<_> = sockets.into_iter().map(|((l, s), n)| (l, s, n)).collect();
        sockets.sort();
        let mut kernel_sockets: Vec<_> = TcpState::ALL
            .iter()
            .map(|s| (s.name(), kernel.get(s.name()).copied().unwrap_or(0)))
            .collect();
        kernel_sockets.retain(|(name, _)| *name != "NEW_SYN_RECV" && *name != "CLOSE");
        let ports_in_use = top_k(
            ports,
            top_peers,
            |n| *n,
            |a, n| *a += n,
            ("other".to_owned(), "other".to_owned()),
        );
        let port_range_sizes = range_sizes(all, &ports_in_use);
        Self {
            sockets,
            kernel_sockets,
            namespaces_listed: all.namespaces as u64,
            namespaces_unreachable: all.unreachable.clone(),
            time_wait: time_wait.into_iter().collect(),
            close_wait_oldest: close_wait.into_iter().collect(),
            idle_without_keepalive: idle.into_iter().collect(),
            connection_ages: ages.into_iter().collect(),
            oldest_connection: oldest.into_iter().collect(),
            listeners_in_range: listeners,
            ports_in_use,
            port_range_sizes,
        }
    }
}

/// The port range's size of tcptrace's namespace and of each namespace
/// with ports in use shown, so that a share of the range is computed
/// against the namespace's own range (a pod may set its own).
fn range_sizes(all: &Snapshot, ports_in_use: &[((String, String), u64)]) -> Vec<(String, u64)> {
    let mut namespaces: Vec<u32> = ports_in_use
        .iter()
        .filter_map(|((netns, _), _)| netns.parse().ok())
        .chain([all.netns])
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    namespaces
        .into_iter()
        .map(|netns| (netns.to_string(), all.port_range(netns).size()))
        .collect()
}

/// Counters by process and peer, with container labels and the top-K
/// peer bound applied.
pub fn counters(
    metrics: &DaemonMetrics,
    containers: &mut Containers,
    top_peers: usize,
    scrape: &mut Scrape,
) {
    let rows = metrics
        .processes
        .iter()
        .map(|(key, m)| {
            let comm = crate::event::comm_str(&key.comm);
            (
                process_labels(&comm, containers.labels(key.cgroup)),
                m.clone(),
            )
        })
        .collect();
    scrape.processes = merge_rows(rows);
    let peers = metrics
        .peers
        .iter()
        .map(|(addr, m)| (addr.to_string(), m.clone()))
        .collect();
    scrape.peers = top_k(
        peers,
        top_peers,
        |p| p.attempts + p.connect_failures.total() + p.dead_peer_closes,
        |a, p| a.merge(&p),
        "other".to_owned(),
    );
    scrape.folded = metrics.folded_processes + metrics.folded_peers;
    scrape.evicted = metrics.evicted;
}
