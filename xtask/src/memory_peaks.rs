//! A tracer's memory over a bench run, split the way it matters.
//!
//! `VmHWM` alone mixes two kinds of pages. Anonymous memory (heap, stacks)
//! is what the tracer holds. File pages are binaries mapped while their
//! symbols are read: clean, reclaimable, and as large as the debug
//! information of whatever process the tracer must name, the bench's own
//! harness included. So the peak of each is sampled apart, and the file
//! mapped most when the file pages peaked is named.

use std::{
    fs,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

/// How often `/proc/PID/status` is read: a symbol parse maps its file for
/// hundreds of milliseconds.
const INTERVAL: Duration = Duration::from_millis(20);
/// A new file peak this much above the last one names its largest mapping
/// (reading `smaps` costs a few milliseconds: not on every sample).
const NAME_STEP_KIB: u64 = 8 * 1024;

#[derive(Clone, Debug, Default)]
pub struct MemoryPeaks {
    pub anon_kib: u64,
    pub file_kib: u64,
    /// The file mapped most (resident KiB, path) when `file_kib` peaked.
    pub largest_file: Option<(u64, String)>,
}

/// Samples a process's memory until `stop` is called.
pub struct Sampler {
    done: Arc<AtomicBool>,
    thread: thread::JoinHandle<MemoryPeaks>,
}

impl Sampler {
    #[must_use]
    pub fn start(pid: u32) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&done);
        let thread = thread::spawn(move || {
            let mut peaks = MemoryPeaks::default();
            let mut named_at = 0;
            while !stop.load(Ordering::Relaxed) {
                let Some((anon, file)) = rss_kib(pid) else {
                    break;
                };
                peaks.anon_kib = peaks.anon_kib.max(anon);
                if file > peaks.file_kib {
                    peaks.file_kib = file;
                    if file >= named_at + NAME_STEP_KIB {
                        named_at = file;
                        peaks.largest_file = largest_file_mapping(pid).or(peaks.largest_file);
                    }
                }
                thread::sleep(INTERVAL);
            }
            peaks
        });
        Self { done, thread }
    }

    #[must_use]
    pub fn stop(self) -> MemoryPeaks {
        self.done.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// (`RssAnon`, `RssFile`) in KiB; `None` once the process is gone.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("RssAnon:")?, field("RssFile:")?))
}

/// The file-backed mapping with the most resident KiB, summed over its
/// mappings.
fn largest_file_mapping(pid: u32) -> Option<(u64, String)> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut by_file: Vec<(String, u64)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Rss:") {
            if let (Some(i), Ok(kib)) = (
                current,
                kib.trim().trim_end_matches("kB").trim().parse::<u64>(),
            ) {
                by_file[i].1 += kib;
            }
        } else if line.split_whitespace().next().is_some_and(|range| {
            range.contains('-') && range.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        }) {
            // A mapping's header: the path is its sixth field, if any.
            current = line
                .split_whitespace()
                .nth(5)
                .filter(|path| path.starts_with('/'))
                .map(|path| {
                    by_file
                        .iter()
                        .position(|(p, _)| p == path)
                        .unwrap_or_else(|| {
                            by_file.push((path.to_owned(), 0));
                            by_file.len() - 1
                        })
                });
        }
    }
    by_file
        .into_iter()
        .max_by_key(|(_, kib)| *kib)
        .map(|(path, kib)| (kib, path))
}
