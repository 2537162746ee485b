//! cgroup id → cgroup path on the cgroup-v2 mount.
//!
//! The id the kernel programs record (`bpf_get_current_cgroup_id()`) is
//! the id of the cgroup's kernfs node, and kernfs hands out file handles
//! made of that id: `open_by_handle_at` with a `FILEID_KERNFS` handle opens
//! the directory of one id directly, the way systemd's
//! `cg_cgroupid_open` does, so a cgroup created a moment ago is found at
//! once. It needs `CAP_DAC_READ_SEARCH`, which the daemon keeps after
//! attaching. Without it, the tree is walked (its inode numbers are the
//! ids on 64-bit kernels since 5.5; before, the id also carried a
//! generation in its high half) at most once per interval.

use std::{
    collections::HashMap,
    fs::{self, File},
    hash::BuildHasher,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

/// Directories visited per walk, so a huge tree cannot stall the daemon.
pub const WALK_LIMIT: usize = 100_000;

/// The cgroup-v2 hierarchy as this process sees it.
pub struct Cgroup2 {
    root: PathBuf,
    /// The mount's root, held open for `open_by_handle_at`.
    dir: File,
}

/// Where cgroup v2 is mounted according to a mounts table
/// (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
#[must_use]
pub fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
}

/// The cgroup-v2 id of process `pid` now (the inode of its cgroup's
/// directory, what `bpf_get_current_cgroup_id()` returns in its system
/// calls): for sockets whose birth the kernel programs did not see, such
/// as the listeners of servers that started before tcptrace. `None` when
/// the process is gone or has no cgroup-v2 path. `root` is the cgroup2
/// mount (`cgroup2_mount`).
#[must_use]
pub fn cgroup_id_of_pid(root: &Path, pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = super::proc_cgroup::unified(&text)?;
    std::fs::metadata(root.join(path.trim_start_matches('/')))
        .ok()
        .map(|m| m.ino())
}

/// Whether any cgroup-v1 hierarchy is mounted (hybrid and v1-only hosts).
#[must_use]
pub fn v1_mounted(mounts: &str) -> bool {
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("cgroup"))
}

/// `struct file_handle` with kernfs's 8-byte payload, the node id.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// `FILEID_KERNFS` from `include/linux/exportfs.h`.
const FILEID_KERNFS: i32 = 0xfe;

impl Cgroup2 {
    /// The hierarchy mounted at `root`, if it can be opened.
    #[must_use]
    pub fn at(root: PathBuf) -> Option<Self> {
        let dir = File::open(&root).ok()?;
        Some(Self { root, dir })
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of cgroup `id`, relative to the hierarchy (`/a/b`), by
    /// file handle. Fails with `ESTALE` for a cgroup that is gone (or, on
    /// a filesystem other than cgroupfs, was never one), `EPERM` without
    /// `CAP_DAC_READ_SEARCH`.
    pub fn path_of(&self, id: u64) -> io::Result<String> {
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id,
        };
        // SAFETY: `handle` is a valid `struct file_handle` whose
        // `handle_bytes` matches the payload that follows it, and lives
        // across the call; the mount fd is open for as long as `self`.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                self.dir.as_raw_fd(),
                &raw mut handle,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new file descriptor that nothing
        // else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let target = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        self.relative(&target)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// `/sys/fs/cgroup/a/b` → `/a/b`; `None` outside the mount or deleted.
    fn relative(&self, absolute: &Path) -> Option<String> {
        let text = absolute.to_str()?;
        if text.ends_with(" (deleted)") {
            return None;
        }
        let rest = absolute.strip_prefix(&self.root).ok()?;
        Some(format!("/{}", rest.to_str()?))
    }

    /// The id of the cgroup at `path` (relative to the hierarchy).
    #[must_use]
    pub fn id_of(&self, path: &str) -> Option<u64> {
        fs::metadata(self.root.join(path.trim_start_matches('/')))
            .ok()
            .map(|m| m.ino())
    }

    /// Every cgroup's path by inode, up to `WALK_LIMIT` directories.
    #[must_use]
    pub fn walk(&self) -> HashMap<u64, String> {
        let mut found = HashMap::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            if found.len() >= WALK_LIMIT {
                break;
            }
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            if let Some(path) = self.relative(&dir) {
                found.insert(meta.ino(), path);
            }
            if let Ok(entries) = fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        found
    }

    /// A process in the subtree at `path`, skipping the nested kubelet's
    /// trees: one of a kind node's own processes, whose `/proc/PID/root`
    /// is the node's filesystem.
    #[must_use]
    pub fn process_in(&self, path: &str) -> Option<u32> {
        let mut queue =
            std::collections::VecDeque::from([self.root.join(path.trim_start_matches('/'))]);
        let mut visited = 0;
        while let Some(dir) = queue.pop_front() {
            visited += 1;
            if visited > 256 {
                return None;
            }
            if let Some(pid) = fs::read_to_string(dir.join("cgroup.procs"))
                .ok()
                .and_then(|t| t.lines().find_map(|l| l.trim().parse().ok()))
            {
                return Some(pid);
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            queue.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter(|e| {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        !name.starts_with("kubelet") && !name.starts_with("kubepods")
                    })
                    .map(|e| e.path()),
            );
        }
        None
    }
}

/// Looks `id` up in a walk's result: by inode, then by the low half (the
/// id of kernels before 5.5 carries a generation in the high half).
#[must_use]
pub fn in_walk<S: BuildHasher>(walked: &HashMap<u64, String, S>, id: u64) -> Option<&String> {
    walked
        .get(&id)
        .or_else(|| walked.get(&(id & u64::from(u32::MAX))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::testdir::TestDir;

    const HYBRID: &str = "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n\
        cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
        cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0\n\
        cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";

    #[test]
    fn mounts_of_each_kind_of_host() {
        assert_eq!(
            cgroup2_mount(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert!(v1_mounted(HYBRID));
        let v2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n";
        assert_eq!(cgroup2_mount(v2), Some(PathBuf::from("/sys/fs/cgroup")));
        assert!(!v1_mounted(v2));
        let v1_only = "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";
        assert_eq!(cgroup2_mount(v1_only), None);
        assert!(v1_mounted(v1_only));
    }

    #[test]
    fn walk_and_nested_processes_on_a_tree() {
        let dir = TestDir::new("lookup-walk");
        let node = "/system.slice/docker-n.scope";
        dir.dir(&format!("{node}/kubelet.slice/kubelet-kubepods.slice"));
        dir.file(
            &format!("{node}/kubelet.slice/kubelet-kubepods.slice/cgroup.procs"),
            "77\n",
        );
        dir.file(&format!("{node}/init.scope/cgroup.procs"), "4242\n");
        dir.file(&format!("{node}/cgroup.procs"), "");
        let cgroups = Cgroup2::at(dir.path().to_owned()).unwrap();
        let walked = cgroups.walk();
        let id = cgroups.id_of(&format!("{node}/init.scope")).unwrap();
        assert_eq!(
            in_walk(&walked, id).map(String::as_str),
            Some("/system.slice/docker-n.scope/init.scope")
        );
        assert_eq!(
            in_walk(&walked, cgroups.id_of("/").unwrap()).map(String::as_str),
            Some("/")
        );
        assert_eq!(cgroups.process_in(node), Some(4242));
        assert_eq!(cgroups.process_in("/missing"), None);
        // Not cgroupfs: handles do not resolve, and say so.
        assert!(cgroups.path_of(id).is_err());
    }

    /// The kernel's own: our cgroup's id opens by handle to our path.
    #[test]
    fn handle_lookup_on_this_machine() {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        let Some(cgroups) = cgroup2_mount(&mounts).and_then(Cgroup2::at) else {
            eprintln!("no cgroup2 mount here: handle lookup not tested");
            return;
        };
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = super::super::proc_cgroup::unified(&own).unwrap();
        let id = cgroups.id_of(path).unwrap();
        match cgroups.path_of(id) {
            Ok(found) => assert_eq!(found, path),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("no CAP_DAC_READ_SEARCH: handle lookup not tested");
            }
            Err(e) => panic!("open_by_handle_at({id}): {e}"),
        }
        assert!(cgroups.path_of(u64::MAX >> 1).is_err());
    }
}
