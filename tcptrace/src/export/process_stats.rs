//! The daemon's own `process_*` metrics, under the names every Prometheus
//! client library uses (so node dashboards and alerts on exporters apply
//! as they are): CPU time, memory, file descriptors, start time. Read from
//! `/proc/self` at scrape time.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Unit,
};

/// One reading of this process's resources.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    /// Since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// This process now; `None` when `/proc` cannot be read.
    #[must_use]
    pub fn of_self() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        // SAFETY: sysconf has no memory arguments.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let mut stats = Self::parse(
            &stat,
            &boot,
            u64::try_from(ticks).ok()?,
            u64::try_from(page).ok()?,
        )?;
        stats.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit, which `limit` is.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } == 0 {
            stats.max_fds = limit.rlim_cur;
        }
        Some(stats)
    }

    /// From `/proc/self/stat` and `/proc/stat` (its `btime`), with the
    /// clock tick rate and page size.
    #[expect(clippy::cast_precision_loss, reason = "ticks and seconds as f64")]
    fn parse(stat: &str, boot: &str, ticks_per_second: u64, page_bytes: u64) -> Option<Self> {
        // The command name is in parentheses and may hold spaces: fields
        // are counted from the last ')'. Field 3 (state) is index 0.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        let boot_time: u64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let ticks = ticks_per_second.max(1) as f64;
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page_bytes,
            open_fds: 0,
            max_fds: 0,
        })
    }
}

impl Collector for ProcessStats {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        e.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&self.cpu_seconds, None)?;
        e.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&self.start_time_seconds)?;
        for (name, help, value, unit) in [
            (
                "process_resident_memory",
                "Resident memory size",
                self.resident_bytes,
                Some(&Unit::Bytes),
            ),
            (
                "process_virtual_memory",
                "Virtual memory size",
                self.virtual_bytes,
                Some(&Unit::Bytes),
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                self.open_fds,
                None,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                self.max_fds,
                None,
            ),
        ] {
            e.encode_descriptor(name, help, unit, MetricType::Gauge)?
                .encode_gauge(&value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid ... utime=14 stime=15 ... starttime=22 vsize=23 rss=24
        let stat = "4242 (tcp (trace) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 3 0 1000 123456789 2048 18446744073709551615";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n";
        let stats = ProcessStats::parse(stat, boot, 100, 4096).unwrap();
        assert!((stats.cpu_seconds - 3.0).abs() < 1e-9, "{stats:?}");
        assert!((stats.start_time_seconds - 1_700_000_010.0).abs() < 1e-9);
        assert_eq!(stats.virtual_bytes, 123_456_789);
        assert_eq!(stats.resident_bytes, 2048 * 4096);
        assert_eq!(ProcessStats::parse("garbage", boot, 100, 4096), None);
    }
}
