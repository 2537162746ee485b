//! Meeting processes the moment they take their first stack: the kernel
//! announces each on a small ring buffer of its own (`PROCESSES`, woken at
//! once), and a thread of ours reads the process's mappings and opens its
//! files of code right then, whatever the event reader is busy with (the
//! first parse of a large binary takes tens of milliseconds, and a curl in
//! a shell loop lives less than that after its connect). The symbolizer
//! takes what was met when the process is gone by the time it gets there.
//!
//! Files are opened through the process's root and checked against the
//! device and inode its mappings name; a file met once is held (bounded)
//! and not opened again for the next process of the same program.

use std::{
    collections::{HashMap, VecDeque},
    ffi::OsString,
    fs::{self, File},
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread,
};

use aya::maps::{MapData, RingBuf};
use tcptrace_common::NewProcess;

use super::process::{parse_mappings, Backing};

/// Processes whose mappings are kept at most (the oldest go first).
const MAX_PROCESSES: usize = 4096;
/// Files held open at most (the oldest go first).
const MAX_FILES: usize = 256;
/// How often the thread looks whether it should stop, in milliseconds.
const POLL_MS: i32 = 200;

/// What the thread met, shared with the symbolizer.
#[derive(Default)]
pub(super) struct Met {
    /// tgid → (`task->mm`, the text of its maps).
    processes: HashMap<u32, (u64, String)>,
    arrivals: VecDeque<u32>,
    /// (device, inode) → the file, held open.
    files: HashMap<(u64, u64), Arc<File>>,
    file_arrivals: VecDeque<(u64, u64)>,
    /// Processes announced whose mappings could not be read (gone already).
    pub(super) missed: u64,
}

/// The scheduling the meeting thread got: how soon it runs when a
/// short-lived process is announced, which decides how many are missed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum MeetingPriority {
    /// No meeting thread (a detached pipeline), or not started yet.
    #[default]
    None,
    /// `SCHED_FIFO`: runs as soon as it is woken.
    RealTime,
    /// Nice -20 with a 0.1 ms slice (Linux 6.12+).
    FairShortSlice,
    /// Nice -20.
    FairNiced,
    /// Nice 0 with a 0.1 ms slice (no `CAP_SYS_NICE`).
    ShortSlice,
    /// Normal priority: neither was allowed.
    Normal,
}

impl MeetingPriority {
    /// Below real-time: short-lived processes may be missed.
    #[must_use]
    pub fn is_degraded(self) -> bool {
        !matches!(self, Self::None | Self::RealTime)
    }

    /// The warning a session or the daemon gives when degraded.
    pub const CONSEQUENCE: &'static str = "the thread that reads new processes' mappings cannot \
        get real-time priority (no CAP_SYS_NICE, or a cgroup without real-time budget): call \
        sites of processes that exit within milliseconds of their connect may be missed";

    /// Its name in the JSON summary and the Prometheus label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::RealTime => "real_time",
            Self::FairShortSlice => "fair_short_slice",
            Self::FairNiced => "fair_niced",
            Self::ShortSlice => "short_slice",
            Self::Normal => "normal",
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::RealTime => "real-time",
            Self::FairShortSlice => "nice -20, 0.1 ms slice",
            Self::FairNiced => "nice -20",
            Self::ShortSlice => "nice 0, 0.1 ms slice",
            Self::Normal => "normal",
        }
    }
}

impl From<MeetingPriority> for &'static str {
    fn from(priority: MeetingPriority) -> Self {
        priority.label()
    }
}

impl TryFrom<String> for MeetingPriority {
    type Error = String;

    fn try_from(label: String) -> Result<Self, String> {
        [
            Self::None,
            Self::RealTime,
            Self::FairShortSlice,
            Self::FairNiced,
            Self::ShortSlice,
            Self::Normal,
        ]
        .into_iter()
        .find(|priority| priority.label() == label)
        .ok_or_else(|| format!("unknown meeting priority `{label}`"))
    }
}

impl Met {
    /// The maps text of `tgid` as met, if it was met in the exec `mm` (0:
    /// any).
    pub(super) fn maps(&self, tgid: u32, mm: u64) -> Option<&str> {
        let (met_mm, text) = self.processes.get(&tgid)?;
        (mm == 0 || *met_mm == 0 || *met_mm == mm).then_some(text.as_str())
    }

    /// The file with this (device, inode), if it was met.
    pub(super) fn file(&self, inode: (u64, u64)) -> Option<Arc<File>> {
        self.files.get(&inode).cloned()
    }

    fn remember(&mut self, tgid: u32, mm: u64, text: String) {
        if self.processes.insert(tgid, (mm, text)).is_none() {
            self.arrivals.push_back(tgid);
        }
        while self.processes.len() > MAX_PROCESSES {
            let Some(oldest) = self.arrivals.pop_front() else {
                break;
            };
            self.processes.remove(&oldest);
        }
    }

    fn hold(&mut self, inode: (u64, u64), file: File) {
        if self.files.insert(inode, Arc::new(file)).is_none() {
            self.file_arrivals.push_back(inode);
        }
        while self.files.len() > MAX_FILES {
            let Some(oldest) = self.file_arrivals.pop_front() else {
                break;
            };
            self.files.remove(&oldest);
        }
    }
}

/// The meeting thread; stops when dropped.
pub struct Meeter {
    pub(super) met: Arc<Mutex<Met>>,
    stop: Arc<AtomicBool>,
    /// What the scheduler granted the thread when it started.
    pub(super) priority: MeetingPriority,
}

impl Meeter {
    /// Starts reading `ring` (the `PROCESSES` map) on a thread of its own.
    pub fn spawn(mut ring: RingBuf<MapData>) -> std::io::Result<Self> {
        let met = Arc::new(Mutex::new(Met::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopped) = (Arc::clone(&met), Arc::clone(&stop));
        let (granted, priority) = std::sync::mpsc::channel();
        thread::Builder::new()
            .name("tcptrace-meet".to_owned())
            .spawn(move || {
                let priority = run_before_short_lived_processes_exit();
                // Sent after: the thread holds no more than the daemon's
                // own by the time `spawn` returns.
                crate::privileges::confine_this_thread();
                let _ = granted.send(priority);
                let fd = ring.as_raw_fd();
                while !stopped.load(Ordering::Relaxed) {
                    let mut poll = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd, owned by this frame.
                    unsafe { libc::poll(&raw mut poll, 1, POLL_MS) };
                    while let Some(record) = ring.next() {
                        if let Some(process) = decode(&record) {
                            meet(&shared, process.tgid, process.mm);
                        }
                    }
                }
            })?;
        // Known before the session starts, so that it can say so.
        let priority = priority
            .recv_timeout(std::time::Duration::from_secs(1))
            .unwrap_or(MeetingPriority::None);
        Ok(Self {
            met,
            stop,
            priority,
        })
    }

    /// A meeter without a thread that met `tgid` with these maps and opened
    /// none of its files, as when the process exits during the meeting.
    #[cfg(test)]
    pub(super) fn met_only_maps(tgid: u32, maps: String) -> Self {
        let mut met = Met::default();
        met.remember(tgid, 0, maps);
        Self {
            met: Arc::new(Mutex::new(met)),
            stop: Arc::new(AtomicBool::new(true)),
            priority: MeetingPriority::None,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Met> {
        lock(&self.met)
    }
}

impl Drop for Meeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Real-time priority (`SCHED_FIFO` 1) for the meeting thread: a curl in a
/// shell loop exits within a millisecond or two of its connect, sooner
/// than a thread of normal priority is scheduled on a busy host (15-28 %
/// of them were missed). The work it does is bounded: one read of a
/// process's maps and a few opens per process announced.
///
/// Without that privilege (no `CAP_SYS_NICE`, or a cgroup without
/// real-time budget under `CONFIG_RT_GROUP_SCHED`, as a container's often
/// is) it asks the fair scheduler for the most it gives: nice -20 and a
/// short slice (0.1 ms), which since Linux 6.12 lets a waking task preempt
/// sooner instead of waiting for the running one's slice to end.
/// More short-lived processes are missed then (counted; measured here:
/// 4-8 % of a curl loop at nice -20 alone, 0-1 % with real-time priority).
fn run_before_short_lived_processes_exit() -> MeetingPriority {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) } == 0 {
        MeetingPriority::RealTime
    } else {
        fair_with_short_slice()
    }
}

/// `SCHED_ATTR_SIZE_VER0`: the size of the first version of the struct.
const SCHED_ATTR_SIZE_VER0: u32 = 48;
const _: () = assert!(std::mem::size_of::<SchedAttr>() == SCHED_ATTR_SIZE_VER0 as usize);

/// `struct sched_attr` (include/uapi/linux/sched/types.h), first version.
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    /// For `SCHED_OTHER` since Linux 6.12: the slice, in nanoseconds.
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// The best the fair scheduler grants this thread: nice -20 (needs
/// `CAP_SYS_NICE`) and a 0.1 ms slice (Linux 6.12+, no privilege needed),
/// or either alone.
fn fair_with_short_slice() -> MeetingPriority {
    const SHORT_SLICE_NS: u64 = 100_000;
    let set = |nice: i32, runtime: u64| {
        let attr = SchedAttr {
            size: SCHED_ATTR_SIZE_VER0,
            policy: libc::SCHED_OTHER as u32,
            flags: 0,
            nice,
            priority: 0,
            runtime,
            deadline: 0,
            period: 0,
        };
        // SAFETY: sched_setattr(2) on this thread (pid 0) with a whole,
        // correctly sized `sched_attr`.
        unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) == 0 }
    };
    if set(-20, SHORT_SLICE_NS) {
        MeetingPriority::FairShortSlice
    } else if set(-20, 0) {
        MeetingPriority::FairNiced
    } else if set(0, SHORT_SLICE_NS) {
        MeetingPriority::ShortSlice
    } else {
        MeetingPriority::Normal
    }
}

#[cfg(test)]
#[test]
fn priority_labels_are_the_json_names() {
    for priority in [
        MeetingPriority::None,
        MeetingPriority::RealTime,
        MeetingPriority::FairShortSlice,
        MeetingPriority::FairNiced,
        MeetingPriority::ShortSlice,
        MeetingPriority::Normal,
    ] {
        assert_eq!(
            serde_json::to_value(priority).unwrap(),
            serde_json::json!(priority.label())
        );
    }
}

fn decode(bytes: &[u8]) -> Option<NewProcess> {
    let bytes: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
    Some(NewProcess {
        tgid: u32::from_ne_bytes(bytes[..4].try_into().ok()?),
        _pad: 0,
        mm: u64::from_ne_bytes(bytes[8..].try_into().ok()?),
    })
}

/// Reads the mappings of `tgid` and opens the files of code not held yet.
fn meet(shared: &Mutex<Met>, tgid: u32, mm: u64) {
    let text = fs::read_to_string(format!("/proc/{tgid}/maps")).unwrap_or_default();
    // Empty: the process is gone, or exiting (its mappings torn down).
    if text.is_empty() {
        let mut met = lock(shared);
        met.missed += 1;
        return;
    }
    let wanted: Vec<_> = {
        let met = lock(shared);
        parse_mappings(&text)
            .into_iter()
            .filter(|m| m.executable && !met.files.contains_key(&m.inode))
            .filter_map(|m| match m.backing {
                Backing::File(path) => Some((m.inode, path, m.start, m.end)),
                _ => None,
            })
            .collect()
    };
    // Opened without the lock: the symbolizer may be waiting on it.
    let opened: Vec<((u64, u64), File)> = wanted
        .into_iter()
        .filter_map(|(inode, path, start, end)| {
            // The path names a file in the process's mount namespace.
            let mut in_root = OsString::from(format!("/proc/{tgid}/root"));
            in_root.push(&path);
            // Our own path last: the same file (device and inode checked)
            // when the process has exited while we were opening the others.
            let candidates = [
                PathBuf::from(in_root),
                PathBuf::from(format!("/proc/{tgid}/map_files/{start:x}-{end:x}")),
                path,
            ];
            candidates
                .iter()
                .find_map(|candidate| open_if(candidate, inode))
                .map(|file| (inode, file))
        })
        .collect();
    let mut met = lock(shared);
    for (inode, file) in opened {
        met.hold(inode, file);
    }
    met.remember(tgid, mm, text);
}

/// `path` opened, if it is the regular file with this (device, inode).
fn open_if(path: &Path, inode: (u64, u64)) -> Option<File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    (meta.is_file() && (meta.dev(), meta.ino()) == inode).then_some(file)
}

/// The shared state, locked: a panic on the other side leaves data that is
/// still consistent, so a poisoned lock is taken all the same.
fn lock(met: &Mutex<Met>) -> MutexGuard<'_, Met> {
    met.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
