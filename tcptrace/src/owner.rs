//! Who owns the socket an event is about: the kernel's record first, the
//! pre-trace snapshot for sockets born before tcptrace started.

use std::borrow::Cow;

use tcptrace_common::OWNER_FROM_LISTENER;

use crate::{
    event::{comm_str, TcpEvent},
    snapshot::Snapshot,
};

/// How the owner was learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerSource {
    /// Seen calling `connect()` or `listen()` on this socket.
    Syscall,
    /// Inherited from the listener that accepted this connection.
    Listener,
    /// Found holding the socket in the snapshot taken at start.
    Snapshot,
}

impl OwnerSource {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Syscall => "syscall",
            Self::Listener => "listener",
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

/// The owner of the event's socket, if anyone knows it.
#[must_use]
pub fn resolve<'a>(event: &'a TcpEvent, snapshot: &'a Snapshot) -> Option<Owner<'a>> {
    if let Some(task) = event.owner() {
        // Kernel data is input: an owner without a source flag is taken as
        // recorded in a system call, the only other way the kernel sets it.
        let source = if event.sock.flags & OWNER_FROM_LISTENER != 0 {
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
    let holder = snapshot.find(event.local, event.remote)?.holders.first()?;
    Some(Owner {
        pid: holder.pid,
        comm: Cow::Borrowed(&holder.comm),
        source: OwnerSource::Snapshot,
    })
}
