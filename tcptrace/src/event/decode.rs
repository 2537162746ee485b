//! Ring-buffer bytes → `TcpEvent`. The tag and length are checked before
//! anything else is read, and kernel values (states, families) are
//! validated, never transmuted.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use std::mem::offset_of;

use tcptrace_common::{
    states_of, CloseWaiting, Event, EventKind, TcpState, UserStack, AF_INET, AF_INET6, CTX_PROCESS,
    EVENT_SIZE, PEER_SILENCE_KNOWN, TASK_COMM_LEN, USER_STACK_BYTES, USER_STACK_HEADER,
    USER_STACK_SIZE,
};

use super::{
    layout::{Endpoints, RecordLayouts, SockCommonLayout},
    TcpEvent, TcpEventKind,
};
use crate::probe::tracefs::Field;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is not `EVENT_SIZE` bytes.
    Length(usize),
    /// The kind tag is unknown.
    Kind(u16),
    /// A field lies beyond the copied record bytes.
    Truncated,
    /// A state number outside the kernel's enum.
    State(i32),
    /// An address family other than `AF_INET`/`AF_INET6`.
    Family(u16),
    /// A summary record without the `sock_common` layout (summary mode off).
    NoSummaryLayout,
    /// A summary record with no state in its history.
    EmptyHistory,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length(len) => write!(f, "record of {len} bytes, expected {EVENT_SIZE}"),
            Self::Kind(kind) => write!(f, "unknown record kind {kind}"),
            Self::Truncated => f.write_str("tracepoint record shorter than its layout"),
            Self::State(state) => write!(f, "invalid TCP state {state}"),
            Self::Family(family) => write!(f, "unknown address family {family}"),
            Self::NoSummaryLayout => f.write_str("summary record but no sock_common layout"),
            Self::EmptyHistory => f.write_str("summary record without a state"),
        }
    }
}

impl std::error::Error for DecodeError {}

#[inline]
pub fn decode(bytes: &[u8], layouts: &RecordLayouts) -> Result<TcpEvent, DecodeError> {
    if bytes.len() != EVENT_SIZE {
        return Err(DecodeError::Length(bytes.len()));
    }
    // Ring-buffer records are 8-byte aligned: read in place, not copied
    // (a few hundred bytes per record); other bytes are copied out.
    let copied: Event;
    #[expect(
        clippy::cast_ptr_alignment,
        reason = "the alignment is checked before the cast"
    )]
    let event: &Event = if bytes.as_ptr().align_offset(std::mem::align_of::<Event>()) == 0 {
        // SAFETY: the length and alignment are checked above, and `Event`
        // is plain data for which every bit pattern is valid.
        unsafe { &*bytes.as_ptr().cast::<Event>() }
    } else {
        // SAFETY: the length is checked above, `Event` is plain data for
        // which every bit pattern is valid, and the read is unaligned-safe.
        copied = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        &copied
    };
    let kind = EventKind::from_u16(event.kind).ok_or(DecodeError::Kind(event.kind))?;
    let raw = Raw(&event.raw[..usize::from(event.raw_len).min(event.raw.len())]);
    let process = event.context & CTX_PROCESS != 0;
    let decoded = |what, (local, remote), summary| TcpEvent {
        what,
        ts_ns: event.ts_ns,
        skaddr: event.skaddr,
        local,
        remote,
        sock: event.sock,
        actor: process.then_some(event.actor),
        in_state_ns: (event.in_state_ns != 0).then_some(event.in_state_ns),
        error: (event.sk_err != 0).then_some(event.sk_err),
        peer_silent_ns: (event.sock.flags & PEER_SILENCE_KNOWN != 0)
            .then_some(layouts.jiffy_ns)
            .flatten()
            .map(|ns| ns * u64::from(event.sock.peer_silent_jiffies)),
        summary,
    };

    let (what, endpoints) = match kind {
        // Records that copy the socket's `sock_common`.
        EventKind::Summary
        | EventKind::SockStateChange
        | EventKind::EofRead
        | EventKind::SockRetransmit => {
            let layout = layouts.sock_common.ok_or(DecodeError::NoSummaryLayout)?;
            let endpoints = sock_common_endpoints(raw, &layout, event.local_port_be)?;
            let what = socket_record_kind(kind, event, raw, &layout)?;
            return Ok(decoded(what, endpoints, kind == EventKind::Summary));
        }
        EventKind::StateChange => {
            let l = &layouts.state;
            let what = TcpEventKind::StateChange {
                old: state(raw.i32(l.oldstate)?)?,
                new: state(raw.i32(l.newstate)?)?,
            };
            (what, &l.endpoints)
        }
        EventKind::Retransmit => {
            let l = &layouts.retransmit;
            let state = l.state.map(|f| raw.i32(f).and_then(state)).transpose()?;
            (TcpEventKind::Retransmit { state }, &l.endpoints)
        }
        EventKind::ResetSent => {
            let l = &layouts.send_reset;
            // A reset sent without a socket records state 0.
            let state = match l.state {
                Some(f) => TcpState::from_raw(raw.i32(f)?),
                None => None,
            };
            // A close's own reset is never sent: see `reset_sent_after`.
            let sent = TcpEventKind::ResetSent {
                state,
                by_close: false,
            };
            (sent, &l.endpoints)
        }
        EventKind::ResetReceived => (
            TcpEventKind::ResetReceived,
            &layouts.receive_reset.endpoints,
        ),
        EventKind::SynAckRetransmit => {
            // Only attached where the layout was read.
            let l = layouts
                .syn_ack
                .as_ref()
                .ok_or(DecodeError::Kind(event.kind))?;
            (TcpEventKind::SynAckRetransmit, &l.endpoints)
        }
        // Never `EVENT_SIZE` long: see `decode_user_stack` and
        // `is_lives_waiting`.
        EventKind::UserStack | EventKind::LivesWaiting => {
            return Err(DecodeError::Kind(event.kind));
        }
    };
    Ok(decoded(what, endpoints_of(raw, endpoints)?, false))
}

/// What a record that copies the socket's `sock_common` is about.
fn socket_record_kind(
    kind: EventKind,
    event: &Event,
    raw: Raw,
    layout: &SockCommonLayout,
) -> Result<TcpEventKind, DecodeError> {
    Ok(match kind {
        // The transition the summary was sent for: its history's last.
        EventKind::Summary => match event.sock.history.last_transition() {
            Some((old, new)) => TcpEventKind::StateChange {
                old: state(old)?,
                new: state(new)?,
            },
            // A live socket's counts since its last summary, in the state
            // it is in (`expand` replays them).
            None if event.sock.history.path_len == 1 => TcpEventKind::Retransmit {
                state: Some(state(event.sock.history.last_state())?),
            },
            None => return Err(DecodeError::EmptyHistory),
        },
        EventKind::SockStateChange => {
            let (old, new) = states_of(event.transition);
            TcpEventKind::StateChange {
                old: state(old)?,
                new: state(new)?,
            }
        }
        EventKind::EofRead => TcpEventKind::EofRead,
        // The socket's state is the retransmit's.
        _ => TcpEventKind::Retransmit {
            state: Some(state(i32::from(raw.bytes::<1>(layout.state)?[0]))?),
        },
    })
}

/// A `UserStack` record, its stack bytes borrowed from the ring buffer.
#[derive(Clone, Copy, Debug)]
pub struct UserStackRecord<'a> {
    pub id: u64,
    pub tgid: u32,
    pub pid: u32,
    pub mm: u64,
    pub comm: [u8; TASK_COMM_LEN],
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The stack from `sp` up, as much as the kernel could read.
    pub stack: &'a [u8],
}

/// Whether `bytes` is a `UserStack` record (by its tag; its length is
/// checked by `decode_user_stack`).
#[must_use]
pub fn is_user_stack(bytes: &[u8]) -> bool {
    bytes.get(..2) == Some(&(EventKind::UserStack as u16).to_ne_bytes())
}

/// Whether `bytes` is a `LivesWaiting` nudge: a CPU's ring of whole lives
/// is filling (see `tcptrace_common::life_ring`); it holds nothing else.
#[must_use]
pub fn is_lives_waiting(bytes: &[u8]) -> bool {
    bytes.get(..2) == Some(&(EventKind::LivesWaiting as u16).to_ne_bytes())
}

/// A `UserStack` record: its header and exactly the `len` stack bytes it
/// says it holds (the ring buffer pads records to 8 bytes).
pub fn decode_user_stack(bytes: &[u8]) -> Result<UserStackRecord<'_>, DecodeError> {
    if !(USER_STACK_HEADER..=USER_STACK_SIZE).contains(&bytes.len()) {
        return Err(DecodeError::Length(bytes.len()));
    }
    let field = |offset: usize, len: usize| &bytes[offset..offset + len];
    let u64_at = |offset| u64::from_ne_bytes(field(offset, 8).try_into().expect("8 bytes"));
    let u32_at = |offset| u32::from_ne_bytes(field(offset, 4).try_into().expect("4 bytes"));
    let len = usize::try_from(u32_at(offset_of!(UserStack, len))).unwrap_or(usize::MAX);
    let stack_at = USER_STACK_HEADER;
    if len > USER_STACK_BYTES || stack_at + len > bytes.len() {
        return Err(DecodeError::Truncated);
    }
    Ok(UserStackRecord {
        id: u64_at(offset_of!(UserStack, id)),
        tgid: u32_at(offset_of!(UserStack, tgid)),
        pid: u32_at(offset_of!(UserStack, pid)),
        mm: u64_at(offset_of!(UserStack, mm)),
        comm: field(offset_of!(UserStack, comm), TASK_COMM_LEN)
            .try_into()
            .expect("TASK_COMM_LEN bytes"),
        ip: u64_at(offset_of!(UserStack, ip)),
        sp: u64_at(offset_of!(UserStack, sp)),
        bp: u64_at(offset_of!(UserStack, bp)),
        stack: &bytes[stack_at..stack_at + len],
    })
}

/// The endpoints of a socket listed in `CLOSE_WAIT` (summary mode), read
/// as a summary record's are.
///
/// # Errors
/// When the copy holds no known address family.
pub fn close_waiting_endpoints(
    listing: &CloseWaiting,
    layout: &SockCommonLayout,
) -> Result<(SocketAddr, SocketAddr), DecodeError> {
    sock_common_endpoints(Raw(&listing.raw), layout, listing.local_port_be)
}

/// Endpoints from the start of a `struct sock_common` (summary records),
/// with the local port the kernel read from `inet_sport` (`skc_num` is 0
/// by CLOSE unless the owner bound the port itself).
fn sock_common_endpoints(
    raw: Raw,
    l: &SockCommonLayout,
    local_port_be: u16,
) -> Result<(SocketAddr, SocketAddr), DecodeError> {
    let local_port = match u16::from_be(local_port_be) {
        0 => u16::from_ne_bytes(raw.bytes::<2>(l.num)?),
        port => port,
    };
    let remote_port = u16::from_be_bytes(raw.bytes::<2>(l.dport)?);
    let (local, remote) = match u16::from_ne_bytes(raw.bytes::<2>(l.family)?) {
        AF_INET => (
            IpAddr::V4(Ipv4Addr::from(raw.bytes::<4>(l.rcv_saddr)?)),
            IpAddr::V4(Ipv4Addr::from(raw.bytes::<4>(l.daddr)?)),
        ),
        AF_INET6 => (
            IpAddr::V6(Ipv6Addr::from(raw.bytes::<16>(l.v6_rcv_saddr)?)),
            IpAddr::V6(Ipv6Addr::from(raw.bytes::<16>(l.v6_daddr)?)),
        ),
        other => return Err(DecodeError::Family(other)),
    };
    Ok((
        SocketAddr::new(local, local_port),
        SocketAddr::new(remote, remote_port),
    ))
}

fn state(raw: i32) -> Result<TcpState, DecodeError> {
    TcpState::from_raw(raw).ok_or(DecodeError::State(raw))
}

fn endpoints_of(raw: Raw, endpoints: &Endpoints) -> Result<(SocketAddr, SocketAddr), DecodeError> {
    match *endpoints {
        Endpoints::Split {
            family,
            sport,
            dport,
            saddr,
            daddr,
            saddr_v6,
            daddr_v6,
        } => {
            let (sport, dport) = (raw.u16(sport)?, raw.u16(dport)?);
            let (src, dst) = match raw.u16(family)? {
                AF_INET => (
                    IpAddr::V4(Ipv4Addr::from(raw.array::<4>(saddr)?)),
                    IpAddr::V4(Ipv4Addr::from(raw.array::<4>(daddr)?)),
                ),
                AF_INET6 => (
                    IpAddr::V6(Ipv6Addr::from(raw.array::<16>(saddr_v6)?)),
                    IpAddr::V6(Ipv6Addr::from(raw.array::<16>(daddr_v6)?)),
                ),
                // A reset sent without a socket may carry family 0.
                0 => (
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                ),
                other => return Err(DecodeError::Family(other)),
            };
            Ok((SocketAddr::new(src, sport), SocketAddr::new(dst, dport)))
        }
        Endpoints::SockAddr { saddr, daddr } => Ok((
            sockaddr(raw.array::<28>(saddr)?)?,
            sockaddr(raw.array::<28>(daddr)?)?,
        )),
    }
}

/// A `sockaddr_in` or `sockaddr_in6` as the kernel stores it (native-endian
/// family, network-order port and address).
fn sockaddr(bytes: [u8; 28]) -> Result<SocketAddr, DecodeError> {
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]);
    let port = u16::from_be_bytes([bytes[2], bytes[3]]);
    match family {
        AF_INET => {
            let ip: [u8; 4] = bytes[4..8].try_into().map_err(|_| DecodeError::Truncated)?;
            Ok(SocketAddr::new(IpAddr::V4(ip.into()), port))
        }
        AF_INET6 => {
            let ip: [u8; 16] = bytes[8..24]
                .try_into()
                .map_err(|_| DecodeError::Truncated)?;
            Ok(SocketAddr::new(IpAddr::V6(ip.into()), port))
        }
        0 => Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
        other => Err(DecodeError::Family(other)),
    }
}

/// The copied tracepoint record, read only within its length.
#[derive(Clone, Copy)]
struct Raw<'a>(&'a [u8]);

impl Raw<'_> {
    fn array<const N: usize>(self, field: Field) -> Result<[u8; N], DecodeError> {
        self.bytes(field.offset)
    }
    fn bytes<const N: usize>(self, offset: usize) -> Result<[u8; N], DecodeError> {
        self.0
            .get(offset..offset + N)
            .and_then(|b| b.try_into().ok())
            .ok_or(DecodeError::Truncated)
    }
    fn u16(self, field: Field) -> Result<u16, DecodeError> {
        self.array::<2>(field).map(u16::from_ne_bytes)
    }
    fn i32(self, field: Field) -> Result<i32, DecodeError> {
        self.array::<4>(field).map(i32::from_ne_bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use tcptrace_common::{SockInfo, Task, RAW_RECORD_LEN};

    use super::*;
    use crate::probe::tracefs::Format;

    fn layouts() -> RecordLayouts {
        let f = |text: &str| Format::parse(text).unwrap();
        RecordLayouts::from_formats(
            &f(include_str!(
                "../probe/fixtures/inet_sock_set_state-6.18.format"
            )),
            &f(include_str!(
                "../probe/fixtures/tcp_retransmit_skb-6.18.format"
            )),
            &f(include_str!("../probe/fixtures/tcp_send_reset-6.18.format")),
            &f(include_str!(
                "../probe/fixtures/tcp_receive_reset-6.18.format"
            )),
        )
        .unwrap()
    }

    fn event(kind: u16, raw: &[(usize, &[u8])], raw_len: u16) -> Event {
        let mut event = Event {
            kind,
            raw_len,
            context: 0,
            ts_ns: 42,
            skaddr: 0xffff_8881_0000_1000,
            sock: SockInfo::EMPTY,
            actor: Task::NOBODY,
            in_state_ns: 0,
            sk_err: 0,
            local_port_be: 0,
            transition: 0,
            raw: [0; RAW_RECORD_LEN],
        };
        for (offset, bytes) in raw {
            event.raw[*offset..*offset + bytes.len()].copy_from_slice(bytes);
        }
        event
    }

    fn bytes(event: &Event) -> Vec<u8> {
        // SAFETY: Event is plain data without padding.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(event).cast::<u8>(), EVENT_SIZE) }
            .to_vec()
    }

    /// An `inet_sock_set_state` record as the 6.18 layout has it.
    fn state_change(family: u16, old: i32, new: i32) -> Event {
        event(
            1,
            &[
                (16, &old.to_ne_bytes()),
                (20, &new.to_ne_bytes()),
                (24, &40000u16.to_ne_bytes()),
                (26, &8080u16.to_ne_bytes()),
                (28, &family.to_ne_bytes()),
                (30, &6u16.to_ne_bytes()),
                (32, &[127, 0, 0, 1]),
                (36, &[127, 0, 0, 2]),
                (40, &Ipv6Addr::LOCALHOST.octets()),
                (56, &Ipv6Addr::LOCALHOST.octets()),
            ],
            72,
        )
    }

    #[test]
    fn ipv4_state_change() {
        let mut record = state_change(AF_INET, 2, 1);
        record.context = CTX_PROCESS;
        record.in_state_ns = 1500;
        let event = decode(&bytes(&record), &layouts()).unwrap();
        assert_eq!(
            event.what,
            TcpEventKind::StateChange {
                old: TcpState::SynSent,
                new: TcpState::Established
            }
        );
        assert_eq!(
            event.local,
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 40000)
        );
        assert_eq!(
            event.remote,
            SocketAddr::new(Ipv4Addr::new(127, 0, 0, 2).into(), 8080)
        );
        assert!(event.actor.is_some());
        assert_eq!(event.in_state_ns, Some(1500));
    }

    #[test]
    fn ipv6_state_change() {
        let event = decode(&bytes(&state_change(AF_INET6, 1, 4)), &layouts()).unwrap();
        assert_eq!(
            event.local,
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 40000)
        );
        assert!(event.actor.is_none(), "no CTX_PROCESS: softirq, no actor");
        assert_eq!(event.in_state_ns, None);
    }

    /// A state change from the typed tracepoint: the socket's
    /// `sock_common` (this kernel's offsets) and the states beside it.
    #[test]
    fn state_change_with_the_sockets_endpoints() {
        let common = SockCommonLayout::LINUX_6_18;
        let mut layouts = layouts();
        layouts.sock_common = Some(common);
        let mut record = event(
            EventKind::SockStateChange as u16,
            &[
                (0, &[10, 0, 0, 9]),
                (4, &[10, 0, 0, 1]),
                (12, &443u16.to_be_bytes()),
                // CLOSE has cleared `skc_num`: the port is `inet_sport`'s.
                (14, &0u16.to_ne_bytes()),
                (16, &AF_INET.to_ne_bytes()),
            ],
            u16::try_from(RAW_RECORD_LEN).unwrap(),
        );
        record.local_port_be = 40000u16.to_be();
        record.transition = tcptrace_common::transition_of(1, 7);
        let event = decode(&bytes(&record), &layouts).unwrap();
        assert_eq!(
            event.what,
            TcpEventKind::StateChange {
                old: TcpState::Established,
                new: TcpState::Close
            }
        );
        assert_eq!(event.local, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(event.remote, "10.0.0.9:443".parse().unwrap());
        assert!(!event.summary);

        record.transition = tcptrace_common::transition_of(1, 99);
        assert_eq!(
            decode(&bytes(&record), &layouts).err(),
            Some(DecodeError::State(99))
        );
        assert_eq!(
            decode(&bytes(&record), &self::layouts()).err(),
            Some(DecodeError::NoSummaryLayout),
            "trace mode without BTF offsets never attaches the typed program"
        );
    }

    /// A summary record decodes as its history's last transition; one
    /// holding a single state carries a live socket's counts alone, in
    /// that state; one holding none is refused.
    #[test]
    fn summary_of_transitions_counts_alone_or_nothing() {
        let mut layouts = layouts();
        layouts.sock_common = Some(SockCommonLayout::LINUX_6_18);
        let mut record = event(
            EventKind::Summary as u16,
            &[(16, &AF_INET.to_ne_bytes())],
            u16::try_from(RAW_RECORD_LEN).unwrap(),
        );
        let history = &mut record.sock.history;
        history.enter(2, 1, 5); // SYN_SENT → ESTABLISHED
        let decoded = decode(&bytes(&record), &layouts).unwrap();
        assert_eq!(
            (decoded.what, decoded.summary),
            (
                TcpEventKind::StateChange {
                    old: TcpState::SynSent,
                    new: TcpState::Established
                },
                true
            )
        );
        record.sock.history.restart(1);
        record.sock.history.count_retransmit(1);
        let decoded = decode(&bytes(&record), &layouts).unwrap();
        assert_eq!(
            decoded.what,
            TcpEventKind::Retransmit {
                state: Some(TcpState::Established)
            }
        );
        record.sock.history = tcptrace_common::History::EMPTY;
        assert_eq!(
            decode(&bytes(&record), &layouts).err(),
            Some(DecodeError::EmptyHistory)
        );
    }

    #[test]
    fn reset_with_sockaddr_endpoints() {
        // 6.10+ tcp_send_reset: state at 24, sockaddr_in at 32 and 60.
        let mut src = [0u8; 28];
        src[..2].copy_from_slice(&AF_INET.to_ne_bytes());
        src[2..4].copy_from_slice(&8080u16.to_be_bytes());
        src[4..8].copy_from_slice(&[10, 0, 0, 1]);
        let record = event(3, &[(24, &1i32.to_ne_bytes()), (32, &src), (60, &src)], 88);
        let event = decode(&bytes(&record), &layouts()).unwrap();
        assert_eq!(
            event.what,
            TcpEventKind::ResetSent {
                state: Some(TcpState::Established),
                by_close: false,
            }
        );
        assert_eq!(event.local, "10.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        let layouts = layouts();
        let good = bytes(&state_change(AF_INET, 2, 1));
        assert_eq!(
            decode(&good[..10], &layouts).unwrap_err(),
            DecodeError::Length(10)
        );
        assert_eq!(decode(&[], &layouts).unwrap_err(), DecodeError::Length(0));
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            decode(&long, &layouts),
            Err(DecodeError::Length(_))
        ));

        let mut bad_tag = state_change(AF_INET, 2, 1);
        bad_tag.kind = 99;
        assert_eq!(
            decode(&bytes(&bad_tag), &layouts).unwrap_err(),
            DecodeError::Kind(99)
        );

        let bad_state = state_change(AF_INET, 2, 13);
        assert_eq!(
            decode(&bytes(&bad_state), &layouts).unwrap_err(),
            DecodeError::State(13)
        );

        let bad_family = state_change(7, 2, 1);
        assert_eq!(
            decode(&bytes(&bad_family), &layouts).unwrap_err(),
            DecodeError::Family(7)
        );

        let mut truncated = state_change(AF_INET, 2, 1);
        truncated.raw_len = 20; // newstate at 20..24 lies beyond
        assert_eq!(
            decode(&bytes(&truncated), &layouts).unwrap_err(),
            DecodeError::Truncated
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let layouts = layouts();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut buf = vec![0u8; EVENT_SIZE];
        for _ in 0..10_000 {
            for b in &mut buf {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed.to_le_bytes()[0];
            }
            buf[0] = (seed % 6) as u8; // mostly valid tags, to reach the field decoding
            buf[1] = 0;
            let _ = decode(&buf, &layouts);
        }
    }
}
