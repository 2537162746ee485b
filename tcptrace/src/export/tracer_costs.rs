//! What tracing costs and how close it is to losing events, as the
//! daemon's own metrics: each kernel program's runs and run time (counted
//! by the kernel only while `kernel.bpf_stats_enabled` is 1, which the
//! `tcptrace_bpf_stats_enabled` gauge says), and how full each ring buffer
//! was when the daemon came to drain it (a histogram: a ring that reaches
//! 1.0 loses events).

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Unit,
};

use crate::probe::ProgramRuns;

/// Upper bounds of the fill-ratio buckets.
pub const FILL_BOUNDS: [f64; 7] = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9];

/// Fill ratios observed, bucketed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FillHistogram {
    counts: [u64; FILL_BOUNDS.len()],
    above: u64,
    sum: f64,
    count: u64,
}

impl FillHistogram {
    pub fn observe(&mut self, ratio: f64) {
        match FILL_BOUNDS.iter().position(|&bound| ratio <= bound) {
            Some(i) => self.counts[i] += 1,
            None => self.above += 1,
        }
        self.sum += ratio;
        self.count += 1;
    }

    /// (upper bound, count in that bucket) as prometheus-client wants
    /// them: it accumulates itself, and writes `+Inf` for `f64::MAX`.
    fn per_bucket(&self) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = FILL_BOUNDS.iter().copied().zip(self.counts).collect();
        out.push((f64::MAX, self.above));
        out
    }
}

/// One ring buffer's size and fill.
#[derive(Clone, Debug, Default)]
pub struct RingFillStats {
    /// `events` or `stacks`.
    pub ring: &'static str,
    pub size_bytes: u64,
    pub fill: FillHistogram,
}

#[derive(Clone, Debug, Default)]
pub struct TracerCosts {
    pub bpf_stats_enabled: bool,
    /// By program name.
    pub programs: Vec<(String, ProgramRuns)>,
    pub rings: Vec<RingFillStats>,
}

impl Collector for TracerCosts {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        e.encode_descriptor(
            "bpf_stats_enabled",
            "1 while kernel.bpf_stats_enabled is set: the kernel counts program runs and their time only then",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&i64::from(self.bpf_stats_enabled))?;
        let mut per_program =
            |name: &str, help: &str, unit: Option<&Unit>, value: &dyn Fn(&ProgramRuns) -> f64| {
                let mut family = e.encode_descriptor(name, help, unit, MetricType::Counter)?;
                for (program, runs) in &self.programs {
                    ConstCounter::new(value(runs))
                        .encode(family.encode_family(&[("program", program.as_str())])?)?;
                }
                Ok::<_, std::fmt::Error>(())
            };
        #[expect(clippy::cast_precision_loss, reason = "counts and seconds as f64")]
        {
            per_program(
                "bpf_program_runs",
                "Runs of each kernel program (while bpf_stats_enabled)",
                None,
                &|r| r.runs as f64,
            )?;
            per_program(
                "bpf_program_run_time",
                "Time spent in each kernel program (while bpf_stats_enabled)",
                Some(&Unit::Seconds),
                &|r| r.run_time_ns as f64 / 1e9,
            )?;
            per_program(
                "bpf_program_runs_skipped",
                "Runs the kernel skipped because the program was already running on that CPU (events missed)",
                None,
                &|r| r.recursion_misses as f64,
            )?;
        }
        let mut sizes = e.encode_descriptor(
            "ring_buffer_size",
            "Size of each ring buffer between the kernel and the daemon",
            Some(&Unit::Bytes),
            MetricType::Gauge,
        )?;
        for ring in &self.rings {
            ConstGauge::new(ring.size_bytes)
                .encode(sizes.encode_family(&[("ring", ring.ring)])?)?;
        }
        let mut fill = e.encode_descriptor(
            "ring_buffer_fill_ratio",
            "How full each ring buffer was when the daemon came to read it (events are lost at 1)",
            None,
            MetricType::Histogram,
        )?;
        for ring in &self.rings {
            fill.encode_family(&[("ring", ring.ring)])?
                .encode_histogram::<NoLabelSet>(
                    ring.fill.sum,
                    ring.fill.count,
                    &ring.fill.per_bucket(),
                    None,
                )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;

    #[test]
    fn renders_program_costs_and_ring_fill() {
        let mut fill = FillHistogram::default();
        for ratio in [0.0, 0.004, 0.3, 1.0] {
            fill.observe(ratio);
        }
        let costs = TracerCosts {
            bpf_stats_enabled: true,
            programs: vec![(
                "tcptrace_state_summary".to_owned(),
                ProgramRuns {
                    recursion_misses: 2,
                    runs: 1000,
                    run_time_ns: 500_000,
                },
            )],
            rings: vec![RingFillStats {
                ring: "events",
                size_bytes: 4 << 20,
                fill,
            }],
        };
        let mut registry = Registry::default();
        registry
            .sub_registry_with_prefix("tcptrace")
            .register_collector(Box::new(costs));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "tcptrace_bpf_stats_enabled 1",
            "tcptrace_bpf_program_runs_total{program=\"tcptrace_state_summary\"} 1000",
            "tcptrace_bpf_program_run_time_seconds_total{program=\"tcptrace_state_summary\"} 0.0005",
            "tcptrace_bpf_program_runs_skipped_total{program=\"tcptrace_state_summary\"} 2",
            "tcptrace_ring_buffer_size_bytes{ring=\"events\"} 4194304",
            "tcptrace_ring_buffer_fill_ratio_bucket{le=\"0.01\",ring=\"events\"} 2",
            "tcptrace_ring_buffer_fill_ratio_bucket{le=\"0.5\",ring=\"events\"} 3",
            "tcptrace_ring_buffer_fill_ratio_bucket{le=\"+Inf\",ring=\"events\"} 4",
            "tcptrace_ring_buffer_fill_ratio_count{ring=\"events\"} 4",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }
}
