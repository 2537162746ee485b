//! Ephemeral ports tied up towards one destination (incident 1 of
//! docs/INCIDENTS.md: how close churn comes to port exhaustion).

use std::{
    cmp::Reverse,
    io::{self, Write},
};

use serde::Serialize;

use super::parts::rank_findings;
use crate::{diagnose::ports, port_range::PortRange, snapshot::Snapshot};

/// Destinations listed: the busiest are what matters, the rest is noise.
const MAX_DESTINATIONS: usize = 10;

#[derive(Clone, Debug, Serialize)]
pub struct PortPressure {
    /// The network namespace whose ports these are.
    pub netns: u32,
    pub destination: String,
    pub ports_in_use: u64,
    pub time_wait: u64,
    /// The namespace's own `ip_local_port_range`.
    pub range: PortRange,
    pub range_size: u64,
    pub percent: f64,
}

impl PortPressure {
    pub const HEADING: &'static str = "Ephemeral ports by destination";

    /// The busiest destinations of the sockets in `now`, each against its
    /// namespace's port range.
    pub(super) fn busiest(now: &Snapshot) -> Vec<Self> {
        let mut all: Vec<Self> = ports::use_by_destination(now)
            .into_iter()
            .map(|((netns, destination), used)| {
                let range = now.port_range(netns);
                let range_size = range.size();
                #[expect(clippy::cast_precision_loss, reason = "a percentage for display")]
                let percent = used.in_use as f64 * 100.0 / range_size as f64;
                Self {
                    netns,
                    destination: destination.to_string(),
                    ports_in_use: used.in_use,
                    time_wait: used.time_wait,
                    range,
                    range_size,
                    percent,
                }
            })
            .collect();
        rank_findings(&mut all, |p| Reverse(p.ports_in_use));
        all.truncate(MAX_DESTINATIONS);
        all
    }

    /// `several_namespaces`: each namespace has its own ports, so say
    /// whose when there are many.
    pub fn write_text(&self, out: &mut impl Write, several_namespaces: bool) -> io::Result<()> {
        let whose = if several_namespaces {
            format!(" (network namespace {})", self.netns)
        } else {
            String::new()
        };
        writeln!(
            out,
            "  {}{whose}: {} of {} ports ({}) in use = {:.1}%, {} in TIME_WAIT",
            self.destination,
            self.ports_in_use,
            self.range_size,
            self.range,
            self.percent,
            self.time_wait
        )
    }
}
