//! Where the state-change program spends its time, for profiling only
//! (`Settings::phase_timing`, set by `TCPTRACE_KERNEL_PHASE_TIMING=1`; the
//! bench's phase run reads it).
//!
//! A timed span adds its nanoseconds and one run to the per-CPU array
//! `PHASE_NS`: slot `2 * span` holds the nanoseconds, `2 * span + 1` the
//! runs. Spans are a whole run of the state program, per transition, and
//! parts of a run: building the acting task, telling the context, finding
//! and inserting the socket's record, and the three steps of sending a
//! record (by any program). Each span costs one more clock read (about 25 ns on
//! a virtual machine), so the figures are a breakdown of a timed run, not
//! the cost of an untimed one. With the setting off, the verifier folds the
//! frozen setting and removes the timing code.

/// Spans of whole program runs, one per (old, new) pair of states: every
/// kernel TCP state number is below 16.
pub const TRANSITIONS: u32 = 256;

/// The span of a run of the state program for a transition.
#[expect(
    clippy::inline_always,
    reason = "called from the kernel programs, which keep every helper inline"
)]
#[expect(
    clippy::cast_sign_loss,
    reason = "state numbers are small and positive; the low four bits are kept"
)]
#[inline(always)]
#[must_use]
pub const fn transition(old: i32, new: i32) -> u32 {
    ((new as u32 & 0xf) << 4) | (old as u32 & 0xf)
}

/// The (old, new) states of a transition's span.
#[must_use]
pub const fn states_of(span: u32) -> (i32, i32) {
    #[expect(clippy::cast_possible_wrap, reason = "four bits each")]
    ((span & 0xf) as i32, (span >> 4 & 0xf) as i32)
}

/// Spans inside a run, after the transitions' spans.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The owner of a socket being born (connect, listen): the current
    /// task, its name and its stack (sampled or captured).
    ActorAtBirth = TRANSITIONS,
    /// The closer at a close call, likewise.
    ActorAtClose,
    /// Reserving a record in the event ring buffer. The three record
    /// spans time every record sent, whichever program sends it (under
    /// churn, the state program's summaries).
    Reserve,
    /// Writing the record into its reservation.
    Fill,
    /// Asking the ring how much is waiting, and submitting.
    Submit,
    /// Whether a task is acting (process context from the preempt count),
    /// where the transition's role depends on it.
    Context,
    /// Finding the socket's record: its `SOCKS` hash lookup.
    SocketLookup,
    /// Inserting a record into `SOCKS` (a socket first met at this
    /// address; a birth where a closed socket's record lay writes over it).
    SocketInsert,
}

impl Phase {
    pub const ALL: [Self; 8] = [
        Self::ActorAtBirth,
        Self::ActorAtClose,
        Self::Reserve,
        Self::Fill,
        Self::Submit,
        Self::Context,
        Self::SocketLookup,
        Self::SocketInsert,
    ];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::ActorAtBirth => "actor at birth (task, name, stack)",
            Self::ActorAtClose => "actor at close call (task, name, stack)",
            Self::Reserve => "record: ring reserve",
            Self::Fill => "record: fill",
            Self::Submit => "record: ring query and submit",
            Self::Context => "process context (preempt count)",
            Self::SocketLookup => "socket record: hash lookup",
            Self::SocketInsert => "socket record: hash insert",
        }
    }
}

/// Spans in all, and entries of `PHASE_NS` (two per span).
pub const SPANS: u32 = Phase::SocketInsert as u32 + 1;
pub const ENTRIES: u32 = 2 * SPANS;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::raw::{CLOSE, ESTABLISHED, SYN_SENT};

    #[test]
    fn every_transition_has_its_own_span_and_comes_back_out() {
        let spans = [
            transition(CLOSE, SYN_SENT),
            transition(SYN_SENT, ESTABLISHED),
            transition(ESTABLISHED, CLOSE),
        ];
        assert_eq!(states_of(spans[0]), (CLOSE, SYN_SENT));
        assert_eq!(states_of(spans[2]), (ESTABLISHED, CLOSE));
        assert!(spans.iter().all(|&s| s < TRANSITIONS));
        assert_ne!(spans[0], spans[2]);
        assert_eq!(Phase::ALL.last().map(|&p| p as u32 + 1), Some(SPANS));
    }
}
