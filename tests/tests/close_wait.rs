//! `CLOSE_WAIT` sockets against `ss`, in every mode and filter. A server
//! in a namespace the test makes reads end-of-file from each of its
//! clients and never closes (incident 3 of docs/INCIDENTS.md); the truth is
//! `ss state close-wait` in its namespace. Every session must list each of
//! those sockets in the server's `CLOSE_WAIT` leak, with an exact age (they
//! entered `CLOSE_WAIT` while it traced) and the function that read their
//! end-of-file, and the daemon must hold them in
//! `tcptrace_sockets{state="CLOSE_WAIT"}` and log the same leak. Summary
//! mode (`--report-only`, the daemon) sends nothing for a socket entering
//! `CLOSE_WAIT`: its age and reader come from the kernel's record.

use std::{fmt::Write as _, process::Command, thread, time::Duration};

use serde_json::Value;
use tcptrace_tests::{
    daemon::{free_loopback_addr, sample, Daemon},
    kernel_counts::ss_count,
    netns::HostPair,
    require_root,
    trace::without_frames,
    Tracer, Workload,
};

const SCENARIO_BIN: &str = env!("CARGO_BIN_EXE_tt-scenario");
const PORT: &str = "18350";
const LEAKED: usize = 6;

fn scenario_in(netns: &str, args: &[&str]) -> Workload {
    Workload::spawn_command(
        Command::new("ip")
            .args(["netns", "exec", netns, SCENARIO_BIN])
            .args(args),
    )
}

/// The function of the server that read end-of-file and kept the socket.
const EOF_READER: &str = "tt_scenario::read_to_eof";

/// What a session says of the server's leak: (sockets, age exact, the
/// end-of-file reader named in every finding).
fn leak_in(leaks: &[&Value]) -> Option<(u64, bool, bool)> {
    if leaks.is_empty() {
        return None;
    }
    let sockets = leaks
        .iter()
        .map(|l| l["sockets"].as_u64().unwrap_or(0))
        .sum();
    let exact = leaks.iter().all(|l| l["age_is_lower_bound"] == false);
    let reader = leaks
        .iter()
        .all(|l| l["eof_call_site"]["function"] == EOF_READER);
    Some((sockets, exact, reader))
}

#[test]
fn close_wait_leaks_agree_with_ss() {
    require_root();
    let hosts = HostPair::new("ttcw");
    let filters: [(&str, &[&str]); 3] = [
        ("", &[]),
        (" --port", &["--port", PORT]),
        (" --comm", &["--comm", "tt-scenario"]),
    ];
    let sessions: Vec<(String, Tracer)> = filters
        .iter()
        .flat_map(|(name, args)| {
            [
                (format!("trace --json{name}"), Tracer::start(args)),
                (
                    format!("trace --report-only{name}"),
                    Tracer::start_report_only(args),
                ),
            ]
        })
        .collect();
    let daemon = Daemon::start(&free_loopback_addr(), &["--port", PORT, "--refresh", "1s"]);

    let addr = format!("{}:{PORT}", hosts.a_addr);
    let mut server = scenario_in(&hosts.a, &["leak", &addr, &LEAKED.to_string()]);
    let listening = server.expect_line("listening ");
    let mut client = scenario_in(
        &hosts.b,
        &["connect-close", &listening, &LEAKED.to_string()],
    );
    client.expect_lines("local ", LEAKED);
    client.expect_line("done");
    server.expect_lines("eof ", LEAKED);
    thread::sleep(Duration::from_millis(200));

    let kernel = ss_count(&hosts.a, "close-wait");
    let held = |scrape: &str| {
        sample(
            scrape,
            "tcptrace_sockets",
            &[("comm", "tt-scenario"), ("state", "CLOSE_WAIT")],
        )
    };
    #[expect(clippy::cast_precision_loss, reason = "a handful of sockets")]
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| held(s) == Some(kernel as f64));
    let mut table = format!("source                              CLOSE_WAIT  age exact  eof reader\nkernel (ss)                         {kernel:>10}\n");
    let mut found = Vec::new();
    // The daemon logs the leak at each refresh; the first may come while
    // the server's stacks are still being symbolized (a new binary is
    // read off the reader's thread), and a later one names them.
    let logged = daemon.wait_for_log(Duration::from_secs(10), "CLOSE_WAIT leak", |l| {
        l["fields"]["sockets"].as_u64() == Some(kernel)
            && l["fields"]["eof_call_site"]["function"] == EOF_READER
    });
    let logged_fields = logged.as_ref().map(|l| &l["fields"]);
    found.push((
        "daemon --port (log)".to_owned(),
        logged_fields.and_then(|f| leak_in(&[f])),
    ));
    for (name, tracer) in sessions {
        let trace = tracer.stop();
        let leaks: Vec<&Value> = trace.findings_of("close_wait_leak", server.pid()).collect();
        let leak = leak_in(&leaks);
        found.push((name.clone(), leak));
        if leak.is_none_or(|(_, exact, reader)| !exact || !reader) {
            let shown: Vec<Value> = trace
                .findings("close_wait_leak")
                .map(without_frames)
                .collect();
            let _ = writeln!(table, "  {name}'s close_wait_leak findings: {shown:?}");
        }
    }
    for (name, leak) in &found {
        let (sockets, exact, reader) = leak.unwrap_or((0, false, false));
        let _ = writeln!(table, "{name:<36}{sockets:>10}  {exact:>9}  {reader:>10}");
    }
    let _ = writeln!(
        table,
        "daemon --port (metrics)             {:>10}",
        held(&scrape).map_or_else(|| "-".to_owned(), |v| v.to_string())
    );
    eprintln!("{table}");

    assert_eq!(
        kernel, LEAKED as u64,
        "the server leaked every connection: {table}"
    );
    for (name, leak) in found {
        assert_eq!(leak, Some((kernel, true, true)), "{name}: {table}");
    }
    #[expect(clippy::cast_precision_loss, reason = "a handful of sockets")]
    let expected = kernel as f64;
    assert_eq!(held(&scrape), Some(expected), "{table}");
    drop((server, client));
}
