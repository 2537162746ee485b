//! Where live connections were opened, for the ones the socket table has
//! no record of. Summary mode (the daemon, `trace --report-only`) sends
//! nothing while a connection lives, so an idle connection's call site is
//! read from the kernel's socket map, matched by the inode a socket dump
//! reports. What was found is kept while the connection lives: the map is
//! walked only when a dump lists a connection not looked up before.

use anyhow::Result;
use tcptrace_common::TcpState;

use crate::{
    callsite::CallSites, probe::SocketMap, snapshot::Snapshot, table::SocketTable, table::StackRef,
    FastMap, FastSet,
};

#[derive(Default)]
pub struct LiveBirths {
    /// (network namespace, inode) → the capture taken where the connection
    /// was opened; `None` when the kernel had none (no stack, or a socket
    /// born before tracing started).
    by_inode: FastMap<(u32, u64), Option<StackRef>>,
    /// Walks of the kernel's socket map that failed: those connections'
    /// call sites stay unknown until a later walk succeeds.
    pub walks_failed: u64,
}

impl LiveBirths {
    /// The capture taken where this live connection was opened.
    #[must_use]
    pub fn stack_of(&self, netns: u32, inode: u64) -> Option<StackRef> {
        self.by_inode.get(&(netns, inode)).copied().flatten()
    }

    /// Learns the births of the ESTABLISHED connections in `now` that
    /// `table` has no record of, and forgets the connections gone.
    pub fn update(
        &mut self,
        now: &Snapshot,
        table: &SocketTable,
        map: &SocketMap,
        call_sites: &CallSites,
    ) -> Result<()> {
        let live: FastSet<(u32, u64)> = now
            .sockets
            .iter()
            .filter(|s| s.state == TcpState::Established && s.inode != 0)
            .filter(|s| table.find(s.netns, s.local, s.remote).is_none())
            .map(|s| (s.netns, s.inode))
            .collect();
        self.by_inode.retain(|key, _| live.contains(key));
        let wanted: FastSet<(u32, u64)> = live
            .into_iter()
            .filter(|key| !self.by_inode.contains_key(key))
            .collect();
        if !wanted.is_empty() {
            let owners = map
                .owners_of(&wanted)
                .inspect_err(|_| self.walks_failed += 1)?;
            for key in wanted {
                let stack = owners.get(&key).and_then(StackRef::of_task);
                self.by_inode.insert(key, stack);
            }
        }
        // A capture is canonical once unwound (see `CallSites::canonical`).
        for stack in self.by_inode.values_mut().flatten() {
            *stack = call_sites.canonical(*stack);
        }
        Ok(())
    }
}
