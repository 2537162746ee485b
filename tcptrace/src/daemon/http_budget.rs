//! What the HTTP side may take, whatever local users do: at most
//! [`MAX_OPEN`] connections at once (each phase of each bounded in time by
//! `http_conn`), later ones accepted and closed at once (counted),
//! and a pause after a failed `accept` instead of a busy loop. Without it,
//! 1,100 idle connections exhausted the daemon's descriptors: every socket
//! dump failed and `accept4` spun at 85 % CPU.

use std::{
    cell::Cell,
    rc::Rc,
    time::{Duration, Instant},
};

/// Concurrent HTTP connections served. A scraper needs one; the rest is
/// room for several Prometheus servers and people with curl.
pub const MAX_OPEN: usize = 64;

/// Places that may be held by kept-alive connections: past it, answers
/// say `Connection: close`, so idle keep-alive can never take every place.
pub const KEEP_ALIVE: usize = MAX_OPEN / 4;

/// How long accepting pauses after an error (`EMFILE`: no descriptor left).
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct HttpBudget {
    open: Cell<usize>,
    paused_until: Cell<Option<Instant>>,
    /// Connections closed unserved because `MAX_OPEN` were open.
    pub refused: Cell<u64>,
    /// `accept` failures.
    pub accept_errors: Cell<u64>,
    /// Requests refused for want of the right credentials (401).
    pub unauthorized: Cell<u64>,
    /// TLS handshakes that failed or timed out.
    pub tls_failed: Cell<u64>,
}

/// One served connection's place; given back when dropped.
pub struct Slot(Rc<HttpBudget>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
    }
}

impl HttpBudget {
    /// Whether to accept now (not paused after an error).
    #[must_use]
    pub fn accepting(&self, now: Instant) -> bool {
        self.paused_until.get().is_none_or(|until| now >= until)
    }

    /// A place for a connection just accepted, or `None` (counted) when
    /// every place is taken: the caller closes it.
    #[must_use]
    pub fn take(self: &Rc<Self>) -> Option<Slot> {
        if self.open.get() >= MAX_OPEN {
            self.refused.set(self.refused.get() + 1);
            return None;
        }
        self.open.set(self.open.get() + 1);
        Some(Slot(Rc::clone(self)))
    }

    /// Whether more than [`KEEP_ALIVE`] places are taken: connections
    /// are then closed after their answer.
    #[must_use]
    pub fn crowded(&self) -> bool {
        self.open.get() > KEEP_ALIVE
    }

    /// `accept` failed: pause, so the loop does not spin on it.
    pub fn accept_failed(&self, now: Instant) {
        self.accept_errors.set(self.accept_errors.get() + 1);
        self.paused_until.set(Some(now + ACCEPT_PAUSE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_beyond_the_budget_are_refused_and_places_come_back() {
        let budget = Rc::new(HttpBudget::default());
        let slots: Vec<Slot> = (0..MAX_OPEN)
            .map(|_| budget.take().expect("a place"))
            .collect();
        assert!(budget.crowded());
        assert!(budget.take().is_none());
        assert_eq!(budget.refused.get(), 1);
        drop(slots);
        assert!(!budget.crowded());
        assert!(budget.take().is_some());

        let now = Instant::now();
        assert!(budget.accepting(now));
        budget.accept_failed(now);
        assert!(!budget.accepting(now));
        assert!(budget.accepting(now + ACCEPT_PAUSE));
        assert_eq!(budget.accept_errors.get(), 1);
    }
}
