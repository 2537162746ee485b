//! When each live connection was first listed by a socket dump in its
//! state. Summary mode (the daemon) hears of a socket only when it closes,
//! so the age of a connection that lives on is known from the dumps alone:
//! it is at least the time since the first dump that listed it (the daemon
//! dumps every refresh). The same holds for a `CLOSE_WAIT` socket whose
//! entry into that state was never seen (its event was lost). Bounded by
//! the live ESTABLISHED and `CLOSE_WAIT` sockets: those no longer listed
//! (or listed in another state) are forgotten at each dump.

use std::net::{IpAddr, SocketAddr};

use tcptrace_common::TcpState;

use crate::{snapshot::Snapshot, FastMap};

/// (network namespace, local, remote), packed: 40 bytes where the tuple
/// of `SocketAddr`s takes 68 (a map of 100k connections: 7.5 MB, not 11.5).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Endpoints {
    netns: u32,
    local_port: u16,
    remote_port: u16,
    /// IPv4 addresses as IPv4-mapped IPv6 ones.
    local_ip: [u8; 16],
    remote_ip: [u8; 16],
}

impl Endpoints {
    fn of(netns: u32, local: SocketAddr, remote: SocketAddr) -> Self {
        let ip = |address: SocketAddr| match address.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        Self {
            netns,
            local_port: local.port(),
            remote_port: remote.port(),
            local_ip: ip(local),
            remote_ip: ip(remote),
        }
    }
}

#[derive(Default)]
pub struct FirstSeen {
    since: FastMap<Endpoints, Listed>,
    /// Dumps taken so far (wrapping): which one last listed an entry.
    dumps: u32,
}

#[derive(Clone, Copy)]
struct Listed {
    state: TcpState,
    first_ns: u64,
    dump: u32,
}

impl FirstSeen {
    /// Takes the ESTABLISHED sockets of a dump made at `now_ns`. Updated
    /// in place: a second map built beside the first doubled this one's
    /// memory at every refresh (11 MB each with 100k connections).
    pub fn update(&mut self, dump: &Snapshot, now_ns: u64) {
        self.dumps = self.dumps.wrapping_add(1);
        let this_dump = self.dumps;
        let listed_now = || {
            dump.sockets
                .iter()
                .filter(|s| matches!(s.state, TcpState::Established | TcpState::CloseWait))
        };
        // Sized once: growing a table of 100k entries holds the old one
        // beside the new.
        self.since
            .reserve(listed_now().count().saturating_sub(self.since.len()));
        for socket in listed_now() {
            let listed = self
                .since
                .entry(Endpoints::of(socket.netns, socket.local, socket.remote))
                .or_insert(Listed {
                    state: socket.state,
                    first_ns: now_ns,
                    dump: this_dump,
                });
            // Listed in another state before: a new listing.
            if listed.state != socket.state {
                listed.state = socket.state;
                listed.first_ns = now_ns;
            }
            listed.dump = this_dump;
        }
        self.since.retain(|_, listed| listed.dump == this_dump);
    }

    /// When the socket was first listed in `state`, if it was.
    #[must_use]
    pub fn get(
        &self,
        netns: u32,
        local: SocketAddr,
        remote: SocketAddr,
        state: TcpState,
    ) -> Option<u64> {
        self.since
            .get(&Endpoints::of(netns, local, remote))
            .filter(|listed| listed.state == state)
            .map(|listed| listed.first_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::ExistingSocket;

    fn dump(remotes: &[&str]) -> Snapshot {
        dump_in(TcpState::Established, remotes)
    }

    fn dump_in(state: TcpState, remotes: &[&str]) -> Snapshot {
        Snapshot {
            sockets: remotes
                .iter()
                .map(|remote| ExistingSocket {
                    netns: 1,
                    state,
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
        let established = TcpState::Established;
        assert_eq!(seen.get(1, local, a, established), Some(10));
        assert_eq!(seen.get(1, local, b, established), Some(20));
        seen.update(&dump(&["10.0.0.3:80"]), 30);
        assert_eq!(
            seen.get(1, local, a, established),
            None,
            "closed: forgotten"
        );
        assert_eq!(seen.get(1, local, b, established), Some(20));
    }

    #[test]
    fn a_new_state_is_listed_anew() {
        let local: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let a: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let mut seen = FirstSeen::default();
        seen.update(&dump(&["10.0.0.2:80"]), 10);
        seen.update(&dump_in(TcpState::CloseWait, &["10.0.0.2:80"]), 20);
        seen.update(&dump_in(TcpState::CloseWait, &["10.0.0.2:80"]), 30);
        assert_eq!(seen.get(1, local, a, TcpState::CloseWait), Some(20));
        assert_eq!(seen.get(1, local, a, TcpState::Established), None);
    }
}
