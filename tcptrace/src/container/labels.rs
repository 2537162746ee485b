//! The labels a process's series carry: where it runs, by name.
//!
//! Names, not ids: an alert that says `namespace="shop", pod="checkout-…",
//! container="api"` needs no lookup to act on, and ids multiply series at
//! every restart. Ids are there only when asked for
//! (`ContainerConfig::ids`), for joining with other sources.

use super::{layout::CgroupIdentity, names::Names};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ContainerLabels {
    /// Kubernetes namespace; empty outside Kubernetes.
    pub namespace: String,
    /// Kubernetes pod name; empty outside Kubernetes.
    pub pod: String,
    /// The container's name: in its pod, else as Docker, Podman or lxc
    /// name it; empty for host processes and for containers whose name
    /// is not known.
    pub container: String,
    /// systemd service (`nginx.service`), only when the process runs in
    /// one rather than in a container or pod below it.
    pub unit: String,
    /// The full container id, `Some` only when ids are asked for (then
    /// empty when there is none).
    pub container_id: Option<String>,
    /// The pod UID, `Some` only when ids are asked for.
    pub pod_uid: Option<String>,
}

impl ContainerLabels {
    /// What an unknown cgroup shows.
    pub const EMPTY: Self = Self {
        namespace: String::new(),
        pod: String::new(),
        container: String::new(),
        unit: String::new(),
        container_id: None,
        pod_uid: None,
    };

    /// Labels from a cgroup's identity and the names the node gave it.
    #[must_use]
    pub fn new(identity: &CgroupIdentity, names: Option<&Names>, ids: bool) -> Self {
        let names = names.cloned().unwrap_or_default();
        let pod_uid = identity
            .pod_uid
            .clone()
            .unwrap_or_else(|| names.pod_uid.clone());
        Self {
            namespace: names.namespace,
            pod: names.pod,
            container: names.container,
            unit: identity.unit.clone().unwrap_or_default(),
            container_id: ids.then(|| identity.container_id.clone().unwrap_or_default()),
            pod_uid: ids.then_some(pod_uid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{
        layout::parse,
        testdir::{CTR, UID, UID_},
    };

    #[test]
    fn names_always_ids_when_asked() {
        let identity = parse(&format!(
            "/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CTR}.scope"
        ));
        let names = Names {
            namespace: "shop".into(),
            pod: "checkout-0".into(),
            container: "api".into(),
            pod_uid: UID.into(),
        };
        let plain = ContainerLabels::new(&identity, Some(&names), false);
        assert_eq!(
            plain,
            ContainerLabels {
                namespace: "shop".into(),
                pod: "checkout-0".into(),
                container: "api".into(),
                ..ContainerLabels::EMPTY
            }
        );
        let with_ids = ContainerLabels::new(&identity, Some(&names), true);
        assert_eq!(with_ids.container_id.as_deref(), Some(CTR));
        assert_eq!(with_ids.pod_uid.as_deref(), Some(UID));
        // A service: its unit, and empty ids when asked.
        let service = ContainerLabels::new(&parse("/system.slice/nginx.service"), None, true);
        assert_eq!(service.unit, "nginx.service");
        assert_eq!(
            (service.container_id.as_deref(), service.pod_uid.as_deref()),
            (Some(""), Some(""))
        );
        assert_eq!(ContainerLabels::default(), ContainerLabels::EMPTY);
    }
}
