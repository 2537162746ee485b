use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use tcptrace::{
    container::{ContainerConfig, NodeState},
    filter::{kernel_comms, Filter},
};

mod daemon;
mod doctor;
mod manual;
mod output;
mod report;
mod top;
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
    /// Replay a session saved with `trace --write FILE`: its events and
    /// report, narrowed by the usual flags; needs no BPF and no root.
    Report(report::ReportArgs),
    /// A live view of the processes opening, closing and holding TCP
    /// connections, refreshed every second (`--batch` for plain text).
    Top(top::TopArgs),
    /// Run continuously, exporting Prometheus metrics and logging findings.
    Daemon(daemon::DaemonArgs),
    /// Show what this kernel supports and what will work.
    Doctor,
    /// Print a shell completion script, e.g.
    /// `tcptrace completions bash > /etc/bash_completion.d/tcptrace`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `tcptrace man | man -l -`.
    Man,
    /// The helper that opens sockets inside network namespaces for a
    /// session or daemon that dropped that privilege (started by them).
    #[command(name = "netns-opener", hide = true)]
    NetnsOpener,
}

/// Which workloads a session or daemon shows, by where their owners run;
/// the same flags for `trace`, `top` and `daemon`.
#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// Only sockets whose owner runs in a pod of this Kubernetes namespace
    /// (repeatable).
    #[arg(long = "namespace")]
    pub namespaces: Vec<String>,
    /// Only sockets whose owner runs in the pod of this name (repeatable).
    #[arg(long = "pod")]
    pub pods: Vec<String>,
    /// Only sockets whose owner runs in the container of this name (in its
    /// pod, or as Docker, Podman or lxc name it) (repeatable).
    #[arg(long = "container")]
    pub containers: Vec<String>,
    /// Only sockets whose owner runs in this cgroup: a path (and the
    /// cgroups below it; cgroup v2, or v1 where only v1 tells containers
    /// apart) or a cgroup id (repeatable).
    #[arg(long = "cgroup", value_name = "PATH_OR_ID")]
    pub cgroups: Vec<String>,
}

/// Which sockets a one-off session (`trace`, `top`) shows: the same
/// flags for both.
#[derive(Debug, Args)]
pub struct SessionFilterArgs {
    #[command(flatten)]
    pub sockets: SocketFilterArgs,
    /// Where the node's filesystem is (its container runtimes' state
    /// names containers and pods): `/host` when it is mounted there.
    #[arg(long, default_value = "/")]
    pub node_root: PathBuf,
}

/// Which sockets are shown, by process, port and workload: the same flags
/// for sessions and for replaying them.
#[derive(Debug, Args)]
pub struct SocketFilterArgs {
    /// Only sockets owned or acted on by this process id (repeatable).
    #[arg(short, long = "pid")]
    pub pids: Vec<u32>,
    /// Only sockets owned or acted on by this command name (repeatable).
    #[arg(short, long = "comm")]
    pub comms: Vec<String>,
    /// Only sockets with this local or remote port (repeatable).
    #[arg(long = "port")]
    pub ports: Vec<u16>,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

impl SocketFilterArgs {
    /// The filter, and what the flags ask that cannot be done as asked (a
    /// `--comm` longer than the kernel keeps).
    #[must_use]
    pub fn into_filter(self) -> (Filter, Vec<String>) {
        let (comms, warnings) = kernel_comms(self.comms);
        let filter = Filter {
            pids: self.pids,
            comms,
            ports: self.ports,
            namespaces: self.workload.namespaces,
            pods: self.workload.pods,
            containers: self.workload.containers,
            cgroups: self.workload.cgroups,
        };
        (filter, warnings)
    }
}

impl SessionFilterArgs {
    /// The filter, where container names are read from, and what cannot
    /// be done as asked.
    #[must_use]
    pub fn into_filter(self) -> (Filter, ContainerConfig, Vec<String>) {
        let (filter, warnings) = self.sockets.into_filter();
        let containers = ContainerConfig {
            node: NodeState::default().under(self.node_root),
            ..ContainerConfig::default()
        };
        (filter, containers, warnings)
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Trace(args) => trace::run(args),
        Command::Report(args) => report::run(args),
        Command::Top(args) => top::run(args),
        Command::Daemon(args) => daemon::run(args),
        Command::Doctor => doctor::run(),
        Command::Completions { shell } => manual::completions(shell),
        Command::Man => manual::man(),
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
