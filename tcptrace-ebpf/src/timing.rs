//! Timing the state program's runs and their parts, for profiling only
//! (see `tcptrace_common::phase_timing`). With `Settings::phase_timing`
//! off, every function here returns 0 before reading a clock; the setting
//! lives in frozen read-only memory, so the verifier removes the rest.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use tcptrace_common::phase_timing::Phase;

use crate::maps::{settings, PHASE_NS};

/// The clock, when timing is on.
#[inline(always)]
pub fn start() -> u64 {
    if settings().phase_timing == 0 {
        return 0;
    }
    // SAFETY: a BPF helper with no memory arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// Ends the span `span` begun at `since` (a `start` or an earlier lap);
/// returns the clock, for the next span to begin at.
#[inline(always)]
pub fn lap(span: u32, since: u64) -> u64 {
    if settings().phase_timing == 0 {
        return 0;
    }
    // SAFETY: a BPF helper with no memory arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    add(2 * span, now.saturating_sub(since));
    add(2 * span + 1, 1);
    now
}

/// `lap` of a part of a run.
#[inline(always)]
pub fn lap_phase(phase: Phase, since: u64) -> u64 {
    lap(phase as u32, since)
}

#[inline(always)]
fn add(index: u32, value: u64) {
    if let Some(slot) = PHASE_NS.get_ptr_mut(index) {
        // SAFETY: this CPU's slot of a per-CPU array; programs do not nest on one CPU.
        unsafe { *slot += value };
    }
}
