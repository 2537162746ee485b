//! Records shared by the tcptrace kernel programs and userspace.
//!
//! Everything here crosses the kernel/user boundary, so every type is
//! `#[repr(C)]`, has no `bool` and no implicit padding, and its size is pinned
//! with a compile-time assertion: a change on one side that the other side
//! does not see fails the build instead of corrupting records.
#![no_std]
#![expect(
    clippy::pub_underscore_fields,
    reason = "explicit padding of records shared with the kernel: public so that both sides \
              can build them, underscored so that nobody reads them"
)]

#[cfg(feature = "user")]
mod comm_serde;
pub mod filter;
pub mod history;
pub mod layout;
pub mod life_ring;
pub mod phase_timing;
pub mod stack_budget;
pub mod state;
pub mod transition;

pub use filter::KernelFilter;
pub use history::History;
pub use layout::{
    AcceptLayout, KernelLayout, PortsAt, ResetLayout, RetransmitLayout, StateLayout, RAW_RECORD_LEN,
};
pub use state::TcpState;
pub use transition::{Birth, Moment, RetransmitPhase, Side};

/// Length of a task's `comm`, including the terminating NUL.
pub const TASK_COMM_LEN: usize = 16;

/// `AF_INET` and `AF_INET6` as the kernel spells them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// What a record in the ring buffer describes. The tag comes first in every
/// record so the decoder can reject what it does not know before reading on.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `sock:inet_sock_set_state` for a TCP socket.
    StateChange = 1,
    /// `tcp:tcp_retransmit_skb`.
    Retransmit = 2,
    /// `tcp:tcp_send_reset`.
    ResetSent = 3,
    /// `tcp:tcp_receive_reset`.
    ResetReceived = 4,
    /// Summary mode: a socket's life in one record, sent when it enters
    /// CLOSE (and LISTEN or `CLOSE_WAIT`, which the diagnoses need while the
    /// socket lives: then the next record starts from there). `raw` holds the
    /// start of its `struct sock_common`, `sock.history` what happened.
    Summary = 5,
    /// A `UserStack` record (not an `Event`): registers and user stack
    /// bytes of a system call, unwound in userspace.
    UserStack = 6,
    /// A read that returned 0 (end of file) on a socket in `CLOSE_WAIT`, in
    /// the reading task's system call: the code that saw the peer's FIN and
    /// must close. Sent once per socket; `raw` holds its `sock_common`.
    EofRead = 7,
    /// `tcp:tcp_retransmit_synack`: a SYN-ACK sent again for a connection
    /// request not yet accepted. `skaddr` and `sock` are the listener's;
    /// `raw` is the tracepoint record (the request's endpoints).
    SynAckRetransmit = 8,
    /// `tcp:tcp_retransmit_skb` from the raw tracepoint (kernels with
    /// BTF): `raw` holds the socket's `sock_common`, whose state is the
    /// retransmit's. The classic tracepoint runs behind perf's handler,
    /// which skips BPF while any other tracing program runs on the CPU (or
    /// drops the hit without a trace): a softirq's retransmits went
    /// missing under load.
    SockRetransmit = 9,
    /// A state change in every-event mode from the typed (or raw)
    /// tracepoint, which gives no record: `raw` holds the socket's
    /// `sock_common`, and `Event::transition` the old and new states.
    SockStateChange = 10,
    /// A `life_ring::LivesWaiting` nudge (not an `Event`): a CPU's ring
    /// of whole lives is a quarter full; read it.
    LivesWaiting = 11,
}

impl EventKind {
    #[must_use]
    pub const fn from_u16(tag: u16) -> Option<Self> {
        match tag {
            1 => Some(Self::StateChange),
            2 => Some(Self::Retransmit),
            3 => Some(Self::ResetSent),
            4 => Some(Self::ResetReceived),
            5 => Some(Self::Summary),
            6 => Some(Self::UserStack),
            7 => Some(Self::EofRead),
            8 => Some(Self::SynAckRetransmit),
            9 => Some(Self::SockRetransmit),
            10 => Some(Self::SockStateChange),
            11 => Some(Self::LivesWaiting),
            _ => None,
        }
    }
}

/// A task as seen by the kernel programs: who did something to a socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Task {
    /// Process id (thread group id); 0 means "nobody recorded".
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    /// The process's name: its thread-group leader's `comm`.
    #[cfg_attr(feature = "user", serde(with = "comm_serde"))]
    pub comm: [u8; TASK_COMM_LEN],
    /// The acting thread's own name (a pool thread's, say).
    #[cfg_attr(feature = "user", serde(with = "comm_serde"))]
    pub thread_comm: [u8; TASK_COMM_LEN],
    /// The `UserStack` record captured for this task's system call (its
    /// `id`), or 0 when none was taken.
    pub stack: u64,
}
const _: () = assert!(core::mem::size_of::<Task>() == 48);

impl Task {
    pub const NOBODY: Self = Self {
        tgid: 0,
        pid: 0,
        comm: [0; TASK_COMM_LEN],
        thread_comm: [0; TASK_COMM_LEN],
        stack: 0,
    };

    #[must_use]
    pub const fn is_known(&self) -> bool {
        self.tgid != 0
    }
}

/// `SockInfo::flags`: the owner was recorded in process context (connect or listen).
pub const OWNER_FROM_SYSCALL: u32 = 1 << 0;
/// `SockInfo::flags`: the owner was inherited from the listening socket (passive open).
pub const OWNER_FROM_LISTENER: u32 = 1 << 1;
/// `SockInfo::flags`: the closer was recorded (close/shutdown/abort in process context).
pub const CLOSER_KNOWN: u32 = 1 << 2;
/// `SockInfo::flags`: the socket was first seen mid-life (no birth observed).
pub const SEEN_MID_LIFE: u32 = 1 << 3;
/// `SockInfo::flags`: the owner is the process that accepted the socket
/// (a pre-fork server's worker), no longer its listener's owner.
pub const OWNER_FROM_ACCEPT: u32 = 1 << 4;
/// `SockInfo::flags`: a read returning end-of-file in `CLOSE_WAIT` was
/// taken: sent as an `EofRead` record, or, in summary mode, kept in
/// `SockInfo::eof_reader` (with `EOF_READ_KEPT`).
pub const EOF_READ_SENT: u32 = 1 << 5;
/// `SockInfo::flags`: the peer had sent data when its FIN arrived
/// (`tcp_sock.bytes_received` > 0 on entering `CLOSE_WAIT`). A server that
/// answers a request and closes (HTTP/1.0) sent data; one that refuses a
/// client by closing at once (a connection limit) did not.
pub const PEER_SENT_DATA: u32 = 1 << 6;
/// `SockInfo::flags`: `peer_silent_jiffies` was measured (at a CLOSE with
/// an error from an open connection: a reset or a timeout).
pub const PEER_SILENCE_KNOWN: u32 = 1 << 7;
/// `SockInfo::flags`, on a CLOSE record: the close call that closed the
/// socket sent a reset (`SO_LINGER` 0, unread data, an abort; see
/// `transition::close_sends_reset`). The kernel sends it after the CLOSE,
/// when the socket's record is `CLOSED`: this flag is how it is counted,
/// in both modes, and the reset itself is sent nowhere (the program on
/// `tcp_send_reset` finds the flag, `transition::reset_follows_close`,
/// and clears it). Every-event sessions show it after the CLOSE.
pub const RESET_BY_CLOSE: u32 = 1 << 8;
/// `SockInfo::flags`, in the `SOCKS` map only: the socket at this address
/// closed. Its record stays, to be written over in place by the next
/// socket born at the address (the slab allocator hands freed addresses
/// out again at once): an insert and a delete per socket cost the daemon's
/// state program a quarter of its time. Every lookup of a live socket
/// skips such records; userspace removes those left long enough
/// (`probe::SocketMap::sweep_closed`).
pub const CLOSED: u32 = 1 << 9;
/// `SockInfo::flags`, summary mode: `eof_reader` and `eof_read_ns` hold the
/// read that returned end-of-file, not yet in any summary sent. The next
/// summary carries it (userspace replays it as an `EofRead` event) and the
/// flag is cleared with the history it restarts.
pub const EOF_READ_KEPT: u32 = 1 << 10;
/// `SockInfo::flags`, summary mode: the socket is in `CLOSE_WAIT` and listed
/// in the `CLOSE_WAITING` map (see `transition::summary_sent_on`).
pub const CLOSE_WAIT_LISTED: u32 = 1 << 11;
/// `SockInfo::flags`: the close call that set `closer` ran as its process
/// exited (`PF_EXITING`: the kernel closing the files of a process that
/// returned, was killed or crashed), not in a `close()` of its code.
/// There is no call site to name, and for a socket in `CLOSE_WAIT` it is
/// the proof that the code never closed it.
pub const CLOSED_AT_EXIT: u32 = 1 << 12;

/// What the kernel remembers per socket, keyed by the `struct sock` address.
/// A copy travels with every event so userspace never has to guess the owner.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct SockInfo {
    /// Who created the socket (connect/listen) or owns its listener.
    pub owner: Task,
    /// Who closed it, when that happened in process context.
    pub closer: Task,
    /// cgroup v2 id of the owner at creation.
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns()` at creation; 0 when the socket was first seen mid-life.
    pub created_ns: u64,
    /// `bpf_ktime_get_ns()` when the socket entered its current state.
    pub state_since_ns: u64,
    /// Network namespace inode number (as in `/proc/PID/ns/net`), 0 if unknown.
    pub netns: u32,
    /// `OWNER_*`, `CLOSER_KNOWN`, `SEEN_MID_LIFE`, `EOF_READ_*`, ...
    pub flags: u32,
    /// Retransmits seen on this socket so far.
    pub retransmits: u32,
    /// How long the peer had been silent when the connection died of an
    /// error, in jiffies (`tcp_jiffies32` minus the later of the last data
    /// received, `icsk_ack.lrcvtime`, and the last acceptable ACK,
    /// `rcv_tstamp`): a reset after a long silence is what an idle-timeout
    /// drop looks like. Valid with `PEER_SILENCE_KNOWN`.
    pub peer_silent_jiffies: u32,
    /// The socket's life so far, kept in summary mode (see `history`).
    pub history: History,
    /// The inode of the socket's file (as `sock_diag` and `/proc/PID/fd`
    /// name it), read when a process connects or accepts; 0 until then.
    /// Summary mode sends nothing while a connection lives: this is how
    /// userspace finds a live connection's record (and its call site) in
    /// the socket map.
    pub inode: u64,
    /// Summary mode: `bpf_ktime_get_ns()` when this socket's last summary
    /// was sent, 0 before the first. Kernel bookkeeping (see
    /// `LIVE_COUNTS_EVERY_NS`), not kept in recordings.
    #[cfg_attr(feature = "user", serde(skip))]
    pub last_sent_ns: u64,
    /// Summary mode, with `EOF_READ_KEPT`: the task whose read returned
    /// end-of-file in `CLOSE_WAIT` (with its stack), kept here instead of
    /// sent, so a `CLOSE_WAIT` that ends promptly costs no record of its
    /// own; userspace reads it from the map for one that lingers.
    #[cfg_attr(feature = "user", serde(default = "no_task"))]
    pub eof_reader: Task,
    /// When that read happened (`bpf_ktime_get_ns()`).
    #[cfg_attr(feature = "user", serde(default))]
    pub eof_read_ns: u64,
}
const _: () = assert!(core::mem::size_of::<SockInfo>() == 248);

/// The default of a task missing from a recording made before it was kept.
#[cfg(feature = "user")]
const fn no_task() -> Task {
    Task::NOBODY
}

/// Summary mode: the value of the `CLOSE_WAITING` map, whose keys are the
/// sockets in `CLOSE_WAIT`. Their endpoints, as a summary record has them
/// (`Event::local_port_be` and `Event::raw`, decoded the same way): the
/// kernel's record of a passive socket has no inode in the daemon (no
/// accept hook), so userspace matches a dump's socket by its endpoints.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CloseWaiting {
    pub local_port_be: u16,
    pub _pad: [u8; 6],
    pub raw: [u8; RAW_RECORD_LEN],
}
const _: () = assert!(core::mem::size_of::<CloseWaiting>() == 104);

/// Summary mode: a live connection's retransmits are counted in its
/// history and sent (a summary of its life so far) when its last summary
/// is at least this old, the first one of a life at once. So the metrics
/// of a long-lived connection lag by this much at most, not until it ends,
/// and a lossy connection sends one record per interval, not one per
/// retransmit.
pub const LIVE_COUNTS_EVERY_NS: u64 = 5_000_000_000;

impl SockInfo {
    pub const EMPTY: Self = Self {
        owner: Task::NOBODY,
        closer: Task::NOBODY,
        cgroup_id: 0,
        created_ns: 0,
        state_since_ns: 0,
        netns: 0,
        flags: 0,
        retransmits: 0,
        peer_silent_jiffies: 0,
        history: History::EMPTY,
        inode: 0,
        last_sent_ns: 0,
        eof_reader: Task::NOBODY,
        eof_read_ns: 0,
    };

    /// Summary mode: a summary of this socket's life so far was just sent
    /// (at `now`, the socket in `state`); the next one carries only what
    /// happens from here on.
    #[expect(
        clippy::inline_always,
        reason = "called from the kernel programs, which keep every helper inline"
    )]
    #[inline(always)]
    pub fn summary_sent(&mut self, state: i32, now: u64) {
        self.history.restart(state);
        self.last_sent_ns = now;
        self.flags &= !EOF_READ_KEPT;
    }
}

// The kernel programs clear a record word by word (`emit::zero_words`):
// `SockInfo::EMPTY` (and the `Task::NOBODY`s in it) must stay all zeros.
const _: () = {
    // SAFETY: `SockInfo` is plain data of exactly this many bytes.
    let bytes: [u8; core::mem::size_of::<SockInfo>()] =
        unsafe { core::mem::transmute(SockInfo::EMPTY) };
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i] == 0, "SockInfo::EMPTY must be all zeros");
        i += 1;
    }
};

/// `Event::context` bit: the tracepoint fired in a system call of `actor`
/// (not in softirq/hardirq, where "current" is whoever was interrupted).
pub const CTX_PROCESS: u32 = 1 << 0;

/// One record in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// An `EventKind`; checked by the decoder before anything else is read.
    pub kind: u16,
    /// How many bytes of `raw` hold the tracepoint record.
    pub raw_len: u16,
    /// `CTX_*` bits.
    pub context: u32,
    pub ts_ns: u64,
    /// Address of the `struct sock` (0 for a reset sent without a socket).
    pub skaddr: u64,
    /// The socket's record after this event was applied.
    pub sock: SockInfo,
    /// The current task when `CTX_PROCESS` is set, else `Task::NOBODY`.
    pub actor: Task,
    /// Time spent in the state this event leaves, 0 if unknown.
    pub in_state_ns: u64,
    /// `sk->sk_err` when the socket enters CLOSE (ECONNREFUSED, ETIMEDOUT,
    /// EHOSTUNREACH, ECONNRESET, ...): why it died. 0 otherwise.
    pub sk_err: i32,
    /// `inet_sport` (network order) for the records that copy the socket
    /// (`Summary`, `EofRead`), 0 for the others: by CLOSE the kernel has
    /// already cleared `skc_num` of a socket that did not bind its port
    /// itself (an accepted connection, an ephemeral client port);
    /// `inet_sport` keeps it.
    pub local_port_be: u16,
    /// `SockStateChange`: the old state in the low byte, the new one in
    /// the high byte (`transition_of`); 0 for other kinds.
    pub transition: u16,
    /// The tracepoint record as the kernel wrote it; decoded in userspace with
    /// the offsets read from tracefs, so the layout is never hard-coded.
    pub raw: [u8; RAW_RECORD_LEN],
}
pub const EVENT_SIZE: usize = core::mem::size_of::<Event>();

/// `Event::transition` of a change from `old` to `new` (kernel state
/// numbers, all below 256).
#[expect(
    clippy::inline_always,
    reason = "called from the kernel programs, which keep every helper inline"
)]
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the low byte of each state number is kept, and all of them fit"
)]
#[inline(always)]
#[must_use]
pub const fn transition_of(old: i32, new: i32) -> u16 {
    (old as u16 & 0xff) | ((new as u16 & 0xff) << 8)
}

/// The (old, new) states of an `Event::transition`.
#[must_use]
pub const fn states_of(transition: u16) -> (i32, i32) {
    ((transition & 0xff) as i32, (transition >> 8) as i32)
}
const _: () = assert!(EVENT_SIZE == 432);

/// Per-CPU counters (index into the `COUNTERS` array), summed by userspace.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Events that could not be reserved in the ring buffer.
    EventsLost = 0,
    /// Events submitted.
    EventsSent = 1,
    /// Socket records not stored because the `SOCKS` map was full.
    SockMapFull = 2,
    /// Listener records not stored because the `LISTENERS` map was full.
    ListenerMapFull = 3,
    /// User stacks that could not be captured (no room in the ring buffer,
    /// or the user stack could not be read).
    StackErrors = 4,
    /// Tracepoint records that could not be read.
    ReadErrors = 5,
    /// User stacks captured (`UserStack` records sent).
    StacksTaken = 6,
    /// Summary mode: events folded into a socket's `History` instead of
    /// being sent (state changes, retransmits, resets).
    EventsFolded = 7,
    /// Summary mode: resets sent on a socket tcptrace does not know, or
    /// without one (a SYN to a closed port, a reset sent after the close).
    ResetsSentWithoutSocket = 8,
    /// Stacks reused from the process's last capture of the same kind
    /// (sampling, see `Settings::stack_interval_ms`).
    StacksSampled = 9,
    /// New processes not announced on the `PROCESSES` ring (it was full):
    /// their mappings are read later, and may be gone by then.
    ProcessesNotAnnounced = 10,
    /// Summary mode: resets received on a socket tcptrace does not know.
    ResetsReceivedWithoutSocket = 11,
    /// Records not sent because the session's filter rejects them in the
    /// kernel (`KernelFilter`).
    FilteredOut = 12,
    /// Retransmit attempts that did not go out (`err` of
    /// `tcp_retransmit_skb`: the original was still queued below TCP, or
    /// the transmit failed): counted here, not as retransmits.
    RetransmitsFailed = 13,
    /// Transitions of a known socket the kernel ran no program for: the
    /// next one left another state than the last one seen, or a retransmit
    /// found the socket in another state. Tracepoint hits the kernel skips
    /// without counting a recursion miss (seen in softirq on a busy VM).
    TransitionsMissed = 14,
    /// Summary mode: sockets entering `CLOSE_WAIT` not listed in the
    /// `CLOSE_WAITING` map (it was full): each was sent as a record instead,
    /// as every one was before the map. Nothing is lost; it costs more.
    CloseWaitMapFull = 15,
    /// Summary mode: whole lives sent through `EVENTS` because their CPU's
    /// ring of whole lives was full (`life_ring`). Nothing is lost; it
    /// costs more.
    LifeRingFull = 16,
}

impl Counter {
    /// Every counter, in slot order.
    pub const ALL: [Self; 17] = [
        Self::EventsLost,
        Self::EventsSent,
        Self::SockMapFull,
        Self::ListenerMapFull,
        Self::StackErrors,
        Self::ReadErrors,
        Self::StacksTaken,
        Self::EventsFolded,
        Self::ResetsSentWithoutSocket,
        Self::StacksSampled,
        Self::ProcessesNotAnnounced,
        Self::ResetsReceivedWithoutSocket,
        Self::FilteredOut,
        Self::RetransmitsFailed,
        Self::TransitionsMissed,
        Self::CloseWaitMapFull,
        Self::LifeRingFull,
    ];
}

/// Slots of the `COUNTERS` map: one per counter.
#[expect(clippy::cast_possible_truncation, reason = "a handful of counters")]
pub const COUNTER_SLOTS: u32 = Counter::ALL.len() as u32;
const _: () = {
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(
            Counter::ALL[i] as usize == i,
            "Counter::ALL is in slot order"
        );
        i += 1;
    }
};

/// Bytes of user stack copied per capture at most, from the stack pointer
/// up: the frames between the system call and the user's code (libc, the
/// runtime, its I/O library) fit in a few KiB (a JVM's: about 1 KiB). A
/// process's main thread copies only up to the top of its stack.
pub const USER_STACK_BYTES: usize = 4096;

/// A user stack captured at a system call (connect, listen, close): the
/// user registers at syscall entry and the stack above the stack pointer,
/// unwound in userspace with the binaries' CFI (frame pointers as the
/// fallback). Sent before the event that refers to it (`Task::stack`),
/// as long as its header and the `len` bytes of stack it holds.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UserStack {
    /// `EventKind::UserStack`.
    pub kind: u16,
    pub _pad: u16,
    /// Bytes of `stack` that hold the stack (read from `sp` up).
    pub len: u32,
    /// What `Task::stack` names this capture by: unique per boot.
    pub id: u64,
    pub tgid: u32,
    pub pid: u32,
    /// `task->mm`: which address space `ip` and `sp` belong to.
    pub mm: u64,
    pub comm: [u8; TASK_COMM_LEN],
    /// User registers at system call entry.
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub stack: [u8; USER_STACK_BYTES],
}
pub const USER_STACK_SIZE: usize = core::mem::size_of::<UserStack>();
/// Bytes of a `UserStack` record before its stack bytes.
pub const USER_STACK_HEADER: usize = core::mem::offset_of!(UserStack, stack);
const _: () = assert!(USER_STACK_HEADER == 72 && USER_STACK_SIZE == 72 + USER_STACK_BYTES);

/// A process's first stack capture, announced on the `PROCESSES` ring so
/// that a thread of its own reads the process's mappings at once (a
/// short-lived process may exit within milliseconds).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewProcess {
    pub tgid: u32,
    pub _pad: u32,
    /// `task->mm`.
    pub mm: u64,
}
const _: () = assert!(core::mem::size_of::<NewProcess>() == 16);

/// Key of the `LISTENERS` map: passive sockets inherit the owner of the
/// listener they were cloned from, found by the listener's bound address
/// and port in their network namespace. The address matters: another user
/// listening on 127.0.0.2:P must not take over the connections accepted
/// by a service on 127.0.0.1:P. A child is cloned from its listener before
/// its own addresses are set, so at its birth it still holds the
/// listener's bound address (0 for a wildcard): the same key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    pub netns: u32,
    pub port: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// `skc_rcv_saddr` in the first word for `AF_INET`, the rest 0;
    /// `skc_v6_rcv_saddr` for `AF_INET6`; as in memory (network order).
    pub addr: [u32; 4],
}
const _: () = assert!(core::mem::size_of::<ListenerKey>() == 24);

#[cfg(feature = "user")]
impl ListenerKey {
    /// The key of a listener bound to `local` (as a socket dump shows it).
    #[must_use]
    pub fn bound_to(netns: u32, local: core::net::SocketAddr) -> Self {
        let (family, addr) = match local.ip() {
            core::net::IpAddr::V4(ip) => (AF_INET, [u32::from_ne_bytes(ip.octets()), 0, 0, 0]),
            core::net::IpAddr::V6(ip) => {
                let o = ip.octets();
                let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                (AF_INET6, [word(0), word(4), word(8), word(12)])
            }
        };
        Self {
            netns,
            port: local.port(),
            family,
            addr,
        }
    }
}

/// Value of the `LISTENERS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    pub owner: Task,
    pub cgroup_id: u64,
    /// The listening socket; a listener only removes its own entry on close
    /// (several `SO_REUSEPORT` listeners may share a port).
    pub skaddr: u64,
}
const _: () = assert!(core::mem::size_of::<Listener>() == 64);

/// Key of the `STACK_SAMPLES` map: one sampled stack per process and kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackSampleKey {
    pub tgid: u32,
    /// `STACK_KIND_*`.
    pub kind: u32,
}
const _: () = assert!(core::mem::size_of::<StackSampleKey>() == 8);

pub const STACK_KIND_BIRTH: u32 = 0;
pub const STACK_KIND_CLOSE: u32 = 1;
pub const STACK_KIND_ACCEPT: u32 = 2;
pub const STACK_KIND_EOF: u32 = 3;

/// Value of the `STACK_SAMPLES` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackSample {
    /// When the process's next capture of this kind is due at the steady
    /// rate (see `stack_budget`).
    pub due_ns: u64,
    /// The `UserStack::id` of that capture.
    pub stack: u64,
    /// `task->mm` when it was taken: after an exec in the same pid, the
    /// old program's stack is not the new one's.
    pub mm: u64,
}
const _: () = assert!(core::mem::size_of::<StackSample>() == 24);

/// A CPU's last stack sample of one kind (`RECENT_SAMPLES`), and whose.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecentSample {
    pub tgid: u32,
    pub _pad: u32,
    pub sample: StackSample,
}
const _: () = assert!(core::mem::size_of::<RecentSample>() == 32);

/// Knobs userspace sets before load (a `.rodata` global).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Capture user stacks at connect, listen and close (1) or not (0).
    pub capture_stacks: u32,
    /// Wake the reader when the bytes waiting in the event ring buffer
    /// cross this mark; other records are submitted without a wakeup and
    /// drained on a timer.
    pub wakeup_bytes: u32,
    /// The same mark for the stack ring buffer (`USER_STACKS`).
    pub stack_wakeup_bytes: u32,
    /// Offset of `sp` in `struct pt_regs` (from BTF); the programs accept
    /// only x86-64's, and take no user stack bytes elsewhere.
    pub regs_sp: u32,
    /// Capture at most one stack per process and call kind (birth, close)
    /// in this many milliseconds, after bursts of `stack_burst`; events in
    /// between reuse the last one (see `stack_budget`). 0 captures every
    /// time.
    pub stack_interval_ms: u32,
    /// Captures a process may take back to back (at least 1).
    pub stack_burst: u32,
    /// 1: summary mode (the daemon). State changes update the socket's
    /// `History` in the kernel and only CLOSE, LISTEN and `CLOSE_WAIT` send a
    /// `Summary` record; retransmits outside the closing phase and resets
    /// on a socket are counted there instead of sent. 0: every event is sent.
    pub summary: u32,
    /// tcptrace's own process: its sockets are traced, but no stack is
    /// taken for them (it would symbolize itself, a large binary, for
    /// nothing a user asked about). 0: none.
    pub tracer_tgid: u32,
    /// 1: time the state program's runs and their parts into `PHASE_NS`
    /// (profiling only, see `phase_timing`). 0: no clock read is added.
    pub phase_timing: u32,
    /// Summary mode: slots of each CPU's ring of whole lives (a power of
    /// two, see `life_ring`); 0 sends whole lives through `EVENTS`.
    pub life_slots: u32,
}
const _: () = assert!(core::mem::size_of::<Settings>() == 40);

impl Settings {
    pub const DEFAULT: Self = Self {
        capture_stacks: 1,
        wakeup_bytes: 256 * 1024,
        stack_wakeup_bytes: 2 * 1024 * 1024,
        regs_sp: 0,
        stack_interval_ms: 0,
        stack_burst: 1,
        summary: 0,
        tracer_tgid: 0,
        phase_timing: 0,
        life_slots: 0,
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] plain data without padding holes
    // (sizes are asserted above) and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Task {}
    unsafe impl aya::Pod for super::SockInfo {}
    unsafe impl aya::Pod for super::CloseWaiting {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::life_ring::LifeSlot {}
    unsafe impl aya::Pod for super::life_ring::LifePositions {}
    unsafe impl aya::Pod for super::UserStack {}
    unsafe impl aya::Pod for super::NewProcess {}
    unsafe impl aya::Pod for super::ListenerKey {}
    unsafe impl aya::Pod for super::Listener {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::KernelFilter {}
    unsafe impl aya::Pod for super::StateLayout {}
    unsafe impl aya::Pod for super::RetransmitLayout {}
    unsafe impl aya::Pod for super::ResetLayout {}
    unsafe impl aya::Pod for super::KernelLayout {}
    unsafe impl aya::Pod for super::AcceptLayout {}
}
