//! The header of `tcptrace top`: events per second, and everything that
//! says the view is missing events (the kernel's counters included), so
//! that nothing is lost silently.

use std::time::Duration;

use crate::{findings::Totals, pipeline::EventCounts, probe::Counters};

/// The figures of the header, for one interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    pub interval: Duration,
    /// Records read from the kernel, and events shown, per second.
    pub events_per_s: f64,
    pub shown_per_s: f64,
    /// Since the start: events the kernel could not send (ring buffer
    /// full), program runs it skipped, records that did not decode,
    /// socket records replaced before their close was seen.
    pub ring_full: u64,
    pub runs_skipped: u64,
    pub transitions_missed: u64,
    pub undecodable: u64,
    pub records_replaced: u64,
    /// Sockets born while the kernel's socket map was full.
    pub untracked: u64,
    /// Records the kernel's filter held back (not lost: not asked for).
    pub filtered_in_kernel: u64,
    /// The kernel's own counts in the last socket dump.
    pub time_wait_kernel: Option<u64>,
    pub close_wait_kernel: Option<u64>,
    /// Namespaces the dump could not list (their sockets are missing).
    pub namespaces_unreachable: usize,
}

impl Status {
    /// The figures now: `before` are the pipeline's counts at the start of
    /// the interval, `report` the last report's totals.
    #[must_use]
    pub fn of(
        interval: Duration,
        before: &EventCounts,
        now: &EventCounts,
        kernel: &Counters,
        report: Option<&Totals>,
    ) -> Self {
        let secs = interval.as_secs_f64().max(1e-3);
        #[expect(clippy::cast_precision_loss, reason = "rates for display")]
        let per_s = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        Self {
            interval,
            events_per_s: per_s(before.events, now.events),
            shown_per_s: per_s(before.shown, now.shown),
            ring_full: kernel.events_lost,
            runs_skipped: kernel.runs_skipped,
            transitions_missed: kernel.transitions_missed,
            undecodable: now.decode_errors,
            records_replaced: now.records_replaced,
            untracked: kernel.sock_map_full,
            filtered_in_kernel: kernel.filtered_out,
            time_wait_kernel: report.map(|t| t.time_wait_kernel),
            close_wait_kernel: report.map(|t| t.close_wait_kernel),
            namespaces_unreachable: report.map_or(0, |t| t.namespaces_unreachable.len()),
        }
    }

    /// Events never seen: the view's counts are low by at least this.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.ring_full
            + self.runs_skipped
            + self.transitions_missed
            + self.undecodable
            + self.records_replaced
    }

    /// Whether anything says events or sockets are missing.
    #[must_use]
    pub fn incomplete(&self) -> bool {
        self.lost() > 0 || self.untracked > 0 || self.namespaces_unreachable > 0
    }

    /// The line of figures.
    #[must_use]
    pub fn events_line(&self) -> String {
        let kernel = match (self.time_wait_kernel, self.close_wait_kernel) {
            (Some(tw), Some(cw)) => format!("kernel now: TIME_WAIT {tw}, CLOSE_WAIT {cw}"),
            _ => "kernel now: (first socket dump pending)".to_owned(),
        };
        format!(
            "events {:.0}/s, shown {:.0}/s | {kernel} | filtered in kernel {}",
            self.events_per_s, self.shown_per_s, self.filtered_in_kernel
        )
    }

    /// The line of losses: what is missing, or that nothing is.
    #[must_use]
    pub fn loss_line(&self) -> String {
        if !self.incomplete() {
            return "lost: none (kernel ring, skipped runs, decoding, socket map all complete)"
                .to_owned();
        }
        let mut line = format!(
            "LOST {} events (ring buffer full {}, kernel runs skipped {}, transitions missed {}, \
             undecodable {}, records replaced {}); sockets untracked {}",
            self.lost(),
            self.ring_full,
            self.runs_skipped,
            self.transitions_missed,
            self.undecodable,
            self.records_replaced,
            self.untracked
        );
        if self.namespaces_unreachable > 0 {
            line.push_str("; ");
            line.push_str(&self.namespaces_unreachable.to_string());
            line.push_str(" network namespace(s) not listed");
        }
        line.push_str(": counts are low");
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_losses() {
        let before = EventCounts {
            events: 100,
            shown: 50,
            ..EventCounts::default()
        };
        let now = EventCounts {
            events: 300,
            shown: 150,
            ..EventCounts::default()
        };
        let mut kernel = Counters::default();
        let status = Status::of(Duration::from_secs(2), &before, &now, &kernel, None);
        assert!((status.events_per_s - 100.0).abs() < 1e-9);
        assert!((status.shown_per_s - 50.0).abs() < 1e-9);
        assert!(!status.incomplete());
        assert!(status.loss_line().starts_with("lost: none"));
        assert!(status.events_line().contains("pending"));
        kernel.events_lost = 7;
        kernel.sock_map_full = 1;
        let status = Status::of(Duration::from_secs(1), &now, &now, &kernel, None);
        assert_eq!(status.lost(), 7);
        assert!(status.loss_line().starts_with("LOST 7 events"));
        assert!(status.loss_line().contains("sockets untracked 1"));
    }
}
