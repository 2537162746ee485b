//! Instructions per record of the userspace hot path, counted by valgrind
//! (cachegrind, no cache simulation) over the records of the Criterion
//! bench `tcptrace/benches/hot_path.rs`. Timings of that path move by a
//! third from run to run on a shared VM; an instruction count does not, so
//! a change of a few percent shows.
//!
//! Each path is fed `LONG` and `SHORT` rounds of the same records: the
//! difference leaves out the setup (building the records, the first
//! round's allocations) and counts only the steady state.

use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

const SHORT: u64 = 2;
const LONG: u64 = 12;

/// The paths of the bench: summary records as the daemon gets them (two
/// per loopback connection, closed with `SO_LINGER` 0 or normally),
/// state-change records as `trace` gets them, and those again with their
/// JSON lines written as `trace --json` writes them.
const PATHS: [(&str, &str); 4] = [
    ("daemon", "daemon summary records"),
    ("daemon-normal-close", "daemon, normal-close records"),
    ("every-event", "every-event records"),
    ("trace-json", "every-event records, JSON lines"),
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
    let bench = bench_executable(root)?;
    let mut paths = serde_json::Map::new();
    for (path, name) in PATHS {
        let (short, records) = instructions(&bench, path, SHORT)?;
        let (long, _) = instructions(&bench, path, LONG)?;
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

/// Builds the bench and returns its executable (Cargo names it by hash).
fn bench_executable(root: &Path) -> Result<String> {
    let output = Command::new("cargo")
        .current_dir(root)
        .args(["bench", "-p", "tcptrace", "--bench", "hot_path", "--no-run"])
        .args(["--message-format", "json"])
        .output()
        .context("building the hot-path bench")?;
    if !output.status.success() {
        bail!(
            "building the hot-path bench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "hot_path")
        .and_then(|m| m["executable"].as_str().map(str::to_owned))
        .context("cargo named no hot_path executable")
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
        .output()
        .context("running valgrind")?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    if !output.status.success() {
        bail!("valgrind on the hot-path bench failed: {stderr}");
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
