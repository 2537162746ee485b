//! Least privilege after attach. Loading and attaching needs `CAP_BPF` and
//! `CAP_PERFMON` (or `CAP_SYS_ADMIN`), mounting tracefs `CAP_SYS_ADMIN`; once the
//! programs are attached, reading the ring buffer and maps through the fds
//! already held needs no capability at all. What stays:
//! - `CAP_SYS_PTRACE`: read `/proc/PID/fd`, `maps` and `mem` of other users'
//!   processes (owners, fds and call sites);
//! - `CAP_DAC_READ_SEARCH`: traverse `/proc/PID` and cgroup directories that
//!   are not world-readable.
//!
//! Entering network namespaces (`CAP_SYS_ADMIN`) is left to a helper
//! process started before the drop (`netns::opener`).
//!
//! Everything else leaves the effective, permitted, inheritable, ambient and
//! bounding sets, so a compromised daemon cannot load new programs, mount,
//! or regain what it dropped.
//!
//! Capabilities are per thread: a thread started before the drop keeps the
//! ones it was born with. So the daemon says what every thread keeps before
//! it starts any (`confine_threads_to`), each long-lived thread confines
//! itself once its own privileged setup is done (`confine_this_thread`: the
//! meeter's real-time priority needs `CAP_SYS_NICE`), and after the drop
//! `threads_holding_more` checks every thread of the process.

use std::{fs, sync::OnceLock};

use anyhow::{Context, Result};
use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities the daemon keeps after attaching.
pub const KEPT: [Capability; 2] = [Capability::CAP_SYS_PTRACE, Capability::CAP_DAC_READ_SEARCH];

/// Drops every capability but `KEPT`. Returns the ones kept (that the
/// process had); an error when any thread still holds more (see
/// `confine_threads_to`).
pub fn drop_after_attach() -> Result<Vec<Capability>> {
    let kept = keep_only(&KEPT)?;
    let holding = threads_holding_more(&KEPT)?;
    anyhow::ensure!(
        holding.is_empty(),
        "threads kept capabilities the daemon dropped: {}",
        holding.join("; ")
    );
    Ok(kept)
}

/// Drops every capability but `wanted`, from every set. Returns the ones
/// kept (those of `wanted` the process had).
pub fn keep_only(wanted: &[Capability]) -> Result<Vec<Capability>> {
    let permitted = caps::read(None, CapSet::Permitted).context("reading capabilities")?;
    let keep: CapsHashSet = wanted
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            // Dropping from the bounding set needs CAP_SETPCAP; without it
            // the bounding set stays, but nothing can be regained anyway
            // once permitted is cleared.
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    caps::clear(None, CapSet::Ambient).context("clearing ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing inheritable capabilities")?;
    caps::set(None, CapSet::Effective, &keep).context("setting effective capabilities")?;
    caps::set(None, CapSet::Permitted, &keep).context("setting permitted capabilities")?;
    let mut kept: Vec<Capability> = keep.into_iter().collect();
    kept.sort_by_key(caps::Capability::index);
    Ok(kept)
}

/// What every thread of this process keeps, once set: see the module's
/// doc. Unset (trace sessions), threads keep what they are born with.
static THREAD_CAPABILITIES: OnceLock<Vec<Capability>> = OnceLock::new();

/// From now on, threads that call `confine_this_thread` keep only `wanted`.
/// Set once: a later call changes nothing.
pub fn confine_threads_to(wanted: &[Capability]) {
    let _ = THREAD_CAPABILITIES.set(wanted.to_vec());
}

/// Drops the calling thread's capabilities to those `confine_threads_to`
/// set, if it was called. A failure is not returned: the daemon's check of
/// every thread after its drop (`threads_holding_more`) refuses to run on.
pub fn confine_this_thread() {
    if let Some(wanted) = THREAD_CAPABILITIES.get() {
        let _ = keep_only(wanted);
    }
}

/// The threads of this process whose permitted or effective set holds a
/// capability beyond `kept` (read from `/proc/self/task/*/status`), each
/// as "`name` (tid `N`): `CapPrm` `X`, `CapEff` `Y`". A thread that exits meanwhile is
/// left out.
pub fn threads_holding_more(kept: &[Capability]) -> Result<Vec<String>> {
    let allowed = kept.iter().fold(0u64, |mask, cap| mask | cap.bitmask());
    let mut holding = Vec::new();
    for task in fs::read_dir("/proc/self/task").context("listing /proc/self/task")? {
        let task = task.context("listing /proc/self/task")?;
        let Ok(status) = fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
        };
        let set = |name: &str| field(name).and_then(|hex| u64::from_str_radix(hex, 16).ok());
        let (Some(permitted), Some(effective)) = (set("CapPrm:"), set("CapEff:")) else {
            continue;
        };
        if (permitted | effective) & !allowed != 0 {
            holding.push(format!(
                "{} (tid {}): CapPrm {permitted:#x}, CapEff {effective:#x}",
                field("Name:").unwrap_or("?"),
                task.file_name().to_string_lossy(),
            ));
        }
    }
    Ok(holding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_confined_holds_only_what_was_asked_and_the_check_names_the_others() {
        let wanted = [Capability::CAP_DAC_READ_SEARCH];
        let permitted = caps::read(None, CapSet::Permitted).unwrap();
        let (confined, tid, holding) = std::thread::spawn(move || {
            keep_only(&wanted).unwrap();
            let holding = threads_holding_more(&wanted).unwrap();
            // SAFETY: gettid has no arguments.
            let tid = unsafe { libc::gettid() };
            (caps::read(None, CapSet::Permitted).unwrap(), tid, holding)
        })
        .join()
        .unwrap();
        let expected: CapsHashSet = permitted
            .iter()
            .copied()
            .filter(|cap| wanted.contains(cap))
            .collect();
        assert_eq!(confined, expected);
        // The confined thread is not named; the test's threads, left as
        // they were, are when they hold more than `wanted` (as root).
        assert!(
            !holding
                .iter()
                .any(|line| line.contains(&format!("(tid {tid})"))),
            "{holding:?}"
        );
        let test_threads_hold_more = permitted.iter().any(|cap| !wanted.contains(cap));
        assert_eq!(!holding.is_empty(), test_threads_hold_more, "{holding:?}");
    }
}
