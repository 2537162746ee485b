//! Asking a JVM for its perf map, the way `jcmd PID Compiler.perfmap` does
//! (JDK 17+), through the attach mechanism of `HotSpot`: an `.attach_pid<pid>` file
//! and SIGQUIT make the JVM open `/tmp/.java_pid<pid>`, a UNIX socket that
//! takes `1\0jcmd\0Compiler.perfmap\0\0\0` and answers `0\n` and the
//! command's output; the JVM then writes `/tmp/perf-<pid>.map` naming its
//! JIT-compiled methods. Paths are the JVM's own (its root, its pid in its
//! pid namespace), reached through `/proc/<tgid>/root`.
//!
//! The protocol is written here (a few lines; no maintained crate speaks
//! it). Requests run on a thread of their own: an attach takes tens of
//! milliseconds and must never hold up the event reader. Each JVM is asked
//! at most once per `MIN_INTERVAL`, since compiled code keeps appearing.

use std::{
    collections::HashMap,
    fs,
    io::{Read, Write},
    os::{
        fd::AsRawFd,
        unix::{
            fs::{MetadataExt, OpenOptionsExt},
            net::UnixStream,
        },
    },
    path::{Path, PathBuf},
    sync::mpsc::{self, Receiver, Sender},
    thread,
    time::{Duration, Instant},
};

/// A JVM is asked again at most this often.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How long the JVM gets to open its attach socket after SIGQUIT.
const ATTACH_WAIT: Duration = Duration::from_secs(3);
/// A reply longer than this is cut (the command's output is a line).
const MAX_REPLY: u64 = 64 * 1024;

/// A request: the JVM's pid as we see it and as it sees itself.
type Request = (u32, u32);
/// An answer: the JVM, and why its request failed, if it did.
type Answer = (u32, Result<(), String>);
/// The request thread's two ends.
type Worker = (Sender<Request>, Receiver<Answer>);

/// Perf map requests to JVMs, made on a thread of their own.
pub struct JvmPerfMaps {
    enabled: bool,
    /// The request thread, started at the first request.
    worker: Option<Worker>,
    /// Per JVM: when it was last asked, its pid in its namespace, and why
    /// that failed, if it did.
    asked: HashMap<u32, (Instant, u32, Option<String>)>,
    in_flight: usize,
}

impl JvmPerfMaps {
    /// `enabled` false makes every request a no-op (`--no-jvm-perf-map`).
    #[must_use]
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            worker: None,
            asked: HashMap::new(),
            in_flight: 0,
        }
    }

    pub fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }

    fn start_worker() -> Option<Worker> {
        let (requests, work) = mpsc::channel::<Request>();
        let (done, results) = mpsc::channel();
        thread::Builder::new()
            .name("tcptrace-jvm".to_owned())
            .spawn(move || {
                crate::privileges::confine_this_thread();
                for (tgid, nspid) in work {
                    if done.send((tgid, request_perf_map(tgid, nspid))).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some((requests, results))
    }

    /// Asks JVM `tgid` (pid `nspid` in its namespace) for a fresh perf map,
    /// unless it was asked less than `MIN_INTERVAL` ago.
    pub fn request(&mut self, tgid: u32, nspid: u32) {
        if !self.enabled {
            return;
        }
        self.collect();
        if self
            .asked
            .get(&tgid)
            .is_some_and(|(at, _, _)| at.elapsed() < MIN_INTERVAL)
        {
            return;
        }
        self.send(tgid, nspid);
    }

    /// Asks every JVM asked before once more, now: the end of a session,
    /// when code compiled since the last map should be named too.
    pub fn request_all_again(&mut self) {
        let jvms: Vec<(u32, u32)> = self
            .asked
            .iter()
            .map(|(&tgid, &(_, nspid, _))| (tgid, nspid))
            .collect();
        for (tgid, nspid) in jvms {
            self.send(tgid, nspid);
        }
    }

    fn send(&mut self, tgid: u32, nspid: u32) {
        if self.worker.is_none() {
            self.worker = Self::start_worker();
        }
        let Some((requests, _)) = &self.worker else {
            return;
        };
        if requests.send((tgid, nspid)).is_ok() {
            self.asked.insert(tgid, (Instant::now(), nspid, None));
            self.in_flight += 1;
        }
    }

    /// Why the last request to `tgid` failed, if it did.
    #[must_use]
    pub fn failure(&self, tgid: u32) -> Option<&str> {
        self.asked.get(&tgid)?.2.as_deref()
    }

    /// Waits (at most `limit`) until every request made so far is answered.
    pub fn wait_idle(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.in_flight > 0 {
            let Some((_, results)) = &self.worker else {
                break;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match results.recv_timeout(left) {
                Ok(result) => self.record(result),
                Err(_) => break,
            }
        }
    }

    /// Takes the answers that came in.
    fn collect(&mut self) {
        while let Some(result) = self.worker.as_ref().and_then(|(_, r)| r.try_recv().ok()) {
            self.record(result);
        }
    }

    fn record(&mut self, (tgid, result): Answer) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(asked) = self.asked.get_mut(&tgid) {
            asked.2 = result.err();
        }
        // Processes come and go: forget the oldest answers past a bound.
        if self.asked.len() > 4096 {
            self.asked
                .retain(|_, (at, _, _)| at.elapsed() < MIN_INTERVAL * 60);
        }
    }
}

/// One `Compiler.perfmap` request to JVM `tgid`.
///
/// Made as the JVM's own user where that is allowed: the JVM answers only
/// its own user or root, and the host's root is nobody inside a user
/// namespace (a rootless container, a `hostUsers: false` pod), where it
/// cannot even create a file in the JVM's /tmp. As the JVM's user, we are
/// that user (root, often) in its namespace too. The JVM's /tmp is opened
/// first, as we are: its user may not see through `/proc/PID/root`.
fn request_perf_map(tgid: u32, nspid: u32) -> Result<(), String> {
    let owner =
        fs::metadata(format!("/proc/{tgid}")).map_err(|err| format!("the JVM is gone: {err}"))?;
    let tmp_path = PathBuf::from(format!("/proc/{tgid}/root/tmp"));
    let tmp_dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(&tmp_path)
        .map_err(|err| format!("{}: {err}", tmp_path.display()))?;
    let tmp = JvmTmp {
        via: PathBuf::from(format!("/proc/self/fd/{}", tmp_dir.as_raw_fd())),
        shown: tmp_path,
    };
    let _as_owner = EffectiveIds::switch_to(owner.uid(), owner.gid());
    let socket = format!(".java_pid{nspid}");
    if !is_socket(&tmp.via.join(&socket)) {
        start_attach_listener(tgid, nspid, &owner, &tmp)?;
    }
    let mut stream = UnixStream::connect(tmp.via.join(&socket))
        .map_err(|err| format!("connecting to {}: {err}", tmp.shown.join(&socket).display()))?;
    stream
        .set_read_timeout(Some(ATTACH_WAIT))
        .and_then(|()| stream.set_write_timeout(Some(ATTACH_WAIT)))
        .map_err(|err| err.to_string())?;
    // Protocol version 1, the command, three arguments (unused ones empty).
    stream
        .write_all(b"1\0jcmd\0Compiler.perfmap\0\0\0")
        .map_err(|err| format!("writing to the JVM: {err}"))?;
    let mut reply = String::new();
    stream
        .take(MAX_REPLY)
        .read_to_string(&mut reply)
        .map_err(|err| format!("reading the JVM's answer: {err}"))?;
    match reply.lines().next() {
        Some("0") => Ok(()),
        _ => Err(format!(
            "the JVM refused Compiler.perfmap (JDK 17+ needed): {}",
            reply.trim()
        )),
    }
}

/// The JVM's /tmp: the path to reach it by (an open directory), and the
/// one to show.
struct JvmTmp {
    via: PathBuf,
    shown: PathBuf,
}

/// Makes the JVM start its attach listener: a trigger file of its own user
/// in its /tmp, then SIGQUIT (which, with the file there, starts the
/// listener instead of printing a thread dump).
fn start_attach_listener(
    tgid: u32,
    nspid: u32,
    owner: &fs::Metadata,
    tmp: &JvmTmp,
) -> Result<(), String> {
    let name = format!(".attach_pid{nspid}");
    let trigger = tmp.via.join(&name);
    fs::write(&trigger, b"")
        .map_err(|err| format!("{}: {err}", tmp.shown.join(&name).display()))?;
    // The JVM only trusts a trigger file of its own user (made as that user
    // already, unless we could not switch to it).
    let _ = std::os::unix::fs::chown(&trigger, Some(owner.uid()), Some(owner.gid()));
    let pid = i32::try_from(tgid).map_err(|err| err.to_string())?;
    // SAFETY: kill has no memory effects; the pid is the JVM's.
    let sent = unsafe { libc::kill(pid, libc::SIGQUIT) } == 0;
    let socket = tmp.via.join(format!(".java_pid{nspid}"));
    let deadline = Instant::now() + ATTACH_WAIT;
    let mut started = false;
    while sent && Instant::now() < deadline {
        if is_socket(&socket) {
            started = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = fs::remove_file(&trigger);
    if started {
        Ok(())
    } else {
        Err("the JVM did not open its attach socket (-XX:+DisableAttachMechanism?)".to_owned())
    }
}

/// This thread's effective user and group switched, and switched back when
/// dropped. Raw system calls: the C library's `setresuid` would switch
/// every thread of tcptrace. Without the privilege to switch (the daemon
/// keeps none after attaching), nothing changes.
struct EffectiveIds {
    before: Option<(u32, u32)>,
}

impl EffectiveIds {
    fn switch_to(uid: u32, gid: u32) -> Self {
        // SAFETY: id queries without memory arguments.
        let before = unsafe { (libc::geteuid(), libc::getegid()) };
        if before == (uid, gid) {
            return Self { before: None };
        }
        // The group first, while the user may still change it.
        if set_effective(libc::SYS_setresgid, gid) && set_effective(libc::SYS_setresuid, uid) {
            return Self {
                before: Some(before),
            };
        }
        set_effective(libc::SYS_setresgid, before.1);
        Self { before: None }
    }
}

impl Drop for EffectiveIds {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.before {
            // The user first: back to root, which may change the group.
            set_effective(libc::SYS_setresuid, uid);
            set_effective(libc::SYS_setresgid, gid);
        }
    }
}

/// `setresuid` or `setresgid` (`call`) of this thread's effective id only.
fn set_effective(call: libc::c_long, id: u32) -> bool {
    let unchanged = libc::c_long::from(u32::MAX);
    // SAFETY: the system call takes three ids and touches no memory of ours.
    unsafe { libc::syscall(call, unchanged, libc::c_long::from(id), unchanged) == 0 }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    fs::metadata(path).is_ok_and(|meta| meta.file_type().is_socket())
}
