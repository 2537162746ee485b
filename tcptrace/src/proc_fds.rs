//! Which process holds which socket: a scan of `/proc/*/fd` for
//! `socket:[INODE]` links, as `ss -p` does. Processes may exit or deny
//! access mid-scan; those are skipped, never fatal.

use std::{fs, sync::Arc};

use smallvec::SmallVec;

/// One file descriptor that refers to a socket.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FdHolder {
    pub pid: u32,
    pub fd: u32,
    /// Shared by every fd of the process: a host with 100k sockets has far
    /// fewer processes.
    pub comm: Arc<str>,
}

/// The holders of one socket: almost always exactly one, kept inline so a
/// dump of 100k sockets does not make 100k small allocations.
pub type Holders = SmallVec<[FdHolder; 1]>;

/// Every socket fd of every process, sorted by socket inode: a flat list
/// rather than a map, as it is built once per dump and then only searched.
#[derive(Debug, Default)]
pub struct SocketHolders {
    by_inode: Vec<(u64, FdHolder)>,
}

impl SocketHolders {
    /// Scans `/proc/*/fd`.
    #[must_use]
    pub fn scan() -> Self {
        let mut by_inode = Vec::new();
        let Ok(entries) = fs::read_dir("/proc") else {
            return Self::default();
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
                continue; // exited, or not ours to read
            };
            let mut comm: Option<Arc<str>> = None;
            for fd in fds.flatten() {
                let Some(number) = fd.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                let Ok(target) = fs::read_link(fd.path()) else {
                    continue;
                };
                let Some(inode) = socket_inode(&target.to_string_lossy()) else {
                    continue;
                };
                let comm = Arc::clone(comm.get_or_insert_with(|| Arc::from(process_comm(pid))));
                by_inode.push((
                    inode,
                    FdHolder {
                        pid,
                        fd: number,
                        comm,
                    },
                ));
            }
        }
        by_inode.sort_unstable_by_key(|(inode, holder)| (*inode, holder.pid, holder.fd));
        Self { by_inode }
    }

    /// Every (process, fd) holding the socket with this inode.
    #[must_use]
    pub fn of(&self, inode: u64) -> Holders {
        let start = self.by_inode.partition_point(|(i, _)| *i < inode);
        self.by_inode[start..]
            .iter()
            .take_while(|(i, _)| *i == inode)
            .map(|(_, holder)| holder.clone())
            .collect()
    }
}

/// `socket:[12345]` → 12345.
#[must_use]
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The process's `comm`, or `?` when it is gone.
#[must_use]
pub fn process_comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map_or_else(|_| "?".to_owned(), |s| s.trim_end_matches('\n').to_owned())
}

/// Inode number of a process's network namespace (`/proc/PID/ns/net`).
#[must_use]
pub fn netns_inode(pid: &str) -> Option<u32> {
    let link = fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    link.to_str()?
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_socket_links() {
        assert_eq!(socket_inode("socket:[4026]"), Some(4026));
        assert_eq!(socket_inode("pipe:[4026]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn finds_our_own_socket() {
        use std::os::unix::fs::MetadataExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let inode = fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino();
        let mine = SocketHolders::scan().of(inode);
        assert!(mine
            .iter()
            .any(|h| h.pid == std::process::id() && h.fd == fd.cast_unsigned()));
    }
}
