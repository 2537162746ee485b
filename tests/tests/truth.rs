//! tcptrace's numbers against the kernel's own, on real programs: Debian's
//! nginx served to ab (with and without keep-alive) and a curl loop, over
//! IPv4 and IPv6, plus connects refused by a closed port, all inside two
//! network namespaces the test creates. The kernel's counters (`nstat`)
//! and socket states (`ss`) of those namespaces are the truth; every mode
//! of tcptrace must agree with them: every-event (`trace --json`), summary
//! (`trace --report-only`, one kernel record per socket) and the daemon,
//! each with and without a `--port` filter, and the programs a kernel that
//! refuses the typed tracepoint gets (the raw tracepoint in summary mode,
//! the classic one for every event; forced by
//! `TCPTRACE_UNTYPED_TRACEPOINTS`), all tracing the same run.
//!
//! The same for Debian's redis-server and redis-benchmark with a new
//! connection per request (also with `--comm` filters), for the
//! retransmits of a lossy path (nftables dropping segments at random,
//! against `TcpRetransSegs` and `TcpExtTCPSynRetrans`, with a tracefs
//! instance as a witness of the tracepoint itself), and for a shell loop
//! of refused curls, which must be one reconnect loop.
//!
//! A run in which a session says it lost events (a full ring buffer, a
//! skipped nested run) cannot be compared; such a run is shown and done
//! again (`until_comparable`).
//!
//! The table of every figure is printed (`--nocapture`), so a failure says
//! which mode disagrees about what.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tcptrace_tests::{
    bpf_stats::BpfStats,
    daemon::{self, free_loopback_addr, sample, Daemon},
    kernel_counts::{nstat, ss_count},
    netns::{nft, sh, HostPair},
    programs::{shell_in, Nginx},
    redis::{self, Redis},
    require_root,
    trace::Trace,
    tracefs::{self, Hit},
    Tracer,
};

const PORT: u16 = 18300;
/// Nothing listens here: connects to it are refused.
const CLOSED_PORT: u16 = 18301;
const V6_A: &str = "fd00:7474::1";
const V6_B: &str = "fd00:7474::2";

/// What one mode of tcptrace says about the run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Figures {
    /// Connects by the clients (`CLOSE`→`SYN_SENT`, as `TcpActiveOpens`).
    connects: u64,
    /// Connects refused (as `TcpAttemptFails`, the only failures here).
    refused: u64,
    /// Handshakes nginx completed (as `TcpPassiveOpens`).
    accepted: u64,
    /// nginx's connections closed by the end (all of them).
    served: u64,
    /// `TIME_WAIT` left on the server's and on the clients' side.
    time_wait_server: u64,
    time_wait_clients: u64,
}

/// The kernel's figures of a run: the clients' namespace connects
/// (`TcpActiveOpens`, `TcpAttemptFails`), the server's accepts
/// (`TcpPassiveOpens`, each one served), and each side's `TIME_WAIT`.
fn kernel_figures(hosts: &HostPair) -> Figures {
    let (server, clients) = (nstat(&hosts.a), nstat(&hosts.b));
    Figures {
        connects: clients["TcpActiveOpens"],
        refused: clients["TcpAttemptFails"],
        accepted: server["TcpPassiveOpens"],
        served: server["TcpPassiveOpens"],
        time_wait_server: ss_count(&hosts.a, "time-wait"),
        time_wait_clients: ss_count(&hosts.b, "time-wait"),
    }
}

#[test]
fn every_mode_agrees_with_the_kernels_counters() {
    require_root();
    let hosts = HostPair::new("ttruth");
    add_ipv6(&hosts);
    let cast = Cast::nginx(&hosts);
    let ports = ["--port", "18300", "--port", "18301"];
    let every_event = Tracer::start(&[]);
    let every_event_port = Tracer::start(&ports);
    let summary = Tracer::start_report_only(&[]);
    let summary_port = Tracer::start_report_only(&ports);
    // Where a kernel refuses the typed tracepoint (forced here): the raw
    // one in summary mode, the classic one for every event.
    let untyped = [("TCPTRACE_UNTYPED_TRACEPOINTS", "1")];
    let summary_untyped = Tracer::start_report_only_with_env(&[], &untyped);
    let every_event_classic = Tracer::start_with_env(&[], &untyped);
    let daemon_args = [&ports[..], &["--refresh", "1s"]].concat();
    let daemon = Daemon::start(&free_loopback_addr(), &daemon_args);

    let nginx = [
        Nginx::start(&hosts.a, &format!("{}:{PORT}", hosts.a_addr)),
        Nginx::start(&hosts.a, &format!("[{V6_A}]:{PORT}")),
    ];
    drive(&hosts);
    settle(&hosts, Duration::from_secs(20));

    let kernel = kernel_figures(&hosts);
    let listening = ss_count(&hosts.a, "listening");
    let nginx_listeners = |scrape: &str| {
        sample(
            scrape,
            "tcptrace_sockets",
            &[("comm", "nginx"), ("state", "LISTEN")],
        )
    };
    // The daemon renders its metrics once a second: wait for the last
    // connects to show.
    let scrape = daemon.scrape_until(Duration::from_secs(10), |scrape| {
        let f = figures_of_scrape(scrape, &cast);
        f.connects >= kernel.connects
            && f.refused >= kernel.refused
            && f.accepted >= kernel.accepted
            && nginx_listeners(scrape).is_some()
    });
    let modes = [
        ("trace --json", every_event.stop()),
        ("trace --json --port", every_event_port.stop()),
        ("trace --report-only", summary.stop()),
        ("trace --report-only --port", summary_port.stop()),
        ("trace --report-only, probe reads", summary_untyped.stop()),
        (
            "trace --json, classic tracepoint",
            every_event_classic.stop(),
        ),
    ];
    drop(nginx);
    for (name, trace) in &modes[4..] {
        let fallback = &trace.summary()["summary"]["missing_hooks"];
        assert!(
            fallback.to_string().contains("read with probe reads"),
            "{name}: the fallback says it is in use: {fallback}"
        );
    }

    let mut table = Table::default();
    table.row("kernel (nstat, ss)", &kernel);
    let results: Vec<_> = modes
        .iter()
        .map(|(name, trace)| {
            let figures = figures_of_trace(trace, &cast);
            table.row(name, &figures);
            (name, figures, trace.unseen())
        })
        .collect();
    let daemon_figures = figures_of_scrape(&scrape, &cast);
    table.row("daemon --port (metrics)", &daemon_figures);
    let table = table.0;
    eprintln!("{table}");

    // Sanity: the workload did what it says.
    assert!(kernel.accepted >= 2 * 300 + 2 * 20, "{table}");
    assert_eq!(kernel.refused, 20, "20 connects to a closed port: {table}");
    for (name, figures, unseen) in &results {
        assert_eq!(
            *unseen, 0,
            "{name} lost events, so its counts cannot agree:\n{table}"
        );
        assert_eq!(
            *figures, kernel,
            "{name} disagrees with the kernel:\n{table}"
        );
    }
    // nginx's master and both workers hold each listener: counted once.
    assert_eq!(
        nginx_listeners(&scrape),
        Some(f64::from(u32::try_from(listening).expect("a few"))),
        "nginx's listeners as ss counts them ({listening}), once each"
    );
    // The daemon's counters hold no per-socket TIME_WAIT model.
    assert_eq!(
        (
            daemon_figures.connects,
            daemon_figures.refused,
            daemon_figures.accepted
        ),
        (kernel.connects, kernel.refused, kernel.accepted),
        "the daemon's counters disagree with the kernel:\n{table}"
    );
}

fn add_ipv6(hosts: &HostPair) {
    for (ns, addr) in [(&hosts.a, V6_A), (&hosts.b, V6_B)] {
        let addr = format!("{addr}/64");
        sh(
            "ip",
            &["-n", ns, "addr", "add", &addr, "dev", "veth0", "nodad"],
        );
    }
}

/// The clients, from namespace `b`: per address family, ab without and
/// with keep-alive, a curl loop, and connects to a closed port.
fn drive(hosts: &HostPair) {
    let limit = Duration::from_mins(1);
    let servers = [hosts.a_addr.to_owned(), format!("[{V6_A}]")];
    for host in &servers {
        let url = format!("http://{host}:{PORT}/");
        // HTTP/1.0 without keep-alive: nginx closes first, one
        // connection per request.
        shell_in(
            &hosts.b,
            limit,
            &format!("ab -q -n 300 -c 4 -s 5 {url} >/dev/null"),
        );
        // Keep-alive: a handful of connections for all the requests.
        shell_in(
            &hosts.b,
            limit,
            &format!("ab -q -k -n 300 -c 4 -s 5 {url} >/dev/null"),
        );
        // A process per request, closing first.
        shell_in(
            &hosts.b,
            limit,
            &format!(
                "i=0; while [ $i -lt 20 ]; do \
                 curl -fsS -o /dev/null --max-time 5 {url} || exit 1; i=$((i+1)); done"
            ),
        );
        shell_in(
            &hosts.b,
            limit,
            &format!(
                "i=0; while [ $i -lt 10 ]; do \
                 curl -sS -o /dev/null --max-time 2 http://{host}:{CLOSED_PORT}/ && exit 1; \
                 i=$((i+1)); done; exit 0"
            ),
        );
    }
}

/// The figures of every source, one row each.
#[derive(Default)]
struct Table(String);

impl Table {
    fn row(&mut self, name: &str, f: &Figures) {
        if self.0.is_empty() {
            let _ = writeln!(
                self.0,
                "{:<28} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "source", "connects", "refused", "accepted", "served", "TW srv", "TW cli"
            );
        }
        let _ = writeln!(
            self.0,
            "{name:<28} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            f.connects, f.refused, f.accepted, f.served, f.time_wait_server, f.time_wait_clients
        );
    }
}

/// Which programs play server and clients in a run, and where the server
/// listens: what singles out the run's findings and metrics among the
/// host's.
struct Cast {
    server: &'static str,
    clients: &'static [&'static str],
    /// The server's addresses as findings print a peer (`10.231.0.1:`,
    /// `[fd00:7474::1]:`), port excluded.
    server_peers: Vec<String>,
}

impl Cast {
    fn nginx(hosts: &HostPair) -> Self {
        Self {
            server: "nginx",
            clients: &["ab", "curl"],
            server_peers: vec![format!("{}:", hosts.a_addr), format!("[{V6_A}]:")],
        }
    }

    fn redis(hosts: &HostPair) -> Self {
        Self {
            server: "redis-server",
            clients: &["redis-benchmark"],
            server_peers: vec![format!("{}:", hosts.a_addr)],
        }
    }

    fn to_server(&self, f: &Value) -> bool {
        let peer = f["peer"].as_str().unwrap_or_default();
        self.server_peers
            .iter()
            .any(|p| peer.starts_with(p.as_str()))
    }

    fn is_server(&self, f: &Value) -> bool {
        f["process"]["comm"] == self.server
    }

    fn is_client(&self, f: &Value) -> bool {
        self.clients
            .contains(&f["process"]["comm"].as_str().unwrap_or(""))
    }
}

fn figures_of_trace(trace: &Trace, cast: &Cast) -> Figures {
    let sum = |kind: &str, keep: &dyn Fn(&Value) -> bool, key: &dyn Fn(&Value) -> u64| -> u64 {
        trace.findings(kind).filter(|f| keep(f)).map(key).sum()
    };
    let number = |f: &Value, key: &str| f[key].as_u64().unwrap_or(0);
    let server = |f: &Value| cast.is_server(f);
    let client = |f: &Value| cast.to_server(f) && cast.is_client(f);
    Figures {
        connects: sum("connect", &client, &|f| number(f, "attempts")),
        refused: sum("connect", &client, &|f| {
            f["failures"]["refused"].as_u64().unwrap_or(0)
        }),
        accepted: sum("accept", &server, &|f| number(f, "established")),
        served: sum("churn", &|f| server(f) && f["role"] == "passive", &|f| {
            number(f, "connections")
        }),
        time_wait_server: sum("churn", &server, &|f| number(f, "time_wait_now")),
        time_wait_clients: sum("churn", &client, &|f| number(f, "time_wait_now")),
    }
}

/// The daemon's counters for the test's programs (its metrics are
/// host-wide: the process names single out this run's programs).
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the counters are whole, non-negative and far below 2^53"
)]
fn figures_of_scrape(scrape: &str, cast: &Cast) -> Figures {
    let count =
        |name: &str, want: &[(&str, &str)]| sample(scrape, name, want).unwrap_or(0.0) as u64;
    let clients = |name: &str, want: &[(&str, &str)]| {
        cast.clients
            .iter()
            .map(|comm| {
                let mut labels = vec![("comm", *comm)];
                labels.extend_from_slice(want);
                count(name, &labels)
            })
            .sum()
    };
    Figures {
        connects: clients("tcptrace_connections_opened_total", &[("role", "active")]),
        refused: clients("tcptrace_connect_failures_total", &[("cause", "refused")]),
        accepted: count(
            "tcptrace_connections_opened_total",
            &[("comm", cast.server), ("role", "passive")],
        ),
        ..Figures::default()
    }
}

/// Sockets of `netns` that are neither listening nor in `TIME_WAIT`:
/// connections still opening, open or closing, as `ss` lists them.
fn busy_sockets(netns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "ss", "-Htan"])
        .args(["state", "connected", "exclude", "time-wait"])
        .output()
        .expect("run ss (iproute2)");
    assert!(
        out.status.success(),
        "ss in {netns} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (bounded) until every connection of both hosts has ended: the
/// last FINs and ACKs have crossed the veth (and, on a lossy path, been
/// retransmitted), so the kernel's counters are final and every socket's
/// CLOSE (summary mode's one record) has happened.
fn settle(hosts: &HostPair, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let busy: String = [&hosts.a, &hosts.b]
            .iter()
            .map(|ns| busy_sockets(ns))
            .collect();
        if busy.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "connections still not closed after {limit:?}:\n{busy}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Every finding of a session filtered on `comm` is about `comm`.
fn only_about(trace: &Trace, comm: &str) -> Result<(), String> {
    let others: Vec<String> = trace
        .of_type("finding")
        .filter(|f| !f["process"].is_null() && f["process"]["comm"] != comm)
        .map(|f| format!("{} of {}", f["kind"], f["process"]["comm"]))
        .collect();
    if others.is_empty() {
        Ok(())
    } else {
        Err(format!("a --comm {comm} session reported {others:?}"))
    }
}

/// One run of a workload, compared: the table of what each source says,
/// the sessions that lost events, and what disagreed with the kernel.
#[derive(Default)]
struct Run {
    table: String,
    lost: Vec<String>,
    disagreements: Vec<String>,
}

impl Run {
    fn check_lost(&mut self, session: &str, unseen: u64) {
        if unseen != 0 {
            self.lost.push(format!("{session} ({unseen})"));
        }
    }
}

/// Runs of a test before it gives up finding one where no session lost
/// events. Five: on this VM a lossy-path run misses a state change or a
/// SYN-ACK (hits no BPF program ran for), or a session counts a skipped
/// run, in about one run in three (December 2026). Runs repeat only on
/// measured losses; a comparable run's disagreement fails at once.
const RUNS: usize = 5;

/// Runs `run` (each run in namespaces of its own) until one where no
/// session lost events, and asserts that run's comparisons. A session that
/// lost events (the kernel skips a program's run nested in its own run on
/// that CPU, e.g. a softirq interrupting a stack capture; rare, but this is
/// a busy 2-core machine) says so, and its counts cannot agree with the
/// kernel's: that run is shown and done again, up to `RUNS` times, and
/// the test fails when every run lost events.
fn until_comparable(mut run: impl FnMut() -> Run) {
    for attempt in 1..=RUNS {
        let outcome = run();
        eprintln!("{}", outcome.table);
        if outcome.lost.is_empty() {
            // The disagreements come last: a CI log keeps a long
            // message's head and tail, and the table can run to hundreds
            // of lines.
            assert!(
                outcome.disagreements.is_empty(),
                "run {attempt} of {RUNS}:\n{}\ndisagreements with the kernel: {:#?}",
                outcome.table,
                outcome.disagreements
            );
            return;
        }
        eprintln!(
            "run {attempt} of {RUNS}: events lost by {:?}, so its counts cannot be compared \
             (it found {:#?}); running it again",
            outcome.lost, outcome.disagreements
        );
    }
    panic!("sessions lost events in each of {RUNS} runs (tables above): nothing could be compared");
}

const REDIS_PORT: u16 = 18310;

/// How the sockets connected to `server` ended, as `trace --json` saw
/// them: `OLD->CLOSE` (with the error, if any) and how many. A client's
/// `FIN_WAIT2->CLOSE` or `CLOSING->CLOSE` without an error is its
/// hand-over to a timewait socket.
fn endings(trace: &Trace, server: &str) -> String {
    let mut ends: BTreeMap<String, u64> = BTreeMap::new();
    for r in trace
        .of_type("state")
        .filter(|r| r["remote"] == server && r["new"] == "CLOSE")
    {
        let error = r["error"]
            .as_str()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        *ends
            .entry(format!(
                "{}->CLOSE{error}",
                r["old"].as_str().unwrap_or("?")
            ))
            .or_default() += 1;
    }
    format!("{ends:?}")
}

/// Debian's redis-server, and redis-benchmark opening a new connection for
/// every request (`-k 0`): connects, accepts and `TIME_WAIT` on each side,
/// as nstat and ss count them, against every-event and summary mode, each
/// unfiltered, with `--port`, and with `--comm` (each side's figures from
/// the session filtered on its own program); and the daemon's counters.
#[test]
fn redis_connection_per_request_agrees_with_the_kernel() {
    require_root();
    until_comparable(redis_run);
}

/// One run of [`redis_connection_per_request_agrees_with_the_kernel`].
fn redis_run() -> Run {
    let hosts = HostPair::new("ttredis");
    let cast = Cast::redis(&hosts);
    let port = ["--port", "18310"];
    let server_only = ["--comm", "redis-server"];
    let clients_only = ["--comm", "redis-benchmark"];
    let filters: [&[&str]; 4] = [&[], &port, &server_only, &clients_only];
    let every_event = filters.map(Tracer::start);
    let summary = filters.map(Tracer::start_report_only);
    let daemon_args = [&port[..], &["--refresh", "1s"]].concat();
    let daemon = Daemon::start(&free_loopback_addr(), &daemon_args);

    let redis = Redis::start(&hosts.a, hosts.a_addr, REDIS_PORT);
    // 300 GETs, each on a connection of its own that redis-benchmark
    // closes once answered (so the TIME_WAIT is the client's).
    redis::benchmark(
        &hosts.b,
        hosts.a_addr,
        REDIS_PORT,
        "-c 4 -n 300 -k 0 -t get",
        Duration::from_mins(2),
    );
    settle(&hosts, Duration::from_secs(30));

    let kernel = kernel_figures(&hosts);
    let scrape = daemon.scrape_until(Duration::from_secs(10), |scrape| {
        let f = figures_of_scrape(scrape, &cast);
        f.connects >= kernel.connects && f.accepted >= kernel.accepted
    });
    let modes = [
        ("trace --json", every_event.map(Tracer::stop)),
        ("trace --report-only", summary.map(Tracer::stop)),
    ];
    drop(redis);

    let mut table = Table::default();
    table.row("kernel (nstat, ss)", &kernel);
    let mut run = Run::default();
    for (mode, [all, by_port, server, clients]) in &modes {
        let (server_side, client_side) = (
            figures_of_trace(server, &cast),
            figures_of_trace(clients, &cast),
        );
        let by_comm = Figures {
            connects: client_side.connects,
            refused: client_side.refused,
            time_wait_clients: client_side.time_wait_clients,
            ..server_side
        };
        for (name, figures) in [
            (mode.to_string(), figures_of_trace(all, &cast)),
            (format!("{mode} --port"), figures_of_trace(by_port, &cast)),
            (format!("{mode} --comm"), by_comm),
        ] {
            table.row(&name, &figures);
            if figures != kernel {
                run.disagreements
                    .push(format!("{name} disagrees with the kernel"));
            }
        }
        run.check_lost(mode, all.unseen());
        run.check_lost(&format!("{mode} --port"), by_port.unseen());
        for (trace, comm) in [(server, "redis-server"), (clients, "redis-benchmark")] {
            run.check_lost(&format!("{mode} --comm {comm}"), trace.unseen());
            if let Err(e) = only_about(trace, comm) {
                run.disagreements.push(format!("{mode}: {e}"));
            }
        }
    }
    run.check_lost("daemon", daemon::unseen(&scrape));
    let daemon_figures = figures_of_scrape(&scrape, &cast);
    table.row("daemon --port (metrics)", &daemon_figures);
    let server = format!("{}:{REDIS_PORT}", hosts.a_addr);
    let table = format!(
        "{}clients' sockets ended (trace --json): {}\n",
        table.0,
        endings(&modes[0].1[0], &server)
    );

    // Sanity: the workload did what it says (plus redis-benchmark's own
    // CONFIG GET connection), and the client closed first.
    assert!(kernel.connects > 300, "{table}");
    assert_eq!(kernel.connects, kernel.accepted, "{table}");
    assert_eq!(kernel.refused, 0, "{table}");
    assert!(kernel.time_wait_clients >= 300, "{table}");
    // The daemon's counters hold no per-socket TIME_WAIT model.
    if (
        daemon_figures.connects,
        daemon_figures.refused,
        daemon_figures.accepted,
    ) != (kernel.connects, kernel.refused, kernel.accepted)
    {
        run.disagreements
            .push("the daemon's counters disagree with the kernel".to_owned());
    }
    run.table = table;
    run
}

const LOSSY_PORT: u16 = 18320;

/// Retransmits on each side of a lossy path, as one kernel counts them
/// and as a mode of tcptrace reports them; `None` where that mode does
/// not report the figure.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Retransmits {
    /// The clients' SYN retransmits (`TcpExtTCPSynRetrans` of `b`).
    syn: Option<u64>,
    /// The server's SYN-ACK retransmits (`TcpExtTCPSynRetrans` of `a`).
    syn_ack: Option<u64>,
    /// Data and FIN retransmits of the server (`a`) and the clients (`b`):
    /// `TcpRetransSegs` less `TcpExtTCPSynRetrans`.
    data_server: Option<u64>,
    data_clients: Option<u64>,
}

impl Retransmits {
    const COLUMNS: [&str; 4] = ["SYN", "SYN-ACK", "data srv", "data cli"];

    fn cells(&self) -> [Option<u64>; 4] {
        [self.syn, self.syn_ack, self.data_server, self.data_clients]
    }

    /// Notes each figure this source gives that is not the kernel's, but
    /// for the hits of `tcp_retransmit_skb` the kernel ran no BPF program
    /// for (`skipped`, any port, counted by the witness against the
    /// programs' runs): the columns from that tracepoint (all but SYN-ACK)
    /// may each fall short of the kernel's, by `skipped` at most in all,
    /// and never exceed it.
    fn compare_but_for(
        &self,
        name: &str,
        kernel: &Self,
        skipped: u64,
        disagreements: &mut Vec<String>,
    ) {
        let mut short = 0;
        for ((column, theirs), truth) in Self::COLUMNS.iter().zip(self.cells()).zip(kernel.cells())
        {
            let (Some(theirs), Some(truth)) = (theirs, truth) else {
                continue;
            };
            let tolerated = *column != "SYN-ACK" && theirs < truth;
            if tolerated {
                short += truth - theirs;
            } else if theirs != truth {
                disagreements.push(format!(
                    "{name}: {column} {theirs} where the kernel counts {truth}"
                ));
            }
        }
        if short > skipped {
            disagreements.push(format!(
                "{name}: {short} retransmits short of the kernel's, where it ran no BPF \
                 program for {skipped} hits"
            ));
        }
    }
}

#[derive(Default)]
struct RetransmitTable(String);

impl RetransmitTable {
    fn row(&mut self, name: &str, r: &Retransmits) {
        if self.0.is_empty() {
            let _ = writeln!(
                self.0,
                "{:<34} {:>8} {:>8} {:>9} {:>9}",
                "source", "SYN", "SYN-ACK", "data srv", "data cli"
            );
        }
        let _ = write!(self.0, "{name:<34}");
        for (cell, width) in r.cells().iter().zip([9, 9, 10, 10]) {
            let text = cell.map_or_else(|| "-".to_owned(), |n| n.to_string());
            let _ = write!(self.0, "{text:>width$}");
        }
        self.0.push('\n');
    }
}

/// Makes every skb TCP sends on the hosts' veths one segment, so that a
/// retransmitted skb (what `tcp:tcp_retransmit_skb` reports) is one
/// retransmitted segment (what `TcpRetransSegs` counts). `ethtool -K
/// tso off gso off` does not do it: since Linux 5.14 TCP always builds
/// GSO skbs (`sk_setup_caps` sets `NETIF_F_GSO`) and segments them in
/// software; the device's `gso_max_segs` bounds the segments TCP puts in
/// one skb (`tcp_tso_segs`), also when it retransmits.
fn one_segment_per_skb(hosts: &HostPair) {
    for ns in [&hosts.a, &hosts.b] {
        sh(
            "ip",
            &["-n", ns, "link", "set", "veth0", "gso_max_segs", "1"],
        );
    }
}

/// nftables in `ns` drops `percent`% of the TCP segments `ns` receives, at
/// random.
fn lose(ns: &str, percent: u8) {
    let rule = format!(
        "table inet tcptrace_lossy {{\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority 0;\n\
         \x20   meta l4proto tcp numgen random mod 100 < {percent} drop\n\
         \x20 }}\n\
         }}\n"
    );
    let path = std::env::temp_dir().join(format!("tcptrace-lossy-{ns}.nft"));
    std::fs::write(&path, rule).expect("write the nft rules");
    nft(ns, &["-f", path.to_str().expect("a UTF-8 temp path")]);
    let _ = std::fs::remove_file(path);
}

/// The path heals: the drop rule goes.
fn stop_losing(ns: &str) {
    nft(ns, &["delete", "table", "inet", "tcptrace_lossy"]);
}

/// Retransmit events of a `trace --json` session by the namespace their
/// socket lives in: (handshake, data and FIN). A retransmit in `SYN_SENT`
/// or `SYN_RECV` is a SYN's or a SYN-ACK's, and so is one reported on a
/// listener (a request socket's SYN-ACK, `tcp:tcp_retransmit_synack`,
/// printed as a `syn_ack_retransmit` event in `LISTEN`).
fn retransmit_events(trace: &Trace, netns: u64) -> (u64, u64) {
    let mut handshake = 0;
    let mut data = 0;
    for event in trace.records.iter().filter(|r| {
        r["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("retransmit"))
            && r["netns"].as_u64() == Some(netns)
    }) {
        let state = event["state"].as_str().unwrap_or_default();
        if event["type"] != "retransmit" || state.contains("SYN") || state == "LISTEN" {
            handshake += 1;
        } else {
            data += 1;
        }
    }
    (handshake, data)
}

/// The kernel's retransmits by side, from the counters of the server's
/// namespace (`a`) and the clients' (`b`). `TcpExtTCPSynRetrans` counts a
/// client's SYNs and a server's SYN-ACKs (full sockets' and request
/// sockets'), and `TcpRetransSegs` counts them too.
fn retransmits_of_nstat(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> Retransmits {
    Retransmits {
        syn: Some(b["TcpExtTCPSynRetrans"]),
        syn_ack: Some(a["TcpExtTCPSynRetrans"]),
        data_server: Some(a["TcpRetransSegs"] - a["TcpExtTCPSynRetrans"]),
        data_clients: Some(b["TcpRetransSegs"] - b["TcpExtTCPSynRetrans"]),
    }
}

/// Retransmits by side from every-event mode's retransmit events.
fn retransmits_of_events(trace: &Trace, hosts: &HostPair) -> Retransmits {
    let (syn_ack, data_server) = retransmit_events(trace, hosts.inode(&hosts.a));
    let (syn, data_clients) = retransmit_events(trace, hosts.inode(&hosts.b));
    Retransmits {
        syn: Some(syn),
        syn_ack: Some(syn_ack),
        data_server: Some(data_server),
        data_clients: Some(data_clients),
    }
}

/// Retransmits by side from the tracepoint's hits that `keep` keeps: a
/// server's socket sends from the server's port, a client's to it.
fn retransmits_of_hits(hits: &[Hit], keep: &dyn Fn(&Hit) -> bool) -> Retransmits {
    let count = |side: &dyn Fn(&Hit) -> bool| -> Option<u64> {
        Some(hits.iter().filter(|h| keep(h) && side(h)).count() as u64)
    };
    let handshake = |h: &Hit| h.state.contains("SYN");
    Retransmits {
        syn: count(&|h| handshake(h) && h.dport == LOSSY_PORT),
        // A request socket's SYN-ACK retransmits have a tracepoint of
        // their own (`tcp:tcp_retransmit_synack`).
        syn_ack: None,
        data_server: count(&|h| !handshake(h) && h.sport == LOSSY_PORT),
        data_clients: count(&|h| !handshake(h) && h.dport == LOSSY_PORT),
    }
}

/// Retransmits from the `connect` (clients) and `accept` (server)
/// findings: the handshake's, and the ones after it.
fn retransmits_of_findings(trace: &Trace, cast: &Cast) -> Retransmits {
    let sum = |kind: &str, keep: &dyn Fn(&Value) -> bool, key: &str| -> u64 {
        trace
            .findings(kind)
            .filter(|f| keep(f))
            .map(|f| f[key].as_u64().unwrap_or(0))
            .sum()
    };
    Retransmits {
        syn: Some(sum(
            "connect",
            &|f| cast.is_client(f) && cast.to_server(f),
            "syn_retransmits",
        )),
        syn_ack: Some(sum("accept", &|f| cast.is_server(f), "syn_ack_retransmits")),
        data_server: Some(sum("accept", &|f| cast.is_server(f), "data_retransmits")),
        data_clients: Some(sum(
            "connect",
            &|f| cast.is_client(f) && cast.to_server(f),
            "data_retransmits",
        )),
    }
}

/// The daemon's `tcptrace_retransmits_total{comm, phase}`: the server's
/// SYN-ACKs count under its `syn` phase, as the clients' SYNs do under
/// theirs.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the counters are whole, non-negative and far below 2^53"
)]
fn retransmits_of_scrape(scrape: &str, cast: &Cast) -> Retransmits {
    let count = |comm: &str, phases: &[&str]| -> u64 {
        phases
            .iter()
            .map(|phase| {
                sample(
                    scrape,
                    "tcptrace_retransmits_total",
                    &[("comm", comm), ("phase", phase)],
                )
                .unwrap_or(0.0) as u64
            })
            .sum()
    };
    let clients = |phases: &[&str]| -> u64 { cast.clients.iter().map(|c| count(c, phases)).sum() };
    Retransmits {
        syn: Some(clients(&["syn"])),
        syn_ack: Some(count(cast.server, &["syn"])),
        data_server: Some(count(cast.server, &["data", "fin"])),
        data_clients: Some(clients(&["data", "fin"])),
    }
}

/// Of the data columns, the retransmits in the FIN phase (`FIN_WAIT1`,
/// `CLOSING`, `LAST_ACK`: our FIN, or data queued before it, not yet
/// acknowledged), by side. The kernel's counters do not tell phases
/// apart; the tracepoint's own record of each hit, its state, does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FinPhase {
    server: u64,
    clients: u64,
}

impl FinPhase {
    fn of_hits(hits: &[Hit]) -> Self {
        let fin = |h: &&Hit| h.err == 0 && in_fin_phase(&h.state);
        Self {
            server: hits
                .iter()
                .filter(fin)
                .filter(|h| h.sport == LOSSY_PORT)
                .count() as u64,
            clients: hits
                .iter()
                .filter(fin)
                .filter(|h| h.dport == LOSSY_PORT)
                .count() as u64,
        }
    }

    /// Every-event mode: its retransmit events in those states, by the
    /// namespace of their socket.
    fn of_events(trace: &Trace, hosts: &HostPair) -> Self {
        let count = |netns: u64| {
            trace
                .of_type("retransmit")
                .filter(|r| r["netns"].as_u64() == Some(netns))
                .filter(|r| in_fin_phase(r["state"].as_str().unwrap_or_default()))
                .count() as u64
        };
        Self {
            server: count(hosts.inode(&hosts.a)),
            clients: count(hosts.inode(&hosts.b)),
        }
    }

    /// The daemon (summary mode, whose records unfold retransmits into
    /// phases): `tcptrace_retransmits_total{phase="fin"}`.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "the counters are whole, non-negative and far below 2^53"
    )]
    fn of_scrape(scrape: &str, cast: &Cast) -> Self {
        let fin = |comm: &str| {
            sample(
                scrape,
                "tcptrace_retransmits_total",
                &[("comm", comm), ("phase", "fin")],
            )
            .unwrap_or(0.0) as u64
        };
        Self {
            server: fin(cast.server),
            clients: cast.clients.iter().map(|c| fin(c)).sum(),
        }
    }

    /// Notes where `self` is not `witness`'s, but for a shortfall of at
    /// most `skipped` in all (hits the kernel ran no BPF program for).
    fn compare_but_for(
        &self,
        name: &str,
        witness: &Self,
        skipped: u64,
        disagreements: &mut Vec<String>,
    ) {
        let pairs = [
            (self.server, witness.server),
            (self.clients, witness.clients),
        ];
        let short: u64 = pairs
            .iter()
            .map(|&(ours, truth)| truth.saturating_sub(ours))
            .sum();
        if pairs.iter().any(|&(ours, truth)| ours > truth) || short > skipped {
            disagreements.push(format!(
                "{name}: FIN-phase retransmits {self:?} where the tracepoint's hits say \
                 {witness:?} ({skipped} hits without a BPF run)"
            ));
        }
    }
}

/// Whether a retransmit in `state` (as tcptrace names states) is in the
/// FIN phase.
fn in_fin_phase(state: &str) -> bool {
    matches!(state, "FIN_WAIT1" | "CLOSING" | "LAST_ACK")
}

/// Redis requests over the path while it loses segments, then the path
/// heals and every connection ends.
fn drive_lossy(hosts: &HostPair) {
    for ns in [&hosts.a, &hosts.b] {
        lose(ns, 5);
    }
    // 150 SETs and 150 GETs of 20 kB values, each on a connection of its
    // own: 300 handshakes and about 14 segments each way per request; then
    // 20 SETs and 20 GETs of 1 MB, bursts long enough for a retransmit to
    // find its original still queued in the host (a failed attempt).
    for (requests, value_bytes) in [(150, 20_000), (20, 1_000_000)] {
        redis::benchmark(
            &hosts.b,
            hosts.a_addr,
            LOSSY_PORT,
            &format!("-c 4 -n {requests} -k 0 -d {value_bytes} -t set,get"),
            Duration::from_mins(3),
        );
    }
    for ns in [&hosts.a, &hosts.b] {
        stop_losing(ns);
    }
    // Closing FINs still being retransmitted get through now.
    settle(hosts, Duration::from_mins(1));
}

/// Redis over a path losing 5% of the TCP segments each way (nftables in
/// both namespaces), a new connection per request: 300 requests of 20 kB
/// values, then 40 of 1 MB. Data, FIN, SYN and SYN-ACK retransmits on
/// both sides; tcptrace's against each namespace's `TcpRetransSegs` and
/// `TcpExtTCPSynRetrans`: every-event mode's events and findings, summary
/// mode's findings (`connect`'s `syn_retransmits`, `accept`'s
/// `syn_ack_retransmits`) and the daemon's
/// `tcptrace_retransmits_total{phase}`.
///
/// What is compared: `tcp:tcp_retransmit_skb` reports a retransmitted skb
/// (a client's SYN among them), `TcpRetransSegs` counts segments, SYNs and
/// SYN-ACKs included (a request socket's SYN-ACK has a tracepoint of its
/// own, `tcp:tcp_retransmit_synack`), and `TcpExtTCPSynRetrans` counts the
/// SYNs and SYN-ACKs. With one segment per skb (`one_segment_per_skb`), a
/// side's data and FIN retransmits are its `TcpRetransSegs` less its
/// `TcpExtTCPSynRetrans`; the clients' SYNs and the server's SYN-ACKs are
/// the `TcpExtTCPSynRetrans` of their namespaces.
///
/// Failed attempts, found by experiment on 6.18: the tracepoint also fires,
/// with `err` set, for a retransmit that sent nothing (Linux 6.17 added
/// `err`; before, only segments sent were reported). On this path they
/// happen as soon as bursts are long (the 1 MB values): -16, EBUSY, the
/// original skb still queued in the host (the veth peer's backlog), which
/// `TcpExtTCPSpuriousRtxHostQueues` counts. `TcpRetransSegs` counts none
/// of them: it is bumped only once the segment is handed to
/// `tcp_transmit_skb` (an error from there, `TcpExtTCPRetransFail`, still
/// counts: TCP did retransmit). A retransmit that sent nothing is no
/// retransmit, so tcptrace must agree with `TcpRetransSegs`. A tracefs
/// instance of the test's own records every hit of the tracepoint,
/// independently of BPF: the table shows the hits on the port that sent a
/// segment (equal to the kernel's count), all hits on the port, and any
/// hit no tcptrace event stands for.
///
/// A run where the kernel ran no BPF program for some hits (see
/// `tracefs::Hits::runs_missed`) is shown and done again, as one where a session
/// lost events. A failure prints the tracefs lines of the hits no event
/// stands for (CPU, context flags, monotonic time) next to the sessions'
/// events of that connection (`ktime_ns`, the same clock).
#[test]
fn retransmits_on_a_lossy_path_agree_with_the_kernel() {
    require_root();
    until_comparable(lossy_run);
}

/// One run of [`retransmits_on_a_lossy_path_agree_with_the_kernel`].
fn lossy_run() -> Run {
    let hosts = HostPair::new("ttlossy");
    one_segment_per_skb(&hosts);
    let _stats = BpfStats::enable();
    let cast = Cast::redis(&hosts);
    let port = ["--port", "18320"];
    let witness = tracefs::Retransmits::start(LOSSY_PORT);
    let every_event = Tracer::start(&port);
    let summary = Tracer::start_report_only(&port);
    let daemon_args = [&port[..], &["--refresh", "1s"]].concat();
    let daemon = Daemon::start(&free_loopback_addr(), &daemon_args);

    let redis = Redis::start(&hosts.a, hosts.a_addr, LOSSY_PORT);
    drive_lossy(&hosts);

    let (kernel_a, kernel_b) = (nstat(&hosts.a), nstat(&hosts.b));
    let kernel = retransmits_of_nstat(&kernel_a, &kernel_b);
    let witnessed = witness.hits();
    let hits = &witnessed.on_port;
    let sent = retransmits_of_hits(hits, &|h| h.err == 0);
    let attempts = retransmits_of_hits(hits, &|_| true);
    let opened = |scrape: &str| figures_of_scrape(scrape, &cast);
    let scrape = daemon.scrape_until(Duration::from_secs(10), |scrape| {
        let r = retransmits_of_scrape(scrape, &cast);
        // /metrics is rendered at most once a second: wait for every
        // figure, the last SYN-ACK retransmit's too.
        opened(scrape).accepted >= kernel_a["TcpPassiveOpens"]
            && r.syn >= kernel.syn
            && r.syn_ack >= kernel.syn_ack
            && r.data_server >= kernel.data_server
            && r.data_clients >= kernel.data_clients
    });
    let (every_event, summary) = (every_event.stop(), summary.stop());
    drop(redis);

    let (rows, fin_rows) = what_each_mode_counted(&every_event, &summary, &scrape, &hosts, &cast);
    let mut table = RetransmitTable::default();
    table.row("kernel (nstat)", &kernel);
    table.row("tracepoint, sent (tracefs)", &sent);
    table.row("tracepoint, every hit (tracefs)", &attempts);
    for (name, r) in &rows {
        table.row(name, r);
    }
    let daemon_unseen = daemon::unseen(&scrape);
    let (failed, errs) = witnessed.failed();
    let table = format!(
        "{}failed attempts (err != 0) seen by tracefs: {failed} (errors {errs:?}); \
         TcpExtTCPSpuriousRtxHostQueues a {} b {}, TcpExtTCPRetransFail a {} b {}\n\
         summary mode's session-wide, unfiltered count: {}\n\
         events lost or skipped: trace --json {}, trace --report-only {}, daemon {}\n\
         trace --json counts: {}\n{}",
        table.0,
        kernel_a["TcpExtTCPSpuriousRtxHostQueues"],
        kernel_b["TcpExtTCPSpuriousRtxHostQueues"],
        kernel_a["TcpExtTCPRetransFail"],
        kernel_b["TcpExtTCPRetransFail"],
        summary.summary()["summary"]["retransmits"],
        every_event.unseen(),
        summary.unseen(),
        daemon_unseen,
        session_counts(&every_event),
        unmatched(hits, &every_event),
    );

    // Sanity: the path lost segments of every kind on both sides.
    for (what, n) in Retransmits::COLUMNS.iter().zip(kernel.cells()) {
        assert!(
            n > Some(0),
            "no {what} retransmits in the kernel's count:\n{table}"
        );
    }
    let mut run = Run::default();
    // Hits the kernel ran no BPF program for are measured (the witness's
    // every-port hits against the programs' runs): each session may miss
    // those, and no more. A session's own losses make the run
    // incomparable.
    let skipped = witnessed.runs_missed(&scrape);
    let (state_missed, syn_ack_missed) = handshake_and_state_hits_missed(&witnessed, &every_event);
    run.check_lost(
        "the port's state changes and SYN-ACKs no program ran for",
        state_missed + syn_ack_missed,
    );
    run.check_lost("trace --json --port", every_event.unseen());
    run.check_lost("trace --report-only --port", summary.unseen());
    run.check_lost("daemon --port", daemon_unseen);
    for (name, r) in &rows {
        r.compare_but_for(name, &kernel, skipped, &mut run.disagreements);
    }
    let fin_witness = FinPhase::of_hits(hits);
    let mut fin_table = format!(
        "FIN phase of the data columns (srv, cli): tracepoint, sent (tracefs) {} {}",
        fin_witness.server, fin_witness.clients
    );
    for (name, fin) in &fin_rows {
        let _ = write!(fin_table, "; {name} {} {}", fin.server, fin.clients);
        fin.compare_but_for(name, &fin_witness, skipped, &mut run.disagreements);
    }
    let table = format!(
        "{table}{fin_table}\nhits the kernel ran no BPF program for: tcp_retransmit_skb {skipped}, \
         inet_sock_set_state on the port {state_missed} of {}, tcp_retransmit_synack on the port \
         {syn_ack_missed} of {}\n",
        witnessed.state_changes_on_port,
        witnessed.syn_acks_on_port,
    );
    for (name, trace) in [
        ("trace --json --port", &every_event),
        ("trace --report-only --port", &summary),
    ] {
        check_replaced(name, trace, skipped, &mut run.disagreements);
    }
    run.table = table;
    run
}

/// Hits on the port the kernel ran no program for, of the state-change
/// and SYN-ACK tracepoints: the every-event session (which lost nothing,
/// or the run is incomparable anyway) prints one event per hit, and every
/// session misses the same hits. Such a miss can cost a summary session a
/// whole life, or data retransmits counted in the phase the socket was
/// last seen in (a missed ESTABLISHED): a run with any is not comparable.
fn handshake_and_state_hits_missed(witnessed: &tracefs::Hits, every_event: &Trace) -> (u64, u64) {
    let printed = |kind| every_event.of_type(kind).count() as u64;
    (
        witnessed
            .state_changes_on_port
            .saturating_sub(printed("state")),
        witnessed
            .syn_acks_on_port
            .saturating_sub(printed("syn_ack_retransmit")),
    )
}

/// `N` modes' figures, each with the mode's name.
type ModeRows<T, const N: usize> = [(&'static str, T); N];

/// The retransmits each mode of the lossy run counted: as the kernel's
/// counters split them, and the FIN phase of their data columns.
fn what_each_mode_counted(
    every_event: &Trace,
    summary: &Trace,
    scrape: &str,
    hosts: &HostPair,
    cast: &Cast,
) -> (ModeRows<Retransmits, 4>, ModeRows<FinPhase, 2>) {
    let rows = [
        (
            "trace --json --port (events)",
            retransmits_of_events(every_event, hosts),
        ),
        (
            "trace --json --port (findings)",
            retransmits_of_findings(every_event, cast),
        ),
        (
            "trace --report-only --port",
            retransmits_of_findings(summary, cast),
        ),
        (
            "daemon --port (metrics)",
            retransmits_of_scrape(scrape, cast),
        ),
    ];
    let fin_rows = [
        (
            "trace --json --port (events)",
            FinPhase::of_events(every_event, hosts),
        ),
        ("daemon --port (metrics)", FinPhase::of_scrape(scrape, cast)),
    ];
    (rows, fin_rows)
}

/// Summary mode sends a socket's life before its first FIN retransmit:
/// no record is met mid-life and replaced by its own birth. But where the
/// kernel skipped BPF runs (a softirq nested in one), it may have skipped
/// a CLOSE too, whose record the next socket at that address then
/// replaces (seen once, with one skipped hit): at most as many as the
/// skipped hits measured.
fn check_replaced(name: &str, trace: &Trace, skipped: u64, disagreements: &mut Vec<String>) {
    let replaced = trace.summary()["summary"]["records_replaced"].as_u64();
    if replaced.is_none_or(|replaced| replaced > skipped) {
        disagreements.push(format!(
            "{name}: records_replaced {replaced:?}, more than the {skipped} runs the kernel \
             skipped"
        ));
    }
}

/// A session's own counts of what it read, decoded and filtered, and its
/// kernel programs' counters, for a failure message.
fn session_counts(trace: &Trace) -> String {
    let mut summary = trace.summary()["summary"].clone();
    if let Some(object) = summary.as_object_mut() {
        object.remove("stacks");
    }
    summary.to_string()
}

/// The tracepoint's hits (tracefs) that sent a segment but that
/// `trace --json` printed no retransmit event for, the failed attempts it
/// printed as retransmits, and its events no hit stands for, by ports and
/// state; empty when every event pairs with a hit that sent a segment.
fn unmatched(hits: &[Hit], trace: &Trace) -> String {
    type Key = (u16, u16, String);
    let port = |endpoint: &Value| -> u16 {
        endpoint
            .as_str()
            .and_then(|e| e.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0)
    };
    let keys = |sent: bool| -> Vec<Key> {
        hits.iter()
            .filter(|h| (h.err == 0) == sent)
            .map(|h| (h.sport, h.dport, h.state.clone()))
            .collect()
    };
    let (mut sent, mut failed) = (keys(true), keys(false));
    let mut failed_printed = 0;
    let mut unexplained = Vec::new();
    for event in trace.of_type("retransmit") {
        let key = (
            port(&event["local"]),
            port(&event["remote"]),
            event["state"].as_str().unwrap_or("?").to_owned(),
        );
        if let Some(i) = sent.iter().position(|k| *k == key) {
            sent.swap_remove(i);
        } else if let Some(i) = failed.iter().position(|k| *k == key) {
            failed.swap_remove(i);
            failed_printed += 1;
        } else {
            unexplained.push(key);
        }
    }
    let mut text = String::new();
    if !sent.is_empty() {
        sent.sort();
        let _ = writeln!(
            text,
            "segments retransmitted (tracepoint, err 0) without a tcptrace event \
             (sport, dport, state): {sent:?}"
        );
        // What tcptrace did see of those sockets, to tell a lost event
        // from a socket it never followed.
        let mut shown = Vec::new();
        for (sport, dport, _) in &sent {
            if shown.contains(&(*sport, *dport)) || shown.len() == 3 {
                continue;
            }
            shown.push((*sport, *dport));
            let _ = writeln!(text, "  tcptrace's records of {sport} -> {dport}:");
            for r in trace.records.iter().filter(|r| {
                let (l, p) = (port(&r["local"]), port(&r["remote"]));
                (l, p) == (*sport, *dport) || (l, p) == (*dport, *sport)
            }) {
                let _ = writeln!(
                    text,
                    "    {} {}->{} state {} netns {} sock {} ktime_ns {}",
                    r["type"], r["old"], r["new"], r["state"], r["netns"], r["sock"], r["ktime_ns"]
                );
            }
            // The tracepoint's own lines (monotonic seconds, the clock of
            // `ktime_ns`), to place the hits no event stands for.
            let _ = writeln!(text, "  the tracepoint's hits on {sport} -> {dport}:");
            for hit in hits
                .iter()
                .filter(|h| (h.sport, h.dport) == (*sport, *dport))
                .take(400)
            {
                let _ = writeln!(text, "    {}", hit.line);
            }
        }
    }
    if failed_printed > 0 {
        let _ = writeln!(
            text,
            "failed attempts (err != 0) tcptrace printed as retransmits: {failed_printed}"
        );
    }
    if !unexplained.is_empty() {
        let _ = writeln!(
            text,
            "tcptrace retransmit events without a tracepoint hit: {unexplained:?}"
        );
    }
    text
}

const LOOP_PORT: u16 = 18330;

/// The gaps between the connects to `peer` a `trace --json` session saw
/// (ms), for a failure message: the report's back-off test compares the
/// median gap of the second half with the first half's.
fn connect_gaps(trace: &Trace, peer: &str) -> String {
    let starts: Vec<u64> = trace
        .of_type("state")
        .filter(|r| r["remote"] == peer && r["old"] == "CLOSE" && r["new"] == "SYN_SENT")
        .filter_map(|r| r["ktime_ns"].as_u64())
        .collect();
    let gaps: Vec<String> = starts
        .windows(2)
        .map(|w| {
            let us = w[1].saturating_sub(w[0]) / 1_000;
            format!("{}.{}", us / 1_000, us % 1_000 / 100)
        })
        .collect();
    if gaps.is_empty() {
        "(no events: a summary session)".to_owned()
    } else {
        gaps.join(" ")
    }
}

/// A shell loop of 20 curls, each its own process, to a port nobody
/// listens on: 20 connects refused (as `TcpAttemptFails` counts), which
/// every mode must report as ONE reconnect loop of 20 attempts by 20
/// processes of one program, not 20 findings of one attempt each.
#[test]
fn a_shell_loop_of_refused_curls_is_one_reconnect_loop() {
    require_root();
    until_comparable(loop_run);
}

/// One run of [`a_shell_loop_of_refused_curls_is_one_reconnect_loop`].
fn loop_run() -> Run {
    let hosts = HostPair::new("ttloop");
    let port = ["--port", "18330"];
    let sessions = [
        ("trace --json", Tracer::start(&[])),
        ("trace --json --port", Tracer::start(&port)),
        ("trace --report-only", Tracer::start_report_only(&[])),
        (
            "trace --report-only --port",
            Tracer::start_report_only(&port),
        ),
    ];
    // A steady pace, 100 ms between attempts: the gaps of a tight loop
    // are one fork and exec of curl each (about 10 ms), and a machine
    // busier in the second half of the loop doubles them, which the
    // report takes for a growing back-off (no loop then).
    shell_in(
        &hosts.b,
        Duration::from_mins(1),
        &format!(
            "i=0; while [ $i -lt 20 ]; do \
             curl -sS -o /dev/null --max-time 5 http://{}:{LOOP_PORT}/ 2>/dev/null && exit 1; \
             sleep 0.1; i=$((i+1)); done; exit 0",
            hosts.a_addr
        ),
    );
    settle(&hosts, Duration::from_secs(10));
    let kernel_b = nstat(&hosts.b);
    let sessions = sessions.map(|(name, tracer)| (name, tracer.stop()));

    let peer = format!("{}:{LOOP_PORT}", hosts.a_addr);
    let mut table = format!(
        "{:<28} {:>8} {:>8} {:>8} {:>8}\n{:<28} {:>8} {:>8} {:>8} {:>8}\n",
        "source",
        "loops",
        "attempts",
        "failures",
        "pids",
        "kernel (nstat)",
        1,
        kernel_b["TcpActiveOpens"],
        kernel_b["TcpAttemptFails"],
        20
    );
    let mut run = Run::default();
    for (name, trace) in &sessions {
        let loops: Vec<&Value> = trace
            .findings("reconnect_loop")
            .filter(|f| f["peer"] == peer.as_str())
            .collect();
        let field = |key: &str| -> Vec<u64> {
            loops.iter().map(|f| f[key].as_u64().unwrap_or(0)).collect()
        };
        let _ = writeln!(
            table,
            "{name:<28} {:>8} {:>8} {:>8} {:>8}",
            loops.len(),
            format!("{:?}", field("attempts")),
            format!("{:?}", field("failures")),
            format!("{:?}", field("pids")),
        );
        run.check_lost(name, trace.unseen());
        let one_loop = loops.len() == 1
            && field("attempts") == [20]
            && field("failures") == [20]
            && field("pids") == [20]
            && loops[0]["process"]["comm"] == "curl"
            && loops[0]["backoff"] == "none";
        if !one_loop {
            run.disagreements.push(format!(
                "{name}: not one reconnect loop of 20 refused attempts by 20 curls: {loops:#?}; \
                 connects: {:?}; gaps between connects: {}",
                trace
                    .findings("connect")
                    .filter(|f| f["peer"] == peer.as_str())
                    .map(|f| (f["attempts"].clone(), f["failures"].clone()))
                    .collect::<Vec<_>>(),
                connect_gaps(trace, &peer)
            ));
        }
    }
    assert_eq!(
        (kernel_b["TcpActiveOpens"], kernel_b["TcpAttemptFails"]),
        (20, 20),
        "20 connects, all refused:\n{table}"
    );
    run.table = table;
    run
}
