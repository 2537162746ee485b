//! Attribution rules, shared by the kernel programs (which apply them) and
//! userspace (which tests them on synthetic sequences).
//!
//! Only transitions made inside a system call of the acting process may
//! name it; packet-driven transitions run in softirq, where "current" is
//! whoever happened to be interrupted.

use crate::state::raw::{
    CLOSE, CLOSE_WAIT, ESTABLISHED, FIN_WAIT1, LAST_ACK, LISTEN, SYN_RECV, SYN_SENT,
};

/// What a state change means for the socket's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `connect()` or `listen()`: the current task becomes the owner.
    Birth,
    /// A passive child (`LISTEN`→`SYN_RECV`): the listener's owner is inherited.
    PassiveChild,
    /// `close()`, `shutdown()` or an abort: the current task is the closer.
    CloseCall,
    /// Anything else: attributed through the records only.
    Other,
}

/// Classifies a transition. `in_syscall` is false in softirq; `peer_reset`
/// is true when the peer's RST was just processed for this socket.
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "called from the kernel programs, which keep every helper inline (no BPF-to-BPF calls)"
)]
#[must_use]
pub const fn classify(old: i32, new: i32, in_syscall: bool, peer_reset: bool) -> Role {
    if old == LISTEN && new == SYN_RECV {
        return Role::PassiveChild;
    }
    if !in_syscall || !depends_on_context(old, new) {
        return Role::Other;
    }
    match (old, new) {
        (CLOSE, SYN_SENT | LISTEN) => Role::Birth,
        // An abort (SO_LINGER 0, unread data, close() during the handshake,
        // connect() giving up) — unless the peer's RST caused it.
        (_, CLOSE) if peer_reset => Role::Other,
        _ => Role::CloseCall,
    }
}

/// The transitions a system call can make, whose role depends on whether
/// one is running: `connect()`/`listen()` (births) and `close()`,
/// `shutdown()` or an abort (close calls). For the others the kernel
/// programs need not find out (reading `preempt_count` costs three reads).
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "called from the kernel programs, which keep every helper inline (no BPF-to-BPF calls)"
)]
#[must_use]
pub const fn depends_on_context(old: i32, new: i32) -> bool {
    matches!(
        (old, new),
        (CLOSE, SYN_SENT | LISTEN)
            | (ESTABLISHED | SYN_RECV, FIN_WAIT1)
            | (CLOSE_WAIT, LAST_ACK)
            | (_, CLOSE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::raw::*;

    /// Applies `classify` along a sequence of `(old, new, in_syscall)` and
    /// returns the roles, as the kernel program would see them.
    fn roles(sequence: &[(i32, i32, bool)]) -> [Role; 8] {
        let mut out = [Role::Other; 8];
        for (i, &(old, new, syscall)) in sequence.iter().enumerate() {
            out[i] = classify(old, new, syscall, false);
        }
        out
    }

    #[test]
    fn active_open_and_close() {
        let r = roles(&[
            (CLOSE, SYN_SENT, true),        // connect()
            (SYN_SENT, ESTABLISHED, false), // SYN-ACK in softirq
            (ESTABLISHED, FIN_WAIT1, true), // close()
            (FIN_WAIT1, FIN_WAIT2, false),  // ACK of FIN
            (FIN_WAIT2, CLOSE, false),      // FIN: TIME_WAIT takes over
        ]);
        assert_eq!(
            &r[..5],
            &[
                Role::Birth,
                Role::Other,
                Role::CloseCall,
                Role::Other,
                Role::Other
            ]
        );
    }

    #[test]
    fn passive_open_and_close_after_eof() {
        let r = roles(&[
            (LISTEN, SYN_RECV, false), // SYN in softirq: inherit listener
            (SYN_RECV, ESTABLISHED, false),
            (ESTABLISHED, CLOSE_WAIT, false), // peer FIN
            (CLOSE_WAIT, LAST_ACK, true),     // close()
            (LAST_ACK, CLOSE, false),         // ACK of our FIN
        ]);
        assert_eq!(
            &r[..5],
            &[
                Role::PassiveChild,
                Role::Other,
                Role::Other,
                Role::CloseCall,
                Role::Other
            ]
        );
    }

    #[test]
    fn softirq_never_names_the_current_task() {
        for old in 1..=12 {
            for new in 1..=12 {
                let role = classify(old, new, false, false);
                assert!(
                    matches!(role, Role::Other | Role::PassiveChild),
                    "{old}->{new}: {role:?}"
                );
            }
        }
    }

    #[test]
    fn peer_reset_in_backlog_is_not_a_close_call() {
        // An RST processed from the socket backlog runs in the owner's
        // syscall, but the peer closed the connection.
        assert_eq!(classify(ESTABLISHED, CLOSE, true, true), Role::Other);
        assert_eq!(classify(ESTABLISHED, CLOSE, true, false), Role::CloseCall);
        assert_eq!(classify(SYN_SENT, CLOSE, true, false), Role::CloseCall);
        assert_eq!(classify(LISTEN, CLOSE, true, false), Role::CloseCall);
    }
}
