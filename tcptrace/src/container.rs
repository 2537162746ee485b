//! Container attribution: cgroup v2 id → cgroup path → container id,
//! Kubernetes pod UID and systemd unit.
//!
//! The kernel programs record `bpf_get_current_cgroup_id()`, the inode
//! number of the task's cgroup v2 directory. Paths are found by walking the
//! cgroup2 mount once per unknown id (rate-limited), never per event.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Labels describing where a process runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ContainerLabels {
    /// Container id (first 12 hex digits), or empty.
    pub container: String,
    /// Kubernetes pod UID, or empty.
    pub pod: String,
    /// systemd unit (`nginx.service`), or empty.
    pub unit: String,
}

/// Parses a cgroup path as written by systemd, Docker, containerd, CRI-O
/// and the kubelet (both cgroupfs and systemd drivers).
#[must_use]
#[expect(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "systemd unit suffixes in cgroup paths are lower case, and case-sensitive"
)]
pub fn labels_of_path(path: &str) -> ContainerLabels {
    let mut labels = ContainerLabels::default();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if let Some(uid) = pod_uid(part) {
            labels.pod = uid;
        } else if let Some(id) = container_id(part) {
            id[..12].clone_into(&mut labels.container);
        } else if part.ends_with(".service")
            || part.ends_with(".scope") && labels.container.is_empty()
        {
            part.clone_into(&mut labels.unit);
        }
    }
    if !labels.container.is_empty() && labels.unit.ends_with(".scope") {
        labels.unit.clear();
    }
    labels
}

/// `pod<uid>` or `kubepods-burstable-pod<uid_with_underscores>.slice`.
fn pod_uid(part: &str) -> Option<String> {
    let rest = &part[part.rfind("pod")? + 3..];
    let uid = rest
        .strip_suffix(".slice")
        .unwrap_or(rest)
        .replace('_', "-");
    let looks_like_uid = uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    looks_like_uid.then_some(uid)
}

/// `docker-<64 hex>.scope`, `cri-containerd-<64 hex>.scope`,
/// `crio-<64 hex>.scope` or a bare 64-hex directory.
fn container_id(part: &str) -> Option<&str> {
    let trimmed = part.strip_suffix(".scope").unwrap_or(part);
    let id = trimmed.rsplit('-').next()?;
    (id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` or, on hybrid hosts,
/// `/sys/fs/cgroup/unified`).
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
}

/// cgroup id → labels, filled by walking the cgroup2 tree.
pub struct Containers {
    root: Option<PathBuf>,
    by_id: HashMap<u64, ContainerLabels>,
    last_walk: Option<Instant>,
}

/// Walks at most this often, however many unknown ids show up.
const WALK_INTERVAL: Duration = Duration::from_secs(10);
/// Directories visited per walk, so a huge tree cannot stall the daemon.
const WALK_LIMIT: usize = 100_000;

impl Default for Containers {
    fn default() -> Self {
        Self {
            root: cgroup2_root(),
            by_id: HashMap::new(),
            last_walk: None,
        }
    }
}

impl Containers {
    /// The labels of a cgroup id; empty when unknown (and a walk is due).
    pub fn labels(&mut self, cgroup_id: u64) -> ContainerLabels {
        if cgroup_id == 0 {
            return ContainerLabels::default();
        }
        if !self.by_id.contains_key(&cgroup_id) && self.walk_due() {
            self.walk();
        }
        self.by_id.get(&cgroup_id).cloned().unwrap_or_default()
    }

    fn walk_due(&self) -> bool {
        self.last_walk.is_none_or(|t| t.elapsed() >= WALK_INTERVAL)
    }

    fn walk(&mut self) {
        self.last_walk = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut stack = vec![root.clone()];
        let mut visited = 0;
        while let Some(dir) = stack.pop() {
            visited += 1;
            if visited > WALK_LIMIT {
                break;
            }
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            let relative = dir.strip_prefix(&root).unwrap_or(Path::new(""));
            self.by_id
                .entry(meta.ino())
                .or_insert_with(|| labels_of_path(&format!("/{}", relative.display())));
            if let Ok(entries) = fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c6a0e9b7d4c2e8a5f6b1d0c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e";

    #[test]
    fn kubernetes_systemd_driver() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/cri-containerd-{ID}.scope"
        );
        let labels = labels_of_path(&path);
        assert_eq!(labels.pod, "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901");
        assert_eq!(labels.container, &ID[..12]);
        assert_eq!(labels.unit, "");
    }

    #[test]
    fn kubernetes_cgroupfs_driver_and_docker() {
        let labels = labels_of_path(&format!(
            "/kubepods/besteffort/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/{ID}"
        ));
        assert_eq!(labels.pod, "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901");
        assert_eq!(labels.container, &ID[..12]);
        let docker = labels_of_path(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(docker.container, &ID[..12]);
        assert_eq!(docker.unit, "");
    }

    #[test]
    fn systemd_service() {
        let labels = labels_of_path("/system.slice/nginx.service");
        assert_eq!(
            labels,
            ContainerLabels {
                unit: "nginx.service".into(),
                ..Default::default()
            }
        );
        assert_eq!(labels_of_path("/"), ContainerLabels::default());
    }

    #[test]
    fn finds_our_own_cgroup_by_id() {
        let Some(root) = cgroup2_root() else {
            panic!("no cgroup2 mount on this machine");
        };
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let id = fs::metadata(root.join(path.trim_start_matches('/')))
            .unwrap()
            .ino();
        let mut containers = Containers::default();
        assert_eq!(containers.labels(id), labels_of_path(path));
        assert!(containers.by_id.contains_key(&id));
    }
}
