//! Whole lives, one ring per CPU: the summary of a socket whose birth the
//! programs saw and of which nothing was sent before its CLOSE (the
//! daemon's churn) is written to its CPU's slots of the `LIVES` array,
//! which userspace maps, instead of the shared `EVENTS` ring buffer.
//!
//! Why: a ring buffer record takes the ring's lock, shared by every CPU,
//! and asks how full the ring is to decide on a wakeup (about 200 of the
//! 290 ns a record cost the state program under churn). A CPU's own ring
//! needs neither: the state program writes the slot at its CPU's head and
//! then the slot's sequence number, which is what userspace waits for.
//!
//! Why only whole lives: userspace reads the CPU rings after `EVENTS`, so
//! a record there may overtake the records of other sockets. A whole life
//! is the one record of its socket (userspace keeps it aside from the
//! socket table, see `event::tells_whole_life`), so nothing of its socket
//! can come before it; the table lets it pass by a record of another
//! socket at its address (`SocketTable::apply_in`), and what keeps time
//! order across records (a flow's connection starts) sorts on arrival.
//!
//! The rules both sides follow:
//! - one writer per CPU ring: the state program, on that CPU (tracepoint
//!   programs do not nest on one CPU), so `head` is a plain per-CPU word;
//! - the slot at position `p` is `p % slots` of the CPU's range, and holds
//!   `p` once its `seq` is `p + 1` (0 never is: a slot never written);
//! - the writer leaves `LIFE_RING_SLACK` slots between its head and the
//!   reader's `tail`: when full, the life goes to `EVENTS` instead
//!   (`Counter::LifeRingFull`), nothing is lost;
//! - stores are ordered by the program's order and the CPU's (x86-64:
//!   stores are not reordered with stores), so userspace enables the
//!   rings only there;
//! - the record that fills a CPU ring to a quarter sends a `LivesWaiting`
//!   nudge through `EVENTS`, with a wakeup: the reader does not wait for
//!   its timer while a ring fills.
#![expect(
    clippy::inline_always,
    reason = "called from the kernel programs, which keep every helper inline (no BPF-to-BPF calls)"
)]

use crate::Event;

/// One slot of a CPU ring: the record, then the sequence number that says
/// it is whole.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LifeSlot {
    /// Position of the record plus one, written after the record.
    pub seq: u64,
    pub event: Event,
}
pub const LIFE_SLOT_SIZE: usize = core::mem::size_of::<LifeSlot>();
const _: () = assert!(LIFE_SLOT_SIZE.is_multiple_of(8));

/// A CPU ring's positions: the writer's head and the reader's tail, each
/// on a cache line of its own (written by different CPUs).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LifePositions {
    /// Records written so far (the next one's position).
    pub head: u64,
    pub _head_line: [u64; 7],
    /// Records read so far.
    pub tail: u64,
    pub _tail_line: [u64; 7],
}
const _: () = assert!(core::mem::size_of::<LifePositions>() == 128);

/// Slots the writer leaves free.
pub const LIFE_RING_SLACK: u64 = 8;

/// Slots per CPU: a power of two between these, from a budget of bytes
/// for all CPUs together. Few on a host of many CPUs keeps the rings
/// within about the budget there (64 slots are 28 KiB); a ring too small
/// for its CPU's rate costs records through `EVENTS`, never records.
pub const MIN_LIFE_SLOTS: u32 = 64;
pub const MAX_LIFE_SLOTS: u32 = 8192;

/// Slots per CPU ring for `cpus` CPUs within `budget_bytes` in all.
#[must_use]
pub fn life_slots_per_cpu(cpus: u32, budget_bytes: u64) -> u32 {
    let per_cpu = budget_bytes / u64::from(cpus.max(1)) / LIFE_SLOT_SIZE as u64;
    let clamped = per_cpu.clamp(u64::from(MIN_LIFE_SLOTS), u64::from(MAX_LIFE_SLOTS));
    // The largest power of two not above it.
    let slots = 1u64 << clamped.ilog2();
    u32::try_from(slots).unwrap_or(MAX_LIFE_SLOTS)
}

/// Whether a record may go in at `head` with the reader at `tail`.
#[inline(always)]
#[must_use]
pub const fn has_room(head: u64, tail: u64, slots: u32) -> bool {
    head.wrapping_sub(tail) + LIFE_RING_SLACK < slots as u64
}

/// Whether the record written at `head` fills the ring to a quarter: it
/// nudges the reader (once per crossing, however fast records come).
#[inline(always)]
#[must_use]
pub const fn nudges_reader(head: u64, tail: u64, slots: u32) -> bool {
    head.wrapping_sub(tail) + 1 == (slots / 4) as u64
}

/// The `EVENTS` record of a nudge: a kind, nothing else.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LivesWaiting {
    /// `EventKind::LivesWaiting`.
    pub kind: u16,
    pub _pad: [u16; 3],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_a_power_of_two_within_bounds() {
        assert_eq!(life_slots_per_cpu(2, 16 << 20), MAX_LIFE_SLOTS);
        assert_eq!(life_slots_per_cpu(1024, 16 << 20), MIN_LIFE_SLOTS);
        let slots = life_slots_per_cpu(24, 16 << 20);
        assert!(slots.is_power_of_two());
        assert!(u64::from(slots) * 24 * LIFE_SLOT_SIZE as u64 <= 16 << 20);
        assert_eq!(life_slots_per_cpu(0, 16 << 20), MAX_LIFE_SLOTS);
    }

    #[test]
    fn room_leaves_the_slack_free() {
        let slots = 512;
        assert!(has_room(55, 0, 64) && !has_room(56, 0, 64));
        assert!(has_room(0, 0, slots));
        assert!(has_room(503, 0, slots));
        assert!(!has_room(504, 0, slots));
        assert!(has_room(504, 1, slots));
        // Positions wrap at u64 without a false "full".
        assert!(has_room(u64::MAX, u64::MAX - 3, slots));
    }

    #[test]
    fn one_nudge_per_crossing() {
        let slots = 512;
        let nudges = (0..600u64)
            .filter(|&head| nudges_reader(head, 0, slots))
            .count();
        assert_eq!(nudges, 1);
        assert!(nudges_reader(127, 0, slots));
    }
}
