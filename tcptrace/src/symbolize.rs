//! User stack addresses → call sites, with blazesym.
//!
//! Addresses are normalized while their process lives: blazesym's
//! `Normalizer` reads `/proc/<tgid>/maps` and turns each address into an
//! offset in an ELF file. Everything costly after that is keyed by *file*,
//! not by process, so thousands of short-lived processes of the same few
//! binaries (a shell loop running curl) cost one parse of each binary and
//! memory stays flat under process churn:
//!
//! - A file is identified by its build id, else by device, inode, size and
//!   mtime: the same binary mapped by many processes, or by containers from
//!   their own copies, is one file.
//! - A bounded LRU of open files. Each is opened once, through
//!   `/proc/<tgid>/root/<path>`: the path in `maps` names a file in the
//!   *process's* mount namespace, and that route needs only `CAP_SYS_PTRACE`
//!   (the daemon drops `CAP_SYS_ADMIN`, which `/proc/<tgid>/map_files`
//!   needs, after attaching). Its bytes at a few of the addresses are
//!   compared with the process's memory, so a file replaced since it was
//!   mapped is not used by mistake; then `/proc/<tgid>/exe` and, if still
//!   permitted, `map_files` are tried. blazesym reads the file as
//!   `/proc/self/fd/<n>`, valid as long as we hold it open whatever happens
//!   to the process.
//! - blazesym's parsed ELF/DWARF (tens of MiB for a large binary with debug
//!   info) is kept for the few files used last, dropped when idle, and always
//!   with the file: then that fd number cannot reach stale data.
//! - A bounded cache (file, offset) → frames shared by all processes, so a
//!   parse is needed only for call sites not seen before.
//! - Per process only its addresses → those shared frames, so frames
//!   resolved while a process lived still resolve after it exits (until
//!   `forget`). A process that exits before its first symbolization gives
//!   "??" frames and a reason in `last_error`.
//!
//! Anonymous memory (JIT code) is left to blazesym's per-process perf map
//! support, the vDSO to the normalizer.

use std::{
    collections::HashMap,
    ffi::OsString,
    fs::{self, File},
    hash::Hash,
    os::{
        fd::AsRawFd,
        unix::{
            ffi::OsStrExt,
            fs::{FileExt, MetadataExt, OpenOptionsExt},
        },
    },
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use blazesym::{
    helper::{read_elf_build_id, ElfResolver},
    normalize::{NormalizeOpts, Normalizer, Reason, UserMeta},
    symbolize::{
        self as bz, evict,
        source::{Elf, Process, Source},
        CodeInfo, Input, Symbolized,
    },
    Pid,
};

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
    /// Parsed data unused this long is dropped: after warm-up, when call
    /// sites are known, memory goes back to the caches.
    parsed_idle: Duration,
    /// (file, offset) → frames entries over all files.
    offsets: usize,
    /// stat identity → file identity entries (one per path/copy seen).
    inodes: usize,
}

const LIMITS: Limits = Limits {
    processes: 64,
    addrs_per_process: 4096,
    open_files: 32,
    parsed_files: 4,
    parsed_idle: Duration::from_secs(30),
    offsets: 16_384,
    inodes: 1024,
};

/// Bytes compared between the process's memory and the file we opened, at
/// up to `MAX_PROBES` addresses.
const CODE_CHECK_LEN: usize = 16;
const MAX_PROBES: usize = 3;

const UNKNOWN: &str = "??";

/// One symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Frame {
    pub addr: u64,
    /// Demangled, without the Rust hash suffix; "??" when unknown.
    pub function: String,
    /// Path of the ELF (e.g. /usr/lib/x86_64-linux-gnu/libc.so.6).
    pub module: Option<String>,
    /// Source file, when debug info exists.
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl Frame {
    fn unknown(addr: u64) -> Self {
        Self {
            addr,
            function: UNKNOWN.to_owned(),
            module: None,
            file: None,
            line: None,
        }
    }

    fn known(addr: u64, function: &str, module: Option<&str>, code: Option<&CodeInfo>) -> Self {
        Self {
            addr,
            function: function.to_owned(),
            module: module.map(ToOwned::to_owned),
            file: code.map(|code| code.to_path().to_string_lossy().into_owned()),
            line: code.and_then(|code| code.line),
        }
    }
}

/// Frames of one lookup address, innermost first; shared between the
/// per-process caches and the per-file one. `addr` is set on the way out.
type Frames = Rc<[Frame]>;

/// Frames per address (`None`: its file could not be used) and why some
/// could not.
type Resolved = (Vec<Option<Frames>>, Option<String>);

/// What is remembered about one process.
struct ProcessCache {
    /// Lookup address → its frames (several when calls were inlined).
    frames: HashMap<u64, Frames>,
    last_error: Option<String>,
    last_used: u64,
}

/// What identifies a file's contents across processes, paths and mount
/// namespaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FileKey {
    BuildId(Rc<[u8]>),
    /// Files without a build id.
    Inode(Inode),
}

/// A file's identity as `stat` sees it; size and mtime guard against inode
/// numbers reused after a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Inode {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl From<&fs::Metadata> for Inode {
    fn from(meta: &fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

/// An ELF file we hold open.
struct OpenFile {
    /// Keeps `fd_path` naming this very file, whatever happens to its paths
    /// or to the processes that mapped it.
    file: File,
    /// `/proc/self/fd/<n>`: how blazesym opens it.
    fd_path: PathBuf,
    /// Its path as the first process we saw mapping it names it.
    module: String,
    /// The path it was opened by (`/proc/<tgid>/root/...`, ...).
    opened_via: PathBuf,
    /// When blazesym may hold a resolver for `fd_path` (made on first use,
    /// dropped when idle), its last use.
    parsed: Option<Instant>,
    last_used: u64,
}

/// A map bounded to `capacity` (≥ 2) entries that drops the least recently
/// used half at a time: new and used entries go to `young`; a full `young`
/// becomes `old`, and the previous `old` is dropped. O(1), no clock.
struct Generations<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> Generations<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            capacity,
        }
    }

    fn get(&mut self, key: &K) -> Option<V> {
        if let Some(value) = self.young.get(key) {
            return Some(value.clone());
        }
        let value = self.old.remove(key)?;
        self.insert(key.clone(), value.clone());
        Some(value)
    }

    fn insert(&mut self, key: K, value: V) {
        if !self.young.contains_key(&key) && self.young.len() >= (self.capacity / 2).max(1) {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&key);
        self.young.insert(key, value);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// What an address normalized to.
enum Target {
    /// An offset in this file (path in the process's mount namespace).
    Elf(PathBuf),
    /// Already symbolized by the normalizer (the vDSO).
    Frames(Frames),
    /// Anonymous memory: maybe JIT code named in a perf map.
    Anonymous,
    Unknown,
}

impl From<UserMeta<'_>> for Target {
    fn from(meta: UserMeta<'_>) -> Self {
        match meta {
            UserMeta::Elf(elf) => Self::Elf(elf.path),
            UserMeta::Sym(sym) => Self::Frames(frames_at(&Symbolized::Sym(sym), None).into()),
            UserMeta::Unknown(unknown) if unknown.reason == Reason::MissingComponent => {
                Self::Anonymous
            }
            _ => Self::Unknown,
        }
    }
}

/// Symbolizes user stacks of processes, caching per file and offset (and
/// per process and address, for processes that have exited).
///
/// Not `Send`: blazesym's symbolizer uses `Rc` internally.
pub struct Symbolizer {
    backend: bz::Symbolizer,
    normalizer: Normalizer,
    processes: HashMap<u32, ProcessCache>,
    files: HashMap<FileKey, OpenFile>,
    /// Which file a stat identity holds, so a file already open is found
    /// without opening it again.
    inodes: Generations<Inode, FileKey>,
    /// (file, file offset) → frames.
    offsets: Generations<(FileKey, u64), Frames>,
    /// Files opened and blazesym resolvers made so far (each is a parse).
    files_opened: u64,
    resolvers_made: u64,
    /// Logical time for least-recently-used eviction.
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
            files: HashMap::new(),
            inodes: Generations::new(limits.inodes),
            offsets: Generations::new(limits.offsets),
            files_opened: 0,
            resolvers_made: 0,
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
        self.release_parsed(self.limits.parsed_files);
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
                let frames = fresh.get(lookup).or_else(|| process.frames.get(lookup));
                frames.map_or_else(
                    || vec![Frame::unknown(ip)],
                    |frames| {
                        frames
                            .iter()
                            .map(|frame| Frame {
                                addr: ip,
                                ..frame.clone()
                            })
                            .collect()
                    },
                )
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

    /// Marks `tgid` as just used, making room for it if it is new.
    fn touch(&mut self, tgid: u32) {
        self.tick += 1;
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
            self.processes.insert(
                tgid,
                ProcessCache {
                    frames: HashMap::new(),
                    last_error: None,
                    last_used: 0,
                },
            );
        }
        if let Some(process) = self.processes.get_mut(&tgid) {
            process.last_used = self.tick;
        }
    }

    /// Frames of sorted, distinct `addrs` of live process `tgid`, `None`
    /// where the file could not be used (the reason is the second value).
    fn resolve(&mut self, tgid: u32, addrs: &[u64]) -> Result<Resolved, String> {
        // blazesym reads pid 0 as "self": never symbolize the tracer instead.
        if tgid == 0 {
            return Err("tgid 0 is not a user process".to_owned());
        }
        let opts = NormalizeOpts {
            sorted_addrs: true,
            map_files: false,
            ..NormalizeOpts::default()
        };
        let normalized = self
            .normalizer
            .normalize_user_addrs_opts(Pid::from(tgid), addrs, &opts)
            .map_err(|err| format!("{err:#}"))?;
        let outputs = normalized.outputs;
        let targets: Vec<Target> = normalized.meta.into_iter().map(Target::from).collect();
        // Indexes into `addrs` by target.
        let mut members = vec![Vec::new(); targets.len()];
        for (i, &(_, target)) in outputs.iter().enumerate() {
            members[target].push(i);
        }

        let unknown: Frames = [Frame::unknown(0)].into();
        let mut frames = vec![None; addrs.len()];
        let mut errors = Vec::new();
        for (target, members) in targets.iter().zip(&members) {
            match target {
                Target::Frames(symbolized) => {
                    for &i in members {
                        frames[i] = Some(Rc::clone(symbolized));
                    }
                }
                Target::Unknown => {
                    for &i in members {
                        frames[i] = Some(Rc::clone(&unknown));
                    }
                }
                Target::Anonymous => {
                    let anon: Vec<u64> = members.iter().map(|&i| addrs[i]).collect();
                    for (&i, resolved) in members.iter().zip(self.perf_map(tgid, &anon)) {
                        frames[i] = Some(resolved.unwrap_or_else(|| Rc::clone(&unknown)));
                    }
                }
                Target::Elf(path) => {
                    let at: Vec<(u64, u64)> =
                        members.iter().map(|&i| (addrs[i], outputs[i].0)).collect();
                    match self.resolve_in_file(tgid, path, &at) {
                        Ok(resolved) => {
                            for (&i, resolved) in members.iter().zip(resolved) {
                                frames[i] = Some(resolved);
                            }
                        }
                        Err(err) => errors.push(format!("{}: {err}", path.display())),
                    }
                }
            }
        }
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        Ok((frames, error))
    }

    /// Frames of `at` = (address, file offset) pairs of `tgid` in the file
    /// the process maps at `path`.
    fn resolve_in_file(
        &mut self,
        tgid: u32,
        path: &Path,
        at: &[(u64, u64)],
    ) -> Result<Vec<Frames>, String> {
        if at.is_empty() {
            return Ok(Vec::new());
        }
        // A few addresses to check the file with: one may be a stray word
        // (e.g. in data, which relocations change) rather than code.
        let probes = &at[..at.len().min(MAX_PROBES)];
        let key = self.file_of(tgid, path, probes)?;
        let mut frames: Vec<Option<Frames>> = at
            .iter()
            .map(|&(_, offset)| self.offsets.get(&(key.clone(), offset)))
            .collect();
        let missing: Vec<u64> = at
            .iter()
            .zip(&frames)
            .filter(|(_, frames)| frames.is_none())
            .map(|(&(_, offset), _)| offset)
            .collect();
        if !missing.is_empty() {
            let mut fresh = self.symbolize_offsets(&key, &missing)?.into_iter();
            for (&(_, offset), frames) in at.iter().zip(&mut frames) {
                if frames.is_none() {
                    let resolved = fresh.next().expect("one per missing offset");
                    self.offsets
                        .insert((key.clone(), offset), Rc::clone(&resolved));
                    *frames = Some(resolved);
                }
            }
        }
        Ok(frames.into_iter().flatten().collect())
    }

    /// The open file that is what `tgid` maps at `path`, checked at
    /// `probes` = (address, file offset) pairs (at least one).
    fn file_of(
        &mut self,
        tgid: u32,
        path: &Path,
        probes: &[(u64, u64)],
    ) -> Result<FileKey, String> {
        // Unreadable memory (the process is exiting) cannot say no.
        let mem = File::open(format!("/proc/{tgid}/mem")).ok();
        let mut failures = Vec::new();
        for step in 0..4 {
            let candidate = match step {
                // The path in the process's mount namespace, through its root.
                0 => {
                    let mut in_root = OsString::from(format!("/proc/{tgid}/root"));
                    in_root.push(path);
                    Some(PathBuf::from(in_root))
                }
                // A chrooted process in our namespace: `maps` names paths
                // from our root.
                1 => same_mount_namespace(tgid).then(|| path.to_owned()),
                // A replaced executable still opens through `exe`
                // (CAP_SYS_PTRACE).
                2 => {
                    let exe = PathBuf::from(format!("/proc/{tgid}/exe"));
                    fs::read_link(&exe)
                        .is_ok_and(|target| {
                            let target = target.as_os_str().as_bytes();
                            target.strip_suffix(b" (deleted)").unwrap_or(target)
                                == path.as_os_str().as_bytes()
                        })
                        .then_some(exe)
                }
                // Last resort, e.g. a replaced library; needs CAP_SYS_ADMIN.
                _ => self.map_file(tgid, probes[0].0),
            };
            let Some(candidate) = candidate else { continue };
            match self.open_checked(&candidate, path, mem.as_ref(), probes) {
                Ok(key) => return Ok(key),
                Err(err) => failures.push(format!("{}: {err}", candidate.display())),
            }
        }
        Err(failures.join("; "))
    }

    /// Opens `candidate` if it is the file the process maps: its bytes match
    /// the process's memory at one of `probes`, or the memory is unreadable.
    fn open_checked(
        &mut self,
        candidate: &Path,
        module: &Path,
        mem: Option<&File>,
        probes: &[(u64, u64)],
    ) -> Result<FileKey, String> {
        let key = self.open(candidate, module)?;
        let file = &self.files[&key].file;
        let checks: Vec<Option<bool>> = probes
            .iter()
            .map(|&probe| code_matches(mem, probe, file))
            .collect();
        if checks.contains(&Some(false)) && !checks.contains(&Some(true)) {
            return Err("not the file the process maps (replaced since?)".to_owned());
        }
        Ok(key)
    }

    /// `/proc/<tgid>/map_files/<range>` of the mapping holding `addr`.
    fn map_file(&self, tgid: u32, addr: u64) -> Option<PathBuf> {
        let opts = NormalizeOpts {
            sorted_addrs: true,
            map_files: true,
            ..NormalizeOpts::default()
        };
        let normalized = self
            .normalizer
            .normalize_user_addrs_opts(Pid::from(tgid), &[addr], &opts)
            .ok()?;
        let (_, target) = normalized.outputs.first()?;
        Some(normalized.meta.get(*target)?.as_elf()?.path.clone())
    }

    /// Opens the ELF file at `path` unless the same file is open already;
    /// `module` is how the process names it.
    fn open(&mut self, path: &Path, module: &Path) -> Result<FileKey, String> {
        self.tick += 1;
        let meta = fs::metadata(path).map_err(|err| err.to_string())?;
        // Never a FIFO or device a process could put at a path to block us.
        if !meta.is_file() {
            return Err("not a regular file".to_owned());
        }
        if let Some(key) = self.inodes.get(&Inode::from(&meta)) {
            if let Some(open) = self.files.get_mut(&key) {
                open.last_used = self.tick;
                return Ok(key);
            }
        }
        // Room first, so the evicted file's fd number may name this one:
        // blazesym must have forgotten the old file by then.
        if self.files.len() >= self.limits.open_files {
            self.evict_file();
        }
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|err| err.to_string())?;
        // The identity of what was opened, not of what was stat'ed.
        let meta = file.metadata().map_err(|err| err.to_string())?;
        if !meta.is_file() {
            return Err("not a regular file".to_owned());
        }
        let inode = Inode::from(&meta);
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let key = match read_elf_build_id(&fd_path) {
            Ok(Some(build_id)) => FileKey::BuildId(build_id.into_owned().into()),
            Ok(None) => FileKey::Inode(inode),
            Err(err) => return Err(format!("{err:#}")),
        };
        self.inodes.insert(inode, key.clone());
        if let Some(open) = self.files.get_mut(&key) {
            // Another copy of a file already open (e.g. another container's).
            open.last_used = self.tick;
            return Ok(key);
        }
        self.files_opened += 1;
        self.files.insert(
            key.clone(),
            OpenFile {
                file,
                fd_path,
                module: module.to_string_lossy().into_owned(),
                opened_via: path.to_owned(),
                parsed: None,
                last_used: self.tick,
            },
        );
        Ok(key)
    }

    /// Closes the least recently used file.
    fn evict_file(&mut self) {
        let Some(key) = self
            .files
            .iter()
            .min_by_key(|(_, open)| open.last_used)
            .map(|(key, _)| key.clone())
        else {
            return;
        };
        let Some(open) = self.files.remove(&key) else {
            return;
        };
        if open.parsed.is_some() {
            // Its parsed ELF/DWARF and fd go; "not cached" is not an error.
            let _ = self.backend.evict(&evict::Elf::new(&open.fd_path).into());
        }
    }

    /// Drops blazesym's parsed data of files unused for `parsed_idle`, and
    /// of the least recently used beyond `keep` files. The files stay open.
    fn release_parsed(&mut self, keep: usize) {
        let now = Instant::now();
        let mut parsed: Vec<(Instant, &FileKey)> = self
            .files
            .iter()
            .filter_map(|(key, open)| Some((open.parsed?, key)))
            .collect();
        parsed.sort_unstable_by_key(|&(used, _)| std::cmp::Reverse(used));
        let release: Vec<FileKey> = parsed
            .iter()
            .enumerate()
            .filter(|&(i, &(used, _))| i >= keep || now - used >= self.limits.parsed_idle)
            .map(|(_, &(_, key))| key.clone())
            .collect();
        for key in release {
            if let Some(open) = self.files.get_mut(&key) {
                open.parsed = None;
                let _ = self.backend.evict(&evict::Elf::new(&open.fd_path).into());
            }
        }
    }

    /// Asks blazesym for file `offsets` of the open file `key`.
    fn symbolize_offsets(&mut self, key: &FileKey, offsets: &[u64]) -> Result<Vec<Frames>, String> {
        if self
            .files
            .get(key)
            .is_some_and(|open| open.parsed.is_none())
        {
            // Room for one more parsed file.
            self.release_parsed(self.limits.parsed_files.saturating_sub(1));
        }
        let open = self.files.get_mut(key).expect("opened by the caller");
        self.tick += 1;
        open.last_used = self.tick;
        let failed = |err: blazesym::Error| {
            format!(
                "{} (as {}): {err:#}",
                open.opened_via.display(),
                open.fd_path.display()
            )
        };
        let unparsed = open.parsed.is_none();
        // From here on blazesym may hold state for `fd_path`: evict it with
        // the file whatever happens next.
        open.parsed = Some(Instant::now());
        if unparsed {
            // Our own resolver rather than blazesym's file cache: the debug
            // link and .dwp files it opens then belong to it and go with it.
            let resolver = ElfResolver::open(&open.fd_path).map_err(failed)?;
            self.backend
                .register_elf_resolver(&open.fd_path, Rc::new(resolver))
                .map_err(failed)?;
            self.resolvers_made += 1;
        }
        let symbolized = self
            .backend
            .symbolize(
                &Source::Elf(Elf::new(&open.fd_path)),
                Input::FileOffset(offsets),
            )
            .map_err(failed)?;
        Ok(symbolized
            .iter()
            .map(|symbolized| frames_at(symbolized, Some(&open.module)).into())
            .collect())
    }

    /// JIT code in anonymous memory, named by the process's perf map if it
    /// writes one (`/tmp/perf-<pid>.map`); `None` where nothing is known.
    fn perf_map(&self, tgid: u32, addrs: &[u64]) -> Vec<Option<Frames>> {
        let mut process = Process::new(Pid::from(tgid));
        process.map_files = false;
        let Ok(symbolized) = self
            .backend
            .symbolize(&Source::Process(process), Input::AbsAddr(addrs))
        else {
            return vec![None; addrs.len()];
        };
        symbolized
            .iter()
            .map(|symbolized| {
                matches!(symbolized, Symbolized::Sym(_)).then(|| frames_at(symbolized, None).into())
            })
            .collect()
    }
}

/// Whether `tgid` shares our mount namespace.
fn same_mount_namespace(tgid: u32) -> bool {
    let ns = |pid: &str| {
        fs::metadata(format!("/proc/{pid}/ns/mnt")).map(|meta| (meta.dev(), meta.ino()))
    };
    matches!((ns("self"), ns(&tgid.to_string())), (Ok(ours), Ok(theirs)) if ours == theirs)
}

/// Whether `file` holds at `probe.1` the bytes the process has at `probe.0`:
/// `None` when the process's memory cannot be read.
fn code_matches(mem: Option<&File>, probe: (u64, u64), file: &File) -> Option<bool> {
    let (addr, offset) = probe;
    // Within `addr`'s 4 KiB block, so within its page: the next may be unmapped.
    let in_page = 4096 - usize::try_from(addr % 4096).ok()?;
    let len = CODE_CHECK_LEN.min(in_page);
    let mut theirs = [0; CODE_CHECK_LEN];
    let read = mem?.read_at(&mut theirs[..len], addr).ok()?;
    if read == 0 {
        return None;
    }
    let mut ours = [0; CODE_CHECK_LEN];
    let matched = file
        .read_at(&mut ours[..read], offset)
        .is_ok_and(|n| n == read && ours[..read] == theirs[..read]);
    Some(matched)
}

/// The frames of one symbolized address, innermost first. `module`
/// overrides blazesym's, which is the path it was given.
fn frames_at(symbolized: &Symbolized, module: Option<&str>) -> Vec<Frame> {
    let Symbolized::Sym(sym) = symbolized else {
        return vec![Frame::unknown(0)];
    };
    let theirs = sym
        .module
        .as_ref()
        .map(|module| module.to_string_lossy().into_owned());
    let module = module.or(theirs.as_deref());
    // blazesym lists inlined calls outermost first, each with the location
    // inside it (the next call, or `addr` for the last); `sym.code_info` is
    // the location in the function they were inlined into.
    let mut frames: Vec<Frame> = sym
        .inlined
        .iter()
        .rev()
        .map(|inlined| Frame::known(0, &inlined.name, module, inlined.code_info.as_ref()))
        .collect();
    frames.push(Frame::known(0, &sym.name, module, sym.code_info.as_deref()));
    frames
}

/// The frame that names the call site: the first frame (innermost first)
/// with a known function outside libc/ld.so, the Rust standard library and
/// runtimes, and libc syscall wrappers (which statically linked binaries
/// carry in their own module). Falls back to the first frame with a known
/// function.
#[must_use]
pub fn call_site(frames: &[Frame]) -> Option<&Frame> {
    let known = || frames.iter().filter(|frame| frame.function != UNKNOWN);
    known()
        .find(|frame| !is_libc_module(frame.module.as_deref()) && !is_plumbing_fn(&frame.function))
        .or_else(|| known().next())
}

/// File names of glibc and musl libc and dynamic loaders.
const LIBC_MODULES: &[&str] = &[
    "libc.so",
    "libc-",
    "libc.musl",
    "libpthread",
    "ld-linux",
    "ld-musl",
    "ld64.so",
];

fn is_libc_module(module: Option<&str>) -> bool {
    let Some(module) = module else { return false };
    let name = module.rsplit('/').next().unwrap_or(module);
    LIBC_MODULES.iter().any(|prefix| name.starts_with(prefix))
}

/// libc functions a statically linked binary carries: syscall wrappers of
/// glibc and musl, and process start-up.
const LIBC_FUNCTIONS: &[&str] = &[
    "syscall",
    "__syscall",
    "__syscall_cp",
    "__syscall_cp_c",
    "__syscall_cp_asm",
    "__syscall_cancel",
    "__syscall_cancel_arch",
    "__internal_syscall_cancel",
    "socket",
    "__socket",
    "bind",
    "__bind",
    "connect",
    "__connect",
    "__libc_connect",
    "listen",
    "__listen",
    "accept",
    "accept4",
    "__libc_accept",
    "__libc_accept4",
    "shutdown",
    "__shutdown",
    "close",
    "__close",
    "__libc_close",
    "__close_nocancel",
    "close_range",
    "__close_range",
    "_start",
    "__libc_start_main",
    "__libc_start_main_impl",
    "__libc_start_call_main",
];

/// Crates whose frames are plumbing between the user's code and the syscall.
const RUNTIME_CRATES: &[&str] = &["std", "core", "alloc", "tokio", "mio", "socket2"];

fn is_plumbing_fn(function: &str) -> bool {
    if LIBC_FUNCTIONS.contains(&function) {
        return true;
    }
    match split_qualified(function) {
        None => in_runtime_crate(function),
        Some((self_ty, None)) => in_runtime_crate(without_indirection(self_ty)),
        // `<T as Trait>::f` is the code of T's owner: a user's `Drop` that
        // closes a socket is the call site. Blanket impls over references and
        // pointers, and impls on runtime types, are the runtime's.
        Some((self_ty, Some(trait_path))) => {
            in_runtime_crate(trait_path)
                && (self_ty.starts_with(['&', '*'])
                    || in_runtime_crate(without_indirection(self_ty)))
        }
    }
}

/// `<Type as Trait>::f` → (Type, Some(Trait...)); `<Type>::f` → (Type, None).
fn split_qualified(function: &str) -> Option<(&str, Option<&str>)> {
    let inner = function.strip_prefix('<')?;
    let mut depth = 0_usize;
    for (i, c) in inner.char_indices() {
        match c {
            '<' => depth += 1,
            '>' if inner[..i].ends_with('-') => {} // `fn() -> T`
            '>' if depth == 0 => return Some((&inner[..i], None)),
            '>' => depth -= 1,
            ' ' if depth == 0 && inner[i..].starts_with(" as ") => {
                return Some((&inner[..i], Some(&inner[i + " as ".len()..])));
            }
            _ => {}
        }
    }
    None
}

/// `&mut [std::net::TcpStream]` → `std::net::TcpStream]`: enough to see the crate.
fn without_indirection(mut ty: &str) -> &str {
    loop {
        let rest = ty
            .trim_start_matches(['&', '*', '[', '(', ' '])
            .trim_start_matches("mut ")
            .trim_start_matches("const ")
            .trim_start_matches("dyn ");
        if rest.len() == ty.len() {
            return ty;
        }
        ty = rest;
    }
}

fn in_runtime_crate(path: &str) -> bool {
    RUNTIME_CRATES.iter().any(|krate| {
        path.strip_prefix(krate)
            .is_some_and(|rest| rest.starts_with("::"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn some_distinctively_named_fn(x: u64) -> u64 {
        let mut acc = std::hint::black_box(x);
        for i in 0..std::hint::black_box(8) {
            acc = acc.wrapping_mul(31).wrapping_add(i);
        }
        acc
    }

    fn own_fn_addr() -> u64 {
        std::hint::black_box(some_distinctively_named_fn(1));
        some_distinctively_named_fn as *const () as u64
    }

    fn libc_fn_addr() -> u64 {
        libc::getpid as *const () as u64
    }

    #[test]
    fn symbolizes_own_function() {
        let start = own_fn_addr();
        let mut symbolizer = Symbolizer::new();
        // Innermost ip is used as is; the second is a "return address", looked up at -1.
        let ips = [start, start + 5];
        let frames = symbolizer.symbolize(std::process::id(), &ips);
        assert_eq!(symbolizer.last_error(std::process::id()), None);
        // Calls inlined at an address (black_box here) come first, with its
        // addr; the function they were compiled into comes last.
        assert_eq!(outer_functions(&frames, &ips).len(), 2, "{frames:#?}");
        let exe = std::env::current_exe().unwrap();
        for (frame, next) in frames
            .iter()
            .zip(frames.iter().skip(1).map(Some).chain([None]))
        {
            assert!(ips.contains(&frame.addr), "{frame:?}");
            let last = frame.function.rsplit("::").next().unwrap();
            let hash = last.len() == 17
                && last.starts_with('h')
                && last[1..].chars().all(|c| c.is_ascii_hexdigit());
            assert!(!hash, "hash not stripped: {frame:?}");
            assert!(frame.line.is_some(), "{frame:?}");
            assert_eq!(frame.module.as_deref(), exe.to_str(), "{frame:?}");
            if next.is_none_or(|next| next.addr != frame.addr) {
                assert!(
                    frame.function.contains("some_distinctively_named_fn"),
                    "{frame:?}"
                );
                assert!(
                    frame
                        .file
                        .as_deref()
                        .is_some_and(|f| f.ends_with("symbolize.rs")),
                    "{frame:?}"
                );
            }
        }
        // Cached now: the same answer without asking blazesym.
        assert_eq!(symbolizer.processes[&std::process::id()].frames.len(), 2);
        assert_eq!(symbolizer.offsets.len(), 2);
        assert_eq!(symbolizer.symbolize(std::process::id(), &ips), frames);
        assert_eq!(symbolizer.resolvers_made, 1);
    }

    /// The function each of `ips` was compiled into (the last of its
    /// frames), checking there are frames for `ips` in their order.
    fn outer_functions<'a>(frames: &'a [Frame], ips: &[u64]) -> Vec<&'a str> {
        let mut outer: Vec<(u64, &str)> = Vec::new();
        for frame in frames {
            match outer.last_mut() {
                Some((addr, function)) if *addr == frame.addr => *function = &frame.function,
                _ => outer.push((frame.addr, &frame.function)),
            }
        }
        let addrs: Vec<u64> = outer.iter().map(|(addr, _)| *addr).collect();
        assert_eq!(addrs, ips, "{frames:#?}");
        outer.into_iter().map(|(_, function)| function).collect()
    }

    #[test]
    fn missing_process_gives_unknown_frames() {
        // Above the kernel's pid_max limit (2^22): never a live process.
        let tgid = 4_194_304 + 17;
        let mut symbolizer = Symbolizer::new();
        let frames = symbolizer.symbolize(tgid, &[0x1000, 0x2000]);
        assert_eq!(frames, vec![Frame::unknown(0x1000), Frame::unknown(0x2000)]);
        assert!(symbolizer.last_error(tgid).is_some());
        assert_eq!(call_site(&frames), None);

        // Pid 0 would be "self" to blazesym.
        let frames = symbolizer.symbolize(0, &[own_fn_addr()]);
        assert_eq!(frames[0].function, UNKNOWN);
        assert!(symbolizer.last_error(0).is_some());
    }

    #[test]
    fn cache_outlives_the_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let tgid = child.id();
        let ip = child_addr_of(tgid, libc_fn_addr());
        let mut symbolizer = Symbolizer::new();
        let alive = symbolizer.symbolize(tgid, &[ip, ip + 1]);
        assert!(
            alive.iter().any(|f| f.function.contains("getpid")),
            "{alive:#?}"
        );

        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(symbolizer.symbolize(tgid, &[ip, ip + 1]), alive);
        assert_eq!(symbolizer.last_error(tgid), None);
        // Never seen while alive: unknown now, with the reason.
        assert_eq!(symbolizer.symbolize(tgid, &[ip + 2])[0].function, UNKNOWN);
        assert!(symbolizer.last_error(tgid).is_some());

        symbolizer.forget(tgid);
        assert_eq!(symbolizer.symbolize(tgid, &[ip])[0].function, UNKNOWN);
    }

    /// The address in process `tgid` of the code at `our_addr` in this one,
    /// which must lie in a file both map (e.g. libc).
    fn child_addr_of(tgid: u32, our_addr: u64) -> u64 {
        child_addr_in(tgid, our_addr, |ours, theirs| ours == theirs)
    }

    /// Same, where `same_file(our path, their path)` says which of their
    /// mappings holds a copy of our file.
    fn child_addr_in(tgid: u32, our_addr: u64, same_file: impl Fn(&str, &str) -> bool) -> u64 {
        // (start, end, file offset, path) of executable file mappings.
        let text_maps = |pid: &str| -> Vec<(u64, u64, u64, String)> {
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            maps.lines()
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let (range, perms, offset, path) =
                        (fields[0], fields[1], fields[2], *fields.get(5)?);
                    let (start, end) = range.split_once('-')?;
                    let hex = |s| u64::from_str_radix(s, 16).ok();
                    perms.contains('x').then_some((
                        hex(start)?,
                        hex(end)?,
                        hex(offset)?,
                        path.to_owned(),
                    ))
                })
                .collect()
        };
        let (start, _, offset, path) = text_maps("self")
            .into_iter()
            .find(|(start, end, ..)| (*start..*end).contains(&our_addr))
            .expect("address is in a file mapping");
        // The dynamic loader maps libraries only after exec returns.
        for _ in 0..500 {
            let theirs = text_maps(&tgid.to_string())
                .into_iter()
                .find(|(_, _, o, p)| *o == offset && same_file(&path, p));
            if let Some((their_start, ..)) = theirs {
                return their_start + (our_addr - start);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{path} never mapped in {tgid}");
    }

    /// Child processes of this test binary run this to stay alive.
    #[test]
    #[ignore = "helper: run by child processes of other tests"]
    fn child_sleeper() {
        if std::env::var_os("TCPTRACE_TEST_SLEEPER").is_some() {
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    }

    /// A process of this very binary, alive until killed (or 60 s).
    fn spawn_sleeper() -> std::process::Child {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "symbolize::tests::child_sleeper",
                "--ignored",
                "--test-threads=1",
                "-q",
            ])
            .env("TCPTRACE_TEST_SLEEPER", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    #[test]
    fn binary_parsed_once_for_many_processes() {
        let ours = own_fn_addr();
        let mut symbolizer = Symbolizer::new();
        for _ in 0..200 {
            let mut child = spawn_sleeper();
            let tgid = child.id();
            let ip = child_addr_of(tgid, ours);
            let frames = symbolizer.symbolize(tgid, &[ip, ip + 5]);
            child.kill().unwrap();
            child.wait().unwrap();
            assert_eq!(symbolizer.last_error(tgid), None);
            let outer = outer_functions(&frames, &[ip, ip + 5]);
            assert!(
                outer
                    .iter()
                    .all(|f| f.contains("some_distinctively_named_fn")),
                "{frames:#?}"
            );
        }
        // One open, one parse, two offsets: not per process.
        assert_eq!(symbolizer.files_opened, 1);
        assert_eq!(symbolizer.resolvers_made, 1);
        assert_eq!(symbolizer.files.len(), 1);
        assert_eq!(symbolizer.inodes.len(), 1);
        assert_eq!(symbolizer.offsets.len(), 2);
        assert_eq!(symbolizer.processes.len(), LIMITS.processes);
    }

    #[test]
    fn copies_of_a_file_are_one_file() {
        // Two copies of libc, loaded by two processes: other inodes, one build id.
        let libc = libc_path();
        let dir = TempDir::new("copies");
        let mut children = Vec::new();
        let mut symbolizer = Symbolizer::new();
        for copy in ["a", "b"] {
            let copy = dir.0.join(copy);
            fs::create_dir(&copy).unwrap();
            fs::copy(&libc, copy.join(Path::new(&libc).file_name().unwrap())).unwrap();
            let child = std::process::Command::new("sleep")
                .arg("30")
                .env("LD_LIBRARY_PATH", &copy)
                .spawn()
                .unwrap();
            let tgid = child.id();
            children.push(child);
            let copy = copy.to_str().unwrap().to_owned();
            let ip = child_addr_in(tgid, libc_fn_addr(), |_, theirs| theirs.starts_with(&copy));
            let frames = symbolizer.symbolize(tgid, &[ip]);
            assert_eq!(symbolizer.last_error(tgid), None);
            assert!(frames[0].function.contains("getpid"), "{frames:#?}");
        }
        for mut child in children {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        // (Debian's libc has a build id; without one they would be two files.)
        assert_eq!(symbolizer.files_opened, 1);
        assert_eq!(symbolizer.inodes.len(), 2);
    }

    #[test]
    fn opens_files_through_the_process_root() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let tgid = child.id();
        let ip = child_addr_of(tgid, libc_fn_addr());
        let mut symbolizer = Symbolizer::new();
        let frames = symbolizer.symbolize(tgid, &[ip]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(frames[0].function.contains("getpid"), "{frames:#?}");
        assert_eq!(frames[0].module.as_deref(), Some(libc_path().as_str()));
        let opened: Vec<&Path> = symbolizer
            .files
            .values()
            .map(|open| open.opened_via.as_path())
            .collect();
        assert_eq!(
            opened,
            [Path::new(&format!("/proc/{tgid}/root{}", libc_path()))]
        );
    }

    /// A process in its own mount namespace loads libc from a directory that
    /// in ours holds something else: only `/proc/<pid>/root` finds its file.
    /// Symbolized with only the capabilities the daemon keeps after attach.
    #[test]
    fn symbolizes_a_process_in_another_mount_namespace() {
        let dir = TempDir::new("mntns");
        let libc = libc_path();
        let name = Path::new(&libc).file_name().unwrap().to_str().unwrap();
        // What the bare path names in our namespace: another ELF file.
        fs::copy("/bin/true", dir.0.join(name)).unwrap();
        let dir_s = dir.0.to_str().unwrap();
        let script = format!(
            "mount -t tmpfs tmpfs {dir_s} && cp {libc} {dir_s}/ && \
             exec env LD_LIBRARY_PATH={dir_s} sleep 30"
        );
        // Root unshares a mount namespace; others need a user namespace too.
        let root = unsafe { libc::geteuid() } == 0;
        let unshare_args: &[&str] = if root {
            &["-m", "--propagation", "private"]
        } else {
            &["-r", "-m", "--propagation", "private"]
        };
        let mut child = std::process::Command::new("unshare")
            .args(unshare_args)
            .args(["sh", "-c", &script])
            .spawn()
            .unwrap();
        let tgid = child.id();
        let in_ns = format!("{dir_s}/{name}");
        let mapped = (0..300).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            fs::read_to_string(format!("/proc/{tgid}/maps")).is_ok_and(|m| m.contains(&in_ns))
        });
        if !mapped && !root {
            child.kill().unwrap();
            child.wait().unwrap();
            // Unprivileged and without user namespaces: cannot set this up.
            eprintln!("no user namespaces for an unprivileged mount namespace: skipped");
            return;
        }
        let ip = child_addr_in(tgid, libc_fn_addr(), |_, theirs| theirs == in_ns);
        let (frames, error, opened) = symbolize_as_daemon(tgid, ip);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(error, None);
        assert!(frames[0].function.contains("getpid"), "{frames:#?}");
        assert_eq!(frames[0].module.as_deref(), Some(in_ns.as_str()));
        assert_eq!(opened, [PathBuf::from(format!("/proc/{tgid}/root{in_ns}"))]);
    }

    /// A library replaced on disk (as upgrades do) while a process maps the
    /// old one: its path now names another file, which must not be used.
    #[test]
    fn replaced_library_is_not_used_by_mistake() {
        let dir = TempDir::new("replaced");
        let libc = libc_path();
        let name = Path::new(&libc).file_name().unwrap();
        fs::copy(&libc, dir.0.join(name)).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("LD_LIBRARY_PATH", &dir.0)
            .spawn()
            .unwrap();
        let tgid = child.id();
        let mapped = dir.0.join(name).to_str().unwrap().to_owned();
        let ip = child_addr_in(tgid, libc_fn_addr(), |_, theirs| theirs == mapped);
        fs::copy("/bin/true", dir.0.join("new")).unwrap();
        fs::rename(dir.0.join("new"), dir.0.join(name)).unwrap();

        // Without CAP_SYS_ADMIN the deleted file cannot be opened: "??" and why.
        let (frames, error, _) = symbolize_as_daemon(tgid, ip);
        assert_eq!(frames[0].function, UNKNOWN, "{frames:#?}");
        let error = error.unwrap();
        assert!(error.contains("not the file the process maps"), "{error}");

        // With it, through `map_files`.
        if caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_ADMIN,
        )
        .unwrap_or(false)
        {
            let mut symbolizer = Symbolizer::new();
            let frames = symbolizer.symbolize(tgid, &[ip]);
            assert_eq!(symbolizer.last_error(tgid), None);
            assert!(frames[0].function.contains("getpid"), "{frames:#?}");
            // (The new file at the path was opened too, and turned down.)
            let opened: Vec<&PathBuf> = symbolizer.files.values().map(|f| &f.opened_via).collect();
            let map_files = format!("/proc/{tgid}/map_files/");
            assert!(
                opened.iter().any(|path| path.starts_with(&map_files)),
                "{opened:?}"
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Symbolizes `ip` of `tgid` in a thread left with only the capabilities
    /// the daemon keeps after attaching (capabilities are per thread): the
    /// frames, `last_error` and the paths files were opened by.
    fn symbolize_as_daemon(tgid: u32, ip: u64) -> (Vec<Frame>, Option<String>, Vec<PathBuf>) {
        std::thread::spawn(move || {
            let kept: caps::CapsHashSet = crate::privileges::KEPT.into_iter().collect();
            let effective = caps::read(None, caps::CapSet::Effective).unwrap();
            caps::set(
                None,
                caps::CapSet::Effective,
                &effective.intersection(&kept).copied().collect(),
            )
            .unwrap();
            let mut symbolizer = Symbolizer::new();
            let frames = symbolizer.symbolize(tgid, &[ip]);
            let error = symbolizer.last_error(tgid).map(ToOwned::to_owned);
            let opened = symbolizer
                .files
                .values()
                .map(|open| open.opened_via.clone())
                .collect();
            (frames, error, opened)
        })
        .join()
        .unwrap()
    }

    /// Code in anonymous memory is named by the process's perf map, as JIT
    /// runtimes write it.
    #[test]
    fn names_jit_code_from_the_perf_map() {
        let len = 4096;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let code = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(code, libc::MAP_FAILED);
        let start = code as u64;
        let tgid = std::process::id();
        let perf_map = format!("/tmp/perf-{tgid}.map");
        fs::write(&perf_map, format!("{start:x} 100 jitted::handler\n")).unwrap();
        let mut symbolizer = Symbolizer::new();
        let frames = symbolizer.symbolize(tgid, &[start + 0x10, start + 0x200]);
        let _ = fs::remove_file(&perf_map);
        // SAFETY: mapped above, not referenced any more.
        unsafe { libc::munmap(code, len) };
        assert_eq!(symbolizer.last_error(tgid), None);
        assert_eq!(frames[0].function, "jitted::handler", "{frames:#?}");
        // Past the symbol's 0x100 bytes: nothing known, and not an error.
        assert_eq!(frames[1].function, UNKNOWN, "{frames:#?}");
    }

    /// The path of the libc this process maps.
    fn libc_path() -> String {
        let maps = fs::read_to_string("/proc/self/maps").unwrap();
        let addr = libc_fn_addr();
        maps.lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (start, end) = fields[0].split_once('-')?;
                let hex = |s| u64::from_str_radix(s, 16).ok();
                ((hex(start)?..hex(end)?).contains(&addr)).then(|| fields.get(5).copied())?
            })
            .expect("libc is mapped")
            .to_owned()
    }

    /// A directory removed (with what is mounted on it unmounted by then) on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(what: &str) -> Self {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "tcptrace-symbolize-{what}-{}-{n}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            addr: 0,
            function: function.to_owned(),
            module: Some(module.to_owned()),
            file: None,
            line: None,
        }
    }

    #[test]
    fn call_site_skips_plumbing() {
        let app = "/usr/bin/app";
        let frames = [
            frame("__connect", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            frame("??", app),
            frame("std::sys::net::connect_with", app),
            frame("<std::net::tcp::TcpStream>::connect::<&str>", app),
            frame("<&std::net::tcp::TcpStream as std::io::Write>::write", app),
            frame(
                "<&mut app::Dial as core::future::future::Future>::poll",
                app,
            ),
            frame("core::ops::function::FnOnce::call_once", app),
            frame("alloc::boxed::Box::new", app),
            frame(
                "tokio::net::tcp::stream::TcpStream::connect::{closure#0}",
                app,
            ),
            frame("<mio::net::tcp::stream::TcpStream>::connect", app),
            frame("__syscall_cp_asm", app),
            frame("app::dial", app),
            frame("app::main", app),
        ];
        assert_eq!(call_site(&frames).unwrap().function, "app::dial");

        // A user impl of a std trait is user code.
        let drop = frame("<app::Conn as core::ops::drop::Drop>::drop", app);
        assert_eq!(call_site(&[frames[0].clone(), drop.clone()]), Some(&drop));

        // All plumbing: the first known function.
        assert_eq!(call_site(&frames[..4]).unwrap().function, "__connect");
        assert_eq!(call_site(&[]), None);
    }

    #[test]
    fn caches_are_bounded() {
        let limits = Limits {
            processes: 4,
            addrs_per_process: 8,
            open_files: 1,
            parsed_files: 1,
            parsed_idle: LIMITS.parsed_idle,
            offsets: 4,
            inodes: 2,
        };
        let mut symbolizer = Symbolizer::with_limits(limits);
        let gone = |i: u32| 4_194_304 + i; // above pid_max: never alive
        for i in 0..4 {
            symbolizer.symbolize(gone(i), &[0x1000]);
        }
        // Using the oldest makes the second the least recently used.
        symbolizer.symbolize(gone(0), &[0x1000]);
        for i in 4..10 {
            symbolizer.symbolize(gone(i), &[0x1000]);
            assert!(symbolizer.processes.len() <= 4);
            if i == 4 {
                assert!(symbolizer.processes.contains_key(&gone(0)));
                assert!(!symbolizer.processes.contains_key(&gone(1)));
            }
        }

        // Within a process: every address answered, only the first few kept;
        // per file only the last few offsets.
        let tgid = std::process::id();
        let start = own_fn_addr();
        let ips: Vec<u64> = (0..32).map(|i| start + i).collect();
        let frames = symbolizer.symbolize(tgid, &ips);
        assert!(outer_functions(&frames, &ips)
            .iter()
            .all(|f| f.contains("some_distinctively_named_fn")));
        assert_eq!(symbolizer.processes[&tgid].frames.len(), 8);
        assert!(symbolizer.offsets.len() <= 4);

        // Two files with room for one open: each use closes the other (and
        // its fd number comes back for the next); answers stay right.
        for round in 0..6 {
            symbolizer.forget(tgid);
            let ips = [libc_fn_addr() + round, start + 1 + round];
            let frames = symbolizer.symbolize(tgid, &ips);
            assert_eq!(symbolizer.last_error(tgid), None);
            let outer = outer_functions(&frames, &ips);
            assert!(outer[0].contains("getpid"), "{frames:#?}");
            assert!(
                outer[1].contains("some_distinctively_named_fn"),
                "{frames:#?}"
            );
            assert_eq!(symbolizer.files.len(), 1);
            assert!(symbolizer.offsets.len() <= 4);
            assert!(symbolizer.inodes.len() <= 2);
        }
        assert!(
            symbolizer.resolvers_made >= 12,
            "{}",
            symbolizer.resolvers_made
        );
    }

    #[test]
    fn parsed_data_is_bounded_and_dropped_when_idle() {
        let limits = Limits {
            parsed_files: 1,
            ..LIMITS
        };
        let mut symbolizer = Symbolizer::with_limits(limits);
        let tgid = std::process::id();
        let parsed = |symbolizer: &Symbolizer| {
            symbolizer
                .files
                .values()
                .filter(|open| open.parsed.is_some())
                .count()
        };
        // Two files, room for one parsed: both stay open, one stays parsed.
        let ips = [libc_fn_addr(), own_fn_addr() + 1];
        let frames = symbolizer.symbolize(tgid, &ips);
        assert_eq!(symbolizer.last_error(tgid), None);
        let outer = outer_functions(&frames, &ips);
        assert!(outer[0].contains("getpid"), "{frames:#?}");
        assert!(
            outer[1].contains("some_distinctively_named_fn"),
            "{frames:#?}"
        );
        assert_eq!(symbolizer.files.len(), 2);
        assert_eq!(parsed(&symbolizer), 1);
        assert_eq!(symbolizer.resolvers_made, 2);

        // Idle: dropped on the next call; known offsets need no parse.
        symbolizer.limits.parsed_idle = Duration::ZERO;
        symbolizer.forget(tgid);
        assert_eq!(symbolizer.symbolize(tgid, &ips), frames);
        assert_eq!(parsed(&symbolizer), 0);
        assert_eq!(symbolizer.resolvers_made, 2);
        // A new offset parses its file again, and the answer is right.
        let frames = symbolizer.symbolize(tgid, &[own_fn_addr() + 2]);
        assert!(outer_functions(&frames, &[own_fn_addr() + 2])[0]
            .contains("some_distinctively_named_fn"));
        assert_eq!(symbolizer.resolvers_made, 3);
    }

    #[test]
    fn generations_keep_the_recently_used() {
        let mut map = Generations::new(4);
        for i in 0..100 {
            map.insert(i, i);
            // The one used all along survives.
            assert_eq!(map.get(&0), Some(0));
            assert!(map.len() <= 4);
        }
        assert_eq!(map.get(&99), Some(99));
        assert_eq!(map.get(&50), None);
    }

    fn rss_kib() -> [u64; 4] {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        ["VmRSS:", "VmHWM:", "RssAnon:", "RssFile:"].map(|name| {
            let value = status.lines().find_map(|l| l.strip_prefix(name)).unwrap();
            value.trim().trim_end_matches("kB").trim().parse().unwrap()
        })
    }

    /// `CHILDREN=500 cargo test --release -p tcptrace --lib measure_rss_churn
    /// -- --ignored --nocapture`: RSS while symbolizing, in short-lived
    /// processes of this binary, one function and 64 addresses spread over
    /// its code (many DWARF units).
    #[test]
    #[ignore = "measurement"]
    fn measure_rss_churn() {
        let ours = own_fn_addr();
        let maps = fs::read_to_string("/proc/self/maps").unwrap();
        let (lo, hi) = maps
            .lines()
            .find_map(|line| {
                let (range, rest) = line.split_once(' ')?;
                let (start, end) = range.split_once('-')?;
                let start = u64::from_str_radix(start, 16).ok()?;
                let end = u64::from_str_radix(end, 16).ok()?;
                (rest.starts_with("r-x") && (start..end).contains(&ours)).then_some((start, end))
            })
            .unwrap();
        let spread: Vec<u64> = (0..64).map(|i| lo + (hi - lo) / 64 * i + 17).collect();
        // And over libc's code (in the children at the same offset from getpid).
        let (lo, hi) = maps
            .lines()
            .find_map(|line| {
                let (range, rest) = line.split_once(' ')?;
                let (start, end) = range.split_once('-')?;
                let start = u64::from_str_radix(start, 16).ok()?;
                let end = u64::from_str_radix(end, 16).ok()?;
                (rest.starts_with("r-x") && (start..end).contains(&libc_fn_addr()))
                    .then_some((start, end))
            })
            .unwrap();
        let libc_spread: Vec<u64> = (0..64).map(|i| lo + (hi - lo) / 64 * i + 17).collect();
        let n: usize = std::env::var("CHILDREN")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500);
        let mut symbolizer = Symbolizer::new();
        let started = std::time::Instant::now();
        let mut in_symbolize = std::time::Duration::ZERO;
        let mut after_warm_up = Vec::new();
        for i in 0..n {
            let mut child = spawn_sleeper();
            let ip = child_addr_of(child.id(), ours);
            let mut ips = vec![ip, ip + 3];
            ips.extend(spread.iter().map(|a| ip - ours + a));
            let libc_ip = child_addr_of(child.id(), libc_fn_addr());
            ips.extend(libc_spread.iter().map(|a| libc_ip - libc_fn_addr() + a));
            let t = std::time::Instant::now();
            let frames = symbolizer.symbolize(child.id(), &ips);
            in_symbolize += t.elapsed();
            let outer = outer_functions(&frames[..], &ips)[0];
            assert!(outer.contains("some_distinctively_named_fn"));
            child.kill().unwrap();
            child.wait().unwrap();
            symbolizer.forget(child.id());
            let [rss, hwm, anon, file] = rss_kib();
            if i >= 50 {
                after_warm_up.push(rss);
            }
            if (i + 1) % 50 == 0 {
                eprintln!(
                    "after {:4} children: VmRSS {rss} KiB (anon {anon}, file {file}), VmHWM {hwm} KiB",
                    i + 1
                );
            }
        }
        let min = after_warm_up.iter().min().unwrap();
        let max = after_warm_up.iter().max().unwrap();
        eprintln!(
            "VmRSS after warm-up (children 51..{n}, sampled after each): {min}..{max} KiB; \
             {:?} total, {in_symbolize:?} in symbolize",
            started.elapsed()
        );
    }
}
