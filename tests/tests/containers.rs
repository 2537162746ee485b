//! Containers by name on the real kernel: a process in a cgroup shaped
//! like a kubelet's (systemd driver, containerd), whose containerd task
//! bundle at a test-owned node root (`--node-root`) names its namespace,
//! pod and container. `trace --pod` (and `--container`) shows that
//! process and nothing else, its events and findings named; the daemon
//! labels its series with the
//! names, and keeps them on its `TIME_WAIT` once the process is gone.
//!
//! Nothing is written under the real `/run`; the cgroups and the node root
//! are removed when the test ends, failed or not (`Drop`).

use std::{
    fmt::Write,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use tcptrace_tests::{
    cgroup2_root,
    daemon::{free_loopback_addr, sample, Daemon},
    process::workload_bin,
    require_root,
    trace::{transition, Trace},
    Tracer, Workload,
};

const NAMESPACE: &str = "shop";
const POD: &str = "checkout-7d9f8b6c5-x2x9z";
const CONTAINER: &str = "api";
/// Connections the workload in the pod opens (and closes first, leaving
/// as many `TIME_WAIT` sockets on its side).
const CONNECTIONS: usize = 5;

/// Hex digits that differ from run to run (pod UID, container id).
fn hex(len: usize) -> String {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_nanos()
        ^ u128::from(std::process::id()) << 64;
    let mut state = seed;
    let mut out = String::new();
    while out.len() < len {
        // A step of a 128-bit LCG: enough to make the ids unique.
        state = state
            .wrapping_mul(0x2360_ed05_1fc6_5da4_4385_df64_9fcc_f645)
            .wrapping_add(0x5851_f42d_4c95_7f2d_1405_7b7e_f767_814f);
        let high = u64::try_from(state >> 64).expect("the high half fits");
        let _ = write!(out, "{high:016x}");
    }
    out.truncate(len);
    out
}

/// A pod's and its container's cgroups, as the kubelet's systemd driver
/// and containerd make them, under a directory of the test's own:
/// `<top>/kubepods.slice/kubepods-besteffort.slice/
/// kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`. On drop
/// every process still in them goes back to the root cgroup, then the
/// directories are removed bottom-up.
struct PodCgroups {
    root: PathBuf,
    /// Made by the test, top first.
    made: Vec<PathBuf>,
    /// The pod's cgroup, relative to the mount (`/tcptrace-test-…/…pod….slice`).
    pod_path: String,
    /// The container's cgroup (absolute).
    container: PathBuf,
}

impl PodCgroups {
    fn new(uid: &str, container_id: &str) -> Self {
        let root = cgroup2_root();
        let top = format!("tcptrace-test-{}", std::process::id());
        let pod_path = format!(
            "/{top}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
            uid.replace('-', "_")
        );
        let container_path = format!("{pod_path}/cri-containerd-{container_id}.scope");
        let mut cgroups = Self {
            container: root.join(container_path.trim_start_matches('/')),
            root,
            made: Vec::new(),
            pod_path,
        };
        let mut dir = cgroups.root.clone();
        for part in container_path.trim_start_matches('/').split('/') {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("create cgroup {}: {e}", dir.display()));
                cgroups.made.push(dir.clone());
            }
        }
        cgroups
    }

    /// A shell that joins the container's cgroup, then execs `tt-workload
    /// ARGS` (which so runs there from its first instruction).
    fn run(&self, args: &[&str]) -> Workload {
        let script = format!(
            "echo $$ > {} && exec {} {}",
            self.container.join("cgroup.procs").display(),
            workload_bin().display(),
            args.join(" ")
        );
        Workload::spawn_command(Command::new("sh").args(["-c", &script]))
    }
}

impl Drop for PodCgroups {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines() {
                let _ = fs::write(self.root.join("cgroup.procs"), pid);
            }
            if let Err(e) = fs::remove_dir(dir) {
                eprintln!("cannot remove test cgroup {}: {e}", dir.display());
            }
        }
    }
}

/// A node's filesystem as far as containerd's state goes: the task bundle
/// whose annotations name the container. Removed on drop.
struct NodeRoot(PathBuf);

impl NodeRoot {
    fn new(uid: &str, container_id: &str) -> Self {
        let root = std::env::temp_dir().join(format!("tcptrace-node-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let bundle = root
            .join("run/containerd/io.containerd.runtime.v2.task/k8s.io")
            .join(container_id);
        fs::create_dir_all(&bundle).expect("create the task bundle");
        let config = serde_json::json!({
            "ociVersion": "1.1.0",
            "annotations": {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": CONTAINER,
                "io.kubernetes.cri.sandbox-name": POD,
                "io.kubernetes.cri.sandbox-namespace": NAMESPACE,
                "io.kubernetes.cri.sandbox-uid": uid,
            },
        });
        fs::write(bundle.join("config.json"), config.to_string()).expect("write config.json");
        Self(root)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for NodeRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The workload's names on a JSON record (an event, or a finding's process).
fn assert_named(record: &Value, what: &str) {
    assert_eq!(
        (
            record["namespace"].as_str(),
            record["pod"].as_str(),
            record["container"].as_str()
        ),
        (Some(NAMESPACE), Some(POD), Some(CONTAINER)),
        "{what} names the pod: {record}"
    );
}

/// A pod UID shaped like the kubelet's (a version-4 UUID).
fn pod_uid() -> String {
    let h = hex(32);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

#[test]
fn pod_by_name_in_trace_and_daemon() {
    require_root();
    let uid = pod_uid();
    let container_id = hex(64);
    // Declared first, dropped last: after every process below is gone.
    let cgroups = PodCgroups::new(&uid, &container_id);
    let node = NodeRoot::new(&uid, &container_id);
    let node_root = node.path().display().to_string();

    let daemon = Daemon::start(
        &free_loopback_addr(),
        &[
            "--refresh",
            "1s",
            "--node-root",
            &node_root,
            "--namespace",
            NAMESPACE,
        ],
    );
    let by_pod = Tracer::start(&["--pod", POD, "--node-root", &node_root]);
    let by_container = Tracer::start(&["--container", CONTAINER, "--node-root", &node_root]);
    let by_cgroup =
        Tracer::start_report_only(&["--cgroup", &cgroups.pod_path, "--node-root", &node_root]);

    // The server runs on the host, the client in the pod: it closes each
    // connection first, so the TIME_WAIT sockets are the pod's.
    let mut server = Workload::start(&["server", "127.0.0.1:0", &CONNECTIONS.to_string()]);
    let port = server.expect_line("port ");
    let server_addr = format!("127.0.0.1:{port}");
    let mut client = cgroups.run(&["client", &server_addr, &CONNECTIONS.to_string()]);
    let client_pid = client.pid();
    let locals = client.expect_lines("local ", CONNECTIONS);
    client.wait_success();
    server.wait_success();

    // --- trace --pod and --container: the pod's process, named, and
    // nothing else.
    check_by_pod(&by_pod.stop(), client_pid, &locals, &server_addr);
    check_by_pod(&by_container.stop(), client_pid, &locals, &server_addr);

    // --- trace --cgroup <the pod's cgroup>: the same process, named.
    let by_cgroup = by_cgroup.stop();
    let finding = by_cgroup
        .findings_of("churn", client_pid)
        .next()
        .unwrap_or_else(|| {
            panic!(
                "no churn finding for the pod's client under --cgroup {}",
                cgroups.pod_path
            )
        });
    assert_named(&finding["process"], "a finding under --cgroup");
    assert!(
        by_cgroup
            .of_type("finding")
            .all(|f| f["process"].is_null() || f["process"]["pid"] == client_pid),
        "only the pod's process under --cgroup"
    );

    // --- the daemon: series named by the pod, TIME_WAIT kept after the
    // process exited; the host's server is not in namespace `shop`.
    check_daemon(&daemon);
}

/// `trace --pod`: the pod's process, named, and nothing else.
fn check_by_pod(trace: &Trace, client_pid: u32, locals: &[String], server_addr: &str) {
    assert_eq!(
        trace.of_type("existing").count(),
        0,
        "nothing held by the pod existed at start"
    );
    let events: Vec<&Value> = trace
        .records
        .iter()
        .filter(|r| {
            matches!(
                r["type"].as_str(),
                Some("state" | "retransmit" | "reset_sent" | "reset_received" | "eof_read")
            )
        })
        .collect();
    assert!(!events.is_empty(), "the pod's connections were traced");
    for event in &events {
        assert_eq!(
            event["owner"]["pid"], client_pid,
            "only the pod's process: {event}"
        );
        assert_named(event, "an event");
    }
    for local in locals {
        let transitions: Vec<String> = trace
            .socket_events(local, server_addr)
            .into_iter()
            .filter(|e| e["type"] == "state")
            .map(transition)
            .collect();
        assert!(
            transitions.first().map(String::as_str) == Some("CLOSE->SYN_SENT")
                && transitions.last().map(String::as_str) == Some("FIN_WAIT2->CLOSE"),
            "connection {local} traced from connect to TIME_WAIT: {transitions:?}"
        );
    }
    let churn: Vec<&Value> = trace.findings_of("churn", client_pid).collect();
    assert!(!churn.is_empty(), "a churn finding for the pod's client");
    for finding in trace.of_type("finding") {
        if finding["process"].is_null() {
            continue; // port pressure: per destination, no process
        }
        assert_eq!(
            finding["process"]["pid"], client_pid,
            "only the pod's process: {finding}"
        );
        assert_named(&finding["process"], "a finding");
    }
}

/// The daemon's series named by the pod, its `TIME_WAIT` kept after the
/// process exited; the host's server is not in namespace `shop`.
fn check_daemon(daemon: &Daemon) {
    let pod_labels = [
        ("comm", "tt-workload"),
        ("namespace", NAMESPACE),
        ("pod", POD),
        ("container", CONTAINER),
    ];
    let scrape = daemon.scrape_until(Duration::from_secs(20), |scrape| {
        sample(scrape, "tcptrace_time_wait_sockets", &pod_labels).unwrap_or(0.0) >= 1.0
    });
    let time_wait = sample(&scrape, "tcptrace_time_wait_sockets", &pod_labels).unwrap_or(0.0);
    assert!(
        time_wait >= 1.0,
        "TIME_WAIT of the exited pod process keeps its labels:\n{scrape}"
    );
    let opened = [pod_labels.as_slice(), &[("role", "active")]].concat();
    assert_eq!(
        sample(&scrape, "tcptrace_connections_opened_total", &opened),
        Some(f64::from(u32::try_from(CONNECTIONS).expect("a few"))),
        "connects counted under the pod's names:\n{scrape}"
    );
    let outside: Vec<&str> = scrape
        .lines()
        .filter(|l| l.contains(r#"comm="tt-workload""#) && !l.contains(&format!(r#"pod="{POD}""#)))
        .collect();
    assert!(
        outside.is_empty(),
        "the host's server is filtered out by --namespace: {outside:#?}"
    );
}

/// A daemon (re)started while a pod's server already listens: it learns
/// the listener from its start dump, and the connections the server
/// accepts afterwards are counted under the pod's names, not "unknown",
/// and under its ids with `--container-ids`.
#[test]
fn a_daemon_started_after_a_pod_server_labels_its_accepts() {
    require_root();
    let uid = pod_uid();
    let container_id = hex(64);
    let cgroups = PodCgroups::new(&uid, &container_id);
    let node = NodeRoot::new(&uid, &container_id);
    let node_root = node.path().display().to_string();

    let mut server = cgroups.run(&["server", "127.0.0.1:0", &CONNECTIONS.to_string()]);
    let port = server.expect_line("port ");
    // With the ids too: `container_id` and `pod_uid` beside the names.
    let daemon = Daemon::start(
        &free_loopback_addr(),
        &["--node-root", &node_root, "--container-ids"],
    );
    let client = Workload::start(&[
        "client",
        &format!("127.0.0.1:{port}"),
        &CONNECTIONS.to_string(),
    ]);
    client.wait_success();
    server.wait_success();

    let connections = f64::from(u32::try_from(CONNECTIONS).expect("a few"));
    let accepted = [
        ("comm", "tt-workload"),
        ("namespace", NAMESPACE),
        ("pod", POD),
        ("container", CONTAINER),
        ("container_id", &container_id),
        ("pod_uid", &uid),
        ("role", "passive"),
    ];
    let scrape = daemon.scrape_until(Duration::from_secs(20), |scrape| {
        sample(scrape, "tcptrace_connections_opened_total", &accepted).unwrap_or(0.0) >= connections
    });
    assert_eq!(
        sample(&scrape, "tcptrace_connections_opened_total", &accepted),
        Some(connections),
        "the pre-existing pod server's accepts, under its names:\n{}",
        scrape
            .lines()
            .filter(|l| l.contains("connections_opened"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A pod's cgroup in the cgroup-v1 memory hierarchy, as the kubelet's
/// cgroupfs driver makes it on a hybrid host
/// (`/kubepods/besteffort/pod<uid>/<id>`), while the process's cgroup-v2
/// path is the root, shared with everything: only the v1 path tells it
/// apart. Removed on drop (its processes moved back to the root first).
struct V1PodCgroup {
    hierarchy: PathBuf,
    made: Vec<PathBuf>,
    /// `/kubepods/besteffort/pod<uid>`, as /proc/PID/cgroup writes it.
    pod_path: String,
    container: PathBuf,
}

impl V1PodCgroup {
    fn new(uid: &str, container_id: &str) -> Self {
        let hierarchy = PathBuf::from("/sys/fs/cgroup/memory");
        let mounts = fs::read_to_string("/proc/self/mounts").expect("mounts");
        assert!(
            mounts.lines().any(
                |l| l.split_whitespace().nth(1) == Some("/sys/fs/cgroup/memory")
                    && l.split_whitespace().nth(2) == Some("cgroup")
            ),
            "this test needs a cgroup-v1 memory hierarchy at /sys/fs/cgroup/memory \
             (a hybrid host, as this machine class is)"
        );
        let pod_path = format!("/kubepods/besteffort/pod{uid}");
        let mut made = Vec::new();
        let mut dir = hierarchy.clone();
        for part in format!("{pod_path}/{container_id}")
            .trim_start_matches('/')
            .split('/')
        {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir).expect("make a v1 cgroup");
                made.push(dir.clone());
            }
        }
        Self {
            hierarchy,
            made,
            pod_path,
            container: dir,
        }
    }

    /// The workload binary with `args`, moved into the container's v1
    /// cgroup before it execs.
    fn run(&self, args: &[&str]) -> Workload {
        let procs = self.container.join("cgroup.procs");
        let mut script = format!(
            "echo $$ > '{}' && exec '{}'",
            procs.display(),
            workload_bin().display()
        );
        for arg in args {
            let _ = write!(script, " '{arg}'");
        }
        Workload::spawn_command(Command::new("sh").args(["-c", &script]))
    }
}

impl Drop for V1PodCgroup {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = fs::write(self.hierarchy.join("cgroup.procs"), pid);
                }
            }
            if let Err(e) = fs::remove_dir(dir) {
                eprintln!("cannot remove test cgroup {}: {e}", dir.display());
            }
        }
    }
}

/// `--cgroup` with a cgroup-v1 path on a hybrid host: the pod's client
/// (v1 cgroup of a cgroupfs-driver pod, v2 cgroup the root) is shown,
/// named by its containerd state; a client outside it is not. The clients
/// hold their connection open: a v1 key is read from the owner's
/// `/proc/PID/cgroup` when its first event is handled, which a process
/// gone by then no longer has (see the README).
#[test]
fn cgroup_v1_path_selects_the_pod_on_a_hybrid_host() {
    require_root();
    let uid = pod_uid();
    let container_id = hex(64);
    let cgroup = V1PodCgroup::new(&uid, &container_id);
    let node = NodeRoot::new(&uid, &container_id);
    let node_root = node.path().display().to_string();
    let tracer = Tracer::start(&["--cgroup", &cgroup.pod_path, "--node-root", &node_root]);

    let mut server = Workload::start(&["server", "127.0.0.1:0", "2"]);
    let port = server.expect_line("port ");
    let server_addr = format!("127.0.0.1:{port}");
    // One after the other: the server serves a connection to its end.
    let mut pids = Vec::new();
    for inside in [true, false] {
        let hold = ["hold", server_addr.as_str()];
        let mut client = if inside {
            cgroup.run(&hold)
        } else {
            Workload::start(&hold)
        };
        client.expect_line("holding");
        pids.push(client.pid());
        // Its events handled (drained every 100 ms) while it lives.
        std::thread::sleep(Duration::from_millis(500));
        client.close_stdin();
        client.expect_line("closed");
        client.wait_success();
    }
    let (inside_pid, outside_pid) = (pids[0], pids[1]);
    server.wait_success();
    let trace = tracer.stop();

    let events = |pid: u32| {
        trace
            .of_type("state")
            .filter(|e| e["owner"]["pid"] == pid)
            .collect::<Vec<&Value>>()
    };
    let shown = events(inside_pid);
    let established = shown
        .iter()
        .filter(|e| transition(e) == "SYN_SENT->ESTABLISHED")
        .count();
    assert_eq!(
        established, 1,
        "the pod's client under --cgroup {}: {shown:#?}",
        cgroup.pod_path
    );
    for event in shown {
        assert_named(event, "an event of the v1 pod");
    }
    assert!(
        events(outside_pid).is_empty(),
        "the client outside the pod is not shown"
    );
}
