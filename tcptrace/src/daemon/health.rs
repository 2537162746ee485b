//! `/healthz` that tells the truth: "degraded", with the reasons, while
//! events are being lost, a kernel map is full, stacks cannot be taken,
//! socket dumps fail or the HTTP side is flooded;
//! "ok" once a whole window has passed without any of it. The answer stays
//! HTTP 200 either way: a liveness probe that restarted a degraded daemon
//! would lose its state and fix nothing (a full ring buffer needs a bigger
//! one, not a restart); alerting reads the status and the counters.

use std::{collections::VecDeque, time::Duration, time::Instant};

use crate::probe::Counters;

/// How far back "while" reaches: losses in the last minute degrade.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The counters whose growth means findings are incomplete or the daemon
/// is under pressure, with what to do about each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    pub events_lost: u64,
    pub runs_skipped: u64,
    pub transitions_missed: u64,
    pub sock_map_full: u64,
    pub listener_map_full: u64,
    pub stack_errors: u64,
    pub processes_not_announced: u64,
    pub read_errors: u64,
    pub decode_errors: u64,
    /// Socket dumps that failed: the gauges are stale.
    pub refresh_errors: u64,
    /// HTTP connections closed unserved (the budget was full).
    pub http_refused: u64,
    /// HTTP accepts that failed (descriptors exhausted).
    pub http_accept_errors: u64,
}

impl Losses {
    #[must_use]
    pub const fn of(kernel: &Counters, decode_errors: u64) -> Self {
        Self {
            events_lost: kernel.events_lost,
            runs_skipped: kernel.runs_skipped,
            transitions_missed: kernel.transitions_missed,
            sock_map_full: kernel.sock_map_full,
            listener_map_full: kernel.listener_map_full,
            stack_errors: kernel.stack_errors,
            processes_not_announced: kernel.processes_not_announced,
            read_errors: kernel.read_errors,
            decode_errors,
            refresh_errors: 0,
            http_refused: 0,
            http_accept_errors: 0,
        }
    }

    /// What grew from `earlier` to `self`, each with its remedy.
    fn reasons_since(&self, earlier: &Self) -> Vec<String> {
        let grew = |now: u64, then: u64| now.saturating_sub(then);
        [
            (
                grew(self.events_lost, earlier.events_lost),
                "events lost (ring buffer full): raise ring-buffer-mib",
            ),
            (
                grew(self.runs_skipped, earlier.runs_skipped),
                "program runs skipped by the kernel (nested on one CPU): those events were never seen",
            ),
            (
                grew(self.transitions_missed, earlier.transitions_missed),
                "transitions the kernel ran no program for: those events were never seen",
            ),
            (
                grew(self.sock_map_full, earlier.sock_map_full),
                "sockets not tracked (socket map full): raise socket-map-entries",
            ),
            (
                grew(self.listener_map_full, earlier.listener_map_full),
                "listeners not recorded (listener map full): their connections have no owner",
            ),
            (
                grew(self.stack_errors, earlier.stack_errors),
                "stacks not captured (stack ring full or stack unreadable): call sites missing; \
                 raise stack-interval",
            ),
            (
                grew(self.processes_not_announced, earlier.processes_not_announced),
                "new processes not announced (their ring full): call sites may be missing",
            ),
            (
                grew(self.read_errors, earlier.read_errors),
                "kernel reads failed: some records lack fields",
            ),
            (
                grew(self.decode_errors, earlier.decode_errors),
                "records that did not decode",
            ),
            (
                grew(self.refresh_errors, earlier.refresh_errors),
                "socket dumps failed (see the log): socket gauges and findings are stale",
            ),
            (
                grew(self.http_refused, earlier.http_refused),
                "HTTP connections closed unserved (more than the concurrent limit open): \
                 someone holds connections to this port",
            ),
            (
                grew(self.http_accept_errors, earlier.http_accept_errors),
                "HTTP accepts failed (out of file descriptors?)",
            ),
        ]
        .into_iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, what)| format!("{count} {what}"))
        .collect()
    }
}

/// Samples of the loss counters, enough to look one window back.
#[derive(Debug, Default)]
pub struct Health {
    samples: VecDeque<(Instant, Losses)>,
}

/// `/healthz`'s verdict.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: &'static str,
    /// What went wrong within the window (empty when "ok").
    pub reasons: Vec<String>,
}

impl Health {
    /// Records the counters now (at each refresh and each `/healthz`).
    pub fn observe(&mut self, now: Instant, losses: Losses) {
        self.samples.push_back((now, losses));
        // Keep one sample at least a window old: the baseline.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(at, _)| now.duration_since(*at) >= WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// "degraded" when a loss counter grew within the last window (or,
    /// before a window has passed, since the start: `start` holds zeros).
    #[must_use]
    pub fn verdict(&self, now: Instant, current: Losses) -> Verdict {
        let baseline = self
            .samples
            .iter()
            .rev()
            .find(|(at, _)| now.duration_since(*at) >= WINDOW)
            .or_else(|| self.samples.front())
            .map(|(_, losses)| *losses)
            .unwrap_or_default();
        let reasons = current.reasons_since(&baseline);
        Verdict {
            status: if reasons.is_empty() { "ok" } else { "degraded" },
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_while_losing_then_ok_a_window_later() {
        let start = Instant::now();
        let mut health = Health::default();
        health.observe(start, Losses::default());
        assert_eq!(health.verdict(start, Losses::default()).status, "ok");

        let losing = Losses {
            events_lost: 120,
            sock_map_full: 3,
            ..Losses::default()
        };
        let later = start + Duration::from_secs(10);
        health.observe(later, losing);
        let verdict = health.verdict(later, losing);
        assert_eq!(verdict.status, "degraded");
        assert_eq!(verdict.reasons.len(), 2, "{:?}", verdict.reasons);
        assert!(
            verdict.reasons[0].starts_with("120 events lost"),
            "{:?}",
            verdict.reasons
        );
        assert!(
            verdict.reasons[1].contains("socket-map-entries"),
            "{:?}",
            verdict.reasons
        );

        // Nothing more lost for a whole window: ok again.
        let quiet = later + WINDOW + Duration::from_secs(1);
        health.observe(quiet, losing);
        assert_eq!(health.verdict(quiet, losing).status, "ok");
        // And degraded again at the next loss.
        let again = Losses {
            events_lost: 121,
            ..losing
        };
        assert_eq!(health.verdict(quiet, again).status, "degraded");
    }

    #[test]
    fn keeps_a_bounded_number_of_samples() {
        let start = Instant::now();
        let mut health = Health::default();
        for second in 0..10_000 {
            health.observe(start + Duration::from_secs(second), Losses::default());
        }
        assert!(health.samples.len() <= 62, "{}", health.samples.len());
    }
}
