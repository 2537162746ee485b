//! `tcp:tcp_retransmit_skb`: always softirq or timer context, so the
//! socket's owner record is the only attribution there is. Also
//! `tcp:tcp_retransmit_synack`, a handshake's SYN-ACK sent again, which
//! belongs to the listener's owner.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};
use tcptrace_common::{
    Counter, EventKind, SockInfo, Task, CLOSER_KNOWN, CTX_PROCESS, LIVE_COUNTS_EVERY_NS,
    OWNER_FROM_LISTENER, RAW_RECORD_LEN, SEEN_MID_LIFE,
};

use crate::{
    emit::{copy_words, emit, Raw, Record},
    filter::{allows, record_ports, socket_ports},
    maps::{count, live_sock, retransmit_layout, settings, syn_ack_layout, LISTENERS},
    sock::{listener_key_of, local_port_of, netns_of, state_of, Probe},
};

pub fn on_retransmit(ctx: &TracePointContext) -> Result<(), ()> {
    let layout = retransmit_layout();
    let skaddr: u64 =
        // SAFETY: a probe read of the tracepoint record at an offset from its tracefs format; the helper checks the address.
        unsafe { ctx.read_at(layout.skaddr as usize) }.map_err(|_| count(Counter::ReadErrors))?;
    let err: i32 = if layout.err != 0 {
        // SAFETY: as above.
        unsafe { ctx.read_at(layout.err as usize) }.map_err(|_| count(Counter::ReadErrors))?
    } else {
        0
    };
    let record = Copied {
        kind: EventKind::Retransmit,
        from: ctx.as_ptr() as *const u8,
        len: layout.record_len,
    };
    retransmit(skaddr, err, &record, || record_ports(ctx, layout.ports));
    Ok(())
}

/// The raw tracepoint, where BTF gives the socket's layout:
/// `TP_PROTO(sk, skb, err)` (`err` since Linux 6.11, where the record has
/// it too). The record copies the socket's `sock_common`.
pub fn on_retransmit_raw(ctx: &RawTracePointContext) {
    let skaddr: u64 = ctx.arg(0);
    let err = if retransmit_layout().err != 0 {
        ctx.arg::<u64>(2) as i32
    } else {
        0
    };
    let record = Copied {
        kind: EventKind::SockRetransmit,
        from: skaddr as *const u8,
        len: RAW_RECORD_LEN as u32,
    };
    retransmit(skaddr, err, &record, || socket_ports::<Probe>(skaddr));
}

/// Summary mode, before a closing-phase retransmit's own record, or for
/// a live connection's retransmits (`report_live_counts`): the socket's
/// life so far, as the summary its close would have sent, and the history
/// starts again from here. Userspace then meets the socket whole (owner,
/// role, call site) rather than as one seen mid-life, the retransmits
/// count where the socket belongs, and the close's summary covers only
/// what follows. Once a summary was sent, the next one may hold only
/// counts (a path of the one current state), which userspace replays.
#[inline(always)]
fn send_life_so_far(skaddr: u64, known: *mut SockInfo, info: &SockInfo, now: u64) {
    let transitions = info.history.path_len >= 2;
    if !transitions && !info.history.has_counts() {
        return; // nothing since the last summary
    }
    let closer_known = info.flags & CLOSER_KNOWN != 0;
    emit(&Record {
        kind: EventKind::Summary,
        // The transition it ends with is the one into the current state;
        // counts alone are as of now.
        ts_ns: if transitions && info.state_since_ns != 0 {
            info.state_since_ns
        } else {
            now
        },
        context: if closer_known { CTX_PROCESS } else { 0 },
        skaddr,
        sock: info,
        actor: if closer_known {
            &info.closer
        } else {
            &Task::NOBODY
        },
        in_state_ns: 0,
        sk_err: 0,
        raw: Raw::socket(skaddr),
        transition: 0,
    });
    // SAFETY: `known` points into the SOCKS map's value, valid for this program run.
    unsafe {
        (*known).summary_sent(info.history.last_state(), now);
    }
}

/// Summary mode, a retransmit just counted in a live socket's history: its
/// life so far is sent when the socket's last summary is older than
/// `LIVE_COUNTS_EVERY_NS` (the first retransmit of a life at once), so a
/// long-lived connection's retransmits reach the metrics within that time
/// instead of when it ends. Folded otherwise, and where the filter turns
/// the socket down (its close's summary is turned down too).
#[inline(always)]
fn report_live_counts(skaddr: u64, known: *mut SockInfo) {
    // SAFETY: a BPF helper with no memory arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: `known` points into the SOCKS map's value, valid for this program run.
    let info = unsafe { &*known };
    if now.saturating_sub(info.last_sent_ns) < LIVE_COUNTS_EVERY_NS
        || !allows(info, &Task::NOBODY, || socket_ports::<Probe>(skaddr))
    {
        count(Counter::EventsFolded);
        return;
    }
    send_life_so_far(skaddr, known, info, now);
}

/// What a retransmit record carries in `raw`.
struct Copied {
    kind: EventKind,
    from: *const u8,
    len: u32,
}

#[inline(always)]
fn retransmit(skaddr: u64, err: i32, record: &Copied, ports: impl FnOnce() -> Option<(u16, u16)>) {
    // An attempt that did not go out is no retransmit.
    if err != 0 {
        count(Counter::RetransmitsFailed);
        return;
    }
    let summary = settings().summary != 0;
    let known = live_sock(skaddr);
    let info = match known {
        // SAFETY: a pointer into the SOCKS map's value, valid for this program run; updates of one socket race only with its own softirq work, which sees a whole record.
        Some(known) => unsafe {
            (*known).retransmits += 1;
            // The socket's own state, in case the kernel ran no program
            // for its last transition: its retransmits then count in the
            // phase it is in, not the one it was last seen in.
            let found = i32::from(state_of::<Probe>(skaddr));
            if found != 0 && !(*known).history.catch_up(found) {
                count(Counter::TransitionsMissed);
            }
            // Summary mode sends closing-phase retransmits (a FIN nobody
            // acknowledges) as events; the others are counted in the
            // history, and sent with it now and then.
            if summary {
                let state = (*known).history.last_state();
                if (*known).history.count_retransmit(state) {
                    report_live_counts(skaddr, known);
                    return;
                }
            }
            *known
        },
        None => {
            let mut info = SockInfo::EMPTY;
            info.netns = netns_of::<Probe>(skaddr);
            info.flags = SEEN_MID_LIFE;
            info.retransmits = 1;
            info
        }
    };
    if !allows(&info, &Task::NOBODY, ports) {
        return;
    }
    // SAFETY: a BPF helper with no memory arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if let (true, Some(known)) = (summary, known) {
        send_life_so_far(skaddr, known, &info, now);
    }
    emit(&Record {
        ts_ns: now,
        kind: record.kind,
        context: 0,
        skaddr,
        sock: &info,
        actor: &Task::NOBODY,
        in_state_ns: 0,
        sk_err: 0,
        raw: Raw::Copy {
            from: record.from,
            len: record.len,
        },
        transition: 0,
    });
}

/// `tcp:tcp_retransmit_synack`: the request has no socket of its own yet
/// (the child is made when the handshake completes), so the record carries
/// the listener's, and the request's endpoints in the tracepoint record.
/// Sent in both modes: SYN-ACKs go again only when a handshake stalls.
pub fn on_syn_ack_retransmit(ctx: &TracePointContext) -> Result<(), ()> {
    let layout = syn_ack_layout();
    let listener: u64 =
        // SAFETY: a probe read of the tracepoint record at an offset from its tracefs format; the helper checks the address.
        unsafe { ctx.read_at(layout.skaddr as usize) }.map_err(|_| count(Counter::ReadErrors))?;
    let info = match live_sock(listener) {
        // SAFETY: a pointer into the SOCKS map's value, valid for this program run.
        Some(known) => unsafe { *known },
        // A listener from before the session: its owner, if userspace
        // taught it from the start dump.
        None => {
            let mut info = SockInfo::EMPTY;
            info.netns = netns_of::<Probe>(listener);
            info.flags = SEEN_MID_LIFE;
            let seeded = local_port_of::<Probe>(listener)
                .and_then(|port| listener_key_of::<Probe>(listener, info.netns, port));
            if let Ok(key) = seeded {
                // SAFETY: the map value is copied out at once.
                if let Some(seeded) = unsafe { LISTENERS.get(key) } {
                    // SAFETY: two whole `Task` records.
                    unsafe { copy_words(&raw mut info.owner, &raw const seeded.owner) };
                    info.cgroup_id = seeded.cgroup_id;
                    info.flags |= OWNER_FROM_LISTENER;
                }
            }
            info
        }
    };
    if !allows(&info, &Task::NOBODY, || record_ports(ctx, layout.ports)) {
        return Ok(());
    }
    emit(&Record {
        // SAFETY: a BPF helper with no memory arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        kind: EventKind::SynAckRetransmit,
        context: 0,
        skaddr: listener,
        sock: &info,
        actor: &Task::NOBODY,
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
