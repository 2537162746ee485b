//! What the kernel knows about each loaded program that aya does not
//! expose: how many runs it skipped. A program attached to a tracepoint is
//! not re-entered on a CPU where it is already running: when a softirq
//! interrupts a run in process context (a stack capture takes about a
//! microsecond) and hits the same tracepoint, that nested run is skipped and
//! only counted in `bpf_prog_info.recursion_misses`. tcptrace reports the
//! count so that a missed transition is never silent.
//!
//! Hand-written: one `BPF_OBJ_GET_INFO_BY_FD` call, with the kernel's own
//! structures from `aya-obj`.

use std::os::fd::{AsFd, AsRawFd};

use aya::programs::Program;
use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};

/// Runs the kernel skipped because the program was already running on that
/// CPU; `None` when the kernel would not say.
pub fn recursion_misses(program: &Program) -> Option<u64> {
    let fd = program.fd().ok()?.as_fd().as_raw_fd();
    // SAFETY: both are plain C structures for which all-zero is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = u32::try_from(fd).ok()?;
    attr.info.info_len = u32::try_from(std::mem::size_of::<bpf_prog_info>()).ok()?;
    attr.info.info = std::ptr::addr_of_mut!(info) as u64;
    // SAFETY: `attr` points the kernel at `info`, which outlives the call
    // and is as large as `info_len` says.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            std::ptr::addr_of_mut!(attr),
            std::mem::size_of::<bpf_attr>(),
        )
    };
    (result == 0).then_some(info.recursion_misses)
}
