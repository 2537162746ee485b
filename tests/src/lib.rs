//! Harness for the real-kernel tests: run the real `tcptrace` binary, drive
//! real TCP traffic, read what tcptrace reported.
//!
//! Tests need root (they load BPF programs and make network namespaces).
//! Without it they fail with a message saying so; they never skip.

pub mod bpf_stats;
pub mod daemon;
pub mod kernel_counts;
pub mod netns;
pub mod pki;
pub mod process;
pub mod programs;
pub mod redis;
pub mod tmux;
pub mod trace;
pub mod tracefs;
pub mod workload;

pub use process::Workload;
pub use trace::{Trace, Tracer};

/// Fails the test with a clear message unless running as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the real-kernel tests load BPF programs and create network namespaces: \
         run them as root (`sudo cargo xtask test`); euid is {euid}"
    );
}

/// The cgroup v2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a
/// hybrid host like this one).
#[must_use]
pub fn cgroup2_root() -> std::path::PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| std::path::PathBuf::from(f[1]))
        .expect("this test needs a cgroup v2 mount")
}
