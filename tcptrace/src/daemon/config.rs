//! Daemon configuration: defaults, then an optional TOML file, then the
//! environment and flags (clap merges those two), each overriding the last.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::{
    container::{ContainerConfig, NodeState},
    filter::{kernel_comms, Filter},
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
    /// TLS and basic authentication (exporter-toolkit format).
    pub web_config: Option<PathBuf>,
    pub top_peers: Option<usize>,
    pub ring_buffer_mib: Option<u32>,
    pub socket_map_entries: Option<u32>,
    pub stacks: Option<bool>,
    pub stack_interval: Option<String>,
    pub jvm_perf_map: Option<bool>,
    pub every_event: Option<bool>,
    pub refresh: Option<String>,
    pub idle_threshold: Option<String>,
    pub log_findings: Option<bool>,
    pub container_ids: Option<bool>,
    pub node_root: Option<PathBuf>,
    pub comm: Option<Vec<String>>,
    pub port: Option<Vec<u16>>,
    pub namespace: Option<Vec<String>>,
    pub pod: Option<Vec<String>>,
    pub container: Option<Vec<String>>,
    pub cgroup: Option<Vec<String>>,
}

/// A configuration file larger than this is refused: a real one is a few
/// hundred bytes, and `--config /dev/zero` must not eat the host's memory.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

impl FileConfig {
    /// Reads a regular file of at most `MAX_CONFIG_BYTES` (a FIFO would
    /// block the start, a device never ends).
    pub fn load(path: &Path) -> Result<Self> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking: opening a FIFO would otherwise wait for a writer.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        if !meta.is_file() {
            bail!("{}: not a regular file", path.display());
        }
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {}", path.display()))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            bail!("{}: larger than {MAX_CONFIG_BYTES} bytes", path.display());
        }
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        Ok(toml::from_str(text)?)
    }
}

/// Values given on the command line or in the environment.
#[derive(Clone, Debug, Default)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "command-line switches, each its own flag"
)]
pub struct Overrides {
    pub listen: Option<String>,
    pub web_config: Option<PathBuf>,
    pub top_peers: Option<usize>,
    pub ring_buffer_mib: Option<u32>,
    pub socket_map_entries: Option<u32>,
    pub no_stacks: bool,
    pub stack_interval: Option<String>,
    pub no_jvm_perf_map: bool,
    pub every_event: bool,
    pub refresh: Option<String>,
    pub idle_threshold: Option<String>,
    pub container_ids: bool,
    pub node_root: Option<PathBuf>,
    pub comm: Vec<String>,
    pub port: Vec<u16>,
    pub namespace: Vec<String>,
    pub pod: Vec<String>,
    pub container: Vec<String>,
    pub cgroup: Vec<String>,
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
    /// The exporter-toolkit web configuration (TLS, basic auth), read at
    /// start and at each SIGHUP.
    pub web_config: Option<PathBuf>,
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
    /// Connections idle this long (keepalive off) are findings; lives this
    /// long are long.
    pub idle_threshold: Duration,
    pub log_findings: bool,
    /// Also label series with `container_id` and `pod_uid`.
    pub container_ids: bool,
    /// Where the node's filesystem is (`/host` when the daemon's pod
    /// mounts it there): the runtimes' state under it names containers.
    pub node_root: PathBuf,
    pub comm: Vec<String>,
    pub port: Vec<u16>,
    /// Workload filters: Kubernetes namespaces, pod and container names,
    /// cgroup paths or ids.
    pub namespace: Vec<String>,
    pub pod: Vec<String>,
    pub container: Vec<String>,
    pub cgroup: Vec<String>,
}

/// A list given by flags, else by the file.
fn listed<T>(flags: Vec<T>, file: Option<Vec<T>>) -> Vec<T> {
    if flags.is_empty() {
        file.unwrap_or_default()
    } else {
        flags
    }
}

impl DaemonConfig {
    /// What container attribution reads.
    #[must_use]
    pub fn containers(&self) -> ContainerConfig {
        ContainerConfig {
            ids: self.container_ids,
            node: NodeState::default().under(self.node_root.clone()),
            ..ContainerConfig::default()
        }
    }

    /// The processes, ports and workloads the daemon watches.
    #[must_use]
    pub fn filter(&self) -> Filter {
        Filter {
            comms: self.comm.clone(),
            ports: self.port.clone(),
            namespaces: self.namespace.clone(),
            pods: self.pod.clone(),
            containers: self.container.clone(),
            cgroups: self.cgroup.clone(),
            ..Filter::default()
        }
    }

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
        let idle_threshold = flags
            .idle_threshold
            .or(file.idle_threshold)
            .unwrap_or_else(|| "5m".to_owned());
        let idle_threshold = humantime::parse_duration(&idle_threshold).with_context(|| {
            format!("idle-threshold: `{idle_threshold}` is not a duration like 5m")
        })?;
        if idle_threshold < Duration::from_secs(1) {
            bail!("idle-threshold: must be at least 1s");
        }
        let stack_interval = flags
            .stack_interval
            .or(file.stack_interval)
            .unwrap_or_else(|| "1s".to_owned());
        let stack_interval = crate::probe::parse_stack_interval(&stack_interval)
            .map_err(|e| anyhow::anyhow!("stack-interval: {e}"))?;
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
        let (comm, comm_warnings) = kernel_comms(listed(flags.comm, file.comm));
        let node_root = flags
            .node_root
            .or(file.node_root)
            .unwrap_or_else(|| PathBuf::from("/"));
        if !node_root.is_absolute() {
            bail!(
                "node-root: `{}` is not an absolute path",
                node_root.display()
            );
        }
        Ok(Self {
            warnings: comm_warnings,
            listen,
            web_config: flags.web_config.or(file.web_config),
            top_peers: flags.top_peers.or(file.top_peers).unwrap_or(10),
            ring_buffer_mib,
            socket_map_entries,
            stacks: !flags.no_stacks && file.stacks.unwrap_or(true),
            stack_interval,
            jvm_perf_map: !flags.no_jvm_perf_map && file.jvm_perf_map.unwrap_or(true),
            every_event,
            refresh,
            idle_threshold,
            log_findings: file.log_findings.unwrap_or(true),
            container_ids: flags.container_ids || file.container_ids.unwrap_or(false),
            node_root,
            comm,
            port: listed(flags.port, file.port),
            namespace: listed(flags.namespace, file.namespace),
            pod: listed(flags.pod, file.pod),
            container: listed(flags.container, file.container),
            cgroup: listed(flags.cgroup, file.cgroup),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_are_regular_and_small() {
        let dir = std::env::temp_dir().join(format!("tcptrace-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let refused = |path: &Path| format!("{:#}", FileConfig::load(path).unwrap_err());
        // Would block forever (a FIFO) or never end (a device) if read.
        assert!(refused(&fifo).contains("not a regular file"));
        assert!(refused(Path::new("/dev/zero")).contains("not a regular file"));
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; 2 * 1024 * 1024]).unwrap();
        assert!(refused(&big).contains("larger than"));
        let fine = dir.join("fine.toml");
        std::fs::write(&fine, "top-peers = 3\n").unwrap();
        assert!(FileConfig::load(&fine).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
    fn container_keys_and_workload_filters() {
        let file = FileConfig::parse(
            "container-ids = true\nnode-root = \"/host\"\nnamespace = [\"shop\"]\npod = [\"checkout-0\"]\ncontainer = [\"api\"]\ncgroup = [\"/kubepods.slice\"]\n",
        )
        .unwrap();
        let config = DaemonConfig::merge(file.clone(), Overrides::default()).unwrap();
        let containers = config.containers();
        assert!(containers.ids);
        assert_eq!(containers.node.root, PathBuf::from("/host"));
        let filter = config.filter();
        assert_eq!(filter.namespaces, ["shop"]);
        assert_eq!(filter.pods, ["checkout-0"]);
        assert_eq!(filter.containers, ["api"]);
        assert_eq!(filter.cgroups, ["/kubepods.slice"]);
        // Flags win, list by list.
        let flagged = DaemonConfig::merge(
            file,
            Overrides {
                node_root: Some("/mnt/node".into()),
                pod: vec!["web-1".into()],
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(flagged.node_root, PathBuf::from("/mnt/node"));
        assert_eq!(flagged.filter().pods, ["web-1"]);
        assert_eq!(flagged.filter().namespaces, ["shop"]);
        // Defaults: names only, the node's own root.
        let defaults = DaemonConfig::merge(FileConfig::default(), Overrides::default()).unwrap();
        assert!(!defaults.containers().ids);
        assert_eq!(defaults.containers().node.root, PathBuf::from("/"));
        assert!(!defaults.filter().by_workload());
        let err = DaemonConfig::merge(
            FileConfig::parse("node-root = \"host\"").unwrap(),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("node-root:"), "{err}");
    }

    #[test]
    fn example_config_is_valid_and_complete() {
        let text = include_str!("../../../deploy/tcptrace.toml");
        let file = FileConfig::parse(text).unwrap();
        assert!(file.listen.is_some() && file.top_peers.is_some() && file.refresh.is_some());
        assert!(file.container_ids.is_some() && file.node_root.is_some());
        assert!(file.namespace.is_some() && file.pod.is_some());
        assert!(file.container.is_some() && file.cgroup.is_some());
        DaemonConfig::merge(file, Overrides::default()).unwrap();
    }
}
