//! Kernel timestamps (`CLOCK_MONOTONIC`) to wall-clock time.

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    /// Realtime minus monotonic, in nanoseconds.
    offset_ns: i128,
}

impl WallClock {
    #[must_use]
    pub fn now() -> Self {
        let realtime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            offset_ns: i128::try_from(realtime).unwrap_or(0) - i128::from(monotonic_ns()),
        }
    }

    /// Unix time in nanoseconds of a kernel timestamp.
    #[must_use]
    pub fn unix_ns(self, ktime_ns: u64) -> u128 {
        u128::try_from(i128::from(ktime_ns) + self.offset_ns).unwrap_or(0)
    }
}

/// `CLOCK_MONOTONIC` now, the clock of `bpf_ktime_get_ns`.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// `HH:MM:SS.micros` (UTC) of a Unix time in nanoseconds.
pub fn write_time_of_day(out: &mut impl std::io::Write, unix_ns: u128) -> std::io::Result<()> {
    let micros = (unix_ns / 1_000) % 1_000_000;
    let secs = (unix_ns / 1_000_000_000) % 86_400;
    write!(
        out,
        "{:02}:{:02}:{:02}.{micros:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
