//! `cargo xtask test`: the README's test command and what CI runs.
//!
//! Unit tests first (no privileges), then the real-kernel tests, which load
//! the programs into this kernel and drive real TCP traffic. Those need
//! root; without it they fail with a clear message, never skip.

use std::process::Command;

use anyhow::Result;

use crate::{run_checked, setup, workspace};

pub fn run(args: &[String]) -> Result<()> {
    setup::test_packages()?;
    let root = workspace();
    run_checked(
        Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["test", "--workspace", "--exclude", "tcptrace-tests"])
            .args(args),
    )?;
    // The kernel tests share kernel state (tracepoints, sysctls, netns):
    // one at a time.
    run_checked(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "tcptrace",
        "-p",
        "tcptrace-tests",
        "--bins",
    ]))?;
    run_checked(
        Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["test", "--release", "-p", "tcptrace-tests"])
            .args(args)
            .args(["--", "--test-threads=1"]),
    )
}
