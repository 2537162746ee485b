//! What the kernel knows about each loaded program that aya does not
//! expose: how many runs it skipped, and (while `kernel.bpf_stats_enabled`
//! is 1) how often it ran and for how long. A program attached to a tracepoint is
//! not re-entered on a CPU where it is already running: when a softirq
//! interrupts a run in process context (a stack capture takes about a
//! microsecond) and hits the same tracepoint, that nested run is skipped and
//! only counted in `bpf_prog_info.recursion_misses`. tcptrace reports the
//! count so that a missed transition is never silent.
//!
//! From `bpf_prog_info` (`object_info`).

use std::os::fd::AsFd;

use aya::programs::Program;
use aya_obj::generated::bpf_prog_info;

use super::object_info::object_info;

/// One program's figures from `bpf_prog_info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramRuns {
    /// Runs the kernel skipped because the program was already running on
    /// that CPU.
    pub recursion_misses: u64,
    /// Runs and their total time, counted only while
    /// `kernel.bpf_stats_enabled` is 1 (it costs two clock reads a run).
    pub runs: u64,
    pub run_time_ns: u64,
}

/// `program`'s figures; `None` when the kernel would not say.
pub fn runs_of(program: &Program) -> Option<ProgramRuns> {
    let info: bpf_prog_info = object_info(program.fd().ok()?.as_fd()).ok()?;
    Some(ProgramRuns {
        recursion_misses: info.recursion_misses,
        runs: info.run_cnt,
        run_time_ns: info.run_time_ns,
    })
}

/// Whether the kernel counts program runs and their time now.
#[must_use]
pub fn bpf_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1")
}
