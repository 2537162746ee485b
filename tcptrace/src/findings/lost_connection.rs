//! Established connections that died without a close (incident 5 of
//! docs/INCIDENTS.md): timed out (the peer stopped answering keepalive
//! probes or retransmits) or reset by the peer after a long silence (an
//! idle timeout in a NAT or load balancer, answered with RST).

use std::io::{self, Write};

use serde::Serialize;

use super::{
    parts::ProcessJson,
    text::{call_site, ShownProcess},
    LogLine, ReportInput,
};
use crate::{
    callsite::CallSite,
    diagnose::lost::{Lost, LostKey},
};

#[derive(Clone, Debug, Serialize)]
pub struct LostConnection {
    pub process: Option<ProcessJson>,
    pub peer: String,
    /// Timed out with nothing outstanding: keepalive probes unanswered.
    pub keepalive_timeouts: u64,
    /// Timed out retransmitting data.
    pub retransmit_timeouts: u64,
    /// Reset by the peer after a silence of at least the idle threshold.
    pub reset_after_silence: u64,
    /// The longest life among them, seconds.
    pub longest_lifetime_s: f64,
    /// The peer's longest silence before the end, seconds, where the
    /// kernel measured it (no data and no ACK from the peer).
    pub longest_silence_s: Option<f64>,
    pub call_site: Option<CallSite>,
}

impl LostConnection {
    pub const HEADING: &'static str =
        "Established connections lost (timed out, or reset by the peer after a long silence)";

    pub(super) fn of(key: &LostKey, lost: &Lost, input: &ReportInput) -> Self {
        #[expect(clippy::cast_precision_loss, reason = "seconds for display")]
        let longest_lifetime_s = lost.longest_ms as f64 / 1e3;
        Self {
            process: ProcessJson::of(key.owner),
            peer: key.peer.to_string(),
            keepalive_timeouts: lost.keepalive_timeouts,
            retransmit_timeouts: lost.retransmit_timeouts,
            reset_after_silence: lost.peer_resets,
            longest_lifetime_s,
            #[expect(clippy::cast_precision_loss, reason = "seconds for display")]
            longest_silence_s: lost.longest_silence_ms.map(|ms| ms as f64 / 1e3),
            call_site: input.call_sites.get(key.call_site),
        }
    }

    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        write!(
            out,
            "  {} lost connection(s) to {}: {} keepalive timeout(s), {} retransmit timeout(s), \
             {} reset by the peer after a long silence; lived up to {:.0}s",
            ShownProcess(self.process.as_ref()),
            self.peer,
            self.keepalive_timeouts,
            self.retransmit_timeouts,
            self.reset_after_silence,
            self.longest_lifetime_s,
        )?;
        match self.longest_silence_s {
            Some(silent) => writeln!(out, ", the peer silent up to {silent:.0}s")?,
            None => writeln!(out)?,
        }
        call_site(out, "opened at", self.call_site.as_ref())
    }

    /// Logged once per process and peer.
    pub(super) fn log_line(&self) -> LogLine {
        LogLine {
            message: "connections lost",
            key: format!(
                "lost/{:?}/{}",
                self.process.as_ref().map(|p| p.pid),
                self.peer
            ),
        }
    }
}
