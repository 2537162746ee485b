use anyhow::Result;
use clap::{Parser, Subcommand};

mod daemon;
mod doctor;
mod trace;

/// eBPF TCP connection lifecycle tracer: who leaves `TIME_WAIT`, `CLOSE_WAIT`
/// and unacknowledged FINs behind, with process and call site.
#[derive(Debug, Parser)]
#[command(name = "tcptrace", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Trace TCP state changes, retransmits and resets live.
    Trace(trace::TraceArgs),
    /// Run continuously, exporting Prometheus metrics and logging findings.
    Daemon(daemon::DaemonArgs),
    /// Show what this kernel supports and what will work.
    Doctor,
    /// The helper that opens sockets inside network namespaces for a
    /// session or daemon that dropped that privilege (started by them).
    #[command(name = "netns-opener", hide = true)]
    NetnsOpener,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Trace(args) => trace::run(args),
        Command::Daemon(args) => daemon::run(args),
        Command::Doctor => doctor::run(),
        Command::NetnsOpener => tcptrace::netns::opener::serve(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
