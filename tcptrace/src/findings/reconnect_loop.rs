//! Reconnecting without back-off (incident 2 of docs/INCIDENTS.md): a
//! client that comes straight back, many times a second, to a peer that
//! refuses it or closes on it without a word.

use std::io::{self, Write};

use serde::Serialize;

use super::{
    parts::{rate, secs, ClosedFirst, Percentiles, ProcessJson, Processes},
    text::{call_site, micros, FoldedProcess},
    LogLine,
};
use crate::{
    callsite::CallSite,
    diagnose::{
        fold::Folded,
        reconnect::{self, Backoff},
    },
    table::Role,
};

/// Connections living less than this (median) are short-lived.
const SHORT_LIFETIME_US: u64 = 1_000_000;
/// Attempts per second below which coming back is not a loop.
const MIN_PER_SECOND: f64 = 0.5;

#[derive(Clone, Debug, Serialize)]
pub struct ReconnectLoop {
    pub process: Option<ProcessJson>,
    #[serde(flatten)]
    pub processes: Processes,
    pub peer: String,
    pub attempts: u64,
    pub per_second: f64,
    pub median_lifetime_us: Option<u64>,
    pub closed_first: ClosedFirst,
    pub failures: u64,
    pub backoff: Backoff,
    pub first_gap_ms: f64,
    pub last_gap_ms: f64,
    pub call_site: Option<CallSite>,
}

impl ReconnectLoop {
    pub const HEADING: &'static str = "Reconnect loops (no back-off)";

    /// The loop a folded group shows, if it shows one.
    pub(super) fn of(group: &Folded) -> Option<Self> {
        let (key, flow) = (group.key, &group.flow);
        if key.role != Role::Active || flow.attempts < reconnect::MIN_ATTEMPTS {
            return None;
        }
        let (backoff, first, last) = reconnect::backoff(flow.recent_attempts_ns())?;
        let median_lifetime_us = Percentiles::of(&flow.lifetimes_us).map(|p| p.p50);
        let short_lived = median_lifetime_us.is_some_and(|us| us < SHORT_LIFETIME_US);
        let failing = flow.failures.total() * 2 >= flow.attempts;
        // A client that closes its own short connections is churn (story 1),
        // and so is one whose server answers and then closes (HTTP/1.0); a
        // loop is the peer refusing, or closing on us without a word, and us
        // coming straight back.
        let rejected = failing || flow.rejections * 2 >= flow.closed.max(1);
        if backoff != Backoff::None || !short_lived && !failing || !rejected {
            return None;
        }
        let starts = flow.recent_attempts_ns();
        let span = starts.last()?.saturating_sub(*starts.first()?);
        let per_second = rate(u64::try_from(starts.len() - 1).ok()?, span);
        if per_second < MIN_PER_SECOND {
            return None;
        }
        Some(Self {
            processes: Processes::of(&group.pids),
            process: ProcessJson::of(key.owner),
            peer: key.peer.to_string(),
            attempts: flow.attempts,
            per_second,
            median_lifetime_us,
            closed_first: ClosedFirst::of(flow),
            failures: flow.failures.total(),
            backoff,
            first_gap_ms: secs(first) * 1e3,
            last_gap_ms: secs(last) * 1e3,
            call_site: group.owner_site.clone(),
        })
    }

    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "  {} reconnects to {} {:.1}/s ({} attempts, {} failed), median lifetime {}, \
             closed first by {:?}, gaps {:.0}ms -> {:.0}ms: no back-off",
            FoldedProcess(self.process.as_ref(), &self.processes),
            self.peer,
            self.per_second,
            self.attempts,
            self.failures,
            self.median_lifetime_us
                .map_or_else(|| "-".to_owned(), micros),
            self.closed_first,
            self.first_gap_ms,
            self.last_gap_ms,
        )?;
        call_site(out, "connects at", self.call_site.as_ref())
    }

    /// Logged once per process and peer.
    pub(super) fn log_line(&self) -> LogLine {
        LogLine {
            message: "reconnect loop",
            key: format!(
                "rl/{:?}/{}",
                self.process.as_ref().map(|p| p.pid),
                self.peer
            ),
        }
    }
}
