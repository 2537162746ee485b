//! Sockets that existed before tracing started: a `sock_diag` netlink dump
//! of every TCP socket (IPv4 and IPv6, all states) in tcptrace's network
//! namespace, joined with the `/proc` fd scan for owners.

use std::{collections::HashMap, net::SocketAddr};

use anyhow::{bail, Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NetlinkAddr};
use tcptrace_common::TcpState;

use crate::proc_fds::{self, Holders, SocketHolders};

/// One socket from the dump.
#[derive(Clone, Debug)]
pub struct ExistingSocket {
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// 0 for `TIME_WAIT` and request sockets, which have no file.
    pub inode: u64,
    pub uid: u32,
    /// Processes and fds holding it (empty when none or unreadable).
    pub holders: Holders,
}

/// Every TCP socket at one moment, with owners. Kept lean: the daemon takes
/// one every refresh, and a host may have 100k sockets.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub sockets: Vec<ExistingSocket>,
    /// Network namespace the dump was taken in.
    pub netns: u32,
}

impl Snapshot {
    /// Dumps the sockets and finds their holders.
    pub fn take() -> Result<Self> {
        // Sized up front: growing a vector of 100k sockets by doubling
        // would hold two copies at once.
        let mut sockets = Vec::with_capacity(expected_sockets());
        dump(AF_INET, &mut sockets)?;
        dump(AF_INET6, &mut sockets)?;
        let holders = SocketHolders::scan();
        for socket in &mut sockets {
            if socket.inode != 0 {
                socket.holders = holders.of(socket.inode);
            }
        }
        Ok(Self::from_sockets(
            sockets,
            proc_fds::netns_inode("self").unwrap_or(0),
        ))
    }

    #[must_use]
    pub const fn from_sockets(sockets: Vec<ExistingSocket>, netns: u32) -> Self {
        Self { sockets, netns }
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

/// Appends every socket of `family` to `sockets`.
fn dump(family: u8, sockets: &mut Vec<ExistingSocket>) -> Result<()> {
    let mut socket =
        Socket::new(NETLINK_SOCK_DIAG).context("opening a sock_diag netlink socket")?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
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
                    sockets.push(ExistingSocket {
                        state,
                        local: SocketAddr::new(id.source_address, id.source_port),
                        remote: SocketAddr::new(id.destination_address, id.destination_port),
                        inode: u64::from(h.inode),
                        uid: h.uid,
                        holders: Holders::new(),
                    });
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(err) => bail!("sock_diag dump failed: {err:?}"),
                _ => {}
            }
        }
    }
}
