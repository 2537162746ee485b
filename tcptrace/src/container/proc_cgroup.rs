//! `/proc/PID/cgroup`: where a process sits in every hierarchy.
//!
//! The kernel programs only see the cgroup-v2 id, which names the workload
//! on v2 hosts. On hybrid hosts the v2 tree may hold only systemd's view
//! (every cgroupfs-driver container then shares its runtime's v2 cgroup),
//! and on v1-only hosts every task is in the v2 root: there the v1 lines
//! of the process seen at a socket's birth are what tells containers
//! apart. Of those, the `name=systemd` line is the one systemd and the
//! runtimes keep in step; `memory` and `cpu` are the controllers every
//! runtime joins when systemd's is missing.

use super::layout::{self, CgroupIdentity};

/// One line: `hierarchy-id:controller-list:path`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub hierarchy: &'a str,
    /// Comma-separated; empty for the v2 line.
    pub controllers: &'a str,
    pub path: &'a str,
}

impl Line<'_> {
    /// The cgroup-v2 line (`0::/path`).
    #[must_use]
    pub fn is_unified(&self) -> bool {
        self.hierarchy == "0" && self.controllers.is_empty()
    }

    #[must_use]
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.split(',').any(|c| c == controller)
    }
}

/// The lines of a `/proc/PID/cgroup` text. Paths may hold colons (see
/// `layout`), so only the first two split.
pub fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    text.lines().filter_map(|line| {
        let mut fields = line.splitn(3, ':');
        Some(Line {
            hierarchy: fields.next()?,
            controllers: fields.next()?,
            path: fields.next()?,
        })
    })
}

/// The cgroup-v2 path, if the process has one.
#[must_use]
pub fn unified(text: &str) -> Option<&str> {
    lines(text).find(Line::is_unified).map(|l| l.path)
}

/// v1 hierarchies by how well they name a workload.
const V1_PREFERENCE: [&str; 5] = ["name=systemd", "memory", "cpu", "cpuacct", "pids"];

/// The v1 line that best names the process's workload, and its reading:
/// the first, in `V1_PREFERENCE` order, that names a container or pod;
/// else the first that names a service; else the most preferred present.
#[must_use]
pub fn v1(text: &str) -> Option<(&str, CgroupIdentity)> {
    let mut candidates: Vec<(usize, Line<'_>)> = lines(text)
        .filter(|l| !l.is_unified())
        .map(|l| {
            let rank = V1_PREFERENCE
                .iter()
                .position(|c| l.has(c))
                .unwrap_or(V1_PREFERENCE.len());
            (rank, l)
        })
        .collect();
    candidates.sort_by_key(|(rank, _)| *rank);
    let read: Vec<(&str, CgroupIdentity)> = candidates
        .into_iter()
        .map(|(_, l)| (l.path, layout::parse(l.path)))
        .collect();
    let pick = read
        .iter()
        .position(|(_, i)| i.is_workload())
        .or_else(|| read.iter().position(|(_, i)| i.unit.is_some()))
        .unwrap_or(0);
    read.into_iter().nth(pick)
}

/// What a process's lines say, all hierarchies considered: the v2 path
/// when it names a workload, else a v1 path that does, else whatever the
/// v2 (or, lacking one, the v1) path says.
#[must_use]
pub fn identity(text: &str) -> CgroupIdentity {
    let unified = unified(text).map(layout::parse);
    if let Some(u) = unified.as_ref().filter(|u| u.is_workload()) {
        return u.clone();
    }
    let v1 = v1(text).map(|(_, i)| i);
    match (unified, v1) {
        (_, Some(v)) if v.is_workload() => v,
        (Some(u), _) => u,
        (None, v) => v.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::layout::Runtime;

    const CTR: &str = "2752ea5db34c1dc718967086526c49d5f55793678e2002db3f7a3e45a4a97b2a";
    const UID: &str = "1b2c3d4e-5f60-4182-93a4-b5c6d7e8f901";

    /// A v1-only host, kubelet on the cgroupfs driver with docker.
    fn v1_only() -> String {
        format!(
            "12:pids:/kubepods/burstable/pod{UID}/{CTR}\n\
             11:memory:/kubepods/burstable/pod{UID}/{CTR}\n\
             10:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CTR}\n\
             4:net_cls,net_prio:/kubepods/burstable/pod{UID}/{CTR}\n\
             1:name=systemd:/kubepods/burstable/pod{UID}/{CTR}\n"
        )
    }

    #[test]
    fn splits_lines_keeping_colons_in_paths() {
        let text = format!(
            "0::/kubepods-pod{}.slice:cri-containerd:{CTR}\n",
            UID.replace('-', "_")
        );
        let line = lines(&text).next().unwrap();
        assert!(line.is_unified());
        assert!(line.path.ends_with(CTR));
        assert_eq!(unified(&text), Some(line.path));
        assert!(lines("garbage\n").next().is_none());
    }

    #[test]
    fn v1_only_host_picks_a_naming_controller() {
        let text = v1_only();
        let (path, identity) = v1(&text).unwrap();
        assert_eq!(path, format!("/kubepods/burstable/pod{UID}/{CTR}"));
        assert_eq!(identity.container_id.as_deref(), Some(CTR));
        assert_eq!(identity.runtime, Some(Runtime::Unknown));
        assert_eq!(unified(&text), None);
        assert_eq!(super::identity(&text), identity);
    }

    /// Hybrid host, cgroupfs driver: systemd's hierarchies put the
    /// container in its runtime's service, the controllers name it.
    #[test]
    fn hybrid_host_prefers_the_line_that_names_the_container() {
        let text = format!(
            "11:memory:/kubepods/besteffort/pod{UID}/crio-{CTR}\n\
             10:cpu,cpuacct:/kubepods/besteffort/pod{UID}/crio-{CTR}\n\
             1:name=systemd:/system.slice/crio.service\n\
             0::/system.slice/crio.service\n"
        );
        let identity = super::identity(&text);
        assert_eq!(identity.runtime, Some(Runtime::Crio));
        assert_eq!(identity.pod_uid.as_deref(), Some(UID));
        assert_eq!(identity.unit, None);
        // With the systemd driver the v2 line names it, and wins.
        let systemd = format!(
            "11:memory:/system.slice/docker-{CTR}.scope\n\
             1:name=systemd:/system.slice/docker-{CTR}.scope\n\
             0::/system.slice/docker-{CTR}.scope\n"
        );
        assert_eq!(super::identity(&systemd).runtime, Some(Runtime::Docker));
    }

    #[test]
    fn host_services_and_plain_processes() {
        let text = "11:memory:/system.slice/nginx.service\n\
                    1:name=systemd:/system.slice/nginx.service\n\
                    0::/system.slice/nginx.service\n";
        assert_eq!(identity(text).unit.as_deref(), Some("nginx.service"));
        // A v1 service line is used when there is no v2 line.
        let v1_service = "4:memory:/\n1:name=systemd:/system.slice/sshd.service\n";
        assert_eq!(identity(v1_service).unit.as_deref(), Some("sshd.service"));
        // This machine's own shape: one controller in a private group.
        let other =
            "4:memory:/process_api/f44c7d8e7c2ee7018b0ae3779aa2e6e3\n1:name=systemd:/\n0::/\n";
        assert_eq!(identity(other), CgroupIdentity::default());
        assert_eq!(identity(""), CgroupIdentity::default());
    }
}
