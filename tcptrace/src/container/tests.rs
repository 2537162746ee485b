//! `Containers` end to end: a cgroup tree, a `/proc` and a node's runtime
//! state built in temporary directories like the real ones, and the
//! machine's own cgroup-v2 mount.

use std::{fs, os::unix::fs::MetadataExt, path::PathBuf, time::Duration};

use super::{
    testdir::{TestDir, CTR, NODE, OTHER, SANDBOX, UID, UID_},
    ContainerConfig, ContainerLabels, Containers, NodeState, V1_KEY,
};

/// A fake host: `cgroup/` (the v2 tree), `proc/`, `node/` (its files).
struct Host {
    dir: TestDir,
}

impl Host {
    fn new(name: &str) -> Self {
        let host = Self {
            dir: TestDir::new(name),
        };
        host.dir.dir("cgroup");
        host.dir.dir("proc/self");
        host.dir.dir("node");
        host
    }

    fn config(&self) -> ContainerConfig {
        ContainerConfig {
            cgroup2: Some(self.dir.path().join("cgroup")),
            proc: self.dir.path().join("proc"),
            node: NodeState::default().under(self.dir.path().join("node")),
            walk_interval: Duration::from_secs(3600),
            ..ContainerConfig::default()
        }
    }

    /// Makes a cgroup; its id is the directory's inode, as on cgroupfs.
    fn cgroup(&self, path: &str) -> u64 {
        let dir = self
            .dir
            .dir(&format!("cgroup/{}", path.trim_start_matches('/')));
        fs::metadata(dir).unwrap().ino()
    }

    fn node_file(&self, relative: &str, contents: &str) {
        self.dir.file(&format!("node/{relative}"), contents);
    }

    fn process(&self, pid: u32, cgroup: &str) {
        self.dir.file(&format!("proc/{pid}/cgroup"), cgroup);
    }

    fn containerd(&self, id: &str, config: &str) {
        self.node_file(
            &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"),
            config,
        );
    }
}

const CONTAINER: &str = include_str!("fixtures/containerd-container.config.json");

fn pod_path(id: &str) -> String {
    format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{id}.scope")
}

fn named(namespace: &str, pod: &str, container: &str) -> ContainerLabels {
    ContainerLabels {
        namespace: namespace.into(),
        pod: pod.into(),
        container: container.into(),
        ..ContainerLabels::EMPTY
    }
}

#[test]
fn kubernetes_container_by_cgroup_id() {
    let host = Host::new("e2e-k8s");
    let id = host.cgroup(&pod_path(CTR));
    let service = host.cgroup("/system.slice/nginx.service");
    host.containerd(CTR, CONTAINER);
    let mut containers = Containers::new(host.config());
    assert_eq!(
        containers.labels(id),
        &named("shop", "checkout-7d9f8b6c5-x2x9z", "api")
    );
    assert_eq!(
        containers.labels(service),
        &ContainerLabels {
            unit: "nginx.service".into(),
            ..ContainerLabels::EMPTY
        }
    );
    assert_eq!(containers.labels(0), &ContainerLabels::EMPTY);
}

/// The case: a cgroup made after the last walk. The born
/// process's `/proc/PID/cgroup` labels it at once; without it, it is
/// unlabelled until the next walk is allowed.
#[test]
fn cgroup_newer_than_the_walk_labelled_from_the_birth() {
    let host = Host::new("e2e-fresh");
    let first = host.cgroup(&pod_path(CTR));
    host.containerd(CTR, CONTAINER);
    host.containerd(OTHER, &CONTAINER.replace("\"api\"", "\"worker\""));
    let mut containers = Containers::new(host.config());
    assert_eq!(containers.labels(first).container, "api");
    let fresh = host.cgroup(&pod_path(OTHER));
    assert_eq!(
        containers.labels(fresh),
        &ContainerLabels::EMPTY,
        "walk not due yet"
    );
    host.process(4100, &format!("0::{}\n", pod_path(OTHER)));
    assert_eq!(containers.key_at_birth(fresh, 4100, 0), fresh);
    assert_eq!(containers.labels(fresh).container, "worker");
    // A path that is not that cgroup's (the process moved) is no hint.
    let third = host.cgroup("/system.slice/cron.service");
    host.process(4101, &format!("0::{}\n", pod_path(CTR)));
    assert_eq!(containers.key_at_birth(third, 4101, 0), third);
    assert_eq!(containers.labels(third), &ContainerLabels::EMPTY);
}

#[test]
fn unresolved_names_are_asked_again() {
    let host = Host::new("e2e-retry");
    let id = host.cgroup(&pod_path(CTR));
    let mut containers = Containers::new(ContainerConfig {
        retry_after: Duration::ZERO,
        ..host.config()
    });
    // The runtime has not written its state yet: nothing but the unit-less
    // emptiness, and no negative answer kept.
    assert_eq!(containers.labels(id), &ContainerLabels::EMPTY);
    host.containerd(CTR, CONTAINER);
    assert_eq!(containers.labels(id).pod, "checkout-7d9f8b6c5-x2x9z");
    // Complete answers stay, whatever the state does later.
    fs::remove_dir_all(host.dir.path().join("node/run")).unwrap();
    assert_eq!(containers.labels(id).container, "api");
}

#[test]
fn ids_only_when_asked() {
    let host = Host::new("e2e-ids");
    let id = host.cgroup(&pod_path(CTR));
    host.containerd(CTR, CONTAINER);
    let mut plain = Containers::new(host.config());
    assert_eq!(plain.labels(id).container_id, None);
    let mut with_ids = Containers::new(ContainerConfig {
        ids: true,
        ..host.config()
    });
    let labels = with_ids.labels(id);
    assert_eq!(labels.container_id.as_deref(), Some(CTR));
    assert_eq!(labels.pod_uid.as_deref(), Some(UID));
    assert!(with_ids.config().ids);
}

/// Hybrid host, runtime on the cgroupfs driver: the v2 tree holds only
/// systemd's view, every container in containerd's service. Each birth's
/// v1 path tells them apart.
#[test]
fn hybrid_cgroupfs_driver_keys_by_v1_path() {
    let host = Host::new("e2e-hybrid");
    host.dir.file(
        "proc/self/mounts",
        "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n",
    );
    let shared = host.cgroup("/system.slice/containerd.service");
    host.containerd(CTR, CONTAINER);
    host.containerd(OTHER, &CONTAINER.replace("\"api\"", "\"worker\""));
    for (pid, id) in [(200, CTR), (201, OTHER)] {
        host.process(
            pid,
            &format!(
                "5:memory:/kubepods/burstable/pod{UID}/{id}\n1:name=systemd:/system.slice/containerd.service\n0::/system.slice/containerd.service\n"
            ),
        );
    }
    host.process(
        202,
        "5:memory:/system.slice/containerd.service\n0::/system.slice/containerd.service\n",
    );
    let mut containers = Containers::new(host.config());
    let api = containers.key_at_birth(shared, 200, 0);
    let worker = containers.key_at_birth(shared, 201, 0);
    assert!(api & V1_KEY != 0 && worker & V1_KEY != 0 && api != worker);
    assert_eq!(containers.labels(api).container, "api");
    assert_eq!(containers.labels(worker).container, "worker");
    // containerd itself is the service.
    assert_eq!(containers.key_at_birth(shared, 202, 0), shared);
    // Births of one process within a second take the last answer; another
    // process in the same cgroup, or a later birth, is asked again.
    let sec = 1_000_000_000u64;
    assert_eq!(containers.key_at_birth(shared, 200, 10 * sec), api);
    assert_eq!(containers.key_at_birth(shared, 200, 10 * sec + 5), api);
    assert_eq!(containers.key_at_birth(shared, 201, 10 * sec + 6), worker);
    assert_eq!(containers.key_at_birth(shared, 202, 10 * sec + 7), shared);
    assert_eq!(containers.key_at_birth(shared, 202, 12 * sec), shared);
    assert_eq!(containers.labels(shared).unit, "containerd.service");
    // The socket dump's owners go the same way.
    assert_eq!(containers.labels_of_pid(201).container, "worker");
    // `--cgroup` finds them by their v1 paths, as written in
    // /proc/PID/cgroup or under the hierarchy's mount.
    for (given, both) in [
        ("/kubepods/burstable".to_owned(), true),
        (
            format!("/sys/fs/cgroup/memory/kubepods/burstable/pod{UID}/"),
            true,
        ),
        (format!("/kubepods/burstable/pod{UID}/{CTR}"), false),
        ("/kubepods/besteffort".to_owned(), false),
        ("/kubepods/burst".to_owned(), false),
    ] {
        let filter = crate::filter::Filter {
            cgroups: vec![given.clone()],
            ..crate::filter::Filter::default()
        };
        let mut workloads = crate::filter::Workloads::new(&filter, None);
        let (api_in, worker_in) = (
            workloads.matches(&filter, api, &mut containers),
            workloads.matches(&filter, worker, &mut containers),
        );
        assert_eq!(api_in, both || given.ends_with(CTR), "{given}");
        assert_eq!(worker_in, both, "{given}");
        assert!(
            !workloads.matches(&filter, shared, &mut containers),
            "{given}"
        );
    }
}

/// v1-only host: no cgroup-v2 mount, every task in the v2 root.
#[test]
fn v1_only_host() {
    let host = Host::new("e2e-v1");
    host.dir.file(
        "proc/self/mounts",
        "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n",
    );
    host.process(
        300,
        &format!("11:memory:/kubepods/besteffort/pod{UID}/{CTR}\n1:name=systemd:/kubepods/besteffort/pod{UID}/{CTR}\n"),
    );
    host.process(
        301,
        "11:memory:/system.slice/sshd.service\n1:name=systemd:/system.slice/sshd.service\n",
    );
    host.containerd(CTR, CONTAINER);
    let mut containers = Containers::new(ContainerConfig {
        cgroup2: None,
        ..host.config()
    });
    let key = containers.key_at_birth(1, 300, 0);
    assert_ne!(key, 1);
    assert_eq!(
        containers.labels(key),
        &named("shop", "checkout-7d9f8b6c5-x2x9z", "api")
    );
    // A host service keeps the root's id (v1 keys are for workloads).
    assert_eq!(containers.key_at_birth(1, 301, 0), 1);
    assert_eq!(containers.labels_of_pid(300).container, "api");
    assert_eq!(containers.labels_of_pid(999), ContainerLabels::EMPTY);
}

/// kind: the node is a Docker container; the pod's runtime state is in
/// the node's filesystem, reached through one of the node's processes.
#[test]
fn kind_node_state_through_the_node_process() {
    let host = Host::new("e2e-kind");
    let outer = format!("/system.slice/docker-{NODE}.scope");
    host.dir
        .file(&format!("cgroup{outer}/init.scope/cgroup.procs"), "5150\n");
    let id = host.cgroup(&format!(
        "{outer}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CTR}.scope"
    ));
    host.dir.file(
        &format!(
            "proc/5150/root/run/containerd/io.containerd.runtime.v2.task/k8s.io/{CTR}/config.json"
        ),
        CONTAINER,
    );
    let mut containers = Containers::new(host.config());
    assert_eq!(
        containers.labels(id),
        &named("shop", "checkout-7d9f8b6c5-x2x9z", "api")
    );
}

#[test]
fn sandbox_lxc_and_bound() {
    let host = Host::new("e2e-misc");
    let sandbox = host.cgroup(&pod_path(SANDBOX));
    host.containerd(
        SANDBOX,
        include_str!("fixtures/containerd-sandbox.config.json"),
    );
    let lxc = host.cgroup("/lxc.payload.web1/system.slice/nginx.service");
    let mut containers = Containers::new(ContainerConfig {
        capacity: 4,
        ..host.config()
    });
    assert_eq!(
        containers.labels(sandbox),
        &named("shop", "checkout-7d9f8b6c5-x2x9z", "")
    );
    assert_eq!(
        containers.labels(lxc),
        &ContainerLabels {
            container: "web1".into(),
            unit: "nginx.service".into(),
            ..ContainerLabels::EMPTY
        }
    );
    let ids: Vec<u64> = (0..10)
        .map(|n| host.cgroup(&format!("/system.slice/s{n}.service")))
        .collect();
    // Bounded, and an evicted id is resolved again when asked.
    let mut containers = Containers::new(ContainerConfig {
        capacity: 4,
        walk_interval: Duration::ZERO,
        ..host.config()
    });
    for id in &ids {
        containers.labels(*id);
    }
    assert!(containers.len() <= 4);
    assert_eq!(containers.labels(ids[0]).unit, "s0.service");
}

/// The machine's own cgroup-v2 mount: a cgroup created after a walk is
/// found by handle at once (where the test may create cgroups).
#[test]
fn real_cgroup_found_by_handle_after_the_walk() {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let Some(root) = super::lookup::cgroup2_mount(&mounts) else {
        eprintln!("no cgroup2 mount: not tested");
        return;
    };
    let node = TestDir::new("e2e-real-node");
    node.file(
        &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{CTR}/config.json"),
        CONTAINER,
    );
    let mut containers = Containers::new(ContainerConfig {
        node: NodeState::default().under(node.path().to_owned()),
        walk_interval: Duration::from_secs(3600),
        ..ContainerConfig::default()
    });
    // Our own cgroup, through /proc/self/cgroup like a socket owner.
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let own_path = super::proc_cgroup::unified(&own).unwrap();
    let own_id = fs::metadata(root.join(own_path.trim_start_matches('/')))
        .unwrap()
        .ino();
    let expected = ContainerLabels::new(&super::layout::parse(own_path), None, false);
    assert_eq!(containers.labels(own_id), &expected);

    let handles = super::lookup::Cgroup2::at(root.clone()).map(|c| c.path_of(own_id));
    if let Some(Err(e)) = handles {
        eprintln!("ids do not open by handle here ({e}): fresh-cgroup case not tested");
        return;
    }
    let top = root.join(format!("tcptrace-test-{}", std::process::id()));
    let leaf = top.join(pod_path(CTR).trim_start_matches('/'));
    if let Err(e) = fs::create_dir_all(&leaf) {
        eprintln!("cannot create cgroups here ({e}): fresh-cgroup case not tested");
        return;
    }
    let id = fs::metadata(&leaf).unwrap().ino();
    let labels = containers.labels(id).clone();
    // Remove bottom-up (cgroupfs refuses recursive removal).
    let mut dir: PathBuf = leaf;
    while dir.starts_with(&top) {
        let _ = fs::remove_dir(&dir);
        dir.pop();
    }
    assert_eq!(labels, named("shop", "checkout-7d9f8b6c5-x2x9z", "api"));
}
