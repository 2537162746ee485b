//! The detail pane of `tcptrace top`: the selected process's top peers
//! (from its row) and its call sites (from the report's findings about
//! it, or about its program when they folded its processes into one).

use std::net::SocketAddr;

use super::rows::Row;
use crate::{
    callsite::CallSite,
    findings::{text::call_site, Finding, ProcessJson, Processes, Report},
    output::Escaped,
};

/// Peers listed at most.
pub const PEERS_SHOWN: usize = 8;
/// Findings whose call sites are listed at most.
pub const FINDINGS_SHOWN: usize = 6;

/// The pane's lines, for `row` against the last report.
#[must_use]
pub fn lines(row: &Row, report: Option<&Report>) -> Vec<String> {
    let mut lines = vec![format!(
        "{} ({}){}: {} connections opened, {} closed, {} connect failures, {} retransmits, \
         {} resets since start",
        Escaped(&row.name()),
        if row.processes > 1 {
            format!("{} processes, lowest pid {}", row.processes, row.pid)
        } else {
            format!("pid {}", row.pid)
        },
        if row.container.is_empty() {
            String::new()
        } else {
            format!(" in {}", Escaped(&row.container))
        },
        row.total.opened,
        row.total.closed,
        row.total.connect_failures,
        row.total.retransmits,
        row.total.resets,
    )];
    lines.push("Top peers (connections opened):".to_owned());
    let peers = row.top_peers(PEERS_SHOWN);
    if peers.is_empty() {
        lines.push("  none yet".to_owned());
    }
    for (peer, n) in peers {
        lines.push(format!("  {:<40} {n}", peer_text(peer)));
    }
    if row.peers_folded > 0 {
        lines.push(format!("  (and {} to other peers)", row.peers_folded));
    }
    lines.push("Call sites (from the findings about it):".to_owned());
    let Some(report) = report else {
        lines.push("  no report yet".to_owned());
        return lines;
    };
    let sites = call_sites(row, report);
    if sites.is_empty() {
        lines.push("  none in the last report".to_owned());
    }
    for (title, labelled) in sites.into_iter().take(FINDINGS_SHOWN) {
        lines.push(format!("  {title}"));
        for (label, site) in labelled {
            // Only leaks whose end-of-file read was seen have one.
            if site.is_none() && label == "EOF read at" {
                continue;
            }
            let mut text = Vec::new();
            // Writing to memory does not fail.
            let _ = call_site(&mut text, label, site);
            lines.extend(
                String::from_utf8_lossy(&text)
                    .lines()
                    .map(|l| format!("  {}", l.trim_start_matches("  "))),
            );
        }
    }
    lines
}

/// A peer: a server endpoint, or a client's address (port 0).
fn peer_text(peer: SocketAddr) -> String {
    if peer.port() == 0 {
        format!("{} (clients)", peer.ip())
    } else {
        peer.to_string()
    }
}

/// A finding's title and its labelled call sites.
type Sites<'a> = (String, Vec<(&'static str, Option<&'a CallSite>)>);

/// The call sites of the findings about `row`'s process: those naming
/// its pid (its own, or among the processes folded into them), else
/// those naming its program.
fn call_sites<'a>(row: &Row, report: &'a Report) -> Vec<Sites<'a>> {
    let name = row.name();
    let about = |process: Option<&ProcessJson>, folded: &Processes, by_name: bool| {
        process.is_some_and(|p| {
            if by_name {
                p.comm == name
            } else {
                p.pid == row.pid || folded.pid_list.contains(&row.pid)
            }
        })
    };
    let none = Processes::default();
    // A program's row: the findings about any of its processes.
    let by_pid = row.processes == 1;
    for by_name in [!by_pid, true] {
        let sites: Vec<Sites> = report
            .findings
            .iter()
            .filter_map(|finding| match finding {
                Finding::Churn(c) if about(c.process.as_ref(), &c.processes, by_name) => Some((
                    format!(
                        "churn {:?} {}: {} closed, TIME_WAIT now {}",
                        c.role, c.peer, c.connections, c.time_wait_now
                    ),
                    vec![
                        ("opened at", c.call_site.as_ref()),
                        ("closed at", c.close_call_site.as_ref()),
                    ],
                )),
                Finding::CloseWaitLeak(l) if about(l.process.as_ref(), &none, by_name) => Some((
                    format!(
                        "CLOSE_WAIT leak: {} socket(s), oldest {:.0}s",
                        l.sockets, l.oldest_age_s
                    ),
                    vec![
                        ("created/accepted at", l.call_site.as_ref()),
                        ("EOF read at", l.eof_call_site.as_ref()),
                    ],
                )),
                Finding::Connect(c)
                    if c.failures.total() > 0
                        && about(c.process.as_ref(), &c.processes, by_name) =>
                {
                    Some((
                        format!(
                            "connect failures to {}: {} of {}",
                            c.peer,
                            c.failures.total(),
                            c.attempts
                        ),
                        vec![("connected at", c.call_site.as_ref())],
                    ))
                }
                Finding::ReconnectLoop(r) if about(r.process.as_ref(), &r.processes, by_name) => {
                    Some((
                        format!("reconnect loop to {}", r.peer),
                        vec![("connected at", r.call_site.as_ref())],
                    ))
                }
                _ => None,
            })
            .collect();
        if !sites.is_empty() {
            return sites;
        }
    }
    Vec::new()
}
