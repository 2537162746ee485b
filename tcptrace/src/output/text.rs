//! One line per event, for people.

use std::{
    fmt,
    io::{self, Write},
};

use tcptrace_common::TcpState;

use super::{Shown, Sink};
use crate::{
    clock::write_time_of_day,
    event::{comm_str, TcpEvent, TcpEventKind},
    findings::Report,
    session::SessionCounts,
    snapshot::ExistingSocket,
};

pub struct TextLines<W: Write> {
    out: W,
}

impl<W: Write> TextLines<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write> Sink for TextLines<W> {
    fn start(&mut self, existing: &[ExistingSocket], shown: usize) -> io::Result<()> {
        let mut by_state = std::collections::BTreeMap::new();
        for socket in existing {
            *by_state.entry(socket.state).or_insert(0usize) += 1;
        }
        write!(
            self.out,
            "# {} TCP sockets existed at start",
            existing.len()
        )?;
        for (state, count) in by_state {
            write!(self.out, ", {} {count}", state.name())?;
        }
        writeln!(self.out, " ({shown} shown)")?;
        writeln!(
            self.out,
            "{:<15} {:>7} {:<16} {:<22} {:<22} {:<30} {:>8}  BY",
            "TIME(UTC)", "PID", "COMM", "LOCAL", "REMOTE", "EVENT", "IN-OLD"
        )
    }

    fn existing(&mut self, socket: &ExistingSocket) -> io::Result<()> {
        let (pid, comm) = socket
            .holders
            .first()
            .map_or((String::from("-"), "-"), |h| (h.pid.to_string(), &*h.comm));
        let fds: Vec<String> = socket
            .holders
            .iter()
            .map(|h| format!("{}:{}", h.pid, h.fd))
            .collect();
        writeln!(
            self.out,
            "{:<15} {pid:>7} {:<16} {:<22} {:<22} {:<30} {:>8}  fds {}",
            "existing",
            Escaped(comm),
            socket.local.to_string(),
            socket.remote.to_string(),
            socket.state.name(),
            "-",
            if fds.is_empty() {
                "-".to_owned()
            } else {
                fds.join(",")
            },
        )
    }

    /// The live line names the process; workload names are in the report.
    fn event(&mut self, event: &TcpEvent, shown: &Shown) -> io::Result<()> {
        let owner = shown.owner;
        write_time_of_day(&mut self.out, shown.unix_ns)?;
        match owner {
            Some(owner) => write!(self.out, " {:>7} {:<16}", owner.pid, Escaped(&owner.comm))?,
            None => write!(self.out, " {:>7} {:<16}", "-", "-")?,
        }
        write!(
            self.out,
            " {:<22} {:<22} {:<30} {:>8}",
            Addr(event.local),
            Addr(event.remote),
            WhatText(event.what, event.sock.retransmits),
            Elapsed(event.in_state_ns),
        )?;
        if let Some(actor) = &event.actor {
            let acted_by_owner = owner.is_some_and(|o| o.pid == actor.tgid);
            if !acted_by_owner {
                write!(
                    self.out,
                    "  {}/{}",
                    actor.tgid,
                    Escaped(&comm_str(&actor.comm))
                )?;
            }
        }
        if shown.history_incomplete {
            write!(self.out, "  (history incomplete: events lost)")?;
        }
        writeln!(self.out)
    }

    fn summary(&mut self, s: &SessionCounts) -> io::Result<()> {
        let c = &s.counts;
        writeln!(
            self.out,
            "# {} events in {:.1}s: {} state changes, {} retransmits, {} resets sent, {} resets received",
            c.events, s.elapsed.as_secs_f64(), c.state_changes, c.retransmits, c.resets_sent, c.resets_received
        )?;
        writeln!(
            self.out,
            "# shown {}, filtered out {} (and {} by the kernel), undecodable {}; kernel: sent {}, \
             lost {} (ring buffer full), skipped {} (nested runs), socket map full {}; {} failed \
             retransmit attempts not counted",
            c.shown,
            c.filtered_out,
            s.kernel.filtered_out,
            c.decode_errors,
            s.kernel.events_sent,
            s.kernel.events_lost,
            s.kernel.runs_skipped,
            s.kernel.sock_map_full,
            s.kernel.retransmits_failed
        )?;
        let k = &s.kernel;
        writeln!(
            self.out,
            "# kernel: {} folded into summaries, {} read errors, listener map full {}, {} new \
             processes not announced, resets on unknown sockets: {} sent, {} received",
            k.events_folded,
            k.read_errors,
            k.listener_map_full,
            k.processes_not_announced,
            k.resets_sent_without_socket,
            k.resets_received_without_socket
        )?;
        writeln!(
            self.out,
            "# stacks: {} captured, {} reused (sampling), {} not captured (no room or unreadable); \
             {} unwound, {} of processes gone before tcptrace met them ({} processes; meeting \
             thread at {} priority), {} of filtered-out processes",
            k.stacks_taken, k.stacks_sampled, k.stack_errors, s.stacks.unwound, s.stacks.unmapped,
            s.stacks.processes_missed, s.stacks.meeting_priority.as_str(), s.stacks.filtered_out
        )?;
        for missing in &s.missing_hooks {
            writeln!(self.out, "# missing hook: {missing}")?;
        }
        // Each loss with its own remedy, when it has one.
        if s.kernel.events_lost > 0 {
            writeln!(
                self.out,
                "# WARNING: {} events lost to a full ring buffer; attributions and counts may be \
                 incomplete (raise --ring-buffer-mib)",
                s.kernel.events_lost
            )?;
        }
        if s.kernel.runs_skipped > 0 {
            writeln!(
                self.out,
                "# WARNING: the kernel skipped {} program runs (one nested in another on a CPU): \
                 those events were never seen, and counts may be incomplete",
                s.kernel.runs_skipped
            )?;
        }
        if c.records_replaced > 0 {
            writeln!(
                self.out,
                "# WARNING: {} sockets were never seen closing (their address was reused first): \
                 events were lost, and counts may be incomplete",
                c.records_replaced
            )?;
        }
        if c.decode_errors > 0 {
            writeln!(
                self.out,
                "# WARNING: {} records did not decode; counts may be incomplete",
                c.decode_errors
            )?;
        }
        if s.kernel.stack_errors > 0 {
            writeln!(
                self.out,
                "# WARNING: {} stacks not captured: some call sites are missing (raise \
                 --stack-ring-buffer-mib if the stack ring was full)",
                s.kernel.stack_errors
            )?;
        }
        Ok(())
    }

    fn report(&mut self, report: &Report) -> io::Result<()> {
        super::report_text::write_report(&mut self.out, report)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Characters that must never reach a terminal or a label raw from
/// untrusted text: control characters (escape sequences, newlines that
/// forge lines) and the invisible bidirectional controls that reorder
/// what is shown (U+202E makes `exe.txt` read `txt.exe`).
#[must_use]
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Untrusted text (a process's comm, a file or function name from a
/// binary) with unsafe characters ([`is_unsafe_char`]) escaped.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.chars().any(is_unsafe_char) {
            return f.pad(self.0);
        }
        let escaped: String = self.0.chars().flat_map(char::escape_default).collect();
        f.pad(&escaped)
    }
}

struct Addr(std::net::SocketAddr);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `SocketAddr`'s Display ignores width; format once, then pad.
        pad(f, format_args!("{}", self.0))
    }
}

struct WhatText(TcpEventKind, u32);

impl fmt::Display for WhatText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = |s: Option<TcpState>| s.map_or("?", TcpState::name);
        match self.0 {
            TcpEventKind::StateChange { old, new } => {
                pad(f, format_args!("{} -> {}", old.name(), new.name()))
            }
            TcpEventKind::Retransmit { state: s } => {
                pad(f, format_args!("RETRANSMIT #{} in {}", self.1, state(s)))
            }
            TcpEventKind::ResetSent { by_close: true, .. } => f.pad("RST sent by close()"),
            TcpEventKind::ResetSent { state: None, .. } => f.pad("RST sent (no socket)"),
            TcpEventKind::ResetSent { state: Some(s), .. } => {
                pad(f, format_args!("RST sent in {}", s.name()))
            }
            TcpEventKind::ResetReceived => f.pad("RST received"),
            TcpEventKind::EofRead => f.pad("EOF read in CLOSE_WAIT"),
            TcpEventKind::SynAckRetransmit => f.pad("SYN-ACK RETRANSMIT"),
        }
    }
}

/// `523us`, `12.4ms`, `3.02s`, or `-` when unknown.
pub struct Elapsed(pub Option<u64>);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[expect(clippy::cast_precision_loss, reason = "display only")]
        match self.0 {
            None => f.pad("-"),
            Some(ns) if ns < 1_000_000 => pad(f, format_args!("{}us", ns / 1_000)),
            Some(ns) if ns < 1_000_000_000 => pad(f, format_args!("{:.1}ms", ns as f64 / 1e6)),
            Some(ns) => pad(f, format_args!("{:.2}s", ns as f64 / 1e9)),
        }
    }
}

/// Formats into a stack buffer, then pads to the caller's width: most
/// `Display` impls ignore width, and the per-event path must not allocate.
fn pad(f: &mut fmt::Formatter<'_>, args: fmt::Arguments<'_>) -> fmt::Result {
    let mut buf = [0u8; 96];
    let mut cursor = io::Cursor::new(&mut buf[..]);
    let _ = cursor.write_fmt(args);
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    f.pad(std::str::from_utf8(&buf[..len]).unwrap_or("?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_characters_are_escaped_and_plain_text_is_not() {
        assert_eq!(Escaped("nginx: worker").to_string(), "nginx: worker");
        assert_eq!(Escaped("ünïcode").to_string(), "ünïcode");
        assert_eq!(Escaped("a\u{1b}[2Jb").to_string(), "a\\u{1b}[2Jb");
        // A right-to-left override is invisible and reorders the rest.
        assert_eq!(Escaped("ev\u{202e}lig").to_string(), "ev\\u{202e}lig");
        assert_eq!(
            crate::export::prometheus::escape("ev\u{202e}lig\u{2066}"),
            "ev\u{fffd}lig\u{fffd}"
        );
    }
}
