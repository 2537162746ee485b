//! `tcptrace daemon` on this machine's real kernel: the scenario workloads
//! show up in /metrics, promtool accepts the scrape and the alert rules, a
//! real Prometheus scrapes it, and SIGTERM leaves no BPF program behind.
#![expect(
    clippy::float_cmp,
    reason = "the samples compared are exact small integer counts"
)]
#![expect(
    clippy::too_many_lines,
    reason = "a real-kernel scenario reads top to bottom as one story"
)]

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use tcptrace_common::{SockInfo, Task, CLOSED};
use tcptrace_tests::{
    bpf_stats::BpfStats,
    daemon::{
        bpf_map_entries, bpf_map_of, daemon_program_count, free_loopback_addr, http_get,
        http_request, programs_of, sample, unseen, Daemon, Prometheus,
    },
    require_root, Workload,
};

const WORKLOAD: &[(&str, &str)] = &[("comm", "tt-workload")];

fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    WORKLOAD.iter().chain(extra).copied().collect()
}

fn promtool(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed: `cargo xtask test` installs it");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

/// Runs before `metrics_show_churn_leaks_and_failures_of_the_workloads`
/// gives up finding one the daemon saw whole: the kernel skips a state
/// program's run when a softirq fires the tracepoint inside a run of it on
/// the same CPU (rare, counted and exported, but that run's counts cannot
/// be compared).
const WHOLE_RUNS: usize = 3;

/// The workloads of the metrics test under a daemon of their own: the
/// daemon, its scrape once their figures show (or the wait ends), and the
/// leaking server, which holds its sockets in `CLOSE_WAIT` while it lives.
fn churn_leaks_and_failures() -> (Daemon, String, Workload) {
    let daemon = Daemon::start(
        &free_loopback_addr(),
        &["--refresh", "1s", "--comm", "tt-workload"],
    );

    let mut server = Workload::start(&["server", "127.0.0.1:0", "5"]);
    let port = server.expect_line("port ");
    Workload::start(&["client", &format!("127.0.0.1:{port}"), "5"]).wait_success();
    server.wait_success();
    let mut leak = Workload::start(&["leak", "127.0.0.1:0", "2"]);
    let leak_port = leak.expect_line("port ");
    Workload::start(&["client", &format!("127.0.0.1:{leak_port}"), "2"]).wait_success();
    leak.expect_line("leaking");
    // Port 1 on loopback: nobody listens, every connect is refused.
    Workload::start(&["refused", "127.0.0.1:1", "3"]).wait_success();

    // Summary mode reports a socket's transitions, its birth included, when
    // it closes (or enters LISTEN): the 2 leaked sockets, alive in
    // CLOSE_WAIT, are counted in tcptrace_sockets (from the dump) but not
    // yet as opened nor as having entered CLOSE_WAIT. The leak's clients close
    // first; when the ACK of their FIN meets the socket still locked by
    // close() (often, on loopback), the kernel keeps it in FIN_WAIT2 until
    // tcp_fin_timeout (60 s) rather than handing it to TIME_WAIT at once:
    // their connects are counted then (1 run in 4 here).
    let scrape = daemon.scrape_until(Duration::from_secs(75), |s| {
        sample(s, "tcptrace_sockets", &with(&[("state", "CLOSE_WAIT")])) == Some(2.0)
            && sample(
                s,
                "tcptrace_connect_failures_total",
                &with(&[("cause", "refused")]),
            ) == Some(3.0)
            && sample(
                s,
                "tcptrace_connections_opened_total",
                &with(&[("role", "active")]),
            ) == Some(10.0)
    });
    (daemon, scrape, leak)
}

#[test]
fn metrics_show_churn_leaks_and_failures_of_the_workloads() {
    require_root();
    let (daemon, scrape, leak) = (1..=WHOLE_RUNS)
        .map(|run| (run, churn_leaks_and_failures()))
        .find(|(run, (_, scrape, _))| {
            let unseen = unseen(scrape);
            if unseen > 0 {
                eprintln!(
                    "run {run} of {WHOLE_RUNS}: the daemon missed {unseen} events (counted), \
                     so its counts cannot be compared; running it again"
                );
            }
            unseen == 0
        })
        .map_or_else(
            || panic!("the daemon missed events in each of {WHOLE_RUNS} runs"),
            |(_, outcome)| outcome,
        );
    let get = |name: &str, labels: &[(&str, &str)]| {
        sample(&scrape, name, &with(labels))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{scrape}"))
    };
    assert_eq!(
        get("tcptrace_sockets", &[("state", "CLOSE_WAIT")]),
        2.0,
        "the leaking server's sockets"
    );
    assert!(get("tcptrace_close_wait_oldest_seconds", &[]) > 0.0);
    assert_eq!(
        get("tcptrace_connections_opened_total", &[("role", "active")]),
        10.0,
        "5 + 2 + 3 connects in\n{scrape}"
    );
    assert_eq!(
        get("tcptrace_connections_opened_total", &[("role", "passive")]),
        5.0,
        "5 churned; the 2 leaked sockets live on"
    );
    assert_eq!(
        get("tcptrace_connect_failures_total", &[("cause", "refused")]),
        3.0
    );
    // 5 clients of the closing server hold TIME_WAIT; the 2 clients of the
    // leaking server hold timewait sockets in FIN_WAIT2 (no FIN came back).
    assert_eq!(
        get("tcptrace_time_wait_sockets", &[]),
        7.0,
        "timewait sockets left by active closes"
    );
    assert_eq!(
        get(
            "tcptrace_connections_closed_total",
            &[("closed_first", "local")]
        ),
        7.0
    );
    assert_eq!(
        get(
            "tcptrace_state_transitions_total",
            &[("from", "ESTABLISHED"), ("to", "CLOSE_WAIT")]
        ),
        5.0,
        "the 5 clients of the closing server; the 2 leaked sockets live on"
    );
    assert_eq!(
        get("tcptrace_connection_lifetime_seconds_count", &[]),
        15.0,
        "5 + 5 churned, 2 clients of the leak, 3 refused (the 2 leaked sockets live on)"
    );
    assert_eq!(
        sample(&scrape, "tcptrace_events_lost_total", &[]),
        Some(0.0)
    );
    assert!(
        sample(
            &scrape,
            "tcptrace_kernel_sockets",
            &[("state", "TIME_WAIT")]
        )
        .unwrap_or(0.0)
            >= 5.0
    );
    promtool(&["check", "metrics"], Some(&scrape));
    // The daemon's own resources, under every exporter's names; compared
    // with what the kernel says of the process.
    let rss = sample(&scrape, "process_resident_memory_bytes", &[]).unwrap_or(0.0);
    let kernel_rss_kib: f64 = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid()))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    assert!(
        (rss / 1024.0 - kernel_rss_kib).abs() < kernel_rss_kib / 4.0,
        "process_resident_memory_bytes {rss} near VmRSS {kernel_rss_kib} kB"
    );
    assert_eq!(
        sample(&scrape, "tcptrace_meeting_thread_info", &[]),
        Some(1.0),
        "the meeting thread's scheduling is exported (one series)"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_virtual_memory_bytes",
    ] {
        assert!(
            sample(&scrape, name, &[]).is_some_and(|v| v > 0.0),
            "{name} in the scrape"
        );
    }

    let (status, health) = http_get(&daemon.listen, "/healthz", &[]).expect("healthz");
    assert_eq!(status, 200);
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    // Every way of missing events is reported, the kernel's skipped runs too.
    let health: serde_json::Value = serde_json::from_str(&health).expect("healthz is JSON");
    for key in ["events_lost", "kernel_runs_skipped", "decode_errors"] {
        assert!(health[key].is_u64(), "healthz has {key}: {health}");
    }
    assert!(
        scrape.contains("tcptrace_kernel_runs_skipped_total "),
        "the skipped runs are exported"
    );
    let (status, openmetrics) = http_get(
        &daemon.listen,
        "/metrics",
        &["Accept: application/openmetrics-text; version=1.0.0"],
    )
    .expect("om");
    assert_eq!(status, 200);
    assert!(
        openmetrics.ends_with("# EOF\n"),
        "OpenMetrics when asked for it"
    );
    assert_eq!(
        http_request(&daemon.listen, "POST", "/metrics", &[]).map(|r| r.0),
        Some(405),
        "read-only"
    );
    assert_eq!(
        http_get(&daemon.listen, "/admin", &[]).map(|r| r.0),
        Some(404)
    );
    let (status, landing) = http_get(&daemon.listen, "/", &[]).expect("landing page");
    assert_eq!(status, 200);
    assert!(
        landing.contains("href=\"/metrics\"") && landing.contains("href=\"/healthz\""),
        "{landing}"
    );
    drop(leak);
}

/// The daemon's costs as its own metrics: each kernel program's runs and
/// run time agree with what bpftool reads from the kernel for the same
/// programs (read after the scrape, so at least as large), and each ring
/// buffer has its size and a fill histogram.
#[test]
fn tracer_costs_agree_with_bpftool() {
    require_root();
    let _stats = BpfStats::enable();
    let daemon = Daemon::start(&free_loopback_addr(), &["--refresh", "1s"]);
    let mut server = Workload::start(&["server", "127.0.0.1:0", "50"]);
    let port = server.expect_line("port ");
    Workload::start(&["client", &format!("127.0.0.1:{port}"), "50"]).wait_success();
    server.wait_success();
    let scrape = daemon.scrape_until(Duration::from_secs(20), |s| {
        sample(s, "tcptrace_bpf_program_runs_total", &[]).is_some_and(|runs| runs >= 100.0)
    });
    assert_eq!(
        sample(&scrape, "tcptrace_bpf_stats_enabled", &[]),
        Some(1.0)
    );
    let out = Command::new("bpftool")
        .args(["--json", "prog", "show"])
        .output()
        .expect("bpftool");
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    let ours = programs_of(daemon.pid());
    let mut compared = 0;
    let mut kinds = Vec::new();
    for prog in progs.as_array().expect("array") {
        if !prog["id"].as_u64().is_some_and(|id| ours.contains(&id)) {
            continue;
        }
        let name = prog["name"].as_str().expect("name");
        kinds.push((name, prog["type"].as_str().unwrap_or("?")));
        let program = [("program", name)];
        let runs = sample(&scrape, "tcptrace_bpf_program_runs_total", &program)
            .unwrap_or_else(|| panic!("no runs of {name} in\n{scrape}"));
        let seconds = sample(
            &scrape,
            "tcptrace_bpf_program_run_time_seconds_total",
            &program,
        )
        .expect("run time");
        let kernel_runs = prog["run_cnt"].as_f64().unwrap_or(0.0);
        let kernel_ns = prog["run_time_ns"].as_f64().unwrap_or(0.0);
        // Never more than the kernel's count, read later. The state
        // program ran for every connection of the workload, so it shows
        // runs; a rare program (a retransmit anywhere on the host) may
        // run for the first time between the scrape and bpftool's read
        // (a CI run saw 0 scraped, 1 read).
        assert!(
            runs <= kernel_runs && (runs > 0.0 || !name.starts_with("tcptrace_state_summary")),
            "{name}: {runs} runs scraped, {kernel_runs} by bpftool later"
        );
        assert!(
            seconds * 1e9 <= kernel_ns + 1.0,
            "{name}: {seconds} s scraped, {kernel_ns} ns"
        );
        compared += 1;
    }
    assert_eq!(
        compared,
        ours.len(),
        "every program of the daemon has its series"
    );
    // This kernel takes the typed tracepoint (plain loads of the socket),
    // not the probe-read fallback.
    assert!(
        kinds.contains(&("tcptrace_state_summary", "tracing"))
            && !kinds
                .iter()
                .any(|(name, _)| *name == "tcptrace_state_summary_raw"),
        "state-change program and type: {kinds:?}"
    );
    assert_eq!(
        sample(
            &scrape,
            "tcptrace_ring_buffer_size_bytes",
            &[("ring", "events")]
        ),
        Some(4.0 * 1024.0 * 1024.0),
        "the daemon's 4 MiB event ring"
    );
    for ring in ["events", "stacks"] {
        let drains = sample(
            &scrape,
            "tcptrace_ring_buffer_fill_ratio_count",
            &[("ring", ring)],
        );
        assert!(
            drains.is_some_and(|n| n > 0.0),
            "{ring}: fill observed at each drain"
        );
    }
}

/// Every BPF program loaded in the kernel now.
fn all_program_ids() -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["--json", "prog", "show"])
        .output()
        .expect("bpftool");
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    progs
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

#[test]
fn sigterm_detaches_every_program_within_a_second() {
    require_root();
    let mut daemon = Daemon::start(&free_loopback_addr(), &[]);
    let ours = programs_of(daemon.pid());
    // No syscall tracepoint in the daemon.
    assert_eq!(
        ours.len(),
        daemon_program_count(),
        "the daemon's tracepoint programs: {ours:?}"
    );
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(i32::try_from(daemon.pid()).expect("pid"), libc::SIGTERM) };
    let asked = Instant::now();
    let status = loop {
        if let Some(status) = daemon.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "daemon still running 5 s after SIGTERM"
        );
        thread::sleep(Duration::from_millis(10));
    };
    let exited = asked.elapsed();
    assert!(status.success(), "daemon exited with {status}");
    assert!(exited < Duration::from_secs(1), "SIGTERM took {exited:?}");
    // Raw tracepoint programs are freed after an RCU grace period once
    // their links close with the process: allow the rest of the second.
    let left = loop {
        let left: Vec<u64> = all_program_ids()
            .into_iter()
            .filter(|id| ours.contains(id))
            .collect();
        if left.is_empty() || asked.elapsed() > Duration::from_secs(1) {
            break left;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert!(
        left.is_empty(),
        "programs left in the kernel 1 s after SIGTERM: {left:?}"
    );
}

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() {
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus");
    let out = promtool(
        &["check", "rules", &format!("{deploy}/tcptrace-alerts.yml")],
        None,
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let tested = Command::new("promtool")
        .current_dir(deploy)
        .args(["test", "rules", "tcptrace-alerts.test.yml"])
        .output()
        .expect("promtool");
    let text = String::from_utf8_lossy(&tested.stdout).into_owned()
        + &String::from_utf8_lossy(&tested.stderr);
    assert!(
        tested.status.success() && text.contains("SUCCESS"),
        "promtool test rules:\n{text}"
    );
}

/// A real Prometheus server, started on loopback by the test, scrapes the
/// daemon while a server leaks `CLOSE_WAIT` sockets; its query API must show
/// the leak for that process with the right count.
#[test]
fn real_prometheus_sees_the_close_wait_leak() {
    require_root();
    let daemon = Daemon::start(
        &free_loopback_addr(),
        &["--refresh", "1s", "--comm", "tt-workload"],
    );
    let mut leak = Workload::start(&["leak", "127.0.0.1:0", "3"]);
    let port = leak.expect_line("port ");
    Workload::start(&["client", &format!("127.0.0.1:{port}"), "3"]).wait_success();
    leak.expect_line("leaking");

    let prometheus = Prometheus::start(
        "leak",
        &format!(
            "  - job_name: tcptrace\n    static_configs:\n      - targets: ['{}']\n",
            daemon.listen
        ),
    );
    let query = r#"tcptrace_sockets{comm="tt-workload",state="CLOSE_WAIT"}"#;
    let (value, last) = prometheus.query_until(query, Duration::from_secs(40), |_| true);
    let value =
        value.unwrap_or_else(|| panic!("Prometheus never returned {query}; last answer: {last}"));
    assert_eq!(value, "3", "Prometheus sees the three leaked sockets");
    drop(leak);
}

/// `/healthz` tells the truth: while sockets go untracked (a socket map
/// far too small for the workload) it says "degraded", with the reason
/// and the remedy, not "ok".
#[test]
fn healthz_is_degraded_while_sockets_go_untracked() {
    const HOLD_MANY_BIN: &str = env!("CARGO_BIN_EXE_tt-hold-many");
    require_root();
    let daemon = Daemon::start(&free_loopback_addr(), &["--socket-map-entries", "16"]);
    let (status, health) = http_get(&daemon.listen, "/healthz", &[]).expect("healthz");
    assert_eq!(status, 200);
    let before: serde_json::Value = serde_json::from_str(&health).expect("healthz is JSON");

    // 60 connections, both ends tracked: far more than 16 sockets.
    let mut holder = Command::new(HOLD_MANY_BIN)
        .arg("60")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tt-hold-many");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("piped")),
        &mut line,
    )
    .expect("tt-hold-many output");
    assert!(line.starts_with("holding"), "tt-hold-many: {line:?}");
    drop(holder.stdin.take());
    let status = holder.wait().expect("tt-hold-many exit");
    assert!(status.success(), "tt-hold-many failed: {status}");

    let (status, health) = http_get(&daemon.listen, "/healthz", &[]).expect("healthz");
    assert_eq!(status, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).expect("healthz is JSON");
    assert!(
        health["sock_map_full"].as_u64().unwrap_or(0) > 0,
        "the kernel counted sockets it could not track: {health}"
    );
    assert_eq!(health["status"], "degraded", "{health} (before: {before})");
    let reasons = health["reasons"].to_string();
    assert!(
        reasons.contains("socket map full") && reasons.contains("socket-map-entries"),
        "the reason names the cause and the remedy: {health}"
    );
}

/// Capabilities are per thread: every thread of the daemon, those started
/// before its drop after attach included, holds `CAP_SYS_PTRACE` and
/// `CAP_DAC_READ_SEARCH` only (`tcptrace::privileges::KEPT`), as the
/// kernel shows them in `/proc/PID/task/*/status`; the meeting thread
/// still runs at the real-time priority it took before confining itself.
#[test]
fn every_daemon_thread_keeps_only_what_the_daemon_keeps() {
    require_root();
    let daemon = Daemon::start(&free_loopback_addr(), &[]);
    let kept = (1u64 << 19) | (1u64 << 2); // CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", daemon.pid())).expect("task dir") {
        let task = task.expect("task entry").path();
        let status = std::fs::read_to_string(task.join("status")).expect("status");
        let field = |name: &str| -> &str {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map_or("", str::trim)
        };
        let set = |name: &str| u64::from_str_radix(field(name), 16).expect(name);
        let name = field("Name:").to_owned();
        for (set_name, expected) in [
            ("CapPrm:", kept),
            ("CapEff:", kept),
            ("CapInh:", 0),
            ("CapAmb:", 0),
        ] {
            assert_eq!(
                set(set_name),
                expected,
                "thread {name} ({}): {set_name} {:#x}",
                task.display(),
                set(set_name)
            );
        }
        if name == "tcptrace-meet" {
            // Field 41 of stat (after the parenthesised name): the policy.
            let stat = std::fs::read_to_string(task.join("stat")).expect("stat");
            let after_name = &stat[stat.rfind(')').expect("stat's name") + 2..];
            let policy = after_name.split(' ').nth(41 - 3).expect("policy");
            assert_eq!(policy, "1", "the meeting thread's policy (SCHED_FIFO is 1)");
        }
        names.push(name);
    }
    for started_before_the_drop in ["tcptrace-meet", "tcptrace-name"] {
        assert!(
            names.iter().any(|name| name == started_before_the_drop),
            "no {started_before_the_drop} thread among {names:?}"
        );
    }
}

/// A closed socket's record stays in the kernel's socket map, flagged
/// `CLOSED`, and the next socket born at its address is written over it
/// (an insert and a delete per socket cost the state program a quarter of
/// its time): thousands of connections leave a few dozen records, each of
/// a closed socket once the churn has ended. Read with bpftool, as the
/// kernel holds them.
#[test]
fn closed_sockets_records_are_written_over_by_the_next_birth() {
    require_root();
    let daemon = Daemon::start(&free_loopback_addr(), &[]);
    let churn = Command::new(env!("CARGO_BIN_EXE_tt-churn"))
        .args(["--threads", "2", "--seconds", "1", "--linger0"])
        .output()
        .expect("run tt-churn");
    assert!(churn.status.success(), "tt-churn: {churn:?}");
    let result: serde_json::Value = serde_json::from_slice(&churn.stdout).expect("tt-churn's JSON");
    let connections = result["connections"].as_u64().expect("connections");
    assert!(connections >= 1000, "a churn of {connections} connections");

    let records = socket_map_records(daemon.pid());
    let (flags_at, comm_at) = (
        std::mem::offset_of!(SockInfo, flags),
        std::mem::offset_of!(SockInfo, owner) + std::mem::offset_of!(Task, comm),
    );
    let churned: Vec<&Vec<u8>> = records
        .iter()
        .filter(|value| value[comm_at..].starts_with(b"tt-churn\0"))
        .collect();
    assert!(
        !churned.is_empty(),
        "the churn's sockets left their records: {} records in all",
        records.len()
    );
    for value in &churned {
        let flags = u32::from_ne_bytes(value[flags_at..flags_at + 4].try_into().expect("u32"));
        assert_ne!(
            flags & CLOSED,
            0,
            "a churn socket's record not closed: flags {flags:#x}"
        );
    }
    // Two sockets per connection: far fewer records means births took
    // the records of closed sockets at their addresses.
    assert!(
        (churned.len() as u64) * 20 < connections,
        "{} records left by {connections} connections",
        churned.len()
    );
}

/// The values of the daemon's `SOCKS` map, as bytes.
fn socket_map_records(daemon_pid: u32) -> Vec<Vec<u8>> {
    bpf_map_entries(bpf_map_of(daemon_pid, "SOCKS"))
        .into_iter()
        .map(|(_, value)| value)
        .collect()
}
