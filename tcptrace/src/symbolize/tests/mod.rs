//! Tests of the symbolizer against real processes: this test binary, child
//! processes of it and of `sleep`, copies of libc in temporary directories
//! and mount namespaces. The helpers here find where the same code lies in
//! another process, so expected frames are known without debug tools.

mod bounds;
mod files;

use std::{fs, path::PathBuf, time::Duration};

use super::{call_site, frame::UNKNOWN, Frame, Symbolizer};

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
                    .is_some_and(|f| f.ends_with("symbolize/tests/mod.rs")),
                "{frame:?}"
            );
        }
    }
    // Cached now: the same answer without asking blazesym.
    assert_eq!(symbolizer.processes[&std::process::id()].frames.len(), 2);
    assert_eq!(symbolizer.offsets.len(), 2);
    assert_eq!(symbolizer.symbolize(std::process::id(), &ips), frames);
    assert_eq!(symbolizer.files.parses, 1);
}

#[test]
fn the_naming_thread_names_what_this_thread_would() {
    let start = own_fn_addr();
    let ips = [start, start + 5, libc_fn_addr()];
    let pid = std::process::id();
    let expected = Symbolizer::new().symbolize(pid, &ips);
    let mut symbolizer = Symbolizer::new();
    symbolizer.start_naming_thread().expect("naming thread");
    // First asked of the thread: not ready until it answers.
    assert!(!symbolizer.ready_to_symbolize(pid, &ips));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !symbolizer.ready_to_symbolize(pid, &ips) {
        assert!(std::time::Instant::now() < deadline, "no answer in 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(symbolizer.symbolize(pid, &ips), expected);
    assert_eq!(
        symbolizer.files.parses, 0,
        "every file was parsed on the naming thread"
    );
    // Known now: ready at once, nothing asked again.
    assert!(symbolizer.ready_to_symbolize(pid, &ips));
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
    let (mut child, ip) = spawn_sleep();
    let tgid = child.id();
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
    // Never symbolized while alive, but its mappings and files were taken
    // when the process was met: still resolved after it exited.
    let late = symbolizer.symbolize(tgid, &[ip + 2]);
    assert!(late[0].function.contains("getpid"), "{late:#?}");
    assert_eq!(symbolizer.last_error(tgid), None);

    // Forgotten, and gone: nothing to read its mappings from.
    symbolizer.forget(tgid);
    assert_eq!(symbolizer.symbolize(tgid, &[ip])[0].function, UNKNOWN);
    assert!(symbolizer.last_error(tgid).is_some());
}

/// A curl in a shell loop can exit while the meeting thread is still
/// opening its files: its mappings were read, some files were not. Those
/// are found at the same path of ours when device and inode agree.
#[test]
fn files_of_a_process_gone_during_its_meeting_are_found_by_inode() {
    let (mut child, ip) = spawn_sleep();
    let tgid = child.id();
    let maps = fs::read_to_string(format!("/proc/{tgid}/maps")).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let mut symbolizer = Symbolizer::new();
    symbolizer.attach_meeter(super::Meeter::met_only_maps(tgid, maps));
    let frames = symbolizer.symbolize(tgid, &[ip]);
    assert_eq!(symbolizer.last_error(tgid), None);
    assert!(frames[0].function.contains("getpid"), "{frames:#?}");
}

/// An executable file mapping of a process.
struct TextMap {
    start: u64,
    end: u64,
    /// File offset of `start`.
    offset: u64,
    path: String,
}

/// The executable file mappings of `pid` ("self" for this process).
fn text_maps(pid: &str) -> Vec<TextMap> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (range, perms, offset, path) = (fields[0], fields[1], fields[2], *fields.get(5)?);
            let (start, end) = range.split_once('-')?;
            let hex = |s| u64::from_str_radix(s, 16).ok();
            perms.contains('x').then_some(TextMap {
                start: hex(start)?,
                end: hex(end)?,
                offset: hex(offset)?,
                path: path.to_owned(),
            })
        })
        .collect()
}

/// How many distinct files of code `pid` maps ("self" for this process):
/// the symbolizer opens each when it meets the process.
fn code_files(pid: &str) -> usize {
    let mut paths: Vec<String> = text_maps(pid)
        .into_iter()
        .map(|map| map.path)
        .filter(|path| path.starts_with('/'))
        .collect();
    paths.sort();
    paths.dedup();
    paths.len()
}

/// This process's executable file mapping that holds `addr`.
fn our_text_map(addr: u64) -> TextMap {
    text_maps("self")
        .into_iter()
        .find(|map| (map.start..map.end).contains(&addr))
        .expect("address is in a file mapping")
}

/// The address in process `tgid` of the code at `our_addr` in this one,
/// which must lie in a file both map (e.g. libc).
fn child_addr_of(tgid: u32, our_addr: u64) -> u64 {
    child_addr_in(tgid, our_addr, |ours, theirs| ours == theirs)
}

/// Same, where `same_file(our path, their path)` says which of their
/// mappings holds a copy of our file.
fn child_addr_in(tgid: u32, our_addr: u64, same_file: impl Fn(&str, &str) -> bool) -> u64 {
    let ours = our_text_map(our_addr);
    // The dynamic loader maps libraries only after exec returns.
    for _ in 0..500 {
        let theirs = text_maps(&tgid.to_string())
            .into_iter()
            .find(|map| map.offset == ours.offset && same_file(&ours.path, &map.path));
        if let Some(theirs) = theirs {
            return theirs.start + (our_addr - ours.start);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never mapped in {tgid}", ours.path);
}

/// The path of the libc this process maps.
fn libc_path() -> String {
    our_text_map(libc_fn_addr()).path
}

/// Child processes of this test binary run this to stay alive.
#[test]
#[ignore = "helper: run by child processes of other tests"]
fn child_sleeper() {
    if std::env::var_os("TCPTRACE_TEST_SLEEPER").is_some() {
        std::thread::sleep(Duration::from_secs(60));
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

/// A `sleep 30` process, and the address of libc's `getpid` in it.
fn spawn_sleep() -> (std::process::Child, u64) {
    let child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let ip = child_addr_of(child.id(), libc_fn_addr());
    (child, ip)
}

/// Symbolizes `ips` of this process, an address in libc's `getpid` and one
/// in `some_distinctively_named_fn`: two files. Checks and returns the frames.
fn symbolize_two_files(symbolizer: &mut Symbolizer, ips: [u64; 2]) -> Vec<Frame> {
    let tgid = std::process::id();
    let frames = symbolizer.symbolize(tgid, &ips);
    assert_eq!(symbolizer.last_error(tgid), None);
    let outer = outer_functions(&frames, &ips);
    assert!(outer[0].contains("getpid"), "{frames:#?}");
    assert!(
        outer[1].contains("some_distinctively_named_fn"),
        "{frames:#?}"
    );
    frames
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
