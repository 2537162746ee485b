//! Missing `close()` calls (incident 3 of docs/INCIDENTS.md): sockets whose
//! peer closed while their owner never did, with their ages, fds, peers,
//! the code that made them and the code that read end-of-file.

use std::{
    cmp::Reverse,
    collections::{hash_map::Entry, HashMap},
    io::{self, Write},
};

use serde::Serialize;

use super::{
    parts::{best_stack, rank_findings, secs, ProcessJson},
    text::{call_site, ShownProcess},
    LogLine, ReportInput,
};
use crate::{
    callsite::CallSite,
    diagnose::{
        closewait::{self, Leak},
        idle::LiveView,
    },
};

/// File descriptors listed per row of the text report.
const FDS_SHOWN: usize = 8;

#[derive(Clone, Debug, Serialize)]
pub struct FdJson {
    pub pid: u32,
    pub fd: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct CloseWaitLeak {
    pub process: Option<ProcessJson>,
    pub sockets: u64,
    pub oldest_age_s: f64,
    /// The oldest one's entry into `CLOSE_WAIT` was not seen (before the
    /// session, or its event was lost): its age is "at least".
    pub age_is_lower_bound: bool,
    pub fds: Vec<FdJson>,
    pub peers: Vec<String>,
    pub call_site: Option<CallSite>,
    /// The code that read end-of-file on these sockets and never closed.
    pub eof_call_site: Option<CallSite>,
}

impl CloseWaitLeak {
    pub const HEADING: &'static str = "CLOSE_WAIT leaks: the peer closed, the owner never did";

    /// One leak per process and call site of the user's code (its text:
    /// the stacks of an interpreted and a compiled path name the same
    /// code); the call sites that name no user code are one leak per
    /// process, named by the one with the most sockets; sockets without
    /// any (born before the session) one more. Most sockets first.
    pub(super) fn all(input: &ReportInput, view: &LiveView) -> Vec<Self> {
        let site = |stack| input.call_sites.get(stack);
        let mut groups: HashMap<_, (Option<CallSite>, Leak)> = HashMap::new();
        // Of a group's call sites, the first with the most sockets names
        // it: taken in the order of their stacks, not the map's.
        let mut sources: Vec<_> = closewait::leaks(view).into_iter().collect();
        sources.sort_by_key(|(key, _)| key.call_site);
        for (key, leak) in sources {
            let call_site = site(key.call_site);
            let text = call_site.as_ref().map(CallSite::user_code_text);
            match groups.entry((key.owner, text)) {
                Entry::Occupied(mut group) => {
                    let (named, known) = group.get_mut();
                    if leak.sockets > known.sockets {
                        *named = call_site;
                    }
                    known.absorb(leak);
                }
                Entry::Vacant(group) => {
                    group.insert((call_site, leak));
                }
            }
        }
        let mut leaks: Vec<Self> = groups
            .into_iter()
            .map(|((owner, _), (call_site, leak))| Self {
                process: ProcessJson::of(owner),
                sockets: leak.sockets,
                oldest_age_s: secs(leak.oldest_ns),
                age_is_lower_bound: leak.oldest_is_lower_bound,
                fds: leak
                    .fds
                    .iter()
                    .map(|h| FdJson {
                        pid: h.pid,
                        fd: h.fd,
                    })
                    .collect(),
                peers: leak.peers.iter().map(ToString::to_string).collect(),
                call_site,
                eof_call_site: site(best_stack(&leak.eof_stacks, input.call_sites)),
            })
            .collect();
        rank_findings(&mut leaks, |l| Reverse(l.sockets));
        leaks
    }

    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        let fds: Vec<String> = self
            .fds
            .iter()
            .take(FDS_SHOWN)
            .map(|fd| format!("{}:{}", fd.pid, fd.fd))
            .collect();
        writeln!(
            out,
            "  {} holds {} socket(s) in CLOSE_WAIT, oldest {}{:.1}s; fds {}{}; peers {}",
            ShownProcess(self.process.as_ref()),
            self.sockets,
            if self.age_is_lower_bound {
                "at least "
            } else {
                ""
            },
            self.oldest_age_s,
            fds.join(","),
            if self.fds.len() > FDS_SHOWN {
                ",..."
            } else {
                ""
            },
            self.peers.join(","),
        )?;
        if let Some(eof) = &self.eof_call_site {
            call_site(out, "EOF read at", Some(eof))?;
            writeln!(out, "        and never closed")?;
        }
        call_site(out, "created/accepted at", self.call_site.as_ref())
    }

    /// Logged once per process and call site.
    pub(super) fn log_line(&self) -> LogLine {
        LogLine {
            message: "CLOSE_WAIT leak",
            key: format!(
                "cw/{:?}/{:?}",
                self.process.as_ref().map(|p| p.pid),
                self.call_site.as_ref().map(|c| &c.function)
            ),
        }
    }
}
