//! Listeners on a port inside the ephemeral range
//! (`net.ipv4.ip_local_port_range`): any outgoing connection may take that
//! port while the server is down, and its restart then fails with "address
//! already in use".

use std::io::{self, Write};

use serde::Serialize;
use tcptrace_common::TcpState;

use super::{
    parts::{rank_findings, ProcessJson},
    text::ShownProcess,
    LogLine, ReportInput,
};
use crate::{port_range::PortRange, table::Process};

#[derive(Clone, Debug, Serialize)]
pub struct ListenerInRange {
    pub process: Option<ProcessJson>,
    /// The network namespace the listener is in.
    pub netns: u32,
    pub local: String,
    pub port: u16,
    /// The range, as the listener's network namespace sets it.
    pub range: PortRange,
}

impl ListenerInRange {
    pub const HEADING: &'static str =
        "Listeners inside the ephemeral port range (a restart may find the port taken)";

    /// Every listener of the processes the filter allows on a port inside
    /// the range, by port.
    pub(super) fn all(input: &ReportInput) -> Vec<Self> {
        let owned = input.owned;
        let mut all: Vec<Self> = owned
            .sockets
            .iter()
            .filter(|s| {
                s.state == TcpState::Listen && owned.port_range(s.netns).contains(s.local.port())
            })
            .map(|s| Self {
                process: ProcessJson::of(s.holders.first().map(|h| Process::named(h.pid, &h.comm))),
                netns: s.netns,
                local: s.local.to_string(),
                port: s.local.port(),
                range: owned.port_range(s.netns),
            })
            .collect();
        rank_findings(&mut all, |l| (l.port, l.netns));
        all
    }

    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "  {} listens on {} (network namespace {}), inside {}",
            ShownProcess(self.process.as_ref()),
            self.local,
            self.netns,
            self.range,
        )
    }

    /// Logged once per namespace and port.
    pub(super) fn log_line(&self) -> LogLine {
        LogLine {
            message: "listener inside the ephemeral port range",
            key: format!("lr/{}/{}", self.netns, self.local),
        }
    }
}
