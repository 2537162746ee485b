//! Every network namespace with TCP sockets: a pod's sockets live in its
//! own namespace, which a `sock_diag` dump from tcptrace's namespace never
//! sees. Namespaces are found through `/proc/*/ns/net` (one per process)
//! and `/run/netns/*` (named ones, which may hold sockets without any
//! process), and each gets a `sock_diag` socket opened inside it once, by
//! the [`opener`] helper, and kept while the namespace exists, with its
//! `ip_local_port_range` sysctl (read again at every refresh).

pub mod opener;

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    os::unix::fs::MetadataExt,
    path::PathBuf,
};

use anyhow::{Context, Result};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

use self::opener::{Opened, Opener};
use crate::{port_range::PortRange, proc_fds::netns_inode};

/// A network namespace: its inode (`net->ns.inum`, what the kernel
/// programs record with each socket) and a path that opens it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub inode: u32,
    pub path: PathBuf,
}

/// The namespaces present now, tcptrace's own first, each once.
#[must_use]
pub fn list() -> Vec<Namespace> {
    let own = netns_inode("self");
    let mut found: BTreeMap<u32, PathBuf> = BTreeMap::new();
    let named = fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path());
    let processes = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|entry| entry.path().join("ns/net"));
    for path in named.chain(processes) {
        // A process that exited, or one we may not inspect: skipped.
        let Ok(inode) = fs::metadata(&path).map(|m| m.ino()) else {
            continue;
        };
        let Ok(inode) = u32::try_from(inode) else {
            continue;
        };
        if Some(inode) != own {
            found.entry(inode).or_insert(path);
        }
    }
    own.map(|inode| Namespace {
        inode,
        path: PathBuf::from("/proc/self/ns/net"),
    })
    .into_iter()
    .chain(
        found
            .into_iter()
            .map(|(inode, path)| Namespace { inode, path }),
    )
    .collect()
}

/// A socket bound and connected to the kernel, ready for dump requests.
fn connected(mut socket: Socket) -> Result<Socket> {
    socket.bind_auto().context("binding a sock_diag socket")?;
    socket
        .connect(&netlink_sys::SocketAddr::new(0, 0))
        .context("connecting a sock_diag socket")?;
    Ok(socket)
}

/// A `sock_diag` socket per namespace, opened once and kept while the
/// namespace exists (a kept socket also keeps its namespace alive, so the
/// sockets of namespaces that disappeared are closed at each refresh).
pub struct DiagSockets {
    opener: Result<Opener, String>,
    open: HashMap<u32, Opened>,
}

/// One namespace of a refresh.
pub struct Reached<'a> {
    pub netns: u32,
    pub socket: &'a mut Socket,
    /// Its `ip_local_port_range` now; `None` when unreadable.
    pub port_range: Option<PortRange>,
}

/// The namespaces of one refresh: a socket for each that could be opened,
/// and why the others could not.
pub struct Reachable<'a> {
    pub namespaces: Vec<Reached<'a>>,
    pub unreachable: Vec<String>,
}

impl DiagSockets {
    /// Starts the opener helper; without it (it could not start) only
    /// tcptrace's own namespace is dumped, and every refresh says why.
    #[must_use]
    pub fn start() -> Self {
        Self {
            opener: Opener::spawn().map_err(|err| format!("{err:#}")),
            open: HashMap::new(),
        }
    }

    /// Closes the socket of `netns` (its dump failed); the next refresh
    /// opens a new one.
    pub fn forget(&mut self, netns: u32) {
        self.open.remove(&netns);
    }

    /// Without the helper: tcptrace's own namespace only (pipelines fed by
    /// hand, which never dump).
    #[must_use]
    pub fn own_only() -> Self {
        Self {
            opener: Err("not started (a pipeline without a probe)".to_owned()),
            open: HashMap::new(),
        }
    }

    /// One socket per namespace present now.
    pub fn refresh(&mut self) -> Reachable<'_> {
        let present = list();
        self.open
            .retain(|inode, _| present.iter().any(|ns| ns.inode == *inode));
        let own = netns_inode("self");
        let mut unreachable = Vec::new();
        for namespace in &present {
            if self.open.contains_key(&namespace.inode) {
                continue;
            }
            let opened = if Some(namespace.inode) == own {
                Socket::new(NETLINK_SOCK_DIAG)
                    .context("opening a sock_diag netlink socket")
                    .map(|socket| Opened {
                        socket,
                        port_range: PortRange::open_sysctl().ok(),
                    })
            } else {
                match &self.opener {
                    Ok(opener) => opener.open(namespace.inode, &namespace.path),
                    Err(why) => Err(anyhow::anyhow!("no namespace opener: {why}")),
                }
            };
            let connected = opened.and_then(|opened| {
                Ok(Opened {
                    socket: connected(opened.socket)?,
                    port_range: opened.port_range,
                })
            });
            match connected {
                Ok(opened) => {
                    self.open.insert(namespace.inode, opened);
                }
                Err(err) => unreachable.push(format!(
                    "network namespace {} ({}): {err:#}",
                    namespace.inode,
                    namespace.path.display()
                )),
            }
        }
        let mut namespaces: Vec<Reached> = self
            .open
            .iter_mut()
            .map(|(inode, opened)| Reached {
                netns: *inode,
                socket: &mut opened.socket,
                port_range: opened.port_range.as_ref().and_then(PortRange::read),
            })
            .collect();
        // Own namespace first, then by inode: a stable order.
        namespaces.sort_by_key(|reached| (Some(reached.netns) != own, reached.netns));
        Reachable {
            namespaces,
            unreachable,
        }
    }
}
