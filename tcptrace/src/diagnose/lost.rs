//! Established connections that died without a close by either side
//! (incident 5 of docs/INCIDENTS.md): the kernel gave up on a peer that
//! stopped answering (keepalive probes or retransmits timed out:
//! `ETIMEDOUT` while ESTABLISHED), or the peer reset a connection that had
//! lived long (what an idle-timeout drop by a NAT or load balancer looks
//! like when it answers the next packet with RST). Connect timeouts are the
//! connect findings'; a FIN nobody acknowledges is a dead peer's.

use std::net::SocketAddr;

use hdrhistogram::Histogram;
use tcptrace_common::TcpState;

use crate::{
    event::{TcpEvent, TcpEventKind},
    table::{Process, SocketRecord, StackRef},
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
    /// The peer reset it.
    PeerReset,
}

/// Whether, and how, the close `event` of `record` lost an established
/// connection: the one rule for the report and the daemon's counters.
#[must_use]
pub fn cause(record: &SocketRecord, event: &TcpEvent) -> Option<LostCause> {
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
    } else if record.resets_received > 0 && event.actor.is_none() {
        Some(LostCause::PeerReset)
    } else {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LostKey {
    pub owner: Option<Process>,
    pub peer: SocketAddr,
    pub call_site: Option<StackRef>,
}

#[derive(Clone, Debug)]
pub struct Lost {
    /// Timed out with no data outstanding: keepalive probes gave up.
    pub keepalive_timeouts: u64,
    /// Timed out retransmitting data.
    pub retransmit_timeouts: u64,
    /// Lifetimes (milliseconds) of the connections timed out.
    pub timed_out_lifetimes_ms: Histogram<u32>,
    /// Lifetimes (milliseconds) of the established connections the peer
    /// reset.
    pub reset_lifetimes_ms: Histogram<u32>,
}

impl Default for Lost {
    fn default() -> Self {
        // Up to 30 days, in milliseconds; longer lives count as 30 days.
        let histogram =
            || Histogram::new_with_bounds(1, 30 * 86_400_000, 2).expect("valid histogram bounds");
        Self {
            keepalive_timeouts: 0,
            retransmit_timeouts: 0,
            timed_out_lifetimes_ms: histogram(),
            reset_lifetimes_ms: histogram(),
        }
    }
}

#[derive(Default)]
pub struct LostConnections {
    pub groups: FastMap<LostKey, Lost>,
    /// Deaths not grouped because `MAX_GROUPS` was reached.
    pub folded: u64,
}

impl LostConnections {
    /// A socket's final record: did an established connection die of a
    /// timeout or a peer's reset?
    pub fn on_closed(&mut self, record: &SocketRecord, event: &TcpEvent) {
        let Some(cause) = cause(record, event) else {
            return;
        };
        let key = LostKey {
            owner: record.owner,
            peer: record.remote,
            call_site: record.owner_stack,
        };
        if self.groups.len() >= MAX_GROUPS && !self.groups.contains_key(&key) {
            self.folded += 1;
            return;
        }
        let lost = self.groups.entry(key).or_default();
        let lifetime_ms = record
            .established_ns
            .map_or(0, |since| event.ts_ns.saturating_sub(since) / 1_000_000);
        match cause {
            LostCause::KeepaliveTimeout => lost.keepalive_timeouts += 1,
            LostCause::RetransmitTimeout => lost.retransmit_timeouts += 1,
            LostCause::PeerReset => {}
        }
        let lifetimes = match cause {
            LostCause::PeerReset => &mut lost.reset_lifetimes_ms,
            _ => &mut lost.timed_out_lifetimes_ms,
        };
        lifetimes.saturating_record(lifetime_ms.max(1));
    }
}
