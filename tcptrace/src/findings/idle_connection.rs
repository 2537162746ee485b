//! Idle connections without keepalive (incident 5 of docs/INCIDENTS.md):
//! ESTABLISHED, no data either way for at least the idle threshold, and no
//! keepalive timer armed. A NAT, firewall or load balancer that drops them
//! after its own idle timeout goes unnoticed until the next request hangs.

use std::io::{self, Write};

use serde::Serialize;

use super::{
    parts::{secs, ProcessJson},
    text::{call_site, ShownProcess},
    LogLine, ReportInput,
};
use crate::{
    callsite::CallSite,
    diagnose::idle::{ConnectionKey, Connections},
};

#[derive(Clone, Debug, Serialize)]
pub struct IdleConnections {
    pub process: Option<ProcessJson>,
    pub peer: String,
    /// Idle for at least `idle_threshold_s`, keepalive off.
    pub sockets: u64,
    pub longest_idle_s: f64,
    pub idle_threshold_s: f64,
    /// Always false here: the ones with keepalive armed are protected and
    /// only counted (`ConnectionAges::idle_with_keepalive`).
    pub keepalive: bool,
    /// The oldest connection of known age in the group (see
    /// `ConnectionAges::ages_unknown`).
    pub oldest_age_s: Option<f64>,
    /// Some connection predates the session: its age is at least this.
    pub age_is_lower_bound: bool,
    pub call_site: Option<CallSite>,
}

impl IdleConnections {
    pub const HEADING: &'static str =
        "Idle connections without keepalive (a peer or middlebox that drops them goes unnoticed)";

    pub(super) fn of(
        key: &ConnectionKey,
        group: &Connections,
        input: &ReportInput,
    ) -> Option<Self> {
        (group.idle_without_keepalive > 0).then(|| Self {
            process: ProcessJson::of(key.owner),
            peer: key.peer.to_string(),
            sockets: group.idle_without_keepalive,
            longest_idle_s: f64::from(group.longest_idle_ms) / 1e3,
            idle_threshold_s: input.idle_threshold.as_secs_f64(),
            keepalive: false,
            oldest_age_s: (!group.ages_ns.is_empty()).then(|| secs(group.oldest_ns())),
            age_is_lower_bound: group.oldest_is_lower_bound,
            call_site: input.call_sites.get(key.call_site),
        })
    }

    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        let age = match self.oldest_age_s {
            Some(age) if self.age_is_lower_bound => format!("; oldest at least {age:.0}s"),
            Some(age) => format!("; oldest {age:.0}s"),
            None => String::new(),
        };
        writeln!(
            out,
            "  {} holds {} connection(s) to {} idle up to {:.0}s (threshold {:.0}s) with \
             keepalive off{age}",
            ShownProcess(self.process.as_ref()),
            self.sockets,
            self.peer,
            self.longest_idle_s,
            self.idle_threshold_s,
        )?;
        call_site(out, "opened at", self.call_site.as_ref())
    }

    /// Logged once per process and peer.
    pub(super) fn log_line(&self) -> LogLine {
        LogLine {
            message: "idle connections without keepalive",
            key: format!(
                "idle/{:?}/{}",
                self.process.as_ref().map(|p| p.pid),
                self.peer
            ),
        }
    }
}
