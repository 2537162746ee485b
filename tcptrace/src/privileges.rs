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

use anyhow::{Context, Result};
use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities the daemon keeps after attaching.
pub const KEPT: [Capability; 2] = [Capability::CAP_SYS_PTRACE, Capability::CAP_DAC_READ_SEARCH];

/// Drops every capability but `KEPT`. Returns the ones kept (that the
/// process had).
pub fn drop_after_attach() -> Result<Vec<Capability>> {
    keep_only(&KEPT)
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
