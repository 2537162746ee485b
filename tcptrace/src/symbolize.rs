//! User stack addresses → call sites, with blazesym.
//!
//! Stacks are symbolized against the live process (`/proc/<tgid>/maps` and the
//! ELF/DWARF files it maps), so a process that has exited can no longer be
//! symbolized. Results are therefore cached per process: an address resolved
//! once keeps resolving after its process is gone, until `forget`.

use std::collections::HashMap;

use blazesym::{
    symbolize::{
        self as bz, evict,
        source::{Process, Source},
        CodeInfo, Input, Symbolized,
    },
    ErrorKind, Pid,
};

/// Processes whose frames stay cached; the least recently used goes first.
const MAX_PROCESSES: usize = 64;
/// Addresses cached per process; later ones are resolved but not kept.
const MAX_ADDRS_PER_PROCESS: usize = 4096;
/// blazesym keeps, for the life of an instance, a path entry per
/// `/proc/<pid>/map_files/...` it opened plus parsed DWARF of every binary; a
/// fresh instance after this many new processes keeps that bounded as well.
const PROCESSES_PER_BACKEND: usize = 32;

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

    fn known(addr: u64, function: &str, module: Option<&String>, code: Option<&CodeInfo>) -> Self {
        Self {
            addr,
            function: function.to_owned(),
            module: module.cloned(),
            file: code.map(|code| code.to_path().to_string_lossy().into_owned()),
            line: code.and_then(|code| code.line),
        }
    }
}

/// What is remembered about one process.
struct ProcessCache {
    /// Lookup address → its frames (several when calls were inlined).
    frames: HashMap<u64, Vec<Frame>>,
    last_error: Option<String>,
    last_used: u64,
}

/// Symbolizes user stacks of processes, caching per (tgid, address).
///
/// Not `Send`: blazesym's symbolizer uses `Rc` internally.
pub struct Symbolizer {
    backend: bz::Symbolizer,
    /// Processes first seen since `backend` was created.
    backend_processes: usize,
    processes: HashMap<u32, ProcessCache>,
    /// Logical time for least-recently-used eviction.
    tick: u64,
    max_processes: usize,
    max_addrs_per_process: usize,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    #[must_use]
    pub fn new() -> Self {
        Self::with_limits(MAX_PROCESSES, MAX_ADDRS_PER_PROCESS)
    }

    fn with_limits(max_processes: usize, max_addrs_per_process: usize) -> Self {
        Self {
            backend: bz::Symbolizer::new(),
            backend_processes: 0,
            processes: HashMap::new(),
            tick: 0,
            max_processes,
            max_addrs_per_process,
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
        let process = self.processes.get_mut(&tgid).expect("touched above");
        let mut misses: Vec<u64> = lookups
            .iter()
            .copied()
            .filter(|addr| !process.frames.contains_key(addr))
            .collect();
        misses.sort_unstable();
        misses.dedup();

        let mut fresh = HashMap::new();
        if !misses.is_empty() {
            match resolve(&self.backend, tgid, &misses) {
                Ok(resolved) => {
                    process.last_error = None;
                    fresh = misses.into_iter().zip(resolved).collect();
                    for (addr, frames) in &fresh {
                        if process.frames.len() < self.max_addrs_per_process {
                            process.frames.insert(*addr, frames.clone());
                        }
                    }
                }
                // Not cached: the process may only be starting up or racing us.
                Err(reason) => process.last_error = Some(reason),
            }
        }

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

    /// Drops the cache of a process (it exited, or its pid was reused).
    pub fn forget(&mut self, tgid: u32) {
        self.processes.remove(&tgid);
        self.evict_backend(tgid);
    }

    /// Marks `tgid` as just used, making room for it if it is new.
    fn touch(&mut self, tgid: u32) {
        self.tick += 1;
        if !self.processes.contains_key(&tgid) {
            if self.processes.len() >= self.max_processes {
                let oldest = self
                    .processes
                    .iter()
                    .min_by_key(|(_, process)| process.last_used)
                    .map(|(&tgid, _)| tgid);
                if let Some(oldest) = oldest {
                    self.forget(oldest);
                }
            }
            self.backend_processes += 1;
            if self.backend_processes > PROCESSES_PER_BACKEND {
                self.backend = bz::Symbolizer::new();
                self.backend_processes = 1;
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

    fn evict_backend(&mut self, tgid: u32) {
        if tgid != 0 {
            // Best effort, and "nothing cached" is not an error.
            let _ = self
                .backend
                .evict(&evict::Process::new(Pid::from(tgid)).into());
        }
    }
}

/// Asks blazesym for `addrs` of `tgid`: one entry of frames per address.
fn resolve(backend: &bz::Symbolizer, tgid: u32, addrs: &[u64]) -> Result<Vec<Vec<Frame>>, String> {
    // blazesym reads pid 0 as "self": never symbolize the tracer instead.
    if tgid == 0 {
        return Err("tgid 0 is not a user process".to_owned());
    }
    let symbolize = |map_files: bool| {
        let mut process = Process::new(Pid::from(tgid));
        process.map_files = map_files;
        backend.symbolize(&Source::Process(process), Input::AbsAddr(addrs))
    };
    // `/proc/<pid>/map_files` works across mount namespaces and for deleted
    // binaries but needs CAP_SYS_ADMIN; the paths in `maps` need nothing.
    let symbolized = match symbolize(true) {
        Err(err) if err.kind() == ErrorKind::PermissionDenied => symbolize(false),
        result => result,
    }
    .map_err(|err| format!("{err:#}"))?;
    Ok(addrs
        .iter()
        .zip(&symbolized)
        .map(|(&addr, symbolized)| frames_at(addr, symbolized))
        .collect())
}

/// The frames at one address, innermost first.
fn frames_at(addr: u64, symbolized: &Symbolized) -> Vec<Frame> {
    let Symbolized::Sym(sym) = symbolized else {
        return vec![Frame::unknown(addr)];
    };
    let module = sym
        .module
        .as_ref()
        .map(|module| module.to_string_lossy().into_owned());
    // blazesym lists inlined calls outermost first, each with the location
    // inside it (the next call, or `addr` for the last); `sym.code_info` is
    // the location in the function they were inlined into.
    let mut frames: Vec<Frame> = sym
        .inlined
        .iter()
        .rev()
        .map(|inlined| {
            Frame::known(
                addr,
                &inlined.name,
                module.as_ref(),
                inlined.code_info.as_ref(),
            )
        })
        .collect();
    frames.push(Frame::known(
        addr,
        &sym.name,
        module.as_ref(),
        sym.code_info.as_deref(),
    ));
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

    #[test]
    fn symbolizes_own_function() {
        let start = own_fn_addr();
        let mut symbolizer = Symbolizer::new();
        // Innermost ip is used as is; the second is a "return address", looked up at -1.
        let ips = [start, start + 5];
        let frames = symbolizer.symbolize(std::process::id(), &ips);
        assert_eq!(symbolizer.last_error(std::process::id()), None);
        assert_eq!(frames.len(), 2, "{frames:#?}");
        let exe = std::env::current_exe().unwrap();
        for (frame, ip) in frames.iter().zip(ips) {
            assert_eq!(frame.addr, ip);
            assert!(
                frame.function.contains("some_distinctively_named_fn"),
                "{frame:?}"
            );
            assert!(
                !frame.function.contains("::h"),
                "hash not stripped: {frame:?}"
            );
            assert!(
                frame
                    .file
                    .as_deref()
                    .is_some_and(|f| f.ends_with("symbolize.rs")),
                "{frame:?}"
            );
            assert!(frame.line.is_some(), "{frame:?}");
            assert_eq!(frame.module.as_deref(), exe.to_str(), "{frame:?}");
        }
        // Cached now: the same answer without asking blazesym.
        assert_eq!(symbolizer.processes[&std::process::id()].frames.len(), 2);
        assert_eq!(symbolizer.symbolize(std::process::id(), &ips), frames);
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
        let ip = child_addr_of(tgid, libc::getpid as *const () as u64);
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
        // Never seen while alive: unknown now.
        assert_eq!(symbolizer.symbolize(tgid, &[ip + 2])[0].function, UNKNOWN);
        assert!(symbolizer.last_error(tgid).is_some());

        symbolizer.forget(tgid);
        assert_eq!(symbolizer.symbolize(tgid, &[ip])[0].function, UNKNOWN);
    }

    /// The address in process `tgid` of the code at `our_addr` in this one,
    /// which must lie in a shared library both map (e.g. libc).
    fn child_addr_of(tgid: u32, our_addr: u64) -> u64 {
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
        for _ in 0..200 {
            let theirs = text_maps(&tgid.to_string())
                .into_iter()
                .find(|(_, _, o, p)| *o == offset && *p == path);
            if let Some((their_start, ..)) = theirs {
                return their_start + (our_addr - start);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{path} never mapped in {tgid}");
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
    fn cache_is_bounded() {
        let mut symbolizer = Symbolizer::with_limits(4, 8);
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

        // Within a process: every address answered, only the first few kept.
        let tgid = std::process::id();
        let start = own_fn_addr();
        let ips: Vec<u64> = (0..32).map(|i| start + i).collect();
        let frames = symbolizer.symbolize(tgid, &ips);
        assert_eq!(frames.len(), ips.len());
        assert!(frames
            .iter()
            .all(|f| f.function.contains("some_distinctively_named_fn")));
        assert_eq!(symbolizer.processes[&tgid].frames.len(), 8);
    }
}
