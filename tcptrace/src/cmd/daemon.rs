use std::path::PathBuf;

use anyhow::Result;
use clap::{builder::BoolishValueParser, Args};
use tcptrace::daemon::{
    self,
    config::{DaemonConfig, FileConfig, Overrides},
};

use super::WorkloadArgs;

#[derive(Debug, Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "command-line switches, each its own flag"
)]
pub struct DaemonArgs {
    /// TOML configuration file (see deploy/tcptrace.toml); flags win over it.
    #[arg(long, env = "TCPTRACE_CONFIG")]
    config: Option<PathBuf>,
    /// Address of /metrics and /healthz [default: 127.0.0.1:9640].
    #[arg(long, env = "TCPTRACE_LISTEN")]
    listen: Option<String>,
    /// TLS and basic authentication for /metrics and /healthz, in the
    /// Prometheus exporter-toolkit format (`tls_server_config`,
    /// `basic_auth_users`); read again on SIGHUP.
    #[arg(long, env = "TCPTRACE_WEB_CONFIG")]
    web_config: Option<PathBuf>,
    /// Destinations with their own `peer` label; the rest are "other" [default: 10].
    #[arg(long, env = "TCPTRACE_TOP_PEERS")]
    top_peers: Option<usize>,
    /// Ring buffer size in MiB [default: 4; 8 with --every-event].
    #[arg(long, env = "TCPTRACE_RING_BUFFER_MIB")]
    ring_buffer_mib: Option<u32>,
    /// Sockets the kernel can track at once [default: 262144].
    #[arg(long, env = "TCPTRACE_SOCKET_MAP_ENTRIES")]
    socket_map_entries: Option<u32>,
    /// Do not capture user stacks (call sites).
    #[arg(long, env = "TCPTRACE_NO_STACKS", value_parser = BoolishValueParser::new())]
    no_stacks: bool,
    /// At most one call-site stack per process and call kind per interval [default: 1s].
    #[arg(long, env = "TCPTRACE_STACK_INTERVAL")]
    stack_interval: Option<String>,
    /// Do not ask JVMs for their perf maps (`jcmd PID Compiler.perfmap`
    /// through the attach socket); Java methods then stay unnamed.
    #[arg(long, env = "TCPTRACE_NO_JVM_PERF_MAP", value_parser = BoolishValueParser::new())]
    no_jvm_perf_map: bool,
    /// Have the kernel send every event instead of one summary per socket
    /// (more overhead; the metrics are the same).
    #[arg(long, env = "TCPTRACE_EVERY_EVENT", value_parser = BoolishValueParser::new())]
    every_event: bool,
    /// How often to refresh the socket dump and diagnoses [default: 15s].
    #[arg(long, env = "TCPTRACE_REFRESH")]
    refresh: Option<String>,
    /// Connections idle this long with keepalive off are findings, and
    /// established connections reset by a peer silent this long are lost
    /// [default: 5m].
    #[arg(long, env = "TCPTRACE_IDLE_THRESHOLD")]
    idle_threshold: Option<String>,
    /// Only sockets owned or acted on by this command name (repeatable).
    #[arg(short, long = "comm")]
    comms: Vec<String>,
    /// Only sockets with this local or remote port (repeatable).
    #[arg(long = "port")]
    ports: Vec<u16>,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Also label series with `container_id` and `pod_uid` (they change at
    /// every restart: more series).
    #[arg(long, env = "TCPTRACE_CONTAINER_IDS", value_parser = BoolishValueParser::new())]
    container_ids: bool,
    /// Where the node's filesystem is (`/host` when the pod mounts it
    /// there): its runtimes' state names containers and pods [default: /].
    #[arg(long, env = "TCPTRACE_NODE_ROOT")]
    node_root: Option<PathBuf>,
}

pub fn run(args: DaemonArgs) -> Result<()> {
    let path = args.config.clone();
    let overrides = Overrides {
        listen: args.listen,
        web_config: args.web_config,
        top_peers: args.top_peers,
        ring_buffer_mib: args.ring_buffer_mib,
        socket_map_entries: args.socket_map_entries,
        no_stacks: args.no_stacks,
        stack_interval: args.stack_interval,
        no_jvm_perf_map: args.no_jvm_perf_map,
        every_event: args.every_event,
        refresh: args.refresh,
        idle_threshold: args.idle_threshold,
        container_ids: args.container_ids,
        node_root: args.node_root,
        comm: args.comms,
        port: args.ports,
        namespace: args.workload.namespaces,
        pod: args.workload.pods,
        container: args.workload.containers,
        cgroup: args.workload.cgroups,
    };
    // The flags stay as given; the file is read again at each SIGHUP.
    let read = move || {
        let file = match &path {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        DaemonConfig::merge(file, overrides.clone())
    };
    let config = read()?;
    daemon::run(config, Box::new(read))
}

#[cfg(test)]
mod tests {
    use clap::{FromArgMatches, Parser};

    use super::DaemonArgs;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        daemon: DaemonArgs,
    }

    /// Switches from the environment take the usual spellings (a unit
    /// file's `Environment=TCPTRACE_EVERY_EVENT=1`), not only true/false.
    #[test]
    fn switches_from_the_environment_take_the_usual_spellings() {
        // The only test reading this variable.
        for (value, expected) in [
            ("1", true),
            ("on", true),
            ("yes", true),
            ("0", false),
            ("off", false),
        ] {
            std::env::set_var("TCPTRACE_CONTAINER_IDS", value);
            let matches = <Wrapper as clap::CommandFactory>::command()
                .try_get_matches_from(["tcptrace"])
                .unwrap_or_else(|e| panic!("{value}: {e}"));
            let parsed = Wrapper::from_arg_matches(&matches).expect("parsed");
            assert_eq!(parsed.daemon.container_ids, expected, "{value}");
        }
        std::env::remove_var("TCPTRACE_CONTAINER_IDS");
    }
}
