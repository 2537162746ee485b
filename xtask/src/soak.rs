//! `cargo xtask soak`: the daemon under the churn workload at the
//! machine's maximum rate for a long time, checked every 30 s: RSS and open
//! fds (flat after warm-up), events read versus events the kernel sent
//! (equal, or the difference counted as lost), and /metrics scrape latency
//! under load (p99 under 100 ms).

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{build_release_binaries, workspace};

const LISTEN: &str = "127.0.0.1:19698";
const INTERVAL: Duration = Duration::from_secs(30);

pub fn run(minutes: f64, threads: usize) -> Result<()> {
    let root = workspace();
    build_release_binaries(&root)?;
    crate::setup::package_for("the soak's checks of the daemon", "curl", "curl")?;
    let mut daemon = Command::new(root.join("target/release/tcptrace"))
        .args(["daemon", "--listen", LISTEN])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the daemon")?;
    let pid = daemon.id();
    let up = Instant::now() + Duration::from_secs(20);
    while crate::bench::http_get(LISTEN, "/healthz").is_none() {
        if Instant::now() > up {
            let _ = daemon.kill();
            bail!("the daemon did not come up");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let end = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let mut samples = Vec::new();
    let mut latencies_ms = Vec::new();
    let mut connections = 0u64;
    println!(
        "{:>6} {:>9} {:>5} {:>12} {:>12} {:>8} {:>10} {:>10}",
        "t s", "rss MiB", "fds", "events", "kernel sent", "lost", "conn/s", "scrape p99"
    );
    let started = Instant::now();
    while Instant::now() < end {
        let load = Command::new(root.join("target/release/tt-churn"))
            .args([
                "--threads",
                &threads.to_string(),
                "--seconds",
                &INTERVAL.as_secs().to_string(),
                "--linger0",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting tt-churn")?;
        // Scrape while the load runs, 2 per second.
        let mut interval_latencies = Vec::new();
        let until = Instant::now() + INTERVAL;
        while Instant::now() < until {
            let t = Instant::now();
            if crate::bench::http_get(LISTEN, "/metrics").is_some() {
                interval_latencies.push(t.elapsed().as_secs_f64() * 1e3);
            }
            thread::sleep(Duration::from_millis(500));
        }
        let out = load.wait_with_output()?;
        let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        connections += result["connections"].as_u64().unwrap_or(0);
        let health: Value =
            serde_json::from_str(&crate::bench::http_get(LISTEN, "/healthz").unwrap_or_default())?;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let fds = fs::read_dir(format!("/proc/{pid}/fd"))?.count();
        latencies_ms.extend(&interval_latencies);
        let p99 = percentile(&mut interval_latencies, 0.99);
        #[expect(clippy::cast_precision_loss, reason = "RSS in KiB is far below 2^52")]
        let sample = json!({
            "t_s": started.elapsed().as_secs_f64(),
            "rss_mib": rss_kib as f64 / 1024.0,
            "fds": fds,
            "events": health["events"],
            "events_sent_by_kernel": health["events_sent_by_kernel"],
            "events_lost": health["events_lost"],
            "decode_errors": health["decode_errors"],
            "connections_per_second": result["per_second"],
            "scrape_p99_ms": p99,
        });
        println!(
            "{:>6.0} {:>9.1} {:>5} {:>12} {:>12} {:>8} {:>10.0} {:>9.1}ms",
            sample["t_s"].as_f64().unwrap_or(0.0),
            sample["rss_mib"].as_f64().unwrap_or(0.0),
            fds,
            sample["events"],
            sample["events_sent_by_kernel"],
            sample["events_lost"],
            sample["connections_per_second"].as_f64().unwrap_or(0.0),
            p99,
        );
        samples.push(sample);
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    write_report(&root, minutes, connections, &samples, &mut latencies_ms)
}

/// Writes `target/bench/soak.json` and prints the run's summary line.
fn write_report(
    root: &Path,
    minutes: f64,
    connections: u64,
    samples: &[Value],
    latencies_ms: &mut [f64],
) -> Result<()> {
    let last = samples.last().cloned().unwrap_or_default();
    let seen = last["events"].as_u64().unwrap_or(0) + last["decode_errors"].as_u64().unwrap_or(0);
    let sent = last["events_sent_by_kernel"].as_u64().unwrap_or(0);
    let report = json!({
        "minutes": minutes,
        "connections": connections,
        "samples": samples,
        "scrape_p99_ms": percentile(latencies_ms, 0.99),
        "events_read_equal_kernel_sent": seen == sent,
        "events_lost": last["events_lost"],
    });
    let path = root.join("target/bench/soak.json");
    fs::create_dir_all(root.join("target/bench"))?;
    fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!(
        "\n{} connections in {minutes} min; events read {seen} vs kernel sent {sent} (lost {}); scrape p99 {:.1} ms (target < 100 ms)\nJSON: {}",
        connections,
        last["events_lost"],
        report["scrape_p99_ms"].as_f64().unwrap_or(0.0),
        path.display()
    );
    Ok(())
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank among at most a few thousand samples"
    )]
    let index = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
    values[index]
}
