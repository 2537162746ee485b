//! Resets against the kernel's counters, in every mode. Servers in one
//! namespace the test creates close accepted connections abortively
//! (`SO_LINGER` 0: an RST), and a client in the other namespace connects
//! to a port nobody listens on (the kernel answers with an RST and no
//! socket). The truth is `nstat` of those namespaces:
//!
//! - RST segments sent, by both sides: `TcpOutRsts` of each;
//! - resets received by the clients: their connections reset while
//!   ESTABLISHED (`TcpEstabResets`) and their connects refused
//!   (`TcpAttemptFails`), since nothing else fails or aborts there;
//! - connections ended by a reset, per side: `TcpEstabResets` (the
//!   servers' own aborts from ESTABLISHED count there too) plus
//!   `TcpAttemptFails`.
//!
//! `trace --json` shows every RST (its `reset_sent` and `reset_received`
//! events); the churn findings of every mode count the connections a reset
//! ended (`resets`); the daemon counts the resets of known sockets by
//! process, and the kernel's count of those sent without a socket.

use std::{
    collections::BTreeMap,
    fmt::Write,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tcptrace_tests::{
    daemon::{self, free_loopback_addr, sample, Daemon},
    kernel_counts::{nstat, ss_count},
    netns::HostPair,
    programs::{shell_in, Nginx},
    redis::{self, Redis},
    require_root,
    trace::{transition, Trace},
    Tracer, Workload,
};

const SCENARIO_BIN: &str = env!("CARGO_BIN_EXE_tt-scenario");
/// One server on each, each aborting the one connection it accepts.
const ABORT_PORTS: [u16; 3] = [18340, 18341, 18342];
/// Nothing listens here.
const CLOSED_PORT: u16 = 18349;
const REFUSED: usize = 5;

fn scenario_in(netns: &str, args: &[&str]) -> Workload {
    Workload::spawn_command(
        Command::new("ip")
            .args(["netns", "exec", netns, SCENARIO_BIN])
            .args(args),
    )
}

/// Whether a record's local or remote endpoint has one of `ports`.
fn on_ports(record: &Value, ports: &[u16]) -> bool {
    let port = |key: &str| {
        record[key]
            .as_str()
            .and_then(|e| e.rsplit_once(':'))
            .and_then(|(_, p)| p.parse::<u16>().ok())
    };
    [port("local"), port("remote")]
        .into_iter()
        .flatten()
        .any(|p| ports.contains(&p))
}

/// Whether a record's endpoint is one of the test's ports.
fn ours(record: &Value) -> bool {
    on_ports(record, &ABORT_PORTS) || on_ports(record, &[CLOSED_PORT])
}

/// The connections a reset ended, by the churn findings of one role of
/// the test's processes.
fn reset_connections(trace: &Trace, role: &str) -> u64 {
    trace
        .findings("churn")
        .filter(|f| f["process"]["comm"] == "tt-scenario" && f["role"] == role)
        .map(|f| f["resets"].as_u64().unwrap_or(0))
        .sum()
}

/// One source's figures ("-" where it has none).
#[derive(Debug, PartialEq, Eq)]
struct Resets {
    /// RST segments sent by either side.
    sent: Option<u64>,
    /// Resets the clients received.
    received: Option<u64>,
    /// Connections a reset ended: the servers', the clients'.
    server_connections: Option<u64>,
    client_connections: Option<u64>,
}

impl Resets {
    fn row(&self, name: &str) -> String {
        let cell = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        format!(
            "{name:<24}{:>11}{:>15}{:>17}{:>17}\n",
            cell(self.sent),
            cell(self.received),
            cell(self.server_connections),
            cell(self.client_connections)
        )
    }
}

/// The first line of the tables the tests print.
const TABLE_HEADER: &str =
    "source                    RSTs sent  RSTs received  conns reset srv  conns reset cli\n";

/// The kernel's figures: `nstat` deltas of the servers' namespace `a` and
/// the clients' `b` since `before`.
fn kernel_resets(hosts: &HostPair, before: &[BTreeMap<String, u64>; 2]) -> Resets {
    let delta = |side: usize, key: &str| {
        let ns = if side == 0 { &hosts.a } else { &hosts.b };
        nstat(ns)[key] - before[side].get(key).copied().unwrap_or(0)
    };
    let ended = |side| delta(side, "TcpEstabResets") + delta(side, "TcpAttemptFails");
    Resets {
        sent: Some(delta(0, "TcpOutRsts") + delta(1, "TcpOutRsts")),
        received: Some(ended(1)),
        server_connections: Some(ended(0)),
        client_connections: Some(ended(1)),
    }
}

/// Three servers each abort the connection they accepted; a client is
/// refused `REFUSED` times. Returns the processes, alive.
fn drive(hosts: &HostPair) -> Vec<Workload> {
    let mut alive = Vec::new();
    for port in ABORT_PORTS {
        let addr = format!("{}:{port}", hosts.a_addr);
        let mut server = scenario_in(&hosts.a, &["abort-after", &addr, "100", "silent"]);
        let listening = server.expect_line("listening ");
        let mut client = scenario_in(&hosts.b, &["idle", &listening, "none"]);
        client.expect_line("done");
        server.expect_line("reset");
        alive.extend([server, client]);
    }
    let closed_port = format!("{}:{CLOSED_PORT}", hosts.a_addr);
    let mut refused = scenario_in(&hosts.b, &["refused", &closed_port, &REFUSED.to_string()]);
    refused.expect_lines("refused", REFUSED);
    alive.push(refused);
    // The clients' sockets end at the reset; let the servers' ends settle.
    thread::sleep(Duration::from_millis(300));
    alive
}

/// `tcptrace_resets_total{comm="tt-scenario", direction}`.
fn scraped(scrape: &str, direction: &str) -> u64 {
    resets_of(scrape, "tt-scenario", direction)
}

/// The daemon's count of resets of `comm`'s sockets in `direction`.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the counter is whole, non-negative and far below 2^53"
)]
fn resets_of(scrape: &str, comm: &str, direction: &str) -> u64 {
    sample(
        scrape,
        "tcptrace_resets_total",
        &[("comm", comm), ("direction", direction)],
    )
    .map_or(0, |v| v as u64)
}

/// Every mode, started with `filter`: an every-event session, a summary
/// session (`--report-only`) and a daemon refreshing every second.
fn every_mode(filter: &[&str]) -> (Tracer, Tracer, Daemon) {
    let daemon_args = [filter, &["--refresh", "1s"]].concat();
    (
        Tracer::start(filter),
        Tracer::start_report_only(filter),
        Daemon::start(&free_loopback_addr(), &daemon_args),
    )
}

/// `trace --json`'s events of `kind` about the test's ports.
fn events(trace: &Trace, kind: &str, keep: impl Fn(&Value) -> bool) -> u64 {
    trace
        .records
        .iter()
        .filter(|r| r["type"] == kind && ours(r) && keep(r))
        .count() as u64
}

#[test]
fn resets_agree_with_the_kernel() {
    require_root();
    let hosts = HostPair::new("ttrst");
    let ports: Vec<String> = ABORT_PORTS
        .iter()
        .chain([&CLOSED_PORT])
        .map(ToString::to_string)
        .collect();
    let filter: Vec<&str> = ports.iter().flat_map(|p| ["--port", p.as_str()]).collect();
    let (every_event, summary, daemon) = every_mode(&filter);
    let before = [nstat(&hosts.a), nstat(&hosts.b)];
    let alive = drive(&hosts);

    let kernel = kernel_resets(&hosts, &before);
    let (aborts, refused) = (ABORT_PORTS.len() as u64, REFUSED as u64);
    assert_eq!(
        (kernel.sent, kernel.received),
        (Some(aborts + refused), Some(aborts + refused)),
        "the run: one RST per abort and per refused connect"
    );
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| {
        scraped(s, "sent") >= aborts && Some(scraped(s, "received")) >= kernel.received
    });
    let (every_event, summary) = (every_event.stop(), summary.stop());

    let of_findings = |trace: &Trace, sent, received| Resets {
        sent,
        received,
        server_connections: Some(reset_connections(trace, "passive")),
        client_connections: Some(reset_connections(trace, "active")),
    };
    let json = of_findings(
        &every_event,
        Some(events(&every_event, "reset_sent", |_| true)),
        Some(events(&every_event, "reset_received", |_| true)),
    );
    let report_only = of_findings(&summary, None, None);
    let without_socket = events(&every_event, "reset_sent", |r| r["sock"] == "0x0");
    // Host-wide: the packet of a reset without a socket is not read, so no
    // filter applies to this count.
    let host_wide = sample(
        &scrape,
        "tcptrace_kernel_resets_sent_without_socket_total",
        &[],
    )
    .unwrap_or(0.0);
    let table = [
        TABLE_HEADER.to_owned(),
        kernel.row("kernel (nstat)"),
        json.row("trace --json"),
        report_only.row("trace --report-only"),
        format!(
            "daemon (metrics)        {:>11}{:>15}\n",
            format!("{} + {host_wide}", scraped(&scrape, "sent")),
            scraped(&scrape, "received")
        ),
        format!(
            "trace --json: {without_socket} RSTs sent without a socket; the daemon's second \
             figure is the kernel's host-wide count of those"
        ),
    ]
    .concat();
    eprintln!("{table}");
    assert_eq!(json, kernel, "{table}");
    assert_eq!(without_socket, refused, "{table}");
    let connections = |r: &Resets| (r.server_connections, r.client_connections);
    assert_eq!(connections(&report_only), connections(&kernel), "{table}");
    // The daemon counts the resets of the sockets it knows by their owner.
    assert_eq!(scraped(&scrape, "sent"), aborts, "{table}");
    assert_eq!(
        Some(scraped(&scrape, "received")),
        kernel.received,
        "{table}"
    );
    assert!(
        host_wide >= 5.0,
        "at least the {REFUSED} refused connects': {table}"
    );
    drop(alive);
}

/// The server of `a_reset_after_a_last_ack_disconnect_is_counted_once`.
const LAST_ACK_PORT: u16 = 18360;

/// `tt-scenario abort-in-last-ack` on `server`, in namespace `a`: once
/// `ss` sees the server's end in `LAST-ACK` and the client's in
/// `FIN-WAIT-2`, the server's end is closed with `SO_LINGER` 0. Returns
/// the process, alive (the client's end stays open).
fn abort_in_last_ack(hosts: &HostPair, server: &str) -> Workload {
    let mut scenario = enter_last_ack(hosts, server);
    abort(&mut scenario);
    scenario
}

/// `abort_in_last_ack` up to the abort: the server's end waits in
/// `LAST_ACK` with data unsent.
fn enter_last_ack(hosts: &HostPair, server: &str) -> Workload {
    let mut scenario = scenario_in(&hosts.a, &["abort-in-last-ack", server]);
    scenario.expect_line("listening ");
    let unsent = scenario.expect_line("last-ack unsent ");
    assert_eq!(
        (
            ss_count(&hosts.a, "last-ack"),
            ss_count(&hosts.a, "fin-wait-2")
        ),
        (1, 1),
        "the server's end in LAST_ACK ({unsent} bytes unsent), the client's in FIN_WAIT2"
    );
    scenario
}

/// The server's end of `enter_last_ack` closed with `SO_LINGER` 0.
fn abort(scenario: &mut Workload) {
    scenario.send_line("abort");
    scenario.expect_line("aborted in LAST_ACK");
    // The reset reaches the client's end at once; let the records drain.
    thread::sleep(Duration::from_millis(300));
}

/// `trace --json`'s records on `port`, one line each: the socket (its
/// address's last digits), the event, the endpoints.
fn listing(trace: &Trace, port: u16) -> String {
    let mut lines = String::new();
    for r in trace.records.iter().filter(|r| on_ports(r, &[port])) {
        let text = |key: &str| r[key].as_str().unwrap_or("-").to_owned();
        let sock = text("sock");
        let what = match text("type").as_str() {
            "state" => transition(r),
            "reset_sent" => format!("reset_sent in {}", text("state")),
            other => other.to_owned(),
        };
        let _ = writeln!(
            lines,
            "  {:<6} {what:<22} {} -> {}",
            sock.get(sock.len().saturating_sub(6)..).unwrap_or("-"),
            text("local"),
            text("remote")
        );
    }
    lines
}

/// The one `reset_sent` on `port` is the close's: sent by `server`'s end
/// that went `LAST_ACK -> CLOSE`, after that, from CLOSE.
fn assert_reset_of_the_close(trace: &Trace, port: u16, server: &str, table: &str) {
    let on_port = |kind: &'static str| {
        trace
            .records
            .iter()
            .filter(move |r| r["type"] == kind && on_ports(r, &[port]))
    };
    let closes: Vec<&Value> = on_port("state")
        .filter(|r| r["old"] == "LAST_ACK" && r["new"] == "CLOSE")
        .collect();
    let resets: Vec<&Value> = on_port("reset_sent").collect();
    let ([close], [reset]) = (&closes[..], &resets[..]) else {
        panic!("one LAST_ACK -> CLOSE and one reset sent on the port: {table}");
    };
    assert_eq!(reset["state"], "CLOSE", "{table}");
    assert_eq!(reset["sock"], close["sock"], "the server's end: {table}");
    assert_eq!(reset["local"], server, "{table}");
    assert!(
        reset["ktime_ns"].as_u64() >= close["ktime_ns"].as_u64(),
        "after the CLOSE: {table}"
    );
    // Sent after the socket's record was gone, it still names the socket's
    // owner, closer and namespace: the CLOSE's.
    for field in ["owner", "closer", "netns", "cgroup_id"] {
        assert_eq!(reset[field], close[field], "the reset's {field}: {table}");
    }
    assert!(reset["owner"]["pid"].as_u64().is_some(), "{table}");
}

/// `tcp_disconnect` resets a connection from `LAST_ACK` only when data it
/// was asked to send never left (`TCP_DISCONNECT_WITH_DATA`). One
/// connection in namespace `a` gets there (`abort_in_last_ack`): the
/// server's end in `LAST_ACK`, its FIN queued behind data the client's
/// full window holds back, is closed with `SO_LINGER` 0. The kernel sends
/// one RST, after the CLOSE (`TcpOutRsts` and `TcpExtTCPAbortOnData` 1);
/// it reaches the client's end in `FIN_WAIT2`, the only other socket
/// there, which counts it nowhere (`TcpEstabResets` counts resets of
/// `ESTABLISHED` and `CLOSE_WAIT` sockets only).
///
/// Every mode counts that reset once: `trace --json` shows one
/// `reset_sent`, the server's, in CLOSE after its `LAST_ACK -> CLOSE`;
/// the session counts of `--report-only` and the daemon's metrics say one
/// sent and one received; the churn findings see both ends ended by it.
#[test]
fn a_reset_after_a_last_ack_disconnect_is_counted_once() {
    require_root();
    let hosts = HostPair::new("ttrla");
    let port = LAST_ACK_PORT.to_string();
    let filter = ["--port", port.as_str()];
    let (every_event, summary, daemon) = every_mode(&filter);
    let before = nstat(&hosts.a);
    let server = format!("{}:{LAST_ACK_PORT}", hosts.a_addr);
    let alive = abort_in_last_ack(&hosts, &server);

    let delta = |key: &str| nstat(&hosts.a)[key] - before.get(key).copied().unwrap_or(0);
    let kernel = Resets {
        sent: Some(delta("TcpOutRsts")),
        received: None,
        server_connections: None,
        client_connections: None,
    };
    assert_eq!(
        (
            kernel.sent,
            delta("TcpExtTCPAbortOnData"),
            delta("TcpEstabResets")
        ),
        (Some(1), 1, 0),
        "the run: one abortive close from LAST_ACK, one RST"
    );
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| {
        scraped(s, "sent") >= 1 && scraped(s, "received") >= 1
    });
    let (every_event, summary) = (every_event.stop(), summary.stop());

    let on_port = |kind: &str| {
        every_event
            .of_type(kind)
            .filter(|r| on_ports(r, &[LAST_ACK_PORT]))
            .count() as u64
    };
    let json = Resets {
        sent: Some(on_port("reset_sent")),
        received: Some(on_port("reset_received")),
        server_connections: Some(reset_connections(&every_event, "passive")),
        client_connections: Some(reset_connections(&every_event, "active")),
    };
    // The session's counts: the kernel lets only the port's events by.
    let session = &summary.summary()["summary"];
    let report_only = Resets {
        sent: session["resets_sent"].as_u64(),
        received: session["resets_received"].as_u64(),
        server_connections: Some(reset_connections(&summary, "passive")),
        client_connections: Some(reset_connections(&summary, "active")),
    };
    let metrics = Resets {
        sent: Some(scraped(&scrape, "sent")),
        received: Some(scraped(&scrape, "received")),
        server_connections: None,
        client_connections: None,
    };
    let table = [
        TABLE_HEADER.to_owned(),
        kernel.row("kernel (nstat)"),
        json.row("trace --json"),
        report_only.row("trace --report-only"),
        metrics.row("daemon (metrics)"),
        "trace --json on the port:\n".to_owned(),
        listing(&every_event, LAST_ACK_PORT),
    ]
    .concat();
    eprintln!("{table}");
    for mode in [&json, &report_only, &metrics] {
        assert_eq!(mode.sent, kernel.sent, "{table}");
        assert_eq!(mode.received, Some(1), "the client's: {table}");
    }
    let connections = |r: &Resets| (r.server_connections, r.client_connections);
    assert_eq!(connections(&json), (Some(1), Some(1)), "{table}");
    assert_eq!(connections(&report_only), connections(&json), "{table}");
    assert_reset_of_the_close(&every_event, LAST_ACK_PORT, &server, &table);
    drop(alive);
}

const OLDER_LAST_ACK_PORT: u16 = 18361;

/// `a_reset_after_a_last_ack_disconnect_is_counted_once` for a connection
/// older than the sessions: the server's end is already in `LAST_ACK` when
/// they start, so the kernel programs meet it first at its CLOSE, with no
/// record of it. That CLOSE announces the reset that follows
/// (`RESET_BY_CLOSE`) and leaves a closed record for the reset program
/// to find the announcement in: every mode counts the one RST once.
#[test]
fn a_last_ack_disconnect_older_than_the_sessions_is_counted_once() {
    require_root();
    let hosts = HostPair::new("ttrlo");
    let port = OLDER_LAST_ACK_PORT.to_string();
    let filter = ["--port", port.as_str()];
    let server = format!("{}:{OLDER_LAST_ACK_PORT}", hosts.a_addr);
    let mut scenario = enter_last_ack(&hosts, &server);
    let (every_event, summary, daemon) = every_mode(&filter);
    let before = nstat(&hosts.a);
    abort(&mut scenario);
    let sent = nstat(&hosts.a)["TcpOutRsts"] - before.get("TcpOutRsts").copied().unwrap_or(0);
    assert_eq!(
        sent, 1,
        "the run: one abortive close from LAST_ACK, one RST"
    );
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| scraped(s, "sent") >= 1);
    let (every_event, summary) = (every_event.stop(), summary.stop());

    let json = every_event
        .of_type("reset_sent")
        .filter(|r| on_ports(r, &[OLDER_LAST_ACK_PORT]))
        .count() as u64;
    let report_only = summary.summary()["summary"]["resets_sent"].as_u64();
    let table = format!(
        "RSTs sent: kernel (nstat) {sent}, trace --json {json}, trace --report-only {}, \
         daemon {}\ntrace --json on the port:\n{}",
        report_only.map_or_else(|| "-".to_owned(), |n| n.to_string()),
        scraped(&scrape, "sent"),
        listing(&every_event, OLDER_LAST_ACK_PORT)
    );
    eprintln!("{table}");
    assert_eq!(json, sent, "trace --json: {table}");
    assert_eq!(report_only, Some(sent), "trace --report-only: {table}");
    assert_eq!(scraped(&scrape, "sent"), sent, "the daemon: {table}");
    assert_reset_of_the_close(&every_event, OLDER_LAST_ACK_PORT, &server, &table);
    drop(scenario);
}

/// Connections of `send-into-reset`: the peer's reset mostly reaches the
/// client inside its `write()`, where the kernel processes it from the
/// socket's backlog in the writer's system call (29 of 40 here). The CLOSE
/// is still the peer's doing, never a close call by the writer, in both
/// modes: `sk_err` (ECONNRESET) tells (`transition::ended_by_peer_reset`),
/// which in summary mode also counts the reset received. Each session may
/// see fewer connections by the events it says it did not see, no more.
#[test]
fn a_reset_processed_in_the_writers_system_call_is_the_peers_doing() {
    const CONNECTIONS: u64 = 20;
    require_root();
    let filter = ["--comm", "tt-scenario"];
    let every_event = Tracer::start(&filter);
    let summary = Tracer::start_report_only(&filter);
    let mut scenario = Workload::spawn_command(Command::new(SCENARIO_BIN).args([
        "send-into-reset",
        "127.0.0.1:0",
        &CONNECTIONS.to_string(),
    ]));
    let server = scenario.expect_line("listening ");
    scenario.expect_line("done");
    let writer = scenario.pid();
    let (every_event, summary) = (every_event.stop(), summary.stop());

    let closes: Vec<&Value> = every_event
        .records
        .iter()
        .filter(|r| r["type"] == "state" && r["new"] == "CLOSE" && r["remote"] == server.as_str())
        .collect();
    let seen = closes.len() as u64;
    let unseen_every_event = every_event.unseen();
    assert!(
        seen <= CONNECTIONS && seen + unseen_every_event >= CONNECTIONS,
        "{seen} of the clients' {CONNECTIONS} CLOSEs, {unseen_every_event} events unseen"
    );
    for close in &closes {
        assert_eq!(close["old"], "ESTABLISHED", "{close}");
        assert_eq!(close["error"], "ECONNRESET", "{close}");
        assert!(
            close["closer"].is_null(),
            "a reset taken for a close call: {close}"
        );
        assert!(
            close["actor"].is_null() || close["actor"]["pid"] == writer,
            "{close}"
        );
    }
    let in_write = closes.iter().filter(|c| !c["actor"].is_null()).count();
    assert!(
        in_write > 0,
        "no reset of {seen} was processed in the writer's system call, the case this test \
         is about (all in softirq)"
    );

    let clients: Vec<&Value> = summary
        .findings("churn")
        .filter(|f| f["process"]["comm"] == "tt-scenario" && f["role"] == "active")
        .collect();
    let sum = |key: &str| {
        clients
            .iter()
            .map(|f| f[key].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let (connections, unseen_summary) = (sum("connections"), summary.unseen());
    assert!(
        connections <= CONNECTIONS && connections + unseen_summary >= CONNECTIONS,
        "summary mode: {connections} client connections, {unseen_summary} events unseen"
    );
    assert_eq!(
        (sum("passive_closes"), sum("active_closes"), sum("resets")),
        (connections, 0, connections),
        "summary mode's client flows (closed by the peer, closed here, reset), {in_write} \
         resets in the writer's call: {clients:#?}"
    );
    assert!(
        clients.iter().all(|f| f["closers_total"] == 0),
        "{clients:#?}"
    );
}

const NGINX_PORT: u16 = 18370;
/// Clients that stall in their request header.
const STALLED: u64 = 3;

/// Debian's nginx, told to reset connections it times out
/// (`reset_timedout_connection`), gives up on `STALLED` clients that sent
/// half a request header (bash, `/dev/tcp`): each of its workers sets
/// `SO_LINGER` 0 and closes, so the kernel moves the socket to CLOSE and
/// then sends an RST (`TcpOutRsts`, and `TcpExtTCPAbortOnData` for
/// `SO_LINGER` 0, in nginx's namespace). The CLOSE announces that reset
/// and no record of its own is sent for it (`RESET_BY_CLOSE`), yet every
/// mode counts each reset once: `trace --json` shows a `reset_sent` in
/// CLOSE after each CLOSE, naming nginx's worker as closer; the session's
/// counts and the daemon's metrics say `STALLED` sent by nginx.
#[test]
fn nginx_resetting_timed_out_clients_is_counted_once_and_named() {
    require_root();
    let hosts = HostPair::new("ttrng");
    let port = NGINX_PORT.to_string();
    let filter = ["--port", port.as_str()];
    let (every_event, summary, daemon) = every_mode(&filter);
    let server = format!("{}:{NGINX_PORT}", hosts.a_addr);
    let nginx = Nginx::start_with(
        &hosts.a,
        &server,
        "reset_timedout_connection on; client_header_timeout 1s;",
    );
    let before = nstat(&hosts.a);
    let (ip, _) = server.rsplit_once(':').expect("address:port");
    shell_in(
        &hosts.b,
        Duration::from_secs(20),
        &format!(
            "for i in $(seq {STALLED}); do \
               bash -c 'exec 3<>/dev/tcp/{ip}/{NGINX_PORT}; \
                        printf \"GET / HTTP/1.1\\r\\n\" >&3; sleep 3' & \
             done; wait"
        ),
    );
    let delta = |key: &str| nstat(&hosts.a)[key] - before.get(key).copied().unwrap_or(0);
    let kernel = (delta("TcpOutRsts"), delta("TcpExtTCPAbortOnData"));
    assert_eq!(
        kernel,
        (STALLED, STALLED),
        "the run: nginx resets each stalled client, by SO_LINGER 0"
    );
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| {
        resets_of(s, "nginx", "sent") >= STALLED
    });
    let (every_event, summary) = (every_event.stop(), summary.stop());
    let table = format!(
        "{TABLE_HEADER}{}trace --json on the port:\n{}",
        Resets {
            sent: Some(kernel.0),
            received: None,
            server_connections: None,
            client_connections: None,
        }
        .row("kernel (nstat, nginx)"),
        listing(&every_event, NGINX_PORT)
    );
    eprintln!("{table}");

    let on_port = |kind: &'static str| {
        every_event
            .records
            .iter()
            .filter(move |r| r["type"] == kind && on_ports(r, &[NGINX_PORT]))
    };
    let resets: Vec<&Value> = on_port("reset_sent").collect();
    assert_eq!(
        resets.len() as u64,
        STALLED,
        "trace --json, {} events unseen: {table}",
        every_event.unseen()
    );
    for reset in resets {
        let close = on_port("state")
            .find(|r| r["sock"] == reset["sock"] && r["new"] == "CLOSE")
            .unwrap_or_else(|| panic!("the CLOSE of {reset}: {table}"));
        assert_eq!(close["old"], "ESTABLISHED", "{table}");
        assert_eq!(reset["state"], "CLOSE", "{table}");
        assert_eq!(reset["local"], server, "nginx's end: {table}");
        for field in ["owner", "closer", "netns", "cgroup_id"] {
            assert_eq!(reset[field], close[field], "the reset's {field}: {table}");
        }
        assert!(
            nginx.has_worker(reset["closer"]["pid"].as_u64()),
            "closed by a worker of nginx {:?}: {reset}\nits CLOSE: {close}",
            nginx.workers
        );
        assert_eq!(reset["closer"]["comm"], "nginx", "{reset}");
    }
    assert_eq!(
        summary.summary()["summary"]["resets_sent"].as_u64(),
        Some(STALLED),
        "trace --report-only: {table}"
    );
    assert_eq!(
        resets_of(&scrape, "nginx", "sent"),
        STALLED,
        "the daemon: {table}"
    );
    drop(nginx);
}

const REDIS_PORT: u16 = 18375;
/// `redis-benchmark`'s connections.
const WRITERS: u64 = 4;

/// Debian's `redis-benchmark` pipelines 64 KiB SETs to `redis-server`
/// over `WRITERS` connections; `CLIENT KILL TYPE normal` makes the server
/// close them, mostly with requests unread, so the kernel resets them
/// while their writer writes (one the server had read to the end gets a
/// FIN instead). The writer saw a reset: no close call of its own
/// ended the connection, whether the kernel took the reset in softirq or
/// in the writer's `write()` (see
/// `a_reset_processed_in_the_writers_system_call_is_the_peers_doing`).
/// The truth is the clients' namespace's `TcpEstabResets` less its own
/// aborts (see `reset_the_writers`): `trace --json`
/// shows that many `reset_received` and client CLOSEs with ECONNRESET
/// (EPIPE from `CLOSE_WAIT`) and no closer, and `--report-only` and the daemon count that many
/// received by `redis-benchmark` (the sessions less any run they say the
/// kernel skipped).
#[test]
fn redis_clients_reset_while_writing_are_ended_by_their_peer() {
    require_root();
    let hosts = HostPair::new("ttrrd");
    let port = REDIS_PORT.to_string();
    let filter = ["--port", port.as_str()];
    let (every_event, summary, daemon) = every_mode(&filter);
    let redis = Redis::start(&hosts.a, hosts.a_addr, REDIS_PORT);
    let resets = reset_the_writers(&hosts, &port);
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| {
        resets_of(s, "redis-benchmark", "received") >= resets
    });
    let (every_event, summary) = (every_event.stop(), summary.stop());
    drop(redis);

    let table = format!(
        "resets received by the writers: kernel (nstat) {resets}, daemon {}\ntrace --json on the port:\n{}",
        resets_of(&scrape, "redis-benchmark", "received"),
        listing(&every_event, REDIS_PORT)
    );
    let writers_netns = hosts.inode(&hosts.b);
    let of_writers = |kind: &'static str| {
        every_event
            .of_type(kind)
            .filter(move |r| r["netns"].as_u64() == Some(writers_netns))
    };
    // The resets received: in ESTABLISHED and CLOSE_WAIT
    // (whose error the kernel makes EPIPE: the peer had sent its FIN).
    let ended: Vec<&Value> = of_writers("state")
        .filter(|r| r["new"] == "CLOSE" && (r["error"] == "ECONNRESET" || r["error"] == "EPIPE"))
        .collect();
    // A session may miss what it says it missed (a run the kernel skipped,
    // nested in a run of the same program on one CPU): this test's writers
    // flood the path with retransmits, and a CI run once skipped one.
    let within = |seen: u64, unseen: u64| seen <= resets && seen + unseen >= resets;
    let (closes, received, unseen) = (
        ended.len() as u64,
        of_writers("reset_received").count() as u64,
        every_event.unseen(),
    );
    assert!(
        within(closes, unseen) && within(received, unseen),
        "trace --json: {closes} CLOSEs by a reset, {received} reset_received, {unseen} events \
         unseen ({}), {resets} expected: {table}",
        every_event.summary()["summary"]["kernel"]
    );
    for close in ended {
        assert_eq!(close["owner"]["comm"], "redis-benchmark", "{close}");
        assert!(
            close["old"] == "ESTABLISHED" || close["old"] == "CLOSE_WAIT",
            "{close}"
        );
        assert!(close["closer"].is_null(), "taken for a close call: {close}");
    }
    let summary_received = summary.summary()["summary"]["resets_received"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        within(summary_received, summary.unseen()),
        "trace --report-only: {summary_received} received, {} events unseen: {table}",
        summary.unseen()
    );
    let daemon_unseen = daemon::unseen(&scrape);
    let daemon_received = resets_of(&scrape, "redis-benchmark", "received");
    assert!(
        within(daemon_received, daemon_unseen),
        "the daemon: {daemon_received} received, {daemon_unseen} events unseen: {table}"
    );
}

/// Runs `redis-benchmark` from namespace `b` against the server on `port`
/// in `a` and, once its `WRITERS` connections write, has the server kill
/// them; returns the resets `b`'s connections received since the start
/// (`TcpEstabResets` less `b`'s own aborts): the connections the server
/// closed with requests unread (at least one, asserted).
fn reset_the_writers(hosts: &HostPair, port: &str) -> u64 {
    let before = nstat(&hosts.b);
    let writers = Workload::spawn_command(
        Command::new("ip")
            .args(["netns", "exec", &hosts.b, "redis-benchmark"])
            .args(["-h", hosts.a_addr, "-p", port, "-q", "-t", "set"])
            .args(["-d", "65536", "-P", "64", "-n", "100000000"])
            .args(["-c", &WRITERS.to_string()]),
    );
    let redis_cli = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &hosts.a, "redis-cli", "-h", hosts.a_addr])
            .args(["-p", port])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // Every writer connected (besides redis-cli's own connection).
    let deadline = Instant::now() + Duration::from_secs(10);
    while (redis_cli(&["CLIENT", "LIST"]).lines().count() as u64) <= WRITERS {
        assert!(
            Instant::now() < deadline,
            "redis-benchmark's {WRITERS} connections did not come up in 10 s"
        );
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(500));
    let killed = redis_cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    // It stops at its first error, a connection reset by the server; but
    // a connection the server had read to the end gets a FIN, not a
    // reset, on which it may wait: then it is killed.
    let mut writers = writers;
    let exited = writers.exits_within(Duration::from_secs(5));
    drop(writers);
    let after = nstat(&hosts.b);
    let delta =
        |key: &str| after.get(key).copied().unwrap_or(0) - before.get(key).copied().unwrap_or(0);
    // `TcpEstabResets` counts every ESTABLISHED or CLOSE_WAIT socket that
    // goes to CLOSE, the writers' own aborts too: a killed benchmark
    // closes the connections that got a FIN with data unread, and resets
    // them itself (a CI run counted 4, 2 of them its own). Those are not
    // resets received.
    let own_aborts = [
        "TcpExtTCPAbortOnClose",
        "TcpExtTCPAbortOnData",
        "TcpExtTCPAbortOnLinger",
    ]
    .into_iter()
    .map(delta)
    .sum::<u64>();
    let resets = delta("TcpEstabResets") - own_aborts;
    assert!(
        killed == WRITERS.to_string() && resets >= 1,
        "the run: CLIENT KILL ended the writers' {killed} connections, {resets} by a reset \
         (redis-benchmark exited by itself: {exited})"
    );
    resets
}

const KILLED_PORT: u16 = 18343;

/// On call, a stuck client connection is killed with `ss -K` (`sock_diag`'s
/// destroy: `tcp_abort`): here Debian's `redis-cli` waiting on a
/// subscription to `redis-server`. The kernel sends one reset, before the
/// CLOSE, and writes ECONNABORTED. Every mode counts that one reset (the
/// CLOSE was once taken for an abortive close call, whose reset follows
/// it, and counted a second), and names `ss`, the process that ended the
/// connection, as its closer.
#[test]
fn a_connection_killed_with_ss_is_one_reset_and_closed_by_ss() {
    require_root();
    let hosts = HostPair::new("ttrsk");
    let port = KILLED_PORT.to_string();
    let filter = ["--port", port.as_str()];
    let (every_event, summary, daemon) = every_mode(&filter);
    let redis = Redis::start(&hosts.a, hosts.a_addr, KILLED_PORT);
    let client = redis::subscriber(&hosts.b, hosts.a_addr, KILLED_PORT, "stuck");
    let before = [nstat(&hosts.a), nstat(&hosts.b)];
    let client_pid = client.pid();
    shell_in(
        &hosts.b,
        Duration::from_secs(5),
        &format!("ss -K -tn dst {}:{port}", hosts.a_addr),
    );
    assert!(
        !client.wait_exit().success(),
        "redis-cli {client_pid} saw its connection aborted"
    );
    thread::sleep(Duration::from_millis(300));
    let kernel = kernel_resets(&hosts, &before);
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| {
        resets_of(s, "redis-cli", "sent") >= 1 && resets_of(s, "redis-server", "received") >= 1
    });
    let (every_event, summary) = (every_event.stop(), summary.stop());
    drop(redis);

    let table = format!(
        "kernel (nstat): {kernel:?}\ntrace --json on the port:\n{}",
        listing(&every_event, KILLED_PORT)
    );
    assert_eq!(kernel.sent, Some(1), "one RST, the client's: {table}");
    let of_netns = |kind: &'static str, netns: &str| {
        let inode = hosts.inode(netns);
        every_event
            .of_type(kind)
            .filter(move |r| r["netns"].as_u64() == Some(inode))
            .count() as u64
    };
    assert_eq!(of_netns("reset_sent", &hosts.b), 1, "trace --json: {table}");
    assert_eq!(of_netns("reset_sent", &hosts.a), 0, "trace --json: {table}");
    assert_eq!(
        of_netns("reset_received", &hosts.a),
        1,
        "trace --json: {table}"
    );
    let killed = every_event
        .of_type("state")
        .find(|r| r["new"] == "CLOSE" && r["owner"]["comm"] == "redis-cli")
        .unwrap_or_else(|| panic!("the client's CLOSE: {table}"));
    assert_eq!(killed["old"], "ESTABLISHED", "{killed}");
    assert_eq!(killed["error"], "ECONNABORTED", "{killed}");
    assert_eq!(killed["closer"]["comm"], "ss", "who ended it: {killed}");

    assert_eq!(
        summary.summary()["summary"]["resets_sent"].as_u64(),
        Some(1),
        "trace --report-only: {table}"
    );
    assert_eq!(
        resets_of(&scrape, "redis-cli", "sent"),
        1,
        "the daemon: {table}"
    );
    assert_eq!(
        resets_of(&scrape, "redis-server", "received"),
        1,
        "the daemon: {table}"
    );
}
