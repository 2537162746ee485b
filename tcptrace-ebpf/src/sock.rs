//! Reading the few `struct sock` facts the tracepoint records do not carry,
//! at offsets userspace resolved from BTF.

use aya_ebpf::helpers::bpf_probe_read_kernel;

use tcptrace_common::{Counter, ListenerKey, AF_INET6};

use crate::maps::{count, kernel_layout};

/// Inode number of the socket's network namespace, 0 if it cannot be read.
#[inline(always)]
pub fn netns_of(skaddr: u64) -> u32 {
    let layout = kernel_layout();
    if layout.sock_net == 0 || skaddr == 0 {
        return 0;
    }
    let net: u64 =
        // SAFETY: probe reads check the address and fail instead of faulting.
        match unsafe { bpf_probe_read_kernel((skaddr + u64::from(layout.sock_net)) as *const u64) }
        {
            Ok(net) if net != 0 => net,
            _ => return 0,
        };
    // SAFETY: probe reads check the address and fail instead of faulting.
    unsafe { bpf_probe_read_kernel((net + u64::from(layout.net_inum)) as *const u32) }.unwrap_or(0)
}

/// The inode number of the socket's file (`sk->sk_socket`'s inode), 0 if
/// it has none (no file yet, or no more) or it cannot be read.
#[inline(always)]
pub fn inode_of(skaddr: u64) -> u64 {
    let layout = kernel_layout();
    if layout.sock_socket == 0 || layout.socket_ino == 0 {
        return 0;
    }
    match read_at::<u64>(skaddr, layout.sock_socket) {
        Ok(socket) if socket != 0 => read_at(socket, layout.socket_ino).unwrap_or(0),
        _ => 0,
    }
}

/// `sk->sk_err`: set before the kernel moves a socket to CLOSE because of an
/// error (refused, timed out, unreachable, reset). 0 if it cannot be read.
#[inline(always)]
pub fn error_of(skaddr: u64) -> i32 {
    read_at(skaddr, kernel_layout().sock_err).unwrap_or(0)
}

/// `sk->sk_protocol`; 0 if it cannot be read.
#[inline(always)]
pub fn protocol_of(skaddr: u64) -> u16 {
    read_at(skaddr, kernel_layout().sock_protocol).unwrap_or_else(|()| {
        // The transition is skipped: say so.
        count(Counter::ReadErrors);
        0
    })
}

/// `sk->__sk_common.skc_state`; 0 if it cannot be read.
#[inline(always)]
pub fn state_of(skaddr: u64) -> u8 {
    read_at(skaddr, kernel_layout().sock_state).unwrap_or(0)
}

/// The local port (`skc_num`, host order).
#[inline(always)]
pub fn local_port_of(skaddr: u64) -> Result<u16, ()> {
    read_at(skaddr, kernel_layout().sock_num)
}

/// Whether the peer sent any data before its FIN, read on entering
/// `CLOSE_WAIT`: `tcp_sk(sk)->bytes_received` counts sequence space, and
/// by then it includes the FIN's one; false when it cannot be read.
#[inline(always)]
pub fn peer_sent_data(skaddr: u64) -> bool {
    read_at::<u64>(skaddr, kernel_layout().tcp_bytes_received).is_ok_and(|bytes| bytes > 1)
}

/// How long the peer has been silent, in jiffies: now minus the later of
/// its last data and its last acceptable ACK (u32 jiffies, compared
/// across wrap-around as the kernel does). `None` when unreadable.
#[inline(always)]
pub fn peer_silent_jiffies(skaddr: u64) -> Option<u32> {
    let layout = kernel_layout();
    let last_ack: u32 = read_at(skaddr, layout.tcp_rcv_tstamp).ok()?;
    let last_data: u32 = read_at(skaddr, layout.tcp_lrcvtime).ok()?;
    let last_heard = if (last_data.wrapping_sub(last_ack) as i32) > 0 {
        last_data
    } else {
        last_ack
    };
    // SAFETY: a BPF helper with no arguments; `tcp_jiffies32` is its low half.
    let now = unsafe { aya_ebpf::helpers::bpf_jiffies64() } as u32;
    Some(now.wrapping_sub(last_heard))
}

/// The key of the listener `skaddr` is, or was cloned from: its family
/// and bound address (see `ListenerKey`). A passive child is cloned before
/// its addresses are set, so at its birth it still holds its listener's.
#[inline(always)]
pub fn listener_key_of(skaddr: u64, netns: u32, port: u16) -> Result<ListenerKey, ()> {
    let layout = kernel_layout();
    let family: u16 = read_at(skaddr, layout.sock_family)?;
    let addr = if family == AF_INET6 {
        read_at::<[u32; 4]>(skaddr, layout.sock_v6_rcv_saddr)?
    } else {
        [read_at::<u32>(skaddr, layout.sock_rcv_saddr)?, 0, 0, 0]
    };
    Ok(ListenerKey {
        netns,
        port,
        family,
        addr,
    })
}

/// `inet_sk(sk)->inet_sport`, network order; 0 when it cannot be read.
#[inline(always)]
pub fn local_port_be_of(skaddr: u64) -> u16 {
    read_at(skaddr, kernel_layout().inet_sport).unwrap_or(0)
}

#[inline(always)]
pub fn read_at<T>(skaddr: u64, offset: u32) -> Result<T, ()> {
    if offset == 0 || skaddr == 0 {
        return Err(());
    }
    // SAFETY: probe reads check the address and fail instead of faulting.
    unsafe { bpf_probe_read_kernel((skaddr + u64::from(offset)) as *const T) }.map_err(|_| ())
}
