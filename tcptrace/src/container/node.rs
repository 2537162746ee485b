//! Where the node keeps what its runtimes know of their containers, and
//! how a cgroup's identity becomes names from there.
//!
//! Names come from the node, never from the API server: the daemon runs
//! on every node, and asking the API server from each for each new pod
//! would load it in proportion to the cluster, need credentials, and fail
//! exactly when the control plane is in trouble. The runtime's state is
//! written before a container starts, so it is there when the first
//! socket is.

use std::path::{Path, PathBuf};

use super::{
    docker, kubelet,
    layout::{CgroupIdentity, Runtime},
    names::Names,
    oci, podman,
};

/// The state directories, relative to `root` (tests point `root` at a
/// directory built like a node's; a daemon whose pod mounts the host's
/// filesystem at `/host` sets it there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    pub root: PathBuf,
    /// containerd's v2 task directories (holding `<namespace>/<id>/`).
    pub containerd_tasks: Vec<PathBuf>,
    /// CRI-O's `overlay-containers` directories (holding
    /// `<id>/userdata/config.json`), run root first.
    pub crio_containers: Vec<PathBuf>,
    /// Docker's `containers` directory (holding `<id>/config.v2.json`).
    pub docker_containers: PathBuf,
    /// Rootful Podman's `overlay-containers` directories.
    pub podman_containers: Vec<PathBuf>,
    /// A rootless Podman user's `overlay-containers`, relative to their
    /// home.
    pub rootless_podman_containers: PathBuf,
    /// The passwd file, for those homes.
    pub passwd: PathBuf,
    /// The kubelet's `/var/log/pods`.
    pub pod_logs: PathBuf,
    /// The kubelet's `/var/log/containers`.
    pub container_logs: PathBuf,
}

impl Default for NodeState {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            containerd_tasks: vec![
                "run/containerd/io.containerd.runtime.v2.task".into(),
                // k3s and rke2 run their own containerd.
                "run/k3s/containerd/io.containerd.runtime.v2.task".into(),
            ],
            crio_containers: vec![
                "run/containers/storage/overlay-containers".into(),
                "var/lib/containers/storage/overlay-containers".into(),
            ],
            docker_containers: "var/lib/docker/containers".into(),
            podman_containers: vec!["var/lib/containers/storage/overlay-containers".into()],
            rootless_podman_containers: ".local/share/containers/storage/overlay-containers".into(),
            passwd: "etc/passwd".into(),
            pod_logs: "var/log/pods".into(),
            container_logs: "var/log/containers".into(),
        }
    }
}

impl NodeState {
    /// The same layout seen under another root: a kind node's filesystem
    /// through `/proc/<pid>/root` of one of its processes.
    #[must_use]
    pub fn under(&self, root: PathBuf) -> Self {
        Self {
            root,
            ..self.clone()
        }
    }

    fn at(&self, relative: &Path) -> PathBuf {
        self.root
            .join(relative.strip_prefix("/").unwrap_or(relative))
    }

    fn all(&self, relative: &[PathBuf]) -> Vec<PathBuf> {
        relative.iter().map(|r| self.at(r)).collect()
    }

    /// The names of the workload a cgroup path identifies. `None` when
    /// nothing on the node knows it (yet): a container whose runtime has no
    /// state for it, a pod the kubelet has no directory for.
    #[must_use]
    pub fn names(&self, identity: &CgroupIdentity) -> Option<Names> {
        let mut names = match (
            &identity.runtime,
            &identity.container_id,
            &identity.lxc_name,
        ) {
            (Some(Runtime::Lxc), _, Some(name)) => Some(Names {
                container: name.clone(),
                ..Names::default()
            }),
            (Some(runtime), Some(id), _) => self.runtime_names(*runtime, id, identity.user),
            _ => None,
        };
        let Some(uid) = &identity.pod_uid else {
            return names;
        };
        if names.as_ref().is_some_and(|n| !n.pod.is_empty()) {
            return names;
        }
        // A Kubernetes workload whose runtime state is not readable: the
        // kubelet's log directories name it.
        let by_link = identity
            .container_id
            .as_deref()
            .and_then(|id| kubelet::container(&self.at(&self.container_logs), id));
        let by_pod = kubelet::pod(&self.at(&self.pod_logs), uid);
        let found = match (by_link, by_pod) {
            (Some(link), _) => Some(link),
            // The pod's only container, unless this is the pod's own cgroup.
            (None, Some(pod)) if identity.container_id.is_none() => Some(Names {
                container: String::new(),
                ..pod
            }),
            (None, pod) => pod,
        };
        if let Some(mut found) = found {
            found.pod_uid.clone_from(uid);
            names = Some(found);
        }
        names
    }

    fn runtime_names(&self, runtime: Runtime, id: &str, user: Option<u32>) -> Option<Names> {
        match runtime {
            Runtime::Containerd => self.containerd(id),
            Runtime::Crio => self.crio(id),
            Runtime::Docker => docker::names(&self.at(&self.docker_containers), id),
            Runtime::Podman => self.podman(id, user),
            Runtime::Lxc => None,
            Runtime::Unknown => self
                .containerd(id)
                .or_else(|| self.crio(id))
                .or_else(|| docker::names(&self.at(&self.docker_containers), id)),
        }
    }

    fn containerd(&self, id: &str) -> Option<Names> {
        let bundle = oci::containerd_bundle(&self.all(&self.containerd_tasks), id)?;
        Some(oci::containerd_names(&oci::annotations(&bundle)?))
    }

    fn crio(&self, id: &str) -> Option<Names> {
        let bundle = oci::crio_bundle(&self.all(&self.crio_containers), id)?;
        Some(oci::crio_names(&oci::annotations(&bundle)?))
    }

    fn podman(&self, id: &str, user: Option<u32>) -> Option<Names> {
        let dirs = match user {
            Some(uid) => {
                let home = podman::home_of(&self.at(&self.passwd), uid)?;
                vec![self.at(&home).join(&self.rootless_podman_containers)]
            }
            None => self.all(&self.podman_containers),
        };
        podman::name(&dirs, id).map(|container| Names {
            container,
            ..Names::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{
        layout::parse,
        testdir::{TestDir, CTR, UID, UID_},
    };

    fn node(dir: &TestDir) -> NodeState {
        NodeState::default().under(dir.path().to_owned())
    }

    fn pod_path(scope: &str) -> String {
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/{scope}-{CTR}.scope")
    }

    #[test]
    fn kubernetes_names_from_the_runtime_state() {
        let dir = TestDir::new("node-runtimes");
        let node = node(&dir);
        // Nothing written yet: not known.
        assert_eq!(node.names(&parse(&pod_path("cri-containerd"))), None);
        dir.file(
            &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{CTR}/config.json"),
            include_str!("fixtures/containerd-container.config.json"),
        );
        let names = node.names(&parse(&pod_path("cri-containerd"))).unwrap();
        assert_eq!(
            (
                names.namespace.as_str(),
                names.pod.as_str(),
                names.container.as_str()
            ),
            ("shop", "checkout-7d9f8b6c5-x2x9z", "api")
        );
        // The cgroupfs driver's bare id: whichever runtime has it.
        let names = node
            .names(&parse(&format!("/kubepods/burstable/pod{UID}/{CTR}")))
            .unwrap();
        assert_eq!(names.container, "api");
        let dir = TestDir::new("node-crio");
        dir.file(
            &format!("run/containers/storage/overlay-containers/{CTR}/userdata/config.json"),
            include_str!("fixtures/crio-container.config.json"),
        );
        let names = self::node(&dir).names(&parse(&pod_path("crio"))).unwrap();
        assert_eq!(
            (names.namespace.as_str(), names.container.as_str()),
            ("kube-system", "coredns")
        );
    }

    #[test]
    fn kubelet_logs_when_the_runtime_state_is_not_readable() {
        let dir = TestDir::new("node-kubelet");
        let node = node(&dir);
        dir.file(
            &format!("var/log/pods/shop_checkout-7d9f8b6c5-x2x9z_{UID}/api/0.log"),
            "",
        );
        let names = node.names(&parse(&pod_path("cri-containerd"))).unwrap();
        assert_eq!(
            names,
            Names {
                namespace: "shop".into(),
                pod: "checkout-7d9f8b6c5-x2x9z".into(),
                container: "api".into(),
                pod_uid: UID.into(),
            }
        );
        // The pod's own cgroup is no container.
        let pod = node
            .names(&parse(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
            )))
            .unwrap();
        assert_eq!(
            (pod.pod.as_str(), pod.container.as_str()),
            ("checkout-7d9f8b6c5-x2x9z", "")
        );
        // Several containers: the container's log link names it.
        dir.file(
            &format!("var/log/pods/shop_checkout-7d9f8b6c5-x2x9z_{UID}/istio-proxy/0.log"),
            "",
        );
        dir.file(
            &format!("var/log/containers/checkout-7d9f8b6c5-x2x9z_shop_istio-proxy-{CTR}.log"),
            "",
        );
        let names = node.names(&parse(&pod_path("cri-containerd"))).unwrap();
        assert_eq!(
            (names.container.as_str(), names.pod_uid.as_str()),
            ("istio-proxy", UID)
        );
    }

    #[test]
    fn docker_podman_and_lxc_outside_kubernetes() {
        let dir = TestDir::new("node-plain");
        let node = node(&dir);
        dir.file(
            &format!("var/lib/docker/containers/{CTR}/config.v2.json"),
            include_str!("fixtures/docker.config.v2.json"),
        );
        let docker = node
            .names(&parse(&format!("/system.slice/docker-{CTR}.scope")))
            .unwrap();
        assert_eq!(
            (docker.pod.as_str(), docker.container.as_str()),
            ("", "billing-db-1")
        );
        dir.file(
            "var/lib/containers/storage/overlay-containers/containers.json",
            include_str!("fixtures/podman-containers.json"),
        );
        let podman = node
            .names(&parse(&format!("/machine.slice/libpod-{CTR}.scope")))
            .unwrap();
        assert_eq!(podman.container, "grafana");
        // Rootless: the user's own storage, found through passwd.
        dir.file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        );
        let rootless =
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CTR}.scope");
        assert_eq!(node.names(&parse(&rootless)), None);
        dir.file(
            "home/alice/.local/share/containers/storage/overlay-containers/containers.json",
            include_str!("fixtures/podman-containers.json"),
        );
        assert_eq!(node.names(&parse(&rootless)).unwrap().container, "grafana");
        let lxc = node.names(&parse("/lxc.payload.web1")).unwrap();
        assert_eq!(lxc.container, "web1");
        // Host services have no names.
        assert_eq!(node.names(&parse("/system.slice/nginx.service")), None);
    }
}
