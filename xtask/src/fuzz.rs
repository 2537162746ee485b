//! `cargo xtask fuzz [--seconds N]`: runs every cargo-fuzz target in fuzz/
//! (the ring-buffer record decoder, the tracefs format parser) for a
//! bounded time each, and prints how many inputs ran and any crash.
//!
//! libFuzzer and the sanitizers need nightly; cargo-fuzz is installed when
//! missing. New inputs the fuzzer finds go to `target/fuzz-corpus/<target>`;
//! the seeds in `fuzz/corpus/<target>` are only read, so the corpus kept in
//! the repository stays small. A target's `fuzz/<target>.dict` (libFuzzer
//! dictionary) is used when it exists. Crashes are written to
//! `fuzz/artifacts/<target>/` and fail the command.

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{run_checked, workspace};

/// The fuzz targets of fuzz/Cargo.toml.
const TARGETS: [&str; 3] = ["decode_record", "tracefs_format", "replay_recording"];

pub fn run(seconds: u64) -> Result<()> {
    if seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    ensure_tools()?;
    let root = workspace();
    let mut outcomes = Vec::new();
    for target in TARGETS {
        outcomes.push(fuzz(&root, target, seconds)?);
    }
    println!();
    println!("fuzzing, {seconds} s per target (cargo +nightly fuzz, debug assertions on):");
    for o in &outcomes {
        println!(
            "  {:<16} {:>12} runs in {:>5.1} s ({} exec/s), corpus {} inputs ({} seeds), peak RSS {} MB: {}",
            o.target,
            o.runs.map_or("?".to_owned(), |r| r.to_string()),
            o.elapsed_s,
            o.exec_per_s.map_or("?".to_owned(), |r| r.to_string()),
            o.corpus,
            o.seeds,
            o.peak_rss_mb.map_or("?".to_owned(), |r| r.to_string()),
            o.verdict()
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.target)
        .collect();
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Nightly, and cargo-fuzz built by it when missing.
fn ensure_tools() -> Result<()> {
    crate::setup::nightly()?;
    if !crate::setup::succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        println!("installing cargo-fuzz (a few minutes, once)");
        run_checked(Command::new("cargo").env_remove("RUSTUP_TOOLCHAIN").args([
            "install",
            "cargo-fuzz",
            "--locked",
        ]))?;
    }
    Ok(())
}

struct Outcome {
    target: &'static str,
    ok: bool,
    runs: Option<u64>,
    exec_per_s: Option<u64>,
    peak_rss_mb: Option<u64>,
    elapsed_s: f64,
    corpus: usize,
    seeds: usize,
    crash: Option<String>,
    panic: Option<String>,
}

impl Outcome {
    fn verdict(&self) -> String {
        match (&self.crash, &self.panic, self.ok) {
            (_, _, true) => "no crash".to_owned(),
            (Some(crash), Some(panic), _) => format!("CRASH {crash} ({panic})"),
            (Some(crash), None, _) => format!("CRASH {crash}"),
            (None, _, _) => "FAILED (see the output above)".to_owned(),
        }
    }
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

fn fuzz(root: &Path, target: &'static str, seconds: u64) -> Result<Outcome> {
    let fuzz_dir = root.join("fuzz");
    let seeds = fuzz_dir.join("corpus").join(target);
    let work = root.join("target").join("fuzz-corpus").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // Tokens of the input's syntax, when the target has them (fuzz/TARGET.dict).
    let dictionary = Some(fuzz_dir.join(format!("{target}.dict"))).filter(|d| d.exists());
    println!("== fuzzing {target} for {seconds} s");
    let started = Instant::now();
    let mut child = Command::new("cargo")
        .current_dir(&fuzz_dir)
        // Whatever toolchain runs xtask, the fuzz build is nightly's.
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO")
        .args(["+nightly", "fuzz", "run", target])
        .arg(&work)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .args(dictionary.map(|d| format!("-dict={}", d.display())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting `cargo +nightly fuzz run`")?;
    let (tx, lines) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().context("stdout")?) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().context("stderr")?),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    let mut outcome = Outcome {
        target,
        ok: false,
        runs: None,
        exec_per_s: None,
        peak_rss_mb: None,
        elapsed_s: 0.0,
        corpus: 0,
        seeds: files_in(&seeds),
        crash: None,
        panic: None,
    };
    let stat = |line: &str, name: &str| {
        line.strip_prefix(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    for line in lines {
        // libFuzzer's progress lines (`#1024 NEW cov: ...`) are many: only
        // every power of two (`pulse`) and the rest of the output are shown.
        let progress = (line.starts_with('#') && !line.contains("pulse") && !line.contains("DONE"))
            || line.trim_start().starts_with("NEW_FUNC");
        if !progress {
            println!("{line}");
        }
        if let Some(runs) = line
            .strip_prefix("Done ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
        {
            outcome.runs = Some(runs);
        }
        if let Some(runs) = stat(&line, "stat::number_of_executed_units:") {
            outcome.runs = Some(runs);
        }
        if let Some(rate) = stat(&line, "stat::average_exec_per_sec:") {
            outcome.exec_per_s = Some(rate);
        }
        if let Some(rss) = stat(&line, "stat::peak_rss_mb:") {
            outcome.peak_rss_mb = Some(rss);
        }
        if let Some((_, path)) = line.split_once("Test unit written to ") {
            outcome.crash = Some(path.trim().to_owned());
        }
        if line.contains("panicked at") && outcome.panic.is_none() {
            outcome.panic = Some(line.trim().to_owned());
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    outcome.elapsed_s = started.elapsed().as_secs_f64();
    outcome.ok = status.success() && outcome.crash.is_none();
    outcome.corpus = files_in(&work) + outcome.seeds;
    if let Some(crash) = &outcome.crash {
        println!(
            "== {target}: crash input {crash}; reproduce with \
             `cd fuzz && cargo +nightly fuzz run {target} {crash}`"
        );
    }
    Ok(outcome)
}
