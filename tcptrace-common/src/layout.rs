//! Where the kernel programs find what they need.
//!
//! Tracepoint record layouts change between kernel versions, so userspace
//! reads the offsets from tracefs (`events/<cat>/<name>/format`) and
//! `struct sock` offsets from BTF, and hands them to the programs as
//! read-only globals before load. Only the fields the kernel side itself
//! needs are here; userspace decodes the rest from the raw record copy.

/// Bytes of the tracepoint record copied into every event.
pub const RAW_RECORD_LEN: usize = 96;

/// Where a tracepoint record holds its two ports, as userspace decodes
/// them: the kernel's port filter reads the same bytes. Offsets of 0 mean
/// "not in this record" (offset 0 is the common header): the filter then
/// lets the record by and userspace decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortsAt {
    pub sport: u16,
    pub dport: u16,
    /// 1: network byte order (a `sockaddr`'s port), 0: host order (the
    /// `__u16 sport`/`dport` fields).
    pub network_order: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<PortsAt>() == 8);

/// `sock:inet_sock_set_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateLayout {
    pub skaddr: u32,
    pub oldstate: u32,
    pub newstate: u32,
    pub protocol: u32,
    /// Bytes to copy into `Event::raw` (at most `RAW_RECORD_LEN`).
    pub record_len: u32,
    /// The local port is also where a new listener's key comes from.
    pub ports: PortsAt,
}
const _: () = assert!(core::mem::size_of::<StateLayout>() == 28);

/// `tcp:tcp_retransmit_skb`, and `tcp:tcp_retransmit_synack` (whose
/// `skaddr` is the listener's and which has no `err`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetransmitLayout {
    pub skaddr: u32,
    pub record_len: u32,
    pub ports: PortsAt,
    /// The attempt's result (an int, 0 when it went out); 0: no such field
    /// (before Linux 6.11), every attempt counts.
    pub err: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<RetransmitLayout>() == 24);

/// `tcp:tcp_send_reset` and `tcp:tcp_receive_reset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetLayout {
    pub skaddr: u32,
    pub record_len: u32,
    pub ports: PortsAt,
    /// `skbaddr`, the packet a reset answers (NULL for an active reset;
    /// `tcp_send_reset` only); 0: no such field.
    pub packet: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ResetLayout>() == 24);

/// `struct sock` offsets resolved from BTF; 0 means "unresolved".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// `sk->__sk_common.skc_net.net`
    pub sock_net: u32,
    /// `net->ns.inum`
    pub net_inum: u32,
    /// `sk->sk_err`
    pub sock_err: u32,
    /// `sk->sk_protocol` (a u16)
    pub sock_protocol: u32,
    /// `sk->__sk_common.skc_num`: the local port, host order (a u16)
    pub sock_num: u32,
    /// `sk->__sk_common.skc_dport`: the peer's port, network order (a u16)
    pub sock_dport: u32,
    /// `task->group_leader`: the process's main thread, whose `comm` is the
    /// process name (a thread's own `comm` is often a pool thread's name)
    pub task_group_leader: u32,
    /// `task->comm`
    pub task_comm: u32,
    /// `task->mm`: the address space; with the tgid it tells a process
    /// apart from an earlier one with the same pid, and from itself before exec
    pub task_mm: u32,
    /// `task->files`, `files->fdt`, `fdt->max_fds`, `fdt->fd`,
    /// `file->private_data` (a `struct socket`) and `socket->sk`: from the
    /// fd `accept()` returned to the socket it accepted.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    /// `sk->__sk_common.skc_state`
    pub sock_state: u32,
    /// `mm->start_stack`: the top of the main thread's stack
    pub mm_start_stack: u32,
    /// `inet_sk(sk)->inet_sport`: the local port, network order, kept
    /// after CLOSE clears `skc_num` (a u16)
    pub inet_sport: u32,
    /// `task->se.cfs_rq`: the task's CFS runqueue (a pointer); with
    /// `cfs_rq_rq` and `preempt_count_from_rq`, the way to this CPU's
    /// `preempt_count`, which tells softirq from process context. 0 when
    /// this kernel has no such path (the softirq programs keep a flag).
    pub task_se_cfs_rq: u32,
    /// `cfs_rq->rq`: the CPU's runqueue (a pointer; `CONFIG_FAIR_GROUP_SCHED`)
    pub cfs_rq_rq: u32,
    /// Per-CPU `__preempt_count` minus per-CPU `runqueues`, from the
    /// kernel BTF's `.data..percpu` section: added to this CPU's `rq`,
    /// the address of this CPU's `preempt_count` (an int).
    pub preempt_count_from_rq: i32,
    /// `tcp_sk(sk)->bytes_received` (a u64), 0 when unknown
    pub tcp_bytes_received: u32,
    /// `tcp_sk(sk)->rcv_tstamp` and `inet_csk(sk)->icsk_ack.lrcvtime`
    /// (u32 jiffies): when the peer last sent an acceptable ACK, and data.
    /// 0 when unknown.
    pub tcp_rcv_tstamp: u32,
    pub tcp_lrcvtime: u32,
    /// `tcp_sk(sk)->snd_nxt` and `write_seq` (u32 sequence numbers): they
    /// differ while data the user wrote has not been sent. 0 when unknown.
    pub tcp_snd_nxt: u32,
    pub tcp_write_seq: u32,
    /// `sk->__sk_common.skc_family` (a u16), `skc_rcv_saddr` (a u32) and
    /// `skc_v6_rcv_saddr` (16 bytes): the bound address of a listener,
    /// which its children carry at birth (see `ListenerKey`).
    pub sock_family: u32,
    pub sock_rcv_saddr: u32,
    pub sock_v6_rcv_saddr: u32,
    /// `sk->sk_socket` (a pointer, NULL once the file is gone) and, from
    /// that `struct socket`, its inode's `i_ino` (a `struct socket_alloc`
    /// holds both): the number `sock_diag` reports. 0 when unknown.
    pub sock_socket: u32,
    pub socket_ino: u32,
    /// `sk->__sk_common.skc_daddr` (a u32, usually at 0) and
    /// `skc_v6_daddr` (16 bytes): with the fields above, every address
    /// and port a record's `raw` copy of `sock_common` is decoded from
    /// (see `emit::Raw::SockFields`).
    pub sock_daddr: u32,
    pub sock_v6_daddr: u32,
    /// `task->flags` (a u32): `PF_EXITING` tells a close made by the
    /// kernel closing an exiting process's files. 0 when unknown.
    pub task_flags: u32,
}
const _: () = assert!(core::mem::size_of::<KernelLayout>() == 136);

/// `syscalls:sys_exit_accept4` and `syscalls:sys_exit_accept`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptLayout {
    /// The returned fd (a `long`).
    pub ret: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<AcceptLayout>() == 8);
