//! Putting one record into the ring buffer.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_probe_read_kernel_buf,
};
use tcptrace_common::{Counter, Event, EventKind, SockInfo, Task, RAW_RECORD_LEN};

use crate::{
    maps::{count, settings, EVENTS},
    sock::local_port_be_of,
};

pub struct Record<'a> {
    pub kind: EventKind,
    /// `bpf_ktime_get_ns()` of the event (read once per program run: on a
    /// virtual machine the clock read is not cheap).
    pub ts_ns: u64,
    pub context: u32,
    pub skaddr: u64,
    pub sock: &'a SockInfo,
    pub actor: &'a Task,
    pub in_state_ns: u64,
    pub sk_err: i32,
    /// Kernel memory copied into `Event::raw`: the tracepoint record, or
    /// the socket's `sock_common` in summary mode.
    pub raw_from: *const u8,
    /// Bytes of it userspace may read (at most `RAW_RECORD_LEN`).
    pub raw_len: u32,
    /// `Event::transition` (`SockStateChange`), else 0.
    pub transition: u16,
}

/// Reserves, fills and submits one event. A full ring buffer is counted as
/// lost, never retried: the hot path must not block.
///
/// Records are submitted without waking the reader (a wakeup costs about a
/// microsecond); userspace drains on a timer, and only the record that
/// takes the ring buffer past `Settings::wakeup_bytes` wakes it.
#[inline(always)]
pub fn emit(record: &Record) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(Counter::EventsLost);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to the reserved entry, written only here until
    // it is submitted; `copy_words` gets whole records of the right types,
    // and the raw copy is a probe read of at most `raw`'s size.
    unsafe {
        (*event).kind = record.kind as u16;
        (*event).raw_len = record.raw_len.min(RAW_RECORD_LEN as u32) as u16;
        (*event).context = record.context;
        (*event).ts_ns = record.ts_ns;
        (*event).skaddr = record.skaddr;
        copy_words(&raw mut (*event).sock, record.sock);
        copy_words(&raw mut (*event).actor, record.actor);
        (*event).in_state_ns = record.in_state_ns;
        (*event).sk_err = record.sk_err;
        (*event).local_port_be = match record.kind {
            EventKind::Summary
            | EventKind::EofRead
            | EventKind::SockRetransmit
            | EventKind::SockStateChange => local_port_be_of(record.skaddr),
            _ => 0,
        };
        (*event).transition = record.transition;
        // A tracepoint record lives in a per-CPU trace buffer and a socket
        // in a `struct sock`, both far larger than RAW_RECORD_LEN, so a
        // fixed-size copy is safe; userspace reads only `raw_len` bytes.
        if bpf_probe_read_kernel_buf(record.raw_from, &mut (*event).raw).is_err() {
            (*event).raw_len = 0;
            count(Counter::ReadErrors);
        }
    }
    // Reserved bytes count as waiting: this record is among them.
    let waiting = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let size = core::mem::size_of::<Event>() as u64;
    entry.submit(wakeup_flag(
        waiting.saturating_sub(size),
        waiting,
        settings().wakeup_bytes,
    ));
    count(Counter::EventsSent);
}

/// `BPF_RB_FORCE_WAKEUP` for the record that takes the bytes waiting in a
/// ring from below `mark` to `mark` or more, `BPF_RB_NO_WAKEUP` otherwise:
/// one wakeup per crossing, however fast records come (a wakeup on every
/// record past the mark cost other tasks' CPU in `irq_work_queue`). A
/// crossing missed by two CPUs racing is drained on the reader's timer.
#[inline(always)]
pub fn wakeup_flag(before: u64, after: u64, mark: u32) -> u64 {
    let mark = u64::from(mark);
    u64::from(if before < mark && after >= mark {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    })
}

/// Zeroes a record as 8-byte words (every `EMPTY`/`NOBODY` record is all
/// zeros). Volatile, for the reason `copy_words` is: assigning a zeroed
/// constant became a call to a byte-wise `memset` subprogram, 176 stores
/// for a `SockInfo`.
///
/// # Safety
/// `dst` must be valid for writes of `size_of::<T>()` bytes, 8-aligned.
#[inline(always)]
pub unsafe fn zero_words<T>(dst: *mut T) {
    const { assert!(core::mem::size_of::<T>().is_multiple_of(8)) };
    let dst = dst.cast::<u64>();
    for i in 0..core::mem::size_of::<T>() / 8 {
        // SAFETY: the caller guarantees `dst` is valid for `size_of::<T>()` bytes.
        unsafe { core::ptr::write_volatile(dst.add(i), 0) };
    }
}

/// `Task::NOBODY`, written word by word where the task lives: the
/// constant, or a zeroed task returned by value, became a call to the
/// `memset` subprogram on every run that names no task.
#[inline(always)]
pub fn set_nobody(task: &mut core::mem::MaybeUninit<Task>) {
    // SAFETY: `task` is 48 bytes, 8-aligned, all written; all zeros is
    // `Task::NOBODY` (asserted in tcptrace-common).
    unsafe { zero_words(task.as_mut_ptr()) };
}

/// Copies a record as 8-byte words. Volatile, because LLVM would turn a
/// plain struct copy this large into a call to a byte-wise `memmove`
/// subprogram, several times slower.
///
/// # Safety
/// `dst` and `src` must be valid for `size_of::<T>()` bytes, 8-aligned,
/// and not overlap.
#[inline(always)]
pub unsafe fn copy_words<T>(dst: *mut T, src: *const T) {
    const { assert!(core::mem::size_of::<T>().is_multiple_of(8)) };
    let (dst, src) = (dst.cast::<u64>(), src.cast::<u64>());
    for i in 0..core::mem::size_of::<T>() / 8 {
        // SAFETY: the caller guarantees both pointers are valid for `size_of::<T>()` bytes.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
    }
}
