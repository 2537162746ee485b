//! Established connections that died without a close by either side
//! (incident 5 of docs/INCIDENTS.md): the kernel gave up on a peer that
//! stopped answering (keepalive probes or retransmits timed out:
//! `ETIMEDOUT` while ESTABLISHED), or the peer reset a connection after a
//! long silence (what an idle-timeout drop by a NAT or load balancer looks
//! like when it answers the next packet with RST). Connect timeouts are the
//! connect findings'; a FIN nobody acknowledges is a dead peer's.

use std::net::SocketAddr;

use tcptrace_common::TcpState;

use super::idle::DEFAULT_IDLE_THRESHOLD;
use crate::{
    event::{TcpEvent, TcpEventKind},
    table::{Process, Role, SocketRecord, StackRef},
    FastMap,
};

/// Groups kept at most; further ones are counted in `folded`.
const MAX_GROUPS: usize = 1024;

/// How an established connection was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostCause {
    /// Timed out with nothing outstanding: keepalive probes unanswered.
    KeepaliveTimeout,
    /// Timed out retransmitting data.
    RetransmitTimeout,
    /// The peer reset it after a long silence.
    PeerReset,
}

/// Whether, and how, the close `event` of `record` lost an established
/// connection: the one rule for the report and the daemon's counters. A
/// peer's reset counts only after a silence of `long_ns` (the idle
/// threshold): the kernel measures how long the peer had sent nothing (no
/// data, no ACK) when its reset arrived. Resetting a busy connection is
/// ordinary (an abortive close, `SO_LINGER` 0). Where the kernel could not
/// measure the silence, the connection's life stands in for it (a life
/// that long, or one older than the session).
#[must_use]
pub fn cause(record: &SocketRecord, event: &TcpEvent, long_ns: u64) -> Option<LostCause> {
    let TcpEventKind::StateChange { old, .. } = event.what else {
        return None;
    };
    if !matches!(old, TcpState::Established | TcpState::CloseWait) {
        return None;
    }
    if event.error == Some(libc::ETIMEDOUT) {
        Some(if record.retransmits.data > 0 {
            LostCause::RetransmitTimeout
        } else {
            LostCause::KeepaliveTimeout
        })
    } else if record.resets_received > 0 {
        // Whatever context processed it: softirq for an idle reader, the
        // socket's backlog inside the call of a writer holding the socket.
        let long = match event.peer_silent_ns {
            Some(silent) => silent >= long_ns,
            None => record
                .established_ns
                .map_or(record.born_ns.is_none(), |since| {
                    event.ts_ns.saturating_sub(since) >= long_ns
                }),
        };
        long.then_some(LostCause::PeerReset)
    } else {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LostKey {
    pub owner: Option<Process>,
    /// The server for a client; the client's address (port 0) for a
    /// server, whose clients come from many ports.
    pub peer: SocketAddr,
    pub call_site: Option<StackRef>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Lost {
    pub keepalive_timeouts: u64,
    pub retransmit_timeouts: u64,
    /// Reset by the peer after a long silence.
    pub peer_resets: u64,
    /// The longest life among them, milliseconds (0 when unknown).
    pub longest_ms: u64,
    /// The longest silence of the peer before the end, milliseconds, where
    /// the kernel measured it.
    pub longest_silence_ms: Option<u64>,
}

pub struct LostConnections {
    pub groups: FastMap<LostKey, Lost>,
    /// Deaths not grouped because `MAX_GROUPS` was reached.
    pub folded: u64,
    /// A silence this long is long (the idle threshold).
    pub long_ns: u64,
}

impl Default for LostConnections {
    fn default() -> Self {
        Self {
            groups: FastMap::default(),
            folded: 0,
            long_ns: duration_ns(DEFAULT_IDLE_THRESHOLD),
        }
    }
}

/// A duration in nanoseconds (saturating).
#[must_use]
pub fn duration_ns(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl LostConnections {
    /// A socket's final record: did an established connection die of a
    /// timeout, or of a peer's reset after a long silence?
    pub fn on_closed(&mut self, record: &SocketRecord, event: &TcpEvent) {
        let Some(cause) = cause(record, event, self.long_ns) else {
            return;
        };
        let peer = if record.role == Role::Passive {
            SocketAddr::new(record.remote.ip(), 0)
        } else {
            record.remote
        };
        let key = LostKey {
            owner: record.owner,
            peer,
            call_site: record.owner_stack,
        };
        if self.groups.len() >= MAX_GROUPS && !self.groups.contains_key(&key) {
            self.folded += 1;
            return;
        }
        let lost = self.groups.entry(key).or_default();
        match cause {
            LostCause::KeepaliveTimeout => lost.keepalive_timeouts += 1,
            LostCause::RetransmitTimeout => lost.retransmit_timeouts += 1,
            LostCause::PeerReset => lost.peer_resets += 1,
        }
        let lifetime_ms = record
            .established_ns
            .map_or(0, |since| event.ts_ns.saturating_sub(since) / 1_000_000);
        lost.longest_ms = lost.longest_ms.max(lifetime_ms);
        if let Some(silent_ns) = event.peer_silent_ns {
            let silent_ms = silent_ns / 1_000_000;
            // `None` orders below any `Some`.
            lost.longest_silence_ms = lost.longest_silence_ms.max(Some(silent_ms));
        }
    }
}
