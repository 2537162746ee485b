//! FIN retransmits to dead peers: a late `close()` whose FIN nobody
//! acknowledges. Retransmits in `FIN_WAIT1`, CLOSING and `LAST_ACK` belong to
//! the process whose `close()` sent the FIN, kept apart from ordinary data
//! retransmits, grouped by closer, peer and close call site.

use std::net::SocketAddr;

use tcptrace_common::{RetransmitPhase, TcpState};

use crate::{
    event::{TcpEvent, TcpEventKind},
    table::{Process, SocketRecord, StackRef},
    FastMap,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeadPeerKey {
    pub closer: Option<Process>,
    pub peer: SocketAddr,
    pub close_stack: Option<StackRef>,
}

/// How a closing socket with unacknowledged FINs ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeadPeerOutcomes {
    /// The kernel gave up (ETIMEDOUT): the peer never acknowledged.
    pub gave_up: u64,
    /// A reset came back: the address answers, but not the old peer.
    pub reset: u64,
    /// The FIN was eventually acknowledged.
    pub acknowledged: u64,
    /// Still retransmitting when the report was made.
    pub still_trying: u64,
}

#[derive(Clone, Debug, Default)]
pub struct DeadPeer {
    pub sockets: u64,
    pub retransmits: u64,
    pub max_retransmits: u32,
    /// Longest FIN sent → socket gone (or → now), nanoseconds.
    pub longest_ns: u64,
    pub outcomes: DeadPeerOutcomes,
    /// The states the retransmits happened in.
    pub states: Vec<TcpState>,
}

impl DeadPeer {
    /// `other`'s sockets counted here too.
    pub fn absorb(&mut self, other: &Self) {
        self.sockets += other.sockets;
        self.retransmits += other.retransmits;
        self.max_retransmits = self.max_retransmits.max(other.max_retransmits);
        self.longest_ns = self.longest_ns.max(other.longest_ns);
        let (ours, theirs) = (&mut self.outcomes, &other.outcomes);
        ours.gave_up += theirs.gave_up;
        ours.reset += theirs.reset;
        ours.acknowledged += theirs.acknowledged;
        ours.still_trying += theirs.still_trying;
        for state in &other.states {
            if !self.states.contains(state) {
                self.states.push(*state);
            }
        }
    }
}

#[derive(Default)]
pub struct DeadPeers {
    pub groups: FastMap<DeadPeerKey, DeadPeer>,
}

impl DeadPeers {
    fn group(&mut self, record: &SocketRecord) -> &mut DeadPeer {
        let key = DeadPeerKey {
            closer: record.responsible(),
            // A server's clients by address: each has its own port.
            peer: record.peer_key(),
            close_stack: record.closer_stack,
        };
        self.groups.entry(key).or_default()
    }

    fn add(&mut self, record: &SocketRecord, end_ns: u64) -> &mut DeadPeer {
        let fin = record.retransmits;
        let since = record.fin_sent_ns.unwrap_or(fin.first_fin_ns);
        let state = record.state;
        let group = self.group(record);
        group.sockets += 1;
        group.retransmits += u64::from(fin.fin);
        group.max_retransmits = group.max_retransmits.max(fin.fin);
        group.longest_ns = group.longest_ns.max(end_ns.saturating_sub(since));
        if !group.states.contains(&state) && state != TcpState::Close {
            group.states.push(state);
        }
        group
    }

    /// A socket's final record: did its FIN ever get through?
    pub fn on_closed(&mut self, record: &SocketRecord, event: &TcpEvent) {
        if record.retransmits.fin == 0 {
            return;
        }
        let old = match event.what {
            TcpEventKind::StateChange { old, .. } => old,
            _ => record.state,
        };
        let error = event.error;
        let mut closing = record.clone();
        closing.state = old;
        let group = self.add(&closing, event.ts_ns);
        match error {
            Some(libc::ETIMEDOUT) => group.outcomes.gave_up += 1,
            Some(libc::ECONNRESET | libc::EPIPE) => group.outcomes.reset += 1,
            _ => group.outcomes.acknowledged += 1,
        }
    }

    /// The groups, plus the live sockets still retransmitting their FIN
    /// at `now_ns`.
    #[must_use]
    pub fn with_live<'a>(
        &self,
        live: impl Iterator<Item = &'a SocketRecord>,
        now_ns: u64,
    ) -> FastMap<DeadPeerKey, DeadPeer> {
        let mut all = Self {
            groups: self.groups.clone(),
        };
        for record in live {
            let closing = record.state.retransmit_phase() == RetransmitPhase::Fin;
            if closing && record.retransmits.fin > 0 {
                all.add(record, now_ns).outcomes.still_trying += 1;
            }
        }
        all.groups
    }
}
