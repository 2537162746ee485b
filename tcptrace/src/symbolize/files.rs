//! The ELF files behind user addresses, each opened once and shared by all
//! processes that map it.
//!
//! A file is identified by its build id, else by device, inode, size and
//! mtime, so the same binary mapped by many processes, or by containers from
//! their own copies, is one file. It is opened through
//! `/proc/<tgid>/root/<path>`: the path in `maps` names a file in the
//! *process's* mount namespace, and that route needs only `CAP_SYS_PTRACE`
//! (the daemon drops `CAP_SYS_ADMIN`, which `/proc/<tgid>/map_files` needs,
//! after attaching). Its bytes at a few addresses are compared with the
//! process's memory, so a file replaced since it was mapped is not used by
//! mistake. blazesym reads the file as `/proc/self/fd/<n>`, valid as long as
//! we hold it open; its parsed data for that path goes whenever the file
//! closes, so a reused fd number never reaches stale data.

use std::{
    collections::HashMap,
    ffi::OsString,
    fs::{self, File},
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
    symbolize::{self as bz, evict},
};

use super::process::{Backing, Mapping};
use crate::generations::Generations;

/// Bytes compared between the process's memory and the file we opened.
const CODE_CHECK_LEN: usize = 16;

/// What identifies a file's contents across processes, paths and mount
/// namespaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum FileKey {
    BuildId(Rc<[u8]>),
    /// Files without a build id.
    Inode(Inode),
}

/// A file's identity as `stat` sees it; size and mtime guard against inode
/// numbers reused after a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Inode {
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
pub(super) struct OpenFile {
    /// Keeps `fd_path` naming this very file, whatever happens to its paths
    /// or to the processes that mapped it.
    file: File,
    /// `/proc/self/fd/<n>`: how blazesym opens it.
    pub(super) fd_path: PathBuf,
    /// Its path as the first process we saw mapping it names it.
    pub(super) module: String,
    /// The path it was opened by (`/proc/<tgid>/root/...`, ...).
    pub(super) opened_via: PathBuf,
    /// When blazesym may hold a resolver for `fd_path` (made on first use,
    /// dropped when idle), its last use.
    pub(super) parsed: Option<Instant>,
    /// Its device and inode, which no other file has while we hold it.
    dev: u64,
    ino: u64,
    last_used: u64,
}

impl OpenFile {
    /// Why blazesym failed on this file.
    pub(super) fn failed(&self, err: &blazesym::Error) -> String {
        format!(
            "{} (as {}): {err:#}",
            self.opened_via.display(),
            self.fd_path.display()
        )
    }

    /// Makes blazesym drop its parsed ELF/DWARF of this file.
    fn release_parsed(&mut self, backend: &mut bz::Symbolizer) {
        if self.parsed.take().is_some() {
            // "Not cached" is not an error.
            let _ = backend.evict(&evict::Elf::new(&self.fd_path).into());
        }
    }
}

/// The files kept open: a bounded LRU, and the stat identities seen so a
/// file already open is found without opening it again.
pub(super) struct OpenFiles {
    pub(super) open: HashMap<FileKey, OpenFile>,
    /// Stat identity → file identity (one per path or copy seen).
    pub(super) inodes: Generations<Inode, FileKey>,
    capacity: usize,
    /// Files opened and parsed so far (a parse is a blazesym resolver).
    pub(super) opened: u64,
    pub(super) parses: u64,
    /// Logical time for least-recently-used eviction.
    tick: u64,
}

impl OpenFiles {
    pub(super) fn new(capacity: usize, inodes: usize) -> Self {
        Self {
            open: HashMap::new(),
            inodes: Generations::new(inodes),
            capacity,
            opened: 0,
            parses: 0,
            tick: 0,
        }
    }

    /// The open file behind `mapping` of live process `tgid` (a file
    /// mapping), checked against the process's code at its start.
    pub(super) fn find_mapped(
        &mut self,
        backend: &mut bz::Symbolizer,
        tgid: u32,
        mapping: &Mapping,
    ) -> Result<FileKey, String> {
        let Backing::File(path) = &mapping.backing else {
            return Err("not a file mapping".to_owned());
        };
        self.find(
            backend,
            tgid,
            path,
            mapping.inode,
            &[(mapping.start, mapping.offset)],
            &format!(
                "/proc/{tgid}/map_files/{:x}-{:x}",
                mapping.start, mapping.end
            ),
        )
        .map_err(|err| format!("{}: {err}", path.display()))
    }

    /// The open file that is what `tgid` maps at `path` (with this device
    /// and inode), checked at `probes` = (address, file offset) pairs (at
    /// least one); `map_files` is the `/proc/<tgid>/map_files/` entry of the
    /// mapping.
    fn find(
        &mut self,
        backend: &mut bz::Symbolizer,
        tgid: u32,
        path: &Path,
        inode: (u64, u64),
        probes: &[(u64, u64)],
        map_files: &str,
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
                // from our root. Or the very file (same device and inode)
                // at the same path of ours: this still holds once the
                // process is gone, as a curl in a shell loop soon is.
                1 => (same_mount_namespace(tgid) || is_file(path, inode)).then(|| path.to_owned()),
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
                _ => Some(PathBuf::from(map_files)),
            };
            let Some(candidate) = candidate else { continue };
            match self.open_checked(backend, &candidate, path, mem.as_ref(), probes) {
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
        backend: &mut bz::Symbolizer,
        candidate: &Path,
        module: &Path,
        mem: Option<&File>,
        probes: &[(u64, u64)],
    ) -> Result<FileKey, String> {
        let key = self.open(backend, candidate, module)?;
        let file = &self.open[&key].file;
        let checks: Vec<Option<bool>> = probes
            .iter()
            .map(|&probe| code_matches(mem, probe, file))
            .collect();
        if checks.contains(&Some(false)) && !checks.contains(&Some(true)) {
            return Err("not the file the process maps (replaced since?)".to_owned());
        }
        Ok(key)
    }

    /// Opens the ELF file at `path` unless the same file is open already;
    /// `module` is how the process names it.
    fn open(
        &mut self,
        backend: &mut bz::Symbolizer,
        path: &Path,
        module: &Path,
    ) -> Result<FileKey, String> {
        let meta = fs::metadata(path).map_err(|err| err.to_string())?;
        // Never a FIFO or device a process could put at a path to block us.
        if !meta.is_file() {
            return Err("not a regular file".to_owned());
        }
        if let Some(key) = self.inodes.get(&Inode::from(&meta)) {
            if self.touch(&key).is_some() {
                return Ok(key);
            }
        }
        // Room first, so the evicted file's fd number may name this one:
        // blazesym must have forgotten the old file by then.
        if self.open.len() >= self.capacity {
            self.evict_lru(backend);
        }
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|err| err.to_string())?;
        self.adopt(file, path, module)
    }

    /// A copy of `file`, opened by another thread (`opened_via`), taken as
    /// an open file unless the same file is open already.
    pub(super) fn adopt_copy(
        &mut self,
        backend: &mut bz::Symbolizer,
        file: &File,
        opened_via: &Path,
        module: &Path,
    ) -> Result<FileKey, String> {
        if self.open.len() >= self.capacity {
            self.evict_lru(backend);
        }
        let copy = file.try_clone().map_err(|err| err.to_string())?;
        self.adopt(copy, opened_via, module)
    }

    /// Takes `file` (opened by `opened_via`; `module` is how the process
    /// names it) as an open file, unless the same file is open already.
    fn adopt(&mut self, file: File, opened_via: &Path, module: &Path) -> Result<FileKey, String> {
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
        // Another copy of a file already open (e.g. another container's).
        if self.touch(&key).is_some() {
            return Ok(key);
        }
        self.opened += 1;
        self.tick += 1;
        self.open.insert(
            key.clone(),
            OpenFile {
                file,
                fd_path,
                module: module.to_string_lossy().into_owned(),
                opened_via: opened_via.to_owned(),
                parsed: None,
                dev: meta.dev(),
                ino: meta.ino(),
                last_used: self.tick,
            },
        );
        Ok(key)
    }

    /// The open file whose (device, inode) is `inode`. A file held open
    /// keeps its inode number, so this names it for sure, with no system
    /// call: what makes meeting a new process of a known program cheap.
    pub(super) fn held(&mut self, inode: (u64, u64)) -> Option<FileKey> {
        let key = self
            .open
            .iter()
            .find(|(_, open)| (open.dev, open.ino) == inode)
            .map(|(key, _)| key.clone())?;
        self.touch(&key);
        Some(key)
    }

    /// The open file `key`, if it is still open.
    pub(super) fn file(&self, key: &FileKey) -> Option<&File> {
        self.open.get(key).map(|open| &open.file)
    }

    /// A descriptor of its own for the open file `key`, with the file's
    /// module name and the path it was opened by (for the naming thread).
    pub(super) fn duplicate(&self, key: &FileKey) -> Option<(File, String, PathBuf)> {
        let open = self.open.get(key)?;
        let file = open.file.try_clone().ok()?;
        Some((file, open.module.clone(), open.opened_via.clone()))
    }

    /// The open file `key`, marked as just used.
    fn touch(&mut self, key: &FileKey) -> Option<&mut OpenFile> {
        let open = self.open.get_mut(key)?;
        self.tick += 1;
        open.last_used = self.tick;
        Some(open)
    }

    /// Closes the least recently used file.
    fn evict_lru(&mut self, backend: &mut bz::Symbolizer) {
        let oldest = self
            .open
            .iter()
            .min_by_key(|(_, open)| open.last_used)
            .map(|(key, _)| key.clone());
        if let Some(mut open) = oldest.and_then(|key| self.open.remove(&key)) {
            // Its parsed ELF/DWARF and fd go with it.
            open.release_parsed(backend);
        }
    }

    /// The open file `key` (opened by [`Self::find`]), marked used and
    /// parsed by blazesym, making room among the `keep` parsed files first
    /// if it is not parsed yet.
    pub(super) fn parsed(
        &mut self,
        backend: &mut bz::Symbolizer,
        key: &FileKey,
        keep: usize,
        idle: Duration,
    ) -> Result<&OpenFile, String> {
        if self.open.get(key).is_some_and(|open| open.parsed.is_none()) {
            self.release_parsed(backend, keep.saturating_sub(1), idle);
        }
        let open = self
            .touch(key)
            .ok_or_else(|| "closed since it was found (too many files open)".to_owned())?;
        // From here on blazesym may hold state for `fd_path`: evict it with
        // the file whatever happens next.
        if open.parsed.replace(Instant::now()).is_none() {
            // Our own resolver rather than blazesym's file cache: the debug
            // link and .dwp files it opens then belong to it and go with it.
            let resolver = ElfResolver::open(&open.fd_path).map_err(|err| open.failed(&err))?;
            backend
                .register_elf_resolver(&open.fd_path, Rc::new(resolver))
                .map_err(|err| open.failed(&err))?;
            self.parses += 1;
        }
        Ok(&self.open[key])
    }

    /// Drops blazesym's parsed data of files unused for `idle`, and of the
    /// least recently used beyond `keep` files. The files stay open.
    pub(super) fn release_parsed(
        &mut self,
        backend: &mut bz::Symbolizer,
        keep: usize,
        idle: Duration,
    ) {
        let now = Instant::now();
        let mut parsed: Vec<(Instant, &mut OpenFile)> = self
            .open
            .values_mut()
            .filter_map(|open| Some((open.parsed?, open)))
            .collect();
        parsed.sort_unstable_by_key(|&(used, _)| std::cmp::Reverse(used));
        for (i, (used, open)) in parsed.into_iter().enumerate() {
            if i >= keep || now - used >= idle {
                open.release_parsed(backend);
            }
        }
    }
}

/// Whether `path` names the file with this (device, inode) for us.
fn is_file(path: &Path, inode: (u64, u64)) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && (meta.dev(), meta.ino()) == inode)
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
