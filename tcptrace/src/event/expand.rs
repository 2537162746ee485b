//! Summary records (daemon mode) unfolded into the events they stand for,
//! so the socket table and the diagnoses see the same sequence whichever
//! mode the kernel ran in; and the resets an every-event CLOSE stands
//! for (received before it, sent by its close call after it).
//!
//! The kernel keeps the states a socket went through and the moments that
//! matter (birth, ESTABLISHED, our FIN, `CLOSE_WAIT`, the last transition);
//! a transition between them takes the time of the one before. Actors are
//! known for the birth (the owner), the first close call (the closer) and
//! the last transition (the record's own context). A read that returned
//! end-of-file in `CLOSE_WAIT` is kept by the kernel with the socket
//! (`EOF_READ_KEPT`) and replayed here, before the socket leaves
//! `CLOSE_WAIT`, as the `EofRead` an every-event session gets.

use tcptrace_common::{
    history::PATH_CAPACITY, transition::ended_by_peer_reset, Moment, RetransmitPhase, TcpState,
    CLOSER_KNOWN, EOF_READ_KEPT, OWNER_FROM_SYSCALL, RESET_BY_CLOSE,
};

use super::{TcpEvent, TcpEventKind};

/// The reset received that an every-event CLOSE record stands for. Where
/// BTF gives `sk_err`, no program runs on `tcp_receive_reset`: the CLOSE's
/// error tells (`transition::ended_by_peer_reset`), and the reset is
/// placed here, at the CLOSE's time and before it, as a summary's are.
/// Without BTF the error is unknown and the kernel sends the reset's own
/// record.
#[must_use]
pub fn reset_received_before(close: &TcpEvent) -> Option<TcpEvent> {
    let TcpEventKind::StateChange {
        new: TcpState::Close,
        ..
    } = close.what
    else {
        return None;
    };
    close.error.filter(|&err| ended_by_peer_reset(err))?;
    Some(TcpEvent {
        what: TcpEventKind::ResetReceived,
        actor: None,
        in_state_ns: None,
        error: None,
        peer_silent_ns: None,
        ..*close
    })
}

/// The reset sent that an every-event CLOSE record stands for: an
/// abortive close (`SO_LINGER` 0, unread data) sends it right after the
/// CLOSE, which announced it (`RESET_BY_CLOSE`) and counted it. The kernel
/// sends no record of its own for it (its program only checks the
/// announcement); it is shown here, at the CLOSE's time and after it,
/// with the socket's owner and closer and the close call as its actor.
#[must_use]
pub fn reset_sent_after(close: &TcpEvent) -> Option<TcpEvent> {
    let TcpEventKind::StateChange {
        new: TcpState::Close,
        ..
    } = close.what
    else {
        return None;
    };
    if close.summary || close.sock.flags & RESET_BY_CLOSE == 0 {
        return None;
    }
    Some(TcpEvent {
        what: TcpEventKind::ResetSent {
            state: Some(TcpState::Close),
            by_close: true,
        },
        in_state_ns: None,
        error: None,
        peer_silent_ns: None,
        ..*close
    })
}

/// True when `summary` unfolds into a socket's whole life: a birth first
/// (its path not truncated) and a CLOSE last.
#[must_use]
pub fn tells_whole_life(summary: &TcpEvent) -> bool {
    let history = &summary.sock.history;
    let mut states = history.states();
    let born = match (states.next(), states.next()) {
        (Some(old), Some(new)) => TcpState::from_raw(old)
            .zip(TcpState::from_raw(new))
            .is_some_and(|(old, new)| TcpState::birth(old, new).is_some()),
        _ => false,
    };
    born && history.truncated == 0
        && matches!(
            summary.what,
            TcpEventKind::StateChange {
                new: TcpState::Close,
                ..
            }
        )
}

/// Calls `each` with every event `summary` stands for, oldest first; the
/// last one is the summary's own transition (or the end-of-file read kept
/// in a `CLOSE_WAIT` the summary ends in). Allocates nothing.
pub fn expand(summary: &TcpEvent, mut each: impl FnMut(&TcpEvent)) {
    let mut eof_read = KeptEofRead::of(summary);
    unfold_path(summary, &mut eof_read, &mut each);
    eof_read.replay(&mut each);
}

/// The end-of-file read a summary carries (`EOF_READ_KEPT`), until
/// replayed: before the first transition out of `CLOSE_WAIT`, or else after
/// everything the summary unfolds into.
struct KeptEofRead<'a> {
    summary: Option<&'a TcpEvent>,
}

impl<'a> KeptEofRead<'a> {
    fn of(summary: &'a TcpEvent) -> Self {
        Self {
            summary: (summary.sock.flags & EOF_READ_KEPT != 0).then_some(summary),
        }
    }

    /// Replays the read (once), by its reader, at its time.
    fn replay(&mut self, each: &mut impl FnMut(&TcpEvent)) {
        let Some(summary) = self.summary.take() else {
            return;
        };
        let sock = &summary.sock;
        each(&TcpEvent {
            what: TcpEventKind::EofRead,
            ts_ns: sock.eof_read_ns,
            actor: sock.eof_reader.is_known().then_some(sock.eof_reader),
            in_state_ns: None,
            error: None,
            peer_silent_ns: None,
            summary: false,
            ..*summary
        });
    }

    /// Replays the read if `old` is the `CLOSE_WAIT` it happened in.
    fn before_leaving(&mut self, old: TcpState, each: &mut impl FnMut(&TcpEvent)) {
        if old == TcpState::CloseWait {
            self.replay(each);
        }
    }
}

fn unfold_path(summary: &TcpEvent, eof_read: &mut KeptEofRead, mut each: impl FnMut(&TcpEvent)) {
    let history = &summary.sock.history;
    let mut states = [TcpState::Close; PATH_CAPACITY as usize];
    let mut len = 0;
    for raw in history.states() {
        // The decoder checked the last two; an invalid state earlier on
        // ends the path there (only what follows it is replayed).
        match TcpState::from_raw(raw) {
            Some(state) => {
                states[len] = state;
                len += 1;
            }
            None => len = 0,
        }
    }
    if let (1, TcpEventKind::Retransmit { state: Some(state) }) = (len, summary.what) {
        replay_counts(summary, state, &mut each);
        return;
    }
    if len < 2 {
        each(summary);
        return;
    }
    let sock = &summary.sock;
    let retransmit = |state| TcpEventKind::Retransmit { state: Some(state) };
    let mut event = TcpEvent {
        actor: None,
        in_state_ns: None,
        error: None,
        peer_silent_ns: None,
        summary: false,
        ..*summary
    };
    let mut previous_ns = (sock.created_ns != 0).then_some(sock.created_ns);
    let mut closer_named = false;
    let mut data_retransmits_replayed = false;
    let last = len - 2;
    // SYN retransmits follow the birth, data ones ESTABLISHED. A path
    // that starts after the birth (a summary was sent before: a life so
    // far, or at CLOSE_WAIT) had them in its first state, before its
    // first transition, when that state is of their phase.
    if TcpState::birth(states[0], states[1]).is_none() {
        event.ts_ns = previous_ns.unwrap_or(summary.ts_ns);
        let counted = match states[0].retransmit_phase() {
            RetransmitPhase::Handshake => history.syn_retransmits,
            RetransmitPhase::Data => {
                data_retransmits_replayed = true;
                history.data_retransmits
            }
            RetransmitPhase::Fin => 0,
        };
        replay(&event, counted.into(), retransmit(states[0]), &mut each);
    }
    // Every transition before the summary's own one.
    for i in 0..last {
        let (old, new) = (states[i], states[i + 1]);
        let birth = i == 0 && TcpState::birth(old, new).is_some();
        // An unrecorded moment takes the time of the transition before.
        let ts_ns = match (moment(summary, old, new, birth), previous_ns) {
            (Some(ts), Some(previous)) => ts.max(previous),
            (Some(ts), None) => ts,
            (None, previous) => previous.unwrap_or(summary.ts_ns),
        };
        event.what = TcpEventKind::StateChange { old, new };
        event.ts_ns = ts_ns;
        event.in_state_ns = previous_ns.map(|p| ts_ns.saturating_sub(p));
        event.actor = if birth && sock.flags & OWNER_FROM_SYSCALL != 0 {
            Some(sock.owner)
        } else if !closer_named && TcpState::sends_fin(old, new) && sock.flags & CLOSER_KNOWN != 0 {
            closer_named = true;
            Some(sock.closer)
        } else {
            None
        };
        eof_read.before_leaving(old, &mut each);
        each(&event);
        previous_ns = Some(ts_ns);
        if birth && new != TcpState::Listen {
            replay(
                &event,
                history.syn_retransmits.into(),
                retransmit(new),
                &mut each,
            );
        }
        if new == TcpState::Established && !data_retransmits_replayed {
            data_retransmits_replayed = true;
            replay(
                &event,
                history.data_retransmits.into(),
                retransmit(new),
                &mut each,
            );
        }
    }

    eof_read.before_leaving(states[last], &mut each);
    own_transition(
        summary,
        &mut event,
        (states[last], states[last + 1]),
        last == 0,
        data_retransmits_replayed,
        &mut each,
    );
}

/// The summary's own transition (`first` when it is the path's first),
/// after what ended the life: data retransmits not placed after an
/// ESTABLISHED on the path (`data_replayed`), then resets. A summary of a
/// life so far (sent mid-life, for its retransmits) may end at its birth
/// or at ESTABLISHED: then the retransmits of the state it entered follow
/// it.
fn own_transition(
    summary: &TcpEvent,
    event: &mut TcpEvent,
    (old, new): (TcpState, TcpState),
    first: bool,
    data_replayed: bool,
    each: &mut impl FnMut(&TcpEvent),
) {
    let (sock, history) = (&summary.sock, &summary.sock.history);
    let retransmit = |state| TcpEventKind::Retransmit { state: Some(state) };
    let own_birth = first && TcpState::birth(old, new).is_some() && new != TcpState::Listen;
    let own_established = new == TcpState::Established;
    event.what = TcpEventKind::StateChange { old, new };
    event.ts_ns = summary.ts_ns;
    event.in_state_ns = summary.in_state_ns;
    event.actor = if own_birth && sock.flags & OWNER_FROM_SYSCALL != 0 {
        Some(sock.owner)
    } else {
        summary.actor
    };
    event.error = summary.error;
    event.peer_silent_ns = summary.peer_silent_ns;
    let syn_retransmits = history.syn_retransmits.into();
    let data_retransmits = history.data_retransmits.into();
    if !own_established && !data_replayed {
        replay(event, data_retransmits, retransmit(old), each);
    }
    replay_resets(event, old, each);
    each(event);
    if own_birth {
        replay(event, syn_retransmits, retransmit(new), each);
    }
    if own_established && !data_replayed {
        replay(event, data_retransmits, retransmit(new), each);
    }
}

/// A summary of a live socket's counts alone (a path of its one current
/// state: see `tcptrace_common::LIVE_COUNTS_EVERY_NS`): the retransmits
/// and resets since its last summary, at the record's time, in `state`.
fn replay_counts(summary: &TcpEvent, state: TcpState, each: &mut impl FnMut(&TcpEvent)) {
    let history = &summary.sock.history;
    let event = TcpEvent {
        summary: false,
        ..*summary
    };
    let retransmits = u32::from(history.syn_retransmits) + u32::from(history.data_retransmits);
    let retransmit = TcpEventKind::Retransmit { state: Some(state) };
    replay(&event, retransmits, retransmit, each);
    replay_resets(&event, state, each);
}

/// The resets a summary counted, sent in `state` and received, at `at`.
fn replay_resets(at: &TcpEvent, state: TcpState, each: &mut impl FnMut(&TcpEvent)) {
    let history = &at.sock.history;
    let sent = TcpEventKind::ResetSent {
        state: Some(state),
        by_close: false,
    };
    replay(at, history.resets_sent.into(), sent, each);
    replay(
        at,
        history.resets_received.into(),
        TcpEventKind::ResetReceived,
        each,
    );
}

/// When the kernel recorded entering `new`, if it did.
fn moment(summary: &TcpEvent, old: TcpState, new: TcpState, birth: bool) -> Option<u64> {
    let h = &summary.sock.history;
    let ns = match TcpState::moment(old, new) {
        _ if birth => summary.sock.created_ns,
        Some(Moment::Established) => h.established_ns,
        Some(Moment::FinSent) => h.fin_sent_ns,
        Some(Moment::CloseWait) => h.close_wait_ns,
        None => 0,
    };
    (ns != 0).then_some(ns)
}

/// `count` events `what` at `at`'s time, by nobody.
fn replay(at: &TcpEvent, count: u32, what: TcpEventKind, each: &mut impl FnMut(&TcpEvent)) {
    // Mostly none: the event (a few hundred bytes) is not copied for them.
    if count == 0 {
        return;
    }
    let event = TcpEvent {
        what,
        actor: None,
        in_state_ns: None,
        error: None,
        peer_silent_ns: None,
        ..*at
    };
    for _ in 0..count {
        each(&event);
    }
}

#[cfg(test)]
mod tests {
    use tcptrace_common::{state::raw, History, SockInfo, Task};

    use super::*;
    use crate::event::synthetic::{task, Conn};

    fn summary(path: &[(i32, i32, u64)], configure: impl FnOnce(&mut SockInfo)) -> TcpEvent {
        let conn = Conn::active(0x1000, Task::NOBODY, "10.0.0.1:40000", "10.0.0.9:80");
        let mut event = conn.state(0, TcpState::FinWait2, TcpState::Close);
        let mut history = History::EMPTY;
        for &(old, new, ts) in path {
            history.enter(old, new, ts);
            event.ts_ns = ts;
        }
        event.sock.history = history;
        event.summary = true;
        configure(&mut event.sock);
        event
    }

    fn unfold(summary: &TcpEvent) -> Vec<(TcpEventKind, u64, Option<u32>)> {
        let mut out = Vec::new();
        expand(summary, |e| {
            out.push((e.what, e.ts_ns, e.actor.map(|a| a.tgid)));
        });
        out
    }

    /// Summaries of a life so far, sent for retransmits mid-life: ended
    /// at the birth, the SYN retransmits follow it; ended at ESTABLISHED,
    /// the data retransmits follow it; the next one, from `SYN_SENT`, has
    /// the SYN retransmits since before its own transition.
    #[test]
    fn a_life_so_far_places_its_retransmits_in_the_states_they_were_sent_in() {
        use raw::*;
        let syn = TcpEventKind::Retransmit {
            state: Some(TcpState::SynSent),
        };
        let data = TcpEventKind::Retransmit {
            state: Some(TcpState::Established),
        };
        let state = |old, new| TcpEventKind::StateChange { old, new };
        let (close, syn_sent, established) =
            (TcpState::Close, TcpState::SynSent, TcpState::Established);

        let connecting = summary(&[(CLOSE, SYN_SENT, 1)], |sock| {
            sock.created_ns = 1;
            sock.history.count_retransmit(SYN_SENT);
            sock.history.count_retransmit(SYN_SENT);
        });
        let kinds = |e: &TcpEvent| unfold(e).into_iter().map(|(k, _, _)| k).collect::<Vec<_>>();
        assert_eq!(kinds(&connecting), [state(close, syn_sent), syn, syn]);

        let open = summary(
            &[(CLOSE, SYN_SENT, 1), (SYN_SENT, ESTABLISHED, 2)],
            |sock| {
                sock.history.count_retransmit(SYN_SENT);
                sock.history.count_retransmit(ESTABLISHED);
            },
        );
        assert_eq!(
            kinds(&open),
            [
                state(close, syn_sent),
                syn,
                state(syn_sent, established),
                data
            ]
        );

        let timed_out = summary(&[(SYN_SENT, CLOSE, 9)], |sock| {
            sock.history.restart(SYN_SENT);
            sock.history.enter(SYN_SENT, CLOSE, 9);
            sock.history.count_retransmit(SYN_SENT);
        });
        assert_eq!(kinds(&timed_out), [syn, state(syn_sent, close)]);

        // Its SYN retransmits come first, in SYN_SENT, whatever followed.
        let later = summary(
            &[(SYN_SENT, ESTABLISHED, 3), (ESTABLISHED, CLOSE, 9)],
            |sock| {
                sock.history.count_retransmit(SYN_SENT);
            },
        );
        assert_eq!(
            kinds(&later),
            [syn, state(syn_sent, established), state(established, close)]
        );

        // After a summary in ESTABLISHED or CLOSE_WAIT, the data
        // retransmits since come first, in the data phase, even when the
        // socket ends from a FIN state.
        let (close_wait, last_ack) = (TcpState::CloseWait, TcpState::LastAck);
        let passive_end = summary(&[(CLOSE_WAIT, LAST_ACK, 3), (LAST_ACK, CLOSE, 9)], |sock| {
            sock.history.count_retransmit(CLOSE_WAIT);
        });
        let in_close_wait = TcpEventKind::Retransmit {
            state: Some(close_wait),
        };
        assert_eq!(
            kinds(&passive_end),
            [
                in_close_wait,
                state(close_wait, last_ack),
                state(last_ack, close)
            ]
        );
    }

    #[test]
    fn a_summary_of_counts_alone_replays_them_in_the_current_state() {
        let mut event = summary(&[(raw::SYN_SENT, raw::ESTABLISHED, 5)], |sock| {
            let history = &mut sock.history;
            history.restart(raw::ESTABLISHED);
            for _ in 0..3 {
                assert!(history.count_retransmit(raw::ESTABLISHED));
            }
            history.count_reset(true);
        });
        // As the decoder gives it: the counts' state, at the record's time.
        event.what = TcpEventKind::Retransmit {
            state: Some(TcpState::Established),
        };
        event.ts_ns = 9;
        let retransmit = TcpEventKind::Retransmit {
            state: Some(TcpState::Established),
        };
        let reset = TcpEventKind::ResetSent {
            state: Some(TcpState::Established),
            by_close: false,
        };
        assert_eq!(
            unfold(&event),
            [
                (retransmit, 9, None),
                (retransmit, 9, None),
                (retransmit, 9, None),
                (reset, 9, None)
            ]
        );
    }

    #[test]
    fn an_every_event_close_stands_for_a_reset_received_when_its_error_is_a_reset() {
        let conn = Conn::active(0x1000, Task::NOBODY, "10.0.0.1:40000", "10.0.0.9:80");
        let close = |old, error| {
            let mut event = conn.state(7, old, TcpState::Close);
            event.error = error;
            event
        };
        let reset = reset_received_before(&close(TcpState::Established, Some(104)))
            .expect("ECONNRESET: the peer's reset");
        assert_eq!(
            (
                reset.what,
                reset.ts_ns,
                reset.skaddr,
                reset.actor,
                reset.error
            ),
            (TcpEventKind::ResetReceived, 7, 0x1000, None, None)
        );
        for (old, error) in [
            (TcpState::CloseWait, Some(32)), // EPIPE
            (TcpState::SynSent, Some(111)),  // ECONNREFUSED
        ] {
            assert!(
                reset_received_before(&close(old, error)).is_some(),
                "{old:?} {error:?}"
            );
        }
        for (old, error) in [
            (TcpState::Established, None),      // a close call, or no BTF
            (TcpState::Established, Some(110)), // ETIMEDOUT
            (TcpState::Established, Some(103)), // ECONNABORTED (an abort)
        ] {
            assert!(
                reset_received_before(&close(old, error)).is_none(),
                "{old:?} {error:?}"
            );
        }
        let mut established = conn.state(7, TcpState::SynSent, TcpState::Established);
        established.error = Some(104);
        assert!(reset_received_before(&established).is_none());
    }

    #[test]
    fn an_every_event_close_that_announced_its_reset_stands_for_it() {
        let owner = task(40, "client", 0);
        let closer = task(41, "worker", 0);
        let conn = Conn::active(0x1000, owner, "10.0.0.1:40000", "10.0.0.9:80");
        let mut close = conn.state(7, TcpState::Established, TcpState::Close);
        close.sock.closer = closer;
        close.actor = Some(closer);
        close.sock.flags |= CLOSER_KNOWN;
        assert!(
            reset_sent_after(&close).is_none(),
            "an orderly or unannounced close"
        );
        close.sock.flags |= RESET_BY_CLOSE;
        let reset = reset_sent_after(&close).expect("announced");
        assert_eq!(
            (reset.what, reset.ts_ns, reset.skaddr, reset.local),
            (
                TcpEventKind::ResetSent {
                    state: Some(TcpState::Close),
                    by_close: true
                },
                7,
                0x1000,
                close.local
            )
        );
        // Sent after the socket's record was gone, it still names the
        // socket's owner and closer, and its close call as the actor.
        assert_eq!(reset.sock.owner.tgid, 40);
        assert_eq!(reset.closer().map(|t| t.tgid), Some(41));
        assert_eq!(reset.actor.map(|t| t.tgid), Some(41));
        // A summary counts the reset with its CLOSE and unfolds none.
        let summary = TcpEvent {
            summary: true,
            ..close
        };
        assert!(reset_sent_after(&summary).is_none());
        let established = TcpEvent {
            what: TcpEventKind::StateChange {
                old: TcpState::SynSent,
                new: TcpState::Established,
            },
            ..close
        };
        assert!(reset_sent_after(&established).is_none());
    }

    #[test]
    fn active_close_unfolds_with_its_moments_and_actors() {
        use raw::*;
        use TcpState::*;
        let s = summary(
            &[
                (CLOSE, SYN_SENT, 100),
                (SYN_SENT, ESTABLISHED, 150),
                (ESTABLISHED, FIN_WAIT1, 400),
                (FIN_WAIT1, FIN_WAIT2, 420),
                (FIN_WAIT2, CLOSE, 450),
            ],
            |sock| {
                sock.created_ns = 100;
                sock.owner = task(7, "client", 0);
                sock.closer = task(7, "client", 0);
                sock.flags = OWNER_FROM_SYSCALL | CLOSER_KNOWN;
                sock.history.syn_retransmits = 1;
            },
        );
        let events = unfold(&s);
        let sc = |old, new| TcpEventKind::StateChange { old, new };
        assert_eq!(
            events,
            vec![
                (sc(Close, SynSent), 100, Some(7)),
                (
                    TcpEventKind::Retransmit {
                        state: Some(SynSent)
                    },
                    100,
                    None
                ),
                (sc(SynSent, Established), 150, None),
                (sc(Established, FinWait1), 400, Some(7)),
                // Not recorded by the kernel: the time of the one before.
                (sc(FinWait1, FinWait2), 400, None),
                (sc(FinWait2, Close), 450, None),
            ]
        );
    }

    #[test]
    fn abort_replays_resets_before_the_last_transition() {
        use raw::*;
        use TcpState::*;
        let s = summary(
            &[
                (LISTEN, SYN_RECV, 10),
                (SYN_RECV, ESTABLISHED, 20),
                (ESTABLISHED, CLOSE, 90),
            ],
            |sock| {
                sock.created_ns = 10;
                sock.history.resets_received = 1;
                sock.history.data_retransmits = 2;
            },
        );
        let kinds: Vec<TcpEventKind> = unfold(&s).into_iter().map(|(w, _, _)| w).collect();
        assert_eq!(
            kinds,
            vec![
                TcpEventKind::StateChange {
                    old: Listen,
                    new: SynRecv
                },
                TcpEventKind::StateChange {
                    old: SynRecv,
                    new: Established
                },
                TcpEventKind::Retransmit {
                    state: Some(Established)
                },
                TcpEventKind::Retransmit {
                    state: Some(Established)
                },
                TcpEventKind::ResetReceived,
                TcpEventKind::StateChange {
                    old: Established,
                    new: Close
                },
            ]
        );
    }

    #[test]
    fn a_summary_without_history_passes_through() {
        let s = summary(&[], |_| {});
        assert_eq!(unfold(&s).len(), 1);
    }

    #[test]
    fn the_death_keeps_its_cause_and_the_peers_silence() {
        use raw::*;
        let mut s = summary(
            &[
                (CLOSE, SYN_SENT, 100),
                (SYN_SENT, ESTABLISHED, 150),
                (ESTABLISHED, CLOSE, 9_000),
            ],
            |sock| sock.created_ns = 100,
        );
        s.error = Some(libc::ECONNRESET);
        s.peer_silent_ns = Some(8_000);
        let mut deaths = Vec::new();
        expand(&s, |e| deaths.push((e.error, e.peer_silent_ns)));
        assert_eq!(
            deaths,
            [
                (None, None),
                (None, None),
                (Some(libc::ECONNRESET), Some(8_000))
            ]
        );
    }

    /// Summary mode sends nothing on entering `CLOSE_WAIT`: the read that
    /// returned end-of-file there is kept with the socket and replayed,
    /// by its reader at its time, before the socket leaves `CLOSE_WAIT`,
    /// as an every-event session gets it; once only.
    #[test]
    fn a_kept_end_of_file_read_is_replayed_in_its_close_wait() {
        use raw::*;
        let reader = task(7, "server", 3);
        let keep = |sock: &mut SockInfo| {
            sock.created_ns = 1;
            sock.eof_reader = reader;
            sock.eof_read_ns = 35;
            sock.flags |= EOF_READ_KEPT;
        };
        let state = |old, new| TcpEventKind::StateChange { old, new };
        let (listen, syn_recv, established, close_wait, last_ack, close) = (
            TcpState::Listen,
            TcpState::SynRecv,
            TcpState::Established,
            TcpState::CloseWait,
            TcpState::LastAck,
            TcpState::Close,
        );
        let whole_life = summary(
            &[
                (LISTEN, SYN_RECV, 1),
                (SYN_RECV, ESTABLISHED, 2),
                (ESTABLISHED, CLOSE_WAIT, 30),
                (CLOSE_WAIT, LAST_ACK, 40),
                (LAST_ACK, CLOSE, 50),
            ],
            keep,
        );
        assert_eq!(
            unfold(&whole_life),
            [
                // The helper's socket has an owner by `connect()`: pid 0.
                (state(listen, syn_recv), 1, Some(0)),
                (state(syn_recv, established), 2, None),
                (state(established, close_wait), 30, None),
                (TcpEventKind::EofRead, 35, Some(7)),
                (state(close_wait, last_ack), 40, None),
                (state(last_ack, close), 50, None),
            ]
        );

        // Reset in CLOSE_WAIT: the summary's own transition leaves it.
        let reset = summary(
            &[
                (LISTEN, SYN_RECV, 1),
                (SYN_RECV, ESTABLISHED, 2),
                (ESTABLISHED, CLOSE_WAIT, 30),
                (CLOSE_WAIT, CLOSE, 50),
            ],
            keep,
        );
        let kinds: Vec<_> = unfold(&reset).into_iter().map(|(k, _, _)| k).collect();
        assert_eq!(
            kinds[2..],
            [
                state(established, close_wait),
                TcpEventKind::EofRead,
                state(close_wait, close)
            ]
        );

        // A summary that ends in CLOSE_WAIT (a life so far): the read
        // comes last. Without the flag, nothing is replayed.
        let so_far = summary(
            &[
                (LISTEN, SYN_RECV, 1),
                (SYN_RECV, ESTABLISHED, 2),
                (ESTABLISHED, CLOSE_WAIT, 30),
            ],
            keep,
        );
        assert_eq!(
            unfold(&so_far).last(),
            Some(&(TcpEventKind::EofRead, 35, Some(7)))
        );
        let not_kept = summary(
            &[(ESTABLISHED, CLOSE_WAIT, 30), (CLOSE_WAIT, LAST_ACK, 40)],
            |sock| {
                sock.eof_reader = reader;
            },
        );
        assert!(unfold(&not_kept)
            .iter()
            .all(|(kind, _, _)| *kind != TcpEventKind::EofRead));
    }
}
