//! The thread that removes closed sockets' records from the kernel's
//! socket map, once a minute.
//!
//! The kernel leaves a closed socket's record for the next socket born at
//! its address (`tcptrace_common::CLOSED`); addresses the allocator never
//! hands out again would fill the map. Walking a map of 100k live sockets
//! takes a few hundred thousand system calls, longer than the event ring
//! holds under heavy churn: so it is done here, on a handle of its own,
//! never on the thread that reads the ring.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{Context, Result};

use super::SocketMap;
use crate::clock::monotonic_ns;

/// How long a closed socket's record waits for the next socket born at
/// its address, and how often the map is swept.
pub const CLOSED_RECORD_AGE: Duration = Duration::from_secs(60);

/// What the sweeping thread reports, read at each report.
#[derive(Default)]
pub struct SweepCounts {
    /// Records taken out as a socket was born at their address, which the
    /// kernel had replaced meanwhile by one that does not know the birth:
    /// that socket's birth is lost, as when a socket's record is replaced.
    pub lost: AtomicU64,
    /// Sweeps that failed to read or change the map.
    pub failed: AtomicU64,
}

/// Starts sweeping `map` (a handle of its own on the kernel's map) every
/// `CLOSED_RECORD_AGE`, for the rest of the process.
pub fn sweep_every_minute(mut map: SocketMap) -> Result<Arc<SweepCounts>> {
    let counts = Arc::new(SweepCounts::default());
    let shared = Arc::clone(&counts);
    std::thread::Builder::new()
        .name("tcptrace-sweep".into())
        .spawn(move || {
            crate::privileges::confine_this_thread();
            loop {
                std::thread::sleep(CLOSED_RECORD_AGE);
                let age_ns = u64::try_from(CLOSED_RECORD_AGE.as_nanos()).unwrap_or(u64::MAX);
                match map.sweep_closed(monotonic_ns(), age_ns) {
                    Ok(swept) => {
                        shared.lost.fetch_add(swept.lost, Ordering::Relaxed);
                    }
                    Err(_) => {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
        .context("starting the thread that sweeps the kernel's socket map")?;
    Ok(counts)
}
