//! One JSON object per line, for scripts. Strings go through `serde_json`, so
//! an attacker-chosen comm cannot break the framing. Events, the lines that
//! come by the thousand, are written by `json_event`.

use std::io;

use serde::Serialize;

use super::{json_event::write_event, LineBuffer, Shown, Sink};
use crate::{
    event::TcpEvent,
    findings::{Finding, Report},
    session::SessionCounts,
    snapshot::ExistingSocket,
};

pub struct JsonLines<W: LineBuffer> {
    out: W,
}

impl<W: LineBuffer> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// Any other line than an event's.
    fn line(&mut self, value: &impl Serialize) -> io::Result<()> {
        let pending = self.out.pending();
        serde_json::to_writer(&mut *pending, value)?;
        pending.push(b'\n');
        self.out.line_appended()
    }
}

#[derive(Serialize)]
struct FindingLine<'a> {
    r#type: &'static str,
    #[serde(flatten)]
    finding: &'a Finding,
}

impl<W: LineBuffer> Sink for JsonLines<W> {
    fn start(&mut self, existing: &[ExistingSocket], shown: usize) -> io::Result<()> {
        self.line(&serde_json::json!({
            "type": "start",
            "existing_sockets": existing.len(),
            "existing_shown": shown,
        }))
    }

    fn existing(&mut self, socket: &ExistingSocket) -> io::Result<()> {
        let holders: Vec<_> = socket
            .holders
            .iter()
            .map(|h| serde_json::json!({"pid": h.pid, "fd": h.fd, "comm": &*h.comm}))
            .collect();
        self.line(&serde_json::json!({
            "type": "existing",
            "netns": socket.netns,
            "state": socket.state.name(),
            "local": socket.local.to_string(),
            "remote": socket.remote.to_string(),
            "inode": socket.inode,
            "uid": socket.uid,
            "holders": holders,
        }))
    }

    fn event(&mut self, event: &TcpEvent, shown: &Shown) -> io::Result<()> {
        write_event(self.out.pending(), event, shown);
        self.out.line_appended()
    }

    fn summary(&mut self, s: &SessionCounts) -> io::Result<()> {
        self.line(&serde_json::json!({ "type": "summary", "summary": s }))
    }

    fn report(&mut self, report: &Report) -> io::Result<()> {
        for finding in &report.findings {
            self.line(&FindingLine {
                r#type: "finding",
                finding,
            })?;
        }
        self.line(&serde_json::json!({ "type": "report_totals", "totals": report.totals }))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
