//! Record and replay on the real kernel, with real programs: Debian's
//! nginx in a network namespace the test makes, driven by curl and ab from
//! a second one, traced by two sessions at once that save themselves
//! (`trace --write`): one printing every event, one in summary mode
//! (`--report-only`, gzip-compressed). Then `tcptrace report FILE`, run as
//! an unprivileged user (no BPF, no root):
//!
//! - prints exactly what each session printed: every event line, the
//!   start, the summary and every finding of the report;
//! - counts the connections the kernel counted (`nstat`), and names the
//!   call sites the live session named;
//! - narrows by the usual flags (`--comm curl`: only curl's findings, its
//!   connects all there);
//! - replays a recording cut short (its end lost) with a warning, and
//!   refuses a file that is not a recording.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;
use tcptrace_tests::{
    kernel_counts::nstat,
    netns::HostPair,
    programs::{curls_then_ab, scratch_dir, Nginx},
    require_root,
    trace::tcptrace_bin,
    Tracer,
};

const PORT: u16 = 18471;
const CURLS: u64 = 20;
const AB_REQUESTS: u64 = 150;

/// `tcptrace report ARGS` as user `nobody` (no capabilities at all).
fn report_unprivileged(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(tcptrace_bin())
        .arg("report")
        .args(args)
        .output()
        .expect("run tcptrace report through setpriv")
}

/// The JSON lines of a run that must have succeeded.
fn json_lines(output: &Output, what: &str) -> Vec<Value> {
    assert!(
        output.status.success(),
        "{what} exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// A recording's path in the scratch directory, readable by everyone (the
/// replay runs as `nobody`).
fn recording(name: &str) -> PathBuf {
    let dir = scratch_dir().join("recordings");
    fs::create_dir_all(&dir).expect("recordings directory");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.join(name);
    let _ = fs::remove_file(&path);
    path
}

fn readable(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod recording");
}

/// Lines whose `type` is one of `types`.
fn of_types<'a>(records: &'a [Value], types: &[&str]) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| types.contains(&r["type"].as_str().unwrap_or("")))
        .collect()
}

/// The findings of a report by (kind, process name).
fn findings(records: &[Value]) -> BTreeMap<(String, String), Vec<&Value>> {
    let mut by = BTreeMap::<_, Vec<_>>::new();
    for finding in of_types(records, &["finding"]) {
        let key = (
            finding["kind"].as_str().unwrap_or("").to_owned(),
            finding["process"]["comm"].as_str().unwrap_or("").to_owned(),
        );
        by.entry(key).or_default().push(finding);
    }
    by
}

#[test]
fn a_replayed_session_prints_what_it_printed_live() {
    require_root();
    let hosts = HostPair::new("ttrep");
    let nginx = Nginx::start(&hosts.a, &format!("{}:{PORT}", hosts.a_addr));
    let (events_file, summary_file) = (recording("events.jsonl"), recording("summary.jsonl.gz"));
    let port = PORT.to_string();
    let events_path = events_file.to_str().expect("utf-8 path");
    let summary_path = summary_file.to_str().expect("utf-8 path");
    let live_events = Tracer::start(&["--port", &port, "--write", events_path]);
    let live_summary = Tracer::start_report_only(&["--port", &port, "--write", summary_path]);

    let before = nstat(&hosts.b);
    let url = format!("http://{}:{PORT}/", hosts.a_addr);
    curls_then_ab(&hosts.b, &url, CURLS, AB_REQUESTS);
    let after = nstat(&hosts.b);
    let active_opens = after.get("TcpActiveOpens").copied().unwrap_or(0)
        - before.get("TcpActiveOpens").copied().unwrap_or(0);
    let live_events = live_events.stop().records;
    let live_summary = live_summary.stop().records;
    drop(nginx);
    readable(&events_file);
    readable(&summary_file);

    // Every line, in order, as the sessions printed them.
    for (file, live, extra) in [
        (events_path, &live_events, None),
        (summary_path, &live_summary, Some("--report-only")),
    ] {
        let mut args = vec![file, "--json"];
        args.extend(extra);
        let replayed = json_lines(&report_unprivileged(&args), "tcptrace report");
        assert_eq!(
            replayed.len(),
            live.len(),
            "{file}: as many lines as the session printed"
        );
        for (i, (replayed, live)) in replayed.iter().zip(live.iter()).enumerate() {
            assert_eq!(replayed, live, "{file}: line {i} differs");
        }
    }

    // The events are those the kernel counted: every connect of curl and
    // ab (nothing lost), each named at the call site the session named.
    let summary = &of_types(&live_events, &["summary"])[0]["summary"];
    assert_eq!(summary["kernel"]["events_lost"], 0, "events were lost");
    let connects = of_types(&live_events, &["state"])
        .into_iter()
        .filter(|e| e["old"] == "CLOSE" && e["new"] == "SYN_SENT")
        .count() as u64;
    assert_eq!(
        connects, active_opens,
        "connects recorded against the clients' TcpActiveOpens"
    );
    assert!(active_opens >= CURLS + AB_REQUESTS, "nstat: {active_opens}");
    for live in [&live_events, &live_summary] {
        let by = findings(live);
        let curl = &by[&("connect".to_owned(), "curl".to_owned())][0];
        assert_eq!(curl["attempts"], CURLS, "curl's connects: {curl}");
        let site = &curl["call_site"];
        assert!(
            site["unresolved"].is_null() && site["function"] != "?",
            "curl's connect call site is named: {site}"
        );
        assert!(
            by.contains_key(&("churn".to_owned(), "nginx".to_owned())),
            "nginx's churn is reported: {:?}",
            by.keys()
        );
    }

    narrowed_to_curl(events_path);
    cut_short(&events_file, &live_events);
    // A compressed one cut short: what was compressed before the cut.
    let bytes = fs::read(&summary_file).expect("read the recording");
    let cut = recording("cut.jsonl.gz");
    fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write the cut recording");
    readable(&cut);
    let output = report_unprivileged(&[cut.to_str().expect("utf-8"), "--json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has no end"), "a warning says so: {stderr}");
    let replayed = json_lines(&output, "tcptrace report of a cut compressed recording");
    assert!(
        replayed.iter().any(|r| r["type"] == "state"),
        "the events before the cut are replayed"
    );

    // Not a recording at all.
    let output = report_unprivileged(&["/etc/hostname"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not a tcptrace recording"),
        "a clear error: {stderr}"
    );
}

/// Narrowed by process: curl's findings only, all of its connects.
fn narrowed_to_curl(recording: &str) {
    let narrowed = json_lines(
        &report_unprivileged(&[recording, "--json", "--comm", "curl"]),
        "tcptrace report --comm curl",
    );
    let by = findings(&narrowed);
    assert!(!by.is_empty(), "curl's findings are there");
    for (kind, comm) in by.keys() {
        // Port pressure is about a destination, not a process.
        if kind != "port_pressure" {
            assert_eq!(comm, "curl", "a {kind} finding of another process");
        }
    }
    assert_eq!(
        by[&("connect".to_owned(), "curl".to_owned())][0]["attempts"],
        CURLS
    );
}

/// Cut short: the first half of the file, ending mid-line, replays the
/// events it holds, with a warning.
fn cut_short(recording_file: &Path, live_events: &[Value]) {
    let bytes = fs::read(recording_file).expect("read the recording");
    let cut = recording("cut.jsonl");
    fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write the cut recording");
    readable(&cut);
    let output = report_unprivileged(&[cut.to_str().expect("utf-8"), "--json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has no end"), "a warning says so: {stderr}");
    let replayed = json_lines(&output, "tcptrace report of a cut recording");
    let events = |records: &[Value]| -> Vec<Value> {
        records
            .iter()
            .filter(|r| r.get("time_ns").is_some())
            .cloned()
            .collect()
    };
    let (cut_events, all_events) = (events(&replayed), events(live_events));
    assert!(
        !cut_events.is_empty() && cut_events.len() < all_events.len(),
        "some events, not all: {} of {}",
        cut_events.len(),
        all_events.len()
    );
    assert_eq!(cut_events[..], all_events[..cut_events.len()]);
}
