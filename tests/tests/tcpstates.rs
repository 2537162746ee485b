//! Side by side with libbpf-tools `tcpstates` on the same loopback
//! workload: both must report the same transitions for every socket.
#![expect(
    clippy::items_after_statements,
    reason = "a test declares its helper types where it first needs them"
)]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use tcptrace_tests::{require_root, trace::transition, Tracer, Workload};

type PerSocket = BTreeMap<String, Vec<String>>;

#[test]
fn same_transitions_as_libbpf_tools_tcpstates() {
    require_root();
    let mut tcpstates = Command::new("stdbuf")
        .args(["-oL", "tcpstates", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect(
            "tcpstates (Debian libbpf-tools) must be installed: `cargo xtask test` installs it",
        );
    let (tx, lines) = mpsc::channel();
    let stdout = tcpstates.stdout.take().expect("piped");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let header = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("tcpstates header");
    assert!(
        header.starts_with("SKADDR"),
        "unexpected tcpstates output {header:?}"
    );
    let tracer = Tracer::start(&["--comm", "tt-workload"]);

    const CONNECTIONS: &str = "5";
    let mut server = Workload::start(&["server", "127.0.0.1:0", CONNECTIONS]);
    let port: u16 = server.expect_line("port ").parse().expect("port");
    let client = Workload::start(&["client", &format!("127.0.0.1:{port}"), CONNECTIONS]);
    client.wait_success();
    server.wait_success();
    thread::sleep(Duration::from_millis(500));
    let trace = tracer.stop();
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(i32::try_from(tcpstates.id()).expect("pid"), libc::SIGINT) };
    let status = tcpstates.wait().expect("tcpstates exit");
    assert!(status.success(), "tcpstates failed: {status}");

    // tcpstates: SKADDR PID COMM IP LADDR LPORT RADDR RPORT OLD -> NEW MS
    let mut theirs = PerSocket::new();
    for line in lines.try_iter() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [skaddr, _pid, _comm, _ip, _laddr, lport, _raddr, rport, old, "->", new, _ms] =
            fields[..]
        else {
            continue;
        };
        if lport.parse() == Ok(port) || rport.parse() == Ok(port) {
            theirs
                .entry(format!("0x{skaddr}"))
                .or_default()
                .push(format!("{old}->{new}"));
        }
    }
    let mut ours = PerSocket::new();
    for record in trace.of_type("state") {
        let port_of = |endpoint: &serde_json::Value| {
            endpoint
                .as_str()
                .and_then(|s| s.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
        };
        if port_of(&record["local"]) == Some(port) || port_of(&record["remote"]) == Some(port) {
            let sock = record["sock"].as_str().expect("sock").to_owned();
            ours.entry(sock).or_default().push(transition(record));
        }
    }
    // Order within a socket may differ across per-CPU buffers in tcpstates.
    for list in theirs.values_mut().chain(ours.values_mut()) {
        list.sort();
    }
    let total: usize = ours.values().map(Vec::len).sum();
    // 5 client sockets and 5 accepted sockets of 5 transitions each, plus
    // the listener's two.
    assert_eq!(total, 52, "tcptrace transitions: {ours:#?}");
    assert_eq!(ours, theirs, "tcptrace and tcpstates disagree");
}
