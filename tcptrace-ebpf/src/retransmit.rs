//! `tcp:tcp_retransmit_skb`: always softirq or timer context, so the
//! socket's owner record is the only attribution there is.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TracePointContext, EbpfContext};
use tcptrace_common::{Counter, EventKind, SockInfo, Task, SEEN_MID_LIFE};

use crate::{
    emit::{emit, Record},
    maps::{count, retransmit_layout, settings, SOCKS},
    sock::netns_of,
};

pub fn on_retransmit(ctx: &TracePointContext) -> Result<(), ()> {
    let layout = retransmit_layout();
    let skaddr: u64 =
        // SAFETY: a probe read of the tracepoint record at an offset from its tracefs format; the helper checks the address.
        unsafe { ctx.read_at(layout.skaddr as usize) }.map_err(|_| count(Counter::ReadErrors))?;
    let summary = settings().summary != 0;
    let info = match SOCKS.get_ptr_mut(skaddr) {
        // SAFETY: a pointer into the SOCKS map's value, valid for this program run; updates of one socket race only with its own softirq work, which sees a whole record.
        Some(known) => unsafe {
            (*known).retransmits += 1;
            // Summary mode sends only closing-phase retransmits (a FIN
            // nobody acknowledges); the others are counted in the history.
            if summary {
                let state = (*known).history.last_state();
                if (*known).history.count_retransmit(state) {
                    count(Counter::EventsFolded);
                    return Ok(());
                }
            }
            *known
        },
        None => {
            let mut info = SockInfo::EMPTY;
            info.netns = netns_of(skaddr);
            info.flags = SEEN_MID_LIFE;
            info.retransmits = 1;
            info
        }
    };
    emit(&Record {
        // SAFETY: a BPF helper with no memory arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        kind: EventKind::Retransmit,
        context: 0,
        skaddr,
        sock: &info,
        actor: &Task::NOBODY,
        in_state_ns: 0,
        sk_err: 0,
        raw_from: ctx.as_ptr() as *const u8,
        raw_len: layout.record_len,
    });
    Ok(())
}
