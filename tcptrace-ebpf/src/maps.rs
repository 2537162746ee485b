//! Maps and load-time globals shared by every hook.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tcptrace_common::{
    filter::FILTER_VALUES,
    life_ring::{LifePositions, LifeSlot},
    phase_timing,
};
use tcptrace_common::{
    AcceptLayout, CloseWaiting, Counter, KernelFilter, KernelLayout, Listener, ListenerKey,
    PortsAt, RecentSample, ResetLayout, RetransmitLayout, Settings, SockInfo, StackSample,
    StackSampleKey, StateLayout, UserStack, CLOSED, COUNTER_SLOTS, TASK_COMM_LEN,
};

/// Records to userspace. Userspace may resize it before load.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Whole lives, a ring per CPU of `Settings::life_slots` slots, mapped by
/// userspace (see `tcptrace_common::life_ring`). Userspace sizes it
/// before load (one slot where the rings are off).
#[map]
pub static LIVES: Array<LifeSlot> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Each CPU ring's head (written here) and tail (written by userspace).
#[map]
pub static LIFE_POSITIONS: Array<LifePositions> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// User stack captures, apart from the events: a burst of 4 KiB captures
/// that fills this ring costs call sites, never events. Userspace may
/// resize it before load.
#[map]
pub static USER_STACKS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// A process's first stack capture: read at once by a thread of its own.
#[map]
pub static PROCESSES: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// `struct sock` address → what we know of that socket (or, flagged
/// `CLOSED`, of the last one there: see `live_sock`).
#[map]
pub static SOCKS: HashMap<u64, SockInfo> = HashMap::with_max_entries(262_144, 0);

/// The record of the live socket at `skaddr`: none when the one there is
/// `CLOSED` (its record waits for the next socket born at the address).
/// Every program but the births looks sockets up here.
#[inline(always)]
pub fn live_sock(skaddr: u64) -> Option<*mut SockInfo> {
    // SAFETY: a read of the flags of a map value, valid for this program run.
    SOCKS
        .get_ptr_mut(skaddr)
        .filter(|info| unsafe { (**info).flags } & CLOSED == 0)
}

/// Summary mode: the sockets in `CLOSE_WAIT` now, by `struct sock`
/// address (their records are in `SOCKS`), with their endpoints. Nothing
/// is sent when a socket enters `CLOSE_WAIT`: userspace looks here for the
/// ones that linger (a leak), a handful, instead of walking `SOCKS`. Full,
/// a socket entering `CLOSE_WAIT` is sent as a record instead
/// (`Counter::CloseWaitMapFull`).
#[map]
pub static CLOSE_WAITING: HashMap<u64, CloseWaiting> = HashMap::with_max_entries(65_536, 0);

/// (netns, local port) → owner of the listening socket.
#[map]
pub static LISTENERS: HashMap<ListenerKey, Listener> = HashMap::with_max_entries(16_384, 0);

/// Per CPU, per stack kind: the last sample used there, looked at before
/// `STACK_SAMPLES` (an array slot instead of a hash lookup).
#[map]
pub static RECENT_SAMPLES: PerCpuArray<RecentSample> = PerCpuArray::with_max_entries(4, 0);

/// The last stack taken per process and kind, for sampling (see
/// `Settings::stack_interval_ms`). LRU: old processes fall out by themselves.
#[map]
pub static STACK_SAMPLES: LruHashMap<StackSampleKey, StackSample> =
    LruHashMap::with_max_entries(16_384, 0);

/// The session's filter (see `tcptrace_common::filter`): which criteria
/// apply (one entry), and their values as keys of the three hash maps
/// after it. Written by userspace at start and at a daemon's reload.
#[map]
pub static FILTER: Array<KernelFilter> = Array::with_max_entries(1, 0);
#[map]
pub static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(FILTER_VALUES, 0);
#[map]
pub static FILTER_COMMS: HashMap<[u8; TASK_COMM_LEN], u8> =
    HashMap::with_max_entries(FILTER_VALUES, 0);
#[map]
pub static FILTER_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(FILTER_VALUES, 0);

/// cgroups whose sockets the filter's workload criteria reject, added by
/// userspace as it decides each cgroup (the value is unused). A cgroup not
/// decided yet passes.
#[map]
pub static REJECTED_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(16_384, 0);

/// Per-CPU: the address of this CPU's `preempt_count`, found once (see
/// `context::preempt_count`); 0 until then.
#[map]
pub static PREEMPT_COUNT_AT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counters, indexed by `tcptrace_common::Counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Per-CPU room where a stack capture is put together before it is sent
/// with only the stack bytes it holds (a ring-buffer reservation has a
/// fixed size).
#[map]
pub static STACK_SCRATCH: PerCpuArray<UserStack> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU nanoseconds and runs of each timed span (see
/// `tcptrace_common::phase_timing`); untouched unless timing is on.
#[map]
pub static PHASE_NS: PerCpuArray<u64> = PerCpuArray::with_max_entries(phase_timing::ENTRIES, 0);

/// Per-CPU working copy of a socket record (too big for the BPF stack).
/// Programs do not nest on one CPU, so one slot each is enough.
#[map]
pub static SCRATCH: PerCpuArray<SockInfo> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU: 1 while this CPU serves a softirq (see context.rs).
#[map]
pub static IN_SOFTIRQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU: the socket the last `tcp_receive_reset` was about, so that the
/// CLOSE it causes is not taken for a close() by whoever is current (the
/// reset may be processed from the socket backlog in process context).
/// Read only where BTF gives no offset of `sk_err`, which tells it too.
#[map]
pub static LAST_RESET_SOCK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU: the socket whose CLOSE just announced the reset its close call
/// sends next (`RESET_BY_CLOSE`), so that reset's program knows it by one
/// compare, without reading the socket or looking up its record; see
/// `reset::announced_by_close`.
#[map]
pub static ANNOUNCED_RESET: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

// Read-only globals, filled by userspace before load (see tcptrace-common::layout).
#[unsafe(no_mangle)]
static STATE_LAYOUT: StateLayout = StateLayout {
    skaddr: 0,
    oldstate: 0,
    newstate: 0,
    protocol: 0,
    record_len: 0,
    ports: NO_PORTS,
};
const NO_PORTS: PortsAt = PortsAt {
    sport: 0,
    dport: 0,
    network_order: 0,
    _pad: 0,
};
const NO_RETRANSMIT: RetransmitLayout = RetransmitLayout {
    skaddr: 0,
    record_len: 0,
    ports: NO_PORTS,
    err: 0,
    _pad: 0,
};
const NO_RESET: ResetLayout = ResetLayout {
    skaddr: 0,
    record_len: 0,
    ports: NO_PORTS,
    packet: 0,
    _pad: 0,
};
#[unsafe(no_mangle)]
static RETRANSMIT_LAYOUT: RetransmitLayout = NO_RETRANSMIT;
#[unsafe(no_mangle)]
static SYN_ACK_LAYOUT: RetransmitLayout = NO_RETRANSMIT;
#[unsafe(no_mangle)]
static SEND_RESET_LAYOUT: ResetLayout = NO_RESET;
#[unsafe(no_mangle)]
static RECEIVE_RESET_LAYOUT: ResetLayout = NO_RESET;
#[unsafe(no_mangle)]
static KERNEL_LAYOUT: KernelLayout = KernelLayout {
    sock_net: 0,
    net_inum: 0,
    sock_err: 0,
    sock_protocol: 0,
    sock_num: 0,
    sock_dport: 0,
    task_group_leader: 0,
    task_comm: 0,
    task_mm: 0,
    task_files: 0,
    files_fdt: 0,
    fdtable_max_fds: 0,
    fdtable_fd: 0,
    file_private_data: 0,
    socket_sk: 0,
    sock_state: 0,
    mm_start_stack: 0,
    inet_sport: 0,
    task_se_cfs_rq: 0,
    cfs_rq_rq: 0,
    preempt_count_from_rq: 0,
    tcp_bytes_received: 0,
    tcp_rcv_tstamp: 0,
    tcp_lrcvtime: 0,
    tcp_snd_nxt: 0,
    tcp_write_seq: 0,
    sock_family: 0,
    sock_rcv_saddr: 0,
    sock_v6_rcv_saddr: 0,
    sock_socket: 0,
    socket_ino: 0,
    task_flags: 0,
    sock_daddr: 0,
    sock_v6_daddr: 0,
};
#[unsafe(no_mangle)]
static ACCEPT_LAYOUT: AcceptLayout = AcceptLayout { ret: 0, _pad: 0 };
#[unsafe(no_mangle)]
static SETTINGS: Settings = Settings::DEFAULT;

/// A read-only global as the programs must see it: the loader fills it
/// before they run, so the compiler must not fold in the defaults above.
/// Reached through a pointer it cannot see through, each use loads only
/// the fields it reads (a volatile read of the whole struct loaded every
/// field, 30 loads for `KERNEL_LAYOUT`, at every use).
#[inline(always)]
fn filled<T>(global: &'static T) -> &'static T {
    let pointer: *const T = global;
    // SAFETY: a volatile read of a local: it still holds `global`'s address.
    unsafe { &*core::ptr::read_volatile(&raw const pointer) }
}
#[inline(always)]
pub fn state_layout() -> &'static StateLayout {
    filled(&STATE_LAYOUT)
}
#[inline(always)]
pub fn retransmit_layout() -> &'static RetransmitLayout {
    filled(&RETRANSMIT_LAYOUT)
}
#[inline(always)]
pub fn syn_ack_layout() -> &'static RetransmitLayout {
    filled(&SYN_ACK_LAYOUT)
}
#[inline(always)]
pub fn send_reset_layout() -> &'static ResetLayout {
    filled(&SEND_RESET_LAYOUT)
}
#[inline(always)]
pub fn receive_reset_layout() -> &'static ResetLayout {
    filled(&RECEIVE_RESET_LAYOUT)
}
#[inline(always)]
pub fn kernel_layout() -> &'static KernelLayout {
    filled(&KERNEL_LAYOUT)
}
#[inline(always)]
pub fn accept_layout() -> &'static AcceptLayout {
    filled(&ACCEPT_LAYOUT)
}
#[inline(always)]
pub fn settings() -> &'static Settings {
    filled(&SETTINGS)
}

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other CPU writes it, and tracepoint programs do
        // not nest on one CPU, so a plain add is enough.
        // SAFETY: this CPU's slot of a per-CPU array; programs do not nest on one CPU.
        unsafe { *slot += 1 };
    }
}
