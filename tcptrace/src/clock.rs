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

    /// The clock of another session (a recording's).
    #[must_use]
    pub fn with_offset(offset_ns: i64) -> Self {
        Self {
            offset_ns: i128::from(offset_ns),
        }
    }

    /// Realtime minus monotonic, in nanoseconds.
    #[must_use]
    pub fn offset_ns(self) -> i64 {
        i64::try_from(self.offset_ns).unwrap_or(0)
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
pub struct TimeOfDay(pub u128);

impl std::fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = (self.0 / 1_000) % 1_000_000;
        let secs = (self.0 / 1_000_000_000) % 86_400;
        write!(
            f,
            "{:02}:{:02}:{:02}.{micros:06}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

/// Nanoseconds per jiffy (`1e9 / CONFIG_HZ`), for the few kernel times
/// kept in jiffies (TCP's receive and send stamps). Found once: from the
/// kernel's configuration (`/proc/config.gz`, else
/// `/boot/config-RELEASE`), else measured against `/proc/timer_list`
/// (jiffies and monotonic time, read 100 ms apart). `None` when none of
/// them is readable: such times are then reported unknown, never guessed.
#[must_use]
pub fn jiffy_ns() -> Option<u64> {
    static JIFFY_NS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *JIFFY_NS.get_or_init(|| {
        let hz = configured_hz().or_else(measured_hz)?;
        (hz > 0).then(|| 1_000_000_000 / hz)
    })
}

/// `CONFIG_HZ` from the kernel's configuration.
fn configured_hz() -> Option<u64> {
    use std::io::Read;
    let mut text = String::new();
    let from_proc = std::fs::File::open("/proc/config.gz")
        .ok()
        .and_then(|file| {
            flate2::read::GzDecoder::new(file)
                .read_to_string(&mut text)
                .ok()
        });
    if from_proc.is_none() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        text = std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()?;
    }
    hz_of_config(&text)
}

fn hz_of_config(config: &str) -> Option<u64> {
    config
        .lines()
        .find_map(|line| line.strip_prefix("CONFIG_HZ="))
        .and_then(|hz| hz.trim().parse().ok())
}

/// HZ measured: jiffies advanced over 100 ms of monotonic time, rounded to
/// the nearest value the kernel offers.
fn measured_hz() -> Option<u64> {
    let first = timer_list_now()?;
    std::thread::sleep(std::time::Duration::from_millis(100));
    let second = timer_list_now()?;
    hz_of_samples(first, second)
}

/// (monotonic ns, jiffies) from `/proc/timer_list`.
fn timer_list_now() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/timer_list").ok()?;
    let number = |prefix: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some((number("now at ")?, number("jiffies: ")?))
}

fn hz_of_samples((ns_a, jiffies_a): (u64, u64), (ns_b, jiffies_b): (u64, u64)) -> Option<u64> {
    const OFFERED: [u64; 4] = [100, 250, 300, 1000];
    let elapsed_ns = ns_b.checked_sub(ns_a).filter(|ns| *ns > 0)?;
    let ticks = jiffies_b.checked_sub(jiffies_a)?;
    #[expect(clippy::cast_precision_loss, reason = "a rate, then rounded")]
    let hz = ticks as f64 * 1e9 / elapsed_ns as f64;
    OFFERED.into_iter().min_by(|a, b| {
        #[expect(clippy::cast_precision_loss, reason = "small integers")]
        let distance = |x: u64| (x as f64 - hz).abs();
        distance(*a).total_cmp(&distance(*b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hz_from_the_configuration_or_from_samples() {
        assert_eq!(
            hz_of_config("# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"),
            Some(250)
        );
        assert_eq!(hz_of_config("CONFIG_HZ_1000=y\n"), None);
        // 26 jiffies in 101 ms is 250 Hz with a tick of jitter; 30 in
        // 100 ms is 300.
        assert_eq!(hz_of_samples((0, 7), (101_000_000, 33)), Some(250));
        assert_eq!(hz_of_samples((0, 0), (100_000_000, 30)), Some(300));
        assert_eq!(hz_of_samples((5, 0), (5, 30)), None);
    }

    #[test]
    fn this_kernel_has_a_jiffy() {
        // Configured and measured agree where both can be read.
        if let (Some(configured), Some(measured)) = (configured_hz(), measured_hz()) {
            assert_eq!(configured, measured);
        }
        assert!(jiffy_ns().is_some_and(|ns| ns >= 1_000_000));
    }
}
