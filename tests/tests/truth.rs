//! tcptrace's numbers against the kernel's own, on real programs: Debian's
//! nginx served to ab (with and without keep-alive) and a curl loop, over
//! IPv4 and IPv6, plus connects refused by a closed port, all inside two
//! network namespaces the test creates. The kernel's counters (`nstat`)
//! and socket states (`ss`) of those namespaces are the truth; every mode
//! of tcptrace must agree with them: every-event (`trace --json`), summary
//! (`trace --report-only`, one kernel record per socket) and the daemon,
//! each with and without a `--port` filter, all tracing the same run.
//!
//! The table of every figure is printed (`--nocapture`), so a failure says
//! which mode disagrees about what.

use std::{fmt::Write as _, thread, time::Duration};

use serde_json::Value;
use tcptrace_tests::{
    daemon::{free_loopback_addr, sample, Daemon},
    kernel_counts::{nstat, ss_count},
    netns::{sh, HostPair},
    programs::{shell_in, Nginx},
    require_root,
    trace::Trace,
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

#[test]
fn every_mode_agrees_with_the_kernels_counters() {
    require_root();
    let hosts = HostPair::new("ttruth");
    add_ipv6(&hosts);
    let ports = ["--port", "18300", "--port", "18301"];
    let every_event = Tracer::start(&[]);
    let every_event_port = Tracer::start(&ports);
    let summary = Tracer::start_report_only(&[]);
    let summary_port = Tracer::start_report_only(&ports);
    let daemon_args = [&ports[..], &["--refresh", "1s"]].concat();
    let daemon = Daemon::start(&free_loopback_addr(), &daemon_args);

    let nginx = [
        Nginx::start(&hosts.a, &format!("{}:{PORT}", hosts.a_addr)),
        Nginx::start(&hosts.a, &format!("[{V6_A}]:{PORT}")),
    ];
    drive(&hosts);
    // The last FINs and ACKs cross the veth.
    thread::sleep(Duration::from_millis(500));

    let kernel_a = nstat(&hosts.a);
    let kernel_b = nstat(&hosts.b);
    let kernel = Figures {
        connects: kernel_b["TcpActiveOpens"],
        refused: kernel_b["TcpAttemptFails"],
        accepted: kernel_a["TcpPassiveOpens"],
        served: kernel_a["TcpPassiveOpens"],
        time_wait_server: ss_count(&hosts.a, "time-wait"),
        time_wait_clients: ss_count(&hosts.b, "time-wait"),
    };
    let listening = ss_count(&hosts.a, "listening");
    let nginx_listeners = |scrape: &str| {
        sample(
            scrape,
            "tcptrace_sockets",
            &[("comm", "nginx"), ("state", "LISTEN")],
        )
    };
    let scrape = daemon.scrape_until(Duration::from_secs(5), |scrape| {
        figures_of_scrape(scrape).accepted >= kernel.accepted && nginx_listeners(scrape).is_some()
    });
    let modes = [
        ("trace --json", every_event.stop()),
        ("trace --json --port", every_event_port.stop()),
        ("trace --report-only", summary.stop()),
        ("trace --report-only --port", summary_port.stop()),
    ];
    drop(nginx);

    let mut table = Table::default();
    table.row("kernel (nstat, ss)", &kernel);
    let results: Vec<_> = modes
        .iter()
        .map(|(name, trace)| {
            let figures = figures_of_trace(trace, hosts.a_addr);
            table.row(name, &figures);
            (name, figures, unseen(trace))
        })
        .collect();
    let daemon_figures = figures_of_scrape(&scrape);
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

/// Events the kernel could not deliver to a session (a full ring buffer
/// or skipped nested runs), as the session reports them.
fn unseen(trace: &Trace) -> u64 {
    let kernel = &trace.summary()["summary"]["kernel"];
    ["events_lost", "runs_skipped"]
        .iter()
        .map(|key| kernel[key].as_u64().unwrap_or(0))
        .sum()
}

fn figures_of_trace(trace: &Trace, server_v4: &str) -> Figures {
    let sum = |kind: &str, keep: &dyn Fn(&Value) -> bool, key: &dyn Fn(&Value) -> u64| -> u64 {
        trace.findings(kind).filter(|f| keep(f)).map(key).sum()
    };
    let number = |f: &Value, key: &str| f[key].as_u64().unwrap_or(0);
    let to_server = |f: &Value| {
        let peer = f["peer"].as_str().unwrap_or_default();
        peer.starts_with(&format!("{server_v4}:")) || peer.starts_with(&format!("[{V6_A}]:"))
    };
    let nginx = |f: &Value| f["process"]["comm"] == "nginx";
    let client = |f: &Value| ["ab", "curl"].contains(&f["process"]["comm"].as_str().unwrap_or(""));
    Figures {
        connects: sum("connect", &|f| to_server(f) && client(f), &|f| {
            number(f, "attempts")
        }),
        refused: sum("connect", &|f| to_server(f) && client(f), &|f| {
            f["failures"]["refused"].as_u64().unwrap_or(0)
        }),
        accepted: sum("accept", &nginx, &|f| number(f, "established")),
        served: sum("churn", &|f| nginx(f) && f["role"] == "passive", &|f| {
            number(f, "connections")
        }),
        time_wait_server: sum("churn", &nginx, &|f| number(f, "time_wait_now")),
        time_wait_clients: sum("churn", &|f| to_server(f) && client(f), &|f| {
            number(f, "time_wait_now")
        }),
    }
}

/// The daemon's counters for the test's programs (its metrics are
/// host-wide: the process names single out this run's programs).
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the counters are whole, non-negative and far below 2^53"
)]
fn figures_of_scrape(scrape: &str) -> Figures {
    let count =
        |name: &str, want: &[(&str, &str)]| sample(scrape, name, want).unwrap_or(0.0) as u64;
    let clients = |name: &str, want: &[(&str, &str)]| {
        ["ab", "curl"]
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
            &[("comm", "nginx"), ("role", "passive")],
        ),
        ..Figures::default()
    }
}
