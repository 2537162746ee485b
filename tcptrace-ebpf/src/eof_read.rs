//! `sock:sock_recv_length` (raw: `TP_PROTO(sk, ret, flags)`): a read that
//! returns 0 on a TCP socket in CLOSE_WAIT is the code that saw the peer's
//! FIN, and the code that should have closed. Its stack is taken once per
//! socket and sent, so a CLOSE_WAIT leak names the function that read EOF
//! and kept the socket.
//!
//! In summary mode the read of a socket listed in `CLOSE_WAITING` is kept
//! in its record instead (`EOF_READ_KEPT`): the summary its close sends
//! carries it, and userspace reads it from the map while the socket
//! lingers. A server that closes at once costs no record for it.
//!
//! This runs on every socket read in the system, so it returns at once
//! unless the read returned 0.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::RawTracePointContext};
use tcptrace_common::{
    state::raw::CLOSE_WAIT, Counter, EventKind, CLOSE_WAIT_LISTED, CTX_PROCESS, EOF_READ_KEPT,
    EOF_READ_SENT, IPPROTO_TCP,
};

use crate::{
    context::{current_task, in_process_context, StackFor},
    emit::{copy_words, emit, Raw, Record},
    filter::{allows, socket_ports, stack_unless_ruled_out},
    maps::{count, live_sock},
    sock::{protocol_of, state_of, Probe},
};

pub fn on_recv_length(ctx: &RawTracePointContext) {
    let ret: u64 = ctx.arg(1);
    if ret as i32 != 0 {
        return;
    }
    let skaddr: u64 = ctx.arg(0);
    if state_of::<Probe>(skaddr) != CLOSE_WAIT as u8 || protocol_of::<Probe>(skaddr) != IPPROTO_TCP
    {
        return;
    }
    let Some(info) = live_sock(skaddr) else {
        return;
    };
    // SAFETY: `info` points into the SOCKS map value; the flag makes the
    // record go once per socket (two racing readers may both send one).
    unsafe {
        if (*info).flags & EOF_READ_SENT != 0 || !in_process_context() {
            return;
        }
        (*info).flags |= EOF_READ_SENT;
    }
    // SAFETY: a BPF helper with no memory arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let stack = stack_unless_ruled_out(StackFor::EofRead, || socket_ports::<Probe>(skaddr));
    let reader = current_task(stack, now);
    // SAFETY: as above; two whole records.
    unsafe {
        if (*info).flags & CLOSE_WAIT_LISTED != 0 {
            copy_words(&raw mut (*info).eof_reader, &reader);
            (*info).eof_read_ns = now;
            (*info).flags |= EOF_READ_KEPT;
            count(Counter::EventsFolded);
            return;
        }
    }
    // SAFETY: as above.
    if !allows(unsafe { &*info }, &reader, || socket_ports::<Probe>(skaddr)) {
        return;
    }
    emit(&Record {
        kind: EventKind::EofRead,
        ts_ns: now,
        context: CTX_PROCESS,
        skaddr,
        // SAFETY: as above.
        sock: unsafe { &*info },
        actor: &reader,
        in_state_ns: 0,
        sk_err: 0,
        // Its `sock_common`: endpoints, decoded as summary records are.
        raw: Raw::socket(skaddr),
        transition: 0,
    });
}
