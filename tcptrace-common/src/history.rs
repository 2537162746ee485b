//! What summary mode remembers of a socket's life, so that the daemon gets
//! one record per socket instead of one per event. Kept in the kernel's
//! socket record, updated in place by every state change, and unfolded by
//! userspace into the transitions it stands for.
#![expect(
    clippy::inline_always,
    reason = "called from the kernel programs, which keep every helper inline (no BPF-to-BPF calls)"
)]

use crate::transition::{moment, retransmit_phase, Moment, RetransmitPhase};

/// Most states `History::path` holds (4 bits each in a u64).
pub const PATH_CAPACITY: u8 = 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct History {
    /// States in the order entered, 4 bits each, the first in the low bits;
    /// the first one is the state the first traced transition left.
    pub path: u64,
    /// `bpf_ktime_get_ns()` when ESTABLISHED was entered; 0 if never.
    pub established_ns: u64,
    /// When this side's FIN went out (`FIN_WAIT1` or `LAST_ACK` entered); 0 if never.
    pub fin_sent_ns: u64,
    /// When `CLOSE_WAIT` was entered; 0 if never.
    pub close_wait_ns: u64,
    /// Retransmits during the handshake (SYN or SYN-ACK).
    pub syn_retransmits: u16,
    /// Retransmits in ESTABLISHED and `CLOSE_WAIT`. Closing-phase (FIN)
    /// retransmits are sent as events, not counted here.
    pub data_retransmits: u16,
    /// States used in `path`.
    pub path_len: u8,
    pub resets_sent: u8,
    pub resets_received: u8,
    /// 1 when the oldest states fell out of a full `path`.
    pub truncated: u8,
}
const _: () = assert!(core::mem::size_of::<History>() == 40);

impl History {
    pub const EMPTY: Self = Self {
        path: 0,
        established_ns: 0,
        fin_sent_ns: 0,
        close_wait_ns: 0,
        syn_retransmits: 0,
        data_retransmits: 0,
        path_len: 0,
        resets_sent: 0,
        resets_received: 0,
        truncated: 0,
    };

    /// Records the transition `old → new` at `now_ns`. False when `old`
    /// is not the state entered last: the kernel ran no program for a
    /// transition in between (it skips some tracepoint hits in softirq;
    /// see `Counter::TransitionsMissed`). `old` is then appended too, so
    /// the path still holds only states the socket was in, in order.
    #[inline(always)]
    pub fn enter(&mut self, old: i32, new: i32, now_ns: u64) -> bool {
        let missed = !self.catch_up(old);
        self.push(new);
        // The first time of each moment is kept.
        match moment(old, new) {
            Some(Moment::Established) if self.established_ns == 0 => self.established_ns = now_ns,
            Some(Moment::FinSent) if self.fin_sent_ns == 0 => self.fin_sent_ns = now_ns,
            Some(Moment::CloseWait) if self.close_wait_ns == 0 => self.close_wait_ns = now_ns,
            _ => {}
        }
        !missed
    }

    /// The socket is in `state` (what a transition left, or what a
    /// retransmit found): appended when it is not the state entered last.
    /// False when the path held another one, a transition missed.
    #[inline(always)]
    pub fn catch_up(&mut self, state: i32) -> bool {
        if self.path_len == 0 {
            self.push(state);
            return true;
        }
        if self.last_state() == state {
            return true;
        }
        self.push(state);
        false
    }

    /// Appends a state; when the path is full the oldest one falls out
    /// (the closing states matter more than the handshake's).
    #[inline(always)]
    fn push(&mut self, state: i32) {
        let nibble = u64::from(state.cast_unsigned() & 0xf);
        if self.path_len < PATH_CAPACITY {
            self.path |= nibble << (4 * u32::from(self.path_len));
            self.path_len += 1;
        } else {
            self.path = (self.path >> 4) | (nibble << 60);
            self.truncated = 1;
        }
    }

    /// Starts over from `state` once a summary was sent mid-life (at
    /// `CLOSE_WAIT`): the next summary carries only what happened since.
    #[inline(always)]
    pub fn restart(&mut self, state: i32) {
        self.path = u64::from(state.cast_unsigned() & 0xf);
        self.path_len = 1;
        self.truncated = 0;
        self.syn_retransmits = 0;
        self.data_retransmits = 0;
        self.resets_sent = 0;
        self.resets_received = 0;
    }

    /// Counts a retransmit outside the closing phase; false for one in the
    /// closing phase, which the caller sends as an event instead.
    #[inline(always)]
    pub fn count_retransmit(&mut self, state: i32) -> bool {
        if state == 0 {
            // No state recorded yet (a socket first met by this
            // retransmit): the event goes to userspace, which knows more.
            return false;
        }
        match retransmit_phase(state) {
            RetransmitPhase::Handshake => {
                self.syn_retransmits = self.syn_retransmits.saturating_add(1);
                true
            }
            RetransmitPhase::Data => {
                self.data_retransmits = self.data_retransmits.saturating_add(1);
                true
            }
            RetransmitPhase::Fin => false,
        }
    }

    #[inline(always)]
    pub fn count_reset(&mut self, sent: bool) {
        if sent {
            self.resets_sent = self.resets_sent.saturating_add(1);
        } else {
            self.resets_received = self.resets_received.saturating_add(1);
        }
    }

    /// Whether anything was counted since the last summary: retransmits or
    /// resets.
    #[inline(always)]
    #[must_use]
    pub fn has_counts(&self) -> bool {
        self.syn_retransmits != 0
            || self.data_retransmits != 0
            || self.resets_sent != 0
            || self.resets_received != 0
    }

    /// The state entered last, or 0 when nothing was recorded.
    #[inline(always)]
    #[must_use]
    pub fn last_state(&self) -> i32 {
        if self.path_len == 0 {
            return 0;
        }
        ((self.path >> (4 * u32::from(self.path_len - 1))) & 0xf) as i32
    }

    /// The last two states entered, (before last, last): the transition
    /// a summary was sent for. `None` with fewer than two.
    #[must_use]
    pub fn last_transition(&self) -> Option<(i32, i32)> {
        let len = self.path_len.min(PATH_CAPACITY);
        if len < 2 {
            return None;
        }
        let at = |i: u8| ((self.path >> (4 * u32::from(i))) & 0xf) as i32;
        Some((at(len - 2), at(len - 1)))
    }

    /// The states in the order entered (raw numbers; validate before use).
    #[must_use]
    pub fn states(&self) -> impl DoubleEndedIterator<Item = i32> + '_ {
        (0..self.path_len.min(PATH_CAPACITY))
            .map(|i| ((self.path >> (4 * u32::from(i))) & 0xf) as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::raw::*;

    #[test]
    fn records_path_and_moments() {
        let mut h = History::EMPTY;
        h.enter(CLOSE, SYN_SENT, 10);
        h.enter(SYN_SENT, ESTABLISHED, 20);
        h.enter(ESTABLISHED, FIN_WAIT1, 30);
        h.enter(FIN_WAIT1, FIN_WAIT2, 40);
        h.enter(FIN_WAIT2, CLOSE, 50);
        let mut states = [0; 6];
        for (slot, state) in states.iter_mut().zip(h.states()) {
            *slot = state;
        }
        assert_eq!(
            states,
            [CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE]
        );
        assert_eq!(h.states().count(), 6);
        assert_eq!(
            (h.established_ns, h.fin_sent_ns, h.close_wait_ns),
            (20, 30, 0)
        );
        assert_eq!(h.truncated, 0);
        assert_eq!(h.last_state(), CLOSE);
        assert_eq!(h.last_transition(), Some((FIN_WAIT2, CLOSE)));
    }

    #[test]
    fn a_long_path_keeps_its_latest_states() {
        let mut h = History::EMPTY;
        h.enter(CLOSE, SYN_SENT, 1);
        for i in 0..20 {
            let (old, new) = if i % 2 == 0 {
                (SYN_SENT, ESTABLISHED)
            } else {
                (ESTABLISHED, SYN_SENT)
            };
            h.enter(old, new, i);
        }
        h.enter(SYN_SENT, CLOSE, 99);
        assert_eq!(h.states().count(), usize::from(PATH_CAPACITY));
        assert_eq!(h.truncated, 1);
        assert_eq!(h.states().last(), Some(CLOSE));
        // 23 states entered: the first 7 fell out, the 8th (a SYN_SENT) leads.
        assert_eq!(h.states().next(), Some(SYN_SENT));
        assert_eq!(h.last_state(), CLOSE);
        assert_eq!(h.last_transition(), Some((SYN_SENT, CLOSE)));
    }

    #[test]
    fn restart_keeps_only_the_current_state() {
        let mut h = History::EMPTY;
        h.enter(LISTEN, SYN_RECV, 1);
        h.count_retransmit(SYN_RECV);
        h.enter(SYN_RECV, ESTABLISHED, 2);
        h.enter(ESTABLISHED, CLOSE_WAIT, 3);
        h.restart(CLOSE_WAIT);
        assert_eq!(h.last_transition(), None, "one state is no transition");
        h.enter(CLOSE_WAIT, LAST_ACK, 4);
        assert_eq!(h.states().count(), 2);
        assert_eq!(h.last_transition(), Some((CLOSE_WAIT, LAST_ACK)));
        assert_eq!(
            (h.syn_retransmits, h.established_ns, h.close_wait_ns),
            (0, 2, 3)
        );
    }

    #[test]
    fn a_transition_the_kernel_missed_is_told_and_its_state_kept() {
        let mut h = History::EMPTY;
        assert!(
            h.enter(CLOSE, SYN_SENT, 1),
            "a first transition misses nothing"
        );
        // SYN_SENT -> ESTABLISHED was never seen.
        assert!(!h.enter(ESTABLISHED, FIN_WAIT1, 2));
        let mut states = [0; 4];
        for (slot, state) in states.iter_mut().zip(h.states()) {
            *slot = state;
        }
        assert_eq!(h.states().count(), 4);
        assert_eq!(states, [CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1]);
        assert!(h.enter(FIN_WAIT1, FIN_WAIT2, 3));
    }

    #[test]
    fn a_retransmit_tells_a_missed_transition_once() {
        let mut h = History::EMPTY;
        h.enter(CLOSE, SYN_SENT, 1);
        assert!(h.catch_up(SYN_SENT), "where the path left it");
        // SYN_SENT -> ESTABLISHED was never seen; a data retransmit finds
        // the socket ESTABLISHED, and counts as data.
        assert!(!h.catch_up(ESTABLISHED));
        assert!(h.count_retransmit(h.last_state()));
        assert_eq!((h.syn_retransmits, h.data_retransmits), (0, 1));
        // The next transition leaves the state the retransmit told.
        assert!(h.enter(ESTABLISHED, FIN_WAIT1, 2));
        assert_eq!(h.states().count(), 4);
    }

    #[test]
    fn closing_phase_retransmits_are_not_counted() {
        let mut h = History::EMPTY;
        assert!(h.count_retransmit(SYN_SENT));
        assert!(h.count_retransmit(ESTABLISHED));
        assert!(!h.count_retransmit(FIN_WAIT1));
        assert!(!h.count_retransmit(LAST_ACK));
        assert_eq!((h.syn_retransmits, h.data_retransmits), (1, 1));
    }
}
