//! What the node's runtime state calls a workload.

use std::collections::HashMap;

/// Names found for one container. Empty strings where the state says
/// nothing (a container run outside Kubernetes has no pod).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Names {
    pub namespace: String,
    pub pod: String,
    /// The container's name: in its pod, or as its runtime knows it
    /// (`docker run --name`, `podman run --name`, an lxc name).
    pub container: String,
    /// The pod UID as the runtime recorded it (the cgroup path may not
    /// carry it).
    pub pod_uid: String,
}

impl Names {
    /// Kubernetes names from a string map under the given keys, when the
    /// pod's name is there; `sandbox` empties the container name (the
    /// pause container runs nothing of the user's).
    #[must_use]
    pub fn kubernetes(map: &HashMap<String, String>, keys: &Keys, sandbox: bool) -> Option<Self> {
        let get = |k: &str| map.get(k).cloned().unwrap_or_default();
        let pod = get(keys.pod);
        if pod.is_empty() {
            return None;
        }
        Some(Self {
            namespace: get(keys.namespace),
            pod,
            container: if sandbox {
                String::new()
            } else {
                get(keys.container)
            },
            pod_uid: get(keys.pod_uid),
        })
    }

    /// Whether anything was found.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.namespace.is_empty()
            && self.pod.is_empty()
            && self.container.is_empty()
            && self.pod_uid.is_empty()
    }
}

/// Where a runtime writes the Kubernetes names.
pub struct Keys {
    pub namespace: &'static str,
    pub pod: &'static str,
    pub container: &'static str,
    pub pod_uid: &'static str,
}

/// The kubelet's own labels (`pkg/kubelet/types/labels.go`), which CRI-O
/// copies into its OCI annotations and cri-dockerd into Docker labels.
pub const KUBELET_KEYS: Keys = Keys {
    namespace: "io.kubernetes.pod.namespace",
    pod: "io.kubernetes.pod.name",
    container: "io.kubernetes.container.name",
    pod_uid: "io.kubernetes.pod.uid",
};
