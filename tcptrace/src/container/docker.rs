//! Docker's container state: `/var/lib/docker/containers/<id>/
//! config.v2.json` holds the container's name (`"Name": "/web"`) and its
//! labels; under cri-dockerd those labels are the kubelet's
//! (`io.kubernetes.pod.name`, …), the sandbox marked by
//! `io.kubernetes.docker.type=podsandbox`.

use std::{collections::HashMap, path::Path};

use super::{
    files::read_state,
    names::{Names, KUBELET_KEYS},
};

#[derive(serde::Deserialize)]
struct State {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: Config,
}

#[derive(Default, serde::Deserialize)]
struct Config {
    #[serde(rename = "Labels", default)]
    labels: Option<HashMap<String, String>>,
}

/// The names of a Docker container, `None` when Docker has no state for
/// that id.
#[must_use]
pub fn names(containers_dir: &Path, id: &str) -> Option<Names> {
    let text = read_state(&containers_dir.join(id).join("config.v2.json"))?;
    let state: State = serde_json::from_slice(&text).ok()?;
    let labels = state.config.labels.unwrap_or_default();
    let sandbox = labels
        .get("io.kubernetes.docker.type")
        .is_some_and(|t| t == "podsandbox");
    Some(
        Names::kubernetes(&labels, &KUBELET_KEYS, sandbox).unwrap_or_else(|| Names {
            container: state.name.trim_start_matches('/').to_owned(),
            ..Names::default()
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::testdir::{TestDir, CTR, UID};

    #[test]
    fn plain_and_kubernetes_containers() {
        let dir = TestDir::new("docker");
        let containers = dir.path().join("var/lib/docker/containers");
        dir.file(
            &format!("var/lib/docker/containers/{CTR}/config.v2.json"),
            include_str!("fixtures/docker.config.v2.json"),
        );
        assert_eq!(
            names(&containers, CTR),
            Some(Names {
                container: "billing-db-1".into(),
                ..Names::default()
            })
        );
        dir.file(
            &format!("var/lib/docker/containers/{CTR}/config.v2.json"),
            include_str!("fixtures/docker-kubernetes.config.v2.json"),
        );
        assert_eq!(
            names(&containers, CTR),
            Some(Names {
                namespace: "default".into(),
                pod: "web-0".into(),
                container: "nginx".into(),
                pod_uid: UID.into(),
            })
        );
        assert_eq!(names(&containers, "0"), None);
    }
}
