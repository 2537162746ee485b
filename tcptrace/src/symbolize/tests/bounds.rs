//! Every cache stays within its limit, parsed data goes when idle, and a
//! binary run by many short-lived processes is opened and parsed once; plus
//! the RSS measurement under process churn.

use std::{fs, time::Duration};

use super::{
    child_addr_of, code_files, libc_fn_addr, our_text_map, outer_functions, own_fn_addr,
    spawn_sleeper, symbolize_two_files,
};
use crate::symbolize::{Limits, Symbolizer, LIMITS};

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
    // Each file of code opened once (when the first process was met), one
    // parse, two offsets: not per process.
    let files = code_files("self");
    assert_eq!(usize::try_from(symbolizer.files.opened).unwrap(), files);
    assert_eq!(symbolizer.files.parses, 1);
    assert_eq!(symbolizer.files.open.len(), files);
    assert_eq!(symbolizer.files.inodes.len(), files);
    assert_eq!(symbolizer.offsets.len(), 2);
    assert_eq!(symbolizer.processes.len(), LIMITS.processes);
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
        unwind_files: 1,
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
        symbolize_two_files(&mut symbolizer, [libc_fn_addr() + round, start + 1 + round]);
        assert_eq!(symbolizer.files.open.len(), 1);
        assert!(symbolizer.offsets.len() <= 4);
        assert!(symbolizer.files.inodes.len() <= 2);
    }
    assert!(symbolizer.files.parses >= 12, "{}", symbolizer.files.parses);
}

#[test]
fn parsed_data_is_bounded_and_dropped_when_idle() {
    let limits = Limits {
        parsed_files: 1,
        ..LIMITS
    };
    let mut symbolizer = Symbolizer::with_limits(limits);
    let tgid = std::process::id();
    // Two files, room for one parsed: both stay open, one stays parsed.
    let ips = [libc_fn_addr(), own_fn_addr() + 1];
    let frames = symbolize_two_files(&mut symbolizer, ips);
    assert_eq!(symbolizer.files.open.len(), code_files("self"));
    assert_eq!(parsed(&symbolizer), 1);
    assert_eq!(symbolizer.files.parses, 2);

    // Idle: dropped on the next call; known offsets need no parse.
    symbolizer.limits.parsed_idle = Duration::ZERO;
    symbolizer.forget(tgid);
    assert_eq!(symbolizer.symbolize(tgid, &ips), frames);
    assert_eq!(parsed(&symbolizer), 0);
    assert_eq!(symbolizer.files.parses, 2);
    // A new offset parses its file again, and the answer is right.
    let frames = symbolizer.symbolize(tgid, &[own_fn_addr() + 2]);
    assert!(
        outer_functions(&frames, &[own_fn_addr() + 2])[0].contains("some_distinctively_named_fn")
    );
    assert_eq!(symbolizer.files.parses, 3);
}

#[test]
fn release_idle_drops_parsed_data_without_symbolize() {
    let mut symbolizer = Symbolizer::new();
    let tgid = std::process::id();
    let ips = [libc_fn_addr(), own_fn_addr() + 1];
    let frames = symbolize_two_files(&mut symbolizer, ips);
    assert_eq!(parsed(&symbolizer), 2);
    // Not idle yet: kept.
    symbolizer.release_idle();
    assert_eq!(parsed(&symbolizer), 2);

    // Idle: dropped with no other call; the files stay open, known call
    // sites stay answered without a parse.
    symbolizer.limits.parsed_idle = Duration::ZERO;
    symbolizer.release_idle();
    assert_eq!(parsed(&symbolizer), 0);
    assert_eq!(symbolizer.files.open.len(), code_files("self"));
    symbolizer.forget(tgid);
    assert_eq!(symbolizer.symbolize(tgid, &ips), frames);
    assert_eq!(symbolizer.files.parses, 2);
}

/// How many open files blazesym holds parsed data of.
fn parsed(symbolizer: &Symbolizer) -> usize {
    symbolizer
        .files
        .open
        .values()
        .filter(|open| open.parsed.is_some())
        .count()
}

/// `VmRSS`, `VmHWM`, `RssAnon` and `RssFile` of this process, in KiB.
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
    // 64 addresses over our code and over libc's (in the children at the
    // same offset from getpid).
    let spread = |addr| {
        let map = our_text_map(addr);
        (0..64)
            .map(|i| map.start + (map.end - map.start) / 64 * i + 17)
            .collect::<Vec<u64>>()
    };
    let (spread, libc_spread) = (spread(ours), spread(libc_fn_addr()));
    let n: usize = std::env::var("CHILDREN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let mut symbolizer = Symbolizer::new();
    let started = std::time::Instant::now();
    let mut in_symbolize = Duration::ZERO;
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
