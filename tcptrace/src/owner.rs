//! Who owns the socket an event is about: the kernel's record first, the
//! pre-trace snapshot for sockets born before tcptrace started.

use std::{borrow::Cow, net::SocketAddr};

use tcptrace_common::{TcpState, OWNER_FROM_ACCEPT, OWNER_FROM_LISTENER};

use crate::{
    event::{comm_str, TcpEvent},
    proc_fds::FdHolder,
    snapshot::Snapshot,
    FastMap, FastSet,
};

/// How the owner was learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerSource {
    /// Seen calling `connect()` or `listen()` on this socket.
    Syscall,
    /// Inherited from the listener that accepted this connection.
    Listener,
    /// The process that accepted this connection (`accept()`).
    Accept,
    /// Found holding the socket in the snapshot taken at start.
    Snapshot,
}

impl OwnerSource {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Syscall => "syscall",
            Self::Listener => "listener",
            Self::Accept => "accept",
            Self::Snapshot => "snapshot",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner<'a> {
    pub pid: u32,
    pub comm: Cow<'a, str>,
    pub source: OwnerSource,
}

/// Who held each socket that existed when tracing started: the owner of
/// sockets the kernel saw born before it was watching. Only sockets with a
/// holder are kept, and each is forgotten when it closes, so a host that
/// started with 100k sockets does not pay for them for the daemon's life.
#[derive(Debug)]
pub struct StartOwners {
    /// By (network namespace, local, remote): pods reuse addresses
    /// (127.0.0.1 in every one).
    /// Looked up at every close: ahash (randomly keyed, as `SipHash` is, and
    /// several times faster).
    by_tuple: FastMap<(u32, SocketAddr, SocketAddr), FdHolder>,
    /// The sockets in `CLOSE_WAIT` at the start: their age in that state
    /// is at least the session's, if no event says more.
    close_wait: FastSet<(u32, SocketAddr, SocketAddr)>,
    /// Kernel time (`CLOCK_MONOTONIC`) by which the listing was complete:
    /// a socket the kernel saw born later is not in it (`u64::MAX` when
    /// unknown, as in a replay: then every close is looked up).
    listed_ns: u64,
}

impl Default for StartOwners {
    fn default() -> Self {
        Self {
            by_tuple: FastMap::default(),
            close_wait: FastSet::default(),
            listed_ns: u64::MAX,
        }
    }
}

impl StartOwners {
    /// None, made without seeding a hasher (which `default` does): what
    /// stands in while the pipeline lends its start owners out.
    pub const NONE: Self = Self {
        by_tuple: FastMap::with_hasher(ahash::RandomState::with_seeds(0, 0, 0, 0)),
        close_wait: FastSet::with_hasher(ahash::RandomState::with_seeds(0, 0, 0, 0)),
        listed_ns: u64::MAX,
    };

    #[must_use]
    pub fn of(snapshot: &Snapshot) -> Self {
        let by_tuple = snapshot
            .sockets
            .iter()
            .filter_map(|s| Some(((s.netns, s.local, s.remote), s.holders.first()?.clone())))
            .collect();
        let close_wait = snapshot
            .sockets
            .iter()
            .filter(|s| s.state == TcpState::CloseWait)
            .map(|s| (s.netns, s.local, s.remote))
            .collect();
        Self {
            by_tuple,
            close_wait,
            listed_ns: u64::MAX,
        }
    }

    /// The listing was complete at kernel time `ns`.
    #[must_use]
    pub fn listed_by(mut self, ns: u64) -> Self {
        self.listed_ns = ns;
        self
    }

    /// The socket with these endpoints closed: a later one is not it.
    /// Whether the socket existed (with an owner) when tracing started.
    #[must_use]
    pub fn existed(&self, netns: u32, local: SocketAddr, remote: SocketAddr) -> bool {
        self.by_tuple.contains_key(&(netns, local, remote))
    }

    /// `created_ns` is the kernel's time of the socket's birth (0 when it
    /// was first seen mid-life): one born after the listing was never in
    /// it, and costs no lookup (this runs at every close).
    pub fn forget(&mut self, netns: u32, local: SocketAddr, remote: SocketAddr, created_ns: u64) {
        if created_ns > self.listed_ns {
            return;
        }
        if !self.by_tuple.is_empty() {
            self.by_tuple.remove(&(netns, local, remote));
        }
        if !self.close_wait.is_empty() {
            self.close_wait.remove(&(netns, local, remote));
        }
    }

    /// Whether the socket was in `CLOSE_WAIT` when tracing started.
    #[must_use]
    pub fn was_close_wait(&self, netns: u32, local: SocketAddr, remote: SocketAddr) -> bool {
        self.close_wait.contains(&(netns, local, remote))
    }
}

/// The owner of the event's socket, if anyone knows it.
#[must_use]
pub fn resolve<'a>(event: &'a TcpEvent, start: &'a StartOwners) -> Option<Owner<'a>> {
    if let Some(task) = event.owner() {
        // Kernel data is input: an owner without a source flag is taken as
        // recorded in a system call, the only other way the kernel sets it.
        let source = if event.sock.flags & OWNER_FROM_ACCEPT != 0 {
            OwnerSource::Accept
        } else if event.sock.flags & OWNER_FROM_LISTENER != 0 {
            OwnerSource::Listener
        } else {
            OwnerSource::Syscall
        };
        return Some(Owner {
            pid: task.tgid,
            comm: comm_str(&task.comm),
            source,
        });
    }
    let holder = start
        .by_tuple
        .get(&(event.sock.netns, event.local, event.remote))?;
    Some(Owner {
        pid: holder.pid,
        comm: Cow::Borrowed(&holder.comm),
        source: OwnerSource::Snapshot,
    })
}

#[cfg(test)]
mod tests {
    use tcptrace_common::{Task, TcpState};

    use super::*;
    use crate::{event::synthetic::Conn, snapshot::ExistingSocket};

    #[test]
    fn start_owners_name_holders_until_the_socket_closes() {
        let (local, remote) = ("10.0.0.1:40000", "10.0.0.2:443");
        let holder = FdHolder {
            pid: 42,
            fd: 7,
            comm: "old-client".into(),
        };
        let socket = |local: &str, holders: &[FdHolder]| ExistingSocket {
            netns: 0,
            state: TcpState::Established,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            inode: 1,
            uid: 0,
            holders: holders.iter().cloned().collect(),
            activity: None,
        };
        let snapshot = Snapshot::from_sockets(
            vec![
                socket(local, std::slice::from_ref(&holder)),
                // Held by nobody (e.g. TIME_WAIT): not worth keeping.
                socket("10.0.0.1:40001", &[]),
            ],
            1,
        );
        let mut start = StartOwners::of(&snapshot).listed_by(1_000);
        assert_eq!(start.by_tuple.len(), 1);

        let mut conn = Conn::active(1, Task::NOBODY, local, remote);
        conn.sock.flags = 0;
        let event = conn.state(1, TcpState::Established, TcpState::FinWait1);
        let owner = resolve(&event, &start).expect("the snapshot knows the holder");
        assert_eq!(
            (owner.pid, &*owner.comm, owner.source),
            (42, "old-client", OwnerSource::Snapshot)
        );

        // The same endpoints in another namespace (another pod) are
        // another socket.
        let mut elsewhere = event;
        elsewhere.sock.netns = 7;
        assert_eq!(resolve(&elsewhere, &start), None);

        // A socket the kernel saw born after the listing is not in it:
        // its close is not looked up.
        start.forget(event.sock.netns, event.local, event.remote, 1_001);
        assert_eq!(start.by_tuple.len(), 1);
        // One born before (or first seen mid-life, 0) may be.
        start.forget(event.sock.netns, event.local, event.remote, 1_000);
        assert!(start.by_tuple.is_empty());
        assert_eq!(resolve(&event, &start), None);
    }
}
