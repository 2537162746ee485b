//! How many user stacks a process may have captured: the rule the kernel
//! programs apply before each capture, per process and call kind.
//!
//! A capture costs the kernel a copy of up to 4 KiB and userspace an
//! unwind; a process connecting thousands of times a second from one
//! call site does not need each one. The budget is a rate with bursts
//! (the generic cell rate algorithm, one timestamp per process and kind):
//! `burst` captures back to back, then one per `interval_ns`. A call over
//! budget reuses the process's last capture of that kind, and is counted
//! (`Counter::StacksSampled`). An interval of 0 captures every call.
//!
//! The daemon takes one per second (burst 1); `trace` and `top` one per
//! millisecond after bursts of 64, so every call site of a process that is
//! not churning is its own, and one that churns costs a thousand captures
//! a second at most.
#![expect(
    clippy::inline_always,
    reason = "called from the kernel programs, which keep every helper inline (no BPF-to-BPF calls)"
)]

/// See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackBudget {
    /// At most an hour (userspace checks): with `burst` bounded by
    /// `MAX_BURST`, their product fits in a u64.
    pub interval_ns: u64,
    pub burst: u32,
}

/// The largest burst counted; a larger one is taken as this.
pub const MAX_BURST: u32 = 1024;

impl StackBudget {
    /// Whether a capture at `now` is within budget, given `due_ns` of the
    /// process's last capture of that kind (see `after_capture`).
    #[inline(always)]
    #[must_use]
    pub const fn allows(&self, due_ns: u64, now: u64) -> bool {
        // Plain arithmetic: BPF has no 128-bit multiply for a saturating one.
        let burst = match self.burst {
            0 => 1,
            b if b > MAX_BURST => MAX_BURST,
            b => b,
        };
        let tolerance = self.interval_ns * (burst as u64 - 1);
        self.interval_ns == 0 || due_ns <= now.saturating_add(tolerance)
    }

    /// The `due_ns` a capture at `now` leaves: when the next one would be
    /// due at the steady rate. `previous` is the last capture's (0 for the
    /// process's first).
    #[inline(always)]
    #[must_use]
    pub const fn after_capture(&self, previous: u64, now: u64) -> u64 {
        let from = if previous > now { previous } else { now };
        from.saturating_add(self.interval_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Captures at `times` (ns), each taken when the budget allows it:
    /// which ones were taken.
    fn taken<const N: usize>(budget: StackBudget, times: [u64; N]) -> [bool; N] {
        let mut due = 0;
        times.map(|now| {
            let allowed = due == 0 || budget.allows(due, now);
            if allowed {
                due = budget.after_capture(due, now);
            }
            allowed
        })
    }

    #[test]
    fn an_interval_of_zero_captures_every_call() {
        let budget = StackBudget {
            interval_ns: 0,
            burst: 1,
        };
        assert_eq!(taken(budget, [5, 5, 6, 6]), [true; 4]);
    }

    #[test]
    fn a_burst_of_one_is_one_capture_per_interval() {
        let budget = StackBudget {
            interval_ns: 1000 * MS,
            burst: 1,
        };
        let times = [MS, 2 * MS, 999 * MS, 1001 * MS, 1500 * MS, 2100 * MS];
        assert_eq!(
            taken(budget, times),
            [true, false, false, true, false, true]
        );
    }

    #[test]
    fn a_burst_is_captured_whole_then_the_rate_holds() {
        let budget = StackBudget {
            interval_ns: MS,
            burst: 4,
        };
        // Six calls at once: the first four; then one per millisecond.
        // After a quiet spell the whole burst is back.
        let at = |ms: u64| ms * MS;
        #[rustfmt::skip]
        let times = [
            at(10), at(10), at(10), at(10), at(10), at(10),
            at(10) + MS / 2, at(11), at(12), at(12),
            at(100), at(100), at(100), at(100), at(100),
        ];
        #[rustfmt::skip]
        let expected = [
            true, true, true, true, false, false,
            false, true, true, false,
            true, true, true, true, false,
        ];
        assert_eq!(taken(budget, times), expected);
    }

    #[test]
    fn the_longest_interval_and_a_huge_burst_do_not_overflow() {
        let budget = StackBudget {
            interval_ns: 3600 * 1000 * MS,
            burst: u32::MAX,
        };
        // A burst of MAX_BURST at the hour: 1023 hours of tolerance.
        assert!(budget.allows(1023 * 3600 * 1000 * MS, 1));
        assert!(!budget.allows(1024 * 3600 * 1000 * MS, 1));
        assert!(!budget.allows(u64::MAX, 1));
    }

    #[test]
    fn a_burst_of_zero_counts_as_one() {
        let budget = StackBudget {
            interval_ns: MS,
            burst: 0,
        };
        assert_eq!(taken(budget, [MS, MS, 2 * MS]), [true, false, true]);
    }
}
