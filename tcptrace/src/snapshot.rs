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

use crate::proc_fds::{self, FdHolder};

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
    pub holders: Vec<FdHolder>,
}

/// Every TCP socket at one moment, with owners.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub sockets: Vec<ExistingSocket>,
    /// Network namespace the dump was taken in.
    pub netns: u32,
    by_tuple: HashMap<(SocketAddr, SocketAddr), usize>,
}

impl Snapshot {
    /// Dumps the sockets and finds their holders.
    pub fn take() -> Result<Self> {
        let mut sockets = dump(AF_INET)?;
        sockets.extend(dump(AF_INET6)?);
        let holders = proc_fds::socket_holders();
        for socket in &mut sockets {
            if socket.inode != 0 {
                socket.holders = holders.get(&socket.inode).cloned().unwrap_or_default();
            }
        }
        Ok(Self::from_sockets(
            sockets,
            proc_fds::netns_inode("self").unwrap_or(0),
        ))
    }

    #[must_use]
    pub fn from_sockets(sockets: Vec<ExistingSocket>, netns: u32) -> Self {
        let by_tuple = sockets
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.local, s.remote), i))
            .collect();
        Self {
            sockets,
            netns,
            by_tuple,
        }
    }

    /// Keeps only the sockets `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(&ExistingSocket) -> bool) {
        let sockets = std::mem::take(&mut self.sockets)
            .into_iter()
            .filter(|s| keep(s))
            .collect();
        *self = Self::from_sockets(sockets, self.netns);
    }

    /// The socket with these endpoints, if it existed at snapshot time.
    #[must_use]
    pub fn find(&self, local: SocketAddr, remote: SocketAddr) -> Option<&ExistingSocket> {
        self.by_tuple
            .get(&(local, remote))
            .map(|&i| &self.sockets[i])
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

fn dump(family: u8) -> Result<Vec<ExistingSocket>> {
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

    let mut sockets = Vec::new();
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
                        holders: Vec::new(),
                    });
                }
                NetlinkPayload::Done(_) => return Ok(sockets),
                NetlinkPayload::Error(err) => bail!("sock_diag dump failed: {err:?}"),
                _ => {}
            }
        }
    }
}
