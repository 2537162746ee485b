//! Records from the kernel, decoded into checked Rust values.

mod decode;
mod expand;
pub mod layout;
#[cfg(test)]
pub mod synthetic;

use std::net::SocketAddr;

pub use decode::{
    close_waiting_endpoints, decode, decode_user_stack, is_lives_waiting, is_user_stack,
    DecodeError, UserStackRecord,
};
pub use expand::{expand, reset_received_before, reset_sent_after, tells_whole_life};
use tcptrace_common::{SockInfo, Task, TcpState, CLOSER_KNOWN};

/// What happened to a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TcpEventKind {
    StateChange {
        old: TcpState,
        new: TcpState,
    },
    /// A segment was retransmitted while the socket was in `state`.
    Retransmit {
        state: Option<TcpState>,
    },
    /// This host sent a RST (`state` is the socket's, when it has one).
    ResetSent {
        state: Option<TcpState>,
        /// The reset of an abortive close, already counted with its
        /// socket's CLOSE (`tcptrace_common::RESET_BY_CLOSE`), shown after
        /// it (`reset_sent_after`): it belongs to no live socket.
        by_close: bool,
    },
    /// The peer sent a RST.
    ResetReceived,
    /// A read returned end-of-file on the socket in `CLOSE_WAIT`: the actor
    /// saw the peer's FIN and is the one who must close.
    EofRead,
    /// A listener sent a SYN-ACK again: `skaddr` and `sock` are the
    /// listener's, `remote` the client whose handshake stalled.
    SynAckRetransmit,
}

/// One decoded kernel event.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct TcpEvent {
    pub what: TcpEventKind,
    /// `CLOCK_MONOTONIC` nanoseconds (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    /// The `struct sock` address; identifies a socket only while it lives.
    pub skaddr: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// What the kernel knows of the socket after this event.
    pub sock: SockInfo,
    /// The task that caused this event in a system call; `None` in softirq.
    pub actor: Option<Task>,
    /// Time spent in the state the event leaves, when known.
    pub in_state_ns: Option<u64>,
    /// Why the socket died, on a transition to CLOSE (`sk_err`, an errno).
    pub error: Option<i32>,
    /// On an open connection's death by error (a reset, a timeout): how
    /// long the peer had been silent (no data, no acceptable ACK).
    pub peer_silent_ns: Option<u64>,
    /// A summary record (daemon mode): `what` is the last transition, and
    /// `sock.history` the ones before it (see `expand`).
    pub summary: bool,
}

impl TcpEvent {
    /// The socket's owner, if the kernel recorded one.
    #[must_use]
    pub fn owner(&self) -> Option<&Task> {
        self.sock.owner.is_known().then_some(&self.sock.owner)
    }

    /// Who closed the socket, if that was recorded.
    #[must_use]
    pub fn closer(&self) -> Option<&Task> {
        (self.sock.flags & CLOSER_KNOWN != 0).then_some(&self.sock.closer)
    }
}

/// A task's `comm` as text: up to the first NUL, invalid UTF-8 replaced.
/// `comm` is chosen by the process itself, so it is untrusted input.
#[must_use]
pub fn comm_str(comm: &[u8]) -> std::borrow::Cow<'_, str> {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    let name = &comm[..end];
    // On every event, and nearly always ASCII: a check of a few words,
    // where UTF-8 validation of a short string costs several times more.
    if name.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        return std::borrow::Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(name) });
    }
    match std::str::from_utf8(name) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(name),
    }
}

/// The symbolic name of an errno the kernel leaves in `sk_err`.
#[must_use]
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::ENETDOWN => "ENETDOWN",
        libc::ECONNRESET => "ECONNRESET",
        libc::EPIPE => "EPIPE",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EPROTO => "EPROTO",
        libc::EMSGSIZE => "EMSGSIZE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::comm_str;

    #[test]
    fn a_comm_is_text_up_to_its_first_nul() {
        assert_eq!(comm_str(b"nginx\0\0\0\0\0\0\0\0\0\0\0"), "nginx");
        assert_eq!(comm_str(b"sixteen-bytes-xx"), "sixteen-bytes-xx");
        assert_eq!(comm_str(b"\0ghost"), "");
    }

    #[test]
    fn a_comm_that_is_not_ascii_is_utf8_checked() {
        // Valid UTF-8 kept as it is, invalid bytes replaced, both borrowed
        // or owned as needed: a process names itself.
        assert_eq!(comm_str("wörker\0".as_bytes()), "wörker");
        assert_eq!(comm_str(b"bad\xff\xfe\0"), "bad\u{fffd}\u{fffd}");
        assert!(matches!(
            comm_str(b"plain\0"),
            std::borrow::Cow::Borrowed("plain")
        ));
    }
}
