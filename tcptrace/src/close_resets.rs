//! The resets that close calls send, given back their sockets.
//!
//! An abortive close (`SO_LINGER` 0, unread data, `tcp_disconnect`) moves
//! the socket to CLOSE first and sends its RST after: by then the kernel
//! programs have dropped the socket's record, so the reset event comes
//! without owner, closer, namespace or cgroup. Its CLOSE said it would
//! send one (`RESET_BY_CLOSE`), a few records before: the socket's final
//! record is kept from there and given to the reset that follows.

use tcptrace_common::{SockInfo, TcpState, RESET_BY_CLOSE};

use crate::event::{TcpEvent, TcpEventKind};

/// Closes waiting for their reset: one per CPU that could be between the
/// two records is plenty; an older one is overwritten.
const WAITING: usize = 8;

#[derive(Default)]
pub struct CloseResets {
    /// (socket address, its final record), the newest at `next - 1`.
    waiting: [Option<(u64, SockInfo)>; WAITING],
    next: usize,
}

impl CloseResets {
    /// Remembers `event`'s socket when it is a CLOSE that sends a reset.
    pub fn on_event(&mut self, event: &TcpEvent) {
        if let TcpEventKind::StateChange {
            new: TcpState::Close,
            ..
        } = event.what
        {
            if event.sock.flags & RESET_BY_CLOSE != 0 {
                self.waiting[self.next] = Some((event.skaddr, event.sock));
                self.next = (self.next + 1) % WAITING;
            }
        }
    }

    /// `event` with its socket's final record when it is the reset a
    /// remembered close sent (which is then forgotten: a later socket at
    /// that address is another one).
    #[must_use]
    pub fn attributed(&mut self, event: &TcpEvent) -> Option<TcpEvent> {
        if !matches!(event.what, TcpEventKind::ResetSent { by_close: true, .. }) {
            return None;
        }
        // Newest first: an address reused since belongs to the newer close.
        let slot = (1..=WAITING)
            .map(|back| (self.next + WAITING - back) % WAITING)
            .find(|&i| matches!(self.waiting[i], Some((skaddr, _)) if skaddr == event.skaddr))?;
        let (_, sock) = self.waiting[slot].take()?;
        Some(TcpEvent { sock, ..*event })
    }
}

#[cfg(test)]
mod tests {
    use tcptrace_common::{Task, CLOSER_KNOWN};

    use super::*;
    use crate::event::synthetic::{task, Conn};

    fn close_with_reset(conn: &Conn, closer: Task) -> TcpEvent {
        let mut close = conn.state(10, TcpState::Established, TcpState::Close);
        close.sock.closer = closer;
        close.sock.flags |= CLOSER_KNOWN | RESET_BY_CLOSE;
        close
    }

    /// The reset as the kernel sends it: the socket's record is gone.
    fn reset_after(close: &TcpEvent) -> TcpEvent {
        TcpEvent {
            what: TcpEventKind::ResetSent {
                state: Some(TcpState::Close),
                by_close: true,
            },
            sock: SockInfo::EMPTY,
            ts_ns: close.ts_ns + 1,
            ..*close
        }
    }

    #[test]
    fn a_close_s_reset_gets_the_socket_s_owner_and_closer() {
        let owner = task(40, "client", 0);
        let conn = Conn::active(0x1000, owner, "10.0.0.1:40000", "10.0.0.9:80");
        let close = close_with_reset(&conn, task(41, "worker", 0));
        let mut resets = CloseResets::default();
        resets.on_event(&close);
        let reset = resets.attributed(&reset_after(&close)).expect("attributed");
        assert_eq!(reset.sock.owner.tgid, 40);
        assert_eq!(reset.closer().map(|t| t.tgid), Some(41));
        assert_eq!(reset.sock.netns, close.sock.netns);
        assert_eq!(reset.what, reset_after(&close).what, "still the reset");
        // Given once: a later socket at the address is another.
        assert!(resets.attributed(&reset_after(&close)).is_none());
    }

    #[test]
    fn only_closes_that_send_a_reset_and_only_their_resets_are_matched() {
        let conn = Conn::active(
            0x1000,
            task(40, "client", 0),
            "10.0.0.1:40000",
            "10.0.0.9:80",
        );
        let mut resets = CloseResets::default();
        // An orderly close sends no reset: nothing is kept.
        resets.on_event(&conn.state(10, TcpState::LastAck, TcpState::Close));
        let close = close_with_reset(&conn, task(40, "client", 0));
        assert!(resets.attributed(&reset_after(&close)).is_none());
        resets.on_event(&close);
        // A reset of another socket, or one not sent by a close, is not it.
        let other = TcpEvent {
            skaddr: 0x2000,
            ..reset_after(&close)
        };
        assert!(resets.attributed(&other).is_none());
        let answered = TcpEvent {
            what: TcpEventKind::ResetSent {
                state: Some(TcpState::Established),
                by_close: false,
            },
            ..reset_after(&close)
        };
        assert!(resets.attributed(&answered).is_none());
        assert!(resets.attributed(&reset_after(&close)).is_some());
    }

    #[test]
    fn a_reused_address_takes_the_newest_close() {
        let mut resets = CloseResets::default();
        let first = Conn::active(0x1000, task(40, "old", 0), "10.0.0.1:40000", "10.0.0.9:80");
        let second = Conn::active(0x1000, task(50, "new", 0), "10.0.0.1:40001", "10.0.0.9:80");
        let (old_close, new_close) = (
            close_with_reset(&first, task(40, "old", 0)),
            close_with_reset(&second, task(50, "new", 0)),
        );
        resets.on_event(&old_close);
        resets.on_event(&new_close);
        let reset = resets
            .attributed(&reset_after(&new_close))
            .expect("attributed");
        assert_eq!(reset.sock.owner.tgid, 50);
        // More closes than slots: the oldest waiting ones go, never a crash.
        for i in 0..3 * WAITING as u64 {
            let conn = Conn::active(
                0x3000 + i,
                task(60, "many", 0),
                "10.0.0.1:40002",
                "10.0.0.9:80",
            );
            resets.on_event(&close_with_reset(&conn, task(60, "many", 0)));
        }
        assert!(resets.attributed(&reset_after(&old_close)).is_none());
    }
}
