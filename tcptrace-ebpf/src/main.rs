//! tcptrace kernel programs.
//!
//! Tracepoints only: this is the most portable choice (stable since 4.16, ring
//! buffer since 5.8) and the only one on kernels without kprobes or fentry.
//! Entry points are thin; each hook family lives in its own module.
#![no_std]
#![no_main]

mod accept;
mod context;
mod emit;
mod eof_read;
mod filter;
mod maps;
mod reset;
mod retransmit;
mod sock;
mod state_change;
mod timing;

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};

/// Every-event mode (`trace`, `top`), on the typed tracepoint: one record
/// per transition, the socket's `sock_common` in it.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn tcptrace_state_change(ctx: BtfTracePointContext) -> u32 {
    match state_change::on_set_state_typed(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// `tcptrace_state_change` where the kernel refuses the typed tracepoint:
/// the classic one, whose record userspace decodes with its tracefs format.
#[tracepoint]
pub fn tcptrace_set_state(ctx: TracePointContext) -> u32 {
    match state_change::on_set_state(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// Summary mode (the daemon): the same code, one record per socket.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn tcptrace_state_summary(ctx: BtfTracePointContext) -> u32 {
    match state_change::on_set_state_typed(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// `tcptrace_state_summary` where the kernel refuses the typed tracepoint.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn tcptrace_state_summary_raw(ctx: RawTracePointContext) -> u32 {
    match state_change::on_set_state_raw(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// `syscalls:sys_exit_accept4` and `sys_exit_accept`.
#[tracepoint]
pub fn tcptrace_accept(ctx: TracePointContext) -> u32 {
    match accept::on_accept_exit(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// Every socket read: only end-of-file in CLOSE_WAIT does anything.
#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn tcptrace_eof_read(ctx: RawTracePointContext) -> u32 {
    eof_read::on_recv_length(&ctx);
    0
}

#[tracepoint]
pub fn tcptrace_retransmit(ctx: TracePointContext) -> u32 {
    match retransmit::on_retransmit(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// Kernels with BTF: the same probe point as a raw tracepoint (see
/// `EventKind::SockRetransmit`).
#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn tcptrace_retransmit_raw(ctx: RawTracePointContext) -> u32 {
    retransmit::on_retransmit_raw(&ctx);
    0
}

#[tracepoint]
pub fn tcptrace_syn_ack_retransmit(ctx: TracePointContext) -> u32 {
    match retransmit::on_syn_ack_retransmit(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

#[tracepoint]
pub fn tcptrace_send_reset(ctx: TracePointContext) -> u32 {
    match reset::on_reset(&ctx, reset::Direction::Sent) {
        Ok(()) | Err(()) => 0,
    }
}

#[tracepoint]
pub fn tcptrace_receive_reset(ctx: TracePointContext) -> u32 {
    match reset::on_reset(&ctx, reset::Direction::Received) {
        Ok(()) | Err(()) => 0,
    }
}

/// Summary mode: resets sent are only counted, from the raw tracepoint
/// (resets received are counted with the CLOSE they cause).
#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn tcptrace_count_reset_sent(ctx: RawTracePointContext) -> u32 {
    reset::on_reset_sent_raw(&ctx);
    0
}

// Raw tracepoints: these run about ten times per connection, and a raw
// tracepoint costs the kernel no record to build.
#[raw_tracepoint(tracepoint = "softirq_entry")]
pub fn tcptrace_softirq_entry(_ctx: RawTracePointContext) -> u32 {
    context::set_in_softirq(1);
    0
}

#[raw_tracepoint(tracepoint = "softirq_exit")]
pub fn tcptrace_softirq_exit(_ctx: RawTracePointContext) -> u32 {
    context::set_in_softirq(0);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
