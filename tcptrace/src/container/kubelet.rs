//! The kubelet's log directories, the fallback when no runtime state is
//! readable: every pod has `/var/log/pods/<namespace>_<pod>_<uid>/
//! <container>/`, and every container a link `/var/log/containers/
//! <pod>_<namespace>_<container>-<container id>.log`. Namespaces, pod and
//! container names are DNS names, which hold no `_`, so both split
//! unambiguously.

use std::{fs, path::Path};

use super::names::Names;

/// The pod whose UID is `uid`, from its log directory's name; the
/// container's name too when the pod has a single container.
#[must_use]
pub fn pod(pod_logs: &Path, uid: &str) -> Option<Names> {
    let suffix = format!("_{uid}");
    fs::read_dir(pod_logs).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name();
        let name = name.to_str()?;
        let (namespace, pod) = name.strip_suffix(&suffix)?.split_once('_')?;
        let containers: Vec<String> = fs::read_dir(entry.path())
            .ok()?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        Some(Names {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            container: match containers.as_slice() {
                [only] => only.clone(),
                _ => String::new(),
            },
            pod_uid: uid.to_owned(),
        })
    })
}

/// A container's names from its link in `/var/log/containers` (the pod's
/// UID is not in it).
#[must_use]
pub fn container(container_logs: &Path, id: &str) -> Option<Names> {
    let suffix = format!("-{id}.log");
    fs::read_dir(container_logs)
        .ok()?
        .flatten()
        .find_map(|entry| {
            let name = entry.file_name();
            let stem = name.to_str()?.strip_suffix(&suffix)?;
            let mut fields = stem.splitn(3, '_');
            let (pod, namespace, container) = (fields.next()?, fields.next()?, fields.next()?);
            Some(Names {
                namespace: namespace.to_owned(),
                pod: pod.to_owned(),
                container: container.to_owned(),
                pod_uid: String::new(),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::testdir::{TestDir, CTR, UID};

    #[test]
    fn pod_from_its_log_directory() {
        let dir = TestDir::new("kubelet-pods");
        let logs = dir.path().join("var/log/pods");
        dir.file(
            &format!("var/log/pods/shop_checkout-7d9f8b6c5-x2x9z_{UID}/api/0.log"),
            "",
        );
        dir.file(
            "var/log/pods/kube-system_etcd-node1_8f2c1d0e9b7a6c5d4e3f2a1b0c9d8e7f/etcd/0.log",
            "",
        );
        assert_eq!(
            pod(&logs, UID),
            Some(Names {
                namespace: "shop".into(),
                pod: "checkout-7d9f8b6c5-x2x9z".into(),
                container: "api".into(),
                pod_uid: UID.into(),
            })
        );
        // Two containers: which one is not known from the pod alone.
        dir.file(
            &format!("var/log/pods/shop_checkout-7d9f8b6c5-x2x9z_{UID}/istio-proxy/0.log"),
            "",
        );
        let names = pod(&logs, UID).unwrap();
        assert_eq!(
            (names.pod.as_str(), names.container.as_str()),
            ("checkout-7d9f8b6c5-x2x9z", "")
        );
        assert_eq!(
            pod(&logs, "8f2c1d0e9b7a6c5d4e3f2a1b0c9d8e7f").unwrap().pod,
            "etcd-node1"
        );
        assert_eq!(pod(&logs, "00000000-0000-4000-8000-000000000000"), None);
    }

    #[test]
    fn container_from_its_log_link() {
        let dir = TestDir::new("kubelet-containers");
        let logs = dir.path().join("var/log/containers");
        dir.file(
            &format!("var/log/containers/checkout-7d9f8b6c5-x2x9z_shop_istio-proxy-{CTR}.log"),
            "",
        );
        assert_eq!(
            container(&logs, CTR),
            Some(Names {
                namespace: "shop".into(),
                pod: "checkout-7d9f8b6c5-x2x9z".into(),
                container: "istio-proxy".into(),
                pod_uid: String::new(),
            })
        );
        assert_eq!(container(&logs, &"0".repeat(64)), None);
    }
}
