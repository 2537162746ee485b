//! `tcp:tcp_retransmit_skb`: always softirq or timer context, so the
//! socket's owner record is the only attribution there is.

use aya_ebpf::programs::TracePointContext;
use tcptrace_common::{Counter, EventKind, SockInfo, Task, SEEN_MID_LIFE};

use crate::{
    emit::{emit, Record},
    maps::{count, retransmit_layout, SOCKS},
    sock::netns_of,
};

pub fn on_retransmit(ctx: &TracePointContext) -> Result<(), ()> {
    let layout = retransmit_layout();
    let skaddr: u64 =
        unsafe { ctx.read_at(layout.skaddr as usize) }.map_err(|_| count(Counter::ReadErrors))?;
    let info = match SOCKS.get_ptr_mut(skaddr) {
        Some(known) => unsafe {
            (*known).retransmits += 1;
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
    emit(
        ctx,
        &Record {
            kind: EventKind::Retransmit,
            context: 0,
            skaddr,
            sock: &info,
            actor: &Task::NOBODY,
            in_state_ns: 0,
            sk_err: 0,
            record_len: layout.record_len,
        },
    );
    Ok(())
}
