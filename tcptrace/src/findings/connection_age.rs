//! How old the live connections are, per owner, peer and call site: pools
//! that never rotate their connections (a 2 h limit is common practice to
//! keep load balanced) and pools whose rotation works both show here.

use std::io::{self, Write};

use serde::Serialize;

use super::{
    parts::{secs, ProcessJson},
    text::{call_site, ShownProcess},
    ReportInput,
};
use crate::{
    callsite::CallSite,
    diagnose::idle::{ConnectionKey, Connections},
};

/// Upper bounds (seconds) of the age bands: a minute, ten, an hour, two
/// (a common rotation limit), and beyond.
pub const AGE_BANDS: [(&str, f64); 5] = [
    ("1m", 60.0),
    ("10m", 600.0),
    ("1h", 3600.0),
    ("2h", 7200.0),
    ("longer", f64::INFINITY),
];

#[derive(Clone, Debug, Serialize)]
pub struct ConnectionAges {
    pub process: Option<ProcessJson>,
    pub peer: String,
    /// ESTABLISHED now.
    pub established: u64,
    /// Over the connections of known age (none: every age is unknown).
    pub oldest_age_s: Option<f64>,
    pub median_age_s: Option<f64>,
    /// Born during the session, not met by the trace yet (summary mode
    /// reports a socket when it closes): age unknown.
    pub ages_unknown: u64,
    /// Some connection predates the session: ages are at least these.
    pub age_is_lower_bound: bool,
    /// Idle at least the idle threshold, with keepalive armed (protected).
    pub idle_with_keepalive: u64,
    /// The soonest keepalive probe due among those, seconds from now: how
    /// soon a dropped peer would be noticed.
    pub next_keepalive_probe_s: Option<f64>,
    /// Connections per band of `AGE_BANDS` (up to 1m, 10m, 1h, 2h, longer).
    pub by_age: [u64; AGE_BANDS.len()],
    pub call_site: Option<CallSite>,
}

impl ConnectionAges {
    pub const HEADING: &'static str = "Live connections by age (oldest first)";

    pub(super) fn of(key: &ConnectionKey, group: &Connections, input: &ReportInput) -> Self {
        let mut ages = group.ages_ns.clone();
        ages.sort_unstable();
        let mut by_age = [0; AGE_BANDS.len()];
        for &age in &ages {
            let band = AGE_BANDS
                .iter()
                .position(|&(_, bound)| secs(age) <= bound)
                .unwrap_or(AGE_BANDS.len() - 1);
            by_age[band] += 1;
        }
        Self {
            process: ProcessJson::of(key.owner),
            peer: key.peer.to_string(),
            established: group.established,
            oldest_age_s: ages.last().map(|&age| secs(age)),
            median_age_s: ages.get(ages.len() / 2).map(|&age| secs(age)),
            ages_unknown: group.ages_unknown,
            age_is_lower_bound: group.oldest_is_lower_bound,
            idle_with_keepalive: group.idle_with_keepalive,
            next_keepalive_probe_s: group.next_keepalive_probe_ms.map(|ms| f64::from(ms) / 1e3),
            by_age,
            call_site: input.call_sites.get(key.call_site),
        }
    }

    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        let ages = match (self.oldest_age_s, self.median_age_s) {
            (Some(oldest), Some(median)) => format!(
                "oldest {}{oldest:.0}s, median {median:.0}s",
                if self.age_is_lower_bound {
                    "at least "
                } else {
                    ""
                },
            ),
            _ => "ages unknown".to_owned(),
        };
        let unknown = if self.ages_unknown > 0 && self.oldest_age_s.is_some() {
            format!(" ({} of unknown age)", self.ages_unknown)
        } else {
            String::new()
        };
        writeln!(
            out,
            "  {} -> {}: {} established, {ages}{unknown}{}",
            ShownProcess(self.process.as_ref()),
            self.peer,
            self.established,
            if self.idle_with_keepalive > 0 {
                format!(
                    ", {} idle with keepalive on (next probe in {:.0}s)",
                    self.idle_with_keepalive,
                    self.next_keepalive_probe_s.unwrap_or(0.0)
                )
            } else {
                String::new()
            },
        )?;
        call_site(out, "opened at", self.call_site.as_ref())
    }
}
