//! `cargo xtask`: the project's own setup, build and test commands, so a
//! fresh machine needs nothing installed by hand.

mod bench;
mod bench_instructions;
mod bench_phases;
mod bench_targets;
mod bench_two_sessions;
mod build_ebpf;
mod deploy_check;
mod fuzz;
mod memory_peaks;
mod setup;
mod soak;
mod test;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what kernel-side development needs (the pinned nightly with
    /// rust-src, bpf-linker).
    Setup,
    /// Rebuild the eBPF object from source (with the pinned nightly) and its
    /// commit-ready hash.
    BuildEbpf,
    /// Run every test: unit tests, then the real-kernel tests as root.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure tcptrace's cost against no tracer and libbpf-tools (root).
    Bench {
        /// Interleaved rounds (each runs every configuration once).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds of load per run.
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
        /// Client threads of the churn workload.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Close connections normally (FIN, the client's socket handed to
        /// `TIME_WAIT`, the server's through `CLOSE_WAIT`: ten state changes
        /// a connection) instead of with `SO_LINGER` 0 (six).
        #[arg(long)]
        normal_close: bool,
        /// Configurations to compare with the untraced baseline
        /// (none, daemon, trace, tcplife, tcpstates).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "daemon,trace,tcplife,tcpstates"
        )]
        tracers: Vec<String>,
        /// Instead: hold this many loopback connections (2 sockets each)
        /// open and report the daemon's memory and the kernel maps.
        #[arg(long)]
        scale: Option<usize>,
    },
    /// Run the daemon under maximum churn for a long time, checking it every 30 s (root).
    Soak {
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// Run each cargo-fuzz target (fuzz/) for a bounded time (nightly).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Render the Kubernetes manifests (deploy/kubernetes) and validate them,
    /// and the Grafana dashboard, offline (also a step of `test`).
    DeployCheck,
    /// Build tcptrace and run it as root with these arguments.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Errors are printed as their chain of causes, without the backtrace
/// `RUST_BACKTRACE` would add: at the end of a test run, a backtrace of
/// xtask itself pushed the summary of failures out of a log's tail.
fn main() -> std::process::ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Setup => setup::kernel_toolchain().map(|_| ()),
        Task::BuildEbpf => build_ebpf::run(),
        Task::Test { args } => test::run(&args),
        Task::Run { args } => run_tcptrace(&args),
        Task::Fuzz { seconds } => fuzz::run(seconds),
        Task::DeployCheck => deploy_check::run(),
        Task::Soak { minutes, threads } => soak::run(minutes, threads),
        Task::Bench {
            rounds,
            seconds,
            threads,
            normal_close,
            tracers,
            scale,
        } => {
            setup::test_packages()?;
            match scale {
                Some(connections) => bench::scale(connections),
                None => bench::run(&bench::Options {
                    tracers: tracers
                        .iter()
                        .map(|t| bench::Tracer::parse(t))
                        .collect::<Result<_>>()?,
                    rounds,
                    seconds,
                    threads,
                    normal_close,
                }),
            }
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

/// Runs a command, failing with its command line when it fails.
fn run_checked(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `sudo` when not root, so that `cargo xtask run` works for everyone.
fn privileged(program: &Path) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg(program);
        sudo
    }
}

/// Release builds of tcptrace and the test workloads (what the kernel
/// tests and the benchmarks run).
fn build_release_binaries(root: &Path) -> Result<()> {
    run_checked(Command::new(env!("CARGO")).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "tcptrace",
        "-p",
        "tcptrace-tests",
        "--bins",
    ]))
}

fn run_tcptrace(args: &[String]) -> Result<()> {
    let root = workspace();
    run_checked(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "tcptrace",
    ]))?;
    run_checked(privileged(&root.join("target/release/tcptrace")).args(args))
}
