//! Two `tcptrace trace --json > file` sessions at once, against two churn
//! processes at once: the events each session saw and those it lost. The
//! performance issue's target is none lost on the default ring. A session
//! that cannot keep up with the events (a reader short of CPU, not a ring
//! too small) loses them in the kernel, where `events_lost` counts them.

use std::{path::Path, process::Stdio, thread, time::Duration};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bench::{churn_command, start_as, trace_summary, Options, Tracer};

const SESSIONS: usize = 2;

/// Runs the sessions and the workloads once; one entry per session.
pub fn measure(root: &Path, out_dir: &Path, options: &Options) -> Result<Value> {
    let mut sessions = Vec::new();
    for i in 1..=SESSIONS {
        let session = start_as(root, out_dir, Tracer::Trace, &format!("trace-session-{i}"))?
            .context("a trace session")?;
        sessions.push(session);
    }
    let workloads = (0..SESSIONS)
        .map(|_| {
            churn_command(root, options, None)
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()
        .context("starting tt-churn")?;
    let mut connections = 0.0;
    for workload in workloads {
        let out = workload.wait_with_output().context("running tt-churn")?;
        if !out.status.success() {
            bail!("tt-churn failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let result: Value = serde_json::from_slice(&out.stdout)?;
        connections += result["connections"].as_f64().unwrap_or(0.0);
    }
    for session in &mut sessions {
        session.ensure_alive(Tracer::Trace)?;
    }
    // Let the sessions drain what the workloads left in their rings.
    thread::sleep(Duration::from_millis(300));
    let mut rows = Vec::new();
    for mut session in sessions {
        session.stop();
        let (events, lost) = trace_summary(&session.output)?;
        rows.push(json!({ "events": events, "events_lost": lost }));
    }
    Ok(json!({
        "churn_processes": SESSIONS,
        "threads_each": options.threads,
        "seconds": options.seconds,
        "connections": connections,
        "sessions": rows,
    }))
}

/// The measurement's lines in the bench's table (nothing when not run).
pub fn print(report: &Value) {
    let Some(sessions) = report["sessions"].as_array() else {
        return;
    };
    println!(
        "\n{} trace --json sessions at once, {} churn processes of {} threads ({:.0} connections):",
        sessions.len(),
        report["churn_processes"],
        report["threads_each"],
        report["connections"].as_f64().unwrap_or(0.0)
    );
    for (i, session) in sessions.iter().enumerate() {
        let events = session["events"].as_u64().unwrap_or(0);
        let lost = session["events_lost"].as_u64().unwrap_or(0);
        #[expect(clippy::cast_precision_loss, reason = "event counts far below 2^52")]
        let share = lost as f64 / (events + lost).max(1) as f64 * 100.0;
        println!(
            "  session {}: {events} events, {lost} lost ({share:.1}%; target 0)",
            i + 1
        );
    }
}
