//! Degrading, not failing: a container cgroup removed while its sockets
//! live, a process gone before its call site could be symbolized, and a
//! process calling faster than its stacks may be captured.

use std::{fs, os::unix::fs::MetadataExt, path::PathBuf, process::Command, thread, time::Duration};

use serde_json::Value;
use tcptrace_tests::{
    cgroup2_root,
    daemon::{free_loopback_addr, http_get, sample, Daemon},
    require_root, Tracer, Workload,
};

/// A cgroup made by the test, removed on drop (after moving any process
/// still in it back to the root).
struct TestCgroup {
    path: PathBuf,
    root: PathBuf,
}

impl TestCgroup {
    fn new(name: &str) -> Self {
        let root = cgroup2_root();
        let path = root.join(name);
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).expect("create the test cgroup");
        Self { path, root }
    }

    fn id(&self) -> u64 {
        fs::metadata(&self.path).expect("cgroup dir").ino()
    }

    /// Moves every process of this cgroup back to the root cgroup.
    fn empty(&self) {
        let procs = fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            let _ = fs::write(self.root.join("cgroup.procs"), pid);
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        self.empty();
        let _ = fs::remove_dir(&self.path);
    }
}

#[test]
fn container_cgroup_removed_while_its_socket_lives() {
    require_root();
    let cgroup = TestCgroup::new(&format!("tcptrace-test-{}", std::process::id()));
    let cgroup_id = cgroup.id();
    let daemon = Daemon::start(
        &free_loopback_addr(),
        &["--refresh", "1s", "--comm", "tt-workload"],
    );
    let tracer = Tracer::start(&["--comm", "tt-workload"]);

    let mut server = Workload::start(&["server", "127.0.0.1:0", "1"]);
    let port = server.expect_line("port ");
    // The client runs in the test cgroup from its first instruction.
    let workload = tcptrace_tests::process::workload_bin();
    let script = format!(
        "echo $$ > {} && exec {} hold 127.0.0.1:{port}",
        cgroup.path.join("cgroup.procs").display(),
        workload.display()
    );
    let mut holder = Workload::spawn_command(Command::new("sh").args(["-c", &script]));
    let local = holder.expect_line("local ");
    holder.expect_line("holding");

    // The container goes away while its connection lives on.
    cgroup.empty();
    fs::remove_dir(&cgroup.path).expect("remove the emptied cgroup");
    assert!(!cgroup.path.exists());
    thread::sleep(Duration::from_millis(1500)); // a refresh and a scrape with the id unknown
    let (status, _) = http_get(&daemon.listen, "/metrics", &[]).expect("scrape");
    assert_eq!(status, 200);

    holder.close_stdin();
    holder.expect_line("closed");
    let holder_pid = holder.pid();
    holder.wait_success();
    server.wait_success();
    let trace = tracer.stop();

    let events: Vec<&Value> = trace.socket_events(&local, &format!("127.0.0.1:{port}"));
    assert!(!events.is_empty(), "the connection was traced");
    for event in &events {
        assert_eq!(
            event["cgroup_id"], cgroup_id,
            "owner cgroup recorded at connect: {event}"
        );
        assert_eq!(event["owner"]["pid"], holder_pid);
    }
    // /metrics is rendered at most once a second: wait for a fresh one.
    let labels = [("comm", "tt-workload"), ("closed_first", "local")];
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| {
        sample(s, "tcptrace_connections_closed_total", &labels).is_some_and(|v| v >= 1.0)
    });
    let closes = sample(&scrape, "tcptrace_connections_closed_total", &labels);
    assert!(
        closes.unwrap_or(0.0) >= 1.0,
        "the close after the cgroup was removed is counted:\n{scrape}"
    );
    let (status, health) = http_get(&daemon.listen, "/healthz", &[]).expect("healthz");
    assert_eq!(status, 200, "{health}");
}

#[test]
fn call_site_of_an_exited_process_says_why_it_is_unknown() {
    require_root();
    let tracer = Tracer::start(&["--comm", "tt-workload"]);
    // Port 1 refuses at once and the process exits while the reader is
    // stopped, so its mappings can never be read: its stacks cannot be
    // unwound. (A reader that runs meets a process at its first stack,
    // woken by the kernel, and names its call site: see `runtimes.rs`.)
    tracer.pause(true);
    let refused = Workload::start(&["refused", "127.0.0.1:1", "2"]);
    let pid = refused.pid();
    refused.wait_success();
    tracer.pause(false);
    let trace = tracer.stop();
    let connect = trace
        .of_type("finding")
        .find(|f| f["kind"] == "connect" && f["process"]["pid"] == pid)
        .unwrap_or_else(|| panic!("no connect finding for {pid}: {:#?}", trace.records));
    assert_eq!(connect["failures"]["refused"], 2);
    let site = &connect["call_site"];
    let summary = trace.summary();
    if site.is_null() {
        // No stack at all: the capture itself failed, which the session
        // counts (and the text report shows as "no stack captured").
        assert!(
            summary["summary"]["kernel"]["stack_errors"].as_u64() > Some(0),
            "no call site, and no failed capture counted: {summary}"
        );
        return;
    }
    assert_eq!(site["function"], "?", "{site}\n{summary}");
    let reason = site["unresolved"]
        .as_str()
        .unwrap_or_else(|| panic!("a reason: {site}"));
    assert!(
        reason.contains("exited before its mappings were read"),
        "{reason}"
    );
}

/// The stack store under process churn: 20,000 short-lived processes, each
/// with stacks of its own (address-space layout differs per process), go
/// through the session's bounded stores; a process that comes after still
/// gets its call site, and the session counts every capture.
#[test]
fn call_sites_survive_twenty_thousand_processes() {
    const PROCESSES: u64 = 20_000;
    require_root();
    let mut tracer = Tracer::start(&["--comm", "tt-workload"]);
    let started = std::time::Instant::now();
    let mut last = 0;
    for i in 0..PROCESSES {
        // A refused connect: one capture, and the process exits at once.
        let mut child = Command::new(tcptrace_tests::process::workload_bin())
            .args(["refused", "127.0.0.1:1", "1"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run tt-workload");
        last = child.id();
        let status = child.wait().expect("wait for tt-workload");
        assert!(status.success(), "process {i}: {status}");
        assert!(
            started.elapsed() < Duration::from_mins(10),
            "{i} processes in 10 minutes: too slow to go on"
        );
    }
    // Let the reader catch up with the churn (its ring buffer was full of
    // stacks for a while, which the session counts): the next process must
    // find room for its own.
    assert!(
        tracer.wait_for(Duration::from_mins(2), |r| r["owner"]["pid"] == last),
        "the reader never caught up with the last process ({last})"
    );
    thread::sleep(Duration::from_secs(1));
    let mut server = Workload::start(&["server", "127.0.0.1:0", "1"]);
    let addr = format!("127.0.0.1:{}", server.expect_line("port "));
    let mut holder = Workload::start(&["hold", &addr]);
    holder.expect_line("holding");
    let holder_pid = holder.pid();
    thread::sleep(Duration::from_millis(300));
    let trace = tracer.stop();
    holder.close_stdin();
    holder.wait_success();
    server.wait_success();

    // Every capture is accounted for: unwound, unknown with a reason, or
    // counted as not captured (its ring-buffer record could not be sent).
    let summary = &trace.summary()["summary"];
    let count = |value: &Value| value.as_u64().unwrap_or(0);
    let stacks = &summary["stacks"];
    // Other processes on the host (outside `--comm`) may connect
    // meanwhile: their captures are counted as filtered out.
    let reached =
        count(&stacks["unwound"]) + count(&stacks["unmapped"]) + count(&stacks["filtered_out"]);
    let failed = count(&summary["kernel"]["stack_errors"]);
    let taken = count(&summary["kernel"]["stacks_taken"]);
    assert!(
        reached == taken && taken + failed >= PROCESSES,
        "every capture of the {PROCESSES} processes is accounted for: {summary}"
    );
    let finding = trace
        .of_type("finding")
        .find(|f| f["kind"] == "connect" && f["process"]["pid"] == holder_pid)
        .unwrap_or_else(|| panic!("no connect finding for the last process: {summary}"));
    let site = &finding["call_site"];
    assert_eq!(site["user_code"], true, "{site}");
    assert!(
        site["function"]
            .as_str()
            .is_some_and(|f| f.starts_with("tt_workload::")),
        "{site}"
    );
}

const CHURN_BIN: &str = env!("CARGO_BIN_EXE_tt-churn");

/// A process connecting ten thousand times a second from one call site:
/// `trace` captures its stacks within the interactive budget (64 back to
/// back per call kind, then one per millisecond: `stack_budget`), every
/// other call reuses the last capture and is counted as reused, and every
/// connection still names its call site.
#[test]
fn a_churning_process_has_its_stack_captures_budgeted() {
    require_root();
    let tracer = Tracer::start(&["--comm", "tt-churn"]);
    let started = std::time::Instant::now();
    let churn = Command::new(CHURN_BIN)
        .args(["--threads", "1", "--seconds", "1", "--rate", "10000"])
        .output()
        .expect("run tt-churn");
    let churned = started.elapsed().as_secs_f64();
    assert!(churn.status.success(), "tt-churn: {churn:?}");
    let result: Value = serde_json::from_slice(&churn.stdout).expect("tt-churn's JSON");
    let connections = result["connections"].as_u64().unwrap_or(0);
    thread::sleep(Duration::from_millis(500));
    let trace = tracer.stop();

    let summary = &trace.summary()["summary"];
    let kernel = &summary["kernel"];
    let count = |value: &Value| value.as_u64().unwrap_or(0);
    let (taken, reused) = (
        count(&kernel["stacks_taken"]),
        count(&kernel["stacks_sampled"]),
    );
    // A connect, an accept and a close at least per connection.
    let calls = 3 * connections;
    // Each call kind (`STACK_KIND_*`: birth, close, accept, end-of-file
    // read) over the churn's life: a burst of 64, then one per
    // millisecond (and the one due at the start of the next); a tenth
    // more, as two CPUs may both find a capture due (the sample is read,
    // then written, without a lock).
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a few thousand"
    )]
    let budget = (4.0 * (65.0 + (1000.0 * churned).ceil()) * 1.1) as u64;
    let figures = format!(
        "{connections} connections: {taken} captures taken (budget {budget} over {churned:.2} s), \
         {reused} reused: {kernel}"
    );
    eprintln!("{figures}");
    assert!(connections >= 2000, "the churn ran near its rate: {result}");
    assert!(
        taken <= budget && reused > 0 && taken + reused + count(&kernel["stack_errors"]) >= calls,
        "{figures}"
    );

    let connects: Vec<&Value> = trace
        .of_type("state")
        .filter(|r| r["old"] == "CLOSE" && r["new"] == "SYN_SENT")
        .collect();
    assert_eq!(connects.len() as u64, connections, "{summary}");
    let unnamed = connects
        .iter()
        .filter(|r| !r["owner_stack_id"].is_u64())
        .count();
    assert_eq!(
        unnamed, 0,
        "every connect carries a capture, its own or reused"
    );
    let finding = trace
        .of_type("finding")
        .find(|f| f["kind"] == "connect")
        .unwrap_or_else(|| panic!("no connect finding: {summary}"));
    let site = &finding["call_site"];
    assert_eq!(site["user_code"], true, "{site}");
    assert!(
        site["function"]
            .as_str()
            .is_some_and(|f| f.starts_with("tt_churn::")),
        "{site}"
    );
}
