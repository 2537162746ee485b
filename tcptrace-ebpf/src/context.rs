//! Who is running: the task in process context, or nobody in softirq.

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        bpf_probe_read_user, generated as gen,
    },
    programs::tracing::StackIdContext,
};
use tcptrace_common::{
    Counter, StackSample, StackSampleKey, Task, STACK_KIND_BIRTH, STACK_KIND_CLOSE,
};

use crate::maps::{count, settings, IN_SOFTIRQ, STACKS, STACK_SAMPLES};

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

/// Which call a stack is taken for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum StackFor {
    None,
    /// connect() or listen()
    Birth,
    /// close(), shutdown(), abort
    Close,
}

/// The current task, with its user stack when asked and stacks are on.
#[inline(always)]
pub fn current_task<C: StackIdContext>(ctx: &C, stack: StackFor, now: u64) -> Task {
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut task = Task::NOBODY;
    task.tgid = (pid_tgid >> 32) as u32;
    task.pid = pid_tgid as u32;
    // Straight into the record: aya's wrapper zeroes a temporary first,
    // byte by byte.
    unsafe {
        gen::bpf_get_current_comm(
            task.comm.as_mut_ptr().cast(),
            tcptrace_common::TASK_COMM_LEN as u32,
        )
    };
    let settings = settings();
    let kind = match stack {
        StackFor::None => return task,
        StackFor::Birth => STACK_KIND_BIRTH,
        StackFor::Close => STACK_KIND_CLOSE,
    };
    if settings.capture_stacks == 0 || task.tgid == settings.tracer_tgid {
        return task;
    }
    // A stack costs about a microsecond: when sampling, reuse the one taken
    // for this process and kind less than `stack_interval_ms` ago.
    let key = StackSampleKey {
        tgid: task.tgid,
        kind,
    };
    let interval_ns = u64::from(settings.stack_interval_ms) * 1_000_000;
    if interval_ns != 0 {
        if let Some(last) = unsafe { STACK_SAMPLES.get(&key) } {
            if now.saturating_sub(last.taken_ns) < interval_ns {
                task.stack_id = last.stack_id;
                task.caller_ip = last.caller_ip;
                return task;
            }
        }
    }
    match ctx.get_stackid(&STACKS, u64::from(BPF_F_USER_STACK)) {
        Ok(id) => {
            task.stack_id = id as i32;
            count(Counter::StacksTaken);
        }
        Err(_) => count(Counter::StackErrors),
    }
    task.caller_ip = word_at_user_sp(settings.regs_sp);
    if interval_ns != 0 {
        let sample = StackSample {
            taken_ns: now,
            caller_ip: task.caller_ip,
            stack_id: task.stack_id,
            _pad: 0,
        };
        let _ = STACK_SAMPLES.insert(&key, &sample, 0);
    }
    task
}

/// The word at the user stack pointer saved at system call entry (see
/// `Task::caller_ip`); 0 when it cannot be read.
#[inline(always)]
fn word_at_user_sp(regs_sp: u32) -> u64 {
    // Only the offset x86-64 has always had is accepted: the verifier wants
    // a constant offset into the BTF-typed pt_regs.
    const X86_64_PT_REGS_SP: u32 = 152;
    if regs_sp != X86_64_PT_REGS_SP {
        return 0;
    }
    unsafe {
        let task = gen::bpf_get_current_task_btf();
        let regs = gen::bpf_task_pt_regs(task) as *const u8;
        if regs.is_null() {
            return 0;
        }
        let Ok(sp) = bpf_probe_read_kernel(regs.add(X86_64_PT_REGS_SP as usize) as *const u64)
        else {
            return 0;
        };
        bpf_probe_read_user(sp as *const u64).unwrap_or(0)
    }
}

#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    unsafe { bpf_get_current_cgroup_id() }
}
