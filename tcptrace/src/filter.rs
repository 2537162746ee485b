//! Which events a session shows: by process, command or port, and by the
//! workload the socket's owner ran in (Kubernetes namespace, pod and
//! container names, or a cgroup).
//!
//! Process and port criteria read the event. Workload criteria read the
//! cgroup key recorded with each socket at its birth (`SocketRecord::
//! cgroup`), so a socket keeps its workload after its process exits; their
//! verdict is decided once per key (`Workloads`) and then only looked up.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tcptrace_common::{filter::FILTER_VALUES, KernelFilter, TASK_COMM_LEN};

use crate::{
    container::{
        lookup::{self, Cgroup2},
        ContainerLabels, Containers, V1_KEY,
    },
    event::TcpEvent,
    owner::Owner,
    snapshot::ExistingSocket,
    table::SocketRecord,
    FastMap,
};

/// The bytes of a process name the kernel keeps (`TASK_COMM_LEN` less the
/// terminating NUL): `comm` of a longer program name is its first 15.
pub const COMM_BYTES: usize = tcptrace_common::TASK_COMM_LEN - 1;

/// `--comm` names as the kernel keeps them: a name longer than 15 bytes
/// would match nothing, so it is cut (at a character boundary) and a
/// warning says so.
#[must_use]
pub fn kernel_comms(names: Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut warnings = Vec::new();
    let names = names
        .into_iter()
        .map(|name| {
            if name.len() <= COMM_BYTES {
                return name;
            }
            let mut end = COMM_BYTES;
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            let kept = name[..end].to_owned();
            warnings.push(format!(
                "--comm {name}: the kernel keeps the first {COMM_BYTES} bytes of a process name; \
                 matching `{kept}`"
            ));
            kept
        })
        .collect();
    (names, warnings)
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub ports: Vec<u16>,
    /// Kubernetes namespaces of the socket owner's pod.
    pub namespaces: Vec<String>,
    /// Kubernetes pod names.
    pub pods: Vec<String>,
    /// Container names (in a pod, or as Docker, Podman or lxc name them).
    pub containers: Vec<String>,
    /// cgroup paths (each with the cgroups below it: v2, and v1 for the
    /// sockets keyed by their v1 path) or cgroup ids.
    pub cgroups: Vec<String>,
}

impl Filter {
    /// Whether no criterion at all is given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.by_process() && !self.by_workload() && self.ports.is_empty()
    }

    /// Whether a process criterion (pid, comm) is given.
    #[must_use]
    pub fn by_process(&self) -> bool {
        !self.pids.is_empty() || !self.comms.is_empty()
    }

    /// Whether a workload criterion (namespace, pod, container, cgroup) is
    /// given.
    #[must_use]
    pub fn by_workload(&self) -> bool {
        self.by_names() || !self.cgroups.is_empty()
    }

    fn by_names(&self) -> bool {
        !self.namespaces.is_empty() || !self.pods.is_empty() || !self.containers.is_empty()
    }

    /// Whether a workload's names pass the namespace, pod and container
    /// criteria (each given one must list the name).
    #[must_use]
    pub fn matches_names(&self, labels: &ContainerLabels) -> bool {
        let listed =
            |wanted: &[String], name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
        listed(&self.namespaces, &labels.namespace)
            && listed(&self.pods, &labels.pod)
            && listed(&self.containers, &labels.container)
    }

    /// An event passes when every given criterion matches: its owner or the
    /// task acting on the socket has one of the pids / comms, and one of its
    /// ports is listed.
    #[must_use]
    pub fn matches(&self, event: &TcpEvent, owner: Option<&Owner>) -> bool {
        // Most daemons run without one: no ports to read.
        if self.ports.is_empty() && !self.by_process() {
            return true;
        }
        let actor = || event.actor.as_ref();
        let pid_ok = || {
            self.pids.is_empty()
                || owner.is_some_and(|o| self.pids.contains(&o.pid))
                || actor().is_some_and(|a| self.pids.contains(&a.tgid))
        };
        let comm_ok = || {
            self.comms.is_empty()
                || owner.is_some_and(|o| self.comms.iter().any(|c| *c == o.comm))
                || actor().is_some_and(|a| {
                    let comm = crate::event::comm_str(&a.comm);
                    self.comms.iter().any(|c| *c == comm)
                })
        };
        // The ports first, then names only where some are given: this
        // runs for every event the daemon sees.
        self.matches_ports(event.local.port(), event.remote.port())
            && (!self.by_process() || pid_ok() && comm_ok())
    }

    /// The process criteria alone, for a task known by tgid and name.
    #[must_use]
    pub fn matches_process(&self, tgid: u32, comm: &str) -> bool {
        (self.pids.is_empty() || self.pids.contains(&tgid))
            && (self.comms.is_empty() || self.comms.iter().any(|c| c == comm))
    }

    /// The same test for a socket from a `sock_diag` dump, by its holders.
    #[must_use]
    pub fn matches_existing(&self, socket: &ExistingSocket) -> bool {
        let holders = &socket.holders;
        let pid_ok = self.pids.is_empty() || holders.iter().any(|h| self.pids.contains(&h.pid));
        let comm_ok = self.comms.is_empty()
            || holders
                .iter()
                .any(|h| self.comms.iter().any(|c| **c == *h.comm));
        pid_ok && comm_ok && self.matches_ports(socket.local.port(), socket.remote.port())
    }

    /// The same test for a traced socket, by its owner and closer, and
    /// by its workload as `workloads` decided it.
    #[must_use]
    pub fn matches_record(&self, record: &SocketRecord, workloads: &Workloads) -> bool {
        if self.by_workload() && workloads.decided(record.cgroup) != Some(true) {
            return false;
        }
        let processes = [record.owner, record.closer];
        let pid_ok = self.pids.is_empty()
            || processes
                .iter()
                .flatten()
                .any(|p| self.pids.contains(&p.pid));
        let comm_ok = self.comms.is_empty()
            || processes
                .iter()
                .flatten()
                .any(|p| self.comms.iter().any(|c| *c == p.comm()));
        pid_ok && comm_ok && self.matches_ports(record.local.port(), record.remote.port())
    }

    /// The part of the filter the kernel programs apply before sending a
    /// record or taking a stack (see `tcptrace_common::filter`). A
    /// criterion with more values than the kernel's maps hold is left to
    /// userspace; workload criteria are applied per cgroup once userspace
    /// has decided it (`FilterMaps::reject_cgroup`).
    #[must_use]
    pub fn kernel(&self) -> KernelCriteria {
        let fits = |len: usize| len > 0 && len <= FILTER_VALUES as usize;
        let mut criteria = KernelCriteria::default();
        if fits(self.pids.len()) {
            criteria.which.by_pid = 1;
            criteria.pids.clone_from(&self.pids);
        }
        if fits(self.comms.len()) {
            criteria.which.by_comm = 1;
            criteria.comms = self.comms.iter().map(|name| kernel_comm(name)).collect();
        }
        if fits(self.ports.len()) {
            criteria.which.by_port = 1;
            criteria.ports.clone_from(&self.ports);
        }
        criteria.which.by_workload = u32::from(self.by_workload());
        criteria
    }

    /// Only the port criterion (sockets without an owner, like `TIME_WAIT`).
    #[must_use]
    #[inline]
    pub fn matches_ports(&self, local: u16, remote: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&local) || self.ports.contains(&remote)
    }
}

/// What of a `Filter` the kernel programs apply: which criteria, and
/// their values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCriteria {
    pub which: KernelFilter,
    pub pids: Vec<u32>,
    pub comms: Vec<[u8; TASK_COMM_LEN]>,
    pub ports: Vec<u16>,
}

/// A process name as the kernel keeps it: at most 15 bytes (`--comm` is cut
/// so already, see `kernel_comms`), then NULs to the end.
fn kernel_comm(name: &str) -> [u8; TASK_COMM_LEN] {
    let mut comm = [0; TASK_COMM_LEN];
    let bytes = &name.as_bytes()[..name.len().min(COMM_BYTES)];
    comm[..bytes.len()].copy_from_slice(bytes);
    comm
}

/// How long a verdict that may change stands: a workload whose names
/// were not known yet, a `--cgroup` directory not made yet.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Verdicts kept at most (then forgotten all at once, and decided again).
const MAX_VERDICTS: usize = 65_536;
/// How often a `--cgroup` subtree may be walked when cgroup ids cannot be
/// opened by handle.
const WALK_INTERVAL: Duration = Duration::from_secs(10);

/// The workload criteria's verdict per cgroup key: decided at a key's
/// first sight (its names from the container cache, its place in the
/// cgroup tree) and then looked up, so a check never reads a file for a
/// key seen before.
#[derive(Default)]
pub struct Workloads {
    verdicts: FastMap<u64, Verdict>,
    /// `--cgroup` ids.
    ids: Vec<u64>,
    /// `--cgroup` paths.
    subtrees: Vec<Subtree>,
    /// The same paths as cgroup-v1 paths (relative to a hierarchy's root,
    /// `/sys/fs/cgroup/CONTROLLER` taken off), for the keys of sockets
    /// born where only v1 tells workloads apart.
    v1_prefixes: Vec<String>,
}

#[derive(Clone, Copy)]
struct Verdict {
    pass: bool,
    /// When it is to be decided again (`None`: never).
    until: Option<Instant>,
}

/// A `--cgroup` path and the cgroups under it.
struct Subtree {
    /// The directory (absolute).
    dir: PathBuf,
    /// It, opened (`None` until it exists).
    opened: Option<Cgroup2>,
    /// Whether ids open by handle here: unknown until the first answer.
    handles: Option<bool>,
    /// Its last walk, when ids do not open by handle here.
    walked: Option<(Instant, HashMap<u64, String>)>,
}

impl Workloads {
    /// The criteria of `filter`; `mount` is the cgroup-v2 mount, against
    /// which `--cgroup` paths are read (given relative to it, or under it).
    #[must_use]
    pub fn new(filter: &Filter, mount: Option<&Path>) -> Self {
        let mut ids = Vec::new();
        let mut subtrees = Vec::new();
        let mut v1_prefixes = Vec::new();
        for cgroup in &filter.cgroups {
            if let Ok(id) = cgroup.parse::<u64>() {
                ids.push(id);
                continue;
            }
            v1_prefixes.push(v1_prefix(cgroup));
            let Some(mount) = mount else {
                continue;
            };
            let path = Path::new(cgroup);
            let relative = path.strip_prefix(mount).unwrap_or(path);
            let dir = mount.join(relative.strip_prefix("/").unwrap_or(relative));
            subtrees.push(Subtree {
                opened: Cgroup2::at(dir.clone()),
                dir,
                handles: None,
                walked: None,
            });
        }
        Self {
            verdicts: FastMap::default(),
            ids,
            subtrees,
            v1_prefixes,
        }
    }

    /// The criteria of `filter` with verdicts decided elsewhere (a
    /// recording's): those keys are never judged again.
    #[must_use]
    pub fn with_verdicts(filter: &Filter, verdicts: impl IntoIterator<Item = (u64, bool)>) -> Self {
        let mut workloads = Self::new(filter, None);
        workloads.verdicts = verdicts
            .into_iter()
            .map(|(key, pass)| (key, Verdict { pass, until: None }))
            .collect();
        workloads
    }

    /// Whether the socket of cgroup `key` passes the workload criteria.
    /// Cheap for a key seen before.
    pub fn matches(&mut self, filter: &Filter, key: u64, containers: &mut Containers) -> bool {
        if let Some(verdict) = self.verdicts.get(&key) {
            if verdict.until.is_none_or(|t| Instant::now() < t) {
                return verdict.pass;
            }
        }
        let (pass, settled) = self.decide(filter, key, containers);
        if self.verdicts.len() >= MAX_VERDICTS {
            self.verdicts.clear();
        }
        let until = (!settled).then(|| Instant::now() + RETRY_AFTER);
        self.verdicts.insert(key, Verdict { pass, until });
        pass
    }

    /// The verdict on `key`, if decided (`matches` decides).
    #[must_use]
    pub fn decided(&self, key: u64) -> Option<bool> {
        self.verdicts.get(&key).map(|v| v.pass)
    }

    /// Whether `key` is decided for good against the filter.
    #[must_use]
    pub fn rejected_for_good(&self, key: u64) -> bool {
        self.verdicts
            .get(&key)
            .is_some_and(|v| !v.pass && v.until.is_none())
    }

    /// The verdict, and whether it is final.
    fn decide(&mut self, filter: &Filter, key: u64, containers: &mut Containers) -> (bool, bool) {
        if key == 0 {
            // No cgroup known: no workload to match.
            return (false, true);
        }
        let mut settled = true;
        if filter.by_names() {
            let labels = containers.labels(key);
            if !filter.matches_names(labels) {
                // Names not known (yet): the runtime may write them later.
                let unnamed = labels.namespace.is_empty()
                    && labels.pod.is_empty()
                    && labels.container.is_empty()
                    && labels.unit.is_empty();
                return (false, !unnamed);
            }
        }
        if !filter.cgroups.is_empty() {
            // Before 5.5 a cgroup id also carries a generation in its high
            // half: the directory's inode is the low half.
            let listed = self
                .ids
                .iter()
                .any(|&id| id == key || (key & V1_KEY == 0 && id == key & u64::from(u32::MAX)));
            let mut below = false;
            if key & V1_KEY != 0 {
                match containers.v1_path(key) {
                    Some(path) => {
                        below = self.v1_prefixes.iter().any(|prefix| {
                            prefix == "/"
                                || path
                                    .strip_prefix(prefix.as_str())
                                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                        });
                    }
                    None => settled = false,
                }
            }
            for subtree in &mut self.subtrees {
                match subtree.holds(key) {
                    Some(true) => below = true,
                    Some(false) => {}
                    None => settled = false,
                }
                if below {
                    break;
                }
            }
            if !listed && !below {
                return (false, settled);
            }
        }
        (true, true)
    }
}

/// A `--cgroup` path as a cgroup-v1 path: absolute, without the
/// hierarchy's mount (`/sys/fs/cgroup/memory/kubepods` is `/kubepods`)
/// and without a trailing slash.
fn v1_prefix(given: &str) -> String {
    let path = given
        .strip_prefix("/sys/fs/cgroup/")
        .and_then(|rest| rest.split_once('/').map(|(_, below)| below))
        .unwrap_or(given)
        .trim_matches('/');
    format!("/{path}")
}

impl Subtree {
    /// Whether cgroup `key` is this directory or below it; `None` when
    /// that cannot be told now (the directory does not exist yet, or a
    /// walk is not due).
    fn holds(&mut self, key: u64) -> Option<bool> {
        // Keys made from v1 paths name no v2 directory.
        if key & V1_KEY != 0 {
            return Some(false);
        }
        if self.opened.is_none() {
            self.opened = Cgroup2::at(self.dir.clone());
        }
        let opened = self.opened.as_ref()?;
        if self.handles != Some(false) {
            match opened.path_of(key) {
                Ok(_) => {
                    self.handles = Some(true);
                    return Some(true);
                }
                // Opened, elsewhere in the tree.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.handles = Some(true);
                    return Some(false);
                }
                // Gone, where handles are known to work.
                Err(_) if self.handles == Some(true) => return Some(false),
                // Not cgroupfs, or not allowed: walk from now on.
                Err(_) => self.handles = Some(false),
            }
        }
        let now = Instant::now();
        let found = |walked: &HashMap<u64, String>| lookup::in_walk(walked, key).is_some();
        if let Some((walked_at, walked)) = &self.walked {
            if found(walked) {
                return Some(true);
            }
            if now.duration_since(*walked_at) < WALK_INTERVAL {
                return None;
            }
        }
        let walked = opened.walk();
        let holds = found(&walked);
        self.walked = Some((now, walked));
        Some(holds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_gets_what_fits_and_userspace_keeps_the_rest() {
        let filter = Filter {
            pids: (1..=2000).collect(),
            comms: vec!["nginx".to_owned(), "curl".to_owned()],
            ports: vec![80, 443],
            pods: vec!["web".to_owned()],
            ..Filter::default()
        };
        let kernel = filter.kernel();
        // Too many pids for the kernel's map: it lets every pid by.
        assert_eq!((kernel.which.by_pid, kernel.pids.len()), (0, 0));
        assert_eq!(kernel.which.by_comm, 1);
        assert_eq!(&kernel.comms[1][..5], b"curl\0");
        assert_eq!(kernel.comms[1][4..], [0; 12]);
        assert_eq!(
            (kernel.which.by_port, &kernel.ports[..]),
            (1, &[80, 443][..])
        );
        assert_eq!(kernel.which.by_workload, 1);
        assert_eq!(Filter::default().kernel(), KernelCriteria::default());
        assert_eq!(Filter::default().kernel().which, KernelFilter::NONE);
        assert!(Filter::default().is_empty() && !filter.is_empty());
    }

    #[test]
    fn long_comm_names_are_cut_as_the_kernel_cuts_them() {
        let (names, warnings) = kernel_comms(vec![
            "nginx".to_owned(),
            "kube-controller-manager".to_owned(),
            "ééééééééé".to_owned(), // 18 bytes: cut at a char boundary
        ]);
        assert_eq!(names, ["nginx", "kube-controller", "ééééééé"]);
        assert_eq!(warnings.len(), 2);
        assert!(
            warnings[0].contains("matching `kube-controller`"),
            "{}",
            warnings[0]
        );
    }

    use std::fs;

    use crate::table::tests::{pod_path, FakeHost, CTR};

    fn pod_filter(pods: &[&str]) -> Filter {
        Filter {
            pods: pods.iter().map(ToString::to_string).collect(),
            ..Filter::default()
        }
    }

    #[test]
    fn names_each_given_criterion_must_list() {
        let labels = ContainerLabels {
            namespace: "shop".into(),
            pod: "checkout-0".into(),
            container: "api".into(),
            ..ContainerLabels::EMPTY
        };
        let filter = |namespaces: &[&str], pods: &[&str], containers: &[&str]| Filter {
            namespaces: namespaces.iter().map(ToString::to_string).collect(),
            pods: pods.iter().map(ToString::to_string).collect(),
            containers: containers.iter().map(ToString::to_string).collect(),
            ..Filter::default()
        };
        assert!(filter(&[], &[], &[]).matches_names(&labels));
        assert!(filter(&["shop"], &[], &[]).matches_names(&labels));
        assert!(filter(&["kube-system", "shop"], &["checkout-0"], &["api"]).matches_names(&labels));
        assert!(!filter(&["shop"], &[], &["worker"]).matches_names(&labels));
        assert!(!filter(&[], &["checkout-1"], &[]).matches_names(&ContainerLabels::EMPTY));
        assert!(filter(&["shop"], &[], &[]).by_workload() && !filter(&[], &[], &[]).by_workload());
        assert!(!Filter::default().by_process());
    }

    /// A verdict per cgroup key, decided once: asked again, it is read
    /// from memory even when nothing on disk could answer any more.
    #[test]
    fn workload_verdicts_decided_once_per_key() {
        let host = FakeHost::new("filter-names");
        let pod = host.cgroup(&pod_path());
        let service = host.cgroup("/system.slice/cron.service");
        let filter = pod_filter(&["checkout-7d9f8b6c5-x2x9z"]);
        let mut containers = host.containers();
        let mut workloads = Workloads::new(&filter, None);
        assert_eq!(workloads.decided(pod), None);
        assert!(workloads.matches(&filter, pod, &mut containers));
        assert!(!workloads.matches(&filter, service, &mut containers));
        assert!(!workloads.matches(&filter, 0, &mut containers));
        assert_eq!(workloads.decided(pod), Some(true));
        assert_eq!(workloads.decided(service), Some(false));
        // A service has names (its unit) that do not match: final.
        assert!(workloads.verdicts[&service].until.is_none());
        drop(host);
        let mut forgetful = Containers::default();
        assert!(workloads.matches(&filter, pod, &mut forgetful));
        assert!(forgetful.is_empty(), "nothing was looked up");
    }

    /// A workload whose names are not known yet is asked again later.
    #[test]
    fn unnamed_workloads_are_decided_again() {
        let host = FakeHost::new("filter-unnamed");
        let other = host.cgroup(&pod_path().replace(CTR, &"e".repeat(64)));
        let filter = pod_filter(&["checkout-7d9f8b6c5-x2x9z"]);
        let mut workloads = Workloads::new(&filter, None);
        assert!(!workloads.matches(&filter, other, &mut host.containers()));
        assert!(workloads.verdicts[&other].until.is_some());
    }

    #[test]
    fn cgroup_paths_hold_their_subtrees_ids_themselves() {
        let host = FakeHost::new("filter-cgroups");
        let pod = host.cgroup(&pod_path());
        let service = host.cgroup("/system.slice/cron.service");
        let mount = host.path().join("cgroup");
        let mut containers = host.containers();
        for given in [
            "/kubepods.slice".to_owned(),
            "kubepods.slice/".to_owned(),
            mount.join("kubepods.slice").display().to_string(),
        ] {
            let filter = Filter {
                cgroups: vec![given.clone()],
                ..Filter::default()
            };
            let mut workloads = Workloads::new(&filter, Some(&mount));
            assert!(workloads.matches(&filter, pod, &mut containers), "{given}");
            assert!(
                !workloads.matches(&filter, service, &mut containers),
                "{given}"
            );
            assert!(!workloads.matches(&filter, pod | V1_KEY, &mut containers));
        }
        let filter = Filter {
            cgroups: vec![service.to_string()],
            ..Filter::default()
        };
        let mut workloads = Workloads::new(&filter, Some(&mount));
        assert!(workloads.matches(&filter, service, &mut containers));
        assert!(!workloads.matches(&filter, pod, &mut containers));
        // Names and a cgroup: both must hold.
        let filter = Filter {
            cgroups: vec!["/kubepods.slice".into()],
            containers: vec!["worker".into()],
            ..Filter::default()
        };
        let mut workloads = Workloads::new(&filter, Some(&mount));
        assert!(!workloads.matches(&filter, pod, &mut containers));
        // A directory made after the filter: found once it exists.
        let filter = Filter {
            cgroups: vec!["/later.slice".into()],
            ..Filter::default()
        };
        let mut workloads = Workloads::new(&filter, Some(&mount));
        let later = host.cgroup("/later.slice/job.scope");
        assert!(workloads.matches(&filter, later, &mut containers));
    }

    /// The machine's own cgroup-v2 tree, where ids open by handle: a
    /// cgroup below a `--cgroup` path is found without a walk.
    #[test]
    fn cgroup_subtree_on_this_machine() {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        let Some(mount) = lookup::cgroup2_mount(&mounts) else {
            eprintln!("no cgroup2 mount: not tested");
            return;
        };
        let top = mount.join(format!("tcptrace-filter-test-{}", std::process::id()));
        let leaf = top.join("pod.slice/ctr.scope");
        if let Err(e) = fs::create_dir_all(&leaf) {
            eprintln!("cannot create cgroups here ({e}): not tested");
            return;
        }
        let id = |path: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap());
        let (leaf_id, top_id) = (id(&leaf), id(&top));
        let filter = Filter {
            cgroups: vec![top.join("pod.slice").display().to_string()],
            ..Filter::default()
        };
        let mut workloads = Workloads::new(&filter, Some(&mount));
        let mut containers = Containers::default();
        let (below, above) = (
            workloads.matches(&filter, leaf_id, &mut containers),
            workloads.matches(&filter, top_id, &mut containers),
        );
        let _ = fs::remove_dir(&leaf);
        let _ = fs::remove_dir(top.join("pod.slice"));
        let _ = fs::remove_dir(&top);
        assert!(below && !above);
    }
}
