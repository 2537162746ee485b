//! Connect latency and failures per destination (incident 4 of
//! docs/INCIDENTS.md).

use std::io::{self, Write};

use serde::Serialize;

use super::{
    parts::{Percentiles, ProcessJson, Processes},
    text::{call_site, latency, FoldedProcess},
};
use crate::{
    callsite::CallSite,
    diagnose::{flows::ConnectFailures, fold::Folded},
    table::Role,
};

#[derive(Clone, Debug, Serialize)]
pub struct Connect {
    pub process: Option<ProcessJson>,
    #[serde(flatten)]
    pub processes: Processes,
    pub peer: String,
    pub attempts: u64,
    pub established: u64,
    pub latency_us: Option<Percentiles>,
    pub syn_retransmits: u64,
    /// Segments these connections sent again after the handshake, their
    /// FINs included (see `Flow::data_retransmits`).
    pub data_retransmits: u64,
    pub failures: ConnectFailures,
    pub call_site: Option<CallSite>,
}

impl Connect {
    pub const HEADING: &'static str = "Connects (latency and failures by destination)";

    /// A client group's connects, if it made any.
    pub(super) fn of(group: &Folded) -> Option<Self> {
        let (key, flow) = (group.key, &group.flow);
        (key.role == Role::Active && flow.attempts > 0).then(|| Self {
            process: ProcessJson::of(key.owner),
            processes: Processes::of(&group.pids),
            peer: key.peer.to_string(),
            attempts: flow.attempts,
            established: flow.established,
            latency_us: Percentiles::of(&flow.handshake_us),
            syn_retransmits: flow.syn_retransmits,
            data_retransmits: flow.data_retransmits,
            failures: flow.failures,
            call_site: group.owner_site.clone(),
        })
    }

    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        let x = &self.failures;
        writeln!(
            out,
            "  {} -> {}: {} attempts, {} established, latency {}, {} SYN retransmits, {} data \
             retransmits; failed: {} refused, {} timed out, {} unreachable, {} reset, {} \
             aborted, {} other",
            FoldedProcess(self.process.as_ref(), &self.processes),
            self.peer,
            self.attempts,
            self.established,
            latency(self.latency_us),
            self.syn_retransmits,
            self.data_retransmits,
            x.refused,
            x.timed_out,
            x.unreachable,
            x.reset,
            x.aborted,
            x.other,
        )?;
        call_site(out, "connects at", self.call_site.as_ref())
    }
}
