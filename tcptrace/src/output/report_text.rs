//! The diagnosis report as tables for people.

use std::io::{self, Write};

use super::text::Escaped;
use crate::findings::{Report, Section};

/// Rows shown per section; the rest are counted.
const MAX_ROWS: usize = 50;

/// The totals and their warnings, then every section: each kind of
/// finding writes its own rows.
pub fn write_report(out: &mut impl Write, report: &Report) -> io::Result<()> {
    let t = &report.totals;
    writeln!(out)?;
    writeln!(out, "== Diagnosis ({:.1}s traced) ==", t.elapsed_s)?;
    writeln!(
        out,
        "kernel now ({} network namespace{}): {} TIME_WAIT and {} FIN_WAIT2 (tcptrace models {} \
         timewait sockets from traced active closes), {} CLOSE_WAIT; {} connections closed \
         while tracing",
        t.network_namespaces,
        if t.network_namespaces == 1 { "" } else { "s" },
        t.time_wait_kernel,
        t.fin_wait2_kernel,
        t.time_wait_modelled,
        t.close_wait_kernel,
        t.connections_closed
    )?;
    for unreachable in &t.namespaces_unreachable {
        // Holds a /run/netns name and an error: text from outside.
        writeln!(out, "WARNING: sockets not listed: {}", Escaped(unreachable))?;
    }
    if t.events_lost > 0 {
        writeln!(
            out,
            "WARNING: {} events lost: the findings below may be incomplete",
            t.events_lost
        )?;
    }
    if t.sockets_untracked > 0 {
        writeln!(
            out,
            "WARNING: {} sockets not tracked (the kernel's socket map was full; raise \
             --socket-map-entries): the findings below may be incomplete",
            t.sockets_untracked
        )?;
    }
    if t.socket_map_walks_failed > 0 {
        writeln!(
            out,
            "WARNING: the kernel's socket map could not be read ({} times): live connections \
             may miss their call sites",
            t.socket_map_walks_failed
        )?;
    }

    for section in Section::ALL {
        write_section(out, report, section)?;
    }
    Ok(())
}

/// Writes a section's heading and its findings, or "none".
fn write_section(out: &mut impl Write, report: &Report, section: Section) -> io::Result<()> {
    writeln!(out, "\n-- {} --", section.heading())?;
    let mut shown = 0;
    for finding in report.in_section(section).take(MAX_ROWS) {
        finding.write_text(out, &report.totals)?;
        shown += 1;
    }
    let more = report.in_section(section).count() - shown;
    if shown == 0 {
        writeln!(out, "  none")?;
    }
    if more > 0 {
        writeln!(out, "  ... {more} more (`--json` lists every finding)")?;
    }
    Ok(())
}
