//! Filters applied in the kernel: a filtered session takes no stacks and
//! receives no records for the sockets it does not show, and shows the
//! same numbers as the kernel's own counters for those it does.
//!
//! Two nginx servers in a namespace the test creates, one on `SHOWN` and
//! one on `OTHER`, are driven from a second namespace: a curl loop against
//! the first, `ab` against the second. The kernel's `nstat` of the client
//! namespace says how many connections there were in all; the sessions
//! are filtered on the first server's port or on curl.

use std::{thread, time::Duration};

use serde_json::Value;
use tcptrace_tests::{
    kernel_counts::nstat,
    netns::{nft, HostPair},
    programs::{shell_in, Nginx},
    require_root,
    trace::Trace,
    Tracer,
};

const SHOWN: u16 = 18410;
const OTHER: u16 = 18411;
const CURLS: u64 = 20;
const AB_REQUESTS: u64 = 300;

#[test]
fn filters_are_applied_in_the_kernel_in_both_modes() {
    require_root();
    let hosts = HostPair::new("ttkfilt");
    let port = ["--port", "18410"];
    let comm = ["--comm", "curl"];
    let sessions = [
        ("trace --json --port", Tracer::start(&port)),
        (
            "trace --report-only --port",
            Tracer::start_report_only(&port),
        ),
        ("trace --json --comm", Tracer::start(&comm)),
        (
            "trace --report-only --comm",
            Tracer::start_report_only(&comm),
        ),
    ];
    let servers = [
        Nginx::start(&hosts.a, &format!("{}:{SHOWN}", hosts.a_addr)),
        Nginx::start(&hosts.a, &format!("{}:{OTHER}", hosts.a_addr)),
    ];
    let limit = Duration::from_mins(1);
    shell_in(
        &hosts.b,
        limit,
        &format!(
            "i=0; while [ $i -lt {CURLS} ]; do \
             curl -fsS -o /dev/null --max-time 5 http://{}:{SHOWN}/ || exit 1; i=$((i+1)); done",
            hosts.a_addr
        ),
    );
    shell_in(
        &hosts.b,
        limit,
        &format!(
            "ab -q -n {AB_REQUESTS} -c 4 -s 5 http://{}:{OTHER}/ >/dev/null",
            hosts.a_addr
        ),
    );
    thread::sleep(Duration::from_millis(500));
    let opened = nstat(&hosts.b)["TcpActiveOpens"];
    // ab may open one more connection than it has requests.
    assert!(
        opened >= CURLS + AB_REQUESTS,
        "the workload's connections: {opened}"
    );
    let traces: Vec<(&str, Trace)> = sessions
        .into_iter()
        .map(|(name, session)| (name, session.stop()))
        .collect();
    drop(servers);

    for (name, trace) in &traces {
        let summary = &trace.summary()["summary"];
        let kernel = &summary["kernel"];
        let number = |v: &Value| v.as_u64().unwrap_or(0);
        let curl_connects: u64 = trace
            .findings("connect")
            .filter(|f| f["process"]["comm"] == "curl")
            .map(|f| number(&f["attempts"]))
            .sum();
        eprintln!(
            "{name}: curl connects {curl_connects}; kernel sent {}, filtered out {}, stacks \
             captured {}; userspace filtered out {}",
            kernel["events_sent"],
            kernel["filtered_out"],
            kernel["stacks_taken"],
            summary["filtered_out"]
        );
        assert_eq!(number(&kernel["events_lost"]), 0, "{name} lost events");
        assert_eq!(
            curl_connects, CURLS,
            "{name}: every curl connection is shown"
        );
        // Each of ab's connections has two sockets (ab's and nginx's), each
        // with at least one record (every-event mode: one per transition).
        assert!(
            number(&kernel["filtered_out"]) >= 2 * AB_REQUESTS,
            "{name}: ab's connections are held back in the kernel: {kernel}"
        );
        // Stacks: each of ab's connections would take at least four (ab's
        // connect and close, nginx's accept and close); curl's take about
        // six each (with the read of end-of-file).
        assert!(
            number(&kernel["stacks_taken"]) < AB_REQUESTS,
            "{name}: stacks are taken for the shown sockets only: {kernel}"
        );
        assert!(
            trace
                .findings("connect")
                .all(|f| f["process"]["comm"] != "ab"),
            "{name} shows ab"
        );
    }
    // A port criterion is the same test in the kernel and in userspace:
    // nothing reaches userspace only to be dropped there. (A name criterion
    // lets by sockets whose owner the kernel does not know, those from
    // before the session, for userspace to decide.)
    for (name, trace) in &traces[..2] {
        assert_eq!(
            trace.summary()["summary"]["filtered_out"].as_u64(),
            Some(0),
            "{name}: userspace filtered records the kernel should have"
        );
    }
}

/// A server whose clients never complete the handshake (their ACKs are
/// dropped on the way in) sends its SYN-ACK again; the kernel's
/// `TcpExtTCPSynRetrans` of the server's namespace counts each, and so
/// does tcptrace, for the listener's owner, in both modes.
#[test]
fn syn_ack_retransmits_are_counted_for_the_listener() {
    require_root();
    let hosts = HostPair::new("ttsynack");
    let every_event = Tracer::start(&["--port", "18412"]);
    let summary = Tracer::start_report_only(&["--port", "18412"]);
    // One SYN-ACK retransmit per request, after 1 s; the request is
    // dropped 2 s later, so the count is final before the sessions stop.
    hosts.sysctl(&hosts.a, "net.ipv4.tcp_synack_retries", "1");
    let nginx = Nginx::start(&hosts.a, &format!("{}:18412", hosts.a_addr));
    // Only SYNs reach the server: the handshake's last ACK never does.
    let server_nft = |args: &[&str]| nft(&hosts.a, args);
    server_nft(&["add", "table", "inet", "tcptrace_synack"]);
    server_nft(&[
        "add",
        "chain",
        "inet",
        "tcptrace_synack",
        "input",
        "{ type filter hook input priority 0 ; }",
    ]);
    server_nft(&[
        "add",
        "rule",
        "inet",
        "tcptrace_synack",
        "input",
        "tcp dport 18412 tcp flags & syn == 0 drop",
    ]);
    // Three clients, each giving up after 4 s, when the server has sent
    // its one retransmit (at 1 s) and dropped the request (at 3 s).
    shell_in(
        &hosts.b,
        Duration::from_secs(30),
        &format!(
            "for i in 1 2 3; do curl -s -o /dev/null --max-time 4 http://{}:18412/ & done; wait; exit 0",
            hosts.a_addr
        ),
    );
    let kernel = nstat(&hosts.a)["TcpExtTCPSynRetrans"];
    let traces = [
        ("trace --json", every_event.stop()),
        ("trace --report-only", summary.stop()),
    ];
    drop(nginx);
    assert_eq!(kernel, 3, "each client's handshake stalled once");
    for (name, trace) in &traces {
        let counted: u64 = trace
            .findings("accept")
            .filter(|f| f["process"]["comm"] == "nginx")
            .map(|f| f["syn_ack_retransmits"].as_u64().unwrap_or(0))
            .sum();
        eprintln!("{name}: {counted} SYN-ACK retransmits; kernel {kernel}");
        let accepts: Vec<&Value> = trace.findings("accept").collect();
        assert_eq!(
            counted,
            kernel,
            "{name}: SYN-ACK retransmits; accept findings {accepts:#?}; session {:#}",
            trace.summary()["summary"]
        );
    }
}
