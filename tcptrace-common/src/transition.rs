//! The TCP transition vocabulary: what each state change means, for the
//! kernel programs (which apply it to raw state numbers) and for every
//! userspace module (through the typed methods on [`TcpState`]). No other
//! copy of these rules exists; docs/ARCHITECTURE.md explains them.
//!
//! Only transitions made inside a system call of the acting process may
//! name it; packet-driven transitions run in softirq, where "current" is
//! whoever happened to be interrupted.
#![expect(
    clippy::inline_always,
    reason = "called from the kernel programs, which keep every helper inline (no BPF-to-BPF calls)"
)]

use crate::state::{
    raw::{
        CLOSE, CLOSE_WAIT, CLOSING, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, LAST_ACK, LISTEN, SYN_RECV,
        SYN_SENT,
    },
    TcpState,
};

/// How a socket came to be, told by its first transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Birth {
    /// `connect()`: `CLOSE`→`SYN_SENT`.
    Active,
    /// `listen()`: `CLOSE`→`LISTEN`.
    Listener,
    /// A connection a listener accepted: `LISTEN`→`SYN_RECV`.
    Passive,
}

/// Which socket a transition is born, if it is a birth.
#[inline(always)]
#[must_use]
pub const fn birth(old: i32, new: i32) -> Option<Birth> {
    match (old, new) {
        (CLOSE, SYN_SENT) => Some(Birth::Active),
        (CLOSE, LISTEN) => Some(Birth::Listener),
        (LISTEN, SYN_RECV) => Some(Birth::Passive),
        _ => None,
    }
}

/// Our FIN leaves: `close()` or `shutdown()` of an open connection, before
/// (`FIN_WAIT1`) or after (`LAST_ACK`) the peer's.
#[inline(always)]
#[must_use]
pub const fn sends_fin(old: i32, new: i32) -> bool {
    matches!(
        (old, new),
        (ESTABLISHED | SYN_RECV, FIN_WAIT1) | (CLOSE_WAIT, LAST_ACK)
    )
}

/// A `connect()` completed its handshake: the time spent in `SYN_SENT`
/// is the connect latency.
#[inline(always)]
#[must_use]
pub const fn connect_completed(old: i32, new: i32) -> bool {
    old == SYN_SENT && new == ESTABLISHED
}

/// A `connect()` failed: the socket closed from `SYN_SENT` (refused,
/// timed out, unreachable, or abandoned by its owner).
#[inline(always)]
#[must_use]
pub const fn connect_failed(old: i32, new: i32) -> bool {
    old == SYN_SENT && new == CLOSE
}

/// The socket hands its connection over to a timewait socket, which holds
/// the port for 60 s (when it closes without an error): `TIME_WAIT`, or
/// `FIN_WAIT2` when the peer has not sent its FIN yet (an orphan after
/// `close()`; `sock_diag` lists those as `FIN_WAIT2`). No tracepoint tells
/// the two apart, nor fires when one turns into the other.
#[inline(always)]
#[must_use]
pub const fn hands_over_to_timewait(old: i32, new: i32) -> bool {
    matches!(old, FIN_WAIT2 | CLOSING) && new == CLOSE
}

/// A close call that takes the socket straight to CLOSE from one of these
/// states aborts the connection: the kernel sends a reset right after the
/// transition (`tcp_disconnect`'s `tcp_need_reset`, `close()` with unread
/// data, `SO_LINGER` 0). From `CLOSING` or `LAST_ACK`, `tcp_disconnect`
/// sends one only when data it was asked to send never left:
/// `has_unsent_data` is asked then. Not `tcp_abort` (`ss -K`, `sock_diag`'s
/// destroy, `bpf_sock_destroy`): it sends its reset before the CLOSE,
/// where it is counted like any other, and writes `ECONNABORTED` to
/// `sk_err` before the transition; a close call's own CLOSE comes before
/// any error it writes.
#[inline(always)]
#[must_use]
pub fn close_sends_reset(
    old: i32,
    new: i32,
    sk_err: i32,
    has_unsent_data: impl FnOnce() -> bool,
) -> bool {
    new == CLOSE
        && sk_err != ECONNABORTED
        && match old {
            ESTABLISHED | CLOSE_WAIT | FIN_WAIT1 | FIN_WAIT2 | SYN_RECV => true,
            CLOSING | LAST_ACK => has_unsent_data(),
            _ => false,
        }
}

/// A reset that answers no packet (`tcp_send_active_reset`) from a socket
/// already in CLOSE is the one its close call sent right after the
/// transition, which that CLOSE record counted (`close_sends_reset`, the
/// same kernel paths). Every other reset is counted where it is seen:
/// aborts send theirs before the CLOSE, and answers to packets have one.
#[inline(always)]
#[must_use]
pub const fn reset_follows_close(answers_packet: bool, state: i32) -> bool {
    !answers_packet && state == CLOSE
}

/// The moments of a life the kernel keeps in summary mode (and the socket
/// table keeps for every socket), marked by entering a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// The handshake completed.
    Established,
    /// Our FIN left (`FIN_WAIT1` or `LAST_ACK`).
    FinSent,
    /// The peer's FIN arrived first.
    CloseWait,
}

/// The moment entering `new` from `old` marks, if any.
#[inline(always)]
#[must_use]
pub const fn moment(old: i32, new: i32) -> Option<Moment> {
    match new {
        ESTABLISHED if old != ESTABLISHED => Some(Moment::Established),
        FIN_WAIT1 | LAST_ACK if old != new => Some(Moment::FinSent),
        CLOSE_WAIT if old != CLOSE_WAIT => Some(Moment::CloseWait),
        _ => None,
    }
}

/// What a retransmitted segment was, told by the state it left in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RetransmitPhase {
    /// A SYN or SYN-ACK: the handshake.
    Handshake,
    /// Data of an open connection.
    Data,
    /// Our FIN (or data queued before it), unacknowledged.
    Fin,
}

impl RetransmitPhase {
    pub const ALL: [Self; 3] = [Self::Handshake, Self::Data, Self::Fin];
}

/// The phase of a retransmit made in `state`.
#[inline(always)]
#[must_use]
pub const fn retransmit_phase(state: i32) -> RetransmitPhase {
    match state {
        SYN_SENT | SYN_RECV => RetransmitPhase::Handshake,
        FIN_WAIT1 | CLOSING | LAST_ACK => RetransmitPhase::Fin,
        _ => RetransmitPhase::Data,
    }
}

/// Which side ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum Side {
    /// This host: our FIN or RST went first.
    Local,
    /// The peer: its FIN or RST arrived first.
    Peer,
}

/// The side a transition shows closing first, if it shows one. `in_syscall`:
/// the transition was made by a system call (a `CLOSE` then is an abort of
/// ours: `SO_LINGER` 0 or unread data, not a failed `connect()`).
#[must_use]
pub const fn closing_side(old: i32, new: i32, in_syscall: bool) -> Option<Side> {
    match (old, new) {
        (_, FIN_WAIT1) if old != FIN_WAIT1 => Some(Side::Local),
        (_, CLOSE_WAIT) => Some(Side::Peer),
        (ESTABLISHED | CLOSE_WAIT, CLOSE) if in_syscall => Some(Side::Local),
        _ => None,
    }
}

/// Summary mode sends a record on entering `new` while the socket lives only
/// for a listener appearing: its `listen()` call site names every
/// connection it accepts. Everything else waits for the end (`CLOSE`). A
/// peer's FIN (`CLOSE_WAIT`, where leaks start) is not sent either: most
/// servers close within microseconds. The socket is listed in the
/// `CLOSE_WAITING` map instead, where userspace finds the ones that linger
/// (`close_wait_listed`); only when that map is full is it sent, as before.
#[inline(always)]
#[must_use]
pub const fn summary_sent_on(new: i32) -> bool {
    matches!(new, CLOSE | LISTEN)
}

/// Summary mode: whether this transition lists the socket in the
/// `CLOSE_WAITING` map (entering `CLOSE_WAIT`) or takes it off (leaving).
#[inline(always)]
#[must_use]
pub const fn close_wait_listed(old: i32, new: i32) -> Option<bool> {
    match (old, new) {
        (CLOSE_WAIT, CLOSE_WAIT) => None,
        (_, CLOSE_WAIT) => Some(true),
        (CLOSE_WAIT, _) => Some(false),
        _ => None,
    }
}

/// `sk->sk_err` values (errno) that say why a socket is ending.
pub const EPIPE: i32 = 32;
pub const ECONNABORTED: i32 = 103;
pub const ECONNRESET: i32 = 104;
pub const ECONNREFUSED: i32 = 111;

/// Whether a socket entering CLOSE with this `sk_err` is ending of a reset
/// the peer sent: `tcp_reset` writes ECONNREFUSED (in `SYN_SENT`), EPIPE
/// (in `CLOSE_WAIT`) or ECONNRESET right before its `tcp_done`, whatever
/// context it runs in (softirq, or a system call's backlog processing).
/// Two cases are counted with it, as the kernel's `tcp_receive_reset`
/// tracepoint does: an ICMP refusal of a handshake (ECONNREFUSED too), and
/// data arriving after our close, which `tcp_reset` aborts on
/// (`TCPAbortOnData`). A close call's own CLOSE comes before any error it
/// writes (`tcp_disconnect`), and an abort writes ECONNABORTED.
#[inline(always)]
#[must_use]
pub const fn ended_by_peer_reset(sk_err: i32) -> bool {
    matches!(sk_err, ECONNRESET | EPIPE | ECONNREFUSED)
}

/// Who a state change may be attributed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribution {
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
#[must_use]
pub const fn classify(old: i32, new: i32, in_syscall: bool, peer_reset: bool) -> Attribution {
    match birth(old, new) {
        Some(Birth::Passive) => Attribution::PassiveChild,
        _ if !in_syscall || !depends_on_context(old, new) => Attribution::Other,
        Some(Birth::Active | Birth::Listener) => Attribution::Birth,
        // An abort (SO_LINGER 0, unread data, close() during the handshake,
        // connect() giving up) — unless the peer's RST caused it.
        None if new == CLOSE && peer_reset => Attribution::Other,
        None => Attribution::CloseCall,
    }
}

/// The transitions a system call can make, whose attribution depends on
/// whether one is running: `connect()`/`listen()` (births) and `close()`,
/// `shutdown()` or an abort (close calls). For the others the kernel
/// programs need not find out (reading `preempt_count` costs three reads).
#[inline(always)]
#[must_use]
pub const fn depends_on_context(old: i32, new: i32) -> bool {
    made_in_system_call_only(old, new) || sends_fin(old, new) || new == CLOSE
}

/// Whether a summary (the daemon) must know the context of this
/// transition: `depends_on_context`, except for a CLOSE a peer's reset
/// caused, which is nobody's close call in either context (`classify`).
/// Its record then says softirq even when the reset was processed from a
/// system call's backlog; what reads that flag of a summary's CLOSE (the
/// closing side, a failed connect's `by_caller`) has decided by then: the
/// reset it counts is unfolded before the CLOSE and sets the peer as the
/// closing side, and a failed connect with an error is counted by it.
#[inline(always)]
#[must_use]
pub const fn summary_depends_on_context(old: i32, new: i32, peer_reset: bool) -> bool {
    depends_on_context(old, new) && !(new == CLOSE && peer_reset)
}

/// Births only `connect()` and `listen()` make (`tcp_v4_connect` and
/// `inet_csk_listen_start`, called by those system calls, by the kernel's
/// own clients from their threads, and by nothing in softirq): a task is
/// always acting, and the programs need not read `preempt_count` to know.
#[inline(always)]
#[must_use]
pub const fn made_in_system_call_only(old: i32, new: i32) -> bool {
    matches!(birth(old, new), Some(Birth::Active | Birth::Listener))
}

/// The same rules on validated states, for userspace.
impl TcpState {
    /// The kernel's number for this state.
    #[must_use]
    pub const fn raw(self) -> i32 {
        self as i32
    }

    /// See [`birth`].
    #[must_use]
    pub const fn birth(old: Self, new: Self) -> Option<Birth> {
        birth(old.raw(), new.raw())
    }

    /// See [`sends_fin`].
    #[must_use]
    pub const fn sends_fin(old: Self, new: Self) -> bool {
        sends_fin(old.raw(), new.raw())
    }

    /// See [`moment`].
    #[must_use]
    pub const fn moment(old: Self, new: Self) -> Option<Moment> {
        moment(old.raw(), new.raw())
    }

    /// See [`connect_completed`].
    #[must_use]
    pub const fn connect_completed(old: Self, new: Self) -> bool {
        connect_completed(old.raw(), new.raw())
    }

    /// See [`connect_failed`].
    #[must_use]
    pub const fn connect_failed(old: Self, new: Self) -> bool {
        connect_failed(old.raw(), new.raw())
    }

    /// See [`hands_over_to_timewait`].
    #[must_use]
    pub const fn hands_over_to_timewait(old: Self, new: Self) -> bool {
        hands_over_to_timewait(old.raw(), new.raw())
    }

    /// See [`closing_side`].
    #[must_use]
    pub const fn closing_side(old: Self, new: Self, in_syscall: bool) -> Option<Side> {
        closing_side(old.raw(), new.raw(), in_syscall)
    }

    /// See [`retransmit_phase`].
    #[must_use]
    pub const fn retransmit_phase(self) -> RetransmitPhase {
        retransmit_phase(self.raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connect_and_listen_births_are_known_to_be_in_a_system_call() {
        assert!(made_in_system_call_only(CLOSE, SYN_SENT));
        assert!(made_in_system_call_only(CLOSE, LISTEN));
        // A passive child is born in the softirq that takes the ACK.
        assert!(!made_in_system_call_only(LISTEN, SYN_RECV));
        // Closes happen in both contexts.
        assert!(!made_in_system_call_only(ESTABLISHED, CLOSE));
        assert!(!made_in_system_call_only(ESTABLISHED, FIN_WAIT1));
        // Each is among the transitions whose role depends on the context.
        assert!(depends_on_context(CLOSE, SYN_SENT) && depends_on_context(CLOSE, LISTEN));
    }

    #[test]
    fn a_summary_needs_no_context_for_a_close_by_the_peers_reset() {
        // Whatever the context, the role is the same.
        for in_syscall in [false, true] {
            assert_eq!(
                classify(ESTABLISHED, CLOSE, in_syscall, true),
                Attribution::Other
            );
        }
        assert!(!summary_depends_on_context(ESTABLISHED, CLOSE, true));
        assert!(!summary_depends_on_context(SYN_SENT, CLOSE, true));
        // A close call's abort, and the moments a peer's reset cannot make.
        assert!(summary_depends_on_context(ESTABLISHED, CLOSE, false));
        assert!(summary_depends_on_context(ESTABLISHED, FIN_WAIT1, true));
        assert!(summary_depends_on_context(CLOSE, SYN_SENT, true));
        assert!(!summary_depends_on_context(SYN_SENT, ESTABLISHED, false));
    }

    /// Applies `classify` along a sequence of `(old, new, in_syscall)` and
    /// returns the roles, as the kernel program would see them.
    fn roles(sequence: &[(i32, i32, bool)]) -> [Attribution; 8] {
        let mut out = [Attribution::Other; 8];
        for (i, &(old, new, syscall)) in sequence.iter().enumerate() {
            out[i] = classify(old, new, syscall, false);
        }
        out
    }

    #[test]
    fn connect_outcomes_and_the_timewait_hand_over() {
        assert!(connect_completed(SYN_SENT, ESTABLISHED));
        assert!(!connect_completed(SYN_RECV, ESTABLISHED), "an accept");
        assert!(connect_failed(SYN_SENT, CLOSE));
        assert!(!connect_failed(ESTABLISHED, CLOSE));
        assert!(hands_over_to_timewait(FIN_WAIT2, CLOSE));
        assert!(hands_over_to_timewait(CLOSING, CLOSE));
        assert!(!hands_over_to_timewait(LAST_ACK, CLOSE), "the passive side");
        let never_asked = || -> bool { panic!("only CLOSING and LAST_ACK depend on unsent data") };
        assert!(close_sends_reset(ESTABLISHED, CLOSE, 0, never_asked));
        assert!(close_sends_reset(CLOSE_WAIT, CLOSE, 0, never_asked));
        assert!(
            !close_sends_reset(SYN_SENT, CLOSE, 0, never_asked),
            "a connect abandoned"
        );
        assert!(!close_sends_reset(LAST_ACK, CLOSE, 0, || false));
        assert!(
            close_sends_reset(LAST_ACK, CLOSE, 0, || true),
            "disconnect with data"
        );
        assert!(close_sends_reset(CLOSING, CLOSE, 0, || true));
        assert!(
            !close_sends_reset(ESTABLISHED, CLOSE, ECONNABORTED, never_asked),
            "ss -K: tcp_abort's reset came before the CLOSE"
        );
        assert!(reset_follows_close(false, CLOSE));
        assert!(!reset_follows_close(true, CLOSE), "an answer to a packet");
        assert!(
            !reset_follows_close(false, ESTABLISHED),
            "an abort: its reset comes before the CLOSE"
        );
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
                Attribution::Birth,
                Attribution::Other,
                Attribution::CloseCall,
                Attribution::Other,
                Attribution::Other
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
                Attribution::PassiveChild,
                Attribution::Other,
                Attribution::Other,
                Attribution::CloseCall,
                Attribution::Other
            ]
        );
    }

    #[test]
    fn softirq_never_names_the_current_task() {
        for old in 1..=12 {
            for new in 1..=12 {
                let role = classify(old, new, false, false);
                assert!(
                    matches!(role, Attribution::Other | Attribution::PassiveChild),
                    "{old}->{new}: {role:?}"
                );
            }
        }
    }

    #[test]
    fn births_fins_and_moments() {
        assert_eq!(birth(CLOSE, SYN_SENT), Some(Birth::Active));
        assert_eq!(birth(CLOSE, LISTEN), Some(Birth::Listener));
        assert_eq!(birth(LISTEN, SYN_RECV), Some(Birth::Passive));
        assert_eq!(birth(SYN_SENT, ESTABLISHED), None);
        assert!(sends_fin(ESTABLISHED, FIN_WAIT1) && sends_fin(CLOSE_WAIT, LAST_ACK));
        assert!(!sends_fin(FIN_WAIT1, FIN_WAIT2));
        assert_eq!(moment(SYN_SENT, ESTABLISHED), Some(Moment::Established));
        assert_eq!(moment(ESTABLISHED, ESTABLISHED), None);
        assert_eq!(moment(CLOSE_WAIT, LAST_ACK), Some(Moment::FinSent));
        assert_eq!(retransmit_phase(SYN_RECV), RetransmitPhase::Handshake);
        assert_eq!(retransmit_phase(LAST_ACK), RetransmitPhase::Fin);
        assert_eq!(retransmit_phase(CLOSE_WAIT), RetransmitPhase::Data);
        assert_eq!(closing_side(ESTABLISHED, CLOSE, true), Some(Side::Local));
        assert_eq!(closing_side(SYN_SENT, CLOSE, true), None);
        assert_eq!(
            closing_side(ESTABLISHED, CLOSE_WAIT, false),
            Some(Side::Peer)
        );
    }

    #[test]
    fn peer_reset_in_backlog_is_not_a_close_call() {
        // An RST processed from the socket backlog runs in the owner's
        // syscall, but the peer closed the connection.
        assert_eq!(classify(ESTABLISHED, CLOSE, true, true), Attribution::Other);
        assert_eq!(
            classify(ESTABLISHED, CLOSE, true, false),
            Attribution::CloseCall
        );
        assert_eq!(
            classify(SYN_SENT, CLOSE, true, false),
            Attribution::CloseCall
        );
        assert_eq!(classify(LISTEN, CLOSE, true, false), Attribution::CloseCall);
    }
}
