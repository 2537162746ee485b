//! Putting one record into the ring buffer, or a whole life into its
//! CPU's ring of whole lives.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_smp_processor_id, bpf_probe_read_kernel_buf},
};
use tcptrace_common::{
    life_ring::{has_room, nudges_reader, LivesWaiting},
    phase_timing::Phase,
    Counter, Event, EventKind, SockInfo, Task, AF_INET6, RAW_RECORD_LEN,
};

use crate::{
    maps::{count, kernel_layout, settings, EVENTS, LIFE_POSITIONS, LIVES},
    sock::{local_port_be_of, SockRead, Typed},
    timing,
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
    pub raw: Raw,
    /// `Event::transition` (`SockStateChange`), else 0.
    pub transition: u16,
}

/// What `Event::raw` holds: a tracepoint record, or the start of a
/// socket (`struct sock_common`), which userspace decodes at offsets from
/// BTF either way.
#[derive(Clone, Copy)]
pub enum Raw {
    /// `len` bytes (at most `RAW_RECORD_LEN`) of kernel memory at `from`,
    /// with one probe read.
    Copy { from: *const u8, len: u32 },
    /// The address fields of the socket at this address, a typed
    /// tracepoint's `sk`: plain loads at their BTF offsets (a probe read
    /// of the whole `sock_common` was about a twentieth of the daemon's
    /// kernel time); the rest of `raw` is zero.
    SockFields(u64),
}

impl Raw {
    /// A socket's `sock_common`, through a probe read.
    #[inline(always)]
    pub fn socket(skaddr: u64) -> Self {
        Self::Copy {
            from: skaddr as *const u8,
            len: RAW_RECORD_LEN as u32,
        }
    }

    /// A socket read the way `R` reads: field by field where loads are
    /// plain.
    #[inline(always)]
    pub fn socket_from<R: SockRead>(skaddr: u64) -> Self {
        if R::PLAIN_LOADS {
            Self::SockFields(skaddr)
        } else {
            Self::socket(skaddr)
        }
    }
}

/// Reserves, fills and submits one event. A full ring buffer is counted as
/// lost, never retried: the hot path must not block.
///
/// Records are submitted without waking the reader (a wakeup costs about a
/// microsecond); userspace drains on a timer, and only the record that
/// takes the ring buffer past `Settings::wakeup_bytes` wakes it.
#[inline(always)]
pub fn emit(record: &Record) {
    let since = timing::start();
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(Counter::EventsLost);
        return;
    };
    let fill_from = timing::lap_phase(Phase::Reserve, since);
    // SAFETY: the reserved entry, written only here until it is submitted.
    unsafe { fill(entry.as_mut_ptr(), record) };
    let submit_from = timing::lap_phase(Phase::Fill, fill_from);
    // Reserved bytes count as waiting: this record is among them.
    let waiting = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let size = core::mem::size_of::<Event>() as u64;
    entry.submit(wakeup_flag(
        waiting.saturating_sub(size),
        waiting,
        settings().wakeup_bytes,
    ));
    timing::lap_phase(Phase::Submit, submit_from);
    count(Counter::EventsSent);
}

/// A whole life's summary (see `tcptrace_common::life_ring`): into this
/// CPU's ring of whole lives, or, where the rings are off or this one is
/// full, through `EVENTS` like any record.
#[inline(always)]
pub fn emit_whole_life(record: &Record) {
    let slots = settings().life_slots;
    if slots == 0 {
        emit(record);
        return;
    }
    let since = timing::start();
    // SAFETY: a BPF helper with no arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(positions) = LIFE_POSITIONS.get_ptr_mut(cpu) else {
        emit(record);
        return;
    };
    // SAFETY: this CPU's positions, mapped by userspace, which writes only
    // `tail`; the head is written only by this program on this CPU.
    let (head, tail) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*positions).head),
            core::ptr::read_volatile(&raw const (*positions).tail),
        )
    };
    let index = u64::from(cpu) * u64::from(slots) + (head & u64::from(slots - 1));
    let slot = match LIVES.get_ptr_mut(index as u32) {
        Some(slot) if has_room(head, tail, slots) => slot,
        _ => {
            count(Counter::LifeRingFull);
            emit(record);
            return;
        }
    };
    let fill_from = timing::lap_phase(Phase::Reserve, since);
    // SAFETY: a slot the reader is past (`has_room`) and no other writer
    // reaches (this CPU's range, programs do not nest on one CPU); its
    // sequence number, written last, is what tells the reader it is whole.
    unsafe {
        fill(&raw mut (*slot).event, record);
        core::ptr::write_volatile(&raw mut (*slot).seq, head + 1);
        core::ptr::write_volatile(&raw mut (*positions).head, head + 1);
    }
    let submit_from = timing::lap_phase(Phase::Fill, fill_from);
    if nudges_reader(head, tail, slots) {
        let nudge = LivesWaiting {
            kind: EventKind::LivesWaiting as u16,
            _pad: [0; 3],
        };
        // No room for the nudge: the ring buffer is past its own wakeup
        // mark, so the reader is coming anyway. Nothing is lost.
        let _ = EVENTS.output::<LivesWaiting>(&nudge, u64::from(BPF_RB_FORCE_WAKEUP));
    }
    timing::lap_phase(Phase::Submit, submit_from);
    count(Counter::EventsSent);
}

/// Writes `record` into `event`.
///
/// # Safety
/// `event` must be valid for writes of a whole `Event`, 8-aligned, and
/// written by nobody else meanwhile; `record.raw` as `fill_raw` requires.
#[inline(always)]
unsafe fn fill(event: *mut Event, record: &Record) {
    // SAFETY: the caller's promise; `copy_words` gets whole records of the
    // right types, and the raw copy is a probe read of at most `raw`'s size.
    unsafe {
        (*event).kind = record.kind as u16;
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
        (*event).raw_len = fill_raw(record.raw, &mut (*event).raw);
    }
}

/// Fills `raw`; returns how many of its bytes userspace may read.
///
/// # Safety
/// A `Raw::Copy` must point to kernel memory of at least `RAW_RECORD_LEN`
/// bytes, and a `Raw::SockFields` to a socket the verifier knows the type of.
#[inline(always)]
pub unsafe fn fill_raw(source: Raw, raw: &mut [u8; RAW_RECORD_LEN]) -> u16 {
    match source {
        Raw::Copy { from, len } => {
            // A tracepoint record lives in a per-CPU trace buffer and a
            // socket in a `struct sock`, both far larger than
            // RAW_RECORD_LEN, so a fixed-size copy is safe; userspace
            // reads only `len` bytes.
            // SAFETY: the caller's promise; the probe read checks the address.
            if unsafe { bpf_probe_read_kernel_buf(from, raw) }.is_err() {
                count(Counter::ReadErrors);
                return 0;
            }
            len.min(RAW_RECORD_LEN as u32) as u16
        }
        Raw::SockFields(skaddr) => {
            // SAFETY: `raw` is 96 bytes, 8-aligned in the event.
            unsafe { zero_words(raw) };
            let layout = kernel_layout();
            let field = |offset: u32| skaddr + u64::from(offset);
            put(
                raw,
                layout.sock_daddr,
                Typed::read::<u32>(field(layout.sock_daddr)),
            );
            put(
                raw,
                layout.sock_rcv_saddr,
                Typed::read::<u32>(field(layout.sock_rcv_saddr)),
            );
            put(
                raw,
                layout.sock_dport,
                Typed::read::<u16>(field(layout.sock_dport)),
            );
            put(
                raw,
                layout.sock_num,
                Typed::read::<u16>(field(layout.sock_num)),
            );
            let family = Typed::read::<u16>(field(layout.sock_family));
            put(raw, layout.sock_family, family);
            if family == Ok(AF_INET6) {
                put(
                    raw,
                    layout.sock_v6_daddr,
                    Typed::read_words::<4>(field(layout.sock_v6_daddr)),
                );
                put(
                    raw,
                    layout.sock_v6_rcv_saddr,
                    Typed::read_words::<4>(field(layout.sock_v6_rcv_saddr)),
                );
            }
            RAW_RECORD_LEN as u16
        }
    }
}

/// Writes `value` at `offset` in `raw` (a `sock_common` offset: the same
/// place the probe-read copy has it), if it fits.
#[inline(always)]
fn put<T: Copy>(raw: &mut [u8; RAW_RECORD_LEN], offset: u32, value: Result<T, ()>) {
    let at = offset as usize;
    if let Ok(value) = value {
        if at + core::mem::size_of::<T>() <= RAW_RECORD_LEN {
            // SAFETY: checked to lie within `raw`; the offsets are aligned
            // for their fields, and `raw` is 8-aligned in the event.
            unsafe { core::ptr::write_volatile(raw.as_mut_ptr().add(at).cast::<T>(), value) };
        }
    }
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
