//! The diagnosis report as tables for people.

use std::io::{self, Write};

use super::text::Escaped;
use crate::{
    callsite::CallSite,
    diagnose::{DeadPeerFin, Finding, Percentiles, ProcessJson, Processes, Report},
};

/// Rows shown per section; the rest are counted.
const MAX_ROWS: usize = 50;

#[expect(
    clippy::too_many_lines,
    reason = "the report's sections, written top to bottom in the order a reader sees them"
)]
pub fn write_report(out: &mut impl Write, report: &Report) -> io::Result<()> {
    let t = &report.totals;
    writeln!(out)?;
    writeln!(out, "== Diagnosis ({:.1}s traced) ==", t.elapsed_s)?;
    writeln!(
        out,
        "kernel now ({} network namespace{}): {} TIME_WAIT (tcptrace models {} from traced \
         active closes), {} CLOSE_WAIT; {} connections closed while tracing",
        t.network_namespaces,
        if t.network_namespaces == 1 { "" } else { "s" },
        t.time_wait_kernel,
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

    section(
        out,
        report,
        "CLOSE_WAIT leaks: the peer closed, the owner never did",
        |out, f| {
            let Finding::CloseWaitLeak(l) = f else {
                return Ok(false);
            };
            let fds: Vec<String> = l
                .fds
                .iter()
                .take(8)
                .map(|fd| format!("{}:{}", fd.pid, fd.fd))
                .collect();
            writeln!(
                out,
                "  {} holds {} socket(s) in CLOSE_WAIT, oldest {}{:.1}s; fds {}{}; peers {}",
                Process(l.process.as_ref()),
                l.sockets,
                if l.age_is_lower_bound {
                    "at least "
                } else {
                    ""
                },
                l.oldest_age_s,
                fds.join(","),
                if l.fds.len() > 8 { ",..." } else { "" },
                l.peers.join(","),
            )?;
            if let Some(eof) = &l.eof_call_site {
                call_site(out, "EOF read at", Some(eof))?;
                writeln!(out, "        and never closed")?;
            }
            call_site(out, "created/accepted at", l.call_site.as_ref())?;
            Ok(true)
        },
    )?;

    section(
        out,
        report,
        "FIN retransmits to dead peers (late close)",
        |out, f| match f {
            Finding::DeadPeerFin(d) => fin_retransmits(out, d),
            _ => Ok(false),
        },
    )?;

    section(
        out,
        report,
        "FIN retransmits acknowledged in the end (a lossy path, not a dead peer)",
        |out, f| match f {
            Finding::FinRetransmitsRecovered(d) => fin_retransmits(out, d),
            _ => Ok(false),
        },
    )?;

    section(out, report, "Reconnect loops (no back-off)", |out, f| {
        let Finding::ReconnectLoop(r) = f else {
            return Ok(false);
        };
        writeln!(
            out,
            "  {} reconnects to {} {:.1}/s ({} attempts, {} failed), median lifetime {}, \
             closed first by {:?}, gaps {:.0}ms -> {:.0}ms: no back-off",
            Folded(r.process.as_ref(), &r.processes),
            r.peer,
            r.per_second,
            r.attempts,
            r.failures,
            r.median_lifetime_us.map_or_else(|| "-".to_owned(), micros),
            r.closed_first,
            r.first_gap_ms,
            r.last_gap_ms,
        )?;
        call_site(out, "connects at", r.call_site.as_ref())?;
        Ok(true)
    })?;

    section(
        out,
        report,
        "Connection churn and TIME_WAIT (by owner and peer)",
        |out, f| {
            let Finding::Churn(c) = f else {
                return Ok(false);
            };
            writeln!(
            out,
            "  {} {:?} {}: {} closed ({:.1}/s), lifetime {}, closed first by {:?} ({} local, {} peer), \
             TIME_WAIT now {} (kernel {})",
            Folded(c.process.as_ref(), &c.processes),
            c.role,
            c.peer,
            c.connections,
            c.per_second,
            latency(c.lifetime_us),
            c.closed_first,
            c.active_closes,
            c.passive_closes,
            c.time_wait_now,
            c.time_wait_kernel,
        )?;
            call_site(out, "opened at", c.call_site.as_ref())?;
            call_site(out, "closed at", c.close_call_site.as_ref())?;
            Ok(true)
        },
    )?;

    section(
        out,
        report,
        "Connects (latency and failures by destination)",
        |out, f| {
            let Finding::Connect(c) = f else {
                return Ok(false);
            };
            let x = &c.failures;
            writeln!(
                out,
                "  {} -> {}: {} attempts, {} established, latency {}, {} SYN retransmits; failed: \
             {} refused, {} timed out, {} unreachable, {} reset, {} aborted, {} other",
                Folded(c.process.as_ref(), &c.processes),
                c.peer,
                c.attempts,
                c.established,
                latency(c.latency_us),
                c.syn_retransmits,
                x.refused,
                x.timed_out,
                x.unreachable,
                x.reset,
                x.aborted,
                x.other,
            )?;
            call_site(out, "connects at", c.call_site.as_ref())?;
            Ok(true)
        },
    )?;

    section(
        out,
        report,
        "Accepts (by server and client address)",
        |out, f| {
            let Finding::Accept(a) = f else {
                return Ok(false);
            };
            writeln!(
                out,
                "  {} <- {}: {} established, SYN_RECV->ESTABLISHED {}, {} SYN-ACK retransmits",
                Folded(a.process.as_ref(), &a.processes),
                a.peer,
                a.established,
                latency(a.handshake_us),
                a.syn_ack_retransmits,
            )?;
            Ok(true)
        },
    )?;

    let several_namespaces = t.network_namespaces > 1;
    section(out, report, "Ephemeral ports by destination", |out, f| {
        let Finding::PortPressure(p) = f else {
            return Ok(false);
        };
        // Each namespace has its own ports: say whose, when there are many.
        let whose = if several_namespaces {
            format!(" (network namespace {})", p.netns)
        } else {
            String::new()
        };
        writeln!(
            out,
            "  {}{whose}: {} of {} ports ({}-{}) in use = {:.1}%, {} in TIME_WAIT",
            p.destination,
            p.ports_in_use,
            p.range_size,
            p.range.0,
            p.range.1,
            p.percent,
            p.time_wait
        )?;
        Ok(true)
    })?;
    Ok(())
}

/// A row of FIN-phase retransmits (dead peer or recovered): who closed,
/// to whom, how many, and the verdict.
fn fin_retransmits(out: &mut impl Write, d: &DeadPeerFin) -> io::Result<bool> {
    writeln!(
        out,
        "  {} closed {} socket(s) to {}; {} FIN-phase retransmits in {}: {}",
        Process(d.process.as_ref()),
        d.sockets,
        d.peer,
        d.retransmits,
        d.states.join("/"),
        d.verdict,
    )?;
    call_site(out, "closed at", d.call_site.as_ref())?;
    Ok(true)
}

/// Writes a heading and the findings `line` accepts, or "none".
fn section<W: Write>(
    out: &mut W,
    report: &Report,
    title: &str,
    mut line: impl FnMut(&mut Vec<u8>, &Finding) -> io::Result<bool>,
) -> io::Result<()> {
    writeln!(out, "\n-- {title} --")?;
    let (mut shown, mut more) = (0, 0);
    let mut row = Vec::new();
    for finding in &report.findings {
        row.clear();
        if !line(&mut row, finding)? {
            continue;
        }
        if shown < MAX_ROWS {
            out.write_all(&row)?;
            shown += 1;
        } else {
            more += 1;
        }
    }
    if shown == 0 {
        writeln!(out, "  none")?;
    }
    if more > 0 {
        writeln!(out, "  ... {more} more (`--json` lists every finding)")?;
    }
    Ok(())
}

fn call_site(out: &mut impl Write, label: &str, site: Option<&CallSite>) -> io::Result<()> {
    match site {
        Some(site) => {
            write!(out, "      {label} {}", Escaped(&site.function))?;
            if let (Some(file), Some(line)) = (&site.file, site.line) {
                // Debug info is the binary's to say: escaped like the rest.
                write!(out, " ({}:{line})", Escaped(file))?;
            }
            if let Some(via) = &site.via {
                write!(out, " via {}", Escaped(via))?;
            }
            if let Some(reason) = &site.unresolved {
                write!(out, " ({})", Escaped(reason))?;
            }
            writeln!(out)?;
            if let Some(advice) = &site.advice {
                writeln!(
                    out,
                    "        (no frame of the program's own code: {})",
                    Escaped(advice)
                )?;
            }
            Ok(())
        }
        None => writeln!(out, "      {label} ? (no stack captured)"),
    }
}

struct Process<'a>(Option<&'a ProcessJson>);

/// A finding's process, or its program and how many processes of it the
/// finding folds (a shell loop's 200 curls).
struct Folded<'a>(Option<&'a ProcessJson>, &'a Processes);

impl std::fmt::Display for Folded<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0, self.1.pids) {
            (Some(p), n) if n > 1 => {
                write!(f, "{}{} ({n} processes)", Escaped(&p.comm), Workload(p))
            }
            (process, _) => Process(process).fmt(f),
        }
    }
}

impl std::fmt::Display for Process<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(p) => write!(f, "{}/{}{}", p.pid, Escaped(&p.comm), Workload(p)),
            None => f.write_str("unknown process"),
        }
    }
}

/// Where a process ran, when known: ` [namespace/pod/container]` in
/// Kubernetes (` [namespace/pod]` for the pod's own cgroup), ` [name]` for
/// a container outside it; nothing for a host process. The names come
/// from the node's runtime state: escaped like a comm.
struct Workload<'a>(&'a ProcessJson);

impl std::fmt::Display for Workload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.0;
        let names = [&p.namespace, &p.pod, &p.container];
        let names = if p.pod.is_empty() {
            &names[2..]
        } else {
            &names[..]
        };
        let mut names = names.iter().filter(|n| !n.is_empty());
        let Some(first) = names.next() else {
            return Ok(());
        };
        write!(f, " [{}", Escaped(first))?;
        for name in names {
            write!(f, "/{}", Escaped(name))?;
        }
        f.write_str("]")
    }
}

fn micros(us: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    match us {
        0..=999 => format!("{us}us"),
        1_000..=999_999 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

fn latency(p: Option<Percentiles>) -> String {
    p.map_or_else(
        || "-".to_owned(),
        |p| {
            format!(
                "p50 {} p99 {} max {}",
                micros(p.p50),
                micros(p.p99),
                micros(p.max)
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(namespace: &str, pod: &str, container: &str) -> ProcessJson {
        ProcessJson {
            pid: 42,
            comm: "api".into(),
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
            cgroup: 7,
        }
    }

    #[test]
    fn rows_name_the_workload_when_known() {
        let shown = |p: &ProcessJson| Process(Some(p)).to_string();
        assert_eq!(
            shown(&process("shop", "checkout-0", "api")),
            "42/api [shop/checkout-0/api]"
        );
        assert_eq!(
            shown(&process("shop", "checkout-0", "")),
            "42/api [shop/checkout-0]"
        );
        assert_eq!(
            shown(&process("", "", "billing-db-1")),
            "42/api [billing-db-1]"
        );
        assert_eq!(shown(&process("", "", "")), "42/api");
        // Names from the node's files cannot inject control characters.
        assert_eq!(
            shown(&process("shop", "evil\n0", "api")),
            "42/api [shop/evil\\n0/api]"
        );
        let folded = Processes {
            pids: 3,
            pid_list: vec![1, 2, 3],
        };
        let p = process("shop", "checkout-0", "api");
        assert_eq!(
            Folded(Some(&p), &folded).to_string(),
            "api [shop/checkout-0/api] (3 processes)"
        );
    }
}
