//! FIN retransmits (incident 3 of docs/INCIDENTS.md): a `close()` whose FIN
//! the peer does not acknowledge. Dead peers where it never did (or is
//! gone); a lossy path, a lesser finding of its own, where it did in the
//! end.

use std::{
    cmp::Reverse,
    collections::{hash_map::Entry, HashMap},
    io::{self, Write},
};

use serde::Serialize;

use super::{
    parts::{rank_findings, secs, ProcessJson},
    text::{call_site, ShownProcess},
    LogLine, ReportInput,
};
use crate::{
    callsite::CallSite,
    diagnose::deadpeer::{DeadPeer, DeadPeerKey, DeadPeerOutcomes},
};

#[derive(Clone, Debug, Serialize)]
pub struct DeadPeerFin {
    /// The process whose `close()` sent the FIN.
    pub process: Option<ProcessJson>,
    pub peer: String,
    pub sockets: u64,
    pub retransmits: u64,
    pub max_retransmits: u32,
    pub seconds: f64,
    pub states: Vec<&'static str>,
    pub outcomes: DeadPeerOutcomes,
    pub verdict: String,
    pub call_site: Option<CallSite>,
}

impl DeadPeerFin {
    pub const DEAD_HEADING: &'static str = "FIN retransmits to dead peers (late close)";
    pub const RECOVERED_HEADING: &'static str =
        "FIN retransmits acknowledged in the end (a lossy path, not a dead peer)";

    /// Every group, most retransmits first, split into (dead peers,
    /// recovered).
    pub(super) fn all(
        input: &ReportInput,
        diagnosed: &crate::diagnose::Diagnoses,
    ) -> (Vec<Self>, Vec<Self>) {
        let live = input
            .table
            .live()
            .filter(|r| input.filter.matches_record(r, input.workloads));
        // One row per closer, peer and user code closing (an interpreted
        // and a compiled path of one method are two stacks); the stack of
        // the most sockets names it. Call sites without user code stay apart.
        let mut merged: HashMap<_, (DeadPeerKey, DeadPeer)> = HashMap::new();
        // Of a row's stacks, the first with the most sockets names it:
        // taken in the order of their stacks, not the map's.
        let mut sources: Vec<_> = diagnosed
            .dead_peers
            .with_live(live, input.now_ns)
            .into_iter()
            .collect();
        sources.sort_by_key(|(key, _)| key.close_stack);
        for (key, group) in sources {
            let text = input
                .call_sites
                .get(key.close_stack)
                .and_then(|site| site.user_code_text());
            let same = (key.closer, key.peer, text.ok_or(key.close_stack));
            match merged.entry(same) {
                Entry::Occupied(mut row) => {
                    let (named, known) = row.get_mut();
                    if group.sockets > known.sockets {
                        *named = key;
                    }
                    known.absorb(&group);
                }
                Entry::Vacant(row) => {
                    row.insert((key, group));
                }
            }
        }
        let mut all: Vec<Self> = merged
            .values()
            .map(|(key, group)| Self {
                process: ProcessJson::of(key.closer),
                peer: key.peer.to_string(),
                sockets: group.sockets,
                retransmits: group.retransmits,
                max_retransmits: group.max_retransmits,
                seconds: secs(group.longest_ns),
                states: group.states.iter().map(|s| s.name()).collect(),
                outcomes: group.outcomes,
                verdict: verdict(
                    &group.outcomes,
                    group.max_retransmits,
                    secs(group.longest_ns),
                ),
                call_site: input.call_sites.get(key.close_stack),
            })
            .collect();
        rank_findings(&mut all, |d| Reverse(d.retransmits));
        // "Dead" only where the peer never acknowledged (or is gone): FINs
        // acknowledged after a few retransmits crossed a lossy path.
        all.into_iter().partition(Self::peer_is_dead)
    }

    fn peer_is_dead(&self) -> bool {
        let o = &self.outcomes;
        o.gave_up + o.still_trying + o.reset > 0
    }

    /// Who closed, to whom, how many, and the verdict.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "  {} closed {} socket(s) to {}; {} FIN-phase retransmits in {}: {}",
            ShownProcess(self.process.as_ref()),
            self.sockets,
            self.peer,
            self.retransmits,
            self.states.join("/"),
            self.verdict,
        )?;
        call_site(out, "closed at", self.call_site.as_ref())
    }

    /// A dead peer is logged once per process and peer (a recovered one
    /// is not logged).
    pub(super) fn log_line(&self) -> LogLine {
        LogLine {
            message: "dead peer",
            key: format!(
                "dp/{:?}/{}",
                self.process.as_ref().map(|p| p.pid),
                self.peer
            ),
        }
    }
}

fn verdict(outcomes: &DeadPeerOutcomes, retransmits: u32, seconds: f64) -> String {
    if outcomes.gave_up > 0 {
        format!(
            "peer never acknowledged; gave up after {retransmits} retransmits over {seconds:.1} s"
        )
    } else if outcomes.still_trying > 0 {
        format!(
            "peer has not acknowledged; still retransmitting ({retransmits} so far over \
             {seconds:.1} s)"
        )
    } else if outcomes.reset > 0 {
        "the peer address answered with a reset: the old peer is gone".to_owned()
    } else {
        format!("acknowledged after {retransmits} retransmits")
    }
}
