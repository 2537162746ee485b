//! Listeners on a port inside the ephemeral range
//! (`net.ipv4.ip_local_port_range`): any outgoing connection may take that
//! port while the server is down, and its restart then fails with "address
//! already in use".

use std::io::{self, Write};

use serde::Serialize;
use tcptrace_common::TcpState;

use super::{parts::ProcessJson, text::ShownProcess, LogLine, ReportInput};
use crate::table::Process;

#[derive(Clone, Debug, Serialize)]
pub struct ListenerInRange {
    pub process: Option<ProcessJson>,
    /// The network namespace the listener is in.
    pub netns: u32,
    pub local: String,
    pub port: u16,
    /// The range, as tcptrace's own network namespace sets it (a namespace
    /// may set its own).
    pub range: (u16, u16),
}

impl ListenerInRange {
    pub const HEADING: &'static str =
        "Listeners inside the ephemeral port range (a restart may find the port taken)";

    /// Every listener of the processes the filter allows on a port inside
    /// the range, by port.
    pub(super) fn all(input: &ReportInput) -> Vec<Self> {
        let (low, high) = input.port_range;
        let mut all: Vec<Self> = input
            .owned
            .sockets
            .iter()
            .filter(|s| s.state == TcpState::Listen && (low..=high).contains(&s.local.port()))
            .map(|s| Self {
                process: ProcessJson::of(s.holders.first().map(|h| Process::named(h.pid, &h.comm))),
                netns: s.netns,
                local: s.local.to_string(),
                port: s.local.port(),
                range: input.port_range,
            })
            .collect();
        all.sort_by_key(|l| (l.port, l.netns));
        all
    }

    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "  {} listens on {} (network namespace {}), inside {}-{}",
            ShownProcess(self.process.as_ref()),
            self.local,
            self.netns,
            self.range.0,
            self.range.1,
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
