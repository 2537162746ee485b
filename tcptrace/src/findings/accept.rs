//! Accepted connections per server process and client address.

use std::io::{self, Write};

use serde::Serialize;

use super::{
    parts::{Percentiles, ProcessJson, Processes},
    text::{latency, FoldedProcess},
};
use crate::{diagnose::fold::Folded, table::Role};

#[derive(Clone, Debug, Serialize)]
pub struct Accept {
    pub process: Option<ProcessJson>,
    #[serde(flatten)]
    pub processes: Processes,
    pub peer: String,
    pub established: u64,
    /// `SYN_RECV` → ESTABLISHED of the accepted socket.
    pub handshake_us: Option<Percentiles>,
    pub syn_ack_retransmits: u64,
    /// Segments the accepted connections sent again after the handshake,
    /// their FINs included.
    pub data_retransmits: u64,
}

impl Accept {
    pub const HEADING: &'static str = "Accepts (by server and client address)";

    /// A server group's accepted connections, if any completed or any
    /// handshake stalled (SYN-ACKs sent again to a client that does not
    /// answer).
    pub(super) fn of(group: &Folded) -> Option<Self> {
        let (key, flow) = (group.key, &group.flow);
        let seen = flow.established > 0 || flow.syn_retransmits > 0;
        (key.role == Role::Passive && seen).then(|| Self {
            process: ProcessJson::of(key.owner),
            processes: Processes::of(&group.pids),
            peer: key.peer.to_string(),
            established: flow.established,
            handshake_us: Percentiles::of(&flow.handshake_us),
            syn_ack_retransmits: flow.syn_retransmits,
            data_retransmits: flow.data_retransmits,
        })
    }

    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "  {} <- {}: {} established, SYN_RECV->ESTABLISHED {}, {} SYN-ACK retransmits, {} \
             data retransmits",
            FoldedProcess(self.process.as_ref(), &self.processes),
            self.peer,
            self.established,
            latency(self.handshake_us),
            self.syn_ack_retransmits,
            self.data_retransmits,
        )
    }
}
