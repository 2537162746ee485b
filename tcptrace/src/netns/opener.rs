//! The namespace opener: a small helper process that keeps the one
//! privilege entering a network namespace needs (`CAP_SYS_ADMIN`, with
//! `CAP_SYS_PTRACE` to open other users' `/proc/PID/ns/net`), so the daemon
//! can drop it. It does one thing: given a namespace's path and inode, it
//! enters the namespace, opens a `sock_diag` netlink socket there (a
//! netlink socket belongs to the namespace it was created in, for life)
//! and the namespace's `ip_local_port_range` sysctl (a `/proc/sys/net`
//! file does too), returns to its own and passes both back
//! (`SCM_RIGHTS`). It never
//! hands out the namespace file itself, and accepts only `/proc/PID/ns/net`
//! and `/run/netns/NAME` paths.
//!
//! It is tcptrace itself, re-executed (`tcptrace netns-opener`, hidden),
//! talking over a `SOCK_SEQPACKET` pair on its stdin; it exits when the
//! parent closes its end or dies.

use std::{
    fs::File,
    io::{IoSlice, IoSliceMut},
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd},
        unix::fs::MetadataExt,
    },
    path::Path,
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context, Result};
use caps::Capability;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};
use nix::{
    cmsg_space,
    sched::{setns, CloneFlags},
    sys::socket::{
        recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
        SockFlag, SockType,
    },
};

use crate::port_range::PortRange;

/// What the opener keeps: entering namespaces, and opening other users'
/// namespace files.
const OPENER_KEEPS: [Capability; 2] = [Capability::CAP_SYS_ADMIN, Capability::CAP_SYS_PTRACE];

/// The hidden subcommand that runs [`serve`].
pub const SUBCOMMAND: &str = "netns-opener";

/// Longest request: an inode and a path.
const MAX_REQUEST: usize = 512;

/// What the opener passes back for one namespace.
pub struct Opened {
    /// A `sock_diag` socket of the namespace.
    pub socket: Socket,
    /// Its `ip_local_port_range` sysctl, when it could be opened.
    pub port_range: Option<File>,
}

/// The daemon's or session's end of the opener.
pub struct Opener {
    channel: OwnedFd,
    child: Child,
}

impl Opener {
    /// Starts the helper (before the caller drops its capabilities: the
    /// helper is born with the caller's).
    pub fn spawn() -> Result<Self> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("creating the opener's socket pair")?;
        let child = Command::new("/proc/self/exe")
            .arg(SUBCOMMAND)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the namespace opener (tcptrace netns-opener)")?;
        Ok(Self {
            channel: ours,
            child,
        })
    }

    /// A `sock_diag` socket inside the namespace at `path`, which must
    /// still be namespace `inode` (a pid may have been reused meanwhile).
    pub fn open(&self, inode: u32, path: &Path) -> Result<Opened> {
        let request = format!("{inode} {}", path.display());
        sendmsg::<()>(
            self.channel.as_raw_fd(),
            &[IoSlice::new(request.as_bytes())],
            &[],
            MsgFlags::empty(),
            None,
        )
        .context("asking the namespace opener")?;
        let mut reply = [0u8; MAX_REQUEST];
        let mut fds = cmsg_space!([RawFd; 2]);
        let mut iov = [IoSliceMut::new(&mut reply)];
        let message = recvmsg::<()>(
            self.channel.as_raw_fd(),
            &mut iov,
            Some(&mut fds),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .context("reading the namespace opener's answer")?;
        // The socket first, then the sysctl file when there is one.
        let mut received_fds = Vec::new();
        for control in message.cmsgs().context("the opener's answer")? {
            if let ControlMessageOwned::ScmRights(received) = control {
                for fd in received {
                    // SAFETY: the kernel just installed this fd for us; we
                    // own it from here on.
                    received_fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        let length = message.bytes;
        if length == 0 {
            bail!("the namespace opener exited");
        }
        let mut received_fds = received_fds.into_iter();
        match received_fds.next() {
            Some(fd) => Ok(Opened {
                // SAFETY: a netlink socket the opener created and passed
                // to us.
                socket: unsafe { Socket::from_raw_fd(fd.into_raw_fd()) },
                port_range: received_fds.next().map(File::from),
            }),
            None => bail!(
                "{}",
                String::from_utf8_lossy(&reply[..length.min(MAX_REQUEST)])
            ),
        }
    }
}

impl Drop for Opener {
    fn drop(&mut self) {
        // Closing our end ends the helper's loop; reap it.
        let _ =
            nix::sys::socket::shutdown(self.channel.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        let _ = self.child.wait();
    }
}

/// The helper's loop: one request, one answer, until the parent goes.
pub fn serve() -> Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) has no memory arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    crate::privileges::keep_only(&OPENER_KEEPS)?;
    let home = File::open("/proc/self/ns/net").context("opening the opener's own namespace")?;
    let channel = std::io::stdin().as_fd().try_clone_to_owned()?;
    let mut request = [0u8; MAX_REQUEST];
    loop {
        let mut iov = [IoSliceMut::new(&mut request)];
        let received = recvmsg::<()>(channel.as_raw_fd(), &mut iov, None, MsgFlags::empty())
            .context("reading a request")?;
        if received.bytes == 0 {
            return Ok(()); // the parent closed its end
        }
        let length = received.bytes;
        let answer = std::str::from_utf8(&request[..length])
            .context("a request that is not text")
            .and_then(|text| open_in(text, &home));
        match answer {
            Ok(opened) => {
                let mut fds = vec![opened.socket.as_raw_fd()];
                fds.extend(opened.port_range.as_ref().map(AsRawFd::as_raw_fd));
                sendmsg::<()>(
                    channel.as_raw_fd(),
                    &[IoSlice::new(b"ok")],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::empty(),
                    None,
                )
                .context("answering")?;
            }
            Err(err) => {
                let text = format!("{err:#}");
                sendmsg::<()>(
                    channel.as_raw_fd(),
                    &[IoSlice::new(
                        &text.as_bytes()[..text.len().min(MAX_REQUEST)],
                    )],
                    &[],
                    MsgFlags::empty(),
                    None,
                )
                .context("answering")?;
            }
        }
    }
}

/// Enters the namespace a request names, opens the socket and the
/// sysctl, comes home.
fn open_in(request: &str, home: &File) -> Result<Opened> {
    let (inode, path) = request.split_once(' ').context("a malformed request")?;
    let inode: u64 = inode.parse().context("a malformed inode")?;
    if !allowed(path) {
        bail!("{path}: not a network namespace path the opener serves");
    }
    let namespace = File::open(path).with_context(|| format!("opening {path}"))?;
    let found = namespace.metadata()?.ino();
    if found != inode {
        bail!("{path} is namespace {found} now, not {inode} (its process is gone)");
    }
    setns(&namespace, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering {path}"))?;
    let socket = Socket::new(NETLINK_SOCK_DIAG);
    // Without it, the kernel's default range is assumed for the namespace.
    let port_range = PortRange::open_sysctl().ok();
    setns(home, CloneFlags::CLONE_NEWNET).context("returning to the opener's namespace")?;
    Ok(Opened {
        socket: socket.with_context(|| format!("opening a sock_diag socket in {path}"))?,
        port_range,
    })
}

/// `/proc/PID/ns/net` or `/run/netns/NAME`, nothing else.
fn allowed(path: &str) -> bool {
    if let Some(rest) = path.strip_prefix("/proc/") {
        return rest
            .strip_suffix("/ns/net")
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
    }
    path.strip_prefix("/run/netns/")
        .is_some_and(|name| !name.is_empty() && !name.contains('/') && name != "..")
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn serves_only_namespace_paths() {
        assert!(allowed("/proc/1/ns/net"));
        assert!(allowed("/run/netns/pod-a"));
        for path in [
            "/proc/self/ns/net",
            "/proc/1/ns/mnt",
            "/proc//ns/net",
            "/etc/shadow",
            "/run/netns/../../etc/shadow",
            "/run/netns/..",
            "/run/netns/",
            "/proc/1/../../etc/ns/net",
        ] {
            assert!(!allowed(path), "{path}");
        }
    }
}
