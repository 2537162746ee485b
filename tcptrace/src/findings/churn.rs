//! Connection churn and the `TIME_WAIT` it leaves (incident 1 of
//! docs/INCIDENTS.md): per owner, role and peer, how many connections
//! closed, how fast, who closed first and the `TIME_WAIT` left now.

use std::{
    collections::HashMap,
    io::{self, Write},
    net::SocketAddr,
};

use serde::Serialize;

use super::{
    parts::{rate, ClosedFirst, Percentiles, ProcessJson, Processes},
    text::{call_site, latency, FoldedProcess},
};
use crate::{
    callsite::CallSite,
    diagnose::fold::Folded,
    table::{Process, Role},
    tally::Tally,
};

#[derive(Clone, Debug, Serialize)]
pub struct Churn {
    pub process: Option<ProcessJson>,
    #[serde(flatten)]
    pub processes: Processes,
    pub role: Role,
    pub peer: String,
    pub connections: u64,
    pub per_second: f64,
    pub lifetime_us: Option<Percentiles>,
    pub active_closes: u64,
    pub passive_closes: u64,
    pub closed_first: ClosedFirst,
    /// Connections that sent or received a reset (a refused connect, an
    /// abortive close, a peer's reset).
    pub resets: u64,
    /// Timewait sockets this flow holds now, modelled from its active
    /// closes: in `TIME_WAIT`, or in the `FIN_WAIT2` substate while the
    /// peer has not sent its FIN (no tracepoint tells them apart).
    pub time_wait_now: u64,
    /// `time_wait_now` by pid, when the row folds several processes
    /// (`tcptrace top`'s per-process view splits it).
    #[serde(skip)]
    pub time_wait_by_pid: Vec<(u32, u64)>,
    /// `TIME_WAIT` and `FIN_WAIT2` sockets towards `peer` in the kernel's
    /// own dump, which reports each timewait socket's substate.
    pub time_wait_kernel: u64,
    pub fin_wait2_kernel: u64,
    pub call_site: Option<CallSite>,
    pub close_call_site: Option<CallSite>,
    /// The processes that closed the most of these connections, most
    /// first (at most `MAX_LISTED_CLOSERS`: a shell loop of 200 curls has
    /// 200 closers of one connection each).
    pub closers: Vec<ProcessJson>,
    /// How many processes closed these connections in all.
    pub closers_total: u64,
    /// Connections their closer closed only by exiting (the kernel closed
    /// its files: no `close()` call, so no close call site).
    pub closed_at_exit: u64,
}

/// Closers listed in a churn finding at most.
pub const MAX_LISTED_CLOSERS: usize = 16;

/// The `max` processes that closed the most connections, most first (ties
/// by pid, for a stable order).
fn top_closers(closers: &Tally<Process>, max: usize) -> Vec<Process> {
    let mut ranked: Vec<(&Process, &u64)> = closers.iter().collect();
    ranked.sort_by(|(a, a_count), (b, b_count)| b_count.cmp(a_count).then(a.pid.cmp(&b.pid)));
    ranked.into_iter().take(max).map(|(p, _)| *p).collect()
}

impl Churn {
    pub const HEADING: &'static str = "Connection churn and TIME_WAIT (by owner and peer)";

    /// The churn of a folded group, if any of its connections closed.
    /// `span_ns`: the window they happened in; `kernel_timewait`: the
    /// kernel's `TIME_WAIT` and `FIN_WAIT2` sockets by network namespace
    /// and peer.
    pub(super) fn of(
        group: &Folded,
        span_ns: u64,
        kernel_timewait: &[HashMap<(u32, SocketAddr), u64>; 2],
    ) -> Option<Self> {
        let (key, flow) = (group.key, &group.flow);
        let [time_wait_kernel, fin_wait2_kernel] = kernel_timewait.each_ref().map(|counts| {
            flow.namespaces
                .iter()
                .filter_map(|&netns| counts.get(&(netns, key.peer)))
                .sum()
        });
        (flow.closed > 0).then(|| Self {
            process: ProcessJson::of(key.owner),
            processes: Processes::of(&group.pids),
            role: key.role,
            peer: key.peer.to_string(),
            connections: flow.closed,
            per_second: rate(flow.closed, span_ns),
            lifetime_us: Percentiles::of(&flow.lifetimes_us),
            active_closes: flow.active_closes,
            passive_closes: flow.passive_closes,
            closed_first: ClosedFirst::of(flow),
            resets: flow.resets,
            time_wait_now: group.time_wait_now,
            time_wait_by_pid: if group.pids.len() > 1 {
                group.time_wait_by_pid.clone()
            } else {
                Vec::new()
            },
            time_wait_kernel,
            fin_wait2_kernel,
            call_site: group.owner_site.clone(),
            close_call_site: group.close_site.clone(),
            closers: top_closers(&flow.closers, MAX_LISTED_CLOSERS)
                .into_iter()
                .filter_map(|c| ProcessJson::of(Some(c)))
                .collect(),
            closers_total: flow.closers.len() as u64,
            closed_at_exit: flow.closed_at_exit,
        })
    }

    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(
            out,
            "  {} {:?} {}: {} closed ({:.1}/s), lifetime {}, closed first by {:?} ({} local, {} \
             peer), timewait now {} (kernel {} TIME_WAIT, {} FIN_WAIT2)",
            FoldedProcess(self.process.as_ref(), &self.processes),
            self.role,
            self.peer,
            self.connections,
            self.per_second,
            latency(self.lifetime_us),
            self.closed_first,
            self.active_closes,
            self.passive_closes,
            self.time_wait_now,
            self.time_wait_kernel,
            self.fin_wait2_kernel,
        )?;
        if self.fin_wait2_kernel > 0 {
            writeln!(
                out,
                "      FIN_WAIT2: closed first here, and the peer has not sent its FIN (it keeps \
                 its end open)"
            )?;
        }
        call_site(out, "opened at", self.call_site.as_ref())?;
        call_site(out, "closed at", self.close_call_site.as_ref())?;
        if self.closed_at_exit > 0 {
            writeln!(
                out,
                "      {} closed when their process exited: no close() call (the kernel \
                 closed its files after a return from main, a kill or a crash)",
                self.closed_at_exit
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closers_are_capped_most_connections_first() {
        let mut closers = Tally::default();
        for pid in 1..=40u32 {
            closers.add(Process::named(pid, "curl"), 1);
        }
        closers.add(Process::named(99, "pool"), 7);
        closers.add(Process::named(98, "pool"), 7);
        let top = top_closers(&closers, MAX_LISTED_CLOSERS);
        assert_eq!(top.len(), MAX_LISTED_CLOSERS);
        assert_eq!((top[0].pid, top[1].pid, top[2].pid), (98, 99, 1));
    }
}
