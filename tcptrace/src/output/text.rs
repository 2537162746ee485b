//! One line per event, for people.

use std::{
    fmt,
    io::{self, Write},
};

use tcptrace_common::TcpState;

use super::{
    fields::{EventValue, ExistingValue, Field, TEXT_DEFAULT},
    Shown, Sink,
};
use crate::{
    event::{TcpEvent, TcpEventKind},
    findings::Report,
    session::SessionCounts,
    snapshot::ExistingSocket,
};

pub struct TextLines<W: Write> {
    out: W,
    fields: Vec<Field>,
}

impl<W: Write> TextLines<W> {
    /// Lines with the default columns (`fields::TEXT_DEFAULT`).
    pub fn new(out: W) -> Self {
        Self::with_fields(out, TEXT_DEFAULT.to_vec())
    }

    /// Lines with `fields` as columns.
    pub fn with_fields(out: W, fields: Vec<Field>) -> Self {
        Self { out, fields }
    }

    /// `value(field)` for each column, padded to the columns' widths (the
    /// last column is not), without the newline and without trailing
    /// blanks.
    fn row<V: fmt::Display>(&mut self, value: impl Fn(Field) -> V) -> io::Result<()> {
        let last = self.fields.len().saturating_sub(1);
        let mut cell = Blanked {
            out: &mut self.out,
            pending: 0,
        };
        for (i, &field) in self.fields.iter().enumerate() {
            if i > 0 {
                // Two blanks before the free-form `by` column, one elsewhere.
                cell.pending += if field == Field::By { 2 } else { 1 };
            }
            let (width, right) = field.width();
            let width = if i == last { 0 } else { width };
            if right {
                write!(cell, "{:>width$}", value(field))?;
            } else {
                write!(cell, "{:<width$}", value(field))?;
            }
        }
        Ok(())
    }
}

/// A line being written whose blanks are held back until something else
/// follows them: columns line up, and no line ends in blanks.
struct Blanked<'a, W: Write> {
    out: &'a mut W,
    pending: usize,
}

impl<W: Write> Write for Blanked<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.iter().all(|&b| b == b' ') {
            self.pending += buf.len();
            return Ok(buf.len());
        }
        for _ in 0..std::mem::take(&mut self.pending) {
            self.out.write_all(b" ")?;
        }
        self.out.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
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
        self.row(Field::header)?;
        writeln!(self.out)
    }

    fn existing(&mut self, socket: &ExistingSocket) -> io::Result<()> {
        self.row(|field| ExistingValue { field, socket })?;
        writeln!(self.out)
    }

    /// The live line names the process; workload names are in the report
    /// (or in the columns `--fields` adds).
    fn event(&mut self, event: &TcpEvent, shown: &Shown) -> io::Result<()> {
        self.row(|field| EventValue {
            field,
            event,
            shown,
        })?;
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
             lost {} (ring buffer full), skipped {} (nested runs), {} transitions missed, socket \
             map full {}; {} failed retransmit attempts not counted",
            c.shown,
            c.filtered_out,
            s.kernel.filtered_out,
            c.decode_errors,
            s.kernel.events_sent,
            s.kernel.events_lost,
            s.kernel.runs_skipped,
            s.kernel.transitions_missed,
            s.kernel.sock_map_full,
            s.kernel.retransmits_failed
        )?;
        let k = &s.kernel;
        writeln!(
            self.out,
            "# kernel: {} folded into summaries, {} read errors, listener map full {}, \
             CLOSE_WAIT map full {}, whole-life rings full {}, {} new processes not announced, \
             resets on unknown sockets: {} sent, {} received",
            k.events_folded,
            k.read_errors,
            k.listener_map_full,
            k.close_wait_map_full,
            k.life_ring_full,
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
        if s.kernel.transitions_missed > 0 {
            writeln!(
                self.out,
                "# WARNING: the kernel ran no program for {} transitions of known sockets (told by \
                 the next one): those events were never seen, and counts may be incomplete",
                s.kernel.transitions_missed
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

pub struct Addr(pub std::net::SocketAddr);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `SocketAddr`'s Display ignores width; format once, then pad.
        pad(f, format_args!("{}", self.0))
    }
}

pub struct WhatText(pub TcpEventKind, pub u32);

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
pub fn pad(f: &mut fmt::Formatter<'_>, args: fmt::Arguments<'_>) -> fmt::Result {
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
