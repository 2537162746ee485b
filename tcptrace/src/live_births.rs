//! Where and when live connections were opened, and when the ones in
//! `CLOSE_WAIT` entered it and who read their end-of-file, for the
//! connections the socket table cannot tell. Summary mode (the daemon,
//! `trace --report-only`) sends nothing while a connection lives, not even
//! on entering `CLOSE_WAIT`, and the accept hook updates only the kernel's
//! record (a socket accepted from a listener older than the session, idle
//! since, sends nothing more), so these are read from the kernel's socket
//! map:
//!
//! - a socket in `CLOSE_WAIT` through the `CLOSE_WAITING` list (a few
//!   sockets, read at every dump while its end-of-file reader is unknown);
//! - any other by a walk of the whole map, matched by the inode a socket
//!   dump reports, only when a dump lists a connection not looked up
//!   before.
//!
//! What was found is kept while the connection lives.

use std::net::SocketAddr;

use anyhow::Result;
use tcptrace_common::{SockInfo, TcpState, EOF_READ_KEPT};

use crate::{
    callsite::CallSites,
    event::{close_waiting_endpoints, layout::SockCommonLayout},
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
    by_inode: FastMap<(u32, u64), LiveRecord>,
    /// Walks of the kernel's socket map that failed: those connections'
    /// call sites stay unknown until a later walk succeeds.
    pub walks_failed: u64,
}

/// What the kernel knew of a live connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveRecord {
    /// The capture taken where it was opened.
    pub stack: Option<StackRef>,
    /// When it was established (`CLOCK_MONOTONIC`).
    pub established_ns: Option<u64>,
    /// When it entered `CLOSE_WAIT` (`CLOCK_MONOTONIC`).
    pub close_wait_ns: Option<u64>,
    /// The capture taken where its end-of-file was read.
    pub eof_stack: Option<StackRef>,
}

impl LiveRecord {
    fn of(record: &SockInfo) -> Self {
        let known = |ns: u64| Some(ns).filter(|&ns| ns != 0);
        Self {
            stack: StackRef::of_task(&record.owner),
            established_ns: known(record.history.established_ns),
            close_wait_ns: known(record.history.close_wait_ns),
            eof_stack: (record.flags & EOF_READ_KEPT != 0)
                .then(|| StackRef::of_task(&record.eof_reader))
                .flatten(),
        }
    }
}

impl LiveBirths {
    /// The capture taken where this live connection was opened.
    #[must_use]
    pub fn stack_of(&self, netns: u32, inode: u64) -> Option<StackRef> {
        self.get(netns, inode).and_then(|r| r.stack)
    }

    /// When this live connection was established, if the kernel saw it.
    #[must_use]
    pub fn established_ns(&self, netns: u32, inode: u64) -> Option<u64> {
        self.get(netns, inode).and_then(|r| r.established_ns)
    }

    /// What the kernel knew of this live connection.
    #[must_use]
    pub fn get(&self, netns: u32, inode: u64) -> Option<&LiveRecord> {
        self.by_inode.get(&(netns, inode))
    }

    /// Every connection known: ((network namespace, inode), its record).
    pub fn entries(&self) -> impl Iterator<Item = ((u32, u64), &LiveRecord)> + '_ {
        self.by_inode.iter().map(|(&key, record)| (key, record))
    }

    /// A connection's record learnt elsewhere (a recording).
    pub fn insert(&mut self, netns: u32, inode: u64, record: LiveRecord) {
        self.by_inode.insert((netns, inode), record);
    }

    /// Learns what `table` cannot tell of the ESTABLISHED and `CLOSE_WAIT`
    /// connections in `now`, and forgets the connections gone.
    pub fn update(
        &mut self,
        now: &Snapshot,
        table: &SocketTable,
        map: &mut SocketMap,
        call_sites: &CallSites,
        layout: Option<&SockCommonLayout>,
    ) -> Result<()> {
        // ESTABLISHED or CLOSE_WAIT with no record, or one without its
        // call site (an accepted socket's accept() reaches the kernel's
        // record only). In CLOSE_WAIT without the table knowing (summary
        // mode sent nothing), also found by endpoints: a passive socket's
        // record has no inode without the accept hook.
        let mut live: FastSet<(u32, u64)> = FastSet::default();
        let mut close_waiting: FastMap<(u32, SocketAddr, SocketAddr), u64> = FastMap::default();
        for s in &now.sockets {
            if s.inode == 0 || !matches!(s.state, TcpState::Established | TcpState::CloseWait) {
                continue;
            }
            let record = table.find(s.netns, s.local, s.remote);
            let close_wait_unknown =
                s.state == TcpState::CloseWait && record.is_none_or(|r| r.state != s.state);
            if close_wait_unknown {
                close_waiting.insert((s.netns, s.local, s.remote), s.inode);
            }
            if close_wait_unknown || record.is_none_or(|r| r.owner_stack.is_none()) {
                live.insert((s.netns, s.inode));
            }
        }
        self.by_inode.retain(|key, _| live.contains(key));
        // Read again at each dump until its end-of-file reader is known.
        let any_unread = close_waiting.iter().any(|(&(netns, ..), &inode)| {
            self.by_inode
                .get(&(netns, inode))
                .is_none_or(|r| r.close_wait_ns.is_none() || r.eof_stack.is_none())
        });
        if let (true, Some(layout)) = (any_unread, layout) {
            let by_inode = &mut self.by_inode;
            map.visit_close_waiting(|record, listing| {
                let Ok((local, remote)) = close_waiting_endpoints(listing, layout) else {
                    return;
                };
                if let Some(&inode) = close_waiting.get(&(record.netns, local, remote)) {
                    by_inode.insert((record.netns, inode), LiveRecord::of(record));
                }
            })
            .inspect_err(|_| self.walks_failed += 1)?;
        }
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
                // `wanted` holds only keys not in `by_inode`: a first insert
                // is a new one, a second a record met again.
                if by_inode.insert(key, LiveRecord::of(record)).is_none() {
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
        for record in self.by_inode.values_mut() {
            record.stack = record.stack.map(|stack| call_sites.canonical(stack));
            record.eof_stack = record.eof_stack.map(|stack| call_sites.canonical(stack));
        }
        Ok(())
    }
}
