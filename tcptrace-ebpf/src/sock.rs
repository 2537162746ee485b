//! Reading the few `struct sock` facts the tracepoint records do not carry,
//! at offsets userspace resolved from BTF.
//!
//! Two ways to read, one per kind of program (`SockRead`): a typed
//! tracepoint (`tp_btf`) gets the socket as a pointer the verifier knows,
//! and reads its fields with plain loads; raw and classic tracepoints get
//! an address, read through `bpf_probe_read_kernel` (a helper call each:
//! about a sixth of the state-change program's time under churn). The
//! tracepoint's type is `struct sock`: fields of the larger `inet_sock` and
//! `tcp_sock` around it, and of objects reached from it whose offsets
//! lie outside their declared type, are always probe reads.

use aya_ebpf::helpers::bpf_probe_read_kernel;

use tcptrace_common::{Counter, ListenerKey, AF_INET6};

use crate::maps::{count, kernel_layout};

/// Inode number of the socket's network namespace, 0 if it cannot be read.
#[inline(always)]
pub fn netns_of<R: SockRead>(skaddr: u64) -> u32 {
    let layout = kernel_layout();
    match read_at::<R, u64>(skaddr, layout.sock_net) {
        Ok(net) if net != 0 => read_at::<R, u32>(net, layout.net_inum).unwrap_or(0),
        _ => 0,
    }
}

/// The inode number of the socket's file (`sk->sk_socket`'s inode), 0 if
/// it has none (no file yet, or no more) or it cannot be read.
#[inline(always)]
pub fn inode_of<R: SockRead>(skaddr: u64) -> u64 {
    let layout = kernel_layout();
    if layout.sock_socket == 0 || layout.socket_ino == 0 {
        return 0;
    }
    // The inode follows the socket in its `socket_alloc`: a probe read.
    match read_at::<R, u64>(skaddr, layout.sock_socket) {
        Ok(socket) if socket != 0 => read_at::<Probe, u64>(socket, layout.socket_ino).unwrap_or(0),
        _ => 0,
    }
}

/// `sk->sk_err`: set before the kernel moves a socket to CLOSE because of an
/// error (refused, timed out, unreachable, reset). 0 if it cannot be read.
#[inline(always)]
pub fn error_of<R: SockRead>(skaddr: u64) -> i32 {
    read_at::<R, i32>(skaddr, kernel_layout().sock_err).unwrap_or(0)
}

/// `sk->sk_protocol`; 0 if it cannot be read.
#[inline(always)]
pub fn protocol_of<R: SockRead>(skaddr: u64) -> u16 {
    read_at::<R, u16>(skaddr, kernel_layout().sock_protocol).unwrap_or_else(|()| {
        // The transition is skipped: say so.
        count(Counter::ReadErrors);
        0
    })
}

/// `sk->__sk_common.skc_state`; 0 if it cannot be read.
#[inline(always)]
pub fn state_of<R: SockRead>(skaddr: u64) -> u8 {
    read_at::<R, u8>(skaddr, kernel_layout().sock_state).unwrap_or(0)
}

/// The local port (`skc_num`, host order).
#[inline(always)]
pub fn local_port_of<R: SockRead>(skaddr: u64) -> Result<u16, ()> {
    read_at::<R, u16>(skaddr, kernel_layout().sock_num)
}

/// Whether the peer sent any data before its FIN, read on entering
/// `CLOSE_WAIT`: `tcp_sk(sk)->bytes_received` counts sequence space, and
/// by then it includes the FIN's one; false when it cannot be read.
#[inline(always)]
pub fn peer_sent_data(skaddr: u64) -> bool {
    read_at::<Probe, u64>(skaddr, kernel_layout().tcp_bytes_received).is_ok_and(|bytes| bytes > 1)
}

/// Whether data the user wrote has not all been sent (`snd_nxt` behind
/// `write_seq`); false when it cannot be read.
#[inline(always)]
pub fn has_unsent_data(skaddr: u64) -> bool {
    let layout = kernel_layout();
    match (
        read_at::<Probe, u32>(skaddr, layout.tcp_snd_nxt),
        read_at::<Probe, u32>(skaddr, layout.tcp_write_seq),
    ) {
        (Ok(snd_nxt), Ok(write_seq)) => snd_nxt != write_seq,
        _ => false,
    }
}

/// How long the peer has been silent, in jiffies: now minus the later of
/// its last data and its last acceptable ACK (u32 jiffies, compared
/// across wrap-around as the kernel does). `None` when unreadable.
#[inline(always)]
pub fn peer_silent_jiffies(skaddr: u64) -> Option<u32> {
    let layout = kernel_layout();
    let last_ack = read_at::<Probe, u32>(skaddr, layout.tcp_rcv_tstamp).ok()?;
    let last_data = read_at::<Probe, u32>(skaddr, layout.tcp_lrcvtime).ok()?;
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
pub fn listener_key_of<R: SockRead>(skaddr: u64, netns: u32, port: u16) -> Result<ListenerKey, ()> {
    let layout = kernel_layout();
    let family = read_at::<R, u16>(skaddr, layout.sock_family)?;
    let addr = if family == AF_INET6 {
        if layout.sock_v6_rcv_saddr == 0 {
            return Err(());
        }
        R::read_words::<4>(skaddr + u64::from(layout.sock_v6_rcv_saddr))?
    } else {
        [read_at::<R, u32>(skaddr, layout.sock_rcv_saddr)?, 0, 0, 0]
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
    read_at::<Probe, u16>(skaddr, kernel_layout().inet_sport).unwrap_or(0)
}

/// The `T` at `offset` in the kernel object at `address`; `Err` when the
/// offset is unknown (0), the address null or the read fails.
#[inline(always)]
pub fn read_at<R: SockRead, T: Copy>(address: u64, offset: u32) -> Result<T, ()> {
    if offset == 0 || address == 0 {
        return Err(());
    }
    R::read::<T>(address + u64::from(offset))
}

/// How a program reads kernel memory.
pub trait SockRead {
    /// Whether reads are plain loads (cheap) rather than helper calls.
    const PLAIN_LOADS: bool;

    fn read<T: Copy>(address: u64) -> Result<T, ()>;

    /// `N` 32-bit words (an IPv6 address).
    #[inline(always)]
    fn read_words<const N: usize>(address: u64) -> Result<[u32; N], ()> {
        Self::read::<[u32; N]>(address)
    }
}

/// `bpf_probe_read_kernel`: any address, checked by the helper.
pub struct Probe;

impl SockRead for Probe {
    const PLAIN_LOADS: bool = false;

    #[inline(always)]
    fn read<T: Copy>(address: u64) -> Result<T, ()> {
        // SAFETY: probe reads check the address and fail instead of faulting.
        unsafe { bpf_probe_read_kernel(address as *const T) }.map_err(|_| ())
    }
}

/// A plain load, for addresses derived from a pointer the verifier knows
/// the type of (a typed tracepoint's argument) at offsets from BTF: it
/// checks the field against the type and makes the load fault-safe (a
/// bad address reads as zero).
pub struct Typed;

impl SockRead for Typed {
    const PLAIN_LOADS: bool = true;

    #[inline(always)]
    fn read<T: Copy>(address: u64) -> Result<T, ()> {
        // SAFETY: see above; the verifier rejects the program rather than
        // let a load outside the object's type through.
        Ok(unsafe { core::ptr::read_volatile(address as *const T) })
    }

    /// One load per word: the verifier checks each against the field.
    #[inline(always)]
    fn read_words<const N: usize>(address: u64) -> Result<[u32; N], ()> {
        let mut words = [0u32; N];
        for (i, word) in words.iter_mut().enumerate() {
            *word = Self::read::<u32>(address + 4 * i as u64)?;
        }
        Ok(words)
    }
}
