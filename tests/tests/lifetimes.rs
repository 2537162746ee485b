//! Connections that live too long (incident 5 of docs/INCIDENTS.md): idle
//! without keepalive, lost to a peer that vanished, how old they are, and
//! listeners inside the ephemeral port range. Real kernel, Debian's nginx
//! as the server, in network namespaces the tests create; checked against
//! `ss` (timers), `nstat` (timeouts) and the namespace's own sysctls.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tcptrace_tests::{
    daemon::{free_loopback_addr, sample, Daemon},
    kernel_counts::{established_to, nstat},
    netns::HostPair,
    programs::{scratch_dir, Nginx},
    redis::{self, Redis},
    require_root,
    trace::{without_frames, TextReport},
    Tracer, Workload,
};

const SCENARIO_BIN: &str = env!("CARGO_BIN_EXE_tt-scenario");

/// `tt-scenario ARGS` inside network namespace `netns`.
fn scenario_in(netns: &str, args: &[&str]) -> Workload {
    Workload::spawn_command(
        Command::new("ip")
            .args(["netns", "exec", netns, SCENARIO_BIN])
            .args(args),
    )
}

/// Debian's nginx on `port` in a namespace pair, and a daemon watching
/// that port (refreshing every second).
struct Watched {
    hosts: HostPair,
    addr: String,
    nginx: Nginx,
    daemon: Daemon,
}

impl Watched {
    fn nginx(tag: &str, port: u16, daemon_args: &[&str]) -> Self {
        let hosts = HostPair::new(tag);
        let addr = format!("{}:{port}", hosts.a_addr);
        let nginx = Nginx::start(&hosts.a, &addr);
        let port = port.to_string();
        let mut args = vec!["--refresh", "1s", "--port", &port];
        args.extend_from_slice(daemon_args);
        let daemon = Daemon::start(&free_loopback_addr(), &args);
        Self {
            hosts,
            addr,
            nginx,
            daemon,
        }
    }
}

fn of_pid<'a>(findings: &[&'a Value], pid: u32) -> Option<&'a Value> {
    findings
        .iter()
        .copied()
        .find(|f| f["process"]["pid"].as_u64() == Some(u64::from(pid)))
}

/// The daemon counts one of `comm`'s connections lost to a peer's reset
/// (waiting for the refresh that counts it).
fn assert_daemon_lost_one_by_peer_reset(daemon: &Daemon, comm: &str) {
    let lost_by_reset = |scrape: &str| {
        sample(
            scrape,
            "tcptrace_connections_lost_total",
            &[("comm", comm), ("cause", "peer_reset")],
        )
    };
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| lost_by_reset(s).is_some());
    assert_eq!(lost_by_reset(&scrape), Some(1.0), "{scrape}");
}

fn f64_of(finding: &Value, key: &str) -> f64 {
    finding[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number `{key}` in {:#}", without_frames(finding)))
}

/// The call site names `function`; a JS frame of a perf map
/// (`JS:~internalConnect node:net:1038:25`) by the JS function's name.
fn assert_call_site(finding: &Value, function: &str) {
    let named = finding["call_site"]["function"].as_str().map(|f| {
        f.strip_prefix("JS:").map_or(f, |js| {
            let js = js.trim_start_matches(['^', '*', '~', '+', '-']);
            js.split_once(' ').map_or(js, |(name, _)| name)
        })
    });
    assert_eq!(
        named,
        Some(function),
        "call site of {:#}",
        without_frames(finding)
    );
}

/// Two clients hold one connection each to nginx and send nothing: one
/// with keepalive off, one with keepalive on (probes only after 10 min).
/// Past the 2 s threshold, the first is an idle connection without
/// keepalive, named by its call site; the second is only counted as
/// protected; nginx's own two accepted connections (no keepalive either)
/// are idle too. `ss -o` shows the same timers; the ages grow with the
/// time held. The daemon and a `--report-only` session beside (summary
/// mode: the kernel sends nothing while a connection lives) show the same
/// from their dumps, ages included, and name the idle client's call site
/// from the kernel's socket map.
#[test]
fn idle_connection_without_keepalive_is_reported_and_one_with_keepalive_is_not() {
    const HOLD: Duration = Duration::from_millis(3500);
    require_root();
    let Watched {
        hosts,
        addr,
        nginx,
        daemon,
    } = Watched::nginx("ttidle", 18120, &["--idle-threshold", "2s"]);
    let trace = Tracer::start(&["--port", "18120", "--idle-threshold", "2s"]);
    let summary = Tracer::start_report_only(&["--port", "18120", "--idle-threshold", "2s"]);
    let mut bare = scenario_in(&hosts.b, &["idle", &addr, "none"]);
    let mut kept = scenario_in(&hosts.b, &["idle", &addr, "keepalive"]);
    bare.expect_line("done");
    kept.expect_line("done");
    let held_from = Instant::now();
    thread::sleep(HOLD);

    // The kernel's view: one of the two client sockets has a keepalive timer.
    let lines = established_to(&hosts.b, 18120);
    let with_keepalive = lines.iter().filter(|l| l.contains("keepalive")).count();
    assert_eq!(
        (lines.len(), with_keepalive),
        (2, 1),
        "ss -o in the clients' namespace: {lines:#?}"
    );
    let (trace, summary) = (trace.stop(), summary.stop());
    let held_s = held_from.elapsed().as_secs_f64();

    let summary_idle: Vec<&Value> = summary.findings("idle_connections").collect();
    let in_summary = of_pid(&summary_idle, bare.pid()).unwrap_or_else(|| {
        panic!(
            "summary mode: the client without keepalive is idle: {:#?}",
            summary_idle
                .iter()
                .map(|f| without_frames(f))
                .collect::<Vec<_>>()
        )
    });
    assert_eq!(in_summary["sockets"], 1, "{in_summary:#}");
    assert_call_site(in_summary, "tt_scenario::hold_idle_connection");
    // Its age from the kernel's record, not from the dumps.
    assert_eq!(in_summary["age_is_lower_bound"], false, "{in_summary:#}");
    assert!(
        f64_of(in_summary, "oldest_age_s") >= HOLD.as_secs_f64(),
        "{in_summary:#}"
    );

    let idle: Vec<&Value> = trace.findings("idle_connections").collect();
    let bare_idle = of_pid(&idle, bare.pid()).unwrap_or_else(|| {
        panic!(
            "the client without keepalive is idle: {:#?}",
            idle.iter().map(|f| without_frames(f)).collect::<Vec<_>>()
        )
    });
    assert_eq!(bare_idle["sockets"], 1, "{bare_idle:#}");
    assert_eq!(bare_idle["keepalive"], false);
    assert!(f64_of(bare_idle, "longest_idle_s") >= 2.0, "{bare_idle:#}");
    assert!(
        f64_of(bare_idle, "oldest_age_s") >= HOLD.as_secs_f64(),
        "{bare_idle:#}"
    );
    assert_call_site(bare_idle, "tt_scenario::hold_idle_connection");
    assert!(
        of_pid(&idle, kept.pid()).is_none(),
        "keepalive protects the other client: {:#?}",
        idle.iter().map(|f| without_frames(f)).collect::<Vec<_>>()
    );
    let nginx_idle: u64 = idle
        .iter()
        .filter(|f| f["process"]["comm"] == "nginx")
        .map(|f| f["sockets"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(nginx_idle, 2, "nginx's accepted connections are idle too");
    // Accepted by a worker after the session began, from a listener opened
    // before it: the accept() call site, known to the kernel's record only.
    for finding in idle.iter().filter(|f| f["process"]["comm"] == "nginx") {
        let function = finding["call_site"]["function"].as_str().unwrap_or("?");
        assert!(
            function.starts_with("ngx_"),
            "an nginx function: {:#}",
            without_frames(finding)
        );
    }

    let ages: Vec<&Value> = trace.findings("connection_ages").collect();
    let kept_ages = of_pid(&ages, kept.pid()).expect("the keepalive client's connection");
    assert_eq!(kept_ages["established"], 1);
    assert_eq!(kept_ages["idle_with_keepalive"], 1, "{kept_ages:#}");
    let age = f64_of(kept_ages, "oldest_age_s");
    assert!(
        (HOLD.as_secs_f64()..=held_s + 1.0).contains(&age),
        "its age grew with the time held ({held_s:.1} s): {kept_ages:#}"
    );
    assert_eq!(kept_ages["age_is_lower_bound"], false);

    daemon_shows_idle_connections_and_ages(&daemon);
    let logged = daemon.wait_for_log(
        Duration::from_secs(10),
        "idle connections without keepalive",
        |line| line["fields"]["process"]["pid"].as_u64() == Some(u64::from(bare.pid())),
    );
    let logged = logged.unwrap_or_else(|| {
        panic!(
            "the daemon logs the idle client: {:#?}",
            daemon.logged("idle connections without keepalive")
        )
    });
    assert_call_site(&logged["fields"], "tt_scenario::hold_idle_connection");
    drop((bare, kept, nginx));
}

/// The daemon's gauges in the idle test: the unprotected client's and
/// nginx's idle connections, and both clients' ages, known from its dumps.
fn daemon_shows_idle_connections_and_ages(daemon: &Daemon) {
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| {
        sample(
            s,
            "tcptrace_idle_connections_without_keepalive",
            &[("comm", "tt-scenario")],
        ) == Some(1.0)
            && sample(
                s,
                "tcptrace_oldest_connection_age_seconds",
                &[("comm", "tt-scenario")],
            )
            .is_some_and(|age| age >= 2.0)
    });
    let gauge = |name: &str, labels: &[(&str, &str)]| sample(&scrape, name, labels);
    assert_eq!(
        gauge(
            "tcptrace_idle_connections_without_keepalive",
            &[("comm", "tt-scenario")]
        ),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        gauge(
            "tcptrace_idle_connections_without_keepalive",
            &[("comm", "nginx")]
        ),
        Some(2.0),
        "{scrape}"
    );
    // Both clients' connections, under a minute old, known from the dumps.
    assert_eq!(
        gauge(
            "tcptrace_established_connections_by_age",
            &[("comm", "tt-scenario"), ("age", "1m")]
        ),
        Some(2.0),
        "{scrape}"
    );
    assert!(
        gauge(
            "tcptrace_oldest_connection_age_seconds",
            &[("comm", "tt-scenario")]
        )
        .is_some_and(|age| age >= 2.0),
        "{scrape}"
    );
}

/// A client with fast keepalive (1 s idle, 2 probes 1 s apart) loses its
/// peer: the server's namespace starts dropping every packet. The kernel
/// gives up after the probes (`ETIMEDOUT` while ESTABLISHED): a lost
/// connection, by keepalive, named by owner and call site, as many as the
/// client namespace's `TcpExtTCPAbortOnTimeout` counts; the daemon beside
/// counts it as `connections_lost_total{cause="keepalive_timeout"}`.
#[test]
fn a_peer_that_vanishes_under_keepalive_is_a_lost_connection() {
    require_root();
    let Watched {
        hosts,
        addr,
        nginx,
        daemon,
    } = Watched::nginx("ttlost", 18121, &["--comm", "tt-scenario"]);
    let trace = Tracer::start(&["--port", "18121"]);
    let before = nstat(&hosts.b);
    let mut client = scenario_in(&hosts.b, &["idle", &addr, "keepalive-fast"]);
    client.expect_line("done");
    hosts.drop_ingress(&hosts.a);
    // Keepalive: 1 s idle, then 2 probes 1 s apart: gone after ~3 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !established_to(&hosts.b, 18121).is_empty() {
        assert!(Instant::now() < deadline, "keepalive never gave up");
        thread::sleep(Duration::from_millis(200));
    }
    let aborted = nstat(&hosts.b)["TcpExtTCPAbortOnTimeout"]
        - before.get("TcpExtTCPAbortOnTimeout").copied().unwrap_or(0);
    let trace = trace.stop();

    let lost: Vec<&Value> = trace.findings("lost_connection").collect();
    let finding = of_pid(&lost, client.pid()).unwrap_or_else(|| {
        panic!(
            "the client's connection is lost: {:#?}",
            lost.iter().map(|f| without_frames(f)).collect::<Vec<_>>()
        )
    });
    assert_eq!(aborted, 1, "the kernel aborted one connection on a timeout");
    assert_eq!(finding["keepalive_timeouts"], aborted, "{finding:#}");
    assert_eq!(finding["retransmit_timeouts"], 0, "{finding:#}");
    // Keepalive gave up after 1 s idle and two unanswered probes 1 s
    // apart: the kernel measured at least 2 s without a word from the peer.
    assert!(f64_of(finding, "longest_silence_s") >= 2.0, "{finding:#}");
    assert_eq!(finding["peer"], addr.as_str());
    assert_call_site(finding, "tt_scenario::hold_idle_connection");

    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| {
        sample(
            s,
            "tcptrace_connections_lost_total",
            &[("comm", "tt-scenario"), ("cause", "keepalive_timeout")],
        ) == Some(1.0)
    });
    assert_eq!(
        sample(
            &scrape,
            "tcptrace_connections_lost_total",
            &[("comm", "tt-scenario"), ("cause", "keepalive_timeout")],
        ),
        Some(1.0),
        "{scrape}"
    );
    drop((client, nginx));
}

/// A server resets three connections, as a middlebox's idle timeout does
/// when it answers: one after 2.5 s of silence (past the 2 s threshold),
/// one after 2.5 s during which it sent a byte every 100 ms, one after
/// 0.3 s. Only the first is lost by a peer reset: the kernel measured the
/// peer's silence (no data, no ACK) when the reset came. The client
/// namespace's `TcpEstabResets` counts all three resets; the daemon
/// (summary mode) counts one `peer_reset` loss.
#[test]
fn a_peer_reset_after_a_long_silence_is_a_lost_connection() {
    require_root();
    let hosts = HostPair::new("ttreset");
    let ports = ["18123", "18124", "18125"];
    let mut args: Vec<&str> = ports.iter().flat_map(|p| ["--port", p]).collect();
    args.extend(["--idle-threshold", "2s"]);
    let daemon = Daemon::start(&free_loopback_addr(), &args);
    let trace = Tracer::start(&args);
    let before = nstat(&hosts.b);
    let server = |port: &str, ms: &str, talk: &str| {
        let addr = format!("{}:{port}", hosts.a_addr);
        let mut server = scenario_in(&hosts.a, &["abort-after", &addr, ms, talk]);
        let listening = server.expect_line("listening ");
        let mut client = scenario_in(&hosts.b, &["idle", &listening, "none"]);
        client.expect_line("done");
        (server, client)
    };
    let mut silent = server(ports[0], "2500", "silent");
    let mut chatty = server(ports[1], "2500", "chatty");
    let mut short = server(ports[2], "300", "silent");
    for (server, _) in [&mut silent, &mut chatty, &mut short] {
        server.expect_line("reset");
    }
    thread::sleep(Duration::from_millis(300));
    let resets =
        nstat(&hosts.b)["TcpEstabResets"] - before.get("TcpEstabResets").copied().unwrap_or(0);
    let trace = trace.stop();

    assert_eq!(
        resets, 3,
        "the kernel counts the three resets of established connections"
    );
    let lost: Vec<&Value> = trace.findings("lost_connection").collect();
    let shown = || lost.iter().map(|f| without_frames(f)).collect::<Vec<_>>();
    let finding = of_pid(&lost, silent.1.pid())
        .unwrap_or_else(|| panic!("the silent connection is lost: {:#?}", shown()));
    assert_eq!(finding["reset_after_silence"], 1, "{finding:#}");
    assert_eq!(finding["keepalive_timeouts"], 0);
    assert!(f64_of(finding, "longest_lifetime_s") >= 2.0, "{finding:#}");
    // Silent from the handshake to the reset: 2.5 s, give or take the
    // start-up of the processes and a jiffy.
    let silence = f64_of(finding, "longest_silence_s");
    assert!((2.0..3.5).contains(&silence), "{finding:#}");
    assert_call_site(finding, "tt_scenario::hold_idle_connection");
    assert!(
        of_pid(&lost, chatty.1.pid()).is_none(),
        "a reset of a connection whose peer talked until then is not a lost one: {:#?}",
        shown()
    );
    assert!(
        of_pid(&lost, short.1.pid()).is_none(),
        "a reset after 0.3 s is an abortive close, not a lost connection: {:#?}",
        shown()
    );

    assert_daemon_lost_one_by_peer_reset(&daemon, "tt-scenario");
    drop((silent, chatty, short));
}

/// A pooled connection written to after a long silence, its peer gone (a
/// middlebox that forgot it answers the write with a reset): the client's
/// namespace drops everything while the server resets the connection, so
/// the client hears nothing, then hears again and writes. The server's
/// kernel, which no longer knows the connection, resets it; the reset
/// reaches the client inside its `write()` (queued on the socket's backlog,
/// processed as the call releases the socket), unlike an idle reader's,
/// processed in softirq. It is lost all the same, in the trace and in the
/// daemon (summary mode), as `TcpEstabResets` counts its reset.
#[test]
fn a_write_after_a_long_silence_reset_by_a_forgetful_peer_is_a_lost_connection() {
    assert_a_write_after_silence_is_lost(&ForgetfulPeer {
        tag: "ttwrite",
        port: "18126",
        client_in: |netns, server| scenario_in(netns, &["idle-then-write", server]),
        comm: "tt-scenario",
        call_site: "tt_scenario::hold_idle_connection",
    });
}

/// The same lost connection with a real program as the writer: Debian's
/// Node.js (`tests/workloads/node/idle_writer.js`) holds the connection
/// idle, writes when told, and sees `ECONNRESET`. libuv writes at once
/// (`uv_try_write`), so the reset comes back inside node's own `write()`,
/// as tt-scenario's does: the call still returns the bytes as sent, and
/// node learns of the reset from the `read()` that follows (strace shows
/// both), but the connection ended in the write, in node's context.
///
/// The call site is Node's library frame `internalConnect`, not the user's
/// `holdIdleConnection`: for an IP address `net.connect()` defers
/// connect(2) to `process.nextTick`, so no user frame is on the stack when
/// the connection is born (runtimes.rs asserts the same of Node's
/// connects, for the same reason). Run once, the JS functions are still
/// interpreted, and every interpreted frame is the one
/// `Builtins_InterpreterEntryTrampoline` that `--perf-basic-prof` alone
/// does not name (the call site would be libc's `connect`);
/// `--interpreted-frames-native-stack` gives each its own, in the perf map
/// (`JS:~internalConnect node:net:…`).
#[test]
fn a_node_write_after_a_long_silence_reset_by_a_forgetful_peer_is_a_lost_connection() {
    assert_a_write_after_silence_is_lost(&ForgetfulPeer {
        tag: "ttnodew",
        port: "18128",
        client_in: |netns, server| {
            let (host, port) = server.rsplit_once(':').expect("HOST:PORT");
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/workloads/node/idle_writer.js");
            Workload::spawn_command(
                Command::new("ip")
                    // V8 writes its isolate logs to the working directory.
                    .current_dir(scratch_dir())
                    .args(["netns", "exec", netns, "node", "--perf-basic-prof"])
                    .arg("--interpreted-frames-native-stack")
                    .args([script, host, port]),
            )
        },
        comm: "node",
        call_site: "internalConnect",
    });
}

/// A client that idles, then writes into a connection its server forgot:
/// `client_in(netns, server)` starts it; it prints `connected LOCAL`,
/// writes when stdin says `write`, prints `reset` when the peer's reset
/// ends the connection, and exits 0 when stdin closes. `comm` is the
/// writer's; `call_site` names the function that opened the connection.
struct ForgetfulPeer {
    tag: &'static str,
    port: &'static str,
    client_in: fn(&str, &str) -> Workload,
    comm: &'static str,
    call_site: &'static str,
}

/// The story of the two tests above, and what the kernel, the trace and
/// the daemon must say about it.
fn assert_a_write_after_silence_is_lost(peer: &ForgetfulPeer) {
    require_root();
    let hosts = HostPair::new(peer.tag);
    let args = ["--port", peer.port, "--idle-threshold", "2s"];
    let daemon = Daemon::start(&free_loopback_addr(), &args);
    let trace = Tracer::start(&args);
    let addr = format!("{}:{}", hosts.a_addr, peer.port);
    let mut server = scenario_in(&hosts.a, &["abort-after", &addr, "2500", "silent"]);
    let listening = server.expect_line("listening ");
    let mut client = (peer.client_in)(&hosts.b, &listening);
    let client_local = client.expect_line("connected ");
    let before = nstat(&hosts.b);
    // The server's reset never reaches the client: it still thinks the
    // connection open.
    hosts.drop_ingress(&hosts.b);
    server.expect_line("reset");
    thread::sleep(Duration::from_millis(200));
    hosts.allow_ingress(&hosts.b);
    client.send_line("write");
    client.expect_line("reset");
    thread::sleep(Duration::from_millis(300));
    let resets =
        nstat(&hosts.b)["TcpEstabResets"] - before.get("TcpEstabResets").copied().unwrap_or(0);
    let trace = trace.stop();

    assert_eq!(resets, 1, "the kernel counts the client's reset");
    let lives = trace.socket_lifetimes(&client_local, &listening);
    let close = lives
        .iter()
        .flatten()
        .find(|e| e["new"] == "CLOSE")
        .unwrap_or_else(|| panic!("the client's CLOSE was traced: {lives:#?}"));
    assert_eq!(close["error"], "ECONNRESET", "{close:#}");
    assert_eq!(
        close["actor"]["comm"], peer.comm,
        "the reset came back inside the client's write(), from its backlog: {close:#}"
    );
    let lost: Vec<&Value> = trace.findings("lost_connection").collect();
    let shown = || lost.iter().map(|f| without_frames(f)).collect::<Vec<_>>();
    let finding = of_pid(&lost, client.pid())
        .unwrap_or_else(|| panic!("the written connection is lost: {:#?}", shown()));
    assert_eq!(finding["reset_after_silence"], 1, "{finding:#}");
    let silence = f64_of(finding, "longest_silence_s");
    assert!((2.0..4.0).contains(&silence), "{finding:#}");
    assert_call_site(finding, peer.call_site);

    assert_daemon_lost_one_by_peer_reset(&daemon, peer.comm);
    client.wait_success();
    drop(server);
}

/// nginx listening on a port inside the namespace's ephemeral range (and
/// another one below it): the first is flagged with its owner, in the
/// report and as a daemon gauge; the second is not.
#[test]
fn listener_inside_the_ephemeral_range_is_flagged() {
    require_root();
    let hosts = HostPair::new("ttrange");
    // Namespace a sets a range of its own, as a pod may; b keeps the
    // kernel's default. Each listener is judged against its namespace's
    // range, which the namespaces themselves report.
    sysctl_in(&hosts.a, "net.ipv4.ip_local_port_range", "18000 18999");
    let range_a = port_range_in(&hosts.a);
    let range_b = port_range_in(&hosts.b);
    assert_eq!(range_a, (18000, 18999));
    assert!(
        range_b.0 <= 40121 && 40121 <= range_b.1 && 18123 < range_b.0,
        "namespace b's range {range_b:?} holds 40121, not 18123"
    );
    let nginx = [
        Nginx::start(&hosts.a, &format!("{}:18122", hosts.a_addr)), // inside a's
        Nginx::start(&hosts.a, &format!("{}:40120", hosts.a_addr)), // outside
        Nginx::start(&hosts.b, &format!("{}:40121", hosts.b_addr)), // inside b's
        Nginx::start(&hosts.b, &format!("{}:18123", hosts.b_addr)), // outside
    ];
    let daemon = Daemon::start(&free_loopback_addr(), &["--refresh", "1s"]);
    let ports = ["18122", "40120", "40121", "18123"];
    let filter: Vec<&str> = ports.iter().flat_map(|p| ["--port", p]).collect();
    let trace = Tracer::start(&filter);
    thread::sleep(Duration::from_millis(500));
    let trace = trace.stop();

    let flagged: Vec<&Value> = trace.findings("listener_in_range").collect();
    let found: Vec<(u64, u64, Value)> = flagged
        .iter()
        .map(|f| {
            assert_eq!(f["process"]["comm"], "nginx", "{f:#}");
            let number = |key: &str| f[key].as_u64().unwrap_or_else(|| panic!("{key}: {f:#}"));
            (number("port"), number("netns"), f["range"].clone())
        })
        .collect();
    assert_eq!(
        found,
        [
            (18122, hosts.inode(&hosts.a), json!([range_a.0, range_a.1])),
            (40121, hosts.inode(&hosts.b), json!([range_b.0, range_b.1])),
        ],
        "{flagged:#?}"
    );

    let in_range = |scrape: &str, port: &str| {
        sample(
            scrape,
            "tcptrace_listeners_in_ephemeral_range",
            &[("port", port)],
        )
    };
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| {
        in_range(s, "18122").is_some() && in_range(s, "40121").is_some()
    });
    assert_eq!(in_range(&scrape, "18122"), Some(1.0), "{scrape}");
    assert_eq!(in_range(&scrape, "40121"), Some(1.0), "{scrape}");
    assert_eq!(in_range(&scrape, "40120"), None, "{scrape}");
    assert_eq!(in_range(&scrape, "18123"), None, "{scrape}");
    drop(nginx);
}

/// Sets `key` to `value` inside network namespace `netns`.
fn sysctl_in(netns: &str, key: &str, value: &str) {
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ])
        .status()
        .expect("run sysctl");
    assert!(
        status.success(),
        "sysctl {key}={value} in {netns}: {status}"
    );
}

/// `ip_local_port_range` as namespace `netns` reads it.
fn port_range_in(netns: &str) -> (u16, u16) {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "cat",
            "/proc/sys/net/ipv4/ip_local_port_range",
        ])
        .output()
        .expect("read the namespace's ip_local_port_range");
    let range: Vec<u16> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    (range[0], range[1])
}

/// Summary mode counts a live connection's retransmits in the kernel's
/// history and sends them at most `LIVE_COUNTS_EVERY_NS` (5 s) apart, the
/// first of a life at once. A chatty server's client vanishes (its
/// namespace drops every packet): the server's data goes unacknowledged
/// and is sent again (RTO from 200 ms, doubling: about 0.2, 0.6, 1.4, 3.0
/// and 6.2 s in), and the daemon's `tcptrace_retransmits_total` counts
/// them while the connection lives, never more than the server
/// namespace's `TcpRetransSegs`. Before, they showed only at its end.
#[test]
fn a_live_connections_retransmits_reach_the_daemon_while_it_lives() {
    const PORT: u16 = 18127;
    require_root();
    let hosts = HostPair::new("ttlive");
    let daemon = Daemon::start(
        &free_loopback_addr(),
        &["--port", &PORT.to_string(), "--refresh", "1s"],
    );
    let addr = format!("{}:{PORT}", hosts.a_addr);
    let mut server = scenario_in(&hosts.a, &["abort-after", &addr, "30000", "chatty"]);
    server.expect_line("listening ");
    let mut client = scenario_in(&hosts.b, &["idle", &addr, "none"]);
    client.expect_line("done");
    let before = nstat(&hosts.a);
    hosts.drop_ingress(&hosts.b);

    let counted = |scrape: &str| {
        sample(
            scrape,
            "tcptrace_retransmits_total",
            &[("comm", "tt-scenario")],
        )
        .unwrap_or(0.0)
    };
    let scrape = daemon.scrape_until(Duration::from_secs(15), |s| counted(s) >= 2.0);
    let kernel =
        nstat(&hosts.a)["TcpRetransSegs"] - before.get("TcpRetransSegs").copied().unwrap_or(0);
    assert!(
        !established_to(&hosts.b, PORT).is_empty(),
        "the connection lives on (the kernel retries for minutes)"
    );
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let kernel = kernel as f64;
    assert!(
        counted(&scrape) >= 2.0 && counted(&scrape) <= kernel,
        "the daemon counted {} retransmits of a live connection, the kernel {kernel}:\n{scrape}",
        counted(&scrape)
    );
    drop((client, server));
}

/// A client killed while connected (Debian's `redis-cli` waiting on a
/// subscription to `redis-server`, sent SIGKILL, as a restart or the OOM
/// killer does): the kernel closes its files as it exits, so its code never
/// called `close()`. The churn finding names it as the closer, with no
/// close call site, and says the connection was closed at exit, in both
/// modes; the text report says so in words.
#[test]
fn a_connection_closed_by_its_process_dying_is_closed_at_exit() {
    const PORT: u16 = 18130;
    require_root();
    let hosts = HostPair::new("ttexit");
    let port = PORT.to_string();
    let every_event = Tracer::start(&["--port", &port]);
    let summary = Tracer::start_report_only(&["--port", &port]);
    let text = TextReport::start(&["--port", &port]);
    let redis = Redis::start(&hosts.a, hosts.a_addr, PORT);
    let client = redis::subscriber(&hosts.b, hosts.a_addr, PORT, "waiting");
    let pid = client.pid();
    // SAFETY: a signal to our own child (`ip netns exec` became redis-cli).
    assert_eq!(
        unsafe {
            libc::kill(
                i32::try_from(pid).expect("a pid fits in i32"),
                libc::SIGKILL,
            )
        },
        0
    );
    assert!(!client.wait_exit().success(), "redis-cli {pid} was killed");
    thread::sleep(Duration::from_millis(500));
    let (every_event, summary, text) = (every_event.stop(), summary.stop(), text.finish());
    drop(redis);

    for (mode, trace) in [("trace --json", &every_event), ("--report-only", &summary)] {
        let churn: Vec<&Value> = trace
            .findings("churn")
            .filter(|f| f["process"]["pid"] == pid)
            .collect();
        let [churn] = churn[..] else {
            panic!("{mode}: one churn finding of redis-cli {pid}: {churn:#?}");
        };
        let shown = without_frames(churn);
        assert_eq!(churn["role"], "active", "{mode}: {shown:#}");
        assert_eq!(churn["closed_first"], "local", "{mode}: {shown:#}");
        assert_eq!(churn["closed_at_exit"], 1, "{mode}: {shown:#}");
        assert_eq!(
            churn["closers"][0]["comm"], "redis-cli",
            "{mode}: {shown:#}"
        );
        assert!(
            churn["close_call_site"].is_null(),
            "{mode}: no close() call to name: {shown:#}"
        );
    }
    let fin = every_event
        .of_type("state")
        .find(|r| r["new"] == "FIN_WAIT1" && r["owner"]["pid"] == pid)
        .unwrap_or_else(|| panic!("redis-cli's FIN"));
    assert_eq!(fin["closer"]["comm"], "redis-cli", "{fin}");
    assert_eq!(
        every_event.summary()["summary"]["kernel"]["stack_errors"],
        0,
        "a close at exit has no user stack to take, and misses none"
    );
    assert!(
        text.contains("1 closed when their process exited"),
        "the text report says it: {text}"
    );
}
