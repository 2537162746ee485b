//! What container attribution may read, and how much it keeps.

use std::{path::PathBuf, time::Duration};

use super::node::NodeState;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Also label series with `container_id` (full) and `pod_uid`. Off by
    /// default: ids change at every restart and multiply series; names do
    /// not.
    pub ids: bool,
    /// The cgroup-v2 mount; `None`: the first in `<proc>/self/mounts`.
    pub cgroup2: Option<PathBuf>,
    /// procfs (`/proc/PID/cgroup`, `/proc/PID/root`, `/proc/self/mounts`).
    pub proc: PathBuf,
    /// Where the runtimes and the kubelet keep their state.
    pub node: NodeState,
    /// Cgroups remembered at most (least recently used go first); above
    /// the daemon's process-series bound, so a series' labels stay.
    pub capacity: usize,
    /// How long an unresolved cgroup (not found, or its runtime state not
    /// written or not readable) is shown unlabelled before it is looked up
    /// again.
    pub retry_after: Duration,
    /// How often the cgroup tree may be walked when ids cannot be opened
    /// by handle.
    pub walk_interval: Duration,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            ids: false,
            cgroup2: None,
            proc: PathBuf::from("/proc"),
            node: NodeState::default(),
            capacity: 16_384,
            retry_after: Duration::from_secs(10),
            walk_interval: Duration::from_secs(10),
        }
    }
}
