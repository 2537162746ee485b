//! Faults on this machine's real kernel: the daemon killed with SIGKILL,
//! restarted among sockets that already exist, a ring buffer that
//! overflows, network namespaces deleted mid-session, processes that exit
//! before their sockets die, socket addresses reused by other owners, and
//! process names chosen to break the output. Each test says what must hold
//! and prints the figures it saw.
#![expect(
    clippy::cast_precision_loss,
    reason = "small socket counts compared with metric samples"
)]
#![expect(
    clippy::items_after_statements,
    reason = "a test declares its helper types where it first needs them"
)]
#![expect(
    clippy::too_many_lines,
    reason = "a real-kernel scenario reads top to bottom as one story"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Read},
    os::unix::{fs::MetadataExt, process::ExitStatusExt},
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};
use tcptrace_common::Counter;

use serde_json::Value;
use tcptrace_tests::{
    daemon::{
        daemon_program_count, free_loopback_addr, http_get, http_request, maps_of, programs_of,
        sample, Daemon,
    },
    netns::HostPair,
    process::LINE_TIMEOUT,
    require_root,
    trace::{tcptrace_bin, transition},
    Tracer, Workload,
};

const CHURN_BIN: &str = env!("CARGO_BIN_EXE_tt-churn");
const EVIL_BIN: &str = env!("CARGO_BIN_EXE_tt-evil");
const HOLD_MANY_BIN: &str = env!("CARGO_BIN_EXE_tt-hold-many");
const WORKLOAD: &str = "tt-workload";

// ------------------------------------------------------------ helpers

/// Ids of every BPF object of one kind (`prog`, `map`, `link`) loaded now.
fn loaded(kind: &str) -> BTreeSet<u64> {
    let out = Command::new("bpftool")
        .args(["--json", kind, "show"])
        .output()
        .expect(
            "bpftool (Debian package bpftool) must be installed: `cargo xtask test` installs it",
        );
    assert!(out.status.success(), "bpftool {kind} show failed");
    let objects: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    objects
        .as_array()
        .expect("bpftool lists an array")
        .iter()
        .filter_map(|o| o["id"].as_u64())
        .collect()
}

/// `bpftool --json KIND show id ID`, `None` once it no longer exists.
fn bpf_object(kind: &str, id: u64) -> Option<Value> {
    let out = Command::new("bpftool")
        .args(["--json", "-f", kind, "show", "id", &id.to_string()])
        .output()
        .expect("bpftool");
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("bpftool JSON"))
}

/// `CLOCK_MONOTONIC` now, the clock of the records' `ktime_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).expect("time") * 1_000_000_000 + u64::try_from(ts.tv_nsec).expect("ns")
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: plain kill(2) on our own, not yet reaped, child.
    unsafe { libc::kill(i32::try_from(child.id()).expect("pid"), signal) };
}

/// Waits for `child` to exit, bounded.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not exit within {limit:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Lines of a child's output, read on a thread.
fn lines_of(child: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(child).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A `tcptrace` run whose stdout the test reads only once it chooses to
/// (`release`). tcptrace itself never blocks on its stdout (a thread
/// writes it, up to 64 MiB pending), so a test that needs a reader that
/// does not read stops the process (`pause`) until `release`.
struct Session {
    child: Child,
    stdout: Option<ChildStdout>,
    lines: Option<Receiver<String>>,
    paused: bool,
}

impl Session {
    /// Starts `tcptrace ARGS...` and waits until it is attached (its
    /// "tracing" notice on stderr).
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(tcptrace_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcptrace");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, attached) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("tracing TCP sockets") {
                    let _ = tx.send(());
                } else {
                    eprintln!("{line}");
                }
            }
        });
        let stdout = child.stdout.take();
        let session = Self {
            child,
            stdout,
            lines: None,
            paused: false,
        };
        attached
            .recv_timeout(LINE_TIMEOUT)
            .expect("tcptrace did not attach in time (see its stderr above)");
        session
    }

    /// Stops the process (SIGSTOP): it reads nothing, so its ring buffer
    /// fills as behind a consumer that has fallen behind.
    fn pause(&mut self) {
        signal(&self.child, libc::SIGSTOP);
        self.paused = true;
    }

    /// From now on, the process runs and its stdout is read.
    fn release(&mut self) {
        if std::mem::take(&mut self.paused) {
            signal(&self.child, libc::SIGCONT);
        }
        if let Some(stdout) = self.stdout.take() {
            self.lines = Some(lines_of(stdout));
        }
    }

    /// Stops it like Ctrl-C and returns its exit status and stdout lines.
    fn stop(mut self) -> (ExitStatus, Vec<String>) {
        self.release();
        thread::sleep(Duration::from_millis(300));
        signal(&self.child, libc::SIGINT);
        let lines = self.lines.take().expect("released");
        let deadline = Instant::now() + LINE_TIMEOUT;
        let mut out = Vec::new();
        loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => out.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => assert!(
                    Instant::now() < deadline,
                    "tcptrace did not finish within {LINE_TIMEOUT:?} of SIGINT"
                ),
            }
        }
        let status = wait_bounded(&mut self.child, LINE_TIMEOUT, "tcptrace");
        (status, out)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_json(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn of_type<'a>(records: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    records.iter().filter(move |r| r["type"] == kind)
}

fn summary_of(records: &[Value]) -> &Value {
    &of_type(records, "summary")
        .last()
        .expect("a summary record")["summary"]
}

fn totals_of(records: &[Value]) -> &Value {
    &of_type(records, "report_totals")
        .last()
        .expect("a report_totals record")["totals"]
}

fn u64_at(value: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(value, |v, key| &v[*key])
        .as_u64()
        .unwrap_or_else(|| panic!("{} is not a count in {value}", path.join(".")))
}

/// The inode of this process's network namespace (the host's).
fn own_netns_inode() -> u64 {
    std::fs::metadata("/proc/self/ns/net")
        .expect("/proc/self/ns/net")
        .ino()
}

// ------------------------------------------------------------ kill -9

/// SIGKILL gives the daemon no chance to clean up: whatever it attached
/// must die with its fds (links, not pins), and its maps with the
/// programs.
#[test]
fn kill_9_leaves_no_program_behind() {
    require_root();
    let mut daemon = Daemon::start(&free_loopback_addr(), &[]);
    let pid = daemon.pid();
    let programs = programs_of(pid);
    let maps = maps_of(pid);
    assert_eq!(
        programs.len(),
        daemon_program_count(),
        "the daemon's tracepoint programs: {programs:?}"
    );
    assert!(!maps.is_empty(), "the daemon holds its maps");
    let before = loaded("prog");
    for id in &programs {
        assert!(before.contains(id), "program {id} is loaded");
        let prog = bpf_object("prog", *id).expect("bpftool prog show id");
        assert!(
            prog["pinned"].as_array().is_none_or(Vec::is_empty),
            "nothing is pinned unless asked: {prog}"
        );
    }
    let links: Vec<u64> = loaded("link")
        .into_iter()
        .filter(|id| {
            bpf_object("link", *id)
                .is_some_and(|l| l["prog_id"].as_u64().is_some_and(|p| programs.contains(&p)))
        })
        .collect();

    signal(&daemon.child, libc::SIGKILL);
    let killed = Instant::now();
    let status = wait_bounded(&mut daemon.child, Duration::from_secs(5), "the daemon");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");

    // The kernel frees programs and maps after the last reference goes
    // (RCU, a work queue): poll, bounded.
    let (mut left_programs, mut left_maps, mut left_links);
    loop {
        let (p, m, l) = (loaded("prog"), loaded("map"), loaded("link"));
        left_programs = programs.iter().filter(|id| p.contains(id)).count();
        left_maps = maps.iter().filter(|id| m.contains(id)).count();
        left_links = links.iter().filter(|id| l.contains(id)).count();
        let clean = left_programs + left_maps + left_links == 0;
        if clean || killed.elapsed() > Duration::from_secs(5) {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "kill -9: {} programs, {} maps, {} links gone {:?} after SIGKILL",
        programs.len(),
        maps.len(),
        links.len(),
        killed.elapsed()
    );
    assert_eq!(
        (left_programs, left_maps, left_links),
        (0, 0, 0),
        "programs {programs:?}, maps {maps:?}, links {links:?} still in the kernel 5 s after kill -9"
    );
}

// ------------------------------------------------------------ restart

/// Sockets left in `CLOSE_WAIT` and `TIME_WAIT` before the daemon (or a trace)
/// starts are found by the `sock_diag` dump at start, with their owner.
#[test]
fn restart_finds_existing_close_wait_and_time_wait() {
    require_root();
    const LEAKED: usize = 3;
    const TIME_WAITS: usize = 5;
    let mut leak = Workload::start(&["leak", "127.0.0.1:0", &LEAKED.to_string()]);
    let leak_port = leak.expect_line("port ");
    Workload::start(&[
        "client",
        &format!("127.0.0.1:{leak_port}"),
        &LEAKED.to_string(),
    ])
    .wait_success();
    assert_eq!(leak.expect_line("leaking"), LEAKED.to_string());
    let mut server = Workload::start(&["server", "127.0.0.1:0", &TIME_WAITS.to_string()]);
    let port = server.expect_line("port ");
    // The clients close first: their sockets hold TIME_WAIT for 60 s.
    Workload::start(&[
        "client",
        &format!("127.0.0.1:{port}"),
        &TIME_WAITS.to_string(),
    ])
    .wait_success();
    server.wait_success();

    // Default refresh (15 s): what shows within 5 s comes from the dump
    // taken at start.
    let started = Instant::now();
    let daemon = Daemon::start(&free_loopback_addr(), &["--comm", WORKLOAD]);
    let close_wait = |s: &str| {
        sample(
            s,
            "tcptrace_sockets",
            &[("comm", WORKLOAD), ("state", "CLOSE_WAIT")],
        )
    };
    let time_wait = |s: &str| sample(s, "tcptrace_kernel_sockets", &[("state", "TIME_WAIT")]);
    let scrape = daemon.scrape_until(Duration::from_secs(5), |s| {
        close_wait(s) == Some(LEAKED as f64) && time_wait(s).unwrap_or(0.0) >= TIME_WAITS as f64
    });
    eprintln!(
        "daemon started after the sockets: CLOSE_WAIT of {WORKLOAD} {:?}, kernel TIME_WAIT {:?}, {:?} after start",
        close_wait(&scrape),
        time_wait(&scrape),
        started.elapsed()
    );
    assert_eq!(
        close_wait(&scrape),
        Some(LEAKED as f64),
        "the leaking server's sockets, from the dump at start:\n{scrape}"
    );
    assert!(
        time_wait(&scrape).unwrap_or(0.0) >= TIME_WAITS as f64,
        "the clients' TIME_WAIT sockets, from the dump at start:\n{scrape}"
    );
    assert!(
        sample(
            &scrape,
            "tcptrace_close_wait_oldest_seconds",
            &[("comm", WORKLOAD)]
        )
        .unwrap_or(0.0)
            > 0.0,
        "the age of the leak:\n{scrape}"
    );
    drop(daemon);

    let session = Session::start(&["trace", "--json", "--report-only", "--comm", WORKLOAD]);
    let (status, lines) = session.stop();
    assert!(status.success(), "tcptrace exited with {status}");
    let records = parse_json(&lines);
    let findings: Vec<&Value> = of_type(&records, "finding")
        .filter(|f| f["kind"] == "close_wait_leak" && f["process"]["pid"] == leak.pid())
        .collect();
    assert_eq!(
        findings.len(),
        1,
        "one close_wait_leak finding for pid {}: {findings:#?}",
        leak.pid()
    );
    let finding = findings[0];
    assert_eq!(finding["process"]["comm"], WORKLOAD, "{finding}");
    assert_eq!(u64_at(finding, &["sockets"]), LEAKED as u64, "{finding}");
    assert_eq!(
        finding["age_is_lower_bound"], true,
        "in CLOSE_WAIT since before the session: its age is a lower bound: {finding}"
    );
    let totals = totals_of(&records);
    assert!(
        u64_at(totals, &["close_wait_kernel"]) >= LEAKED as u64,
        "{totals}"
    );
    assert!(
        u64_at(totals, &["time_wait_kernel"]) >= TIME_WAITS as u64,
        "{totals}"
    );

    // The same dump lists each socket, the TIME_WAIT ones by their ports.
    let session = Session::start(&["trace", "--json", "--port", &port]);
    let (status, lines) = session.stop();
    assert!(status.success(), "tcptrace exited with {status}");
    let records = parse_json(&lines);
    let server_addr = format!("127.0.0.1:{port}");
    let time_waits = of_type(&records, "existing")
        .filter(|r| r["state"] == "TIME_WAIT" && r["remote"] == server_addr.as_str())
        .count();
    assert_eq!(
        time_waits,
        TIME_WAITS,
        "the clients' TIME_WAIT sockets in the dump at start: {:#?}",
        of_type(&records, "existing").collect::<Vec<_>>()
    );
    drop(leak);
}

// ------------------------------------------------------------ overflow

/// The kernel-side per-CPU `counter` of the probe held by `pid`, summed.
fn kernel_counter(pid: u32, counter: Counter) -> u64 {
    let slot = counter as u32;
    let counters = maps_of(pid)
        .into_iter()
        .find(|id| bpf_object("map", *id).is_some_and(|m| m["name"] == "COUNTERS"))
        .expect("the COUNTERS map of the session");
    let out = Command::new("bpftool")
        .args(["--json", "map", "lookup", "id", &counters.to_string()])
        .args(["key", &slot.to_string(), "0", "0", "0"])
        .output()
        .expect("bpftool");
    let entry: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    entry["values"]
        .as_array()
        .expect("per-CPU values")
        .iter()
        .map(|cpu| {
            let bytes: Vec<u8> = cpu["value"]
                .as_array()
                .expect("value bytes")
                .iter()
                .map(|b| {
                    u8::from_str_radix(b.as_str().expect("hex byte").trim_start_matches("0x"), 16)
                        .expect("hex byte")
                })
                .collect();
            u64::from_ne_bytes(bytes.try_into().expect("a u64"))
        })
        .sum()
}

/// A 1 MiB ring buffer, a reader that does not read (the process is
/// stopped) and a burst of connections: events are lost, every lost event
/// is counted, every other one is read and printed, and the report says so.
#[test]
fn overflow_is_counted_and_reported() {
    require_root();
    let tiny = ["--ring-buffer-mib", "1", "--comm", "tt-churn"];
    let json_args: Vec<&str> = ["trace", "--json"].iter().chain(&tiny).copied().collect();
    let text_args: Vec<&str> = ["trace"].iter().chain(&tiny).copied().collect();
    let mut json = Session::start(&json_args);
    let mut text = Session::start(&text_args);
    json.pause();
    text.pause();

    let churn = Command::new(CHURN_BIN)
        .args(["--threads", "4", "--seconds", "2", "--linger0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tt-churn");
    let mut churn = churn;
    let status = wait_bounded(&mut churn, Duration::from_secs(15), "tt-churn");
    let mut load = String::new();
    churn
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut load)
        .expect("tt-churn output");
    assert!(status.success(), "tt-churn failed: {status}");
    let load: Value = serde_json::from_str(load.trim()).expect("tt-churn JSON");

    // Let both sessions read again; once their ring buffers are drained,
    // the kernel's own per-CPU counters no longer move.
    json.release();
    text.release();
    thread::sleep(Duration::from_millis(1500));
    let json_pid = json.child.id();
    let lost_in_kernel = kernel_counter(json_pid, Counter::EventsLost);
    let sent_in_kernel = kernel_counter(json_pid, Counter::EventsSent);

    let (json_status, json_lines) = json.stop();
    let (text_status, text_lines) = text.stop();
    assert!(json_status.success(), "tcptrace --json: {json_status}");
    assert!(text_status.success(), "tcptrace (text): {text_status}");

    let records = parse_json(&json_lines);
    let summary = summary_of(&records);
    let kernel = &summary["kernel"];
    let (sent, lost) = (
        u64_at(kernel, &["events_sent"]),
        u64_at(kernel, &["events_lost"]),
    );
    let (read, undecodable) = (
        u64_at(summary, &["events"]),
        u64_at(summary, &["decode_errors"]),
    );
    eprintln!(
        "overflow: {} connections in {} s; kernel sent {sent}, lost {lost} \
         (per-CPU map read by bpftool: lost {lost_in_kernel}, sent {sent_in_kernel}); \
         read {read}, undecodable {undecodable}, shown {}",
        load["connections"], load["seconds"], summary["shown"]
    );
    assert!(u64_at(&load, &["connections"]) > 1000, "a burst: {load}");
    assert!(
        lost > 0,
        "a 1 MiB ring buffer nobody reads must overflow: {summary}"
    );
    assert_eq!(
        lost, lost_in_kernel,
        "the reported loss is the kernel's per-CPU count"
    );
    assert!(sent >= sent_in_kernel, "{summary}");
    assert_eq!(
        read + undecodable,
        sent,
        "every event the kernel sent was read or counted undecodable: {summary}"
    );
    let shown = of_type(&records, "state").count()
        + of_type(&records, "retransmit").count()
        + of_type(&records, "reset_sent").count()
        + of_type(&records, "reset_received").count();
    assert_eq!(
        shown as u64,
        u64_at(summary, &["shown"]),
        "every event shown is printed"
    );
    let totals = totals_of(&records);
    assert_eq!(totals["incomplete"], true, "{totals}");
    assert_eq!(
        u64_at(totals, &["events_lost"]),
        lost + undecodable,
        "{totals}"
    );

    let text = text_lines.join("\n");
    let text_lost: u64 = text_lines
        .iter()
        .find_map(|l| {
            l.split_once("lost ")
                .and_then(|(_, rest)| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .filter(|_| l.starts_with("# shown"))
        })
        .unwrap_or_else(|| panic!("no `# shown ... lost N` line in the text summary:\n{text}"));
    assert!(text_lost > 0, "the text session lost events too");
    assert!(
        text.contains(&format!(
            "# WARNING: {text_lost} events lost to a full ring buffer; attributions and counts \
             may be incomplete (raise --ring-buffer-mib)"
        )),
        "the text summary warns:\n{}",
        text_lines[text_lines.len().saturating_sub(30)..].join("\n")
    );
    assert!(
        text.contains(&format!(
            "WARNING: {text_lost} events lost: the findings below may be incomplete"
        )),
        "the text report warns:\n{}",
        text_lines[text_lines.len().saturating_sub(30)..].join("\n")
    );
}

/// A kernel socket map smaller than the sockets born: the ones that do not
/// fit are counted, the session goes on, and both the summary and the
/// report say the findings may be incomplete.
#[test]
fn socket_map_full_is_counted_and_reported() {
    require_root();
    let entries = 16;
    let connections = 100;
    let args = [
        "trace",
        "--json",
        "--socket-map-entries",
        &entries.to_string(),
        "--comm",
        "tt-hold-many",
    ];
    let mut session = Session::start(&args);
    session.release();
    let mut text = Session::start(&["trace", "--socket-map-entries", "16", "--report-only"]);
    text.release();

    let mut holder = Command::new(HOLD_MANY_BIN)
        .arg(connections.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tt-hold-many");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("tt-hold-many output");
    assert!(line.starts_with("holding"), "tt-hold-many: {line:?}");
    drop(holder.stdin.take());
    let status = wait_bounded(&mut holder, LINE_TIMEOUT, "tt-hold-many");
    assert!(status.success(), "tt-hold-many failed: {status}");

    let (status, lines) = session.stop();
    assert!(status.success(), "tcptrace --json: {status}");
    let (text_status, text_lines) = text.stop();
    assert!(
        text_status.success(),
        "tcptrace --report-only: {text_status}"
    );

    let records = parse_json(&lines);
    let summary = summary_of(&records);
    let untracked = u64_at(&summary["kernel"], &["sock_map_full"]);
    let totals = totals_of(&records);
    eprintln!(
        "socket map of {entries}: {connections} connections (2 sockets each) opened and \
         closed; kernel refused {untracked} sockets; events shown {}",
        summary["shown"]
    );
    // 2 × 100 sockets cannot fit in 16 entries, whatever else runs.
    assert!(
        untracked >= 2 * connections - entries,
        "the sockets that did not fit are counted: {summary}"
    );
    assert_eq!(
        u64_at(totals, &["sockets_untracked"]),
        untracked,
        "{totals}"
    );
    assert_eq!(totals["incomplete"], true, "{totals}");
    // The ones that fit are still traced and attributed.
    let attributed = of_type(&records, "state")
        .filter(|r| r["owner"]["comm"] == "tt-hold-many")
        .count();
    assert!(attributed > 0, "sockets in the map keep their owner");

    let report = text_lines.join("\n");
    assert!(
        report.contains("sockets not tracked (the kernel's socket map was full"),
        "the report warns:\n{report}"
    );
}

// ------------------------------------------------------------ network namespaces

/// Network namespaces created and deleted while tracing: the session goes
/// on, and each connection carries the namespace it lived in.
#[test]
fn network_namespace_deleted_mid_session() {
    require_root();
    let tracer = Tracer::start(&["--comm", WORKLOAD]);
    let hosts = HostPair::new("tt-fault-ns");
    let (ns_a, ns_b) = (hosts.inode(&hosts.a), hosts.inode(&hosts.b));
    let mut server = Workload::start_in(&hosts.b, &["server", &format!("{}:0", hosts.b_addr), "1"]);
    let port = server.expect_line("port ");
    let server_addr = format!("{}:{port}", hosts.b_addr);
    let mut client = Workload::start_in(&hosts.a, &["client", &server_addr, "1"]);
    let client_addr = client.expect_line("local ");
    client.wait_success();
    server.wait_success();
    let (name_a, name_b) = (hosts.a.clone(), hosts.b.clone());
    drop(hosts); // deletes both namespaces, with the client's TIME_WAIT socket
    for name in [&name_a, &name_b] {
        assert!(
            !std::path::Path::new(&format!("/run/netns/{name}")).exists(),
            "{name} deleted"
        );
    }
    // Namespaces are torn down by a kernel worker: give it a moment.
    thread::sleep(Duration::from_millis(500));

    let mut server = Workload::start(&["server", "127.0.0.1:0", "1"]);
    let lo_port = server.expect_line("port ");
    let lo_server = format!("127.0.0.1:{lo_port}");
    let mut client = Workload::start(&["client", &lo_server, "1"]);
    let lo_client = client.expect_line("local ");
    client.wait_success();
    server.wait_success();
    let trace = tracer.stop(); // asserts it exited successfully on SIGINT

    let host_ns = own_netns_inode();
    let check = |local: &str, remote: &str, netns: u64, what: &str| {
        let events = trace.socket_events(local, remote);
        assert!(
            events.iter().any(|r| r["type"] == "state"),
            "{what} {local} -> {remote} was reported"
        );
        for event in &events {
            assert_eq!(event["netns"], netns, "netns of {what}: {event}");
        }
        events.len()
    };
    let n = check(
        &client_addr,
        &server_addr,
        ns_a,
        "the client in the deleted namespace",
    );
    check(
        &server_addr,
        &client_addr,
        ns_b,
        "the server in the deleted namespace",
    );
    let m = check(
        &lo_client,
        &lo_server,
        host_ns,
        "the loopback client afterwards",
    );
    check(
        &lo_server,
        &lo_client,
        host_ns,
        "the loopback server afterwards",
    );
    assert_ne!(host_ns, ns_a);
    eprintln!("netns: {n} events in namespace {ns_a} (deleted), then {m} in the host's {host_ns}");
    let summary = &trace.summary()["summary"];
    assert_eq!(summary["decode_errors"], 0, "{summary}");
    assert_eq!(summary["kernel"]["events_lost"], 0, "{summary}");
}

// ------------------------------------------------------------ exits and reuse

fn states(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .filter(|r| r["type"] == "state")
        .map(|r| transition(r))
        .collect()
}

/// A client closes and exits while its FIN is still unanswered (its peer's
/// host drops everything for a while); the FIN retransmits, `FIN_WAIT` and
/// `TIME_WAIT` hand-over that follow the exit are still its own. Then 200
/// short-lived clients in turn: the kernel reuses socket addresses across
/// processes, and each connection keeps its own owner.
#[test]
fn exited_processes_and_pid_reuse() {
    require_root();
    let mut tracer = Tracer::start(&["--comm", WORKLOAD]);

    // Part 1: events after the owner exited.
    let hosts = HostPair::new("tt-fault-exit");
    let mut server = Workload::start_in(&hosts.b, &["server", &format!("{}:0", hosts.b_addr), "1"]);
    let port = server.expect_line("port ");
    let server_addr = format!("{}:{port}", hosts.b_addr);
    let mut client = Workload::start_in(&hosts.a, &["hold", &server_addr]);
    let client_addr = client.expect_line("local ");
    client.expect_line("holding");
    let client_pid = client.pid();
    hosts.drop_ingress(&hosts.b);
    client.close_stdin();
    client.expect_line("closed");
    client.wait_success();
    let exited_ns = monotonic_ns();
    assert!(
        !std::path::Path::new(&format!("/proc/{client_pid}")).exists(),
        "the client is gone"
    );
    // The FIN is dropped at least once (first RTO 200 ms), then the peer's
    // host comes back: the retransmitted FIN is answered.
    thread::sleep(Duration::from_millis(400));
    hosts.allow_ingress(&hosts.b);
    let handed_over = tracer.wait_for(Duration::from_secs(10), |r| {
        r["type"] == "state"
            && r["local"] == client_addr.as_str()
            && r["old"] == "FIN_WAIT2"
            && r["new"] == "CLOSE"
    });
    assert!(handed_over, "{client_addr} never reached TIME_WAIT");
    server.wait_success();
    drop(hosts);

    // Part 2: socket addresses reused by other processes.
    const CLIENTS: usize = 200;
    let mut server = Workload::start(&["server", "127.0.0.1:0", &CLIENTS.to_string()]);
    let lo_server = format!("127.0.0.1:{}", server.expect_line("port "));
    let server_pid = server.pid();
    let mut clients = Vec::new();
    let spawned = Instant::now();
    for _ in 0..CLIENTS {
        let mut client = Workload::start(&["client", &lo_server, "1"]);
        let local = client.expect_line("local ");
        clients.push((client.pid(), local));
        client.wait_success();
    }
    let spawning = spawned.elapsed();
    server.wait_success();
    let trace = tracer.stop();

    // Part 1 checks.
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
        "client socket {client_addr}: {active:#?}"
    );
    for event in &active {
        assert_eq!(event["owner"]["pid"], client_pid, "owner of {event}");
        assert_eq!(event["owner"]["comm"], WORKLOAD, "owner comm of {event}");
        assert_eq!(event["owner"]["source"], "syscall", "{event}");
    }
    let after_exit: Vec<&Value> = active
        .iter()
        .copied()
        .filter(|r| r["ktime_ns"].as_u64().is_some_and(|t| t > exited_ns))
        .collect();
    let after: Vec<String> = after_exit
        .iter()
        .map(|r| {
            if r["type"] == "state" {
                transition(r)
            } else {
                r["type"].as_str().unwrap_or("?").to_owned()
            }
        })
        .collect();
    eprintln!("after the client {client_pid} exited: {after:?}");
    assert!(
        after.iter().any(|t| t == "retransmit")
            && after.contains(&"FIN_WAIT1->FIN_WAIT2".to_owned())
            && after.contains(&"FIN_WAIT2->CLOSE".to_owned()),
        "FIN retransmits and the hand-over to TIME_WAIT came after the exit: {after:?}"
    );
    for event in &after_exit {
        assert!(
            event["actor"].is_null(),
            "no task acts on the socket of an exited process: {event}"
        );
        assert_eq!(
            event["closer"]["pid"], client_pid,
            "the exited client closed it: {event}"
        );
    }

    // Part 2 checks: every connection by its own process...
    for (pid, local) in &clients {
        // The server closes first and holds the TIME_WAIT, so a client
        // port can come back for a later client: find this pid's lifetime.
        let lifetimes = trace.socket_lifetimes(local, &lo_server);
        let events = lifetimes
            .iter()
            .find(|l| l.iter().any(|e| e["owner"]["pid"] == *pid))
            .unwrap_or_else(|| panic!("no lifetime of {local} owned by {pid}: {lifetimes:#?}"));
        assert_eq!(
            states(events).first().map(String::as_str),
            Some("CLOSE->SYN_SENT"),
            "{local} of {pid} traced from its connect: {events:#?}"
        );
        for event in events {
            assert_eq!(event["owner"]["pid"], *pid, "owner of {local}: {event}");
        }
        for event in trace.socket_events(&lo_server, local) {
            assert_eq!(
                event["owner"]["pid"], server_pid,
                "owner of the server's side of {local}: {event}"
            );
        }
    }
    // ...also where the kernel handed the same `struct sock` address to
    // another process.
    let mut owners: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for record in trace.of_type("state") {
        if let (Some(sock), Some(pid)) = (record["sock"].as_str(), record["owner"]["pid"].as_u64())
        {
            owners.entry(sock.to_owned()).or_default().insert(pid);
        }
    }
    let clients_by_pid: BTreeSet<u64> = clients.iter().map(|(p, _)| u64::from(*p)).collect();
    let reused: Vec<(&String, &BTreeSet<u64>)> = owners
        .iter()
        .filter(|(_, pids)| pids.iter().filter(|p| clients_by_pid.contains(p)).count() >= 2)
        .collect();
    eprintln!(
        "{CLIENTS} clients in {spawning:?}: {} socket addresses, {} of them used by 2+ client processes{}",
        owners.len(),
        reused.len(),
        reused
            .first()
            .map(|(sock, pids)| format!(" (e.g. {sock} by {pids:?})"))
            .unwrap_or_default()
    );
    if reused.is_empty() {
        eprintln!(
            "note: no socket address was reused by two clients in this run; \
             attribution was checked per connection"
        );
    }
}

// ------------------------------------------------------------ hostile comm

/// The Prometheus text-format escaping of a label value: backslash, double
/// quote and line feed are escaped; nothing else may be.
fn prometheus_unescape(value: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            'n' => out.push('\n'),
            _ => return None,
        }
    }
    Some(out)
}

/// The raw `comm="..."` label values of the series of `family` in a scrape.
fn comm_labels(scrape: &str, family: &str) -> Vec<String> {
    let mut values = Vec::new();
    for line in scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
    {
        let Some(rest) = line.split_once("comm=\"").map(|(_, r)| r) else {
            continue;
        };
        // Up to the first unescaped quote.
        let mut value = String::new();
        let mut escaped = false;
        for c in rest.chars() {
            if c == '"' && !escaped {
                break;
            }
            escaped = c == '\\' && !escaped;
            value.push(c);
        }
        values.push(value);
    }
    values
}

fn promtool_check_metrics(scrape: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed: `cargo xtask test` installs it");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A process named `name` makes two connections under a JSON session, a
/// text session and the daemon; each must keep its framing and show the
/// exact name.
fn hostile_comm_is_escaped(name: &str) {
    require_root();
    const CONNECTIONS: usize = 2;
    let mut server = Workload::start(&["server", "127.0.0.1:0", &CONNECTIONS.to_string()]);
    let port = server.expect_line("port ");
    let server_addr = format!("127.0.0.1:{port}");
    let daemon = Daemon::start(&free_loopback_addr(), &["--port", &port, "--refresh", "1s"]);
    let tracer = Tracer::start(&["--port", &port]);
    let mut text = Session::start(&["trace", "--port", &port]);
    text.release();

    let mut evil = Command::new(EVIL_BIN)
        .arg(name)
        .arg(&server_addr)
        .arg(CONNECTIONS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tt-evil");
    let evil_pid = evil.id();
    let out = lines_of(evil.stdout.take().expect("piped"));
    let next = || out.recv_timeout(LINE_TIMEOUT).expect("a line from tt-evil");
    assert_eq!(
        next(),
        format!("comm {name:?}"),
        "the kernel holds the hostile name"
    );
    let locals: Vec<String> = (0..CONNECTIONS)
        .map(|_| {
            next()
                .strip_prefix("local ")
                .expect("local ADDR")
                .to_owned()
        })
        .collect();
    assert_eq!(next(), "done");
    let status = wait_bounded(&mut evil, LINE_TIMEOUT, "tt-evil");
    assert!(status.success(), "tt-evil failed: {status}");
    server.wait_success();

    // The daemon: the label, escaped, in a scrape promtool accepts.
    let family = "tcptrace_connections_opened_total";
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| {
        comm_labels(s, family)
            .iter()
            .any(|v| prometheus_unescape(v).as_deref() == Some(name))
    });
    let labels = comm_labels(&scrape, family);
    let promtool = promtool_check_metrics(&scrape);
    let trace = tracer.stop();
    let (text_status, text_lines) = text.stop();

    // JSON: every line parsed (Tracer::stop), the exact name.
    let mut named = 0;
    for local in &locals {
        let events = trace.socket_events(local, &server_addr);
        assert!(!events.is_empty(), "{local} of tt-evil was reported");
        for event in &events {
            assert_eq!(event["owner"]["pid"], evil_pid, "{event}");
            assert_eq!(event["owner"]["comm"], name, "owner comm in JSON: {event}");
            if !event["actor"].is_null() {
                assert_eq!(event["actor"]["comm"], name, "actor comm in JSON: {event}");
            }
            named += 1;
        }
    }

    // Text: one line per event, the name escaped in place.
    assert!(text_status.success(), "tcptrace (text): {text_status}");
    let escaped: String = name.chars().flat_map(char::escape_default).collect();
    let mut text_named = 0;
    for local in &locals {
        let lines: Vec<&String> = text_lines
            .iter()
            .filter(|l| l.contains(local.as_str()))
            .collect();
        assert!(!lines.is_empty(), "{local} in the text output");
        for line in &lines {
            // LOCAL then REMOTE: the client's own socket, not the server's.
            let is_client_side = line
                .find(&format!(" {local} "))
                .zip(line.find(&format!(" {server_addr} ")))
                .is_some_and(|(l, r)| l < r);
            if is_client_side {
                assert!(
                    line.contains(&escaped),
                    "the owner's name, escaped as {escaped:?}, in {line:?}"
                );
                text_named += 1;
            }
        }
    }
    let after_newline = name.split('\n').nth(1);
    if let Some(tail) = after_newline {
        let broken: Vec<&String> = text_lines
            .iter()
            .filter(|l| l.starts_with(tail) || l.trim_start().starts_with(tail))
            .collect();
        assert!(
            broken.is_empty(),
            "a raw newline of the name split text lines: {broken:?}"
        );
    }
    assert!(
        text_lines.iter().all(|l| !l.chars().any(unsafe_char)),
        "no raw control or bidirectional control character in the text output"
    );

    eprintln!(
        "comm {name:?}: {named} JSON events, {text_named} text lines as {escaped:?}, \
         metrics labels {labels:?}"
    );
    // tcptrace escapes what the text format can escape (\\, \" and \n)
    // and replaces every other unsafe character with U+FFFD.
    let expected: String = name
        .chars()
        .map(|c| {
            if unsafe_char(c) && c != '\n' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect();
    let found = labels
        .iter()
        .any(|v| prometheus_unescape(v).as_deref() == Some(expected.as_str()));
    let mut problems = Vec::new();
    if !found {
        problems.push(format!(
            "no {family} series whose comm label is {expected:?} escaped as the text format \
             requires (only \\\\, \\\" and \\n are escapes); comm labels: {labels:?}"
        ));
    }
    if let Err(err) = promtool {
        problems.push(format!(
            "promtool check metrics rejects the scrape:\n{}",
            err.lines()
                .filter(|l| !l.contains("no help text"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    assert!(
        problems.is_empty(),
        "metrics with comm {name:?}:\n{}",
        problems.join("\n")
    );
    drop(daemon);
}

/// What must not reach a terminal or a dashboard raw: control characters
/// and the invisible bidirectional controls (Unicode's list, UAX #9).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Quotes, a newline and braces: what could break JSON framing, text lines
/// and label syntax.
#[test]
fn hostile_comm_with_quote_and_newline_is_escaped() {
    hostile_comm_is_escaped("evil\"\n{x}");
}

/// A backslash, a tab, an escape sequence and DEL: control characters the
/// Prometheus text format has no escape for.
#[test]
fn hostile_comm_with_control_characters_is_escaped() {
    hostile_comm_is_escaped("ev\\il\t\u{1b}[1m\u{7f}");
}

/// A right-to-left override: invisible, it shows `evil.txt` reversed after
/// it. Escaped in text, replaced in labels; JSON keeps the exact name (a
/// quoted string, which it cannot break out of).
#[test]
fn hostile_comm_with_a_bidirectional_override_is_escaped() {
    hostile_comm_is_escaped("evil\u{202e}txt.sh");
}

// ------------------------------------------------- listener address collision

/// A service leaks `CLOSE_WAIT` sockets on 127.0.0.1:P; another process,
/// started after it, listens on 127.0.0.2:P, the same port on another
/// address. Each keeps the connections it accepted: the second listener
/// takes over none of the service's (the kernel's listener map is keyed by
/// the bound address too), in every-event and in summary mode.
#[test]
fn a_listener_on_another_address_of_the_same_port_takes_over_nothing() {
    require_root();
    const VICTIM: usize = 3;
    const OTHER: usize = 1;
    let json = Tracer::start(&["--comm", WORKLOAD]);
    let summary = Tracer::start_report_only(&["--comm", WORKLOAD]);
    let mut victim = Workload::start(&["leak", "127.0.0.1:0", &VICTIM.to_string()]);
    let port = victim.expect_line("port ");
    let mut other = Workload::start(&["leak", &format!("127.0.0.2:{port}"), &OTHER.to_string()]);
    assert_eq!(other.expect_line("port "), port);
    for (addr, count) in [("127.0.0.1", VICTIM), ("127.0.0.2", OTHER)] {
        Workload::start(&["client", &format!("{addr}:{port}"), &count.to_string()]).wait_success();
    }
    assert_eq!(victim.expect_line("leaking"), VICTIM.to_string());
    assert_eq!(other.expect_line("leaking"), OTHER.to_string());
    thread::sleep(Duration::from_millis(300));
    let trace = json.stop();
    let summary = summary.stop();

    for (mode, report) in [("every-event", &trace), ("summary", &summary)] {
        let leaks: Vec<(u64, u64)> = report
            .findings("close_wait_leak")
            .map(|f| {
                let number = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("{f:#}"));
                (number(&f["process"]["pid"]), number(&f["sockets"]))
            })
            .collect();
        let mut expected = vec![
            (u64::from(victim.pid()), VICTIM as u64),
            (u64::from(other.pid()), OTHER as u64),
        ];
        let mut found = leaks.clone();
        found.sort_unstable();
        expected.sort_unstable();
        assert_eq!(
            found, expected,
            "{mode}: each listener keeps its own accepted sockets (pid, sockets)"
        );
    }
    // Every server-side transition names its own listener's owner.
    let mut owners = std::collections::BTreeSet::new();
    for event in trace.of_type("state") {
        let local = event["local"].as_str().unwrap_or("");
        let owner = event["owner"]["pid"].as_u64().unwrap_or(0);
        if local == format!("127.0.0.1:{port}") {
            owners.insert(("127.0.0.1", owner == u64::from(victim.pid())));
        } else if local == format!("127.0.0.2:{port}") {
            owners.insert(("127.0.0.2", owner == u64::from(other.pid())));
        }
    }
    assert_eq!(
        owners,
        [("127.0.0.1", true), ("127.0.0.2", true)].into(),
        "(address, owned by its own listener's process) over every server-side event"
    );
    drop((victim, other));
}

// ------------------------------------------------- idle HTTP connections

/// Sets this process's soft limit on open files (children inherit it).
fn set_open_files_soft_limit(soft: Option<u64>) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit), 0);
        limit.rlim_cur = soft.unwrap_or(limit.rlim_max).min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit), 0);
    }
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    // SAFETY: sysconf has no memory arguments.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let tick = |i: usize| fields[i].parse::<f64>().expect("ticks");
    (tick(11) + tick(12)) / ticks
}

/// The largest resident set the process has had, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// One scrape read slowly (64 KiB per 10 ms, a scraper on a busy or far
/// machine): the status, the announced length and the bytes received.
fn slow_scrape(addr: &str) -> (String, usize, usize) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the daemon");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: tcptrace\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
        }
        thread::sleep(Duration::from_millis(10));
    }
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .map(|(_, value)| value)
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, length, response.len() - split - 4)
}

/// A local user invents process names (12,000 processes, each its own
/// name, each one refused connect) while 20 slow scrapers read /metrics.
/// Before: every name got its label sets (up to 10,000, ~570,000 series),
/// /metrics was rendered once per request (54 MB each), RSS passed 1 GB and
/// scrapes were cut. Now: at most 2,000 label sets, the rest counted under
/// "other"; one render shared by the scrapes within a second; every scrape
/// complete, the peak RSS bounded, no event lost; and the service that was
/// there before the flood keeps its own series (its new connections are
/// not folded into "other").
#[test]
fn a_flood_of_process_names_cannot_exhaust_the_daemon() {
    require_root();
    const FLOOD: usize = 12_000;
    const SCRAPERS: usize = 20;
    let closed = free_loopback_addr();
    let port = closed.rsplit_once(':').expect("port").1.to_owned();
    let daemon = Daemon::start(&free_loopback_addr(), &["--port", &port, "--refresh", "1s"]);
    let victim = || {
        Workload::start(&["refused", &closed, "3"]).wait_success();
    };
    victim();

    let mut flood = Command::new(EVIL_BIN)
        .args(["--flood", &FLOOD.to_string(), &closed])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tt-evil --flood");
    let flooded = lines_of(flood.stdout.take().expect("piped"));
    // Scrapers while the names pour in.
    let scrapers: Vec<_> = (0..SCRAPERS)
        .map(|i| {
            let listen = daemon.listen.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100 * i as u64));
                slow_scrape(&listen)
            })
        })
        .collect();
    assert_eq!(
        flooded
            .recv_timeout(Duration::from_mins(2))
            .expect("tt-evil --flood finished"),
        format!("flooded {FLOOD}")
    );
    let status = wait_bounded(&mut flood, LINE_TIMEOUT, "tt-evil --flood");
    assert!(status.success(), "tt-evil --flood: {status}");
    victim();

    // The flood counted: its processes' connects are all there, under
    // their names or "other", with the folding counted.
    let family = "tcptrace_connections_opened_total";
    let scrape = daemon.scrape_until(Duration::from_secs(20), |s| {
        sample(s, family, &[("role", "active")]).unwrap_or(0.0) >= (FLOOD + 6) as f64
    });
    let opened = sample(&scrape, family, &[("role", "active")]).unwrap_or(0.0);
    let named = scrape
        .lines()
        .filter(|l| {
            l.starts_with(family) && l.contains("comm=\"ttflood") && l.contains("role=\"active\"")
        })
        .count();
    let folded = sample(&scrape, "tcptrace_folded_series_total", &[]).unwrap_or(0.0);
    let lost = sample(&scrape, "tcptrace_events_lost_total", &[]).unwrap_or(-1.0);
    let peak_mib = peak_rss_kib(daemon.pid()) / 1024;
    let results: Vec<(String, usize, usize)> = scrapers
        .into_iter()
        .map(|s| s.join().expect("scraper thread"))
        .collect();
    let complete = results
        .iter()
        .filter(|(status, length, got)| status.contains(" 200 ") && length == got)
        .count();
    let largest = results.iter().map(|r| r.1).max().unwrap_or(0);
    // What Prometheus asks for: gzip (curl undoes it and says what it got).
    let gzipped = Command::new("curl")
        .args(["-sS", "--compressed", "-w", "\n%{size_download}", "-o", "-"])
        .arg(format!("http://{}/metrics", daemon.listen))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&gzipped.stdout);
    let (text, downloaded) = body.rsplit_once('\n').expect("size after the body");
    let downloaded: usize = downloaded.trim().parse().expect("size_download");
    eprintln!(
        "flood: {opened} connections opened; {named} flood names with series, {folded} events \
         folded into \"other\"; {complete}/{SCRAPERS} slow scrapes complete (largest {largest} \
         bytes); daemon peak RSS {peak_mib} MiB; events lost {lost}; /metrics now {} bytes, {downloaded} \
         gzipped",
        scrape.len()
    );
    assert_eq!(
        Some(opened),
        Some((FLOOD + 6) as f64),
        "every connect is counted"
    );
    assert!(
        named < 2_000 && folded > 0.0,
        "at most 2,000 label sets; the rest counted as folded ({named}, {folded})"
    );
    assert_eq!(
        sample(
            &scrape,
            family,
            &[("comm", "tt-workload"), ("role", "active")]
        ),
        Some(6.0),
        "the service from before the flood keeps its own series"
    );
    assert_eq!(complete, SCRAPERS, "every scrape complete: {results:?}");
    assert!(
        text.contains(family) && downloaded * 5 < text.len(),
        "gzip when asked: {downloaded} bytes for {} of text",
        text.len()
    );
    assert!(peak_mib < 256, "peak RSS {peak_mib} MiB");
    assert_eq!(Some(lost), Some(0.0), "nothing lost");
}

/// 1,100 idle connections to the metrics port, with the daemon started
/// under the usual soft limit of 1,024 open files (before: every socket
/// dump failed with "Too many open files", `accept4` spun at ~85 % CPU and
/// /healthz said "ok"). Now the daemon raises its limit, serves at most 64
/// connections at once and closes the rest unserved: its CPU stays low,
/// its dumps keep working, /healthz answers and says it is being flooded,
/// and once the connections are gone it is "ok" again a window later.
#[test]
fn idle_connections_to_the_metrics_port_cannot_blind_the_daemon() {
    require_root();
    const IDLE: usize = 1_100;
    let listen = free_loopback_addr();
    set_open_files_soft_limit(Some(1024));
    let daemon = Daemon::start(&listen, &["--refresh", "1s"]);
    set_open_files_soft_limit(None);

    let cpu_before = cpu_seconds(daemon.pid());
    let started = Instant::now();
    let idle: Vec<std::net::TcpStream> = (0..IDLE)
        .map(|i| {
            std::net::TcpStream::connect(&listen)
                .unwrap_or_else(|e| panic!("idle connection {i} to {listen}: {e}"))
        })
        .collect();
    // Long enough for the served ones to time out (2 s) and for several
    // refreshes (1 s) to run.
    thread::sleep(Duration::from_secs(4));
    let cpu = cpu_seconds(daemon.pid()) - cpu_before;
    let elapsed = started.elapsed().as_secs_f64();
    let (status, health) = http_get(&listen, "/healthz", &[]).expect("/healthz answers");
    // How many of ours the daemon closed (EOF at once).
    let closed = idle
        .iter()
        .filter(|stream| {
            stream.set_nonblocking(true).expect("nonblocking");
            matches!((&**stream).read(&mut [0u8; 1]), Ok(0))
        })
        .count();
    eprintln!(
        "{IDLE} idle connections: daemon CPU {cpu:.2} s in {elapsed:.1} s, {closed} closed by it, \
         /healthz {status}: {health}"
    );
    assert!(
        cpu < 0.25 * elapsed,
        "the daemon used {cpu:.2} s of CPU in {elapsed:.1} s under {IDLE} idle connections"
    );
    assert_eq!(
        closed, IDLE,
        "every idle connection closed: served ones after 2 s"
    );
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&health).expect("JSON");
    let reasons = health["reasons"].to_string();
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(reasons.contains("closed unserved"), "{health}");
    assert!(
        !reasons.contains("socket dumps failed"),
        "the dumps kept their descriptors: {health}"
    );
    drop(idle);
    // Scrapes work as before; HEAD gets the headers only.
    assert!(daemon.scrape().contains("tcptrace_events_total"));
    assert_eq!(
        http_request(&listen, "HEAD", "/healthz", &[]),
        Some((200, String::new()))
    );
}

// ------------------------------------------------- a reader that never reads

/// `tcptrace trace --duration 2s | sleep 30`: the reader never reads, the
/// pipe fills within the churn's first moments. The session still ends on
/// time (before: it ran until `sleep` did, deaf to signals, and lost its
/// summary), and says on stderr how much of its output was never written.
#[test]
fn a_session_whose_output_is_never_read_ends_on_time() {
    require_root();
    let mut trace = Command::new(tcptrace_bin())
        .args(["trace", "--duration", "2s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcptrace");
    let started = Instant::now();
    // Its stdout, held and never read.
    let _unread = trace.stdout.take().expect("piped");
    let mut stderr = BufReader::new(trace.stderr.take().expect("piped"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("stderr");
    assert!(line.contains("tracing TCP sockets"), "{line}");
    let mut churn = Command::new(CHURN_BIN)
        .args(["--threads", "2", "--seconds", "1", "--linger0"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tt-churn");
    assert!(wait_bounded(&mut churn, Duration::from_secs(15), "tt-churn").success());
    // The duration, the report and at most 2 s of grace for the reader.
    let status = wait_bounded(&mut trace, Duration::from_secs(15), "tcptrace");
    let took = started.elapsed();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("stderr");
    eprintln!("tcptrace ended after {took:?} with {status}: {rest}");
    assert!(status.success(), "tcptrace: {status}\n{rest}");
    assert!(took < Duration::from_secs(10), "ended after {took:?}");
    assert!(
        rest.contains("standard output was not read") && rest.contains("still unwritten"),
        "stderr says the output was not all written: {rest}"
    );
}

/// A child killed when dropped (a failing test leaves no daemon behind).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGHUP, SIGUSR1, SIGUSR2 and SIGALRM ended the daemon silently (SIGHUP
/// with a status systemd counts as clean). SIGHUP now reloads the
/// configuration (here: nothing changed) and the others are logged and
/// ignored: the daemon still answers, and only SIGTERM ends it.
#[test]
fn stray_signals_do_not_end_the_daemon() {
    require_root();
    let listen = free_loopback_addr();
    let daemon = Command::new(tcptrace_bin())
        .args(["daemon", "--listen", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcptrace daemon");
    // Killed if the test fails.
    let mut daemon = Killed(daemon);
    let daemon = &mut daemon.0;
    // The log is JSON lines on stderr.
    let log = lines_of(daemon.stderr.take().expect("piped"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(&listen, "/healthz", &[]).is_none() {
        assert!(Instant::now() < deadline, "the daemon did not answer");
        thread::sleep(Duration::from_millis(100));
    }
    let pid = i32::try_from(daemon.id()).expect("pid");
    for signal in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGALRM] {
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        thread::sleep(Duration::from_millis(200));
        assert!(
            daemon.try_wait().expect("wait").is_none(),
            "signal {signal} ended the daemon"
        );
    }
    assert_eq!(
        http_get(&listen, "/healthz", &[]).map(|(s, _)| s),
        Some(200)
    );
    let mut ignored = Vec::new();
    let mut reloaded = None;
    while let Ok(line) = log.recv_timeout(Duration::from_millis(500)) {
        if line.contains("configuration reloaded") {
            let record: Value = serde_json::from_str(&line).expect("a JSON log line");
            reloaded = Some(record["fields"].clone());
        }
        if line.contains("signal ignored") {
            let record: Value = serde_json::from_str(&line).expect("a JSON log line");
            ignored.push(
                record["fields"]["signal"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned(),
            );
        }
    }
    assert_eq!(ignored, ["SIGUSR1", "SIGUSR2", "SIGALRM"]);
    assert_eq!(
        reloaded,
        Some(serde_json::json!({
            "applied": [], "need_restart": [], "tls": false, "basic_auth": false
        })),
        "SIGHUP reloads; nothing changed"
    );
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_bounded(daemon, Duration::from_secs(10), "tcptrace daemon");
    assert!(status.success(), "SIGTERM: a clean stop, {status}");
}

/// The next log record whose message is `message`, within 10 s.
fn logged(log: &Receiver<String>, message: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Ok(line) = log.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        if let Ok(record) = serde_json::from_str::<Value>(&line) {
            if record["msg"] == message {
                return record["fields"].clone();
            }
        }
    }
    panic!("no {message:?} in the daemon's log within 10 s");
}

/// Notifications a daemon sent to the test's `NOTIFY_SOCKET`, as systemd
/// would receive them.
struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind(path: std::path::PathBuf) -> Self {
        let _ = std::fs::remove_file(&path);
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Self { socket, path }
    }

    /// The next notification's text.
    fn next(&self) -> String {
        let mut buf = [0u8; 512];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("a notification within 20 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// SIGHUP reloads the configuration file: a new `comm` filter applies at
/// once (connections of the newly watched program are counted, and were
/// not before), a new listen address is named as needing a restart (the
/// daemon still answers where it did), and a file that does not read
/// changes nothing (logged; the daemon goes on with what it had). systemd
/// hears of it all (`Type=notify`): ready once `/metrics` answers,
/// reloading and ready again around each SIGHUP, stopping at SIGTERM.
#[test]
fn sighup_reloads_the_configuration() {
    require_root();
    let closed = free_loopback_addr();
    let listen = free_loopback_addr();
    let dir = std::env::temp_dir().join(format!("tt-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("config directory");
    let file = dir.join("tcptrace.toml");
    let write = |text: &str| std::fs::write(&file, text).expect("write the configuration");
    write(&format!(
        "listen = \"{listen}\"\nrefresh = \"1s\"\ncomm = [\"tt-nothing\"]\n"
    ));
    let notify = NotifySocket::bind(dir.join("notify"));
    let mut daemon = Killed(
        Command::new(tcptrace_bin())
            .args(["daemon", "--config"])
            .arg(&file)
            .env("NOTIFY_SOCKET", &notify.path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcptrace daemon"),
    );
    let log = lines_of(daemon.0.stderr.take().expect("piped"));
    assert_eq!(notify.next(), "READY=1\nSTATUS=tracing\n");
    assert_eq!(
        http_get(&listen, "/healthz", &[]).map(|r| r.0),
        Some(200),
        "ready means answering"
    );
    let opened = |listen: &str| {
        let scrape = http_get(listen, "/metrics", &[]).expect("a scrape").1;
        sample(
            &scrape,
            "tcptrace_connections_opened_total",
            &[("comm", "tt-workload"), ("role", "active")],
        )
    };
    let hangup = |daemon: &Child| signal(daemon, libc::SIGHUP);
    Workload::start(&["refused", &closed, "2"]).wait_success();
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(opened(&listen), None, "tt-workload is outside the filter");

    write(&format!(
        "listen = \"{}\"\nrefresh = \"1s\"\ncomm = [\"tt-workload\"]\n",
        free_loopback_addr()
    ));
    hangup(&daemon.0);
    assert!(notify.next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(notify.next(), "READY=1\nSTATUS=tracing\n");
    let reloaded = logged(&log, "configuration reloaded");
    assert_eq!(
        reloaded,
        serde_json::json!({
            "applied": ["comm"], "need_restart": ["listen"], "tls": false, "basic_auth": false
        })
    );
    Workload::start(&["refused", &closed, "3"]).wait_success();
    let deadline = Instant::now() + Duration::from_secs(10);
    while opened(&listen) != Some(3.0) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        opened(&listen),
        Some(3.0),
        "counted from the reload on, on the address it had"
    );

    write("comm = [\"tt-workload\"\n");
    hangup(&daemon.0);
    assert!(notify.next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(
        notify.next(),
        "READY=1\nSTATUS=tracing\n",
        "ready with what it had"
    );
    let refused = logged(&log, "configuration not reloaded");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("tcptrace.toml")),
        "the error names the file: {refused}"
    );
    Workload::start(&["refused", &closed, "1"]).wait_success();
    let deadline = Instant::now() + Duration::from_secs(10);
    while opened(&listen) != Some(4.0) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(opened(&listen), Some(4.0), "still the configuration it had");
    signal(&daemon.0, libc::SIGTERM);
    assert_eq!(notify.next(), "STOPPING=1\n");
    let status = wait_bounded(&mut daemon.0, Duration::from_secs(10), "tcptrace daemon");
    assert!(status.success(), "SIGTERM: a clean stop, {status}");
    drop(notify);
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------- exec in the same pid

/// A Python process tries a port nobody listens on, then execs curl in the
/// same pid, which tries it six times within the daemon's stack interval
/// (1 s): a reconnect loop, which the daemon logs with its call site.
/// Python waits 0.3 s before the exec, and curl spreads its attempts over
/// 0.25 s (`--rate`), so that the daemon reads each program's mappings
/// while it runs: that race is the meeter's (a process that exits within a
/// millisecond of its first connect may go unnamed), not this test's. The
/// kernel samples one stack per process and call kind per interval:
/// before, the Python program's stack stood for curl's connects. Now a
/// sample is reused only within the same address space (`task->mm`).
#[test]
fn after_an_exec_in_the_same_pid_the_new_programs_call_site_is_named() {
    require_root();
    let closed = free_loopback_addr();
    let port = closed.rsplit_once(':').expect("port").1.to_owned();
    let listen = free_loopback_addr();
    let mut daemon = Killed(
        Command::new(tcptrace_bin())
            .args([
                "daemon",
                "--listen",
                &listen,
                "--refresh",
                "1s",
                "--port",
                &port,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcptrace daemon"),
    );
    let log = lines_of(daemon.0.stderr.take().expect("piped"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(&listen, "/healthz", &[]).is_none() {
        assert!(Instant::now() < deadline, "the daemon did not answer");
        thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://{closed}/");
    let urls = [url.as_str(); 6].join("', '");
    let script = format!(
        "import os, socket, time\n\
         try:\n    socket.create_connection(('127.0.0.1', {port}))\n\
         except ConnectionRefusedError:\n    pass\n\
         time.sleep(0.3)\n\
         os.execv('/usr/bin/curl', ['curl', '-s', '--rate', '20/s', '-o', '/dev/null', '{urls}'])\n"
    );
    // curl exits non-zero: every attempt was refused.
    let _ = Command::new("python3")
        .args(["-c", &script])
        .status()
        .expect("python3 then curl");

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut curl = None;
    while curl.is_none() && Instant::now() < deadline {
        let Ok(line) = log.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let Ok(record) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let fields = &record["fields"];
        if fields["kind"] == "reconnect_loop" && fields["process"]["comm"] == "curl" {
            curl = Some(fields.clone());
        }
    }
    let curl = curl.expect("a reconnect loop of curl in the daemon's log");
    let function = curl["call_site"]["function"].as_str().unwrap_or("");
    assert!(
        function.starts_with("curl_"),
        "curl's connects are named by libcurl's API, not by the program before the exec: {curl:#}"
    );
}
