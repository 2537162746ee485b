//! Where each field sits in the four tracepoint records on this kernel,
//! built from the tracefs formats. The kernel programs get the few offsets
//! they need (`kernel_globals`); the decoder uses the rest.

use anyhow::{bail, Result};
use tcptrace_common::{PortsAt, ResetLayout, RetransmitLayout, StateLayout, RAW_RECORD_LEN};

use crate::probe::tracefs::{Field, Format};

/// How a record carries its endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoints {
    /// `family`, host-order `sport`/`dport`, `saddr[4]`/`daddr[4]` and the
    /// `_v6` arrays (`inet_sock_set_state`, `tcp_retransmit_skb`, and
    /// `tcp_send_reset` before 6.10).
    Split {
        family: Field,
        sport: Field,
        dport: Field,
        saddr: Field,
        daddr: Field,
        saddr_v6: Field,
        daddr_v6: Field,
    },
    /// `saddr[28]`/`daddr[28]` holding a `sockaddr_in` or `sockaddr_in6`
    /// (`tcp_send_reset` since 6.10).
    SockAddr { saddr: Field, daddr: Field },
}

impl Endpoints {
    fn from_format(format: &Format) -> Result<Self> {
        if format.fields.contains_key("family") {
            return Ok(Self::Split {
                family: format.field("family", 2)?,
                sport: format.field("sport", 2)?,
                dport: format.field("dport", 2)?,
                saddr: format.field("saddr", 4)?,
                daddr: format.field("daddr", 4)?,
                saddr_v6: format.field("saddr_v6", 16)?,
                daddr_v6: format.field("daddr_v6", 16)?,
            });
        }
        Ok(Self::SockAddr {
            saddr: format.field("saddr", 28)?,
            daddr: format.field("daddr", 28)?,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRecord {
    pub skaddr: Field,
    pub oldstate: Field,
    pub newstate: Field,
    pub protocol: Field,
    pub endpoints: Endpoints,
    pub len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockEventLayout {
    pub skaddr: Field,
    /// The packet a reset answers (`tcp_send_reset`'s `skbaddr`).
    pub packet: Option<Field>,
    /// The socket state, where the record has one.
    pub state: Option<Field>,
    /// A retransmit attempt's result (`tcp_retransmit_skb` since 6.11).
    pub err: Option<Field>,
    pub endpoints: Endpoints,
    pub len: usize,
}

/// Where a summary record's copy of `struct sock_common` has the
/// endpoints (byte offsets, from BTF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockCommonLayout {
    pub family: usize,
    /// IPv4 remote address, network order.
    pub daddr: usize,
    /// IPv4 local address, network order.
    pub rcv_saddr: usize,
    /// Remote port, network order.
    pub dport: usize,
    /// Local port, host order.
    pub num: usize,
    /// `skc_state` (a byte): a retransmit record's state.
    pub state: usize,
    pub v6_daddr: usize,
    pub v6_rcv_saddr: usize,
}

impl SockCommonLayout {
    /// The offsets of this project's test kernel (Linux 6.18, x86-64), for
    /// tests and benchmarks that build records by hand; a session reads
    /// its kernel's from BTF.
    pub const LINUX_6_18: Self = Self {
        family: 16,
        daddr: 0,
        rcv_saddr: 4,
        dport: 12,
        num: 14,
        state: 18,
        v6_daddr: 56,
        v6_rcv_saddr: 72,
    };

    /// Fails when a field lies beyond the bytes the kernel copies.
    pub fn checked(self) -> Result<Self> {
        let end = [
            self.family + 2,
            self.daddr + 4,
            self.rcv_saddr + 4,
            self.dport + 2,
            self.num + 2,
            self.state + 1,
            self.v6_daddr + 16,
            self.v6_rcv_saddr + 16,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        if end > RAW_RECORD_LEN {
            bail!(
                "struct sock_common ends its endpoints at byte {end}; tcptrace copies {RAW_RECORD_LEN}"
            );
        }
        Ok(self)
    }
}

/// Layouts of all records tcptrace reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLayouts {
    pub state: StateRecord,
    pub retransmit: SockEventLayout,
    pub send_reset: SockEventLayout,
    pub receive_reset: SockEventLayout,
    /// `tcp_retransmit_synack`, when this kernel has it (see `with_syn_ack`).
    pub syn_ack: Option<SockEventLayout>,
    /// Summary records (from BTF); `None` when summary mode is off.
    pub sock_common: Option<SockCommonLayout>,
    /// Nanoseconds per jiffy (`clock::jiffy_ns`): a peer's silence is
    /// recorded in jiffies. `None`: unknown, and silences with it.
    pub jiffy_ns: Option<u64>,
}

/// Offsets handed to the kernel programs as read-only globals.
pub struct KernelGlobals {
    pub state: StateLayout,
    pub retransmit: RetransmitLayout,
    pub syn_ack: RetransmitLayout,
    pub send_reset: ResetLayout,
    pub receive_reset: ResetLayout,
}

impl RecordLayouts {
    pub fn from_formats(
        state: &Format,
        retransmit: &Format,
        send_reset: &Format,
        receive_reset: &Format,
    ) -> Result<Self> {
        let layouts = Self {
            state: StateRecord {
                skaddr: state.field("skaddr", 8)?,
                oldstate: state.field("oldstate", 4)?,
                newstate: state.field("newstate", 4)?,
                protocol: state.field("protocol", 2)?,
                endpoints: Endpoints::from_format(state)?,
                len: state.record_len(),
            },
            retransmit: SockEventLayout::from_format(retransmit)?,
            send_reset: SockEventLayout::from_format(send_reset)?,
            receive_reset: SockEventLayout::from_format(receive_reset)?,
            syn_ack: None,
            sock_common: None,
            jiffy_ns: crate::clock::jiffy_ns(),
        };
        for (name, len) in [
            ("inet_sock_set_state", layouts.state.len),
            ("tcp_retransmit_skb", layouts.retransmit.len),
            ("tcp_send_reset", layouts.send_reset.len),
            ("tcp_receive_reset", layouts.receive_reset.len),
        ] {
            if len > RAW_RECORD_LEN {
                bail!("{name} records are {len} bytes; tcptrace copies at most {RAW_RECORD_LEN}");
            }
        }
        Ok(layouts)
    }

    /// Adds `tcp_retransmit_synack`'s layout (an optional hook: a kernel
    /// without it, or with another layout, counts no SYN-ACK retransmits).
    pub fn with_syn_ack(mut self, format: &Format) -> Result<Self> {
        let layout = SockEventLayout::from_format(format)?;
        if layout.len > RAW_RECORD_LEN {
            bail!(
                "tcp_retransmit_synack records are {} bytes; tcptrace copies at most {RAW_RECORD_LEN}",
                layout.len
            );
        }
        self.syn_ack = Some(layout);
        Ok(self)
    }

    #[must_use]
    pub fn kernel_globals(&self) -> KernelGlobals {
        let reset = |r: &SockEventLayout| ResetLayout {
            skaddr: offset(r.skaddr),
            record_len: len(r.len),
            ports: r.endpoints.ports_at(),
            packet: r.packet.map_or(0, offset),
            _pad: 0,
        };
        let retransmit = |r: &SockEventLayout| RetransmitLayout {
            skaddr: offset(r.skaddr),
            record_len: len(r.len),
            ports: r.endpoints.ports_at(),
            err: r.err.map_or(0, offset),
            _pad: 0,
        };
        KernelGlobals {
            state: StateLayout {
                skaddr: offset(self.state.skaddr),
                oldstate: offset(self.state.oldstate),
                newstate: offset(self.state.newstate),
                protocol: offset(self.state.protocol),
                record_len: len(self.state.len),
                ports: self.state.endpoints.ports_at(),
            },
            retransmit: retransmit(&self.retransmit),
            syn_ack: self.syn_ack.as_ref().map(retransmit).unwrap_or_default(),
            send_reset: reset(&self.send_reset),
            receive_reset: reset(&self.receive_reset),
        }
    }
}

impl Endpoints {
    /// Where the kernel's port filter finds the ports this decoder reads.
    fn ports_at(&self) -> PortsAt {
        // Offsets are bounded by RAW_RECORD_LEN (checked in `from_formats`).
        let at = |offset: usize| u16::try_from(offset).unwrap_or(0);
        match *self {
            Self::Split { sport, dport, .. } => PortsAt {
                sport: at(sport.offset),
                dport: at(dport.offset),
                network_order: 0,
                _pad: 0,
            },
            // `sin_port` and `sin6_port` follow the 2-byte family.
            Self::SockAddr { saddr, daddr } => PortsAt {
                sport: at(saddr.offset + 2),
                dport: at(daddr.offset + 2),
                network_order: 1,
                _pad: 0,
            },
        }
    }
}

impl SockEventLayout {
    fn from_format(format: &Format) -> Result<Self> {
        Ok(Self {
            skaddr: format.field("skaddr", 8)?,
            packet: format.optional_field("skbaddr", 8)?,
            state: format.optional_field("state", 4)?,
            err: format.optional_field("err", 4)?,
            endpoints: Endpoints::from_format(format)?,
            len: format.record_len(),
        })
    }
}

// Offsets and lengths are bounded by RAW_RECORD_LEN (checked above).
fn offset(field: Field) -> u32 {
    u32::try_from(field.offset).unwrap_or(u32::MAX)
}
fn len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(text: &str) -> Format {
        Format::parse(text).unwrap()
    }

    const SET_STATE: &str = include_str!("../probe/fixtures/inet_sock_set_state-6.18.format");
    const RECEIVE_RESET: &str = include_str!("../probe/fixtures/tcp_receive_reset-6.18.format");

    /// The layouts of this kernel's tracepoint formats (fixtures).
    fn layouts_6_18() -> RecordLayouts {
        RecordLayouts::from_formats(
            &format(SET_STATE),
            &format(include_str!(
                "../probe/fixtures/tcp_retransmit_skb-6.18.format"
            )),
            &format(include_str!("../probe/fixtures/tcp_send_reset-6.18.format")),
            &format(RECEIVE_RESET),
        )
        .unwrap()
    }

    #[test]
    fn kernel_6_18_layout() {
        let layouts = layouts_6_18();
        assert!(matches!(
            layouts.send_reset.endpoints,
            Endpoints::SockAddr { .. }
        ));
        assert_eq!(
            layouts.retransmit.len, 80,
            "6.x retransmit record carries `err`"
        );
        let globals = layouts.kernel_globals();
        assert_eq!(
            (
                globals.state.skaddr,
                globals.state.ports.sport,
                globals.state.ports.dport
            ),
            (8, 24, 26)
        );
        assert_eq!(
            (globals.retransmit.err, globals.retransmit.ports.sport),
            (76, 28)
        );
        assert_eq!(globals.send_reset.skaddr, 16);
        // sockaddr ports, network order, after the 2-byte family.
        let reset_ports = globals.send_reset.ports;
        assert_eq!(reset_ports.network_order, 1);
        assert_eq!(reset_ports.dport - reset_ports.sport, 28);
        assert_eq!(globals.receive_reset.skaddr, 8);
    }

    #[test]
    fn syn_ack_layout_is_read_where_the_kernel_has_it() {
        let layouts = layouts_6_18();
        assert_eq!(
            layouts.kernel_globals().syn_ack,
            RetransmitLayout::default()
        );
        let layouts = layouts
            .with_syn_ack(&format(include_str!(
                "../probe/fixtures/tcp_retransmit_synack-6.18.format"
            )))
            .unwrap();
        let syn_ack = layouts.kernel_globals().syn_ack;
        assert_eq!((syn_ack.skaddr, syn_ack.err), (8, 0));
        assert_eq!((syn_ack.ports.sport, syn_ack.ports.dport), (24, 26));
        assert_eq!(syn_ack.ports.network_order, 0);
    }

    #[test]
    fn kernel_5_15_layout() {
        let layouts = RecordLayouts::from_formats(
            &format(SET_STATE),
            &format(include_str!(
                "../probe/fixtures/tcp_retransmit_skb-5.15.format"
            )),
            &format(include_str!("../probe/fixtures/tcp_send_reset-5.15.format")),
            &format(RECEIVE_RESET),
        )
        .unwrap();
        assert!(matches!(
            layouts.send_reset.endpoints,
            Endpoints::Split { .. }
        ));
        assert_eq!(
            layouts.retransmit.len, 74,
            "5.15 retransmit record has no `err`"
        );
        assert_eq!(layouts.send_reset.state.unwrap().offset, 24);
    }
}
