//! `cargo xtask bench`: what tcptrace costs, side by side with its peers.
//!
//! A loopback churn workload (`tt-churn`: connect, 16-byte exchange, close
//! with `SO_LINGER` 0 so the run never exhausts ports, or normally with
//! `--normal-close`) runs with no tracer,
//! under `tcptrace daemon`, under `tcptrace trace --json` writing to a
//! file, and under libbpf-tools `tcplife` and `tcpstates`. Configurations
//! are interleaved round by round (so drift hits all alike) and reported as
//! medians with ratios to the untraced baseline (the daemon's after a
//! warm-up: see `warm_up`), the tracer's CPU seconds
//! and peak RSS, its kernel-side BPF run time (`kernel.bpf_stats_enabled`,
//! restored afterwards), and events seen and lost. An open-loop run at a
//! fixed rate then reports busy CPU per 1,000 connections from /proc/stat,
//! and valgrind counts the userspace hot path's instructions per record
//! (`bench_instructions`). Output: a table for people and `target/bench/bench.json`.
#![expect(
    clippy::cast_precision_loss,
    reason = "counts, nanoseconds and KiB far below 2^52, reported as floats"
)]

use std::{
    collections::HashMap,
    fs,
    io::BufRead,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{
    build_release_binaries,
    memory_peaks::{MemoryPeaks, Sampler},
    workspace,
};

/// Where the bench's daemon serves (`/healthz` gives its counts).
const DAEMON_ADDR: &str = "127.0.0.1:19699";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tracer {
    None,
    Daemon,
    Trace,
    Tcplife,
    Tcpstates,
}

impl Tracer {
    pub const ALL: [Self; 5] = [
        Self::None,
        Self::Daemon,
        Self::Trace,
        Self::Tcplife,
        Self::Tcpstates,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "untraced",
            Self::Daemon => "tcptrace daemon",
            Self::Trace => "tcptrace trace --json >file",
            Self::Tcplife => "libbpf-tools tcplife",
            Self::Tcpstates => "libbpf-tools tcpstates",
        }
    }

    /// The short name `--tracers` takes.
    pub fn key(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Daemon => "daemon",
            Self::Trace => "trace",
            Self::Tcplife => "tcplife",
            Self::Tcpstates => "tcpstates",
        }
    }

    pub fn parse(key: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.key() == key)
            .with_context(|| {
                let known: Vec<_> = Self::ALL.iter().map(|t| t.key()).collect();
                format!("unknown tracer {key:?} (known: {})", known.join(", "))
            })
    }
}

#[derive(Clone)]
pub struct Options {
    /// Which configurations to run; the untraced baseline always runs.
    pub tracers: Vec<Tracer>,
    pub rounds: usize,
    pub seconds: f64,
    pub threads: usize,
    /// Close with FIN (`TIME_WAIT`, `CLOSE_WAIT`) instead of `SO_LINGER` 0.
    pub normal_close: bool,
}

/// One measured run.
#[derive(Clone, Debug, Default)]
struct Run {
    per_second: f64,
    connections: f64,
    tracer_cpu_s: f64,
    tracer_rss_kib: u64,
    /// Sampled over the run, start-up included.
    tracer_memory: MemoryPeaks,
    bpf_ns: u64,
    bpf_runs: u64,
    /// Program name → (run time ns, runs), for the per-program breakdown.
    programs: HashMap<String, (u64, u64)>,
    state_changes: Option<u64>,
    events: Option<u64>,
    lost: Option<u64>,
    /// Reader wakeups per second (daemon only).
    wakeups_per_second: Option<f64>,
}

pub fn run(options: &Options) -> Result<()> {
    let root = workspace();
    build_release_binaries(&root)?;
    let out_dir = root.join("target/bench");
    fs::create_dir_all(&out_dir)?;
    ensure_nothing_traces()?;

    let mut tracers = vec![Tracer::None];
    tracers.extend(options.tracers.iter().filter(|t| **t != Tracer::None));
    tracers.dedup();
    let mut runs: HashMap<Tracer, Vec<Run>> = HashMap::new();
    for round in 0..options.rounds {
        // Rotate the order so no configuration always runs first.
        for i in 0..tracers.len() {
            let tracer = tracers[(i + round) % tracers.len()];
            let run = measure(&root, &out_dir, tracer, options)
                .with_context(|| format!("round {round}: {}", tracer.name()))?;
            eprintln!(
                "round {round} {:<28} {:>9.0} conn/s",
                tracer.name(),
                run.per_second
            );
            runs.entry(tracer).or_default().push(run);
        }
    }
    // Kernel-side run time comes from one extra run per tracer with
    // `kernel.bpf_stats_enabled`: the statistics cost two clock reads per
    // program run, which would tax the measured runs.
    let stats = BpfStats::enable()?;
    let mut profiles: HashMap<Tracer, Run> = HashMap::new();
    for &tracer in tracers.iter().filter(|t| **t != Tracer::None) {
        let run = measure(&root, &out_dir, tracer, options)
            .with_context(|| format!("profile run: {}", tracer.name()))?;
        profiles.insert(tracer, run);
    }
    drop(stats);
    let open_loop = if runs.contains_key(&Tracer::Daemon) {
        open_loop(&root, &out_dir, options, &runs)?
    } else {
        Value::Null
    };
    let two_sessions = if runs.contains_key(&Tracer::Trace) {
        crate::bench_two_sessions::measure(&root, &out_dir, options)?
    } else {
        Value::Null
    };
    let kernel_phases = if runs.contains_key(&Tracer::Daemon) {
        crate::bench_phases::measure(&root, &out_dir, options)?
    } else {
        Value::Null
    };
    let mut report = summarize(&runs, &profiles, &open_loop, options);
    report["two_trace_sessions"] = two_sessions;
    report["kernel_phases"] = kernel_phases;
    report["userspace_instructions"] = crate::bench_instructions::count(&root);
    report["target_checks"] =
        crate::bench_targets::evaluate(&report, Tracer::Daemon.name(), Tracer::Trace.name());
    fs::write(
        out_dir.join("bench.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    print_table(&report);
    println!("\nJSON: {}", out_dir.join("bench.json").display());
    Ok(())
}

pub fn churn(root: &Path, options: &Options, rate: Option<f64>) -> Result<Value> {
    let out = churn_command(root, options, rate)
        .output()
        .context("running tt-churn")?;
    if !out.status.success() {
        bail!("tt-churn failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The churn workload: `options.threads` threads for `options.seconds`,
/// at `rate` connections a second if given, else as fast as it goes.
pub fn churn_command(root: &Path, options: &Options, rate: Option<f64>) -> Command {
    let mut command = Command::new(root.join("target/release/tt-churn"));
    command
        .args(["--threads", &options.threads.to_string()])
        .args(["--seconds", &options.seconds.to_string()]);
    if !options.normal_close {
        command.arg("--linger0");
    }
    if let Some(rate) = rate {
        command.args(["--rate", &format!("{rate:.0}")]);
    }
    command
}

/// Refuses to measure next to another tracer: a tcptrace left running (a
/// daemon on the bench's port, a forgotten session) taxes every row, the
/// untraced one included, and its programs are not the run's.
fn ensure_nothing_traces() -> Result<()> {
    if http_get(DAEMON_ADDR, "/healthz").is_some() {
        bail!("something already answers on {DAEMON_ADDR}, the bench daemon's address: stop the tcptrace daemon running there first");
    }
    let mut ours: Vec<String> = BpfStats::read()
        .into_values()
        .map(|(name, _, _)| name)
        .filter(|name| name.starts_with("tcptrace"))
        .collect();
    if !ours.is_empty() {
        ours.sort();
        ours.dedup();
        bail!(
            "tcptrace programs are already loaded ({}): stop the tcptrace process that holds them (`bpftool prog show` names its pid) before measuring",
            ours.join(", ")
        );
    }
    Ok(())
}

fn measure(root: &Path, out_dir: &Path, tracer: Tracer, options: &Options) -> Result<Run> {
    let before = BpfStats::read();
    let mut running = start(root, out_dir, tracer)?;
    let sampler = running.as_ref().map(|r| Sampler::start(r.child.id()));
    let daemon_at_start = match (&running, tracer) {
        (Some(daemon), Tracer::Daemon) => Some(warm_up(root, options, daemon.child.id())?),
        _ => None,
    };
    // Count the tracer's CPU from the moment it is attached (the daemon's
    // from the end of its warm-up): start-up (BTF parsing, loading, the
    // first socket dump) is not per-event cost.
    let (cpu_at_start, _) = running
        .as_ref()
        .map_or((0.0, 0), |r| process_usage(r.child.id()));
    let stats_at_start = BpfStats::read();
    let result = churn(root, options, None)?;
    if let Some(process) = running.as_mut() {
        process.ensure_alive(tracer)?;
    }
    let mut run = Run {
        per_second: result["per_second"].as_f64().unwrap_or(0.0),
        connections: result["connections"].as_f64().unwrap_or(0.0),
        ..Run::default()
    };
    // The tracer's programs are unloaded when it stops: read their
    // run time while they are attached.
    let after = BpfStats::read();
    for (id, (name, ns, count)) in after {
        if !before.contains_key(&id) {
            let (_, ns_before, count_before) = stats_at_start.get(&id).cloned().unwrap_or_default();
            let (ns, count) = (ns - ns_before, count - count_before);
            run.bpf_ns += ns;
            run.bpf_runs += count;
            let entry = run.programs.entry(name).or_default();
            entry.0 += ns;
            entry.1 += count;
        }
    }
    if let Some(process) = running.as_mut() {
        // Let the tracer drain what the workload left in the ring buffer.
        thread::sleep(Duration::from_millis(300));
        if tracer == Tracer::Daemon {
            let health = http_get(DAEMON_ADDR, "/healthz").unwrap_or_default();
            let health: Value = serde_json::from_str(&health).unwrap_or_default();
            let at_start = daemon_at_start.unwrap_or_default();
            let since_start = |key: &str| {
                health[key]
                    .as_u64()
                    .map(|n| n.saturating_sub(at_start[key].as_u64().unwrap_or(0)))
            };
            run.events = since_start("events");
            // Summary mode sends one record per socket: count the state
            // changes those records stand for.
            run.state_changes = since_start("state_changes");
            run.lost = health["events_lost"].as_u64();
            run.wakeups_per_second = health["ring_wakeups"]
                .as_f64()
                .map(|w| w / health["uptime_s"].as_f64().unwrap_or(1.0).max(1e-3));
        }
        let (cpu, rss) = process_usage(process.child.id());
        run.tracer_cpu_s = cpu - cpu_at_start;
        run.tracer_rss_kib = rss;
        run.tracer_memory = sampler.map(Sampler::stop).unwrap_or_default();
        process.stop();
        if tracer == Tracer::Trace {
            let (events, lost) = trace_summary(&process.output)?;
            run.events = Some(events);
            run.lost = Some(lost);
        }
    }
    Ok(run)
}

/// The daemon runs for days: its steady state is what a host pays, not
/// the first minute in which it names a new binary's call sites (for
/// tt-churn, inflating libc's compressed debug information: about a tenth
/// of a 3-second round's daemon CPU). A second of the same churn, then
/// until the daemon is idle (at most 10 s), before anything is counted.
/// Gives the daemon's `/healthz` counts at the end, to count from.
/// One-off `trace` sessions pay their start-up in their own figures.
fn warm_up(root: &Path, options: &Options, daemon: u32) -> Result<Value> {
    let warm_up = Options {
        seconds: 1.0,
        ..options.clone()
    };
    churn(root, &warm_up, None).context("warming the daemon up")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut cpu = process_usage(daemon).0;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(250));
        let now = process_usage(daemon).0;
        // Idle: under a clock tick (10 ms) in a quarter second.
        if now - cpu < 0.011 {
            break;
        }
        cpu = now;
    }
    let health = http_get(DAEMON_ADDR, "/healthz").context("the warmed-up daemon's /healthz")?;
    Ok(serde_json::from_str(&health)?)
}

pub struct Running {
    child: Child,
    pub output: PathBuf,
}

impl Running {
    /// Fails when the tracer exited before its run was over: its row
    /// would measure nothing.
    pub fn ensure_alive(&mut self, tracer: Tracer) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited during its run ({status}); its output: {}",
                tracer.name(),
                self.output.display()
            ),
        }
    }

    pub fn stop(&mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(i32::try_from(self.child.id()).unwrap_or(0), libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(root: &Path, out_dir: &Path, tracer: Tracer) -> Result<Option<Running>> {
    start_as(root, out_dir, tracer, &format!("{tracer:?}").to_lowercase())
}

/// `start`, writing the tracer's output to `out_dir/NAME.out`.
pub fn start_as(
    root: &Path,
    out_dir: &Path,
    tracer: Tracer,
    name: &str,
) -> Result<Option<Running>> {
    start_with(root, out_dir, tracer, name, &[])
}

/// `start_as`, with these environment variables set for the tracer.
pub fn start_with(
    root: &Path,
    out_dir: &Path,
    tracer: Tracer,
    name: &str,
    env: &[(&str, &str)],
) -> Result<Option<Running>> {
    let tcptrace = root.join("target/release/tcptrace");
    let output = out_dir.join(format!("{name}.out"));
    let file = fs::File::create(&output)?;
    let mut command = match tracer {
        Tracer::None => return Ok(None),
        Tracer::Daemon => {
            let mut c = Command::new(&tcptrace);
            c.args(["daemon", "--listen", DAEMON_ADDR]);
            c
        }
        Tracer::Trace => {
            let mut c = Command::new(&tcptrace);
            c.args(["trace", "--json"]);
            c
        }
        Tracer::Tcplife => Command::new("tcplife"),
        Tracer::Tcpstates => Command::new("tcpstates"),
    };
    let child = command
        .envs(env.iter().copied())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", tracer.name()))?;
    let running = Running { child, output };
    // Attach takes well under a second for all of them; wait it out rather
    // than parse each tool's readiness signal.
    let ready = Instant::now() + Duration::from_millis(1500);
    if tracer == Tracer::Daemon {
        while Instant::now() < ready + Duration::from_secs(10)
            && http_get(DAEMON_ADDR, "/healthz").is_none()
        {
            thread::sleep(Duration::from_millis(50));
        }
    }
    thread::sleep(ready.saturating_duration_since(Instant::now()));
    Ok(Some(running))
}

/// CPU seconds (user + system) and peak RSS (KiB) of a live process.
fn process_usage(pid: u32) -> (f64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3; utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (ticks(11) + ticks(12)) / hz;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

/// Events and lost events from a `trace --json` output's summary line.
pub fn trace_summary(path: &Path) -> Result<(u64, u64)> {
    let text = fs::read_to_string(path)?;
    let summary = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .context("no summary line in the trace output")?;
    let s = &summary["summary"];
    Ok((
        s["events"].as_u64().unwrap_or(0),
        s["kernel"]["events_lost"].as_u64().unwrap_or(0),
    ))
}

/// The body of `GET http://{addr}{path}` whatever its status (a degraded
/// daemon's `/healthz` answers 503 with the counts that say why), or
/// `None` when nothing answers.
///
/// Asked through `curl` rather than a socket of this process: the daemon
/// names the call site of every connection it sees, and the harness's own
/// debug build (some 140 MB of DWARF) was then the largest file it parsed,
/// about 45 MiB of the file-backed memory the bench charged to the daemon.
/// A scraper in production is a small program like curl.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let output = Command::new("curl")
        .args(["--silent", "--max-time", "5"])
        .arg(format!("http://{addr}{path}"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()
}

/// `kernel.bpf_stats_enabled` on for the run, restored on drop.
struct BpfStats {
    previous: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
        let previous = fs::read_to_string(BPF_STATS).context("reading kernel.bpf_stats_enabled")?;
        fs::write(BPF_STATS, "1").context("enabling kernel.bpf_stats_enabled (run as root)")?;
        Ok(Self { previous })
    }

    /// Program id → (name, run time ns, run count).
    fn read() -> HashMap<u64, (String, u64, u64)> {
        let out = Command::new("bpftool")
            .args(["--json", "prog", "show"])
            .output();
        let Ok(out) = out else { return HashMap::new() };
        let progs: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        progs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p["id"].as_u64()?,
                    (
                        p["name"].as_str().unwrap_or("?").to_owned(),
                        p["run_time_ns"].as_u64().unwrap_or(0),
                        p["run_cnt"].as_u64().unwrap_or(0),
                    ),
                ))
            })
            .collect()
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, self.previous.trim());
    }
}

/// Busy CPU (all cores) per 1,000 connections at a fixed rate, with and
/// without the daemon, in pairs.
fn open_loop(
    root: &Path,
    out_dir: &Path,
    options: &Options,
    runs: &HashMap<Tracer, Vec<Run>>,
) -> Result<Value> {
    let saturation = median(runs[&Tracer::None].iter().map(|r| r.per_second).collect());
    let rate = (saturation * 0.55).max(100.0);
    let mut pairs = Vec::new();
    for _ in 0..options.rounds {
        let mut pair = Vec::new();
        for tracer in [Tracer::None, Tracer::Daemon] {
            let mut running = start(root, out_dir, tracer)?;
            let before = cpu_busy_ticks();
            let result = churn(root, options, Some(rate))?;
            let after = cpu_busy_ticks();
            if let Some(r) = running.as_mut() {
                r.stop();
            }
            let connections = result["connections"].as_f64().unwrap_or(1.0).max(1.0);
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            pair.push((after - before) as f64 / hz * 1000.0 / connections * 1000.0);
        }
        pairs.push(pair);
    }
    let off = median(pairs.iter().map(|p| p[0]).collect());
    let on = median(pairs.iter().map(|p| p[1]).collect());
    Ok(json!({
        "rate_per_second": rate,
        "busy_cpu_ms_per_1k_connections_untraced": off,
        "busy_cpu_ms_per_1k_connections_daemon": on,
        "overhead_percent": (on / off - 1.0) * 100.0,
    }))
}

/// Busy (non-idle, non-iowait) jiffies summed over all CPUs.
fn cpu_busy_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    total - idle
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn summarize(
    runs: &HashMap<Tracer, Vec<Run>>,
    profiles: &HashMap<Tracer, Run>,
    open_loop: &Value,
    options: &Options,
) -> Value {
    let base = median(runs[&Tracer::None].iter().map(|r| r.per_second).collect());
    let tcpstates = runs
        .get(&Tracer::Tcpstates)
        .map(|r| median(r.iter().map(|r| r.per_second).collect()));
    let rows: Vec<Value> = Tracer::ALL
        .iter()
        .filter(|tracer| runs.contains_key(tracer))
        .map(|tracer| {
            let r = &runs[tracer];
            let rate = median(r.iter().map(|x| x.per_second).collect());
            let events: Option<u64> = r.iter().map(|x| x.events).sum();
            let lost: Option<u64> = r.iter().map(|x| x.lost).sum();
            let cpu: f64 = r.iter().map(|x| x.tracer_cpu_s).sum();
            let connections: f64 = r.iter().map(|x| x.connections).sum();
            let profile = profiles.get(tracer).cloned().unwrap_or_default();
            let (bpf_ns, bpf_runs) = (profile.bpf_ns, profile.bpf_runs);
            // State events: about 10 per loopback connection when not counted.
            let profile_events = profile
                .state_changes
                .or(profile.events)
                .map_or(profile.connections * 10.0, |e| e as f64);
            // Tracer CPU (user + kernel programs) per 100k state events, from
            // the profile run (the only one with kernel run times).
            let cpu_per_100k = if profile_events > 0.0 {
                (profile.tracer_cpu_s * 1e3 + bpf_ns as f64 / 1e6) / profile_events * 1e5
            } else {
                0.0
            };
            json!({
                "tracer": tracer.name(),
                "median_connections_per_second": rate,
                "ratio_to_untraced": rate / base,
                "ratio_to_tcpstates": tcpstates.map(|t| rate / t),
                "bpf_programs": program_breakdown(std::slice::from_ref(&profile), profile.connections),
                "samples": r.iter().map(|x| x.per_second).collect::<Vec<_>>(),
                "tracer_cpu_seconds": cpu,
                "connections": connections,
                "tracer_cpu_us_per_connection": (connections > 0.0).then(|| cpu / connections * 1e6),
                "tracer_peak_rss_mib": r.iter().map(|x| x.tracer_rss_kib).max().unwrap_or(0) as f64 / 1024.0,
                "tracer_peak_anon_mib": r.iter().map(|x| x.tracer_memory.anon_kib).max().unwrap_or(0) as f64 / 1024.0,
                "tracer_peak_file_mib": r.iter().map(|x| x.tracer_memory.file_kib).max().unwrap_or(0) as f64 / 1024.0,
                "tracer_largest_file_mapping": r.iter().filter_map(|x| x.tracer_memory.largest_file.clone()).max().map(|(kib, path)| json!({"path": path, "resident_mib": kib as f64 / 1024.0})),
                "bpf_run_time_ms": bpf_ns as f64 / 1e6,
                "bpf_runs": bpf_runs,
                "bpf_ns_per_run": if bpf_runs == 0 { 0.0 } else { bpf_ns as f64 / bpf_runs as f64 },
                "tracer_cpu_ms_per_100k_events": cpu_per_100k,
                "events": events,
                "events_lost": lost,
                "ring_wakeups_per_second": r.iter().filter_map(|x| x.wakeups_per_second).fold(None, |m: Option<f64>, w| Some(m.map_or(w, |m| m.max(w)))),
            })
        })
        .collect();
    json!({
        "rounds": options.rounds,
        "seconds_per_run": options.seconds,
        "threads": options.threads,
        "close": if options.normal_close { "normal" } else { "SO_LINGER 0" },
        "cores": thread::available_parallelism().map_or(1, std::num::NonZero::get),
        "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "results": rows,
        "open_loop": open_loop,
    })
}

/// Per program: ns per run and per connection, runs per connection.
fn program_breakdown(runs: &[Run], connections: f64) -> Value {
    let mut total: HashMap<&str, (u64, u64)> = HashMap::new();
    for run in runs {
        for (name, (ns, count)) in &run.programs {
            let entry = total.entry(name).or_default();
            entry.0 += ns;
            entry.1 += count;
        }
    }
    let mut rows: Vec<Value> = total
        .into_iter()
        .map(|(name, (ns, count))| {
            json!({
                "program": name,
                "ns_per_run": if count == 0 { 0.0 } else { ns as f64 / count as f64 },
                "runs_per_connection": count as f64 / connections.max(1.0),
                "ns_per_connection": ns as f64 / connections.max(1.0),
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        b["ns_per_connection"]
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&a["ns_per_connection"].as_f64().unwrap_or(0.0))
    });
    Value::Array(rows)
}

/// Each tracer's anonymous and file-backed peaks (see `memory_peaks`).
fn print_memory_peaks(report: &Value) {
    for row in report["results"].as_array().into_iter().flatten() {
        let (Some(anon), Some(file)) = (
            row["tracer_peak_anon_mib"].as_f64(),
            row["tracer_peak_file_mib"].as_f64(),
        ) else {
            continue;
        };
        if anon + file == 0.0 {
            continue;
        }
        let largest = &row["tracer_largest_file_mapping"];
        println!(
            "{} memory peaks: anonymous {anon:.1} MiB, file-backed {file:.1} MiB{}",
            row["tracer"].as_str().unwrap_or("?"),
            largest["path"]
                .as_str()
                .map_or(String::new(), |path| format!(
                " (most: {path}, {:.1} MiB: binaries mapped to read their symbols, reclaimable)",
                largest["resident_mib"].as_f64().unwrap_or(0.0)
            )),
        );
    }
}

fn print_table(report: &Value) {
    println!(
        "\nloopback churn ({} closes), {} threads, {} s per run, {} interleaved rounds, medians",
        report["close"].as_str().unwrap_or("SO_LINGER 0"),
        report["threads"],
        report["seconds_per_run"],
        report["rounds"]
    );
    println!(
        "{:<28} {:>10} {:>8} {:>8} {:>9} {:>8} {:>9} {:>12} {:>10} {:>8}",
        "tracer",
        "conn/s",
        "vs none",
        "vs tcpst",
        "cpu s",
        "rss MiB",
        "bpf ns",
        "ms/100k ev",
        "events",
        "lost"
    );
    for row in report["results"].as_array().into_iter().flatten() {
        println!(
            "{:<28} {:>10.0} {:>7.1}% {:>7.2}x {:>9.2} {:>8.1} {:>9.0} {:>12.1} {:>10} {:>8}",
            row["tracer"].as_str().unwrap_or("?"),
            row["median_connections_per_second"].as_f64().unwrap_or(0.0),
            row["ratio_to_untraced"].as_f64().unwrap_or(0.0) * 100.0,
            row["ratio_to_tcpstates"].as_f64().unwrap_or(0.0),
            row["tracer_cpu_seconds"].as_f64().unwrap_or(0.0),
            row["tracer_peak_rss_mib"].as_f64().unwrap_or(0.0),
            row["bpf_ns_per_run"].as_f64().unwrap_or(0.0),
            row["tracer_cpu_ms_per_100k_events"].as_f64().unwrap_or(0.0),
            row["events"]
                .as_u64()
                .map_or("-".to_owned(), |e| e.to_string()),
            row["events_lost"]
                .as_u64()
                .map_or("-".to_owned(), |e| e.to_string()),
        );
    }
    print_memory_peaks(report);
    for row in report["results"].as_array().into_iter().flatten() {
        let programs = row["bpf_programs"].as_array().cloned().unwrap_or_default();
        if programs.is_empty() {
            continue;
        }
        println!(
            "\nkernel programs of {}:",
            row["tracer"].as_str().unwrap_or("?")
        );
        println!(
            "  {:<24} {:>10} {:>14} {:>14}",
            "program", "ns/run", "runs/conn", "ns/conn"
        );
        for p in programs {
            println!(
                "  {:<24} {:>10.0} {:>14.2} {:>14.0}",
                p["program"].as_str().unwrap_or("?"),
                p["ns_per_run"].as_f64().unwrap_or(0.0),
                p["runs_per_connection"].as_f64().unwrap_or(0.0),
                p["ns_per_connection"].as_f64().unwrap_or(0.0),
            );
        }
    }
    let o = &report["open_loop"];
    if !o.is_null() {
        println!(
            "\nopen loop at {:.0} conn/s: busy CPU {:.1} ms per 1k connections untraced, {:.1} with the daemon ({:+.1}%)",
            o["rate_per_second"].as_f64().unwrap_or(0.0),
            o["busy_cpu_ms_per_1k_connections_untraced"].as_f64().unwrap_or(0.0),
            o["busy_cpu_ms_per_1k_connections_daemon"].as_f64().unwrap_or(0.0),
            o["overhead_percent"].as_f64().unwrap_or(0.0),
        );
    }
    crate::bench_two_sessions::print(&report["two_trace_sessions"]);
    crate::bench_phases::print(&report["kernel_phases"]);
    if let Some(paths) = report["userspace_instructions"].as_object() {
        println!("\nuserspace hot path, instructions per record (valgrind; the Criterion benches' records):");
        for path in paths.values() {
            println!(
                "  {:<32} {:>8.0}",
                path["name"].as_str().unwrap_or("?"),
                path["instructions_per_record"].as_f64().unwrap_or(0.0)
            );
        }
    }
    crate::bench_targets::print(&report["target_checks"]);
}

/// `cargo xtask bench --scale N`: the daemon's memory and the kernel maps
/// with 2 × N sockets open (N loopback connections held by one process).
pub fn scale(connections: usize) -> Result<()> {
    let root = workspace();
    build_release_binaries(&root)?;
    ensure_nothing_traces()?;
    let mut daemon = Running {
        child: Command::new(root.join("target/release/tcptrace"))
            .args(["daemon", "--listen", DAEMON_ADDR, "--refresh", "2s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the daemon")?,
        output: PathBuf::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(DAEMON_ADDR, "/healthz").is_none() {
        if Instant::now() > deadline {
            bail!("the daemon did not come up");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let (_, idle_rss) = process_usage(daemon.child.id());
    let sampler = Sampler::start(daemon.child.id());
    let opened = Instant::now();
    // Per-process fd limits here are 20,000: spread the sockets over
    // processes holding at most 8,000 connections each.
    let per_process = 8_000;
    let mut holders = Vec::new();
    let mut remaining = connections;
    while remaining > 0 {
        let n = remaining.min(per_process);
        remaining -= n;
        let mut holder = Command::new(root.join("target/release/tt-hold-many"))
            .arg(n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting tt-hold-many")?;
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().context("stdout")?)
            .read_line(&mut line)
            .context("reading tt-hold-many")?;
        if !line.starts_with("holding") {
            bail!("tt-hold-many failed: {line:?}");
        }
        holders.push(holder);
    }
    let open_s = opened.elapsed().as_secs_f64();
    // Two refreshes, so the socket dump and /proc scan ran with all of them.
    thread::sleep(Duration::from_secs(5));
    let health: Value =
        serde_json::from_str(&http_get(DAEMON_ADDR, "/healthz").unwrap_or_default())?;
    let scrape_started = Instant::now();
    let scrape = http_get(DAEMON_ADDR, "/metrics").unwrap_or_default();
    let scrape_ms = scrape_started.elapsed().as_secs_f64() * 1e3;
    let (cpu, peak_rss) = process_usage(daemon.child.id());
    let status = fs::read_to_string(format!("/proc/{}/status", daemon.child.id()))?;
    let status_field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or("?")
            .trim()
            .to_owned()
    };
    let rss = status_field("VmRSS:");
    // What RSS is made of: heap, mapped files (binaries, and ELF files being
    // symbolized) and the ring buffer, which the kernel maps in whole.
    let rss_parts = json!({
        "anon": status_field("RssAnon:"),
        "file": status_field("RssFile:"),
        "ring_buffer_kib": mapping_rss_kib(daemon.child.id(), "anon_inode:bpf-map"),
    });
    let maps = map_memory();
    let peaks = sampler.stop();
    for mut holder in holders {
        drop(holder.stdin.take());
        let _ = holder.wait();
    }
    daemon.stop();
    let report = json!({
        "connections": connections,
        "sockets": 2 * connections,
        "seconds_to_open": open_s,
        "daemon_rss_idle_mib": idle_rss as f64 / 1024.0,
        "daemon_rss_now": rss,
        "daemon_rss_parts": rss_parts,
        "daemon_peak_rss_mib": peak_rss as f64 / 1024.0,
        "daemon_peak_anon_mib": peaks.anon_kib as f64 / 1024.0,
        "daemon_peak_file_mib": peaks.file_kib as f64 / 1024.0,
        "daemon_largest_file_mapping": peaks.largest_file.map(|(kib, path)| json!({"path": path, "resident_mib": kib as f64 / 1024.0})),
        "daemon_cpu_seconds": cpu,
        "live_sockets_traced": health["live_sockets_traced"],
        "events": health["events"],
        "events_lost": health["events_lost"],
        "scrape_ms": scrape_ms,
        "scrape_bytes": scrape.len(),
        "kernel_maps_bytes": maps,
        "target_rss_mib": 64,
    });
    fs::create_dir_all(root.join("target/bench"))?;
    fs::write(
        root.join("target/bench/scale.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Resident KiB of a process's mappings whose name starts with `name`.
fn mapping_rss_kib(pid: u32, name: &str) -> u64 {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Rss:") {
            if inside {
                total += kib
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-'))
        {
            // A mapping header: "start-end perms offset dev inode [name]".
            inside = line
                .split_whitespace()
                .nth(5)
                .is_some_and(|n| n.starts_with(name));
        }
    }
    total
}

/// Memory the kernel charges for tcptrace's maps (`bytes_memlock`), by name.
fn map_memory() -> Value {
    let out = Command::new("bpftool")
        .args(["--json", "map", "show"])
        .output();
    let Ok(out) = out else { return Value::Null };
    let maps: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let names = [
        "EVENTS",
        "USER_STACKS",
        "SOCKS",
        "LISTENERS",
        "STACK_SAMPLES",
        "STACK_SCRATCH",
        "PROCESSES",
        "COUNTERS",
    ];
    let mut by_name = serde_json::Map::new();
    for map in maps.as_array().into_iter().flatten() {
        let name = map["name"].as_str().unwrap_or_default();
        if names.contains(&name) {
            by_name.insert(
                name.to_owned(),
                json!({ "max_entries": map["max_entries"], "bytes": map["bytes_memlock"] }),
            );
        }
    }
    Value::Object(by_name)
}
