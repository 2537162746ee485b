//! Who is running: the task in process context, or nobody in softirq.

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid},
    programs::{tracing::StackIdContext, TracePointContext},
};
use tcptrace_common::{Counter, Task};

use crate::maps::{count, settings, IN_SOFTIRQ, STACKS};

/// True when the tracepoint fired in a system call, where "current" is the
/// task acting on the socket. In softirq "current" is whoever was
/// interrupted and must never be used for attribution.
///
/// The record's `common_flags` would say so, but the kernel does not fill
/// the common fields for BPF; and per-CPU `preempt_count` is not reachable
/// from a tracepoint program. So `irq:softirq_entry`/`softirq_exit` keep a
/// per-CPU flag (softirqs do not nest on one CPU).
#[inline(always)]
pub fn in_process_context() -> bool {
    IN_SOFTIRQ.get(0).is_none_or(|flag| *flag == 0)
}

#[inline(always)]
pub fn set_in_softirq(value: u32) {
    if let Some(flag) = IN_SOFTIRQ.get_ptr_mut(0) {
        unsafe { *flag = value };
    }
}

/// The current task; with its user stack when `with_stack` and stacks are on.
#[inline(always)]
pub fn current_task(ctx: &TracePointContext, with_stack: bool) -> Task {
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut task = Task::NOBODY;
    task.tgid = (pid_tgid >> 32) as u32;
    task.pid = pid_tgid as u32;
    task.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    if with_stack && settings().capture_stacks != 0 {
        match ctx.get_stackid(&STACKS, u64::from(BPF_F_USER_STACK)) {
            Ok(id) => task.stack_id = id as i32,
            Err(_) => count(Counter::StackErrors),
        }
    }
    task
}

#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    unsafe { bpf_get_current_cgroup_id() }
}
