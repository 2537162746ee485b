//! The kernel's record of each socket it follows (`SOCKS`), read from
//! userspace. Summary mode sends nothing while a connection lives, so this
//! is where a live connection's owner and birth call site are found; the
//! key is the socket's address, which no socket dump gives, so a record is
//! matched by the inode the kernel stored at connect or accept. The
//! sockets in `CLOSE_WAIT` are listed by address (`CLOSE_WAITING`), so
//! theirs are read without a walk.

use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result};
use aya::maps::{HashMap, IterableMap, MapData};
use tcptrace_common::{CloseWaiting, SockInfo, CLOSED, CLOSE_WAIT_LISTED};

use crate::FastSet;

pub struct SocketMap {
    records: HashMap<MapData, u64, SockInfo>,
    /// Summary mode: the sockets in `CLOSE_WAIT`, by address.
    close_waiting: HashMap<MapData, u64, CloseWaiting>,
    /// The map's capacity: a walk reads at most twice as many keys (a key
    /// deleted under the walk restarts it from the first).
    capacity: usize,
}

impl SocketMap {
    pub(super) fn new(
        records: HashMap<MapData, u64, SockInfo>,
        close_waiting: HashMap<MapData, u64, CloseWaiting>,
        capacity: u32,
    ) -> Self {
        Self {
            records,
            close_waiting,
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
        }
    }

    /// Calls `found` with the kernel's record of each socket listed in
    /// `CLOSE_WAITING` (summary mode: in `CLOSE_WAIT` now) and its listing
    /// (its endpoints), one lookup each. An entry whose record is gone,
    /// closed, or no longer flagged `CLOSE_WAIT_LISTED` is stale (the
    /// kernel ran no program for the socket's way out of `CLOSE_WAIT`, or
    /// is taking it off right now) and is removed, so missed transitions
    /// do not fill the list.
    pub fn visit_close_waiting(
        &mut self,
        mut found: impl FnMut(&SockInfo, &CloseWaiting),
    ) -> Result<()> {
        let mut listed = Vec::new();
        for entry in self.close_waiting.iter().take(self.capacity) {
            match entry {
                Ok(entry) => listed.push(entry),
                // Taken off between its key and its value.
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(error) => return Err(error).context("reading the kernel's CLOSE_WAIT list"),
            }
        }
        for (skaddr, listing) in listed {
            match self.records.get(&skaddr, 0) {
                Ok(record) if record.flags & (CLOSED | CLOSE_WAIT_LISTED) == CLOSE_WAIT_LISTED => {
                    found(&record, &listing);
                }
                Ok(_) | Err(aya::maps::MapError::KeyNotFound) => {
                    // Gone already when the kernel took it off meanwhile.
                    let _ = self.close_waiting.remove(&skaddr);
                }
                Err(error) => return Err(error).context("reading the kernel's socket map"),
            }
        }
        Ok(())
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
            if record.flags & CLOSED == 0
                && record.inode != 0
                && wanted.contains(&key)
                && found(key, &record) == Visit::AllFound
            {
                break;
            }
        }
        Ok(())
    }
}

/// A second handle on the hash map `map`.
fn duplicate<V: aya::Pod>(map: &HashMap<MapData, u64, V>) -> Result<HashMap<MapData, u64, V>> {
    let fd = map
        .map()
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating a kernel map's descriptor")?;
    Ok(HashMap::try_from(aya::maps::Map::HashMap(
        MapData::from_fd(fd)?,
    ))?)
}

impl SocketMap {
    /// Second handles on the same kernel maps, for another thread.
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Self {
            records: duplicate(&self.records)?,
            close_waiting: duplicate(&self.close_waiting)?,
            capacity: self.capacity,
        })
    }

    /// Removes the records of sockets that closed more than `age_ns`
    /// before `now_ns` (`CLOCK_MONOTONIC`, as the kernel's times): the
    /// kernel leaves a closed socket's record for the next socket born at
    /// its address (see `tcptrace_common::CLOSED`), and addresses the
    /// allocator never hands out again would fill the map.
    ///
    /// A socket may be born at an address while its old record is
    /// removed: each is taken out and read in one step, and one that
    /// turns out live goes back (`Swept::reborn`), unless the kernel made
    /// it a new record meanwhile (`Swept::lost`: its birth is not known).
    pub fn sweep_closed(&mut self, now_ns: u64, age_ns: u64) -> Result<Swept> {
        let mut stale = Vec::new();
        for entry in self.records.iter().take(self.capacity.saturating_mul(2)) {
            match entry {
                Ok((skaddr, record))
                    if record.flags & CLOSED != 0
                        && now_ns.saturating_sub(record.state_since_ns) > age_ns =>
                {
                    stale.push(skaddr);
                }
                Ok(_) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(error) => return Err(error).context("reading the kernel's socket map"),
            }
        }
        let mut swept = Swept::default();
        for skaddr in stale {
            let Some(record) = self.take(skaddr)? else {
                continue;
            };
            if record.flags & CLOSED != 0 {
                swept.removed += 1;
            } else if self.records.insert(skaddr, record, BPF_NOEXIST).is_ok() {
                swept.reborn += 1;
            } else {
                swept.lost += 1;
            }
        }
        Ok(swept)
    }

    /// Removes the record at `skaddr` and returns it, in one system call
    /// (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`, which aya offers for queues and
    /// stacks only): `None` when there is none.
    fn take(&mut self, skaddr: u64) -> Result<Option<SockInfo>> {
        let mut record = std::mem::MaybeUninit::<SockInfo>::uninit();
        let attr = MapElemAttr {
            map_fd: self.records.map().fd().as_fd().as_raw_fd().cast_unsigned(),
            _pad: 0,
            key: std::ptr::from_ref(&skaddr) as u64,
            value: record.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: `attr` is the kernel's `bpf_attr` for map element
        // commands, its key and value pointers valid for this call, the
        // value as large as the map's.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_AND_DELETE_ELEM,
                &raw const attr,
                std::mem::size_of::<MapElemAttr>(),
            )
        };
        if ret == 0 {
            // SAFETY: the kernel wrote the whole value.
            return Ok(Some(unsafe { record.assume_init() }));
        }
        match std::io::Error::last_os_error() {
            error if error.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            error => Err(error).context("removing a closed socket's record from the kernel's map"),
        }
    }
}

/// `bpf(2)` command numbers and flags (`include/uapi/linux/bpf.h`).
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_NOEXIST: u64 = 1;

/// `union bpf_attr` as the map element commands read it.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// What `SocketMap::sweep_closed` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Records of closed sockets removed.
    pub removed: u64,
    /// Records taken out as a socket was born at their address, put back.
    pub reborn: u64,
    /// Records taken out as a socket was born at their address, which the
    /// kernel had replaced meanwhile by one that does not know the birth.
    pub lost: u64,
}

/// Whether a walk of the socket map goes on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    More,
    AllFound,
}
