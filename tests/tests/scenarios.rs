//! The incidents of docs/INCIDENTS.md, reproduced on the real kernel and
//! diagnosed by tcptrace with the process, the peer and the call site.
//!
//! Each test runs a `tt-scenario` workload (tests/src/bin/tt-scenario.rs)
//! under `tcptrace trace --json` and checks the findings of the report.
//! A second session in text mode runs alongside: when a test fails, its
//! human report and the JSON findings are printed with the failure.
#![expect(
    clippy::items_after_statements,
    reason = "a test declares its helper types where it first needs them"
)]
#![expect(
    clippy::similar_names,
    reason = "related bindings (names, named; client, clients) read best side by side"
)]
#![expect(
    clippy::too_many_lines,
    reason = "a real-kernel scenario reads top to bottom as one story"
)]

use std::{collections::BTreeSet, net::TcpListener, process::Command, thread, time::Duration};

use serde_json::Value;
use tcptrace_tests::{
    netns::HostPair,
    require_root,
    trace::{transition, without_frames, TextReport, Trace},
    tracefs, Tracer, Workload,
};

const SCENARIO_BIN: &str = env!("CARGO_BIN_EXE_tt-scenario");
/// The comm of every scenario process; sessions trace only these.
const COMM: &str = "tt-scenario";

// ------------------------------------------------------------ the workloads

/// A running `tt-scenario` (the harness's `Workload`).
fn scenario(args: &[&str]) -> Workload {
    Workload::spawn_command(Command::new(SCENARIO_BIN).args(args))
}

/// The same inside network namespace `netns`; `ip netns exec` execs the
/// program, so the pid is the scenario's.
fn scenario_in(netns: &str, args: &[&str]) -> Workload {
    Workload::spawn_command(
        Command::new("ip")
            .args(["netns", "exec", netns, SCENARIO_BIN])
            .args(args),
    )
}

// ------------------------------------------------------------ the sessions

/// Three tracing sessions over the same scenario: JSON for the
/// assertions, the same in summary mode (one kernel record per socket, as
/// the daemon runs) which must agree with it, and text for people when an
/// assertion fails.
struct Session {
    json: Option<Tracer>,
    summary: Option<Tracer>,
    text: Option<TextReport>,
}

impl Session {
    fn start() -> Self {
        let text = TextReport::start(&["--comm", COMM]);
        let summary = Tracer::start_report_only(&["--comm", COMM]);
        let json = Tracer::start(&["--comm", COMM]);
        Self {
            json: Some(json),
            summary: Some(summary),
            text: Some(text),
        }
    }

    fn tracer(&mut self) -> &mut Tracer {
        self.json.as_mut().expect("session running")
    }

    /// Stops both sessions; the workloads must still live (stacks are
    /// symbolized and `CLOSE_WAIT` holders listed while they do).
    fn stop(mut self) -> Diagnosis {
        let trace = self.json.take().expect("session running").stop();
        let summary = self.summary.take().expect("session running").stop();
        let text = self.text.take().expect("session running").finish();
        Diagnosis {
            trace,
            summary,
            text,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let (true, Some(text)) = (thread::panicking(), self.text.take()) {
            eprintln!(
                "---- tcptrace report when the test failed ----\n{}",
                text.finish()
            );
        }
    }
}

/// What a session reported.
struct Diagnosis {
    trace: Trace,
    /// The summary-mode session's report.
    summary: Trace,
    text: String,
}

/// Finding fields that summary mode must report exactly as every-event
/// mode does (timings are reconstructed there, so they are left out).
const EXACT_IN_SUMMARY_MODE: [&str; 18] = [
    "role",
    "peer",
    "connections",
    "active_closes",
    "passive_closes",
    "closed_first",
    "time_wait_now",
    "attempts",
    "established",
    "failures",
    "backoff",
    "sockets",
    "fds",
    "retransmits",
    "max_retransmits",
    "outcomes",
    "states",
    "syn_retransmits",
];

impl Diagnosis {
    /// The one finding of `kind` about `pid` that `matches`.
    fn finding<'a>(
        &'a self,
        kind: &'a str,
        pid: u32,
        matches: impl Fn(&Value) -> bool,
    ) -> &'a Value {
        let found = only_finding(&self.trace, "every-event mode", kind, pid, &matches);
        let skipped = self.summary.of_type("summary").last().map_or(0, |s| {
            s["summary"]["kernel"]["runs_skipped"].as_u64().unwrap_or(0)
        });
        if skipped > 0 {
            // The kernel skipped some of the summary session's program runs
            // (a softirq nested in a run of the same program on one CPU):
            // its findings may then differ, but it must say so.
            let totals = self.summary.of_type("report_totals").last();
            assert_eq!(
                totals.map(|t| &t["totals"]["incomplete"]),
                Some(&Value::Bool(true)),
                "summary mode skipped {skipped} kernel runs and must call its report incomplete"
            );
            eprintln!("summary mode skipped {skipped} kernel runs: `{kind}` not cross-checked");
            return found;
        }
        let twin = only_finding(&self.summary, "summary mode", kind, pid, &matches);
        for key in EXACT_IN_SUMMARY_MODE {
            assert_eq!(
                found.get(key),
                twin.get(key),
                "`{kind}` finding field `{key}`: every-event mode vs summary mode\n{:#}\n{:#}",
                without_frames(found),
                without_frames(twin)
            );
        }
        for site in ["call_site", "close_call_site"] {
            assert_eq!(
                found[site]["function"], twin[site]["function"],
                "`{kind}` {site}: every-event mode vs summary mode"
            );
        }
        found
    }
}

impl Drop for Diagnosis {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("---- tcptrace report ----\n{}", self.text);
            eprintln!("---- JSON findings ----");
            for record in self.trace.of_type("finding") {
                eprintln!("{}", without_frames(record));
            }
            for record in self.trace.of_type("report_totals") {
                eprintln!("{record}");
            }
        }
    }
}

/// The one finding of `kind` about `pid` that `matches` in `trace`.
fn only_finding<'a>(
    trace: &'a Trace,
    mode: &str,
    kind: &'a str,
    pid: u32,
    matches: &impl Fn(&Value) -> bool,
) -> &'a Value {
    let found: Vec<&Value> = trace
        .findings_of(kind, pid)
        .filter(|f| matches(f))
        .collect();
    assert!(
        found.len() == 1,
        "{mode}: expected one `{kind}` finding for pid {pid}, found {}: {:#?}\n\
         session summary (kernel counters): {}",
        found.len(),
        found.iter().map(|f| without_frames(f)).collect::<Vec<_>>(),
        trace
            .of_type("summary")
            .last()
            .map_or_else(|| "none".to_owned(), ToString::to_string)
    );
    found[0]
}

// ------------------------------------------------------------ assertions

/// The call site `site` (of `finding`) names `function`: as the frame it
/// picked, or as any frame of the stack.
fn assert_call_site(finding: &Value, site: &str, function: &str) {
    let call_site = &finding[site];
    let names = |name: &Value| name.as_str().is_some_and(|n| n.contains(function));
    let named = names(&call_site["function"])
        || call_site["frames"]
            .as_array()
            .is_some_and(|frames| frames.iter().any(|f| names(&f["function"])));
    assert!(
        named,
        "`{site}` of this {} finding does not name `{function}`: {:#}",
        finding["kind"],
        without_frames(finding)
    );
}

fn u64_of(finding: &Value, path: &[&str]) -> u64 {
    let value = path.iter().fold(finding, |v, key| &v[*key]);
    value.as_u64().unwrap_or_else(|| {
        panic!(
            "{} is not a count in {:#}",
            path.join("."),
            without_frames(finding)
        )
    })
}

fn f64_of(finding: &Value, key: &str) -> f64 {
    finding[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {:#}", without_frames(finding)))
}

fn set(items: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    items.into_iter().collect()
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

// ------------------------------------------------------------ story 1

/// A client opens a new connection for every request and closes it first:
/// its `TIME_WAIT` sockets are its own, counted per server endpoint and traced
/// back to the function that opens the connection.
#[test]
fn client_per_request_churn_is_blamed_on_the_client() {
    require_root();
    const N: usize = 25;
    let count = N.to_string();
    let session = Session::start();
    let mut server = scenario(&["serve", "127.0.0.1:0", &count, "respond"]);
    let server_addr = server.expect_line("listening ");
    let mut client = scenario(&["churn", &server_addr, &count]);
    let locals = set(client.expect_lines("local ", N));
    assert_eq!(locals.len(), N, "a new local port per request");
    client.expect_line("done");
    // The server closes after each EOF: then every client socket has
    // handed over to TIME_WAIT.
    assert_eq!(server.expect_lines("served ", N).last(), Some(&count));
    let report = session.stop();

    let churn = report.finding("churn", client.pid(), |f| {
        f["role"] == "active" && f["peer"] == server_addr.as_str()
    });
    assert_eq!(churn["process"]["comm"], COMM);
    assert_eq!(
        u64_of(churn, &["connections"]),
        N as u64,
        "{:#}",
        without_frames(churn)
    );
    assert_eq!(u64_of(churn, &["active_closes"]), N as u64);
    assert_eq!(u64_of(churn, &["passive_closes"]), 0);
    assert_eq!(churn["closed_first"], "local");
    assert_eq!(
        u64_of(churn, &["time_wait_now"]),
        N as u64,
        "every active close leaves a TIME_WAIT socket for 60 s"
    );
    assert_eq!(u64_of(churn, &["lifetime_us", "count"]), N as u64);
    assert!(
        u64_of(churn, &["lifetime_us", "p50"]) < 1_000_000,
        "short connections: {:#}",
        without_frames(churn)
    );
    assert!(f64_of(churn, "per_second") > 0.0);
    assert_eq!(
        churn["closers"]
            .as_array()
            .map(|c| c.iter().map(|p| p["pid"].clone()).collect::<Vec<_>>()),
        Some(vec![Value::from(client.pid())]),
        "the client is the only closer"
    );
    assert_call_site(churn, "call_site", "create_client_per_request");

    // The server closed second: no TIME_WAIT is blamed on it, and the
    // client that closes its own connections is not a reconnect loop.
    let served = report.finding("churn", server.pid(), |f| f["role"] == "passive");
    assert_eq!(u64_of(served, &["connections"]), N as u64);
    assert_eq!(served["closed_first"], "peer");
    assert_eq!(u64_of(served, &["time_wait_now"]), 0);
    assert_eq!(
        report
            .trace
            .findings_of("reconnect_loop", client.pid())
            .count(),
        0,
        "churn that the client closes itself is not a reconnect loop"
    );

    client.wait_success();
    server.wait_success();
}

// ------------------------------------------------------------ story 2

/// A server closes every connection at once; the client comes straight
/// back, again and again, at a steady pace: a reconnect loop without
/// back-off, the server closing first.
#[test]
fn reconnect_loop_without_backoff_is_flagged() {
    require_root();
    const N: usize = 12;
    let count = N.to_string();
    let session = Session::start();
    let mut server = scenario(&["serve", "127.0.0.1:0", &count, "close-at-once"]);
    let server_addr = server.expect_line("listening ");
    let mut client = scenario(&["reconnect", &server_addr, &count, "20"]);
    client.expect_lines("local ", N);
    client.expect_line("done");
    server.expect_line("done");
    let report = session.stop();

    let looping = report.finding("reconnect_loop", client.pid(), |f| {
        f["peer"] == server_addr.as_str()
    });
    assert_eq!(looping["process"]["comm"], COMM);
    assert_eq!(
        u64_of(looping, &["attempts"]),
        N as u64,
        "one attempt per connect: {:#}",
        without_frames(looping)
    );
    assert_eq!(looping["closed_first"], "peer");
    assert_eq!(looping["backoff"], "none");
    assert_eq!(u64_of(looping, &["failures"]), 0, "every connect succeeded");
    assert!(
        u64_of(looping, &["median_lifetime_us"]) < 1_000_000,
        "connections live a few ms: {:#}",
        without_frames(looping)
    );
    // 20 ms apart: a few dozen attempts a second, nowhere near back-off.
    let per_second = f64_of(looping, "per_second");
    assert!((1.0..=1000.0).contains(&per_second), "rate {per_second}/s");
    let (first_gap, last_gap) = (
        f64_of(looping, "first_gap_ms"),
        f64_of(looping, "last_gap_ms"),
    );
    assert!(
        first_gap >= 15.0 && last_gap >= 15.0 && last_gap < 2.0 * first_gap,
        "steady gaps of about 20 ms: {first_gap} ms -> {last_gap} ms"
    );
    assert_call_site(looping, "call_site", "reconnect_without_backoff");

    // The other side of the story: the server, closing first, holds the
    // TIME_WAIT sockets; the client holds none.
    let client_churn = report.finding("churn", client.pid(), |f| f["role"] == "active");
    assert_eq!(u64_of(client_churn, &["time_wait_now"]), 0);
    let server_churn = report.finding("churn", server.pid(), |f| f["role"] == "passive");
    assert_eq!(server_churn["closed_first"], "local");
    assert_eq!(u64_of(server_churn, &["time_wait_now"]), N as u64);

    client.wait_success();
    server.wait_success();
}

// ------------------------------------------------------------ story 3

/// A server reads EOF and never closes: its sockets sit in `CLOSE_WAIT`.
/// The report lists them by the server, with their fds, their peers, their
/// age, and the function that opened the listening socket.
#[test]
fn close_wait_leak_is_listed_with_fds_and_call_site() {
    require_root();
    const N: usize = 4;
    let count = N.to_string();
    let session = Session::start();
    let mut server = scenario(&["leak", "127.0.0.1:0", &count]);
    let server_addr = server.expect_line("listening ");
    let mut client = scenario(&["connect-close", &server_addr, &count]);
    let client_addrs = set(client.expect_lines("local ", N));
    client.expect_line("done");
    let mut fds = BTreeSet::new();
    for line in server.expect_lines("eof ", N) {
        // "PEER fd N"
        let fd = line.rsplit(' ').next().expect("fd number");
        fds.insert(fd.parse::<u64>().expect("fd number"));
    }
    server.expect_line("done");
    thread::sleep(Duration::from_millis(200));
    // The server is still alive: the report's dump finds its sockets.
    let report = session.stop();

    let server_pid = server.pid();
    let leak = report.finding("close_wait_leak", server_pid, |_| true);
    assert_eq!(leak["process"]["comm"], COMM);
    assert_eq!(
        u64_of(leak, &["sockets"]),
        N as u64,
        "{:#}",
        without_frames(leak)
    );
    let listed: BTreeSet<u64> = leak["fds"]
        .as_array()
        .expect("fds")
        .iter()
        .map(|h| {
            assert_eq!(h["pid"], server_pid, "holder of a leaked socket: {h}");
            h["fd"].as_u64().expect("fd")
        })
        .collect();
    assert_eq!(listed, fds, "the server's own fd numbers");
    let peers = set(leak["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p.as_str().expect("peer").to_owned()));
    assert_eq!(peers, client_addrs, "the clients that closed");
    let age = f64_of(leak, "oldest_age_s");
    let elapsed = report
        .trace
        .of_type("report_totals")
        .last()
        .and_then(|t| t["totals"]["elapsed_s"].as_f64())
        .expect("report totals");
    assert!(
        age > 0.2 && age <= elapsed + 0.5,
        "in CLOSE_WAIT since the client closed, during the session ({elapsed} s): {age} s"
    );
    assert_eq!(
        leak["age_is_lower_bound"], false,
        "the sockets entered CLOSE_WAIT while tracing"
    );
    assert_call_site(leak, "call_site", "serve_and_never_close");

    // The clients' closed sockets wait in the FIN_WAIT2 timewait substate
    // (their FIN acknowledged, the server's never sent), not in TIME_WAIT:
    // the kernel's counts say so, as ss does.
    let churn = report.finding("churn", client.pid(), |f| f["role"] == "active");
    let ss = |state: &str| {
        let out = Command::new("ss")
            .args(["-Htan", "state", state, "dst", &server_addr])
            .output()
            .expect("run ss");
        String::from_utf8_lossy(&out.stdout).lines().count() as u64
    };
    let in_fin_wait2 = ss("fin-wait-2");
    assert_eq!(
        in_fin_wait2, N as u64,
        "ss: the clients' sockets in FIN-WAIT-2"
    );
    assert_eq!(
        (
            u64_of(churn, &["time_wait_now"]),
            u64_of(churn, &["time_wait_kernel"]),
            u64_of(churn, &["fin_wait2_kernel"]),
        ),
        (N as u64, ss("time-wait"), in_fin_wait2),
        "the clients' timewait sockets, modelled and in the kernel: {:#}",
        without_frames(churn)
    );

    client.wait_success();
    server.wait_success();
}

/// A server reads EOF, the client's host vanishes, and only then does the
/// server close: its FIN is retransmitted to nobody until the kernel gives
/// up (`tcp_orphan_retries` = 2 in the server's namespace). The report
/// blames the server's late `close()` and says the peer never acknowledged.
///
/// The kernel sometimes runs no BPF program for a tracepoint hit (see
/// `tracefs::Hits::runs_missed`); when both sockets give up in one such
/// softirq, no session sees them end. A tracefs witness of the server
/// port's state changes tells that case, and the story is run again
/// (three times at most).
#[test]
fn late_close_to_a_vanished_peer_is_a_dead_peer_fin() {
    require_root();
    const RUNS: usize = 3;
    for attempt in 1..=RUNS {
        match late_close_story() {
            Story::Told => return,
            Story::HitsMissed(why) => {
                eprintln!("run {attempt} of {RUNS}: {why}; running it again");
            }
        }
    }
    panic!("in each of {RUNS} runs the kernel ran no program for some of the story's transitions");
}

/// How one run of a story ended: checked, or not comparable because the
/// kernel ran no BPF program for some of its transitions.
enum Story {
    Told,
    HitsMissed(String),
}

/// One run of [`late_close_to_a_vanished_peer_is_a_dead_peer_fin`].
fn late_close_story() -> Story {
    const N: usize = 2;
    let count = N.to_string();
    let hosts = HostPair::new("ttsc-dp");
    hosts.sysctl(&hosts.a, "net.ipv4.tcp_orphan_retries", "2");
    let mut session = Session::start();
    let mut server = scenario_in(
        &hosts.a,
        &["late-close", &format!("{}:0", hosts.a_addr), &count],
    );
    let server_addr = server.expect_line("listening ");
    let server_port = server_addr
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .expect("the server's port");
    let witness = tracefs::Retransmits::start(server_port);
    let mut client = scenario_in(&hosts.b, &["connect-close", &server_addr, &count]);
    let client_addrs = set(client.expect_lines("local ", N));
    client.expect_line("done");
    server.expect_lines("eof ", N);
    // The server acknowledges the client's FIN with a delayed ACK; only once
    // it arrived (FIN_WAIT2) is the client's side quiet, and does the
    // client's host vanish: nothing it receives is answered any more.
    let mut acknowledged = 0;
    let client_fins_acked = session.tracer().wait_for(Duration::from_secs(5), |r| {
        if r["type"] == "state"
            && r["old"] == "FIN_WAIT1"
            && r["new"] == "FIN_WAIT2"
            && r["local"]
                .as_str()
                .is_some_and(|l| client_addrs.contains(l))
        {
            acknowledged += 1;
        }
        acknowledged == N
    });
    assert!(
        client_fins_acked,
        "the server did not acknowledge the clients' FINs in time"
    );
    hosts.drop_ingress(&hosts.b);
    server.send_line("close");
    server.expect_line("closed");
    // RTO 200 ms doubling, two orphan retries: the kernel gives up after
    // about 1.4 s (3 s at worst). Wait for both sockets to end, bounded.
    let mut ended = 0;
    let both_ended = session.tracer().wait_for(Duration::from_secs(12), |r| {
        if r["type"] == "state"
            && r["old"] == "LAST_ACK"
            && r["new"] == "CLOSE"
            && r["local"] == server_addr.as_str()
        {
            ended += 1;
        }
        ended == N
    });
    let report = session.stop();
    if !both_ended {
        // Every transition on the port after the server's listen(), which
        // the witness started after.
        let on_port = |r: &&Value| {
            [&r["local"], &r["remote"]].iter().any(|e| {
                e.as_str()
                    .is_some_and(|e| e.ends_with(&format!(":{server_port}")))
            })
        };
        let printed = report
            .trace
            .of_type("state")
            .filter(on_port)
            .filter(|r| transition(r) != "CLOSE->LISTEN")
            .count() as u64;
        let hits = witness.hits().state_changes_on_port;
        if hits > printed {
            return Story::HitsMissed(format!(
                "{} transitions on port {server_port} that trace --json never printed \
                 ({hits} tracepoint hits, {printed} events)",
                hits - printed
            ));
        }
        // What the kernel and the session saw of the server's sockets.
        let ss = Command::new("ip")
            .args(["netns", "exec", &hosts.a, "ss", "-tanoi"])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default();
        let seen: Vec<String> = report
            .trace
            .about(&server_addr)
            .map(|r| format!("{} {} {}", r["ktime_ns"], r["type"], transition(r)))
            .collect();
        panic!(
            "the server's {N} sockets did not leave LAST_ACK within 12 s\n\
             ss -tanoi in {}:\n{ss}\ntrace --json about {server_addr}:\n{}",
            hosts.a,
            seen.join("\n")
        );
    }

    let server_pid = server.pid();
    let dead: Vec<&Value> = report
        .trace
        .findings_of("dead_peer_fin", server_pid)
        .collect();
    assert!(
        !dead.is_empty(),
        "no dead_peer_fin finding for {server_pid}"
    );
    let mut sockets = 0;
    let mut gave_up = 0;
    for finding in &dead {
        assert_eq!(finding["process"]["comm"], COMM);
        // A server's late closes are grouped by client address (port 0).
        let peer = finding["peer"].as_str().expect("peer");
        assert!(
            client_addrs.iter().any(|c| c
                .rsplit_once(':')
                .map(|(ip, _)| format!("{ip}:0"))
                .as_deref()
                == Some(peer)),
            "peer {peer} is the address of the vanished clients {client_addrs:?}"
        );
        assert!(
            u64_of(finding, &["retransmits"]) >= 2,
            "FIN retransmits: {:#}",
            without_frames(finding)
        );
        assert!(u64_of(finding, &["max_retransmits"]) >= 2);
        assert_eq!(finding["states"], serde_json::json!(["LAST_ACK"]));
        assert_eq!(u64_of(finding, &["outcomes", "acknowledged"]), 0);
        assert_eq!(u64_of(finding, &["outcomes", "reset"]), 0);
        assert_eq!(u64_of(finding, &["outcomes", "still_trying"]), 0);
        let seconds = f64_of(finding, "seconds");
        assert!(
            (0.5..12.0).contains(&seconds),
            "FIN sent -> gave up: {seconds} s"
        );
        let verdict = finding["verdict"].as_str().expect("verdict");
        assert!(verdict.contains("never acknowledged"), "verdict: {verdict}");
        sockets += u64_of(finding, &["sockets"]);
        gave_up += u64_of(finding, &["outcomes", "gave_up"]);
    }
    assert_eq!(
        sockets,
        N as u64,
        "closed sockets: {:#?}",
        dead.iter().map(|f| without_frames(f)).collect::<Vec<_>>()
    );
    assert_eq!(gave_up, N as u64, "the kernel gave up on every one");
    // close_after_peer_vanished calls libc's close() itself (the drop of
    // each stream is inlined), as most programs do: the direct caller of
    // close() is the call site to name.
    for finding in &dead {
        assert_call_site(finding, "call_site", "close_after_peer_vanished");
    }

    client.wait_success();
    server.wait_success();
    drop(hosts);
    Story::Told
}

// ------------------------------------------------------------ story 4

/// Connects to a closed loopback port are refused at once: counted as
/// refused for that destination, with the connecting function.
#[test]
fn refused_connects_are_counted_per_destination() {
    require_root();
    const N: usize = 5;
    let count = N.to_string();
    let target = format!("127.0.0.1:{}", closed_port());
    let session = Session::start();
    let mut client = scenario(&["refused", &target, &count]);
    client.expect_lines("refused", N);
    client.expect_line("done");
    let report = session.stop();

    let connect = report.finding("connect", client.pid(), |f| f["peer"] == target.as_str());
    assert_eq!(connect["process"]["comm"], COMM);
    assert_eq!(
        u64_of(connect, &["attempts"]),
        N as u64,
        "{:#}",
        without_frames(connect)
    );
    assert_eq!(u64_of(connect, &["established"]), 0);
    assert!(connect["latency_us"].is_null(), "nothing was established");
    assert_eq!(u64_of(connect, &["failures", "refused"]), N as u64);
    for other in ["timed_out", "unreachable", "reset", "aborted", "other"] {
        assert_eq!(u64_of(connect, &["failures", other]), 0, "{other}");
    }
    assert_call_site(connect, "call_site", "connect_to_closed_port");

    client.wait_success();
}

/// A connect to an address that drops everything: the SYN is retransmitted
/// (`tcp_syn_retries` = 1 in the client's namespace) until the kernel gives
/// up; counted as timed out, with the SYN retransmits and the function.
#[test]
fn black_holed_connect_times_out_with_syn_retransmits() {
    require_root();
    let hosts = HostPair::new("ttsc-bh");
    hosts.sysctl(&hosts.b, "net.ipv4.tcp_syn_retries", "1");
    // The server's host drops everything: no RST, no ICMP.
    hosts.drop_ingress(&hosts.a);
    let target = format!("{}:7", hosts.a_addr);
    let session = Session::start();
    let mut client = scenario_in(&hosts.b, &["black-hole", &target]);
    // SYN, one retransmit after 1 s, given up 2 s later.
    let waited = client.expect_line("timed out after ");
    client.expect_line("done");
    let report = session.stop();

    let connect = report.finding("connect", client.pid(), |f| f["peer"] == target.as_str());
    assert_eq!(connect["process"]["comm"], COMM);
    assert_eq!(
        u64_of(connect, &["attempts"]),
        1,
        "{:#}",
        without_frames(connect)
    );
    assert_eq!(u64_of(connect, &["established"]), 0);
    assert_eq!(
        u64_of(connect, &["failures", "timed_out"]),
        1,
        "connect() gave up after {waited}"
    );
    for other in ["refused", "unreachable", "reset", "aborted", "other"] {
        assert_eq!(u64_of(connect, &["failures", other]), 0, "{other}");
    }
    assert!(
        u64_of(connect, &["syn_retransmits"]) >= 1,
        "SYN retransmits: {:#}",
        without_frames(connect)
    );
    assert_call_site(connect, "call_site", "connect_to_black_hole");

    client.wait_success();
    drop(hosts);
}
