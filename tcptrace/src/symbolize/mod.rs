//! User stack addresses → call sites, with blazesym.
//!
//! Addresses are normalized while their process lives: blazesym's
//! `Normalizer` reads `/proc/<tgid>/maps` and turns each address into an
//! offset in an ELF file. Everything costly after that is keyed by *file*,
//! not by process, so thousands of short-lived processes of the same few
//! binaries (a shell loop running curl) cost one parse of each binary and
//! memory stays flat under process churn:
//!
//! - A bounded LRU of open files, each opened once however many processes,
//!   paths or container copies map it (`files`).
//! - blazesym's parsed ELF/DWARF (tens of MiB for a large binary with debug
//!   info) is kept for the few files used last, dropped when idle, and always
//!   with the file.
//! - A bounded cache (file, offset) → frames shared by all processes, so a
//!   parse is needed only for call sites not seen before (`resolve`).
//! - Per process only its addresses → those shared frames, so frames
//!   resolved while a process lived still resolve after it exits (until
//!   `forget`). A process that exits before its first symbolization gives
//!   "??" frames and a reason in `last_error`.
//!
//! Anonymous memory (JIT code) is left to blazesym's per-process perf map
//! support, the vDSO to the normalizer. [`call_site()`] then picks the frame
//! that names the user's code.

mod call_site;
mod files;
mod frame;
mod resolve;
#[cfg(test)]
mod tests;

use std::{collections::HashMap, rc::Rc, time::Duration};

use blazesym::{
    normalize::Normalizer,
    symbolize::{self as bz, evict},
    Pid,
};

pub use call_site::call_site;
pub use frame::Frame;

use crate::generations::Generations;
use files::{FileKey, OpenFiles};
use frame::Frames;

/// How much is kept; every cache is bounded by one of these.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Processes whose addresses stay cached; the least recently used goes.
    processes: usize,
    /// Addresses cached per process; later ones are resolved but not kept.
    addrs_per_process: usize,
    /// Files kept open; LRU. An open file costs an fd.
    open_files: usize,
    /// Open files whose parsed ELF/DWARF blazesym keeps (tens of MiB for a
    /// large binary with debug info); LRU. The frames cache answers known
    /// offsets without it, so only new call sites need a parse.
    parsed_files: usize,
    /// Parsed data unused this long is dropped (by `symbolize` and
    /// `release_idle`): after warm-up, when call sites are known, memory
    /// goes back to the caches.
    parsed_idle: Duration,
    /// (file, offset) → frames entries over all files.
    offsets: usize,
    /// stat identity → file identity entries (one per path/copy seen).
    inodes: usize,
}

/// Few parsed files, soon dropped: the daemon must stay under 64 MiB RSS,
/// and one parse of a large binary with debug info costs tens of MiB.
const LIMITS: Limits = Limits {
    processes: 64,
    addrs_per_process: 4096,
    open_files: 32,
    parsed_files: 2,
    parsed_idle: Duration::from_secs(10),
    offsets: 16_384,
    inodes: 1024,
};

/// What is remembered about one process.
struct ProcessCache {
    /// Lookup address → its frames (several when calls were inlined).
    frames: HashMap<u64, Frames>,
    last_error: Option<String>,
    last_used: u64,
}

/// Symbolizes user stacks of processes, caching per file and offset (and
/// per process and address, for processes that have exited).
///
/// Not `Send`: blazesym's symbolizer uses `Rc` internally.
pub struct Symbolizer {
    backend: bz::Symbolizer,
    normalizer: Normalizer,
    processes: HashMap<u32, ProcessCache>,
    files: OpenFiles,
    /// (file, file offset) → frames.
    offsets: Generations<(FileKey, u64), Frames>,
    /// Logical time for least-recently-used eviction of processes.
    tick: u64,
    limits: Limits,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    #[must_use]
    pub fn new() -> Self {
        Self::with_limits(LIMITS)
    }

    fn with_limits(limits: Limits) -> Self {
        Self {
            backend: bz::Symbolizer::new(),
            // Build ids are read from the files we open: the normalizer
            // would read them through the path in *our* mount namespace.
            normalizer: Normalizer::builder().enable_build_ids(false).build(),
            processes: HashMap::new(),
            files: OpenFiles::new(limits.open_files, limits.inodes),
            offsets: Generations::new(limits.offsets),
            tick: 0,
            limits,
        }
    }

    /// Symbolizes user addresses (innermost first, as captured) of live
    /// process `tgid`.
    ///
    /// Returns at least one frame per address, innermost first: an address
    /// inside inlined calls yields one frame per inlined function, all with
    /// that same `addr`, before the frame of the function it was compiled
    /// into. Results are cached per (tgid, addr), so frames captured while a
    /// process lived still resolve after it exits if they were symbolized
    /// once.
    ///
    /// Never panics: when the process is gone or refuses (permissions), the
    /// addresses not cached yield "??" frames and the reason is kept for
    /// [`Self::last_error`].
    pub fn symbolize(&mut self, tgid: u32, ips: &[u64]) -> Vec<Frame> {
        // Every ip but the innermost is a return address, which may already
        // belong to the next line or function; look up the call instruction.
        let lookups: Vec<u64> = ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| if i == 0 { ip } else { ip.saturating_sub(1) })
            .collect();

        self.touch(tgid);
        self.release_idle();
        let mut misses: Vec<u64> = lookups
            .iter()
            .copied()
            .filter(|addr| !self.processes[&tgid].frames.contains_key(addr))
            .collect();
        misses.sort_unstable();
        misses.dedup();

        let mut fresh = HashMap::new();
        if !misses.is_empty() {
            let result = self.resolve(tgid, &misses);
            let process = self.processes.get_mut(&tgid).expect("touched above");
            match result {
                Ok((resolved, error)) => {
                    process.last_error = error;
                    for (addr, frames) in misses.into_iter().zip(resolved) {
                        // None: its file could not be opened; "??" this
                        // time, tried again next time.
                        let Some(frames) = frames else { continue };
                        if process.frames.len() < self.limits.addrs_per_process {
                            process.frames.insert(addr, Rc::clone(&frames));
                        }
                        fresh.insert(addr, frames);
                    }
                }
                // Not cached: the process may only be starting up or racing us.
                Err(reason) => process.last_error = Some(reason),
            }
        }

        let process = &self.processes[&tgid];
        ips.iter()
            .zip(&lookups)
            .flat_map(|(&ip, lookup)| {
                match fresh.get(lookup).or_else(|| process.frames.get(lookup)) {
                    Some(frames) => frame::at_addr(frames, ip).collect(),
                    None => vec![Frame::unknown(ip)],
                }
            })
            .collect()
    }

    /// Why the last `symbolize` of `tgid` left addresses unresolved, if it
    /// did; `None` after a successful one. Per-address misses (e.g. an
    /// address in anonymous memory) are not errors, just "??" frames.
    #[must_use]
    pub fn last_error(&self, tgid: u32) -> Option<&str> {
        self.processes.get(&tgid)?.last_error.as_deref()
    }

    /// Drops the cache of a process (it exited, or its pid was reused). What
    /// was learnt about its files stays.
    pub fn forget(&mut self, tgid: u32) {
        self.processes.remove(&tgid);
        if tgid != 0 {
            // blazesym remembers a process only for its perf map (JIT
            // symbols). Best effort; "nothing cached" is not an error.
            let _ = self
                .backend
                .evict(&evict::Process::new(Pid::from(tgid)).into());
        }
    }

    /// Drops blazesym's parsed data of files unused for the idle limit (and
    /// of any beyond the parsed-files limit); the files stay open and the
    /// frames already known stay cached. `symbolize` does this on every
    /// call; a caller that may stop calling it (no new stacks) calls this
    /// now and then so the memory still goes back.
    pub fn release_idle(&mut self) {
        self.files.release_parsed(
            &mut self.backend,
            self.limits.parsed_files,
            self.limits.parsed_idle,
        );
    }

    /// Marks `tgid` as just used, making room for it if it is new.
    fn touch(&mut self, tgid: u32) {
        self.tick += 1;
        if !self.processes.contains_key(&tgid) && self.processes.len() >= self.limits.processes {
            let oldest = self
                .processes
                .iter()
                .min_by_key(|(_, process)| process.last_used)
                .map(|(&tgid, _)| tgid);
            if let Some(oldest) = oldest {
                self.forget(oldest);
            }
        }
        let process = self.processes.entry(tgid).or_insert_with(|| ProcessCache {
            frames: HashMap::new(),
            last_error: None,
            last_used: 0,
        });
        process.last_used = self.tick;
    }
}
