//! What every kind of finding is made of: the process it names, folded
//! processes, percentiles, who closed first, rates.

use std::cmp::Reverse;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    callsite::CallSites,
    container::ContainerLabels,
    diagnose::{flows::Flow, fold::MAX_LISTED_PIDS},
    table::{Process, StackRef},
    tally::Tally,
};

#[derive(Clone, Debug, Serialize)]
pub struct ProcessJson {
    pub pid: u32,
    pub comm: String,
    /// Where it ran, by name (`Report::name_processes`): Kubernetes
    /// namespace and pod, and the container's name; left out when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub container: String,
    /// The cgroup key its sockets carried (0: not known), which the
    /// names and the daemon's labels come from.
    #[serde(skip)]
    pub cgroup: u64,
}

impl ProcessJson {
    pub(super) fn of(process: Option<Process>) -> Option<Self> {
        process.map(|p| Self {
            pid: p.pid,
            comm: p.comm().into_owned(),
            namespace: String::new(),
            pod: String::new(),
            container: String::new(),
            cgroup: p.cgroup,
        })
    }

    /// Takes the names of the workload it ran in.
    pub fn name(&mut self, labels: &ContainerLabels) {
        self.namespace.clone_from(&labels.namespace);
        self.pod.clone_from(&labels.pod);
        self.container.clone_from(&labels.container);
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Percentiles {
    pub(super) fn of(h: &Histogram<u32>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        })
    }
}

/// Which side closed a group's connections first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedFirst {
    Local,
    Peer,
    Mixed,
    Unknown,
}

impl ClosedFirst {
    pub(super) fn of(flow: &Flow) -> Self {
        match (flow.active_closes, flow.passive_closes) {
            (0, 0) => Self::Unknown,
            (_, 0) => Self::Local,
            (0, _) => Self::Peer,
            _ => Self::Mixed,
        }
    }
}

/// How many processes of one program a finding folds (see
/// `diagnose::fold`), and which: one row for a shell loop of 200 curls.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Processes {
    /// Processes folded into this finding.
    pub pids: u64,
    /// Their pids (at most `MAX_LISTED_PIDS`), when more than one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pid_list: Vec<u32>,
}

impl Processes {
    pub(super) fn of(pids: &[u32]) -> Self {
        Self {
            pids: pids.len().max(1) as u64,
            pid_list: if pids.len() > 1 {
                pids.iter().copied().take(MAX_LISTED_PIDS).collect()
            } else {
                Vec::new()
            },
        }
    }
}

#[expect(clippy::cast_precision_loss, reason = "rates and ages for display")]
pub(super) fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[expect(clippy::cast_precision_loss, reason = "rates for display")]
pub(super) fn rate(count: u64, span_ns: u64) -> f64 {
    if span_ns == 0 {
        0.0
    } else {
        count as f64 / secs(span_ns).max(1e-3)
    }
}

/// Puts findings in `rank`'s order, and those that rank equal in the
/// order of what they say (their JSON): the maps they were gathered in
/// have no order of their own, and the same events must give the same
/// report, line for line.
pub(super) fn rank_findings<T: Serialize, K: Ord>(findings: &mut [T], rank: impl Fn(&T) -> K) {
    findings.sort_by_cached_key(|finding| {
        (
            rank(finding),
            serde_json::to_string(finding).unwrap_or_default(),
        )
    });
}

/// The stack that names a group's call site: the most frequent one among
/// those that reach the user's code, else the most frequent. (A JIT
/// runtime's first calls run interpreted, unnamed; later ones compiled and
/// named, on other addresses.) Of equally frequent ones, the lowest id:
/// the map's order is random, and the same events must name the same
/// call site.
pub(super) fn best_stack(counts: &Tally<StackRef>, call_sites: &CallSites) -> Option<StackRef> {
    let rank = |(&stack, &n): (&StackRef, &u64)| (n, Reverse(stack));
    let user = counts
        .iter()
        .filter(|(&stack, _)| call_sites.names_user_code(stack))
        .max_by_key(|&entry| rank(entry));
    user.or_else(|| counts.iter().max_by_key(|&entry| rank(entry)))
        .map(|(&stack, _)| stack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equally_frequent_stacks_name_the_same_call_site_every_time() {
        let stacks: Vec<StackRef> = (1..=6).map(|stack| StackRef { pid: 7, stack }).collect();
        let call_sites = CallSites::default();
        for _ in 0..16 {
            // Past its inline keys a tally hashes, each in its own
            // random order.
            let counts: Tally<StackRef> = stacks.iter().map(|&stack| (stack, 3)).collect();
            assert_eq!(best_stack(&counts, &call_sites), Some(stacks[0]));
        }
        let mut counts: Tally<StackRef> = stacks.iter().map(|&stack| (stack, 3)).collect();
        counts.add(stacks[4], 1);
        assert_eq!(
            best_stack(&counts, &call_sites),
            Some(stacks[4]),
            "the most frequent"
        );
    }
}
