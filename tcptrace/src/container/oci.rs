//! containerd's and CRI-O's OCI bundles: each container's `config.json`
//! carries the pod's and container's names as annotations, written before
//! the container's first process starts, so they are there by the time
//! that process opens a socket.
//!
//! - containerd: `<state>/io.containerd.runtime.v2.task/<namespace>/<id>/
//!   config.json` (namespace `k8s.io` for the CRI plugin, `moby` for
//!   Docker, `default` for nerdctl), keys from containerd's
//!   `pkg/cri/annotations` (`io.kubernetes.cri.sandbox-name`, …).
//! - CRI-O: `<runroot>/overlay-containers/<id>/userdata/config.json`, also
//!   saved under the graph root (`/var/lib/containers/storage`), keys the
//!   kubelet's labels (`io.kubernetes.pod.name`, …).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use super::{
    files::read_state,
    names::{Keys, Names, KUBELET_KEYS},
};

/// The only part of an OCI runtime spec we need.
#[derive(serde::Deserialize)]
struct Spec {
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// A bundle's annotations; `None` when there is no readable bundle.
#[must_use]
pub fn annotations(config_json: &Path) -> Option<HashMap<String, String>> {
    let text = read_state(config_json)?;
    serde_json::from_slice::<Spec>(&text)
        .ok()
        .map(|s| s.annotations)
}

const CONTAINERD_KEYS: Keys = Keys {
    namespace: "io.kubernetes.cri.sandbox-namespace",
    pod: "io.kubernetes.cri.sandbox-name",
    container: "io.kubernetes.cri.container-name",
    pod_uid: "io.kubernetes.cri.sandbox-uid",
};
const CONTAINERD_TYPE: &str = "io.kubernetes.cri.container-type";
/// nerdctl names its containers here.
const NERDCTL_NAME: &str = "nerdctl/name";
const CRIO_TYPE: &str = "io.kubernetes.cri-o.ContainerType";

/// containerd's bundle of a container, in any of its namespaces (the
/// Kubernetes one first).
#[must_use]
pub fn containerd_bundle(task_dirs: &[PathBuf], id: &str) -> Option<PathBuf> {
    task_dirs.iter().find_map(|tasks| {
        let preferred = tasks.join("k8s.io").join(id).join("config.json");
        if preferred.is_file() {
            return Some(preferred);
        }
        fs::read_dir(tasks)
            .ok()?
            .flatten()
            .map(|ns| ns.path().join(id).join("config.json"))
            .find(|p| p.is_file())
    })
}

/// Names from a containerd bundle's annotations. A bundle without them
/// (`ctr run`) is still found: its names are empty.
#[must_use]
pub fn containerd_names(annotations: &HashMap<String, String>) -> Names {
    let sandbox = annotations
        .get(CONTAINERD_TYPE)
        .is_some_and(|t| t == "sandbox");
    Names::kubernetes(annotations, &CONTAINERD_KEYS, sandbox).unwrap_or_else(|| Names {
        container: annotations.get(NERDCTL_NAME).cloned().unwrap_or_default(),
        ..Names::default()
    })
}

/// CRI-O's bundle of a container under one of its storage roots.
#[must_use]
pub fn crio_bundle(container_dirs: &[PathBuf], id: &str) -> Option<PathBuf> {
    container_dirs
        .iter()
        .map(|dir| dir.join(id).join("userdata").join("config.json"))
        .find(|p| p.is_file())
}

/// Names from a CRI-O bundle's annotations.
#[must_use]
pub fn crio_names(annotations: &HashMap<String, String>) -> Names {
    let sandbox = annotations.get(CRIO_TYPE).is_some_and(|t| t == "sandbox");
    Names::kubernetes(annotations, &KUBELET_KEYS, sandbox).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::testdir::{TestDir, CTR, SANDBOX, UID};

    #[test]
    fn containerd_container_and_sandbox() {
        let dir = TestDir::new("oci-containerd");
        let tasks = dir
            .path()
            .join("run/containerd/io.containerd.runtime.v2.task");
        dir.file(
            &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{CTR}/config.json"),
            include_str!("fixtures/containerd-container.config.json"),
        );
        dir.file(
            &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{SANDBOX}/config.json"),
            include_str!("fixtures/containerd-sandbox.config.json"),
        );
        let bundle = containerd_bundle(std::slice::from_ref(&tasks), CTR).unwrap();
        let names = containerd_names(&annotations(&bundle).unwrap());
        assert_eq!(
            names,
            Names {
                namespace: "shop".into(),
                pod: "checkout-7d9f8b6c5-x2x9z".into(),
                container: "api".into(),
                pod_uid: UID.into(),
            }
        );
        let sandbox = containerd_bundle(std::slice::from_ref(&tasks), SANDBOX).unwrap();
        let names = containerd_names(&annotations(&sandbox).unwrap());
        assert_eq!(
            (names.pod.as_str(), names.container.as_str()),
            ("checkout-7d9f8b6c5-x2x9z", "")
        );
        assert_eq!(containerd_bundle(&[tasks], "0".repeat(64).as_str()), None);
    }

    #[test]
    fn containerd_other_namespaces() {
        let dir = TestDir::new("oci-nerdctl");
        let tasks = dir.path().join("tasks");
        dir.file(
            &format!("tasks/default/{CTR}/config.json"),
            r#"{"ociVersion":"1.1.0","annotations":{"nerdctl/name":"redis"}}"#,
        );
        let bundle = containerd_bundle(&[tasks], CTR).unwrap();
        assert_eq!(
            containerd_names(&annotations(&bundle).unwrap()).container,
            "redis"
        );
    }

    #[test]
    fn crio_container_under_either_root() {
        let dir = TestDir::new("oci-crio");
        let run = dir.path().join("run/containers/storage/overlay-containers");
        let graph = dir
            .path()
            .join("var/lib/containers/storage/overlay-containers");
        dir.file(
            &format!("var/lib/containers/storage/overlay-containers/{CTR}/userdata/config.json"),
            include_str!("fixtures/crio-container.config.json"),
        );
        let bundle = crio_bundle(&[run, graph], CTR).unwrap();
        let names = crio_names(&annotations(&bundle).unwrap());
        assert_eq!(names.namespace, "kube-system");
        assert_eq!(names.pod, "coredns-5dd5756b68-qwvxh");
        assert_eq!(names.container, "coredns");
        assert_eq!(names.pod_uid, UID);
    }

    #[test]
    fn unreadable_or_foreign_json_is_no_bundle() {
        let dir = TestDir::new("oci-bad");
        dir.file("bad.json", "{not json");
        dir.file("number.json", "42");
        assert_eq!(annotations(&dir.path().join("bad.json")), None);
        assert_eq!(annotations(&dir.path().join("number.json")), None);
        assert_eq!(annotations(&dir.path().join("missing.json")), None);
    }
}
