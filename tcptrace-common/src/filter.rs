//! The session's process and port criteria as the kernel programs apply
//! them, so that a filtered session neither takes stacks nor sends records
//! for sockets it will not show.
//!
//! The kernel's verdict is a pre-filter: it may let by a record userspace
//! then filters out, never the other way round. A socket whose owner the
//! kernel does not know (one born before the session, whose owner
//! userspace learns from the start dump) passes the process criteria.
//!
//! Which criteria apply is a `KernelFilter` in the `FILTER` map; the values
//! are keys of the `FILTER_PIDS`, `FILTER_COMMS` and `FILTER_PORTS` hash
//! maps (`Listed` here), looked up rather than compared in a loop: the
//! kernel's verifier walks every branch of every path, and loops over
//! lists made the busiest program too large to load. Userspace writes all
//! of them at start and again when the daemon reloads its configuration.

#![expect(
    clippy::inline_always,
    reason = "called from the kernel programs, which keep every helper inline (no BPF-to-BPF calls)"
)]

use crate::{Task, TASK_COMM_LEN};

/// Values of each criterion the kernel can hold; a criterion with more is
/// applied in userspace only.
pub const FILTER_VALUES: u32 = 1024;

/// Which criteria the kernel applies (1) or not (0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelFilter {
    pub by_pid: u32,
    pub by_comm: u32,
    pub by_port: u32,
    /// Workload criteria (namespace, pod, container, cgroup): sockets of a
    /// cgroup in `REJECTED_CGROUPS` are not sent. Userspace decides a
    /// cgroup at its first record and adds it there when it fails.
    pub by_workload: u32,
}
const _: () = assert!(core::mem::size_of::<KernelFilter>() == 16);

/// Membership of the listed values (the kernel's hash maps).
pub trait Listed {
    fn pid(&self, tgid: u32) -> bool;
    /// A name as the kernel keeps it: the name, then NULs to the end.
    fn comm(&self, comm: &[u8; TASK_COMM_LEN]) -> bool;
    fn port(&self, port: u16) -> bool;
}

impl KernelFilter {
    /// No criteria: everything passes.
    pub const NONE: Self = Self {
        by_pid: 0,
        by_comm: 0,
        by_port: 0,
        by_workload: 0,
    };

    /// Whether a record about a socket passes: its owner or the task acting
    /// on it has one of the pids and one of the names (each criterion on its
    /// own, as userspace's `Filter::matches`), and one of its ports is
    /// listed (ports `None`: not known here). An owner the kernel does not
    /// know passes the process criteria.
    #[inline(always)]
    #[must_use]
    pub fn passes(
        &self,
        listed: &impl Listed,
        owner: &Task,
        actor: &Task,
        ports: Option<(u16, u16)>,
    ) -> bool {
        self.passes_process(listed, owner, actor)
            && ports.is_none_or(|(l, r)| self.passes_ports(listed, l, r))
    }

    #[inline(always)]
    fn passes_process(&self, listed: &impl Listed, owner: &Task, actor: &Task) -> bool {
        if self.by_pid == 0 && self.by_comm == 0 || !owner.is_known() {
            return true;
        }
        let pid_ok = self.by_pid == 0
            || listed.pid(owner.tgid)
            || actor.is_known() && listed.pid(actor.tgid);
        let comm_ok = self.by_comm == 0
            || listed.comm(&owner.comm)
            || actor.is_known() && listed.comm(&actor.comm);
        pid_ok && comm_ok
    }

    /// Whether the task may take a stack: a capture for a process the
    /// session does not show would be unwound for nothing.
    #[inline(always)]
    #[must_use]
    pub fn passes_task(&self, listed: &impl Listed, task: &Task) -> bool {
        (self.by_pid == 0 || listed.pid(task.tgid))
            && (self.by_comm == 0 || listed.comm(&task.comm))
    }

    /// Whether one of the two ports is listed (or no port is asked for).
    #[inline(always)]
    #[must_use]
    pub fn passes_ports(&self, listed: &impl Listed, local: u16, remote: u16) -> bool {
        self.by_port == 0 || listed.port(local) || listed.port(remote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small lists, as the tests need them.
    #[derive(Default)]
    struct Lists {
        pids: [u32; 2],
        comms: [[u8; TASK_COMM_LEN]; 2],
        ports: [u16; 2],
    }

    impl Listed for Lists {
        fn pid(&self, tgid: u32) -> bool {
            self.pids.contains(&tgid)
        }
        fn comm(&self, comm: &[u8; TASK_COMM_LEN]) -> bool {
            self.comms.contains(comm)
        }
        fn port(&self, port: u16) -> bool {
            self.ports.contains(&port)
        }
    }

    fn name(text: &str) -> [u8; TASK_COMM_LEN] {
        let mut comm = [0; TASK_COMM_LEN];
        comm[..text.len()].copy_from_slice(text.as_bytes());
        comm
    }

    fn task(tgid: u32, text: &str) -> Task {
        Task {
            tgid,
            pid: tgid,
            comm: name(text),
            thread_comm: name(text),
            stack: 0,
        }
    }

    const BY_COMM: KernelFilter = KernelFilter {
        by_comm: 1,
        ..KernelFilter::NONE
    };

    #[test]
    fn no_criteria_pass_everything() {
        let (f, lists) = (KernelFilter::NONE, Lists::default());
        assert!(f.passes(&lists, &task(1, "a"), &Task::NOBODY, Some((1, 2))));
        assert!(f.passes_task(&lists, &task(1, "a")));
    }

    #[test]
    fn owner_or_actor_may_match_and_an_unknown_owner_passes() {
        let lists = Lists {
            comms: [name("nginx"), name("nginx")],
            ..Lists::default()
        };
        let f = BY_COMM;
        assert!(f.passes(&lists, &task(1, "nginx"), &Task::NOBODY, None));
        assert!(f.passes(&lists, &task(1, "sh"), &task(2, "nginx"), None));
        assert!(!f.passes(&lists, &task(1, "sh"), &task(2, "curl"), None));
        assert!(f.passes(&lists, &Task::NOBODY, &Task::NOBODY, None));
        assert!(!f.passes(&lists, &task(1, "nginx2"), &Task::NOBODY, None));
    }

    #[test]
    fn ports_match_either_end_and_unknown_ports_pass() {
        let lists = Lists {
            ports: [80, 443],
            ..Lists::default()
        };
        let f = KernelFilter {
            by_port: 1,
            ..KernelFilter::NONE
        };
        assert!(f.passes_ports(&lists, 80, 5000));
        assert!(f.passes_ports(&lists, 5000, 443));
        assert!(!f.passes_ports(&lists, 5000, 5001));
        assert!(f.passes(&lists, &Task::NOBODY, &Task::NOBODY, None));
        assert!(!f.passes(&lists, &Task::NOBODY, &Task::NOBODY, Some((1, 2))));
    }

    #[test]
    fn pids_and_names_are_separate_criteria() {
        let lists = Lists {
            pids: [7, 7],
            comms: [name("curl"), name("curl")],
            ..Lists::default()
        };
        let f = KernelFilter {
            by_pid: 1,
            ..BY_COMM
        };
        assert!(f.passes(&lists, &task(7, "curl"), &Task::NOBODY, None));
        assert!(!f.passes(&lists, &task(8, "curl"), &Task::NOBODY, None));
        // The owner's pid and the actor's name.
        assert!(f.passes(&lists, &task(7, "sh"), &task(9, "curl"), None));
        assert!(f.passes_task(&lists, &task(7, "curl")));
        assert!(!f.passes_task(&lists, &task(7, "sh")));
    }
}
