//! `cargo xtask test`: the README's test command and what CI runs.
//!
//! Formatting and clippy first (quick; a failure is reported with its fix
//! and the run goes on, so the full result is still seen), then the unit
//! tests (no privileges), the fuzz targets' build and the deployment files
//! (`cargo xtask deploy-check`), then the real-kernel tests, which load the
//! programs into this kernel and drive real TCP traffic. Those need root;
//! without it they fail with a clear message, never skip. The run ends with
//! one plain `N passed, M failed` line summing every test binary, and exits
//! non-zero when any step failed.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{build_release_binaries, setup, workspace};

pub fn run(args: &[String]) -> Result<()> {
    setup::test_packages()?;
    let root = workspace();
    let lints = lint(&root);
    let mut totals = Totals::default();
    let unit = cargo_test(
        Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["test", "--workspace", "--exclude", "tcptrace-tests"])
            .args(args),
        &mut totals,
    );
    // The fuzz targets live outside the workspace (they need nightly to
    // run): check that they still build against the library, so an API
    // change cannot quietly break `cargo xtask fuzz`.
    let fuzz = crate::run_checked(Command::new(env!("CARGO")).current_dir(&root).args([
        "check",
        "--quiet",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--bins",
    ]))
    .context("the fuzz targets no longer build (fuzz/fuzz_targets)");
    // The deployment files, rendered and validated offline.
    let deploy = crate::deploy_check::run()
        .context("the deployment files do not check (above): `cargo xtask deploy-check`");
    // The kernel tests share kernel state (tracepoints, sysctls, netns):
    // one at a time, with release binaries.
    build_release_binaries(&root)?;
    let kernel = cargo_test(
        Command::new(env!("CARGO"))
            .current_dir(&root)
            .args([
                "test",
                "--release",
                "--no-fail-fast",
                "-p",
                "tcptrace-tests",
            ])
            .args(args)
            .args(["--", "--test-threads=1"]),
        &mut totals,
    );
    // The panic messages again, last: a long failing test's own output
    // (reports, backtraces) would otherwise push them out of a log's tail.
    for panic in &totals.panics {
        println!("{panic}");
    }
    println!("{} passed, {} failed", totals.passed, totals.failed);
    let failures: Vec<String> = lints
        .into_iter()
        .chain([unit, fuzz, deploy, kernel])
        .filter_map(|result| result.err().map(|e| format!("{e:#}")))
        .collect();
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// `cargo fmt --check` (the workspace, and the fuzz and kernel crates,
/// each its own workspace) and clippy with warnings denied (the kernel
/// crate's with the pinned nightly it builds with); each failure names its
/// fix.
fn lint(root: &Path) -> Vec<Result<()>> {
    let cargo = || {
        let mut command = Command::new(env!("CARGO"));
        command.current_dir(root);
        command
    };
    vec![
        crate::run_checked(cargo().args(["fmt", "--all", "--check"]))
            .context("the workspace is not formatted (diff above): run `cargo fmt --all`"),
        crate::run_checked(cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--check"]))
            .context(
                "the fuzz targets are not formatted (diff above): \
                 run `cargo fmt --manifest-path fuzz/Cargo.toml`",
            ),
        crate::run_checked(cargo().args([
            "fmt",
            "--manifest-path",
            "tcptrace-ebpf/Cargo.toml",
            "--check",
        ]))
        .context(
            "the kernel programs are not formatted (diff above): run `cargo fmt \
             --manifest-path tcptrace-ebpf/Cargo.toml`, then `cargo xtask build-ebpf`",
        ),
        crate::run_checked(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
        .context(
            "clippy found warnings (listed above): fix them, or allow one where it is right \
             with #[expect(clippy::LINT, reason = \"...\")]",
        ),
        kernel_clippy(root),
    ]
}

/// Clippy on the kernel programs (BPF target, `build-std`: the pinned
/// nightly with `rust-src`, as `cargo xtask build-ebpf` uses).
fn kernel_clippy(root: &Path) -> Result<()> {
    let toolchain = setup::kernel_check_toolchain()?;
    crate::run_checked(
        Command::new("cargo")
            .current_dir(root.join("tcptrace-ebpf"))
            .env("RUSTUP_TOOLCHAIN", &toolchain)
            .env_remove("RUSTC")
            .env_remove("CARGO")
            .args(["clippy", "--release", "--", "-D", "warnings"]),
    )
    .context(
        "clippy found warnings in the kernel programs (listed above): fix them, then run \
         `cargo xtask build-ebpf` and commit the object",
    )
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    /// Each failed test's panic: its `panicked at` line and message.
    panics: Vec<String>,
}

/// Lines of a panic message kept for the end-of-run summary.
const PANIC_LINES: usize = 12;

/// Collects `thread '…' panicked at …` and the message lines after it,
/// up to the backtrace or a blank line.
#[derive(Default)]
struct PanicCollector {
    current: Option<Vec<String>>,
}

impl PanicCollector {
    fn line(&mut self, line: &str, panics: &mut Vec<String>) {
        if line.starts_with("thread '") && line.contains("' panicked at ") {
            self.finish(panics);
            self.current = Some(vec![line.to_owned()]);
            return;
        }
        let Some(lines) = &mut self.current else {
            return;
        };
        let ends = line.is_empty()
            || line.starts_with("stack backtrace:")
            || line.starts_with("note: run with `RUST_BACKTRACE");
        if ends {
            self.finish(panics);
        } else if lines.len() < PANIC_LINES {
            lines.push(line.to_owned());
        } else if lines.len() == PANIC_LINES {
            lines.push("[…]".to_owned());
        }
    }

    fn finish(&mut self, panics: &mut Vec<String>) {
        if let Some(lines) = self.current.take() {
            panics.push(lines.join("\n"));
        }
    }
}

/// Runs `cargo test`, echoing its output and adding up its result lines.
fn cargo_test(command: &mut Command, totals: &mut Totals) -> Result<()> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let mut panics = PanicCollector::default();
    // Read to the end whatever the bytes are: a test may print a child's
    // raw output, and a reader that stopped early would leave cargo
    // writing into a closed pipe (its output lost, the run cut short).
    let mut reader = BufReader::new(stdout);
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        if reader.read_until(b'\n', &mut bytes)? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&bytes);
        let line = line.trim_end_matches(['\n', '\r']);
        println!("{line}");
        panics.line(line, &mut totals.panics);
        if let Some(result) = line.strip_prefix("test result: ") {
            let count = |label: &str| {
                result
                    .split(';')
                    .find_map(|part| {
                        part.trim()
                            .trim_start_matches("ok. ")
                            .trim_start_matches("FAILED. ")
                            .strip_suffix(label)
                    })
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            totals.passed += count(" passed");
            totals.failed += count(" failed");
        }
    }
    panics.finish(&mut totals.panics);
    let status = child.wait()?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_message_is_kept_without_its_backtrace() {
        let output = "---- t stdout ----\nreport line\n\
            thread 't' panicked at tests/tests/x.rs:9:5:\nassertion failed: 2 rows\n  row 1\n\
            stack backtrace:\n   0: main\nthread 'u' panicked at y.rs:1:1:\nboom\n\ntest result: FAILED.";
        let (mut collector, mut panics) = (PanicCollector::default(), Vec::new());
        for line in output.lines() {
            collector.line(line, &mut panics);
        }
        collector.finish(&mut panics);
        assert_eq!(
            panics,
            [
                "thread 't' panicked at tests/tests/x.rs:9:5:\nassertion failed: 2 rows\n  row 1",
                "thread 'u' panicked at y.rs:1:1:\nboom"
            ]
        );
    }
}
