//! The live lines' formats on real traffic: `-o csv` read back by Python's
//! `csv` module (a reader nobody here wrote), `--fields` choosing the text
//! columns, and `--fields` refused where it cannot apply.

use std::process::{Child, Command, Stdio};

use tcptrace_tests::{
    require_root,
    trace::{tcptrace_bin, wait_until_tracing},
    Workload,
};

const CONNECTIONS: usize = 20;

/// `tcptrace trace ARGS` for `seconds`, its stdout to `path`; returns once
/// it is attached.
fn start_trace(args: &[&str], path: &std::path::Path) -> Child {
    let mut child = Command::new(tcptrace_bin())
        .arg("trace")
        .args(args)
        .stdout(std::fs::File::create(path).expect("output file"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcptrace");
    wait_until_tracing(child.stderr.take().expect("stderr is piped"));
    child
}

/// A server and a client making `CONNECTIONS` connections on loopback;
/// the client's pid.
fn connections() -> u32 {
    let n = CONNECTIONS.to_string();
    let mut server = Workload::start(&["server", "127.0.0.1:0", &n]);
    let port = server.expect_line("port ");
    let client = Workload::start(&["client", &format!("127.0.0.1:{port}"), &n]);
    let pid = client.pid();
    client.wait_success();
    server.wait_success();
    pid
}

fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tcptrace-outputs-{name}-{}", std::process::id()))
}

#[test]
fn csv_read_back_by_python_has_every_connection() {
    require_root();
    let path = scratch("csv");
    let mut trace = start_trace(
        &["-o", "csv", "--comm", "tt-workload", "--duration", "5s"],
        &path,
    );
    let client = connections();
    assert!(trace.wait().expect("tcptrace").success());
    let script = "import csv, json, sys\n\
                  rows = list(csv.reader(open(sys.argv[1], newline='')))\n\
                  print(json.dumps(rows))\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("python3");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).expect("rows");
    let header = &rows[0];
    assert_eq!(header[..3], ["timestamp", "pid", "comm"]);
    assert!(
        rows.iter().all(|row| row.len() == header.len()),
        "one table"
    );
    let column = |name: &str| header.iter().position(|h| h == name).expect(name);
    let (pid, event, comm) = (column("pid"), column("event"), column("comm"));
    let connects = rows[1..]
        .iter()
        .filter(|row| row[pid] == client.to_string() && row[event] == "SYN_SENT -> ESTABLISHED")
        .inspect(|row| assert_eq!(row[comm], "tt-workload"))
        .count();
    assert_eq!(connects, CONNECTIONS, "every connect of the client, once");
}

#[test]
fn fields_choose_the_text_columns() {
    require_root();
    let path = scratch("fields");
    let mut trace = start_trace(
        &[
            "--fields",
            "time,comm,event,remote",
            "--comm",
            "tt-workload",
            "--duration",
            "5s",
        ],
        &path,
    );
    connections();
    assert!(trace.wait().expect("tcptrace").success());
    let text = std::fs::read_to_string(&path).expect("output");
    let _ = std::fs::remove_file(&path);
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["TIME(UTC)", "COMM", "EVENT", "REMOTE"]);
    let established: Vec<&str> = lines
        .filter(|l| l.contains("SYN_SENT -> ESTABLISHED"))
        .inspect(|l| assert!(!l.ends_with(' '), "no trailing blanks: {l:?}"))
        .collect();
    assert_eq!(established.len(), CONNECTIONS, "{text}");
    for line in established {
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(columns[1], "tt-workload", "{line}");
        assert!(
            columns[5].starts_with("127.0.0.1:"),
            "the remote last: {line}"
        );
    }
}

#[test]
fn fields_with_json_lines_is_refused_with_the_reason() {
    let out = Command::new(tcptrace_bin())
        .args(["trace", "--json", "--fields", "time,comm"])
        .output()
        .expect("tcptrace");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("JSON lines carry every field"), "{stderr}");
    let out = Command::new(tcptrace_bin())
        .args(["trace", "--fields", "time,nonsense"])
        .output()
        .expect("tcptrace");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error: {stderr}");
    assert!(
        stderr.contains("nonsense") && stderr.contains("possible values"),
        "{stderr}"
    );
}

/// `trace --json > file` under saturating churn (`tt-churn`, four threads,
/// four seconds): every event the session shows reaches the file, each line
/// whole. The output used to be handed to its writer once per drain of the
/// ring, and a ring that never emptied made one batch larger than the
/// writer's bound, dropped whole: the file kept 0.3 % of the lines. The
/// kernel may lose records at this rate (counted in the summary); what the
/// session shows must all be written.
#[test]
fn json_lines_under_saturating_churn_all_reach_the_file() {
    const EVENT_TYPES: [&str; 6] = [
        "state",
        "retransmit",
        "reset_sent",
        "reset_received",
        "eof_read",
        "syn_ack_retransmit",
    ];
    require_root();
    let path = scratch("churn");
    let mut trace = start_trace(&["--json", "--duration", "6s"], &path);
    let churn = Command::new(env!("CARGO_BIN_EXE_tt-churn"))
        .args(["--threads", "4", "--seconds", "4", "--linger0"])
        .output()
        .expect("tt-churn");
    assert!(churn.status.success(), "tt-churn: {churn:?}");
    assert!(trace.wait().expect("tcptrace").success());
    let text = std::fs::read_to_string(&path).expect("the output file");
    let _ = std::fs::remove_file(&path);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("every line is whole JSON"))
        .collect();
    let events = lines
        .iter()
        .filter(|line| EVENT_TYPES.contains(&line["type"].as_str().unwrap_or("")))
        .count() as u64;
    let summary = lines
        .iter()
        .find(|line| line["type"] == "summary")
        .expect("the session's summary, at the end of the file");
    let shown = summary["summary"]["shown"].as_u64().expect("shown");
    assert!(
        shown > 100_000,
        "a saturating load: {shown} events shown ({})",
        String::from_utf8_lossy(&churn.stdout)
    );
    assert_eq!(
        events, shown,
        "every event shown is in the file (kernel lost {} at this rate)",
        summary["summary"]["kernel"]["events_lost"]
    );
}

/// `--duration` ends a session under saturating churn: the session reads a
/// batch at a time and looks at its deadline in between. A guard for the
/// batching (the drain before it returned often enough here, and passes
/// too). Ordered, not timed: the session ends while the load, four times
/// as long, still runs.
#[test]
fn duration_ends_a_session_under_a_load_that_never_stops() {
    require_root();
    let path = scratch("duration");
    let mut trace = start_trace(&["--json", "--duration", "3s"], &path);
    let mut churn = Command::new(env!("CARGO_BIN_EXE_tt-churn"))
        .args(["--threads", "4", "--seconds", "12", "--linger0"])
        .stdout(Stdio::null())
        .spawn()
        .expect("tt-churn");
    let ended = trace.wait().expect("tcptrace");
    let load_still_running = churn.try_wait().expect("tt-churn").is_none();
    let _ = churn.kill();
    let _ = churn.wait();
    let _ = std::fs::remove_file(&path);
    assert!(ended.success(), "{ended:?}");
    assert!(
        load_still_running,
        "a 3 s session ended only after the 12 s load it traced"
    );
}
