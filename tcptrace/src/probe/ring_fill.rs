//! How full a BPF ring buffer is: the bytes the kernel has written that
//! the reader has not consumed yet, out of the ring's size. Read before
//! each drain, this is the pressure that ends in lost events when it
//! reaches the size (`tcptrace_ring_buffer_fill_ratio`).
//!
//! aya's `RingBuf` does not expose its positions, so this maps the ring's
//! two position pages a second time, read-only (the kernel allows any
//! read-only mapping of a ring buffer): the consumer position is at the
//! start of the first page, the producer position at the start of the
//! second (`MapMemory`; the size from `object_info`).

use std::{
    os::fd::BorrowedFd,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::Result;
use aya_obj::generated::bpf_map_info;

use super::{
    map_memory::{page_size, Access, MapMemory},
    object_info::object_info,
};

/// A read-only view of one ring buffer's positions.
pub struct RingFill {
    positions: MapMemory,
    page: usize,
    /// The ring's data size in bytes.
    pub size: u64,
}

impl RingFill {
    /// The positions of the ring buffer map behind `fd`.
    pub fn of(fd: BorrowedFd<'_>) -> Result<Self> {
        let size = u64::from(max_entries(fd)?);
        let page = page_size()?;
        // Read-only: the kernel allows any read-only mapping of a ring buffer.
        let positions = MapMemory::of(fd, 2 * page, Access::Read, "a ring buffer's positions")?;
        Ok(Self {
            positions,
            page,
            size,
        })
    }

    /// Bytes written by the kernel and not yet consumed.
    #[must_use]
    pub fn waiting(&self) -> u64 {
        let position = |page: usize| {
            // SAFETY: each position is a u64 at the start of a page of the
            // mapping (page-aligned), which lives as long as `self`; the
            // kernel updates them atomically.
            unsafe {
                (*self
                    .positions
                    .base()
                    .cast::<AtomicU64>()
                    .add(page * self.page / std::mem::size_of::<u64>()))
                .load(Ordering::Acquire)
            }
        };
        let consumer = position(0);
        let producer = position(1);
        producer.saturating_sub(consumer).min(self.size)
    }

    /// `waiting` as a share of the ring.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "a ratio")]
    pub fn ratio(&self) -> f64 {
        self.waiting() as f64 / self.size.max(1) as f64
    }
}

/// The map's `max_entries`: a ring buffer's data size in bytes.
fn max_entries(fd: BorrowedFd<'_>) -> Result<u32> {
    let info: bpf_map_info =
        object_info(fd).map_err(|e| anyhow::anyhow!("reading a ring buffer's size: {e}"))?;
    Ok(info.max_entries)
}
