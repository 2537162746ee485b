//! User stacks → call sites: unwound with the binaries' CFI (framehop)
//! from what the kernel copied, symbolized with blazesym.
//!
//! A process's mappings are read from `/proc/<tgid>/maps` the first time a
//! stack of it arrives, and the file behind each mapping of code is found
//! and opened right then (`process`); the kernel wakes us at a process's
//! first capture so this happens while it lives. Everything costly after
//! that is keyed by *file*, not by process, so thousands of short-lived
//! processes of the same few binaries (a shell loop running curl) cost one
//! parse of each binary and memory stays flat under process churn:
//!
//! - A bounded LRU of open files, each opened once however many processes,
//!   paths or container copies map it (`files`).
//! - The unwind sections of each file (`.eh_frame`, `.debug_frame`) read
//!   once and shared by every process's unwinder (`unwind`).
//! - blazesym's parsed ELF/DWARF (tens of MiB for a large binary with debug
//!   info) is kept for the few files used last, dropped when idle, and always
//!   with the file. In a live session files are parsed on a thread of their
//!   own (`namer`), so a parse never keeps the reader from the ring.
//! - A bounded cache (file, offset) → frames shared by all processes, so a
//!   parse is needed only for call sites not seen before (`resolve`).
//! - Per process its mappings and its addresses → those shared frames, so
//!   stacks of a process that has exited still unwind and resolve (until
//!   `forget`). A process that exits before its mappings were read gives
//!   "??" frames and a reason in `last_error`.
//!
//! Anonymous memory (JIT code) is named by the process's perf map
//! (`perf_map`). [`call_site()`] then picks the frame that names the user's
//! code.

mod call_site;
mod files;
mod frame;
mod hotspot;
mod jvm;
mod meeter;
mod namer;
mod perf_map;
mod process;
mod resolve;
mod runtimes;
#[cfg(test)]
mod tests;
mod unwind;

use std::{collections::HashMap, path::PathBuf, rc::Rc, time::Duration};

use blazesym::symbolize as bz;
use framehop::{x86_64::CacheX86_64, Unwinder};

pub use call_site::{call_site, choose, Chosen};
pub use frame::{Frame, UNKNOWN as UNKNOWN_FUNCTION};
pub use hotspot::INTERPRETED_MODULE;
pub use meeter::{Meeter, MeetingPriority};
pub use runtimes::advice;

use crate::generations::Generations;
use files::{FileKey, OpenFiles};
use frame::Frames;
use hotspot::HotSpot;
use jvm::JvmPerfMaps;
use namer::{Namer, Naming};
use perf_map::PerfMap;
use process::{Backing, ProcessImage};
use unwind::{Captured, ProcessUnwinder, UnwindSections};

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
    /// Files whose unwind sections stay read (shared by all processes).
    unwind_files: usize,
}

/// Few parsed files, soon dropped: the daemon must stay under 64 MiB RSS,
/// and one parse of a large binary with debug info costs tens of MiB.
const LIMITS: Limits = Limits {
    processes: 64,
    addrs_per_process: 4096,
    // A JVM maps some 30 libraries of code.
    open_files: 64,
    parsed_files: 2,
    parsed_idle: Duration::from_secs(10),
    offsets: 16_384,
    inodes: 1024,
    unwind_files: 64,
};

/// What is remembered about one process.
struct ProcessCache {
    /// Its mappings, read at first sight; why not, when they could not be.
    image: Result<ProcessImage, String>,
    /// framehop's modules for `image`: added as unwinding reaches them, so
    /// the unwind data of libraries no stack goes through is never read.
    unwinder: ProcessUnwinder,
    /// Which mappings of `image` are modules of `unwinder`.
    modules: Vec<bool>,
    perf_map: PerfMap,
    /// A JVM's interpreter and method names; `None` until a JVM's stack is
    /// unwound, why not when they cannot be read.
    hotspot: Option<Result<HotSpot, String>>,
    /// Lookup address → its frames (several when calls were inlined).
    frames: HashMap<u64, Frames>,
    last_error: Option<String>,
    last_used: u64,
}

/// A stack as the kernel captured it: registers at system call entry and
/// the stack bytes above the stack pointer.
pub struct CapturedStack<'a> {
    pub tgid: u32,
    /// `task->mm` (0 when unknown): tells an exec or a reused pid apart.
    pub mm: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub stack: &'a [u8],
}

/// Symbolizes user stacks of processes, caching per file and offset (and
/// per process and address, for processes that have exited).
///
/// Not `Send`: blazesym's symbolizer uses `Rc` internally.
pub struct Symbolizer {
    backend: bz::Symbolizer,
    processes: HashMap<u32, ProcessCache>,
    files: OpenFiles,
    /// (file, file offset) → frames.
    offsets: Generations<(FileKey, u64), Frames>,
    /// Unwind sections per file; `None`: the file has none usable.
    sections: Generations<FileKey, Option<Rc<UnwindSections>>>,
    /// framehop's rule cache; its entries are per unwinder generation, so
    /// one serves every process.
    unwind_cache: CacheX86_64,
    /// Perf map requests to JVMs whose JIT code is not named yet.
    jvm: JvmPerfMaps,
    /// What the meeting thread read of processes that may be gone now.
    meeter: Option<Meeter>,
    /// The thread that parses files and names their offsets, when started
    /// (live sessions: see `start_naming_thread`).
    naming: Option<Naming>,
    /// Logical time for least-recently-used eviction of processes.
    tick: u64,
    limits: Limits,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

/// The interpreter and method names of JVM `tgid`, read the first time
/// (`slot`) from its memory and its `libjvm.so`.
fn hotspot_of<'a>(
    slot: &'a mut Option<Result<HotSpot, String>>,
    tgid: u32,
    image: &ProcessImage,
    files: &OpenFiles,
) -> Option<&'a mut HotSpot> {
    slot.get_or_insert_with(|| {
        let (mapping, key) = image
            .mappings
            .iter()
            .zip(&image.files)
            .find_map(|(mapping, file)| {
                let Backing::File(path) = &mapping.backing else {
                    return None;
                };
                let key = file.as_ref()?.as_ref().ok()?;
                path.ends_with("libjvm.so").then_some((mapping, key))
            })
            .ok_or("libjvm.so could not be opened")?;
        let file = files.file(key).ok_or("libjvm.so was closed")?;
        HotSpot::attach(tgid, mapping, file)
    })
    .as_mut()
    .ok()
}

impl Symbolizer {
    #[must_use]
    pub fn new() -> Self {
        Self::with_limits(LIMITS)
    }

    fn with_limits(limits: Limits) -> Self {
        Self {
            backend: bz::Symbolizer::new(),
            processes: HashMap::new(),
            files: OpenFiles::new(limits.open_files, limits.inodes),
            offsets: Generations::new(limits.offsets),
            sections: Generations::new(limits.unwind_files),
            unwind_cache: CacheX86_64::new(),
            jvm: JvmPerfMaps::new(true),
            meeter: None,
            naming: None,
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
        let lookups: Vec<u64> = ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| unwind::lookup_address(i, ip))
            .collect();

        self.touch(tgid, 0);
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
                    // An interpreted frame shows its `Method*`.
                    Some(frames) => {
                        frame::at_addr(frames, hotspot::method_of(ip).unwrap_or(ip)).collect()
                    }
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

    /// Takes what `meeter` meets: the mappings and files of processes that
    /// exited before they were symbolized.
    pub fn attach_meeter(&mut self, meeter: Meeter) {
        self.meeter = Some(meeter);
    }

    /// Parses files and names their offsets on a thread of its own from
    /// now on: see [`Self::ready_to_symbolize`].
    pub fn start_naming_thread(&mut self) -> std::io::Result<()> {
        let namer = Namer::spawn(self.limits.parsed_files, self.limits.parsed_idle)?;
        self.naming = Some(Naming::new(namer));
        Ok(())
    }

    /// Processes announced whose mappings were gone before they were read.
    #[must_use]
    pub fn processes_missed(&self) -> u64 {
        self.meeter.as_ref().map_or(0, |m| m.lock().missed)
    }

    /// The scheduling the meeting thread was granted.
    #[must_use]
    pub fn meeting_priority(&self) -> MeetingPriority {
        self.meeter
            .as_ref()
            .map_or(MeetingPriority::None, |m| m.priority)
    }

    /// Whether tcptrace may ask JVMs for their perf maps (on by default).
    pub fn set_jvm_perf_maps(&mut self, enabled: bool) {
        self.jvm.set_enabled(enabled);
    }

    /// Asks the JVMs asked before for a fresh perf map and waits (at most
    /// `limit`) for them, so that a last symbolization names what they
    /// compiled since.
    pub fn wait_for_perf_maps(&mut self, limit: Duration) {
        self.jvm.request_all_again();
        self.jvm.wait_idle(limit);
    }

    /// Why asking JVM `tgid` for its perf map failed, if it did.
    #[must_use]
    pub fn perf_map_failure(&self, tgid: u32) -> Option<&str> {
        self.jvm.failure(tgid)
    }

    /// Whether `addr` of `tgid` lies in anonymous memory: JIT code, which
    /// a perf map may name later.
    #[must_use]
    pub fn in_anonymous_code(&self, tgid: u32, addr: u64) -> bool {
        self.processes
            .get(&tgid)
            .and_then(|process| process.image.as_ref().ok())
            .and_then(|image| image.mapping_of(addr))
            .is_some_and(|(_, mapping)| matches!(mapping.backing, Backing::Anonymous))
    }

    /// Why the mappings of `tgid` are unknown, if they are.
    #[must_use]
    pub fn image_error(&self, tgid: u32) -> Option<&str> {
        self.processes
            .get(&tgid)?
            .image
            .as_ref()
            .err()
            .map(String::as_str)
    }

    /// Drops the cache of a process (it exited, or its pid was reused). What
    /// was learnt about its files stays.
    pub fn forget(&mut self, tgid: u32) {
        self.processes.remove(&tgid);
    }

    /// Unwinds a captured stack: instruction pointers, innermost first,
    /// ready for [`Self::symbolize`] (an interpreted Java frame is its
    /// method, tagged: see `hotspot`). Empty when the process's mappings
    /// are unknown (see [`Self::last_error`]).
    pub fn unwind(&mut self, captured: &CapturedStack) -> Vec<u64> {
        let tgid = captured.tgid;
        self.touch(tgid, captured.mm);
        let Self {
            processes,
            files,
            sections,
            unwind_cache,
            ..
        } = self;
        let process = processes.get_mut(&tgid).expect("touched above");
        let Ok(image) = &process.image else {
            return Vec::new();
        };
        // A system call is made from code mapped from a file: mappings
        // without it were read from a process tearing them down.
        if !image
            .mapping_of(captured.ip)
            .is_some_and(|(_, mapping)| mapping.executable)
        {
            process.image = Err(
                "the process exited before its mappings were read (they were being torn down)"
                    .to_owned(),
            );
            return Vec::new();
        }
        let captured = Captured {
            ip: captured.ip,
            sp: captured.sp,
            bp: captured.bp,
            stack: captured.stack,
        };
        process.modules.resize(image.mappings.len(), false);
        // Unwind; when a frame lies in code whose module is not added yet,
        // add it and unwind again (framehop's rules for the frames before
        // it are cached). At most once per mapping.
        for _ in 0..=image.mappings.len() {
            let frames = unwind::unwind(&process.unwinder, unwind_cache, &captured);
            let missing = frames.iter().enumerate().find_map(|(i, frame)| {
                let (index, _) = image.mapping_of(unwind::lookup_address(i, frame.ip))?;
                let key = image.files.get(index)?.as_ref()?.as_ref().ok()?;
                (!process.modules[index]).then_some((index, key))
            });
            let Some((index, key)) = missing else {
                let mut jvm = image
                    .jvm
                    .then(|| hotspot_of(&mut process.hotspot, tgid, image, files))
                    .flatten();
                return frames
                    .iter()
                    .map(|frame| match jvm.as_deref_mut() {
                        Some(jvm) => {
                            jvm.frame_address(frame.ip, frame.bp, |addr| captured.word_at(addr))
                        }
                        None => frame.ip,
                    })
                    .collect();
            };
            process.modules[index] = true;
            let file = if let Some(known) = sections.get(key) {
                known
            } else {
                // A file closed since it was found is read again for the
                // next process that maps it, not remembered as unreadable.
                let Some(open) = files.file(key) else {
                    continue;
                };
                let read = UnwindSections::read(open).ok().map(Rc::new);
                sections.insert(key.clone(), read.clone());
                read
            };
            if let Some(module) =
                file.and_then(|file| unwind::module_for(&image.mappings[index], &file))
            {
                process.unwinder.add_module(module);
            }
        }
        Vec::new()
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

    /// Marks `tgid` as just used, making room for it and reading its
    /// mappings if it is new, or if `mm` says it is another exec of it.
    fn touch(&mut self, tgid: u32, mm: u64) {
        self.tick += 1;
        let stale = self.processes.get(&tgid).is_some_and(|process| {
            let known = process.image.as_ref().map_or(0, |image| image.mm);
            mm != 0 && known != 0 && known != mm
        });
        if stale {
            self.forget(tgid);
        }
        if !self.processes.contains_key(&tgid) {
            if self.processes.len() >= self.limits.processes {
                let oldest = self
                    .processes
                    .iter()
                    .min_by_key(|(_, process)| process.last_used)
                    .map(|(&tgid, _)| tgid);
                if let Some(oldest) = oldest {
                    self.forget(oldest);
                }
            }
            let image = self.read_image(tgid, mm, false);
            self.processes.insert(
                tgid,
                ProcessCache {
                    image,
                    unwinder: ProcessUnwinder::new(),
                    modules: Vec::new(),
                    perf_map: PerfMap::default(),
                    hotspot: None,
                    frames: HashMap::new(),
                    last_error: None,
                    last_used: 0,
                },
            );
        }
        let process = self.processes.get_mut(&tgid).expect("inserted above");
        process.last_used = self.tick;
    }

    /// Reads the mappings of live process `tgid` and finds the file behind
    /// each mapping of code.
    /// With `live`, only the live process's mappings will do (they changed
    /// since it was met: a library loaded, new JIT code).
    fn read_image(&mut self, tgid: u32, mm: u64, live: bool) -> Result<ProcessImage, String> {
        // blazesym reads pid 0 as "self", and so would /proc paths built here.
        if tgid == 0 {
            return Err("tgid 0 is not a user process".to_owned());
        }
        // What the meeting thread read when the process took its first
        // stack: a process that is exiting shows its mappings going away.
        let met = self
            .meeter
            .as_ref()
            .filter(|_| !live)
            .and_then(|m| m.lock().maps(tgid, mm).map(process::parse_mappings))
            .filter(|mappings| !mappings.is_empty());
        let mappings = match met {
            Some(mappings) => mappings,
            None => process::read_mappings(tgid).map_err(|err| {
                format!("the process exited before its mappings were read ({err})")
            })?,
        };
        let files = mappings
            .iter()
            .map(|mapping| {
                let Backing::File(path) = &mapping.backing else {
                    return None;
                };
                if !mapping.executable {
                    return None;
                }
                // A file of a program met before: no system call at all.
                if let Some(key) = self.files.held(mapping.inode) {
                    return Some(Ok(key));
                }
                // Opened by the meeting thread while the process lived.
                let met = self
                    .meeter
                    .as_ref()
                    .and_then(|m| m.lock().file(mapping.inode));
                if let Some(file) = met {
                    let via = PathBuf::from(format!("/proc/{tgid}/root (met)"));
                    return Some(self.files.adopt_copy(&mut self.backend, &file, &via, path));
                }
                Some(self.files.find_mapped(&mut self.backend, tgid, mapping))
            })
            .collect();
        let jvm = mappings
            .iter()
            .any(|m| matches!(&m.backing, Backing::File(path) if path.ends_with("libjvm.so")));
        Ok(ProcessImage {
            mm,
            mappings,
            files,
            nspid: process::namespace_pid(tgid),
            jvm,
        })
    }
}
