//! `tcp:tcp_send_reset` and `tcp:tcp_receive_reset`. A reset may be sent
//! with no socket at all (a SYN to a closed port); then skaddr is 0 and the
//! event still tells which local port refused whom.
//!
//! Summary mode attaches the raw `tcp_send_reset` instead (the first
//! argument is the socket): resets sent are counted in the socket's
//! history, or in a counter when the socket is unknown, and nothing is
//! sent. A reset received ends its socket, so summary mode counts it with
//! the CLOSE (`state_change`), from `sk_err`, at no program run of its own.
//!
//! In both modes the reset an abortive close sends after its CLOSE is
//! folded into that CLOSE's record, which announced it (`RESET_BY_CLOSE`):
//! this program only checks the announcement and clears it.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};
use tcptrace_common::{
    transition::reset_follows_close, Counter, EventKind, SockInfo, Task, CLOSED, CTX_PROCESS,
    RESET_BY_CLOSE,
};

use crate::{
    context::{current_task, in_process_context, StackFor},
    emit::{emit, Raw, Record},
    filter::{allows, record_ports, socket_ports},
    maps::{
        count, live_sock, receive_reset_layout, send_reset_layout, ANNOUNCED_RESET,
        LAST_RESET_SOCK, SOCKS,
    },
    sock::{state_of, Probe},
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

/// Summary mode, `tcp_send_reset`: `TP_PROTO(sk, skb, ...)`.
pub fn on_reset_sent_raw(ctx: &RawTracePointContext) {
    let skaddr: u64 = ctx.arg(0);
    if announced_by_close(skaddr, ctx.arg::<u64>(1) != 0) {
        count(Counter::EventsFolded); // counted with its socket's CLOSE
        return;
    }
    match live_sock(skaddr) {
        // SAFETY: a pointer into the SOCKS map's value, valid for this program run; updates of one socket race only with its own softirq work, which sees a whole record.
        Some(known) if skaddr != 0 => unsafe {
            (*known).history.count_reset(true);
        },
        // A socket tcptrace does not know: its ports can still be told
        // (without a socket, they are in the packet, which is not read).
        _ if skaddr != 0
            && !allows(&SockInfo::EMPTY, &Task::NOBODY, || {
                socket_ports::<Probe>(skaddr)
            }) =>
        {
            return;
        }
        _ => count(Counter::ResetsSentWithoutSocket),
    }
    count(Counter::EventsFolded);
}

/// Whether this reset sent is the one an abortive close announced on its
/// socket's CLOSE record (`RESET_BY_CLOSE`), which counted it. The
/// announcement is used up: a reset that no CLOSE announced (a rule of
/// `close_sends_reset` the kernel broke) is sent or counted as any other.
///
/// The close call sends it right after the CLOSE, on the same CPU unless
/// its task moved in between: so the CPU's `ANNOUNCED_RESET` is asked
/// first (one compare), the socket's record (a hash lookup) only when it
/// names another socket. Taken from the CPU's slot, the announcement
/// stays in the socket's record, and one no reset used (the reset went
/// out on another CPU) stays in the CPU's slot until the next: either can
/// only be taken by a reset of this socket address from CLOSE that
/// answers no packet, which only an announced close sends (its next
/// birth writes the record over).
#[inline(always)]
fn announced_by_close(skaddr: u64, answers_packet: bool) -> bool {
    if skaddr == 0 || !reset_follows_close(answers_packet, i32::from(state_of::<Probe>(skaddr))) {
        return false;
    }
    if let Some(announced) = ANNOUNCED_RESET.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array; programs do not nest on one CPU.
        if unsafe { *announced } == skaddr {
            unsafe { *announced = 0 };
            return true;
        }
    }
    match SOCKS.get_ptr_mut(skaddr) {
        // SAFETY: a pointer into the SOCKS map's value, valid for this program run; a closed socket's record is touched only by its own close path, on this CPU, and by the next birth at its address, which cannot come before the socket is freed.
        Some(closed)
            if unsafe { (*closed).flags } & (CLOSED | RESET_BY_CLOSE)
                == CLOSED | RESET_BY_CLOSE =>
        {
            unsafe { (*closed).flags &= !RESET_BY_CLOSE };
            true
        }
        _ => false,
    }
}

/// Remembers the socket a received reset is about (see
/// `state_change::reset_marked_by_peer`).
#[inline(always)]
fn mark_peer_reset(skaddr: u64, direction: Direction) {
    if direction == Direction::Received {
        if let Some(last) = LAST_RESET_SOCK.get_ptr_mut(0) {
            // SAFETY: this CPU's slot of a per-CPU array; programs do not nest on one CPU.
            unsafe { *last = skaddr };
        }
    }
}

pub fn on_reset(ctx: &TracePointContext, direction: Direction) -> Result<(), ()> {
    let layout = match direction {
        Direction::Sent => send_reset_layout(),
        Direction::Received => receive_reset_layout(),
    };
    let skaddr: u64 =
        // SAFETY: a probe read of the tracepoint record at an offset from its tracefs format; the helper checks the address.
        unsafe { ctx.read_at(layout.skaddr as usize) }.map_err(|_| count(Counter::ReadErrors))?;
    mark_peer_reset(skaddr, direction);
    // Without the packet's field (old kernels) the announcement alone tells.
    let answers_packet = || {
        layout.packet != 0
            // SAFETY: as above.
            && unsafe { ctx.read_at::<u64>(layout.packet as usize) }.is_ok_and(|packet| packet != 0)
    };
    if direction == Direction::Sent && announced_by_close(skaddr, answers_packet()) {
        count(Counter::EventsFolded); // shown after its socket's CLOSE
        return Ok(());
    }
    let info = match (skaddr, live_sock(skaddr)) {
        (0, _) | (_, None) => SockInfo::EMPTY,
        // SAFETY: a pointer into the SOCKS map's value, valid for this program run; updates of one socket race only with its own softirq work, which sees a whole record.
        (_, Some(known)) => unsafe { *known },
    };
    // SAFETY: a BPF helper with no memory arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // A reset sent by close() with unread data or SO_LINGER 0 is the
    // caller's doing; one sent from softirq is the stack answering a packet.
    let process = direction == Direction::Sent && in_process_context();
    let actor = if process {
        current_task(StackFor::None, now)
    } else {
        Task::NOBODY
    };
    if !allows(&info, &actor, || record_ports(ctx, layout.ports)) {
        return Ok(());
    }
    emit(&Record {
        ts_ns: now,
        kind: match direction {
            Direction::Sent => EventKind::ResetSent,
            Direction::Received => EventKind::ResetReceived,
        },
        context: if process { CTX_PROCESS } else { 0 },
        skaddr,
        sock: &info,
        actor: &actor,
        in_state_ns: 0,
        sk_err: 0,
        raw: Raw::Copy {
            from: ctx.as_ptr() as *const u8,
            len: layout.record_len,
        },
        transition: 0,
    });
    Ok(())
}
