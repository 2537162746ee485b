//! `sock:inet_sock_set_state`: the probe point inside `tcp_set_state`.
//!
//! Attribution rules (see DESIGN.md): only transitions that run in a system
//! call of the acting process may name it. connect() (CLOSE→SYN_SENT) and
//! listen() (CLOSE→LISTEN) create the owner record; a passive child
//! (LISTEN→SYN_RECV, softirq) inherits the owner of its listener; close,
//! shutdown and aborts in process context record the closer. Everything else
//! (handshake completion, FIN received, TIME_WAIT hand-over, timers) runs in
//! softirq and is attributed through the owner record only.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TracePointContext};
use tcptrace_common::{
    rules::{classify, Role},
    state::raw::{CLOSE, LISTEN},
    Counter, EventKind, Listener, ListenerKey, SockInfo, Task, CLOSER_KNOWN, CTX_PROCESS,
    IPPROTO_TCP, OWNER_FROM_LISTENER, OWNER_FROM_SYSCALL, SEEN_MID_LIFE,
};

use crate::{
    context::{current_cgroup_id, current_task, in_process_context, StackFor},
    emit::{emit, Record},
    maps::{count, state_layout, LAST_RESET_SOCK, LISTENERS, SOCKS},
    sock::{error_of, netns_of},
};

#[inline(always)]
fn read<T>(ctx: &TracePointContext, offset: u32) -> Result<T, ()> {
    unsafe { ctx.read_at::<T>(offset as usize) }.map_err(|_| count(Counter::ReadErrors))
}

pub fn on_set_state(ctx: &TracePointContext) -> Result<(), ()> {
    let layout = state_layout();
    let protocol: u16 = read(ctx, layout.protocol)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let skaddr: u64 = read(ctx, layout.skaddr)?;
    let old: i32 = read(ctx, layout.oldstate)?;
    let new: i32 = read(ctx, layout.newstate)?;
    let now = unsafe { bpf_ktime_get_ns() };
    let process = in_process_context();

    let role = classify(old, new, process, new == CLOSE && reset_by_peer(skaddr));
    let born = role == Role::Birth;
    let closing = role == Role::CloseCall;
    let actor = if !process {
        Task::NOBODY
    } else if born {
        current_task(ctx, StackFor::Birth)
    } else if closing {
        current_task(ctx, StackFor::Close)
    } else {
        current_task(ctx, StackFor::None)
    };

    let stored = SOCKS.get_ptr_mut(skaddr);
    let mut info = if born {
        born_info(skaddr, &actor, now)
    } else if role == Role::PassiveChild {
        passive_child_info(ctx, skaddr, now)?
    } else if let Some(known) = stored {
        unsafe { *known }
    } else {
        let mut info = SockInfo::EMPTY;
        info.netns = netns_of(skaddr);
        info.flags = SEEN_MID_LIFE;
        info
    };

    if closing && info.flags & CLOSER_KNOWN == 0 {
        info.closer = actor;
        info.flags |= CLOSER_KNOWN;
    }
    let in_state_ns = if info.state_since_ns != 0 {
        now.saturating_sub(info.state_since_ns)
    } else {
        0
    };
    info.state_since_ns = now;

    if born && new == LISTEN {
        remember_listener(ctx, skaddr, &info)?;
    } else if old == LISTEN && new == CLOSE {
        forget_listener(ctx, skaddr, info.netns)?;
    }

    if new == CLOSE {
        // The socket is done; a later connect() on the same struct sock, or
        // a new socket at a reused address, starts a fresh record.
        let _ = SOCKS.remove(skaddr);
    } else if let (Some(known), false) = (stored, born || old == LISTEN) {
        unsafe { *known = info };
    } else if SOCKS.insert(skaddr, info, 0).is_err() {
        count(Counter::SockMapFull);
    }

    emit(
        ctx,
        &Record {
            kind: EventKind::StateChange,
            context: if process { CTX_PROCESS } else { 0 },
            skaddr,
            sock: &info,
            actor: &actor,
            in_state_ns,
            sk_err: if new == CLOSE { error_of(skaddr) } else { 0 },
            record_len: layout.record_len,
        },
    );
    Ok(())
}

/// True when `tcp_receive_reset` just ran on this CPU for this socket (then
/// a CLOSE is the peer's doing, even when processed from the backlog in a
/// system call). Consumes the marker.
#[inline(always)]
fn reset_by_peer(skaddr: u64) -> bool {
    match LAST_RESET_SOCK.get_ptr_mut(0) {
        Some(last) if unsafe { *last } == skaddr => {
            unsafe { *last = 0 };
            true
        }
        _ => false,
    }
}

#[inline(always)]
fn born_info(skaddr: u64, owner: &Task, now: u64) -> SockInfo {
    let mut info = SockInfo::EMPTY;
    info.owner = *owner;
    info.cgroup_id = current_cgroup_id();
    info.created_ns = now;
    info.netns = netns_of(skaddr);
    info.flags = OWNER_FROM_SYSCALL;
    info
}

#[inline(always)]
fn passive_child_info(ctx: &TracePointContext, skaddr: u64, now: u64) -> Result<SockInfo, ()> {
    let mut info = SockInfo::EMPTY;
    info.created_ns = now;
    info.netns = netns_of(skaddr);
    let key = listener_key(ctx, info.netns)?;
    if let Some(listener) = unsafe { LISTENERS.get(&key) } {
        info.owner = listener.owner;
        info.cgroup_id = listener.cgroup_id;
        info.flags = OWNER_FROM_LISTENER;
    }
    Ok(info)
}

#[inline(always)]
fn listener_key(ctx: &TracePointContext, netns: u32) -> Result<ListenerKey, ()> {
    // The sport of a LISTEN record is the bound port, and a passive child's
    // sport is its listener's port.
    Ok(ListenerKey {
        netns,
        port: read(ctx, state_layout().sport)?,
        _pad: 0,
    })
}

#[inline(always)]
fn remember_listener(ctx: &TracePointContext, skaddr: u64, info: &SockInfo) -> Result<(), ()> {
    let key = listener_key(ctx, info.netns)?;
    let listener = Listener {
        owner: info.owner,
        cgroup_id: info.cgroup_id,
        skaddr,
    };
    if LISTENERS.insert(&key, &listener, 0).is_err() {
        count(Counter::ListenerMapFull);
    }
    Ok(())
}

#[inline(always)]
fn forget_listener(ctx: &TracePointContext, skaddr: u64, netns: u32) -> Result<(), ()> {
    let key = listener_key(ctx, netns)?;
    // Only our own entry: another SO_REUSEPORT listener may own the port now.
    if unsafe { LISTENERS.get(&key) }.is_some_and(|l| l.skaddr == skaddr) {
        let _ = LISTENERS.remove(&key);
    }
    Ok(())
}
