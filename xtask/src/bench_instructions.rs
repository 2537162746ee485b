//! Instructions per record of the userspace hot paths, counted by
//! valgrind (cachegrind, no cache simulation) over the records of the
//! Criterion benches `tcptrace/benches/hot_path.rs` and `trace_json.rs`.
//! Timings of those paths move by a third from run to run on a shared VM;
//! an instruction count does not, so a change of a few percent shows.
//!
//! Each path is fed `LONG` and `SHORT` rounds of records (each round's
//! connections later than the round before's, as time goes on), with
//! `LONG` rounds built in both: the difference leaves out the setup
//! (building the records, the first round's allocations) and counts only
//! the steady state.

use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

const SHORT: u64 = 2;
const LONG: u64 = 12;

/// The paths counted, each as (bench, path, name): summary records as the
/// daemon gets them (two per loopback connection, closed with
/// `SO_LINGER` 0 or normally), state-change records as `trace` gets them,
/// and those again with their JSON lines written as `trace --json` writes
/// them (a bench of its own; `trace-json` is its only path).
const PATHS: [(&str, &str, &str); 4] = [
    ("hot_path", "daemon", "daemon summary records"),
    (
        "hot_path",
        "daemon-normal-close",
        "daemon, normal-close records",
    ),
    ("hot_path", "every-event", "every-event records"),
    (
        "trace_json",
        "trace-json",
        "every-event records, JSON lines",
    ),
];

/// Counts both paths; `Value::Null` (said on stderr) when valgrind cannot
/// be had, so the rest of the bench still reports.
pub fn count(root: &Path) -> Value {
    match try_count(root) {
        Ok(value) => value,
        Err(err) => {
            eprintln!("xtask bench: no instruction counts: {err:#}");
            Value::Null
        }
    }
}

fn try_count(root: &Path) -> Result<Value> {
    crate::setup::package_for("instruction counts", "valgrind", "valgrind")?;
    let mut paths = serde_json::Map::new();
    // Each bench built (or found built) once, by name.
    let mut executables = std::collections::HashMap::new();
    for (bench, path, name) in PATHS {
        if !executables.contains_key(bench) {
            executables.insert(bench, bench_executable(root, bench)?);
        }
        let bench = &executables[bench];
        let (short, records) = instructions(bench, path, SHORT)?;
        let (long, _) = instructions(bench, path, LONG)?;
        #[expect(
            clippy::cast_precision_loss,
            reason = "instruction counts far below 2^52"
        )]
        let per_record = long.saturating_sub(short) as f64 / ((LONG - SHORT) * records) as f64;
        paths.insert(
            path.to_owned(),
            json!({ "name": name, "instructions_per_record": per_record }),
        );
    }
    Ok(Value::Object(paths))
}

/// Builds the bench `name` and returns its executable (Cargo names it by
/// hash).
fn bench_executable(root: &Path, name: &str) -> Result<String> {
    let output = Command::new("cargo")
        .current_dir(root)
        .args(["bench", "-p", "tcptrace", "--bench", name, "--no-run"])
        .args(["--message-format", "json"])
        .output()
        .with_context(|| format!("building the {name} bench"))?;
    if !output.status.success() {
        bail!(
            "building the {name} bench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .and_then(|m| m["executable"].as_str().map(str::to_owned))
        .with_context(|| format!("cargo named no {name} executable"))
}

/// (instructions executed, records per round) of `rounds` rounds of `path`.
fn instructions(bench: &str, path: &str, rounds: u64) -> Result<(u64, u64)> {
    let output = Command::new("valgrind")
        .args([
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
        ])
        .arg(bench)
        .env("TCPTRACE_HOT_PATH", path)
        .env("TCPTRACE_HOT_PATH_ROUNDS", rounds.to_string())
        .env("TCPTRACE_HOT_PATH_BUILT_ROUNDS", LONG.to_string())
        .output()
        .context("running valgrind")?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    if !output.status.success() {
        bail!("valgrind on the bench {bench} failed: {stderr}");
    }
    let records = stdout
        .lines()
        .find_map(|l| l.strip_prefix("records_per_round "))
        .and_then(|n| n.trim().parse().ok())
        .context("the bench did not say how many records a round has")?;
    // "==PID== I   refs:      215,285,557"
    let refs = stderr
        .lines()
        .find_map(|l| {
            l.split_once("I   refs:")
                .map(|(_, n)| n.trim().replace(',', ""))
        })
        .and_then(|n| n.parse().ok())
        .context("valgrind printed no instruction count")?;
    Ok((refs, records))
}
