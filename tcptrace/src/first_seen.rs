//! When each live connection was first listed by a socket dump. Summary
//! mode (the daemon) hears of a socket only when it closes, so the age of a
//! connection that lives on is known from the dumps alone: it is at least
//! the time since the first dump that listed it (the daemon dumps every
//! refresh). Bounded by the live ESTABLISHED sockets: those no longer
//! listed are forgotten at each dump.

use std::net::SocketAddr;

use tcptrace_common::TcpState;

use crate::{snapshot::Snapshot, FastMap};

/// (network namespace, local, remote).
type Endpoints = (u32, SocketAddr, SocketAddr);

#[derive(Default)]
pub struct FirstSeen {
    since: FastMap<Endpoints, u64>,
}

impl FirstSeen {
    /// Takes the ESTABLISHED sockets of a dump made at `now_ns`.
    pub fn update(&mut self, dump: &Snapshot, now_ns: u64) {
        let mut since = FastMap::default();
        for socket in dump
            .sockets
            .iter()
            .filter(|s| s.state == TcpState::Established)
        {
            let key = (socket.netns, socket.local, socket.remote);
            let first = self.since.get(&key).copied().unwrap_or(now_ns);
            since.insert(key, first);
        }
        self.since = since;
    }

    /// When the socket was first listed, if it was.
    #[must_use]
    pub fn get(&self, netns: u32, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
        self.since.get(&(netns, local, remote)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::ExistingSocket;

    fn dump(remotes: &[&str]) -> Snapshot {
        Snapshot {
            sockets: remotes
                .iter()
                .map(|remote| ExistingSocket {
                    netns: 1,
                    state: TcpState::Established,
                    local: "10.0.0.1:40000".parse().unwrap(),
                    remote: remote.parse().unwrap(),
                    inode: 0,
                    uid: 0,
                    holders: crate::proc_fds::Holders::new(),
                    activity: None,
                })
                .collect(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn keeps_the_first_listing_and_forgets_the_gone() {
        let local: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let a: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.3:80".parse().unwrap();
        let mut seen = FirstSeen::default();
        seen.update(&dump(&["10.0.0.2:80"]), 10);
        seen.update(&dump(&["10.0.0.2:80", "10.0.0.3:80"]), 20);
        assert_eq!(seen.get(1, local, a), Some(10));
        assert_eq!(seen.get(1, local, b), Some(20));
        seen.update(&dump(&["10.0.0.3:80"]), 30);
        assert_eq!(seen.get(1, local, a), None, "closed: forgotten");
        assert_eq!(seen.get(1, local, b), Some(20));
    }
}
