use std::{io, path::PathBuf, time::Duration};

use anyhow::Result;
use clap::Args;
use tcptrace::{
    output::BufferedLines,
    recording::{self, ReplayOptions},
};

use super::{output::OutputArgs, trace::parse_duration, SocketFilterArgs};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A recording made by `tcptrace trace --write FILE` (here or on
    /// another machine).
    file: PathBuf,
    /// Narrow what the session recorded: a criterion given replaces the
    /// recorded one of its kind. A recording holds only what its session's
    /// filter let the kernel send, so widening shows nothing more.
    #[command(flatten)]
    filter: SocketFilterArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Diagnose with this idle threshold instead of the session's.
    #[arg(long, value_parser = parse_duration)]
    idle_threshold: Option<Duration>,
    /// No event lines: only the diagnosis report.
    #[arg(long)]
    report_only: bool,
}

pub fn run(args: ReportArgs) -> Result<()> {
    args.output.check()?;
    let (filter, warnings) = args.filter.into_filter();
    for warning in warnings {
        eprintln!("tcptrace: warning: {warning}");
    }
    let options = ReplayOptions {
        filter,
        report_only: args.report_only,
        idle_threshold: args.idle_threshold,
    };
    let mut sink = args.output.sink(BufferedLines::new(io::stdout()));
    recording::replay(&args.file, &options, sink.as_mut())?;
    Ok(())
}
