use std::{io, time::Duration};

use anyhow::{bail, Context, Result};
use clap::Args;
use tcptrace::{
    findings::DEFAULT_IDLE_THRESHOLD,
    output::detached,
    probe::{
        ProbeOptions, DEFAULT_SOCKET_MAP_ENTRIES, DEFAULT_STACK_RING_BYTES,
        INTERACTIVE_STACK_BURST, INTERACTIVE_STACK_INTERVAL,
    },
    top::{self, columns::Column, terminal::stdout_is_terminal, Output, TopOptions},
};

use super::{trace::parse_duration, SessionFilterArgs};

#[derive(Debug, Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "command-line switches, each its own flag"
)]
pub struct TopArgs {
    /// How often the rows are counted and shown (`1s`, `500ms`, `5s`).
    #[arg(short, long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Stop after this long; default: until `q`.
    #[arg(short, long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many intervals.
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..))]
    iterations: Option<u64>,
    /// The column the rows are ranked by at start (`s` and `1`..`8`
    /// change it).
    #[arg(long, value_enum, default_value = "conn")]
    sort: Column,
    /// One row per program (process name and container) instead of one
    /// per process (`g` changes it): a shell loop's processes, or a
    /// pre-fork server's master and workers, as one row.
    #[arg(short, long)]
    group: bool,
    /// Plain text instead of the terminal view: one table per interval on
    /// standard output, like `top -b` (for scripts and logs).
    #[arg(short, long)]
    batch: bool,
    #[command(flatten)]
    filter: SessionFilterArgs,
    /// Ring buffer size in MiB (rounded up to a power of two).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    ring_buffer_mib: u32,
    /// Do not capture user stacks (the detail pane's call sites).
    #[arg(long)]
    no_stacks: bool,
    /// Do not ask JVMs for their perf maps; Java methods then stay
    /// unnamed.
    #[arg(long)]
    no_jvm_perf_map: bool,
}

pub fn run(args: TopArgs) -> Result<()> {
    // Before loading anything: the view needs a terminal to draw on.
    if !args.batch && !stdout_is_terminal() {
        bail!(
            "standard output is not a terminal: `tcptrace top --batch` prints the table as \
             text, `tcptrace trace` prints every event"
        );
    }
    let (filter, containers, warnings) = args.filter.into_filter();
    let options = TopOptions {
        filter,
        probe: ProbeOptions {
            ring_bytes: args.ring_buffer_mib * 1024 * 1024,
            stack_ring_bytes: DEFAULT_STACK_RING_BYTES,
            capture_stacks: !args.no_stacks,
            stack_interval_ms: u32::try_from(INTERACTIVE_STACK_INTERVAL.as_millis())
                .unwrap_or(u32::MAX),
            stack_burst: INTERACTIVE_STACK_BURST,
            // Every event, as it happens: a connection is counted in the
            // interval it opened in (summary mode sends it at its close).
            summary: false,
            accept_hook: true,
            socket_map_entries: DEFAULT_SOCKET_MAP_ENTRIES,
        },
        containers,
        interval: args.interval,
        duration: args.duration,
        iterations: args.iterations,
        sort: args.sort,
        by_program: args.group,
        idle_threshold: DEFAULT_IDLE_THRESHOLD,
        no_jvm_perf_map: args.no_jvm_perf_map,
        notes: warnings.iter().map(|w| format!("warning: {w}")).collect(),
    };
    for warning in &warnings {
        eprintln!("tcptrace: warning: {warning}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if !args.batch {
        return runtime.block_on(top::run(options, Output::Terminal));
    }
    // Written by a thread of its own, as `trace` does: a reader that
    // stops reading must not stop the drain.
    let (stdout, stdout_status) =
        detached::spawn(io::stdout()).context("starting the output thread")?;
    let result = runtime.block_on(top::run(options, Output::Batch(stdout)));
    let (unwritten, dropped) = stdout_status.settle(STDOUT_GRACE);
    if unwritten > 0 || dropped > 0 {
        eprintln!(
            "tcptrace: standard output was not read: {dropped} bytes dropped, {unwritten} bytes \
             still unwritten after {STDOUT_GRACE:?}"
        );
    }
    result
}

/// How long the end of a batch run waits for a slow reader.
const STDOUT_GRACE: Duration = Duration::from_secs(2);
