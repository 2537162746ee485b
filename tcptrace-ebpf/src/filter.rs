//! The session's filter, applied before a record is sent or a stack taken
//! (the rules are `tcptrace_common::filter`'s; this looks up the listed
//! values, reads the ports and cgroup verdicts the rules need, and counts
//! what it holds back).

use aya_ebpf::{helpers::bpf_get_current_cgroup_id, programs::TracePointContext};
use tcptrace_common::{
    filter::Listed, Counter, KernelFilter, PortsAt, SockInfo, Task, TASK_COMM_LEN,
};

use crate::{
    context::StackFor,
    maps::{
        count, kernel_layout, FILTER, FILTER_COMMS, FILTER_PIDS, FILTER_PORTS, REJECTED_CGROUPS,
    },
    sock::{read_at, Probe, SockRead},
};

/// The listed values: keys of the filter's hash maps.
struct Maps;

impl Listed for Maps {
    #[inline(always)]
    fn pid(&self, tgid: u32) -> bool {
        // SAFETY: the value is only tested for presence.
        unsafe { FILTER_PIDS.get(tgid) }.is_some()
    }
    #[inline(always)]
    fn comm(&self, comm: &[u8; TASK_COMM_LEN]) -> bool {
        // SAFETY: as above.
        unsafe { FILTER_COMMS.get(comm) }.is_some()
    }
    #[inline(always)]
    fn port(&self, port: u16) -> bool {
        // SAFETY: as above.
        unsafe { FILTER_PORTS.get(port) }.is_some()
    }
}

/// The filter userspace wrote (no criteria until it has).
#[inline(always)]
fn kernel_filter() -> &'static KernelFilter {
    FILTER.get(0).unwrap_or(&KernelFilter::NONE)
}

/// Whether a record about a socket goes out: `ports` is asked only when
/// the filter lists ports. A record held back is counted.
#[inline(always)]
pub fn allows(info: &SockInfo, actor: &Task, ports: impl FnOnce() -> Option<(u16, u16)>) -> bool {
    let filter = kernel_filter();
    let ports = if filter.by_port != 0 { ports() } else { None };
    let pass =
        filter.passes(&Maps, &info.owner, actor, ports) && !rejected_cgroup(filter, info.cgroup_id);
    if !pass {
        count(Counter::FilteredOut);
    }
    pass
}

/// `kind`, or no stack when the filter's ports rule the socket out (a
/// connect's local port is not chosen yet: only its peer's port, or a port
/// it bound, can match then).
#[inline(always)]
pub fn stack_unless_ruled_out(
    kind: StackFor,
    ports: impl FnOnce() -> Option<(u16, u16)>,
) -> StackFor {
    let filter = kernel_filter();
    if filter.by_port == 0 {
        return kind;
    }
    match ports() {
        Some((local, remote)) if !filter.passes_ports(&Maps, local, remote) => StackFor::None,
        _ => kind,
    }
}

/// Whether the current task may take a stack: its process and its cgroup
/// pass the filter.
#[inline(always)]
pub fn allows_capture(task: &Task) -> bool {
    let filter = kernel_filter();
    filter.passes_task(&Maps, task)
        && (filter.by_workload == 0
            // SAFETY: a BPF helper with no memory arguments.
            || !rejected_cgroup(filter, unsafe { bpf_get_current_cgroup_id() }))
}

#[inline(always)]
fn rejected_cgroup(filter: &KernelFilter, cgroup: u64) -> bool {
    // SAFETY: the value is only tested for presence.
    filter.by_workload != 0 && cgroup != 0 && unsafe { REJECTED_CGROUPS.get(cgroup) }.is_some()
}

/// The ports of a tracepoint record, where its layout says they are.
#[inline(always)]
pub fn record_ports(ctx: &TracePointContext, at: PortsAt) -> Option<(u16, u16)> {
    if at.sport == 0 || at.dport == 0 {
        return None;
    }
    // SAFETY: probe reads of the record at offsets from its tracefs format.
    let (sport, dport): (u16, u16) = unsafe {
        (
            ctx.read_at(usize::from(at.sport)).ok()?,
            ctx.read_at(usize::from(at.dport)).ok()?,
        )
    };
    Some(if at.network_order != 0 {
        (u16::from_be(sport), u16::from_be(dport))
    } else {
        (sport, dport)
    })
}

/// A socket's ports as summary and end-of-file records carry them: the
/// local one from `inet_sport` (CLOSE clears `skc_num`), the peer's from
/// `skc_dport`.
#[inline(always)]
pub fn socket_ports<R: SockRead>(skaddr: u64) -> Option<(u16, u16)> {
    let layout = kernel_layout();
    // `inet_sport` lies in `inet_sock`, beyond `struct sock`.
    let sport = read_at::<Probe, u16>(skaddr, layout.inet_sport).ok()?;
    let dport = read_at::<R, u16>(skaddr, layout.sock_dport).ok()?;
    Some((u16::from_be(sport), u16::from_be(dport)))
}
