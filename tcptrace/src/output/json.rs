//! One JSON object per line, for scripts. Strings go through `serde_json`, so
//! an attacker-chosen comm cannot break the framing. Events, the lines that
//! come by the thousand, are written by `json_event`.

use std::io::{self, Write};

use serde::Serialize;

use super::{json_event::write_event, Shown, Sink};
use crate::{
    event::TcpEvent,
    findings::{Finding, Report},
    session::SessionCounts,
    snapshot::ExistingSocket,
};

pub struct JsonLines<W: Write> {
    out: W,
    /// Event lines not yet written to `out`: one write per `LINES_BYTES`
    /// instead of one per line.
    lines: Vec<u8>,
}

/// See `JsonLines::lines`.
const LINES_BYTES: usize = 64 * 1024;

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            lines: Vec::with_capacity(LINES_BYTES + 4096),
        }
    }

    fn write_lines(&mut self) -> io::Result<()> {
        let written = self.out.write_all(&self.lines);
        self.lines.clear();
        written
    }

    /// Any other line, after the event lines before it.
    fn line(&mut self, value: &impl Serialize) -> io::Result<()> {
        self.write_lines()?;
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }
}

#[derive(Serialize)]
struct FindingLine<'a> {
    r#type: &'static str,
    #[serde(flatten)]
    finding: &'a Finding,
}

impl<W: Write> Sink for JsonLines<W> {
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
        write_event(&mut self.lines, event, shown);
        if self.lines.len() >= LINES_BYTES {
            self.write_lines()?;
        }
        Ok(())
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
        self.write_lines()?;
        self.out.flush()
    }
}
