//! `sock:inet_sock_set_state`: the probe point inside `tcp_set_state`.
//!
//! Attribution rules (docs/ARCHITECTURE.md, "Attribution rules and the
//! kernel facts behind them"): only transitions that run in a system
//! call of the acting process may name it. connect() (CLOSE→SYN_SENT) and
//! listen() (CLOSE→LISTEN) create the owner record; a passive child
//! (LISTEN→SYN_RECV, softirq) inherits the owner of its listener; close,
//! shutdown and aborts in process context record the closer. Everything else
//! (handshake completion, FIN received, TIME_WAIT hand-over, timers) runs in
//! softirq and is attributed through the owner record only.

use core::mem::MaybeUninit;

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
    EbpfContext,
};
use tcptrace_common::{
    phase_timing::{self, Phase},
    state::raw::{CLOSE, CLOSE_WAIT, ESTABLISHED, LISTEN},
    transition::{
        classify, close_sends_reset, close_wait_listed, ended_by_peer_reset,
        made_in_system_call_only, summary_depends_on_context, summary_sent_on, Attribution,
    },
    transition_of, CloseWaiting, Counter, EventKind, Listener, SockInfo, Task, CLOSED,
    CLOSED_AT_EXIT, CLOSER_KNOWN, CLOSE_WAIT_LISTED, CTX_PROCESS, EOF_READ_SENT, IPPROTO_TCP,
    OWNER_FROM_ACCEPT, OWNER_FROM_LISTENER, OWNER_FROM_SYSCALL, PEER_SENT_DATA, PEER_SILENCE_KNOWN,
    RESET_BY_CLOSE, SEEN_MID_LIFE,
};

use crate::{
    context::{
        current_cgroup_id, current_task, current_task_exiting, in_process_context, StackFor,
    },
    emit::{copy_words, emit, emit_whole_life, fill_raw, set_nobody, zero_words, Raw, Record},
    filter::{allows, record_ports, socket_ports, stack_unless_ruled_out},
    maps::{
        count, kernel_layout, live_sock, settings, state_layout, ANNOUNCED_RESET, CLOSE_WAITING,
        LAST_RESET_SOCK, LISTENERS, SCRATCH, SOCKS,
    },
    sock::{
        error_of, has_unsent_data, inode_of, listener_key_of, local_port_be_of, local_port_of,
        netns_of, peer_sent_data, peer_silent_jiffies, protocol_of, Probe, SockRead, Typed,
    },
    timing,
};

#[inline(always)]
fn read<T>(ctx: &TracePointContext, offset: u32) -> Result<T, ()> {
    // SAFETY: a probe read of the tracepoint record at an offset from its tracefs format; the helper checks the address.
    unsafe { ctx.read_at::<T>(offset as usize) }.map_err(|_| count(Counter::ReadErrors))
}

/// The classic tracepoint (trace mode): every transition is sent, with a
/// copy of the tracepoint record for userspace to decode.
pub fn on_set_state(ctx: &TracePointContext) -> Result<(), ()> {
    let layout = state_layout();
    let protocol: u16 = read(ctx, layout.protocol)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let change = Change {
        skaddr: read(ctx, layout.skaddr)?,
        old: read(ctx, layout.oldstate)?,
        new: read(ctx, layout.newstate)?,
    };
    on_change::<Probe>(
        ctx.as_ptr() as *const u8,
        &change,
        || read(ctx, u32::from(layout.ports.sport)),
        || record_ports(ctx, layout.ports),
    )
}

/// The typed tracepoint: its arguments are `TP_PROTO(sk, oldstate,
/// newstate)`, so the kernel builds no record, and `sk` is a pointer the
/// verifier knows, whose fields are read with plain loads. In summary mode
/// (the daemon) the socket's history is updated in place and only CLOSE
/// and `CLOSE_WAIT` send a record; in every-event mode each transition
/// sends one with the socket's `sock_common` (`SockStateChange`).
pub fn on_set_state_typed(ctx: &BtfTracePointContext) -> Result<(), ()> {
    socket_change::<Typed>(ctx.arg(0), ctx.arg(1), ctx.arg(2))
}

/// The same on the raw tracepoint, for kernels that refuse the typed one:
/// the same arguments, each socket field read with a probe read.
pub fn on_set_state_raw(ctx: &RawTracePointContext) -> Result<(), ()> {
    socket_change::<Probe>(ctx.arg(0), ctx.arg(1), ctx.arg(2))
}

/// A transition given as `TP_PROTO` arguments (typed or raw tracepoint).
#[inline(always)]
fn socket_change<R: SockRead>(skaddr: u64, old: u64, new: u64) -> Result<(), ()> {
    if protocol_of::<R>(skaddr) != IPPROTO_TCP {
        return Ok(());
    }
    let change = Change {
        skaddr,
        old: old as i32,
        new: new as i32,
    };
    let since = timing::start();
    // No tracepoint record to copy: the records copy the socket.
    let result = on_change::<R>(
        core::ptr::null(),
        &change,
        || local_port_of::<R>(skaddr),
        || socket_ports::<R>(skaddr),
    );
    timing::lap(phase_timing::transition(change.old, change.new), since);
    result
}

struct Change {
    skaddr: u64,
    old: i32,
    new: i32,
}

/// One transition, whichever hook saw it: `tracepoint_record` is the
/// classic tracepoint's record (null for the raw tracepoint). `local_port`
/// is read only when the listener map needs it, `ports` (local, remote, as
/// the record userspace decodes has them) only when the filter lists ports.
#[inline(always)]
fn on_change<R: SockRead>(
    tracepoint_record: *const u8,
    change: &Change,
    local_port: impl Fn() -> Result<u16, ()>,
    ports: impl Fn() -> Option<(u16, u16)>,
) -> Result<(), ()> {
    let &Change { skaddr, old, new } = change;
    // SAFETY: a BPF helper with no memory arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let summary = settings().summary != 0;
    // Why a socket ends (a reset, a timeout): it also tells a CLOSE the
    // peer's reset caused from a close call.
    let sk_err = if new == CLOSE {
        error_of::<R>(skaddr)
    } else {
        0
    };
    let peer_reset = new == CLOSE && closed_by_peer_reset(sk_err, skaddr);
    // Every-event records say for every transition whether a task acted;
    // summary mode needs to know only where the role depends on it. A
    // birth by connect() or listen() always has one.
    let process = made_in_system_call_only(old, new)
        || (!summary || summary_depends_on_context(old, new, peer_reset)) && {
            let since = timing::start();
            let process = in_process_context();
            timing::lap_phase(Phase::Context, since);
            process
        };
    let role = classify(old, new, process, peer_reset);
    let born = role == Attribution::Birth;
    let closing = role == Attribution::CloseCall;
    // Built in place: a zeroed task returned by value became a call to
    // a byte-wise memset subprogram on every run.
    let mut actor = MaybeUninit::<Task>::uninit();
    match role {
        _ if !process => set_nobody(&mut actor),
        Attribution::Birth => {
            let since = timing::start();
            actor.write(current_task(
                stack_unless_ruled_out(StackFor::Birth, &ports),
                now,
            ));
            timing::lap_phase(Phase::ActorAtBirth, since);
        }
        Attribution::CloseCall => {
            let since = timing::start();
            actor.write(current_task(
                stack_unless_ruled_out(StackFor::Close, &ports),
                now,
            ));
            timing::lap_phase(Phase::ActorAtClose, since);
        }
        // Only a printed event names who was running for the rest.
        _ if summary => set_nobody(&mut actor),
        _ => {
            actor.write(current_task(StackFor::None, now));
        }
    }
    // SAFETY: every arm above wrote the whole task.
    let actor = unsafe { actor.assume_init_ref() };

    // A known socket is updated where it lives. A birth is written over
    // the record left at its address (see CLOSED), or else built in a
    // per-CPU scratch slot (the 512-byte BPF stack cannot hold it next to
    // the task records) and inserted at the end; so is a socket first met
    // now.
    let new_life = born || role == Attribution::PassiveChild;
    let since = timing::start();
    let stored = if new_life {
        SOCKS.get_ptr_mut(skaddr)
    } else {
        live_sock(skaddr)
    };
    timing::lap_phase(Phase::SocketLookup, since);
    let fresh = stored.is_none();
    let info = match stored {
        // SAFETY: a pointer into the SOCKS map's value, valid for this program run; updates of one socket race only with its own softirq work, which sees a whole record, and a birth's with nothing (the socket before it at this address is closed).
        Some(known) => unsafe { &mut *known },
        // SAFETY: this CPU's scratch slot, used by one program run at a time.
        None => unsafe { &mut *SCRATCH.get_ptr_mut(0).ok_or(())? },
    };
    if born {
        init_born::<R>(info, skaddr, actor, now);
    } else if role == Attribution::PassiveChild {
        init_passive_child::<R>(info, skaddr, local_port()?, now);
    } else if fresh {
        // SAFETY: `info` is this CPU's whole scratch slot.
        unsafe { zero_words(info) };
        info.netns = netns_of::<R>(skaddr);
        info.flags = SEEN_MID_LIFE;
    }

    // An abortive close: its reset follows the CLOSE, after the socket's
    // record is closed; it is counted here (see RESET_BY_CLOSE).
    if closing && close_sends_reset(old, new, sk_err, || has_unsent_data(skaddr)) {
        info.flags |= RESET_BY_CLOSE;
        announce_reset(skaddr);
    }
    // Summary mode has no program on `tcp_receive_reset`: the reset that
    // ends a socket is counted with its CLOSE (every-event sessions send
    // it as a record of its own).
    if summary && peer_reset {
        info.history.count_reset(false);
    }
    if closing && info.flags & CLOSER_KNOWN == 0 {
        // SAFETY: two whole records.
        unsafe { copy_words(&raw mut info.closer, actor) };
        info.flags |= CLOSER_KNOWN;
        if current_task_exiting() {
            info.flags |= CLOSED_AT_EXIT;
        }
        // Without the accept hook (the daemon: syscall tracepoints tax
        // every system call on the host), a passive socket closed by
        // another process than its listener's owner (a pre-fork server's
        // worker) becomes that process's, with its close call site.
        if info.flags & OWNER_FROM_LISTENER != 0 && actor.tgid != info.owner.tgid {
            // SAFETY: two whole records.
            unsafe { copy_words(&raw mut info.owner, actor) };
            info.flags = (info.flags & !OWNER_FROM_LISTENER) | OWNER_FROM_ACCEPT;
        }
    }
    let in_state_ns = if info.state_since_ns != 0 {
        now.saturating_sub(info.state_since_ns)
    } else {
        0
    };
    info.state_since_ns = now;
    if !info.history.enter(old, new, now) {
        count(Counter::TransitionsMissed);
    }
    // The peer's FIN: had it answered anything first? (See PEER_SENT_DATA.)
    if new == CLOSE_WAIT && peer_sent_data(skaddr) {
        info.flags |= PEER_SENT_DATA;
    }

    // An open connection dying of an error (a reset, a timeout): how long
    // had the peer been silent? A reset after a long silence is what an
    // idle-timeout drop by a NAT or load balancer looks like.
    if sk_err != 0 && (old == ESTABLISHED || old == CLOSE_WAIT) {
        if let Some(silent) = peer_silent_jiffies(skaddr) {
            info.peer_silent_jiffies = silent;
            info.flags |= PEER_SILENCE_KNOWN;
        }
    }

    if born && new == LISTEN {
        remember_listener::<R>(skaddr, local_port()?, info);
    } else if old == LISTEN && new == CLOSE {
        forget_listener::<R>(skaddr, local_port()?, info.netns);
    }

    if fresh && new == CLOSE && info.flags & RESET_BY_CLOSE != 0 {
        keep_for_announced_reset(skaddr, info);
    }

    // Entering CLOSE_WAIT, a known socket is listed instead of sent.
    let listed = summary && !fresh && list_close_wait::<R>(skaddr, info, old, new);
    // A summary's close was made by its closer, whoever runs now.
    let acting = if summary && info.closer.is_known() {
        &info.closer
    } else {
        actor
    };
    let sent = (!summary || summary_sent_on(new) || (new == CLOSE_WAIT && !listed))
        && allows(info, acting, &ports);
    if sent {
        // The start of `struct sock` is `struct sock_common`: addresses,
        // ports and family, decoded in userspace at offsets from BTF.
        let (kind, raw) = if summary {
            (EventKind::Summary, Raw::socket_from::<R>(skaddr))
        } else if tracepoint_record.is_null() {
            (EventKind::SockStateChange, Raw::socket_from::<R>(skaddr))
        } else {
            (
                EventKind::StateChange,
                Raw::Copy {
                    from: tracepoint_record,
                    len: state_layout().record_len,
                },
            )
        };
        let record = Record {
            kind,
            ts_ns: now,
            context: if process { CTX_PROCESS } else { 0 },
            skaddr,
            sock: info,
            actor,
            in_state_ns,
            sk_err,
            raw,
            transition: if kind == EventKind::SockStateChange {
                transition_of(old, new)
            } else {
                0
            },
        };
        if summary && new == CLOSE && !fresh && tells_whole_life(info) {
            emit_whole_life(&record);
        } else {
            emit(&record);
        }
        // The summary just sent covers the life so far; the next one
        // covers what happens after.
        if summary && new != CLOSE {
            info.summary_sent(new, now);
        }
    } else if summary && !summary_sent_on(new) {
        count(Counter::EventsFolded);
    }

    if new == CLOSE {
        // The socket is done: its record stays for the next socket born
        // at this address to write over, and for the reset its close
        // announced to find.
        info.flags |= CLOSED;
    } else if fresh {
        let since = timing::start();
        let inserted = SOCKS.insert(skaddr, info, 0).is_ok();
        timing::lap_phase(Phase::SocketInsert, since);
        // Counted once per socket, at birth: an untracked socket tries
        // again at each later transition, in case room was freed.
        if !inserted && new_life {
            count(Counter::SockMapFull);
        }
    }
    Ok(())
}

/// Summary mode, at CLOSE: whether this summary is its socket's only
/// record: its birth was seen, and nothing was sent before (no summary of
/// its life so far, no end-of-file read of its own).
#[inline(always)]
fn tells_whole_life(info: &SockInfo) -> bool {
    info.created_ns != 0
        && info.last_sent_ns == 0
        && info.flags & (SEEN_MID_LIFE | EOF_READ_SENT) == 0
}

/// Summary mode: lists a known socket entering `CLOSE_WAIT` in the
/// `CLOSE_WAITING` map (true when it is listed now), and takes one leaving
/// it off. A socket that cannot be listed (the map is full) is sent.
#[inline(always)]
fn list_close_wait<R: SockRead>(skaddr: u64, info: &mut SockInfo, old: i32, new: i32) -> bool {
    match close_wait_listed(old, new) {
        // Flagged before listed: userspace takes a listed socket whose
        // record is not flagged for a stale entry, and removes it.
        Some(true) => {
            info.flags |= CLOSE_WAIT_LISTED;
            let mut listing = MaybeUninit::<CloseWaiting>::uninit();
            let at = listing.as_mut_ptr();
            // SAFETY: every field of the listing is written before it is
            // read; the socket is a traced one, read the way `R` reads.
            let listing = unsafe {
                (*at).local_port_be = local_port_be_of(skaddr);
                (*at)._pad = [0; 6];
                fill_raw(Raw::socket_from::<R>(skaddr), &mut (*at).raw);
                listing.assume_init_ref()
            };
            if CLOSE_WAITING.insert(skaddr, listing, 0).is_ok() {
                return true;
            }
            info.flags &= !CLOSE_WAIT_LISTED;
            count(Counter::CloseWaitMapFull);
        }
        Some(false) if info.flags & CLOSE_WAIT_LISTED != 0 => {
            info.flags &= !CLOSE_WAIT_LISTED;
            let _ = CLOSE_WAITING.remove(skaddr);
        }
        _ => {}
    }
    false
}

/// A socket met only at its CLOSE, whose close announced a reset: its
/// record is stored, closed, for the reset program to find the
/// announcement. Without room for it, the announcement is withdrawn
/// before the CLOSE is sent, and the reset is sent (or counted) on its
/// own: counted once either way.
#[inline(always)]
fn keep_for_announced_reset(skaddr: u64, info: &mut SockInfo) {
    info.flags |= CLOSED;
    let closed: &SockInfo = info;
    if SOCKS.insert(skaddr, closed, 0).is_err() {
        info.flags &= !RESET_BY_CLOSE;
    }
    info.flags &= !CLOSED;
}

/// Tells this CPU's next reset program that `skaddr`'s close call sends a
/// reset right after this CLOSE (see `reset::announced_by_close`).
#[inline(always)]
fn announce_reset(skaddr: u64) {
    if let Some(announced) = ANNOUNCED_RESET.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array; programs do not nest on one CPU.
        unsafe { *announced = skaddr };
    }
}

/// Whether this CLOSE is the doing of a reset the peer sent, even when
/// processed from the backlog in a system call: told by `sk_err` (see
/// `ended_by_peer_reset`), or, where BTF gave no offset for it (every-event
/// sessions only), by the marker their `tcp_receive_reset` program left.
#[inline(always)]
fn closed_by_peer_reset(sk_err: i32, skaddr: u64) -> bool {
    if kernel_layout().sock_err != 0 {
        ended_by_peer_reset(sk_err)
    } else {
        reset_marked_by_peer(skaddr)
    }
}

/// True when `tcp_receive_reset` just ran on this CPU for this socket.
/// Consumes the marker.
#[inline(always)]
fn reset_marked_by_peer(skaddr: u64) -> bool {
    match LAST_RESET_SOCK.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array; programs do not nest on one CPU.
        Some(last) if unsafe { *last } == skaddr => {
            unsafe { *last = 0 };
            true
        }
        _ => false,
    }
}

#[inline(always)]
fn init_born<R: SockRead>(info: &mut SockInfo, skaddr: u64, owner: &Task, now: u64) {
    // SAFETY: `info` is a whole record (SockInfo::EMPTY is all zeros).
    unsafe {
        zero_words(info);
        copy_words(&raw mut info.owner, owner);
    }
    info.cgroup_id = current_cgroup_id();
    info.created_ns = now;
    info.netns = netns_of::<R>(skaddr);
    info.inode = inode_of::<R>(skaddr);
    info.flags = OWNER_FROM_SYSCALL;
}

/// A passive child's local port is its listener's port.
#[inline(always)]
fn init_passive_child<R: SockRead>(info: &mut SockInfo, skaddr: u64, port: u16, now: u64) {
    // SAFETY: `info` is a whole record (SockInfo::EMPTY is all zeros).
    unsafe { zero_words(info) };
    info.created_ns = now;
    info.netns = netns_of::<R>(skaddr);
    let Ok(key) = listener_key_of::<R>(skaddr, info.netns, port) else {
        count(Counter::ReadErrors);
        return;
    };
    // SAFETY: the map value is copied out (or read) at once; a concurrent update can only give another whole, stale entry.
    if let Some(listener) = unsafe { LISTENERS.get(key) } {
        unsafe { copy_words(&raw mut info.owner, &raw const listener.owner) };
        info.cgroup_id = listener.cgroup_id;
        info.flags = OWNER_FROM_LISTENER;
    }
}

#[inline(always)]
fn remember_listener<R: SockRead>(skaddr: u64, port: u16, info: &SockInfo) {
    let Ok(key) = listener_key_of::<R>(skaddr, info.netns, port) else {
        count(Counter::ReadErrors);
        return;
    };
    let listener = Listener {
        owner: info.owner,
        cgroup_id: info.cgroup_id,
        skaddr,
    };
    if LISTENERS.insert(key, listener, 0).is_err() {
        count(Counter::ListenerMapFull);
    }
}

#[inline(always)]
fn forget_listener<R: SockRead>(skaddr: u64, port: u16, netns: u32) {
    let Ok(key) = listener_key_of::<R>(skaddr, netns, port) else {
        return;
    };
    // Only our own entry: another SO_REUSEPORT listener may own the port now.
    // SAFETY: the map value is copied out (or read) at once; a concurrent update can only give another whole, stale entry.
    if unsafe { LISTENERS.get(key) }.is_some_and(|l| l.skaddr == skaddr) {
        let _ = LISTENERS.remove(key);
    }
}
