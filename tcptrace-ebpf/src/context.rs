//! Who is running: the task in process context, or nobody in softirq.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated as gen,
    },
};
use tcptrace_common::{
    stack_budget::StackBudget, Counter, EventKind, NewProcess, RecentSample, StackSample,
    StackSampleKey, Task, STACK_KIND_ACCEPT, STACK_KIND_BIRTH, STACK_KIND_CLOSE, STACK_KIND_EOF,
    TASK_COMM_LEN, USER_STACK_BYTES, USER_STACK_HEADER,
};

use crate::{
    emit::wakeup_flag,
    filter::allows_capture,
    maps::{
        count, kernel_layout, settings, IN_SOFTIRQ, PREEMPT_COUNT_AT, PROCESSES, RECENT_SAMPLES,
        STACK_SAMPLES, STACK_SCRATCH, USER_STACKS,
    },
    sock::{read_at, SockRead, Typed},
};

/// True when the tracepoint fired in a system call, where "current" is the
/// task acting on the socket. In softirq (or a hard interrupt) "current"
/// is whoever was interrupted and must never be used for attribution.
///
/// The record's `common_flags` would say so, but the kernel does not fill
/// the common fields for BPF, and `__preempt_count` is no usable ksym
/// without `CONFIG_KALLSYMS_ALL`. So this CPU's `preempt_count` is reached
/// through the current task's runqueue (offsets from BTF, see
/// `KernelLayout::preempt_count_from_rq`); on kernels without that path,
/// `irq:softirq_entry`/`softirq_exit` keep a per-CPU flag instead
/// (softirqs do not nest on one CPU), at two more program runs per softirq.
#[inline(always)]
pub fn in_process_context() -> bool {
    match preempt_count() {
        Some(count) => count & (SOFTIRQ_OFFSET | HARDIRQ_MASK | NMI_MASK) == 0,
        None => IN_SOFTIRQ.get(0).is_none_or(|flag| *flag == 0),
    }
}

/// `preempt_count` bits (include/linux/preempt.h): serving a softirq sets
/// `SOFTIRQ_OFFSET` (a section with bottom halves disabled adds twice it,
/// and is process context); hard interrupts and NMIs have their own.
const SOFTIRQ_OFFSET: u32 = 1 << 8;
const HARDIRQ_MASK: u32 = 0xf << 16;
const NMI_MASK: u32 = 0xf << 20;

/// This CPU's `preempt_count`: `current->se.cfs_rq->rq`, this CPU's
/// runqueue, plus the distance from `runqueues` to `__preempt_count` in
/// the per-CPU area. The address never changes for a CPU: it is found once
/// and kept (`PREEMPT_COUNT_AT`), so each later call is one read. `None`
/// when the path is not configured or a read fails.
#[inline(always)]
fn preempt_count() -> Option<u32> {
    let layout = kernel_layout();
    if layout.task_se_cfs_rq == 0 || layout.cfs_rq_rq == 0 {
        return None;
    }
    let kept = PREEMPT_COUNT_AT.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot of a per-CPU array; programs do not nest on
    // one CPU, and every address is read with a probe read.
    unsafe {
        if *kept == 0 {
            let task = gen::bpf_get_current_task_btf() as u64;
            let cfs_rq: u64 =
                bpf_probe_read_kernel((task + u64::from(layout.task_se_cfs_rq)) as *const u64)
                    .ok()?;
            let rq: u64 =
                bpf_probe_read_kernel((cfs_rq + u64::from(layout.cfs_rq_rq)) as *const u64).ok()?;
            *kept = rq.wrapping_add_signed(i64::from(layout.preempt_count_from_rq));
        }
        bpf_probe_read_kernel(*kept as *const u32).ok()
    }
}

#[inline(always)]
pub fn set_in_softirq(value: u32) {
    if let Some(flag) = IN_SOFTIRQ.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array; programs do not nest on one CPU.
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
    // Every field is written below, none zeroed first: zeroing a `Task`
    // became a call to a byte-wise memset subprogram.
    let mut thread_comm = core::mem::MaybeUninit::<[u8; TASK_COMM_LEN]>::uninit();
    // SAFETY: the helper fills all TASK_COMM_LEN bytes (the name, then
    // zeros) and never fails for the current task.
    let thread_comm = unsafe {
        gen::bpf_get_current_comm(thread_comm.as_mut_ptr().cast(), TASK_COMM_LEN as u32);
        thread_comm.assume_init()
    };
    let mut task = Task {
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        comm: thread_comm,
        thread_comm,
        stack: 0,
    };
    // SAFETY: a BPF helper with no memory arguments.
    let current = unsafe { gen::bpf_get_current_task_btf() } as u64;
    // A process's main thread carries the process name; only another
    // thread (a pool thread) needs its leader's read.
    if task.pid != task.tgid {
        if let Some(name) = process_name(current) {
            task.comm = name;
        }
    }
    let settings = settings();
    let kind = match stack {
        StackFor::None => return task,
        StackFor::Birth => STACK_KIND_BIRTH,
        StackFor::Close => STACK_KIND_CLOSE,
        StackFor::Accept => STACK_KIND_ACCEPT,
        StackFor::EofRead => STACK_KIND_EOF,
    };
    if settings.capture_stacks == 0 || task.tgid == settings.tracer_tgid || !allows_capture(&task) {
        return task;
    }
    // A capture costs a microsecond or two: over the process's budget for
    // this kind (`stack_budget`), reuse its last one.
    let key = StackSampleKey {
        tgid: task.tgid,
        kind,
    };
    let budget = StackBudget {
        interval_ns: u64::from(settings.stack_interval_ms) * 1_000_000,
        burst: settings.stack_burst,
    };
    let over_budget = |sample: &StackSample| !budget.allows(sample.due_ns, now);
    // A sample of the program before an exec in this pid is not this one's.
    let mm = mm_of(current);
    // No address space: a kernel thread, or a process past `exit_mm`
    // whose files the kernel is closing (`current_task_exiting`). There is
    // no user stack to take, and none is missed.
    if mm == 0 {
        return task;
    }
    // This CPU's last sample of this kind first: a connection's birth and
    // close, and the next connection's, are mostly one process's on one
    // CPU, and a per-CPU slot is read without hashing. Its `due_ns` may
    // lag the map's (another CPU captured since), never lead it: over
    // budget by it is over budget.
    let recent = RECENT_SAMPLES.get_ptr_mut(kind);
    // SAFETY: this CPU's slot of a per-CPU array; programs do not nest on one CPU.
    let recent_sample = recent.and_then(|slot| unsafe {
        ((*slot).tgid == task.tgid && (*slot).sample.mm == mm).then_some((*slot).sample)
    });
    let last = match recent_sample {
        Some(sample) if over_budget(&sample) => Some(sample),
        // SAFETY: the value is copied out at once; a concurrent update of
        // the LRU entry can at worst give a stale sample, which is still a
        // stack of this process and kind.
        _ => unsafe { STACK_SAMPLES.get(key) }
            .copied()
            .filter(|last| last.mm == mm),
    };
    if let Some(last) = last {
        if over_budget(&last) {
            task.stack = last.stack;
            remember_recent(recent, task.tgid, last);
            count(Counter::StacksSampled);
            return task;
        }
    }
    task.stack = capture_user_stack(&task, current, now);
    if last.is_none() && task.stack != 0 {
        announce(&task, current);
    }
    if task.stack != 0 {
        let sample = StackSample {
            due_ns: budget.after_capture(last.map_or(0, |last| last.due_ns), now),
            stack: task.stack,
            mm,
        };
        let _ = STACK_SAMPLES.insert(key, sample, 0);
        remember_recent(recent, task.tgid, sample);
    }
    task
}

#[inline(always)]
fn remember_recent(slot: Option<*mut RecentSample>, tgid: u32, sample: StackSample) {
    if let Some(slot) = slot {
        // SAFETY: this CPU's slot of a per-CPU array; programs do not nest on one CPU.
        unsafe {
            (*slot).tgid = tgid;
            (*slot).sample = sample;
        }
    }
}

/// The process name: the `comm` of the thread-group leader of `current`
/// (a pointer the verifier knows: `bpf_get_current_task_btf`), read with
/// plain loads.
#[inline(always)]
fn process_name(current: u64) -> Option<[u8; TASK_COMM_LEN]> {
    let layout = kernel_layout();
    let leader = read_at::<Typed, u64>(current, layout.task_group_leader).ok()?;
    if leader == 0 || layout.task_comm == 0 {
        return None;
    }
    let words =
        Typed::read_words::<{ TASK_COMM_LEN / 4 }>(leader + u64::from(layout.task_comm)).ok()?;
    let mut name = [0u8; TASK_COMM_LEN];
    for (bytes, word) in name.chunks_exact_mut(4).zip(words) {
        bytes.copy_from_slice(&word.to_ne_bytes());
    }
    Some(name)
}

/// x86-64's `struct pt_regs` offsets of the registers an unwind starts
/// from. The verifier wants constant offsets; userspace checks them against
/// BTF (`Settings::regs_sp`) and a kernel with another layout gets no stacks.
const X86_64_PT_REGS_BP: usize = 32;
const X86_64_PT_REGS_IP: usize = 128;
const X86_64_PT_REGS_SP: u32 = 152;

/// Sends a `UserStack` record for the current task's system call: its user
/// registers and the stack above its stack pointer, as many bytes as it
/// holds. Returns the record's id, or 0 (counted) when none could be sent.
#[inline(always)]
fn capture_user_stack(task: &Task, current: u64, now: u64) -> u64 {
    if settings().regs_sp != X86_64_PT_REGS_SP {
        return 0;
    }
    let Some(record) = STACK_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // Unique per boot: a CPU runs one program at a time, and each run takes
    // at most one stack, at its own clock reading.
    // SAFETY: a BPF helper with no memory arguments.
    let cpu = u64::from(unsafe { gen::bpf_get_smp_processor_id() });
    let id = (cpu << 56) | (now & ((1 << 56) - 1));
    let mm = mm_of(current);
    // SAFETY: `record` is this CPU's scratch slot, which no other program
    // run uses meanwhile; `pt_regs` and the user stack are read with probe
    // reads, which check the addresses.
    let len = unsafe {
        (*record).kind = EventKind::UserStack as u16;
        (*record)._pad = 0;
        (*record).id = id;
        (*record).tgid = task.tgid;
        (*record).pid = task.pid;
        (*record).comm = task.comm;
        (*record).mm = mm;
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
                    copy_user_stack(sp, stack_left(mm, sp), &mut (*record).stack)
                }
                _ => Err(()),
            }
        }
    };
    let Ok(len) = len else {
        count(Counter::StackErrors);
        return 0;
    };
    // SAFETY: as above; `len` is at most USER_STACK_BYTES, so the bytes
    // sent lie within the scratch slot.
    let sent = unsafe {
        (*record).len = len;
        let size =
            USER_STACK_HEADER + (len as usize & (2 * USER_STACK_BYTES - 1)).min(USER_STACK_BYTES);
        let bytes = core::slice::from_raw_parts(record as *const u8, size);
        let before = USER_STACKS.query(u64::from(BPF_RB_AVAIL_DATA));
        let flag = wakeup_flag(before, before + size as u64, settings().stack_wakeup_bytes);
        USER_STACKS.output::<[u8]>(bytes, flag)
    };
    if sent.is_err() {
        count(Counter::StackErrors);
        return 0;
    }
    count(Counter::StacksTaken);
    id
}

/// Announces a process's first capture on the `PROCESSES` ring, waking its
/// reader at once: the process's mappings must be read before a
/// short-lived one exits (see tcptrace's `symbolize::meeter`).
#[inline(always)]
fn announce(task: &Task, current: u64) {
    let process = NewProcess {
        tgid: task.tgid,
        _pad: 0,
        mm: mm_of(current),
    };
    if PROCESSES
        .output::<NewProcess>(&process, u64::from(BPF_RB_FORCE_WAKEUP))
        .is_err()
    {
        count(Counter::ProcessesNotAnnounced);
    }
}

/// Bytes from `sp` to the top of the stack when `sp` is on the main
/// thread's stack (`mm->start_stack`); `USER_STACK_BYTES` otherwise.
#[inline(always)]
fn stack_left(mm: u64, sp: u64) -> u64 {
    let offset = kernel_layout().mm_start_stack;
    if offset == 0 || mm == 0 {
        return USER_STACK_BYTES as u64;
    }
    // SAFETY: a probe read checks the address.
    let top: u64 =
        unsafe { bpf_probe_read_kernel((mm + u64::from(offset)) as *const u64) }.unwrap_or(0);
    match top.checked_sub(sp) {
        Some(left) if left < USER_STACK_BYTES as u64 => left,
        _ => USER_STACK_BYTES as u64,
    }
}

/// Copies the user stack from `sp` up: `wanted` bytes (at most
/// `USER_STACK_BYTES`, at least 256), or half as many, and so on down to 256, when the
/// read fails. A read that crosses the end of mapped memory fails whole:
/// on a main thread `wanted` stops at `mm->start_stack`, which lies inside
/// the stack mapping, but another thread's stack or a small environment
/// above `start_stack` can leave less than `USER_STACK_BYTES` mapped.
#[inline(always)]
fn copy_user_stack(sp: u64, wanted: u64, into: &mut [u8; USER_STACK_BYTES]) -> Result<u32, ()> {
    // 256 bytes at least: a system call this close to `start_stack` reads
    // a little of the argument area above it, which is mapped.
    let mut size = wanted.clamp(256, USER_STACK_BYTES as u64) as u32;
    // 4096, 2048, 1024, 512, 256: five tries at most.
    for _ in 0..5 {
        // The verifier wants the size bounded by the buffer it checks.
        let bounded = size & (2 * USER_STACK_BYTES as u32 - 1);
        if bounded < 256 || bounded > USER_STACK_BYTES as u32 {
            return Err(());
        }
        // SAFETY: a probe read checks the user addresses; `bounded` bytes
        // fit in `into`.
        let read =
            unsafe { gen::bpf_probe_read_user(into.as_mut_ptr().cast(), bounded, sp as *const _) };
        if read == 0 {
            return Ok(bounded);
        }
        size = bounded / 2;
    }
    Err(())
}

/// `PF_EXITING` (include/linux/sched.h): set by `do_exit` before it
/// releases the task's files, and stable since the kernel's beginnings.
const PF_EXITING: u32 = 0x0000_0004;

/// True when the current task is exiting: a close now is the kernel
/// closing its files (after a return from `main`, a kill or a crash), not
/// a `close()` of its code. False where `task->flags` is not known.
#[inline(always)]
pub fn current_task_exiting() -> bool {
    let at = kernel_layout().task_flags;
    if at == 0 {
        return false;
    }
    // SAFETY: a BPF helper with no arguments.
    let task = unsafe { gen::bpf_get_current_task_btf() } as u64;
    read_at::<Typed, u32>(task, at).is_ok_and(|flags| flags & PF_EXITING != 0)
}

/// `task->mm`, 0 when it cannot be read.
#[inline(always)]
fn mm_of(task: u64) -> u64 {
    // `task` is `bpf_get_current_task_btf()`'s: a plain load.
    read_at::<Typed, u64>(task, kernel_layout().task_mm).unwrap_or(0)
}

#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    // SAFETY: a BPF helper with no memory arguments.
    unsafe { bpf_get_current_cgroup_id() }
}
