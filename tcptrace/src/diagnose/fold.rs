//! Flows of many processes of one program fold into one finding per
//! (process name, cgroup, role, peer, call site): a shell loop that runs
//! curl 200 times is one finding with 200 pids, not 200 rows; the same
//! program in two containers is two findings, each named by its own.
//! Folding is done when the report is built, since call sites are known
//! only then.

use std::{borrow::Cow, net::SocketAddr};

use indexmap::IndexMap;

use super::flows::{Flow, FlowKey};
use crate::{callsite::CallSite, table::Role};

/// Pids listed per folded finding at most (the count is always exact).
pub const MAX_LISTED_PIDS: usize = 1000;

/// One finding's worth of flows.
pub struct Folded<'a> {
    /// The first member's key: its owner stands for the group.
    pub key: &'a FlowKey,
    /// Distinct pids of the members, sorted.
    pub pids: Vec<u32>,
    /// The member, or the sum of all of them.
    pub flow: Cow<'a, Flow>,
    /// `TIME_WAIT` sockets the members hold now (modelled).
    pub time_wait_now: u64,
    /// The same by member pid, for the pids holding any (sorted by pid).
    pub time_wait_by_pid: Vec<(u32, u64)>,
    pub owner_site: Option<CallSite>,
    pub close_site: Option<CallSite>,
}

/// What makes flows one finding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FoldKey {
    /// The process name and the cgroup key it ran in.
    comm: Option<(String, u64)>,
    role: Role,
    peer: SocketAddr,
    owner_site: Option<(String, Option<String>, Option<u32>)>,
    /// A stack was taken but could not be read (`CallSite::unresolved`).
    unread_site: bool,
}

/// A flow with what it folds by.
pub struct Member<'a> {
    pub key: &'a FlowKey,
    pub flow: &'a Flow,
    pub time_wait_now: u64,
    pub owner_site: Option<CallSite>,
    pub close_site: Option<CallSite>,
}

/// Groups `members` that share a process name, cgroup, role, peer and
/// call site. A member whose stack could not be read (its process exited
/// before tcptrace could read its mappings) is no evidence of another code
/// path: it joins the group of the same program, role and peer whose call
/// site is known, when there is exactly one. (A flow with no stack at all,
/// such as the handshakes a listener's owner completes, stays apart.)
#[must_use]
pub fn fold<'a>(members: impl IntoIterator<Item = Member<'a>>) -> Vec<Folded<'a>> {
    // In the members' order, not a hash's: findings that rank equal come
    // out in the same order every time (a replay prints the same lines).
    let mut groups: IndexMap<FoldKey, Vec<Member<'a>>> = IndexMap::new();
    for member in members {
        let key = FoldKey {
            comm: member
                .key
                .owner
                .map(|owner| (owner.comm().into_owned(), owner.cgroup)),
            role: member.key.role,
            peer: member.key.peer,
            owner_site: member
                .owner_site
                .as_ref()
                .filter(|s| s.unresolved.is_none())
                .map(|s| (s.function.clone(), s.file.clone(), s.line)),
            unread_site: member
                .owner_site
                .as_ref()
                .is_some_and(|s| s.unresolved.is_some()),
        };
        groups.entry(key).or_default().push(member);
    }
    let unknown: Vec<FoldKey> = groups.keys().filter(|k| k.unread_site).cloned().collect();
    for key in unknown {
        let mut known = groups.keys().filter(|k| {
            k.owner_site.is_some() && (&k.comm, k.role, k.peer) == (&key.comm, key.role, key.peer)
        });
        if let (Some(only), None) = (known.next().cloned(), known.next()) {
            let members = groups.shift_remove(&key).unwrap_or_default();
            groups.entry(only).or_default().extend(members);
        }
    }
    groups.into_values().map(merge).collect()
}

fn merge(mut members: Vec<Member<'_>>) -> Folded<'_> {
    // The busiest member stands for the group; of equals, the lowest pid,
    // so that the same events always give the same report.
    members.sort_by_key(|m| {
        (
            std::cmp::Reverse((m.flow.closed, m.flow.attempts)),
            m.key.owner.map(|owner| owner.pid),
        )
    });
    let mut pids: Vec<u32> = members
        .iter()
        .filter_map(|m| m.key.owner.map(|owner| owner.pid))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    let time_wait_now = members.iter().map(|m| m.time_wait_now).sum();
    let mut by_pid = std::collections::BTreeMap::<u32, u64>::new();
    for member in members.iter().filter(|m| m.time_wait_now > 0) {
        if let Some(owner) = member.key.owner {
            *by_pid.entry(owner.pid).or_default() += member.time_wait_now;
        }
    }
    let time_wait_by_pid = by_pid.into_iter().collect();
    let flow = if members.len() == 1 {
        Cow::Borrowed(members[0].flow)
    } else {
        let mut sum = Flow::default();
        for member in &members {
            sum.absorb(member.flow);
        }
        Cow::Owned(sum)
    };
    // The close call site of the busiest member that names the user's
    // code, else of one that names anything.
    let close_site = members
        .iter()
        .filter_map(|m| m.close_site.as_ref())
        .rev()
        .max_by_key(|site| (site.user_code, site.unresolved.is_none()))
        .cloned();
    // Likewise the call site: the busiest member's that is known.
    let known = members
        .iter()
        .position(|m| {
            m.owner_site
                .as_ref()
                .is_some_and(|s| s.unresolved.is_none())
        })
        .unwrap_or(0);
    let owner_site = members[known].owner_site.clone();
    let first = members.swap_remove(0);
    Folded {
        key: first.key,
        pids,
        flow,
        time_wait_now,
        time_wait_by_pid,
        owner_site,
        close_site,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_come_out_in_the_order_their_flows_were_met() {
        let peers: Vec<SocketAddr> = (1..=8)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 80)))
            .collect();
        let keys: Vec<FlowKey> = peers
            .iter()
            .map(|&peer| FlowKey {
                owner: None,
                role: Role::Active,
                peer,
            })
            .collect();
        // Equal flows: nothing ranks one group before another.
        let flow = Flow::default();
        for _ in 0..16 {
            let members = keys.iter().map(|key| Member {
                key,
                flow: &flow,
                time_wait_now: 0,
                owner_site: None,
                close_site: None,
            });
            let order: Vec<SocketAddr> = fold(members).iter().map(|g| g.key.peer).collect();
            assert_eq!(order, peers);
        }
    }
}
