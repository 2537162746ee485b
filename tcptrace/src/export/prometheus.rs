//! Prometheus / `OpenMetrics` exposition through the prometheus-client crate.
//!
//! The daemon's counters live in `metrics::DaemonMetrics` (cheap per-event
//! adds); at scrape time they, the latest diagnosis report and a socket
//! dump are copied into a `Scrape`, which a prometheus-client `Collector`
//! encodes. Label values are escaped here: a process chooses its own comm,
//! and prometheus-client 0.24 writes label values as given.

use std::collections::HashMap;

use prometheus_client::{
    collector::Collector,
    encoding::{text::encode, DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::{process_stats::ProcessStats, tracer_costs::TracerCosts};
use crate::{
    callsite::StackCounts,
    container::ContainerLabels,
    diagnose::flows::ConnectFailures,
    findings::AGE_BANDS,
    metrics::{Buckets, CountsBy, LabelValue, ProcessMetrics},
    pipeline::EventCounts,
    probe::Counters,
};

/// comm, namespace, pod, container, unit, then `container_id` and
/// `pod_uid` when the container config asks for ids.
pub type ProcessLabels = Vec<(&'static str, String)>;

#[must_use]
pub fn process_labels(comm: &str, container: &ContainerLabels) -> ProcessLabels {
    let mut labels = vec![
        ("comm", escape(comm)),
        ("namespace", escape(&container.namespace)),
        ("pod", escape(&container.pod)),
        ("container", escape(&container.container)),
        ("unit", escape(&container.unit)),
    ];
    if let Some(id) = &container.container_id {
        labels.push(("container_id", escape(id)));
    }
    if let Some(uid) = &container.pod_uid {
        labels.push(("pod_uid", escape(uid)));
    }
    labels
}

/// Escapes a label value as the text format requires (`\`, `"`, newline;
/// it knows no other escape) and replaces other unsafe characters (control
/// and bidirectional controls, `output::is_unsafe_char`) with U+FFFD, so
/// no process name can break the exposition or reorder what a dashboard
/// shows.
#[must_use]
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if crate::output::is_unsafe_char(c) => out.push(char::REPLACEMENT_CHARACTER),
            c => out.push(c),
        }
    }
    out
}

/// Everything one scrape shows, owned so the collector can encode it.
#[derive(Debug, Default)]
pub struct Scrape {
    pub processes: Vec<(ProcessLabels, ProcessMetrics)>,
    /// Per peer endpoint (top K, the rest as "other").
    pub peers: Vec<(String, crate::metrics::PeerMetrics)>,
    /// Sockets held by processes, from the `sock_diag` dump and fd scan.
    pub sockets: Vec<(ProcessLabels, &'static str, u64)>,
    /// All TCP sockets in the kernel by state (`TIME_WAIT` included).
    pub kernel_sockets: Vec<(&'static str, u64)>,
    /// Network namespaces whose sockets were listed, and not (unreachable).
    pub network_namespaces: (u64, u64),
    /// `TIME_WAIT` sockets held per closing process (modelled).
    pub time_wait: Vec<(ProcessLabels, u64)>,
    pub close_wait_oldest: Vec<(ProcessLabels, f64)>,
    /// ESTABLISHED connections idle past the threshold, keepalive off.
    pub idle_without_keepalive: Vec<(ProcessLabels, u64)>,
    /// ESTABLISHED connections per age band (`AGE_BANDS`).
    pub connection_ages: Vec<(ProcessLabels, [u64; AGE_BANDS.len()])>,
    pub oldest_connection: Vec<(ProcessLabels, f64)>,
    /// Listeners inside the ephemeral port range: (labels, netns, port).
    pub listeners_in_range: Vec<(ProcessLabels, u32, u16)>,
    /// Ephemeral ports in use per destination (top K).
    /// By (network namespace, destination).
    pub ports_in_use: Vec<((String, String), u64)>,
    /// Ports in `ip_local_port_range`, by network namespace.
    pub port_range_sizes: Vec<(String, u64)>,
    pub kernel: Counters,
    pub events: EventCounts,
    /// What became of the stacks the kernel captured.
    pub stacks: StackCounts,
    pub folded: u64,
    /// Label sets dropped after a long time without events.
    pub evicted: u64,
    /// Walks of the kernel's socket map that failed (see `LiveBirths`).
    pub socket_map_walks_failed: u64,
    pub version: &'static str,
    pub kernel_release: String,
    /// The daemon's own `process_*` metrics (no `tcptrace_` prefix).
    pub process: Option<ProcessStats>,
    /// Kernel program runs and ring buffer fill.
    pub costs: Option<TracerCosts>,
}

/// Renders a scrape as `OpenMetrics` text.
#[must_use]
pub fn render(mut scrape: Scrape) -> String {
    let mut registry = Registry::default();
    if let Some(process) = scrape.process.take() {
        registry.register_collector(Box::new(process));
    }
    let costs = scrape.costs.take();
    let tcptrace = registry.sub_registry_with_prefix("tcptrace");
    if let Some(costs) = costs {
        tcptrace.register_collector(Box::new(costs));
    }
    tcptrace.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

/// The same exposition in Prometheus' classic text format (0.0.4), for
/// clients that do not ask for `OpenMetrics` (curl, promtool, older
/// scrapers): counter families are named with their `_total` suffix in
/// HELP/TYPE, and the OpenMetrics-only `# UNIT` and `# EOF` lines go.
#[must_use]
pub fn to_classic_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        if let Some((prefix, rest)) = meta {
            let name = rest.split(' ').next().unwrap_or_default();
            if counters.contains(&name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

type Result = std::result::Result<(), std::fmt::Error>;

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result {
        self.encode_sockets(&mut e)?;
        self.encode_connections(&mut e)?;
        self.encode_processes(&mut e)?;
        self.encode_peers(&mut e)?;
        self.encode_self(&mut e)
    }
}

impl Scrape {
    fn encode_sockets(&self, e: &mut DescriptorEncoder) -> Result {
        let mut m = e.encode_descriptor(
            "sockets",
            "TCP sockets held by a process, by state (from sock_diag and /proc fds); a socket \
             several processes share counts once, for the lowest pid",
            None,
            MetricType::Gauge,
        )?;
        for (labels, state, count) in &self.sockets {
            let set = with(labels, [("state", (*state).to_owned())]);
            m.encode_family(&set)?.encode_gauge(count)?;
        }
        let mut m = e.encode_descriptor(
            "kernel_sockets",
            "All TCP sockets in every network namespace, by state",
            None,
            MetricType::Gauge,
        )?;
        for (state, count) in &self.kernel_sockets {
            m.encode_family(&[("state", *state)])?.encode_gauge(count)?;
        }
        let mut m = e.encode_descriptor(
            "network_namespaces",
            "Network namespaces whose sockets the gauges cover (listed) or miss (unreachable)",
            None,
            MetricType::Gauge,
        )?;
        let (listed, unreachable) = self.network_namespaces;
        for (state, count) in [("listed", listed), ("unreachable", unreachable)] {
            m.encode_family(&[("state", state)])?.encode_gauge(&count)?;
        }
        let mut m = e.encode_descriptor(
            "time_wait_sockets",
            "Timewait sockets (TIME_WAIT, or FIN_WAIT2 when the peer never closed) left by a process's active closes in the last 60 s",
            None,
            MetricType::Gauge,
        )?;
        for (labels, count) in &self.time_wait {
            m.encode_family(labels)?.encode_gauge(count)?;
        }
        let mut m = e.encode_descriptor(
            "close_wait_oldest",
            "Age of the oldest socket a process holds in CLOSE_WAIT",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (labels, age) in &self.close_wait_oldest {
            m.encode_family(labels)?.encode_gauge(age)?;
        }
        let mut m = e.encode_descriptor(
            "ephemeral_ports_in_use",
            "Local ports from ip_local_port_range tied up towards a destination",
            None,
            MetricType::Gauge,
        )?;
        for ((netns, destination), count) in &self.ports_in_use {
            m.encode_family(&[
                ("destination", escape(destination)),
                ("netns", netns.clone()),
            ])?
            .encode_gauge(count)?;
        }
        let mut m = e.encode_descriptor(
            "ephemeral_port_range_size",
            "Ports in net.ipv4.ip_local_port_range of a network namespace (tcptrace's own, and each with ports in use shown)",
            None,
            MetricType::Gauge,
        )?;
        for (netns, size) in &self.port_range_sizes {
            m.encode_family(&[("netns", netns.clone())])?
                .encode_gauge(size)?;
        }
        Ok(())
    }

    /// Live connections: idle ones, ages, listeners in the port range.
    fn encode_connections(&self, e: &mut DescriptorEncoder) -> Result {
        let mut m = e.encode_descriptor(
            "idle_connections_without_keepalive",
            "ESTABLISHED connections idle past the idle threshold with no keepalive armed",
            None,
            MetricType::Gauge,
        )?;
        for (labels, count) in &self.idle_without_keepalive {
            m.encode_family(labels)?.encode_gauge(count)?;
        }
        let mut m = e.encode_descriptor(
            "established_connections_by_age",
            "ESTABLISHED connections by age band (up to the band's bound; `longer`: past 2h)",
            None,
            MetricType::Gauge,
        )?;
        for (labels, bands) in &self.connection_ages {
            for ((band, _), count) in AGE_BANDS.iter().zip(bands) {
                m.encode_family(&with(labels, [("age", (*band).to_owned())]))?
                    .encode_gauge(count)?;
            }
        }
        let mut m = e.encode_descriptor(
            "oldest_connection_age",
            "Age of the oldest ESTABLISHED connection a process holds (at least the daemon's uptime for older ones)",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (labels, age) in &self.oldest_connection {
            m.encode_family(labels)?.encode_gauge(age)?;
        }
        let mut m = e.encode_descriptor(
            "listeners_in_ephemeral_range",
            "Listeners on a port inside ip_local_port_range: a restart may find the port taken by an outgoing connection",
            None,
            MetricType::Gauge,
        )?;
        for (labels, netns, port) in &self.listeners_in_range {
            m.encode_family(&with(
                labels,
                [("netns", netns.to_string()), ("port", port.to_string())],
            ))?
            .encode_gauge(&1u64)?;
        }
        Ok(())
    }

    fn encode_processes(&self, e: &mut DescriptorEncoder) -> Result {
        let rows = &self.processes;
        let mut m = e.encode_descriptor(
            "state_transitions",
            "TCP state changes",
            None,
            MetricType::Counter,
        )?;
        for (labels, p) in rows {
            for ((from, to), count) in p.transitions.iter() {
                let set = with(
                    labels,
                    [
                        ("from", from.name().to_owned()),
                        ("to", to.name().to_owned()),
                    ],
                );
                m.encode_family(&set)?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        counter_by(
            e,
            rows,
            "connections_opened",
            "Connections opened, by role",
            |p| &p.opened,
        )?;
        counter_by(
            e,
            rows,
            "connections_closed",
            "Connections closed, by the side that closed first (local = active close)",
            |p| &p.closes,
        )?;
        counter_by(
            e,
            rows,
            "retransmits",
            "Retransmissions that went out, by phase: one per retransmitted skb (with TSO/GSO \
             an skb may carry several segments, which the kernel's TcpRetransSegs counts each); \
             SYN-ACKs count as phase=\"syn\" for the listener's owner",
            |p| &p.retransmits,
        )?;
        counter_by(e, rows, "resets", "Resets, by direction", |p| &p.resets)?;
        counter_by(
            e,
            rows,
            "connections_lost",
            "Established connections that died without a close: timed out (keepalive or \
             retransmits) or reset by a peer silent past the idle threshold",
            |p| &p.lost,
        )?;
        let mut m = e.encode_descriptor(
            "dead_peer_closes",
            "Closing sockets whose FIN the peer never acknowledged (the kernel gave up)",
            None,
            MetricType::Counter,
        )?;
        for (labels, p) in rows {
            m.encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(&p.dead_peer_closes, None)?;
        }
        let mut m = e.encode_descriptor(
            "connect_failures",
            "Failed connects, by cause",
            None,
            MetricType::Counter,
        )?;
        for (labels, p) in rows {
            for (cause, count) in failures(&p.connect_failures) {
                m.encode_family(&with(labels, [("cause", cause.to_owned())]))?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        histogram(
            e,
            rows.iter().map(|(l, p)| (l, &p.lifetime)),
            "connection_lifetime",
            "Connection lifetime, birth to close",
        )?;
        histogram(
            e,
            rows.iter().map(|(l, p)| (l, &p.connect_latency)),
            "connect_latency",
            "SYN_SENT to ESTABLISHED",
        )
    }

    fn encode_peers(&self, e: &mut DescriptorEncoder) -> Result {
        let mut m = e.encode_descriptor(
            "peer_connect_failures",
            "Failed connects to the busiest destinations (others as \"other\"), by cause",
            None,
            MetricType::Counter,
        )?;
        for (peer, p) in &self.peers {
            for (cause, count) in failures(&p.connect_failures) {
                m.encode_family(&[("peer", escape(peer)), ("cause", cause.to_owned())])?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        let mut m = e.encode_descriptor(
            "peer_dead_peer_closes",
            "Closing sockets whose FIN this peer never acknowledged",
            None,
            MetricType::Counter,
        )?;
        for (peer, p) in &self.peers {
            m.encode_family(&[("peer", escape(peer))])?
                .encode_counter::<NoLabelSet, _, u64>(&p.dead_peer_closes, None)?;
        }
        let peers: Vec<([(&str, String); 1], &Buckets)> = self
            .peers
            .iter()
            .map(|(peer, p)| ([("peer", escape(peer))], &p.connect_latency))
            .collect();
        histogram(
            e,
            peers.iter().map(|(l, b)| (l, *b)),
            "peer_connect_latency",
            "SYN_SENT to ESTABLISHED per destination",
        )
    }

    /// tcptrace's own counters (name, help, value): the kernel programs', then
    /// userspace's.
    fn self_counters(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> {
        self.kernel_counters()
            .into_iter()
            .chain(self.userspace_counters())
    }

    /// The kernel programs' counters.
    fn kernel_counters(&self) -> [(&'static str, &'static str, u64); 18] {
        let k = &self.kernel;
        [
            (
                "kernel_events_sent",
                "Records the kernel programs sent to the ring buffer",
                k.events_sent,
            ),
            (
                "kernel_events_folded",
                "Transitions and retransmits the kernel kept in a socket's summary instead of \
                 sending them (summary mode); each is unfolded from the summary at its close",
                k.events_folded,
            ),
            (
                "events_lost",
                "Events the kernel dropped because the ring buffer was full",
                k.events_lost,
            ),
            (
                "kernel_runs_skipped",
                "Kernel program runs skipped because the program was already running on \
                 that CPU (a softirq nested in a process-context run): events never seen",
                k.runs_skipped,
            ),
            (
                "kernel_transitions_missed",
                "Transitions of known sockets the kernel ran no program for (told by the next \
                 transition, or by a retransmit in another state): events never seen",
                k.transitions_missed,
            ),
            (
                "socket_map_full",
                "Sockets the kernel could not track (map full)",
                k.sock_map_full,
            ),
            (
                "stack_errors",
                "User stacks that could not be captured (ring buffer full, stack unreadable)",
                k.stack_errors,
            ),
            ("stacks_captured", "User stacks captured", k.stacks_taken),
            (
                "stacks_sampled",
                "Call-site stacks reused from the process's last capture (sampling)",
                k.stacks_sampled,
            ),
            (
                "processes_not_announced",
                "New processes the kernel could not announce (its ring was full)",
                k.processes_not_announced,
            ),
            (
                "kernel_read_errors",
                "Tracepoint records or kernel fields that could not be read",
                k.read_errors,
            ),
            (
                "listener_map_full",
                "Listeners the kernel could not record (map full): their connections have no owner",
                k.listener_map_full,
            ),
            (
                "close_wait_map_full",
                "Sockets entering CLOSE_WAIT sent as a record because the kernel's CLOSE_WAIT map was full (costs more, loses nothing)",
                k.close_wait_map_full,
            ),
            (
                "life_ring_full",
                "Whole lives sent through the event ring buffer because their CPU's ring of whole lives was full (costs more, loses nothing)",
                k.life_ring_full,
            ),
            (
                "kernel_filtered_out",
                "Records the kernel programs did not send because the filter rejects them",
                k.filtered_out,
            ),
            (
                "retransmit_attempts_failed",
                "Retransmit attempts that did not go out (the original still queued below TCP, \
                 or the transmit failed): host-wide, not counted in tcptrace_retransmits_total",
                k.retransmits_failed,
            ),
            (
                "kernel_resets_sent_without_socket",
                "Resets sent on sockets tcptrace does not know, or with none (a SYN to a closed \
                 port): host-wide; without a filter also counted under comm=\"unknown\"",
                k.resets_sent_without_socket,
            ),
            (
                "kernel_resets_received_without_socket",
                "Resets received on sockets tcptrace does not know: host-wide; without a filter \
                 also counted under comm=\"unknown\"",
                k.resets_received_without_socket,
            ),
        ]
    }

    /// What userspace counts of its own work.
    fn userspace_counters(&self) -> [(&'static str, &'static str, u64); 8] {
        [
            ("events", "Events read from the kernel", self.events.events),
            (
                "decode_errors",
                "Records that could not be decoded",
                self.events.decode_errors,
            ),
            (
                "stacks_unwound",
                "Captured stacks unwound in userspace",
                self.stacks.unwound,
            ),
            (
                "stacks_unmapped",
                "Captured stacks of processes gone before tcptrace read their mappings: no call site",
                self.stacks.unmapped,
            ),
            (
                "processes_missed",
                "New processes gone before their mappings could be read",
                self.stacks.processes_missed,
            ),
            (
                "folded_series",
                "Events counted under \"other\" because label bounds were reached",
                self.folded,
            ),
            (
                "socket_map_walks_failed",
                "Reads of the kernel's socket map that failed: live connections the daemon \
                 has no record of lack their call sites and exact ages until one succeeds",
                self.socket_map_walks_failed,
            ),
            (
                "label_sets_evicted",
                "Process and peer label sets dropped after 15 minutes without events (their series end)",
                self.evicted,
            ),
        ]
    }

    fn encode_self(&self, e: &mut DescriptorEncoder) -> Result {
        for (name, help, value) in self.self_counters() {
            e.encode_descriptor(name, help, None, MetricType::Counter)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        // A gauge fixed at 1 rather than the OpenMetrics info type, which
        // Prometheus' classic text parser (and promtool) reject.
        e.encode_descriptor(
            "build_info",
            "tcptrace version and kernel release",
            None,
            MetricType::Gauge,
        )?
        .encode_family(&[
            ("version", self.version.to_owned()),
            ("kernel", escape(&self.kernel_release)),
        ])?
        .encode_gauge(&1u64)?;
        // Below real-time priority, short-lived processes may lose their
        // call sites (see `symbolize::MeetingPriority`).
        e.encode_descriptor(
            "meeting_thread_info",
            "Scheduling of the thread that reads new processes' mappings (real-time: short-lived processes keep their call sites)",
            None,
            MetricType::Gauge,
        )?
        .encode_family(&[("priority", self.stacks.meeting_priority.label().to_owned())])?
        .encode_gauge(&1u64)
    }
}

/// `labels` plus extra pairs.
fn with<const N: usize>(
    labels: &ProcessLabels,
    extra: [(&'static str, String); N],
) -> Vec<(&'static str, String)> {
    labels.iter().cloned().chain(extra).collect()
}

/// One counter family with a label whose values `L` names.
fn counter_by<L: LabelValue>(
    e: &mut DescriptorEncoder,
    rows: &[(ProcessLabels, ProcessMetrics)],
    name: &str,
    help: &str,
    pick: impl Fn(&ProcessMetrics) -> &CountsBy<L>,
) -> Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, p) in rows {
        for (value, count) in pick(p).iter() {
            m.encode_family(&with(labels, [(L::LABEL, value.label_value().to_owned())]))?
                .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
        }
    }
    Ok(())
}

fn histogram<'a, L: prometheus_client::encoding::EncodeLabelSet + 'a>(
    e: &mut DescriptorEncoder,
    rows: impl Iterator<Item = (&'a L, &'a Buckets)>,
    name: &str,
    help: &str,
) -> Result {
    let mut m = e.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (labels, buckets) in rows {
        m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
            buckets.sum,
            buckets.count,
            &buckets.per_bucket(),
            None,
        )?;
    }
    Ok(())
}

fn failures(f: &ConnectFailures) -> [(&'static str, u64); 6] {
    [
        ("refused", f.refused),
        ("timed_out", f.timed_out),
        ("unreachable", f.unreachable),
        ("reset", f.reset),
        ("aborted", f.aborted),
        ("other", f.other),
    ]
}

/// Keeps the `k` entries with the largest `weight`, folding the rest into
/// one entry named `other` with `fold`.
pub fn top_k<K, T: Default>(
    mut entries: Vec<(K, T)>,
    k: usize,
    weight: impl Fn(&T) -> u64,
    fold: impl Fn(&mut T, T),
    other: K,
) -> Vec<(K, T)> {
    entries.sort_by_key(|(_, t)| std::cmp::Reverse(weight(t)));
    if entries.len() <= k {
        return entries;
    }
    let rest = entries.split_off(k);
    let mut folded = T::default();
    for (_, t) in rest {
        fold(&mut folded, t);
    }
    entries.push((other, folded));
    entries
}

/// Process rows merged by identical labels (two cgroups of one container).
#[must_use]
pub fn merge_rows(
    rows: Vec<(ProcessLabels, ProcessMetrics)>,
) -> Vec<(ProcessLabels, ProcessMetrics)> {
    let mut merged: HashMap<ProcessLabels, ProcessMetrics> = HashMap::new();
    for (labels, metrics) in rows {
        let entry = merged.entry(labels).or_default();
        crate::metrics::merge(entry, &metrics);
    }
    let mut rows: Vec<_> = merged.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Opened;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"evil"} 1"#), r#"evil\"} 1"#);
        assert_eq!(escape("a\\b\nc\u{7}\t"), "a\\\\b\\nc\u{fffd}\u{fffd}");
    }

    #[test]
    fn renders_openmetrics_with_hostile_comm() {
        let mut p = ProcessMetrics::default();
        p.opened.add(Opened::Active, 3);
        p.opened.add(Opened::Passive, 1);
        p.lifetime.observe_ns(2_000_000);
        let labels = process_labels("evil\"\n", &ContainerLabels::default());
        let text = render(Scrape {
            processes: vec![(labels, p)],
            version: "0.1.0",
            ..Scrape::default()
        });
        assert!(text.contains(r#"tcptrace_connections_opened_total{comm="evil\"\n",namespace="",pod="",container="",unit="",role="active"} 3"#), "{text}");
        assert!(
            text.contains("tcptrace_connection_lifetime_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn classic_text_names_counters_with_total() {
        let om = "# HELP tcptrace_events Events.\n# TYPE tcptrace_events counter\ntcptrace_events_total 3\n\
                  # HELP tcptrace_x_seconds X.\n# TYPE tcptrace_x_seconds gauge\n# UNIT tcptrace_x_seconds seconds\n\
                  tcptrace_x_seconds 1\n# EOF\n";
        assert_eq!(
            to_classic_text(om),
            "# HELP tcptrace_events_total Events.\n# TYPE tcptrace_events_total counter\ntcptrace_events_total 3\n\
             # HELP tcptrace_x_seconds X.\n# TYPE tcptrace_x_seconds gauge\ntcptrace_x_seconds 1\n"
        );
    }

    #[test]
    fn top_k_folds_the_rest() {
        let entries = vec![
            ("a".to_owned(), 5u64),
            ("b".to_owned(), 9),
            ("c".to_owned(), 1),
            ("d".to_owned(), 2),
        ];
        let top = top_k(entries, 2, |n| *n, |acc, n| *acc += n, "other".to_owned());
        assert_eq!(
            top,
            [
                ("b".to_owned(), 9),
                ("a".to_owned(), 5),
                ("other".to_owned(), 3)
            ]
        );
    }
}
