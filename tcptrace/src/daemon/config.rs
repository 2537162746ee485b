//! Daemon configuration: defaults, then an optional TOML file, then the
//! environment and flags (clap merges those two), each overriding the last.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::{
    filter::kernel_comms,
    probe::{DEFAULT_SOCKET_MAP_ENTRIES, SOCKET_MAP_ENTRIES_RANGE},
};

/// Default `/metrics` address: loopback only, a fixed port below the
/// ephemeral range (32768+) so an outgoing connection can never hold it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9640";

/// The TOML file. Unknown keys are errors that name the key.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub listen: Option<String>,
    pub top_peers: Option<usize>,
    pub ring_buffer_mib: Option<u32>,
    pub socket_map_entries: Option<u32>,
    pub stacks: Option<bool>,
    pub stack_interval: Option<String>,
    pub jvm_perf_map: Option<bool>,
    pub every_event: Option<bool>,
    pub refresh: Option<String>,
    pub log_findings: Option<bool>,
    pub comm: Option<Vec<String>>,
    pub port: Option<Vec<u16>>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        Ok(toml::from_str(text)?)
    }
}

/// Values given on the command line or in the environment.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub top_peers: Option<usize>,
    pub ring_buffer_mib: Option<u32>,
    pub socket_map_entries: Option<u32>,
    pub no_stacks: bool,
    pub stack_interval: Option<String>,
    pub no_jvm_perf_map: bool,
    pub every_event: bool,
    pub refresh: Option<String>,
    pub comm: Vec<String>,
    pub port: Vec<u16>,
}

/// The configuration in force.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "configuration switches, each its own setting"
)]
pub struct DaemonConfig {
    /// What the daemon logs at start about its configuration (a `comm`
    /// longer than the kernel keeps).
    pub warnings: Vec<String>,
    pub listen: SocketAddr,
    /// Destinations with their own `peer` label; the rest are "other".
    pub top_peers: usize,
    pub ring_buffer_mib: u32,
    /// Sockets the kernel tracks at once; beyond, counted as untracked.
    pub socket_map_entries: u32,
    pub stacks: bool,
    /// At most one call-site stack per process and call kind per interval.
    pub stack_interval: Duration,
    /// Ask JVMs for their perf maps (Java method names).
    pub jvm_perf_map: bool,
    /// Send every event from the kernel instead of one summary per socket
    /// (costs more; for debugging tcptrace itself).
    pub every_event: bool,
    /// How often the socket dump, diagnoses and findings log are refreshed.
    pub refresh: Duration,
    pub log_findings: bool,
    pub comm: Vec<String>,
    pub port: Vec<u16>,
}

impl DaemonConfig {
    pub fn merge(file: FileConfig, flags: Overrides) -> Result<Self> {
        let listen = flags
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("listen: `{listen}` is not an address like 127.0.0.1:9640"))?;
        let refresh = flags
            .refresh
            .or(file.refresh)
            .unwrap_or_else(|| "15s".to_owned());
        let refresh = humantime::parse_duration(&refresh)
            .with_context(|| format!("refresh: `{refresh}` is not a duration like 15s"))?;
        if refresh < Duration::from_secs(1) {
            bail!("refresh: must be at least 1s");
        }
        let stack_interval = flags
            .stack_interval
            .or(file.stack_interval)
            .unwrap_or_else(|| "1s".to_owned());
        let stack_interval = humantime::parse_duration(&stack_interval).with_context(|| {
            format!("stack-interval: `{stack_interval}` is not a duration like 1s")
        })?;
        if stack_interval > Duration::from_secs(3600) {
            bail!("stack-interval: at most 1h");
        }
        let every_event = flags.every_event || file.every_event.unwrap_or(false);
        // Summary mode sends 2 records per loopback connection instead of
        // ~12: 4 MiB held 200 ms of this machine's maximum churn with no
        // loss, and the kernel maps the ring into the daemon twice, so it
        // counts double in RSS.
        let default_ring_mib = if every_event { 8 } else { 4 };
        let ring_buffer_mib = flags
            .ring_buffer_mib
            .or(file.ring_buffer_mib)
            .unwrap_or(default_ring_mib);
        if !(1..=1024).contains(&ring_buffer_mib) {
            bail!("ring-buffer-mib: {ring_buffer_mib} is outside 1..=1024");
        }
        let socket_map_entries = flags
            .socket_map_entries
            .or(file.socket_map_entries)
            .unwrap_or(DEFAULT_SOCKET_MAP_ENTRIES);
        if !SOCKET_MAP_ENTRIES_RANGE.contains(&socket_map_entries) {
            bail!(
                "socket-map-entries: {socket_map_entries} is outside {}..={}",
                SOCKET_MAP_ENTRIES_RANGE.start(),
                SOCKET_MAP_ENTRIES_RANGE.end()
            );
        }
        let (comm, comm_warnings) = kernel_comms(if flags.comm.is_empty() {
            file.comm.unwrap_or_default()
        } else {
            flags.comm
        });
        Ok(Self {
            warnings: comm_warnings,
            listen,
            top_peers: flags.top_peers.or(file.top_peers).unwrap_or(10),
            ring_buffer_mib,
            socket_map_entries,
            stacks: !flags.no_stacks && file.stacks.unwrap_or(true),
            stack_interval,
            jvm_perf_map: !flags.no_jvm_perf_map && file.jvm_perf_map.unwrap_or(true),
            every_event,
            refresh,
            log_findings: file.log_findings.unwrap_or(true),
            comm,
            port: if flags.port.is_empty() {
                file.port.unwrap_or_default()
            } else {
                flags.port
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file =
            FileConfig::parse("listen = \"127.0.0.1:9000\"\ntop-peers = 3\nrefresh = \"30s\"\n")
                .unwrap();
        let config = DaemonConfig::merge(
            file.clone(),
            Overrides {
                top_peers: Some(5),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.top_peers, 5);
        assert_eq!(config.refresh, Duration::from_secs(30));
        let defaults = DaemonConfig::merge(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(defaults.listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(
            defaults.listen.ip().is_loopback(),
            "metrics stay on loopback unless told otherwise"
        );
        assert!(defaults.listen.port() < 32768);
        assert_eq!(defaults.ring_buffer_mib, 4, "summary mode");
        let every_event = DaemonConfig::merge(
            FileConfig::default(),
            Overrides {
                every_event: true,
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(every_event.ring_buffer_mib, 8, "every-event mode");
    }

    #[test]
    fn errors_name_the_bad_key() {
        let err = FileConfig::parse("listn = \"x\"").unwrap_err();
        assert!(format!("{err:#}").contains("listn"), "{err:#}");
        let err = DaemonConfig::merge(
            FileConfig::parse("listen = \"nowhere\"").unwrap(),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("listen:"), "{err}");
        let err = DaemonConfig::merge(
            FileConfig::default(),
            Overrides {
                refresh: Some("soon".into()),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("refresh:"), "{err}");
    }

    #[test]
    fn example_config_is_valid_and_complete() {
        let text = include_str!("../../../deploy/tcptrace.toml");
        let file = FileConfig::parse(text).unwrap();
        assert!(file.listen.is_some() && file.top_peers.is_some() && file.refresh.is_some());
        DaemonConfig::merge(file, Overrides::default()).unwrap();
    }
}
