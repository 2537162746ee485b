//! Sockets that existed before tracing started: a `sock_diag` netlink dump
//! of every TCP socket (IPv4 and IPv6, all states) in every network
//! namespace (see `netns`), joined with the `/proc` fd scan for owners.

use std::{collections::HashMap, net::SocketAddr};

use anyhow::{bail, Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{nlas::Nla, ExtensionFlags, InetRequest, SocketId, StateFlags, Timer},
    SockDiagMessage,
};
use netlink_sys::Socket;
use tcptrace_common::TcpState;

use crate::{
    netns::DiagSockets,
    port_range::PortRange,
    proc_fds::{self, Holders, SocketHolders},
};

/// One socket from the dump.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ExistingSocket {
    /// The network namespace it lives in (its inode, as the kernel
    /// programs record it).
    pub netns: u32,
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// 0 for `TIME_WAIT` and request sockets, which have no file.
    pub inode: u64,
    pub uid: u32,
    /// Processes and fds holding it (empty when none or unreadable).
    pub holders: Holders,
    /// Its traffic and timers, for an ESTABLISHED socket.
    pub activity: Option<Activity>,
}

/// What the kernel says of an ESTABLISHED socket's traffic: `tcp_info`'s
/// last send and receive times and the timer armed (`ss -tio` shows the
/// same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Activity {
    /// Since data last went either way, in milliseconds (since the
    /// handshake when none ever did).
    pub idle_ms: u32,
    /// Keepalive is armed: milliseconds until its next probe. `None` when
    /// another timer runs (data in flight) or none does: keepalive is off.
    pub keepalive_in_ms: Option<u32>,
}

/// Every TCP socket at one moment, with owners. Kept lean: the daemon takes
/// one every refresh, and a host may have 100k sockets.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub sockets: Vec<ExistingSocket>,
    /// tcptrace's own network namespace.
    pub netns: u32,
    /// Network namespaces with sockets: tcptrace's own and those of
    /// containers and pods.
    pub namespaces: usize,
    /// Namespaces that could not be dumped, with why: their sockets are
    /// missing from this snapshot.
    pub unreachable: Vec<String>,
    /// Each dumped namespace's `ip_local_port_range` at the dump.
    pub port_ranges: HashMap<u32, PortRange>,
}

impl Snapshot {
    /// Dumps the sockets of every namespace and finds their holders (socket
    /// inodes are unique across namespaces).
    pub fn take(diag: &mut DiagSockets) -> Result<Self> {
        // Sized up front: growing a vector of 100k sockets by doubling
        // would hold two copies at once.
        let mut sockets = Vec::with_capacity(expected_sockets());
        let own = proc_fds::netns_inode("self").unwrap_or(0);
        let reachable = diag.refresh();
        let mut namespaces = 0;
        let mut unreachable = reachable.unreachable;
        let mut broken = Vec::new();
        let mut port_ranges = HashMap::new();
        for reached in reachable.namespaces {
            let (netns, socket) = (reached.netns, reached.socket);
            let dumped = dump(socket, AF_INET, netns, &mut sockets)
                .and_then(|()| dump(socket, AF_INET6, netns, &mut sockets));
            match dumped {
                Ok(()) => {
                    namespaces += 1;
                    if let Some(range) = reached.port_range {
                        port_ranges.insert(netns, range);
                    }
                }
                Err(err) if netns == own => return Err(err),
                Err(err) => {
                    unreachable.push(format!("network namespace {netns}: {err:#}"));
                    broken.push(netns);
                }
            }
        }
        // A dump that failed half-way may leave replies behind: such a
        // socket is opened afresh next time.
        for netns in broken {
            diag.forget(netns);
        }
        let holders = SocketHolders::scan();
        for socket in &mut sockets {
            if socket.inode != 0 {
                socket.holders = holders.of(socket.inode);
            }
        }
        let mut snapshot = Self::from_sockets(sockets, own);
        snapshot.namespaces = namespaces;
        snapshot.unreachable = unreachable;
        snapshot.port_ranges = port_ranges;
        Ok(snapshot)
    }

    /// Sockets from elsewhere than a dump (tests, hand-fed pipelines):
    /// every namespace is taken to have the kernel's default port range.
    #[must_use]
    pub fn from_sockets(sockets: Vec<ExistingSocket>, netns: u32) -> Self {
        Self {
            sockets,
            netns,
            namespaces: 1,
            unreachable: Vec::new(),
            port_ranges: HashMap::new(),
        }
    }

    /// The `ip_local_port_range` of namespace `netns` at the dump; the
    /// kernel's default when it could not be read (the sysctl file of a
    /// namespace is opened beside its `sock_diag` socket).
    #[must_use]
    pub fn port_range(&self, netns: u32) -> PortRange {
        self.port_ranges
            .get(&netns)
            .copied()
            .unwrap_or(PortRange::DEFAULT)
    }

    /// Keeps only the sockets `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(&ExistingSocket) -> bool) {
        self.sockets.retain(keep);
    }

    /// A copy with only the sockets `keep` accepts.
    #[must_use]
    pub fn filtered(&self, keep: impl Fn(&ExistingSocket) -> bool) -> Self {
        Self {
            sockets: self.sockets.iter().filter(|s| keep(s)).cloned().collect(),
            netns: self.netns,
            namespaces: self.namespaces,
            unreachable: self.unreachable.clone(),
            port_ranges: self.port_ranges.clone(),
        }
    }

    /// Count per state, for the session header.
    #[must_use]
    pub fn count_by_state(&self) -> Vec<(TcpState, usize)> {
        let mut counts: HashMap<TcpState, usize> = HashMap::new();
        for socket in &self.sockets {
            *counts.entry(socket.state).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort();
        counts
    }
}

/// How many TCP sockets this network namespace has, from
/// `/proc/net/sockstat{,6}` (in use plus `TIME_WAIT`), with room for some
/// born during the dump; 0 when unreadable.
fn expected_sockets() -> usize {
    let count = |path: &str, key: &str| -> usize {
        let Ok(text) = std::fs::read_to_string(path) else {
            return 0;
        };
        let Some(line) = text.lines().find_map(|l| l.strip_prefix(key)) else {
            return 0;
        };
        // "inuse 100800 orphan 0 tw 50003 alloc 100805 mem 3"
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields
            .chunks(2)
            .filter(|pair| matches!(pair[0], "inuse" | "tw"))
            .filter_map(|pair| pair.get(1)?.parse::<usize>().ok())
            .sum()
    };
    let sockets = count("/proc/net/sockstat", "TCP:") + count("/proc/net/sockstat6", "TCP6:");
    sockets + sockets / 16
}

/// An ESTABLISHED socket's activity from its `tcp_info` and timer.
fn activity(timer: Option<&Timer>, nlas: &[Nla]) -> Option<Activity> {
    let info = nlas.iter().find_map(|nla| match nla {
        Nla::TcpInfo(info) => Some(info),
        _ => None,
    })?;
    Some(Activity {
        idle_ms: info.last_data_sent.min(info.last_data_recv),
        keepalive_in_ms: match timer {
            Some(Timer::KeepAlive(expires)) => {
                Some(u32::try_from(expires.as_millis()).unwrap_or(u32::MAX))
            }
            _ => None,
        },
    })
}

/// Appends every socket of `family` in namespace `netns` (whose
/// `sock_diag` socket is `socket`) to `sockets`.
fn dump(
    socket: &mut Socket,
    family: u8,
    netns: u32,
    sockets: &mut Vec<ExistingSocket>,
) -> Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            // tcp_info: when data last went each way (idle connections).
            extensions: ExtensionFlags::INFO,
            states: StateFlags::all(),
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .context("sending the sock_diag dump request")?;

    let mut receive = vec![0u8; 64 * 1024];
    loop {
        let size = socket
            .recv(&mut &mut receive[..], 0)
            .context("reading the sock_diag dump")?;
        let mut offset = 0;
        while offset < size {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&receive[offset..size])
                .context("decoding a sock_diag message")?;
            let length = message.header.length as usize;
            if length == 0 {
                break;
            }
            offset += length;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    let h = &response.header;
                    let Some(state) = TcpState::from_raw(i32::from(h.state)) else {
                        continue;
                    };
                    let id = &h.socket_id;
                    let activity = (state == TcpState::Established)
                        .then(|| activity(h.timer.as_ref(), &response.nlas))
                        .flatten();
                    sockets.push(ExistingSocket {
                        netns,
                        state,
                        local: SocketAddr::new(id.source_address, id.source_port),
                        remote: SocketAddr::new(id.destination_address, id.destination_port),
                        inode: u64::from(h.inode),
                        uid: h.uid,
                        holders: Holders::new(),
                        activity,
                    });
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(err) => bail!("sock_diag dump failed: {err:?}"),
                _ => {}
            }
        }
    }
}
