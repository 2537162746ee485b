//! The kernel's record of each socket it follows (`SOCKS`), read from
//! userspace. Summary mode sends nothing while a connection lives, so this
//! is where a live connection's owner and birth call site are found; the
//! key is the socket's address, which no socket dump gives, so a record is
//! matched by the inode the kernel stored at connect or accept.

use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData};
use tcptrace_common::SockInfo;

use crate::FastSet;

pub struct SocketMap {
    records: HashMap<MapData, u64, SockInfo>,
    /// The map's capacity: a walk reads at most twice as many keys (a key
    /// deleted under the walk restarts it from the first).
    capacity: usize,
}

impl SocketMap {
    pub(super) fn new(records: HashMap<MapData, u64, SockInfo>, capacity: u32) -> Self {
        Self {
            records,
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
        }
    }

    /// Calls `found` with the kernel's record of each socket in `wanted`
    /// (network namespace, inode), in one walk of the map: two system
    /// calls per socket the kernel follows, so callers ask only for what
    /// they miss. Nothing is collected here: with 100k sockets wanted, a
    /// map of whole records was 25 MB for a moment. The walk ends when
    /// `found` says it has them all (a walk that restarts, when a key is
    /// deleted under it, can visit a record twice: only `found` knows).
    pub fn visit_records(
        &self,
        wanted: &FastSet<(u32, u64)>,
        mut found: impl FnMut((u32, u64), &SockInfo) -> Visit,
    ) -> Result<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        for entry in self.records.iter().take(self.capacity.saturating_mul(2)) {
            let (_, record) = match entry {
                Ok(entry) => entry,
                // Deleted between its key and its value: a socket that
                // just closed.
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(error) => return Err(error).context("reading the kernel's socket map"),
            };
            let key = (record.netns, record.inode);
            if record.inode != 0 && wanted.contains(&key) && found(key, &record) == Visit::AllFound
            {
                break;
            }
        }
        Ok(())
    }
}

/// Whether a walk of the socket map goes on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    More,
    AllFound,
}
