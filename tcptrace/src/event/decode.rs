//! Ring-buffer bytes → `TcpEvent`. The tag and length are checked before
//! anything else is read, and kernel values (states, families) are
//! validated, never transmuted.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use tcptrace_common::{Event, EventKind, TcpState, AF_INET, AF_INET6, CTX_PROCESS, EVENT_SIZE};

use super::{
    layout::{Endpoints, RecordLayouts},
    TcpEvent, What,
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
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length(len) => write!(f, "record of {len} bytes, expected {EVENT_SIZE}"),
            Self::Kind(kind) => write!(f, "unknown record kind {kind}"),
            Self::Truncated => f.write_str("tracepoint record shorter than its layout"),
            Self::State(state) => write!(f, "invalid TCP state {state}"),
            Self::Family(family) => write!(f, "unknown address family {family}"),
        }
    }
}

impl std::error::Error for DecodeError {}

pub fn decode(bytes: &[u8], layouts: &RecordLayouts) -> Result<TcpEvent, DecodeError> {
    if bytes.len() != EVENT_SIZE {
        return Err(DecodeError::Length(bytes.len()));
    }
    // SAFETY: the length is checked above, `Event` is plain data for which
    // every bit pattern is valid, and the read is unaligned-safe.
    let event: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = EventKind::from_u16(event.kind).ok_or(DecodeError::Kind(event.kind))?;
    let raw = Raw(&event.raw[..usize::from(event.raw_len).min(event.raw.len())]);

    let (what, endpoints) = match kind {
        EventKind::StateChange => {
            let l = &layouts.state;
            let what = What::StateChange {
                old: state(raw.i32(l.oldstate)?)?,
                new: state(raw.i32(l.newstate)?)?,
            };
            (what, &l.endpoints)
        }
        EventKind::Retransmit => {
            let l = &layouts.retransmit;
            let state = l.state.map(|f| raw.i32(f).and_then(state)).transpose()?;
            (What::Retransmit { state }, &l.endpoints)
        }
        EventKind::ResetSent => {
            let l = &layouts.send_reset;
            // A reset sent without a socket records state 0.
            let state = match l.state {
                Some(f) => TcpState::from_raw(raw.i32(f)?),
                None => None,
            };
            (What::ResetSent { state }, &l.endpoints)
        }
        EventKind::ResetReceived => (What::ResetReceived, &layouts.receive_reset.endpoints),
    };
    let (local, remote) = endpoints_of(raw, endpoints)?;
    let process = event.context & CTX_PROCESS != 0;
    Ok(TcpEvent {
        what,
        ts_ns: event.ts_ns,
        skaddr: event.skaddr,
        local,
        remote,
        sock: event.sock,
        actor: process.then_some(event.actor),
        in_state_ns: (event.in_state_ns != 0).then_some(event.in_state_ns),
    })
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
        self.0
            .get(field.offset..field.offset + N)
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
