//! The reading side of the per-CPU rings of whole lives (the rules are in
//! `tcptrace_common::life_ring`): the `LIVES` and `LIFE_POSITIONS` arrays,
//! mapped into this process, read without a system call.
//!
//! Hand-written: aya maps no array into memory (`MapMemory` does); this
//! is the reader's half of a single-producer ring.

use std::{
    os::fd::AsFd,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{bail, Result};
use aya::maps::{Map, MapData};
use tcptrace_common::{
    life_ring::{LifePositions, LifeSlot},
    EVENT_SIZE,
};

use super::map_memory::{Access, MapMemory};

/// Records read from one CPU ring before its tail is given back to the
/// kernel, so a long drain frees room as it goes.
const RELEASE_EVERY: u64 = 256;

/// Every CPU's ring of whole lives.
pub struct LifeRings {
    lives: MapMemory,
    positions: MapMemory,
    cpus: u32,
    slots: u32,
    /// The next position to read, per CPU (the kernel sees it once released).
    tails: Vec<u64>,
    /// The CPU to start the next read at: a budget cut short on one CPU
    /// leaves the others for the next read, not for never.
    next_cpu: u32,
    /// The arrays behind the mappings (their fds stay open while mapped).
    _maps: (MapData, MapData),
}

impl LifeRings {
    /// Maps the two arrays of a probe loaded with `slots` per CPU for
    /// `cpus` CPUs.
    pub fn map(lives: Map, positions: Map, cpus: u32, slots: u32) -> Result<Self> {
        let (Map::Array(lives), Map::Array(positions)) = (lives, positions) else {
            bail!("the rings of whole lives are not arrays in the eBPF object");
        };
        if !slots.is_power_of_two() || cpus == 0 {
            bail!("rings of whole lives need a power-of-two size and a CPU ({slots} slots, {cpus} CPUs)");
        }
        let records = usize::try_from(u64::from(cpus) * u64::from(slots))?;
        let lives_mapping = MapMemory::of(
            lives.fd().as_fd(),
            records * size_of::<LifeSlot>(),
            Access::ReadWrite,
            "the rings of whole lives",
        )?;
        let positions_mapping = MapMemory::of(
            positions.fd().as_fd(),
            usize::try_from(cpus)? * size_of::<LifePositions>(),
            Access::ReadWrite,
            "the positions of the rings of whole lives",
        )?;
        // Every position starts at 0: records written since the programs
        // were attached are read too.
        Ok(Self {
            lives: lives_mapping,
            positions: positions_mapping,
            cpus,
            slots,
            tails: vec![0; usize::try_from(cpus)?],
            next_cpu: 0,
            _maps: (lives, positions),
        })
    }

    /// Calls `each` with the bytes of every whole record waiting (an
    /// `Event`), CPU by CPU, at most `budget` of them; returns how many.
    /// A record's slot is the kernel's again only after `each` returns. An
    /// error from `each` stops the reading there (that record is read).
    pub fn read<E>(
        &mut self,
        budget: usize,
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut read = 0;
        for step in 0..self.cpus {
            let cpu = (self.next_cpu + step) % self.cpus;
            let mut tail = self.tails[cpu as usize];
            let released = tail;
            let mut outcome = Ok(());
            while read < budget && outcome.is_ok() {
                let slot = self.slot(cpu, tail);
                // SAFETY: `slot` is a whole slot inside the mapping (8-aligned:
                // the mapping is page-aligned, slots a multiple of 8 bytes);
                // `seq` is written by the kernel as one word.
                let seq =
                    unsafe { AtomicU64::from_ptr(&raw mut (*slot).seq) }.load(Ordering::Acquire);
                if seq != tail.wrapping_add(1) {
                    break;
                }
                // SAFETY: the record in the slot, whole (its `seq` was
                // written after it), and not written again until the tail
                // is released past it, after `each` returns.
                let record = unsafe {
                    std::slice::from_raw_parts((&raw const (*slot).event).cast::<u8>(), EVENT_SIZE)
                };
                outcome = each(record);
                read += 1;
                tail = tail.wrapping_add(1);
                if tail.wrapping_sub(released).is_multiple_of(RELEASE_EVERY) {
                    self.position(cpu, Position::Tail)
                        .store(tail, Ordering::Release);
                }
            }
            self.tails[cpu as usize] = tail;
            self.position(cpu, Position::Tail)
                .store(tail, Ordering::Release);
            if read >= budget || outcome.is_err() {
                self.next_cpu = cpu;
                return outcome.map(|()| read);
            }
        }
        Ok(read)
    }

    /// The fullest CPU ring's share of its slots in use.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "a ratio")]
    pub fn fill_ratio(&self) -> f64 {
        (0..self.cpus)
            .map(|cpu| {
                let head = self.position(cpu, Position::Head).load(Ordering::Acquire);
                head.wrapping_sub(self.tails[cpu as usize])
                    .min(u64::from(self.slots)) as f64
                    / f64::from(self.slots)
            })
            .fold(0.0, f64::max)
    }

    /// One CPU ring's size in bytes.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        u64::from(self.slots) * size_of::<LifeSlot>() as u64
    }

    fn slot(&self, cpu: u32, position: u64) -> *mut LifeSlot {
        let index = u64::from(cpu) * u64::from(self.slots) + (position & u64::from(self.slots - 1));
        let index = usize::try_from(index).expect("mapped, so addressable");
        // SAFETY: `index` is below cpus × slots, the mapping's records.
        unsafe { self.lives.base().cast::<LifeSlot>().add(index) }
    }

    fn position(&self, cpu: u32, which: Position) -> &AtomicU64 {
        let base = usize::try_from(cpu).expect("a CPU number fits") * size_of::<LifePositions>();
        let offset = base
            + match which {
                Position::Head => std::mem::offset_of!(LifePositions, head),
                Position::Tail => std::mem::offset_of!(LifePositions, tail),
            };
        // SAFETY: an 8-aligned word of this CPU's positions inside the
        // mapping, which lives as long as `self`; the other side writes
        // it only as a whole word.
        unsafe { AtomicU64::from_ptr(self.positions.base().cast::<u8>().add(offset).cast()) }
    }
}

#[derive(Clone, Copy)]
enum Position {
    Head,
    Tail,
}
