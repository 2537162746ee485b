//! The kernel-to-terminal pipeline on this machine's real kernel: every
//! transition of real sockets, attributed to the right process.

use serde_json::Value;
use tcptrace_tests::{netns::HostPair, require_root, trace::transition, Tracer, Workload};

fn states(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .filter(|r| r["type"] == "state")
        .map(|r| transition(r))
        .collect()
}

fn find<'a>(events: &[&'a Value], change: &str) -> &'a Value {
    events
        .iter()
        .find(|r| r["type"] == "state" && transition(r) == change)
        .unwrap_or_else(|| panic!("no {change} in {events:#?}"))
}

fn assert_owner(events: &[&Value], pid: u32, source: &str) {
    assert!(!events.is_empty());
    for event in events {
        assert_eq!(event["owner"]["pid"], pid, "owner of {event}");
        assert_eq!(
            event["owner"]["comm"], "tt-workload",
            "owner comm of {event}"
        );
        assert_eq!(event["owner"]["source"], source, "owner source of {event}");
    }
}

/// A packet-driven transition runs in softirq (no actor) or, when the
/// packet waited in the socket backlog, in the syscall of the task holding
/// the socket lock: never in an unrelated task's name.
fn assert_not_foreign(event: &Value, own_pid: u32) {
    let actor = &event["actor"];
    assert!(
        actor.is_null() || actor["pid"] == own_pid,
        "{} of a socket owned by {own_pid} attributed to another task: {event}",
        transition(event)
    );
}

/// A client connects over loopback, exchanges data and closes; the server
/// closes after EOF. Every transition of the client socket, the accepted
/// socket and the listener appears, with owner, actor and closer right.
fn loopback_lifecycle(host: &str, wildcard: &str, env: &[(&str, &str)]) {
    require_root();
    let tracer = Tracer::start_with_env(&["--comm", "tt-workload"], env);
    let mut server = Workload::start(&["server", &format!("{host}:0"), "1"]);
    let port = server.expect_line("port ");
    let server_addr = format!("{host}:{port}");
    let mut client = Workload::start(&["client", &server_addr, "1"]);
    let client_addr = client.expect_line("local ");
    let (server_pid, client_pid) = (server.pid(), client.pid());
    client.wait_success();
    server.wait_success();
    let trace = tracer.stop();

    let active = trace.socket_events(&client_addr, &server_addr);
    assert_eq!(
        states(&active),
        [
            "CLOSE->SYN_SENT",
            "SYN_SENT->ESTABLISHED",
            "ESTABLISHED->FIN_WAIT1",
            "FIN_WAIT1->FIN_WAIT2",
            "FIN_WAIT2->CLOSE"
        ],
        "client socket {client_addr}"
    );
    assert_owner(&active, client_pid, "syscall");
    assert_eq!(
        find(&active, "CLOSE->SYN_SENT")["actor"]["pid"],
        client_pid,
        "connect() runs in the client"
    );
    let close = find(&active, "ESTABLISHED->FIN_WAIT1");
    assert_eq!(
        close["actor"]["pid"], client_pid,
        "close() runs in the client"
    );
    assert_eq!(close["closer"]["pid"], client_pid);
    for packet_driven in [
        "SYN_SENT->ESTABLISHED",
        "FIN_WAIT1->FIN_WAIT2",
        "FIN_WAIT2->CLOSE",
    ] {
        assert_not_foreign(find(&active, packet_driven), client_pid);
    }

    let passive = trace.socket_events(&server_addr, &client_addr);
    assert_eq!(
        states(&passive),
        [
            "LISTEN->SYN_RECV",
            "SYN_RECV->ESTABLISHED",
            "ESTABLISHED->CLOSE_WAIT",
            "CLOSE_WAIT->LAST_ACK",
            "LAST_ACK->CLOSE"
        ],
        "accepted socket {server_addr} <- {client_addr}: {:#?}",
        trace.about(&client_addr).collect::<Vec<_>>()
    );
    // The listener's owner until accept() (the handshake), the process
    // that accepted it after (its close is surely after its accept).
    assert_owner(&passive[..2], server_pid, "listener");
    assert_owner(&passive[4..], server_pid, "accept");
    // The peer's FIN is processed in softirq, on loopback usually inside the
    // *client's* close(): that must not make the client the actor.
    assert_not_foreign(find(&passive, "ESTABLISHED->CLOSE_WAIT"), server_pid);
    assert_not_foreign(find(&passive, "SYN_RECV->ESTABLISHED"), server_pid);
    let close = find(&passive, "CLOSE_WAIT->LAST_ACK");
    assert_eq!(
        close["actor"]["pid"], server_pid,
        "close() after EOF runs in the server"
    );
    assert_eq!(close["closer"]["pid"], server_pid);

    let listener = trace.socket_events(&server_addr, wildcard);
    assert_eq!(
        states(&listener),
        ["CLOSE->LISTEN", "LISTEN->CLOSE"],
        "listener {server_addr}"
    );
    assert_owner(&listener, server_pid, "syscall");
    assert_eq!(find(&listener, "CLOSE->LISTEN")["actor"]["pid"], server_pid);

    let summary = &trace.summary()["summary"];
    assert_eq!(summary["kernel"]["events_lost"], 0);
    assert_eq!(summary["decode_errors"], 0);
}

#[test]
fn loopback_ipv4_lifecycle_is_attributed() {
    loopback_lifecycle("127.0.0.1", "0.0.0.0:0", &[]);
}

#[test]
fn loopback_ipv6_lifecycle_is_attributed() {
    loopback_lifecycle("[::1]", "[::]:0", &[]);
}

/// The same attribution where the programs cannot read `preempt_count`
/// and the softirq programs keep the context flag instead (forced here;
/// on this kernel the programs read `preempt_count`).
#[test]
fn loopback_lifecycle_is_attributed_with_the_softirq_programs() {
    loopback_lifecycle(
        "127.0.0.1",
        "0.0.0.0:0",
        &[("TCPTRACE_SOFTIRQ_PROGRAMS", "1")],
    );
}

/// A connection made before tracing starts is listed with its holders, and
/// its later events are attributed to them through the snapshot.
#[test]
fn socket_opened_before_the_session_is_reported_with_its_owner() {
    require_root();
    let mut server = Workload::start(&["server", "127.0.0.1:0", "1"]);
    let port = server.expect_line("port ");
    let server_addr = format!("127.0.0.1:{port}");
    let mut holder = Workload::start(&["hold", &server_addr]);
    let client_addr = holder.expect_line("local ");
    holder.expect_line("holding");

    let tracer = Tracer::start(&["--port", &port]);
    let (server_pid, holder_pid) = (server.pid(), holder.pid());
    holder.close_stdin();
    holder.expect_line("closed");
    holder.wait_success();
    server.wait_success();
    let trace = tracer.stop();

    let existing: Vec<&Value> = trace.of_type("existing").collect();
    let client_socket = existing
        .iter()
        .find(|r| r["local"] == client_addr.as_str() && r["remote"] == server_addr.as_str())
        .unwrap_or_else(|| panic!("{client_addr} not in the snapshot: {existing:#?}"));
    assert_eq!(client_socket["state"], "ESTABLISHED");
    assert_eq!(client_socket["holders"][0]["pid"], holder_pid);
    assert!(client_socket["holders"][0]["fd"].as_u64().is_some());
    let listener = existing
        .iter()
        .find(|r| r["local"] == server_addr.as_str() && r["state"] == "LISTEN")
        .expect("the listener is in the snapshot");
    assert_eq!(listener["holders"][0]["pid"], server_pid);

    let active = trace.socket_events(&client_addr, &server_addr);
    assert_eq!(
        states(&active),
        [
            "ESTABLISHED->FIN_WAIT1",
            "FIN_WAIT1->FIN_WAIT2",
            "FIN_WAIT2->CLOSE"
        ]
    );
    assert_owner(&active, holder_pid, "snapshot");
    assert_eq!(
        find(&active, "ESTABLISHED->FIN_WAIT1")["closer"]["pid"],
        holder_pid
    );
    assert!(
        active[0]["in_old_state_ns"].is_null(),
        "time in ESTABLISHED is unknown for a socket born before the session"
    );

    let passive = trace.socket_events(&server_addr, &client_addr);
    assert_eq!(
        states(&passive),
        [
            "ESTABLISHED->CLOSE_WAIT",
            "CLOSE_WAIT->LAST_ACK",
            "LAST_ACK->CLOSE"
        ]
    );
    assert_owner(&passive, server_pid, "snapshot");
}

/// Retransmits run in softirq or timer context, where "current" is any
/// task; they must be attributed to the socket's owner. The peer vanishes
/// (nftables drops everything it receives) inside namespaces the test owns.
#[test]
fn retransmit_is_attributed_to_the_owner() {
    require_root();
    let hosts = HostPair::new("tt-rtx");
    let mut server = Workload::start_in(&hosts.b, &["server", &format!("{}:0", hosts.b_addr), "1"]);
    let port = server.expect_line("port ");
    let server_addr = format!("{}:{port}", hosts.b_addr);
    let tracer = Tracer::start(&["--port", &port]);

    let mut client = Workload::start_in(&hosts.a, &["stream", &server_addr]);
    let client_addr = client.expect_line("local ");
    client.send_line("go");
    client.expect_line("sent");
    std::thread::sleep(std::time::Duration::from_millis(200));
    hosts.drop_ingress(&hosts.b);
    client.send_line("go");
    client.expect_line("sent");
    // First RTO is 200 ms and doubles: about three retransmits in 2 s.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let trace = tracer.stop();

    let retransmits: Vec<&Value> = trace
        .of_type("retransmit")
        .filter(|r| r["local"] == client_addr.as_str() && r["remote"] == server_addr.as_str())
        .collect();
    assert!(
        retransmits.len() >= 2,
        "expected retransmits from {client_addr}, got {retransmits:#?}"
    );
    for (i, r) in retransmits.iter().enumerate() {
        assert_eq!(
            r["owner"]["pid"],
            client.pid(),
            "retransmit attributed to the owner: {r}"
        );
        assert_eq!(r["owner"]["comm"], "tt-workload");
        assert!(r["actor"].is_null(), "no actor in softirq: {r}");
        assert_eq!(r["state"], "ESTABLISHED");
        assert_eq!(r["retransmits"], i + 1, "per-socket retransmit count");
        assert_eq!(
            r["netns"],
            hosts.inode(&hosts.a),
            "the client's network namespace"
        );
    }
    drop(client);
    drop(server);
}
