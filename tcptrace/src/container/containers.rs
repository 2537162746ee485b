//! The cache the daemon asks: cgroup id → labels, each id resolved once
//! (its path, then names from the node's runtime state) and remembered.
//!
//! An id is resolved when first seen: at a socket's birth
//! (`key_at_birth`, which also takes the born process's
//! `/proc/PID/cgroup` so a cgroup created a moment ago needs no search),
//! else at the first scrape that shows it (`labels`, which opens the id by
//! file handle, or walks the tree at most once per interval). Either way
//! no scrape shows a known container unlabelled for lack of a walk.
//!
//! Where the cgroup-v2 id does not tell containers apart — hybrid hosts
//! whose runtime uses the cgroupfs driver (the v2 tree then shows only the
//! runtime's service), v1-only hosts (every task in the v2 root) — the
//! born process's v1 path does, and `key_at_birth` hands back a key of its
//! own for it (top bit set: real ids never reach it) for the socket's
//! series to carry instead of the shared id.

use std::{
    collections::{hash_map::DefaultHasher, HashMap},
    fs,
    hash::{Hash, Hasher},
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use super::{
    cache::Bounded,
    config::ContainerConfig,
    labels::ContainerLabels,
    layout::{self, CgroupIdentity},
    lookup::{self, Cgroup2},
    proc_cgroup,
};

/// Keys made from v1 paths carry this bit; cgroup ids (inode numbers, and
/// before Linux 5.5 a small generation in the high half) never do.
pub const V1_KEY: u64 = 1 << 63;

/// What `labels` lends for an unknown key.
static UNKNOWN: LazyLock<Arc<ContainerLabels>> = LazyLock::new(|| Arc::new(ContainerLabels::EMPTY));

/// How long the key found for a process at one birth serves its next
/// births (saving a `/proc` read per connection on hosts that need it).
const BIRTH_TTL: Duration = Duration::from_secs(5);

/// How long (kernel time of the births) the last answer of `key_at_birth`
/// serves the next births of the same process and cgroup without asking
/// the caches and the clock: a clock read and two cache lookups per
/// connection were 6% of the daemon's time under churn. Shorter than every
/// cache's own time to live.
const RECENT_ANSWER_NS: u64 = 1_000_000_000;

/// The last answer of `key_at_birth`.
#[derive(Clone, Copy)]
struct RecentBirth {
    pid: u32,
    cgroup_id: u64,
    key: u64,
    /// The kernel time of the birth it was found for.
    at_ns: u64,
}

/// How `open_by_handle_at` says it cannot be used here (as opposed to
/// `ESTALE`, no such cgroup).
const REFUSED: [i32; 5] = [
    libc::EPERM,
    libc::EACCES,
    libc::EINVAL,
    libc::EOPNOTSUPP,
    libc::ENOSYS,
];

struct Entry {
    /// Shared: a session's output thread holds them with the events it
    /// has yet to write.
    labels: Arc<ContainerLabels>,
    /// The path was found (else a hint from `/proc` may still find it).
    found: bool,
    /// The path names a container, lxc container or pod.
    workload: bool,
}

pub struct Containers {
    config: ContainerConfig,
    cgroups: Option<Cgroup2>,
    /// cgroup v1 is mounted: a v2 cgroup that names no workload may hold
    /// several.
    v1: bool,
    /// Whether ids open by handle here: unknown until the first answer.
    handles: Option<bool>,
    cache: Bounded<u64, Entry>,
    /// The last walk's inode → path, when handles are refused.
    walked: HashMap<u64, String>,
    last_walk: Option<Instant>,
    v1_paths: Bounded<u64, String>,
    /// (pid, cgroup id) → key, for `BIRTH_TTL`.
    births: Bounded<(u32, u64), u64>,
    /// The last answer of `key_at_birth` (`RECENT_ANSWER_NS`).
    recent_birth: Option<RecentBirth>,
    /// `labels_at`'s last clock reading, and the kernel time it was for.
    clock_read: Option<(u64, Instant)>,
}

impl Default for Containers {
    fn default() -> Self {
        Self::new(ContainerConfig::default())
    }
}

impl Containers {
    #[must_use]
    pub fn new(config: ContainerConfig) -> Self {
        let mounts = fs::read_to_string(config.proc.join("self/mounts")).unwrap_or_default();
        let cgroups = config
            .cgroup2
            .clone()
            .or_else(|| lookup::cgroup2_mount(&mounts))
            .and_then(Cgroup2::at);
        Self {
            cgroups,
            v1: lookup::v1_mounted(&mounts),
            handles: None,
            cache: Bounded::new(config.capacity),
            walked: HashMap::new(),
            last_walk: None,
            v1_paths: Bounded::new(config.capacity),
            births: Bounded::new(config.capacity),
            recent_birth: None,
            clock_read: None,
            config,
        }
    }

    /// Names as a recording made elsewhere gives them (key, labels, v1
    /// path): nothing of this machine is looked up, an unknown key stays
    /// unnamed.
    #[must_use]
    pub fn recorded(cgroups: Vec<(u64, ContainerLabels, Option<String>)>) -> Self {
        let config = ContainerConfig {
            capacity: cgroups.len().max(1),
            // Never read: no key is resolved here (no cgroup mount).
            proc: "/nonexistent/proc".into(),
            ..ContainerConfig::default()
        };
        let mut containers = Self {
            cgroups: None,
            v1: false,
            handles: Some(false),
            cache: Bounded::new(config.capacity),
            walked: HashMap::new(),
            last_walk: None,
            v1_paths: Bounded::new(config.capacity),
            births: Bounded::new(1),
            recent_birth: None,
            clock_read: None,
            config,
        };
        for (key, labels, v1_path) in cgroups {
            if let Some(path) = v1_path {
                containers.v1_paths.insert(key, path, None);
            }
            // `workload` is asked only at births and by the kernel filter,
            // neither of which a replay has.
            let entry = Entry {
                labels: Arc::new(labels),
                found: true,
                workload: false,
            };
            containers.cache.insert(key, entry, None);
        }
        containers
    }

    #[must_use]
    pub fn config(&self) -> &ContainerConfig {
        &self.config
    }

    /// Cgroups (and v1 keys) remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The labels of a cgroup id, or of a key `key_at_birth` returned;
    /// empty while unknown (looked up again after `retry_after`).
    pub fn labels(&mut self, key: u64) -> &ContainerLabels {
        self.labels_then(key, Instant::now())
    }

    /// `labels`, for an event at kernel time `at_ns`: events within
    /// `RECENT_ANSWER_NS` of kernel time of the last clock reading here
    /// take it as theirs (a clock read per event was 3% of `trace --json`
    /// under churn; an entry may outlive its expiry by that much).
    pub fn labels_at(&mut self, key: u64, at_ns: u64) -> &Arc<ContainerLabels> {
        let now = match self.clock_read {
            Some((read_at_ns, now)) if at_ns.wrapping_sub(read_at_ns) < RECENT_ANSWER_NS => now,
            _ => {
                let now = Instant::now();
                self.clock_read = Some((at_ns, now));
                now
            }
        };
        self.labels_then(key, now)
    }

    fn labels_then(&mut self, key: u64, now: Instant) -> &Arc<ContainerLabels> {
        if key == 0 {
            return &UNKNOWN;
        }
        if !self.cache.holds(&key, now) {
            let (entry, expires) = if key & V1_KEY == 0 {
                self.resolve_id(key, None, now)
            } else {
                let path = self.v1_paths.get(&key, now).cloned();
                self.resolve_path(path.as_deref(), now)
            };
            self.cache.insert(key, entry, expires);
        }
        self.cache.get(&key, now).map_or(&UNKNOWN, |e| &e.labels)
    }

    /// The cgroup-v1 path a key `key_at_birth` made stands for (`None`
    /// for cgroup ids, and for v1 keys no longer remembered).
    pub fn v1_path(&mut self, key: u64) -> Option<&str> {
        if key & V1_KEY == 0 {
            return None;
        }
        self.v1_paths.get(&key, Instant::now()).map(String::as_str)
    }

    /// Whether sockets born in cgroup `cgroup_id` may get keys of their
    /// own from their owners' v1 paths (`key_at_birth`): v1 is mounted and
    /// the v2 cgroup itself names no workload.
    pub fn may_split_by_v1(&mut self, cgroup_id: u64) -> bool {
        self.v1
            && !self
                .cache
                .get(&cgroup_id, Instant::now())
                .is_some_and(|entry| entry.workload)
    }

    /// The key a socket born in `cgroup_id` to process `pid` should carry:
    /// `cgroup_id` itself, resolved now if new (with the process's own
    /// `/proc/PID/cgroup` as the path), or a v1 key where the v2 cgroup
    /// does not tell containers apart. Cheap for a known id.
    ///
    /// `birth_ns` is the birth's kernel time (0 when there is none): the
    /// births of one process within `RECENT_ANSWER_NS` of the last one
    /// asked take its answer.
    pub fn key_at_birth(&mut self, cgroup_id: u64, pid: u32, birth_ns: u64) -> u64 {
        if let Some(recent) = self.recent_birth {
            if birth_ns != 0
                && recent.pid == pid
                && recent.cgroup_id == cgroup_id
                && birth_ns.wrapping_sub(recent.at_ns) < RECENT_ANSWER_NS
            {
                return recent.key;
            }
        }
        let key = self.find_key_at_birth(cgroup_id, pid);
        if birth_ns != 0 {
            self.recent_birth = Some(RecentBirth {
                pid,
                cgroup_id,
                key,
                at_ns: birth_ns,
            });
        }
        key
    }

    fn find_key_at_birth(&mut self, cgroup_id: u64, pid: u32) -> u64 {
        let now = Instant::now();
        if let Some(entry) = self.cache.get(&cgroup_id, now) {
            if entry.workload || (entry.found && !self.v1) {
                return cgroup_id;
            }
        }
        if let Some(&key) = self.births.get(&(pid, cgroup_id), now) {
            return key;
        }
        let text = fs::read_to_string(self.config.proc.join(pid.to_string()).join("cgroup"))
            .unwrap_or_default();
        let key = self.key_of(cgroup_id, &text, now);
        self.births
            .insert((pid, cgroup_id), key, Some(now + BIRTH_TTL));
        key
    }

    /// A live process's labels (the socket dump's owners), through the
    /// same cache.
    pub fn labels_of_pid(&mut self, pid: u32) -> ContainerLabels {
        let Ok(text) = fs::read_to_string(self.config.proc.join(pid.to_string()).join("cgroup"))
        else {
            return ContainerLabels::EMPTY;
        };
        let id = proc_cgroup::unified(&text)
            .and_then(|path| self.cgroups.as_ref()?.id_of(path))
            .unwrap_or(0);
        let key = self.key_of(id, &text, Instant::now());
        self.labels(key).clone()
    }

    fn key_of(&mut self, cgroup_id: u64, text: &str, now: Instant) -> u64 {
        if cgroup_id != 0 {
            let known = self.cache.get(&cgroup_id, now).is_some_and(|e| e.found);
            if !known {
                let (entry, expires) = self.resolve_id(cgroup_id, proc_cgroup::unified(text), now);
                self.cache.insert(cgroup_id, entry, expires);
            }
            if self.cache.get(&cgroup_id, now).is_some_and(|e| e.workload) {
                return cgroup_id;
            }
        }
        let Some((path, identity)) = proc_cgroup::v1(text).filter(|(_, i)| i.is_workload()) else {
            return cgroup_id;
        };
        let key = v1_key(path);
        if !self.cache.holds(&key, now) {
            self.v1_paths.insert(key, path.to_owned(), None);
            let (entry, expires) = self.resolve_identity(&identity, now);
            self.cache.insert(key, entry, expires);
        }
        key
    }

    /// The entry of a v2 id, from `hint` when it is that cgroup's path.
    fn resolve_id(
        &mut self,
        id: u64,
        hint: Option<&str>,
        now: Instant,
    ) -> (Entry, Option<Instant>) {
        let hinted = hint.filter(|path| {
            self.cgroups
                .as_ref()
                .and_then(|c| c.id_of(path))
                .is_some_and(|ino| ino == id || ino == id & u64::from(u32::MAX))
        });
        let path = match hinted {
            Some(path) => Some(path.to_owned()),
            None => self.find_path(id, now),
        };
        self.resolve_path(path.as_deref(), now)
    }

    fn find_path(&mut self, id: u64, now: Instant) -> Option<String> {
        let cgroups = self.cgroups.as_ref()?;
        if self.handles != Some(false) {
            match cgroups.path_of(id) {
                Ok(path) => {
                    self.handles = Some(true);
                    return Some(path);
                }
                // No capability, or not cgroupfs: walk from now on.
                Err(e) if REFUSED.contains(&e.raw_os_error().unwrap_or(0)) => {
                    self.handles = Some(false);
                }
                // Gone (or never was), and handles are known to work: a walk
                // would not find it either.
                Err(_) if self.handles == Some(true) => return None,
                Err(_) => {}
            }
        }
        if let Some(path) = lookup::in_walk(&self.walked, id) {
            return Some(path.clone());
        }
        let due = self
            .last_walk
            .is_none_or(|t| now.duration_since(t) >= self.config.walk_interval);
        if !due {
            return None;
        }
        self.last_walk = Some(now);
        self.walked = cgroups.walk();
        lookup::in_walk(&self.walked, id).cloned()
    }

    fn resolve_path(&self, path: Option<&str>, now: Instant) -> (Entry, Option<Instant>) {
        match path {
            Some(path) => self.resolve_identity(&layout::parse(path), now),
            None => (
                Entry {
                    labels: Arc::clone(&UNKNOWN),
                    found: false,
                    workload: false,
                },
                Some(now + self.config.retry_after),
            ),
        }
    }

    /// Names from the node (or, for a workload nested in a kind node,
    /// from the node container's filesystem); complete entries never
    /// expire, since a cgroup's identity never changes.
    fn resolve_identity(
        &self,
        identity: &CgroupIdentity,
        now: Instant,
    ) -> (Entry, Option<Instant>) {
        let node = &self.config.node;
        let mut names = node.names(identity);
        if names.is_none() {
            if let (Some(outer), Some(cgroups)) = (&identity.outer, &self.cgroups) {
                if let Some(pid) = cgroups.process_in(outer) {
                    let root = self.config.proc.join(pid.to_string()).join("root");
                    names = node.under(root).names(identity);
                }
            }
        }
        let complete = !identity.is_workload()
            || names
                .as_ref()
                .is_some_and(|n| identity.pod_uid.is_none() || !n.pod.is_empty());
        let entry = Entry {
            labels: Arc::new(ContainerLabels::new(
                identity,
                names.as_ref(),
                self.config.ids,
            )),
            found: true,
            workload: identity.is_workload(),
        };
        (entry, (!complete).then(|| now + self.config.retry_after))
    }
}

fn v1_key(path: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    path.hash(&mut hasher);
    V1_KEY | hasher.finish()
}
