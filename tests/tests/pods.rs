//! Pods: programs in network namespaces of their own, as every Kubernetes
//! pod runs. Their sockets are invisible to a `sock_diag` dump taken from
//! tcptrace's namespace; tcptrace must list them anyway (a dump inside
//! every namespace), with the same owners, fds and ages as on the host,
//! and a daemon started after a pod's server must attribute the
//! connections it accepts to it.

use std::{collections::BTreeSet, process::Command, thread, time::Duration};

use serde_json::Value;
use tcptrace_tests::{
    daemon::{free_loopback_addr, sample, Daemon},
    kernel_counts::ss_count,
    netns::HostPair,
    require_root,
    trace::{without_frames, TextReport},
    Tracer, Workload,
};

const SCENARIO_BIN: &str = env!("CARGO_BIN_EXE_tt-scenario");
const COMM: &str = "tt-scenario";

/// `tt-scenario ARGS` inside network namespace `netns` (`ip netns exec`
/// execs it: the pid is the scenario's).
fn scenario_in(netns: &str, args: &[&str]) -> Workload {
    Workload::spawn_command(
        Command::new("ip")
            .args(["netns", "exec", netns, SCENARIO_BIN])
            .args(args),
    )
}

/// A server in pod `a` that reads each client's end-of-file and never
/// closes (`count` connections from pod `b`), once every socket sits in
/// `CLOSE_WAIT`; returns it with the fds it leaked.
fn leaking_server(hosts: &HostPair, port: u16, count: usize) -> (Workload, BTreeSet<u64>) {
    let mut server = scenario_in(
        &hosts.a,
        &[
            "leak",
            &format!("{}:{port}", hosts.a_addr),
            &count.to_string(),
        ],
    );
    let addr = server.expect_line("listening ");
    let mut client = scenario_in(&hosts.b, &["connect-close", &addr, &count.to_string()]);
    client.expect_line("done");
    let fds = leaked_fds(&mut server, count);
    (server, fds)
}

/// The fds a leaking server reports for its `count` connections
/// ("eof PEER fd N" each, then "done").
fn leaked_fds(server: &mut Workload, count: usize) -> BTreeSet<u64> {
    let fds = server
        .expect_lines("eof ", count)
        .iter()
        .map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|fd| fd.parse().ok())
                .expect("fd number")
        })
        .collect();
    server.expect_line("done");
    fds
}

fn leak_of<'a>(findings: &'a [&'a Value], pid: u32) -> &'a Value {
    findings
        .iter()
        .copied()
        .find(|f| f["process"]["pid"] == pid)
        .unwrap_or_else(|| {
            let listed: Vec<Value> = findings.iter().map(|f| without_frames(f)).collect();
            panic!("no CLOSE_WAIT leak of pid {pid} in the report: {listed:#?}")
        })
}

fn fds_of(leak: &Value) -> BTreeSet<u64> {
    leak["fds"]
        .as_array()
        .expect("fds")
        .iter()
        .filter_map(|h| h["fd"].as_u64())
        .collect()
}

/// A leak in a pod's namespace that began before the session, and one
/// that begins during it: both listed with pid, fds and age ("at least"
/// for the first), in every-event and summary mode and in the text
/// report, and the kernel's `CLOSE_WAIT` count covers the pod.
#[test]
fn close_wait_leaks_inside_a_pod_are_listed() {
    const BEFORE: usize = 3;
    const DURING: usize = 2;
    require_root();
    let hosts = HostPair::new("ttpod");
    let (before, before_fds) = leaking_server(&hosts, 18401, BEFORE);
    thread::sleep(Duration::from_millis(1200));

    let text = TextReport::start(&["--comm", COMM]);
    let summary = Tracer::start_report_only(&["--comm", COMM]);
    let json = Tracer::start(&["--comm", COMM]);
    let (during, during_fds) = leaking_server(&hosts, 18402, DURING);
    thread::sleep(Duration::from_millis(300));
    let kernel_close_wait = ss_count(&hosts.a, "close-wait");
    let trace = json.stop();
    let summary = summary.stop();
    let text = text.finish();
    eprintln!("---- text report ----\n{text}");
    assert_eq!(kernel_close_wait, (BEFORE + DURING) as u64, "ss in the pod");

    for (mode, report) in [("every-event", &trace), ("summary", &summary)] {
        let leaks: Vec<&Value> = report.findings("close_wait_leak").collect();
        let old = leak_of(&leaks, before.pid());
        assert_eq!(old["process"]["comm"], COMM, "{mode}: {old:#}");
        assert_eq!(old["sockets"], BEFORE, "{mode}: {old:#}");
        assert_eq!(fds_of(old), before_fds, "{mode}: the server's own fds");
        assert_eq!(
            old["age_is_lower_bound"], true,
            "{mode}: a leak older than the session is at least its length: {old:#}"
        );
        let new = leak_of(&leaks, during.pid());
        assert_eq!(new["sockets"], DURING, "{mode}: {new:#}");
        assert_eq!(fds_of(new), during_fds, "{mode}: the server's own fds");
        assert_eq!(new["age_is_lower_bound"], false, "{mode}: {new:#}");

        let totals = report
            .of_type("report_totals")
            .next()
            .map_or(&Value::Null, |r| &r["totals"]);
        let namespaces = totals["network_namespaces"].as_u64().unwrap_or(0);
        assert!(
            namespaces >= 3,
            "{mode}: the host's and both pods' namespaces are covered: {totals}"
        );
        assert!(
            totals["close_wait_kernel"].as_u64().unwrap_or(0) >= kernel_close_wait,
            "{mode}: the kernel's CLOSE_WAIT count includes the pod's: {totals}"
        );
    }
    assert!(
        text.contains(&format!("{}/{COMM}", before.pid()))
            || text.contains(&format!("{COMM} ({})", before.pid()))
            || text.contains(&before.pid().to_string()),
        "the text report names the pod's leaking process {}",
        before.pid()
    );
    drop((before, during));
}

/// A daemon started while a pod's server already listens: the kernel is
/// taught that listener from a dump inside the pod's namespace, so the
/// connections it accepts afterwards are the server's (not "unknown"),
/// and its leaks show in the gauges. The daemon counts a connection's
/// opening when it closes (summary mode): the leaked ones when the server
/// is stopped.
#[test]
fn a_daemon_started_after_a_pod_server_attributes_its_connections() {
    const COUNT: usize = 3;
    require_root();
    let hosts = HostPair::new("ttpodd");
    let mut server = scenario_in(
        &hosts.a,
        &[
            "leak",
            &format!("{}:18403", hosts.a_addr),
            &COUNT.to_string(),
        ],
    );
    let addr = server.expect_line("listening ");
    let daemon = Daemon::start(&free_loopback_addr(), &["--comm", COMM]);
    let mut client = scenario_in(&hosts.b, &["connect-close", &addr, &COUNT.to_string()]);
    client.expect_line("done");
    leaked_fds(&mut server, COUNT);

    let accepted = |scrape: &str| {
        sample(
            scrape,
            "tcptrace_connections_opened_total",
            &[("comm", COMM), ("role", "passive")],
        )
        .unwrap_or(0.0)
    };
    let leaking = |scrape: &str| {
        sample(
            scrape,
            "tcptrace_close_wait_oldest_seconds",
            &[("comm", COMM)],
        )
        .is_some()
    };
    let scrape = daemon.scrape_until(Duration::from_secs(20), leaking);
    assert!(
        leaking(&scrape),
        "the pod server's CLOSE_WAIT leak is in the gauges:\n{}",
        relevant(&scrape)
    );
    // The host's and both pods' namespaces were listed; none missed.
    let namespaces = |state| sample(&scrape, "tcptrace_network_namespaces", &[("state", state)]);
    assert!(
        namespaces("listed").unwrap_or(0.0) >= 3.0,
        "the dump covers the pods' namespaces: {:?}",
        namespaces("listed")
    );
    assert_eq!(namespaces("unreachable"), Some(0.0));

    // Stopped, the server closes its leaked sockets: their lives are sent.
    drop(server);
    let scrape = daemon.scrape_until(Duration::from_secs(20), |scrape| accepted(scrape) >= 3.0);
    assert!(
        accepted(&scrape) >= 3.0,
        "the pod server's accepts are its own:\n{}",
        relevant(&scrape)
    );
}

fn relevant(scrape: &str) -> String {
    scrape
        .lines()
        .filter(|l| {
            l.contains("opened") || l.contains("close_wait") || l.contains("kernel_sockets")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A pod as the runtime makes it: its own network, pid and mount
/// namespaces, its binary at a path that exists only in its mount
/// namespace (a tmpfs mounted there). tcptrace names the process by its
/// pid on the host, lists its leak with its fds, and names the code that
/// read end-of-file from the binary it reaches through `/proc/PID/root`.
#[test]
fn a_pod_with_its_own_pid_and_mount_namespaces_is_attributed_and_symbolized() {
    const COUNT: usize = 2;
    require_root();
    let hosts = HostPair::new("ttpodm");
    let server_addr = format!("{}:18404", hosts.a_addr);
    let json = Tracer::start(&["--comm", COMM]);
    // The binary is copied into a tmpfs mounted inside the pod's private
    // mount namespace: the host's /mnt does not have it.
    let inside = format!(
        "mount -t tmpfs pod /mnt && cp {SCENARIO_BIN} /mnt/{COMM} && \
         exec /mnt/{COMM} leak {server_addr} {COUNT}"
    );
    let mut pod = tcptrace_tests::programs::pod_in(&hosts.a, &inside);
    let addr = pod.expect_line("listening ");
    // `unshare` forks the pod's first process (pid 1 inside).
    let server_pid = *tcptrace_tests::programs::children_of(pod.pid())
        .first()
        .expect("the pod's process, forked by unshare");
    assert!(
        !std::path::Path::new(&format!("/mnt/{COMM}")).exists(),
        "the pod's binary must be invisible from the host"
    );
    let mut client = scenario_in(&hosts.b, &["connect-close", &addr, &COUNT.to_string()]);
    client.expect_line("done");
    let fds = leaked_fds(&mut pod, COUNT);
    thread::sleep(Duration::from_millis(300));
    let trace = json.stop();

    let leaks: Vec<&Value> = trace.findings("close_wait_leak").collect();
    let leak = leak_of(&leaks, server_pid);
    assert_eq!(leak["sockets"], COUNT, "{leak:#}");
    assert_eq!(fds_of(leak), fds, "the pod process's own fds: {leak:#}");
    let eof = leak["eof_call_site"]["function"].as_str().unwrap_or("");
    assert_eq!(
        eof,
        "tt_scenario::read_to_eof",
        "the EOF call site, symbolized from the binary inside the pod: {:#}",
        without_frames(leak)
    );
    drop(pod);
}
