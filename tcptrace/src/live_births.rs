//! Where and when live connections were opened, for the ones the socket
//! table has no record of, or no call site for. Summary mode (the daemon,
//! `trace --report-only`) sends nothing while a connection lives, and the
//! accept hook updates only the kernel's record (a socket accepted from a
//! listener older than the session, idle since, sends nothing more), so
//! such a connection's call site and age are read from the kernel's
//! socket map, matched by the inode a socket dump reports. What was found is kept while the connection lives: the map is
//! walked only when a dump lists a connection not looked up before.

use anyhow::Result;
use tcptrace_common::TcpState;

use crate::{
    callsite::CallSites,
    probe::{SocketMap, Visit},
    snapshot::Snapshot,
    table::SocketTable,
    table::StackRef,
    FastMap, FastSet,
};

#[derive(Default)]
pub struct LiveBirths {
    /// By (network namespace, inode); the default when the kernel had no
    /// record (a socket born before tracing started, or not followed).
    by_inode: FastMap<(u32, u64), Birth>,
    /// Walks of the kernel's socket map that failed: those connections'
    /// call sites stay unknown until a later walk succeeds.
    pub walks_failed: u64,
}

/// What the kernel knew of a live connection's start.
#[derive(Clone, Copy, Default)]
struct Birth {
    /// The capture taken where it was opened.
    stack: Option<StackRef>,
    /// When it was established (`CLOCK_MONOTONIC`).
    established_ns: Option<u64>,
}

impl LiveBirths {
    /// The capture taken where this live connection was opened.
    #[must_use]
    pub fn stack_of(&self, netns: u32, inode: u64) -> Option<StackRef> {
        self.by_inode.get(&(netns, inode)).and_then(|b| b.stack)
    }

    /// When this live connection was established, if the kernel saw it.
    #[must_use]
    pub fn established_ns(&self, netns: u32, inode: u64) -> Option<u64> {
        self.by_inode
            .get(&(netns, inode))
            .and_then(|b| b.established_ns)
    }

    /// Every birth known: (network namespace, inode, capture, established).
    pub fn entries(&self) -> impl Iterator<Item = (u32, u64, Option<StackRef>, Option<u64>)> + '_ {
        self.by_inode
            .iter()
            .map(|(&(netns, inode), birth)| (netns, inode, birth.stack, birth.established_ns))
    }

    /// A birth learnt elsewhere (a recording).
    pub fn insert(
        &mut self,
        netns: u32,
        inode: u64,
        stack: Option<StackRef>,
        established_ns: Option<u64>,
    ) {
        self.by_inode.insert(
            (netns, inode),
            Birth {
                stack,
                established_ns,
            },
        );
    }

    /// Learns the births of the ESTABLISHED and `CLOSE_WAIT` connections in `now` that
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
            .filter(|s| matches!(s.state, TcpState::Established | TcpState::CloseWait))
            .filter(|s| s.inode != 0)
            // No record, or one without its call site: an accepted
            // socket's accept() reaches the kernel's record only.
            .filter(|s| {
                table
                    .find(s.netns, s.local, s.remote)
                    .is_none_or(|r| r.owner_stack.is_none())
            })
            .map(|s| (s.netns, s.inode))
            .collect();
        self.by_inode.retain(|key, _| live.contains(key));
        let wanted: FastSet<(u32, u64)> = live
            .into_iter()
            .filter(|key| !self.by_inode.contains_key(key))
            .collect();
        if !wanted.is_empty() {
            // Sized once (see `FirstSeen::update`).
            self.by_inode.reserve(wanted.len());
            let by_inode = &mut self.by_inode;
            let mut missing = wanted.len();
            map.visit_records(&wanted, |key, record| {
                let birth = Birth {
                    stack: StackRef::of_task(&record.owner),
                    established_ns: Some(record.history.established_ns).filter(|&ns| ns != 0),
                };
                // `wanted` holds only keys not in `by_inode`: a first insert
                // is a new one, a second a record met again.
                if by_inode.insert(key, birth).is_none() {
                    missing -= 1;
                }
                if missing == 0 {
                    Visit::AllFound
                } else {
                    Visit::More
                }
            })
            .inspect_err(|_| self.walks_failed += 1)?;
            // Those the kernel has no record of: looked up once, not at
            // every dump.
            for key in wanted {
                self.by_inode.entry(key).or_default();
            }
        }
        // A capture is canonical once unwound (see `CallSites::canonical`).
        for birth in self.by_inode.values_mut() {
            birth.stack = birth.stack.map(|stack| call_sites.canonical(stack));
        }
        Ok(())
    }
}
