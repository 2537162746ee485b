//! Who is running: the task in process context, or nobody in softirq.

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        bpf_probe_read_user_buf, generated as gen,
    },
};
use tcptrace_common::{
    Counter, EventKind, StackSample, StackSampleKey, Task, UserStack, STACK_KIND_ACCEPT,
    STACK_KIND_BIRTH, STACK_KIND_CLOSE, STACK_KIND_EOF, TASK_COMM_LEN, USER_STACK_BYTES,
};

use crate::maps::{count, kernel_layout, settings, EVENTS, IN_SOFTIRQ, STACK_SAMPLES};

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
    /// accept(), accept4()
    Accept,
    /// a read that returned end-of-file in CLOSE_WAIT
    EofRead,
}

/// The current task, with its user stack when asked and stacks are on.
#[inline(always)]
pub fn current_task(stack: StackFor, now: u64) -> Task {
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut task = Task::NOBODY;
    task.tgid = (pid_tgid >> 32) as u32;
    task.pid = pid_tgid as u32;
    // Straight into the record: aya's wrapper zeroes a temporary first,
    // byte by byte.
    // SAFETY: the helper writes at most TASK_COMM_LEN bytes into the array.
    unsafe {
        gen::bpf_get_current_comm(task.thread_comm.as_mut_ptr().cast(), TASK_COMM_LEN as u32)
    };
    let current = unsafe { gen::bpf_get_current_task_btf() } as u64;
    task.comm = process_name(current).unwrap_or(task.thread_comm);
    let settings = settings();
    let kind = match stack {
        StackFor::None => return task,
        StackFor::Birth => STACK_KIND_BIRTH,
        StackFor::Close => STACK_KIND_CLOSE,
        StackFor::Accept => STACK_KIND_ACCEPT,
        StackFor::EofRead => STACK_KIND_EOF,
    };
    if settings.capture_stacks == 0 || task.tgid == settings.tracer_tgid {
        return task;
    }
    // A capture costs a microsecond or two: when sampling, reuse the one
    // taken for this process and kind less than `stack_interval_ms` ago.
    let key = StackSampleKey {
        tgid: task.tgid,
        kind,
    };
    let interval_ns = u64::from(settings.stack_interval_ms) * 1_000_000;
    // SAFETY: the value is copied out at once; a concurrent update of the
    // LRU entry can at worst give a stale sample, which is still a stack of
    // this process and kind.
    let last = unsafe { STACK_SAMPLES.get(&key) }.copied();
    if let Some(last) = last {
        if interval_ns != 0 && now.saturating_sub(last.taken_ns) < interval_ns {
            task.stack = last.stack;
            count(Counter::StacksSampled);
            return task;
        }
    }
    // The first capture of a process wakes the reader at once: it must read
    // the process's mappings before a short-lived one exits.
    task.stack = capture_user_stack(&task, current, now, last.is_none());
    if task.stack != 0 {
        let sample = StackSample {
            taken_ns: now,
            stack: task.stack,
        };
        let _ = STACK_SAMPLES.insert(&key, &sample, 0);
    }
    task
}

/// The process name: the `comm` of the thread-group leader of `current`.
#[inline(always)]
fn process_name(current: u64) -> Option<[u8; TASK_COMM_LEN]> {
    let layout = kernel_layout();
    if layout.task_group_leader == 0 || layout.task_comm == 0 || current == 0 {
        return None;
    }
    // SAFETY: probe reads check the addresses; offsets come from BTF.
    unsafe {
        let leader: u64 =
            bpf_probe_read_kernel((current + u64::from(layout.task_group_leader)) as *const u64)
                .ok()?;
        bpf_probe_read_kernel((leader + u64::from(layout.task_comm)) as *const [u8; TASK_COMM_LEN])
            .ok()
    }
}

/// x86-64's `struct pt_regs` offsets of the registers an unwind starts
/// from. The verifier wants constant offsets; userspace checks them against
/// BTF (`Settings::regs_sp`) and a kernel with another layout gets no stacks.
const X86_64_PT_REGS_BP: usize = 32;
const X86_64_PT_REGS_IP: usize = 128;
const X86_64_PT_REGS_SP: u32 = 152;

/// Sends a `UserStack` record for the current task's system call: its user
/// registers and the stack above its stack pointer. Returns the record's
/// id, or 0 (counted) when none could be sent.
#[inline(always)]
fn capture_user_stack(task: &Task, current: u64, now: u64, wake: bool) -> u64 {
    if settings().regs_sp != X86_64_PT_REGS_SP {
        return 0;
    }
    let Some(mut entry) = EVENTS.reserve::<UserStack>(0) else {
        count(Counter::StackErrors);
        return 0;
    };
    let record = entry.as_mut_ptr();
    // Unique per boot: a CPU runs one program at a time, and each run takes
    // at most one stack, at its own clock reading.
    let id =
        (u64::from(unsafe { gen::bpf_get_smp_processor_id() }) << 56) | (now & ((1 << 56) - 1));
    // SAFETY: `record` points to a reserved ring-buffer entry of the right
    // size, written only here until submitted or discarded; `pt_regs` and
    // the user stack are read with probe reads, which check the addresses.
    let read = unsafe {
        (*record).kind = EventKind::UserStack as u16;
        (*record)._pad = 0;
        (*record).id = id;
        (*record).tgid = task.tgid;
        (*record).pid = task.pid;
        (*record).comm = task.comm;
        (*record).mm = mm_of(current);
        let regs = gen::bpf_task_pt_regs(current as *mut _) as *const u8;
        if regs.is_null() {
            Err(())
        } else {
            let reg = |offset: usize| {
                bpf_probe_read_kernel(regs.add(offset) as *const u64).map_err(|_| ())
            };
            match (
                reg(X86_64_PT_REGS_IP),
                reg(X86_64_PT_REGS_SP as usize),
                reg(X86_64_PT_REGS_BP),
            ) {
                (Ok(ip), Ok(sp), Ok(bp)) => {
                    (*record).ip = ip;
                    (*record).sp = sp;
                    (*record).bp = bp;
                    copy_user_stack(sp, &mut (*record).stack)
                }
                _ => Err(()),
            }
        }
    };
    match read {
        Ok(len) => {
            // SAFETY: as above.
            unsafe { (*record).len = len };
            let flags = if wake {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            entry.submit(u64::from(flags));
            count(Counter::StacksTaken);
            id
        }
        Err(()) => {
            entry.discard(0);
            count(Counter::StackErrors);
            0
        }
    }
}

/// Copies the user stack from `sp` up, as much of `USER_STACK_BYTES` as
/// is mapped: a thread near the top of its stack has less above it, and a
/// read that crosses the end fails whole, so smaller sizes are tried next.
#[inline(always)]
unsafe fn copy_user_stack(sp: u64, into: &mut [u8; USER_STACK_BYTES]) -> Result<u32, ()> {
    let from = sp as *const u8;
    // SAFETY: probe reads check the user addresses; every slice is within `into`.
    unsafe {
        if bpf_probe_read_user_buf(from, &mut into[..USER_STACK_BYTES]).is_ok() {
            return Ok(USER_STACK_BYTES as u32);
        }
        if bpf_probe_read_user_buf(from, &mut into[..USER_STACK_BYTES / 2]).is_ok() {
            return Ok(USER_STACK_BYTES as u32 / 2);
        }
        if bpf_probe_read_user_buf(from, &mut into[..USER_STACK_BYTES / 4]).is_ok() {
            return Ok(USER_STACK_BYTES as u32 / 4);
        }
        if bpf_probe_read_user_buf(from, &mut into[..USER_STACK_BYTES / 16]).is_ok() {
            return Ok(USER_STACK_BYTES as u32 / 16);
        }
    }
    Err(())
}

/// `task->mm`, 0 when it cannot be read.
#[inline(always)]
fn mm_of(task: u64) -> u64 {
    let offset = kernel_layout().task_mm;
    if offset == 0 || task == 0 {
        return 0;
    }
    // SAFETY: a probe read checks the address.
    unsafe { bpf_probe_read_kernel((task + u64::from(offset)) as *const u64) }.unwrap_or(0)
}

#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    unsafe { bpf_get_current_cgroup_id() }
}
