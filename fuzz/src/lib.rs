//! Tracepoint formats of real kernels (tcptrace's test fixtures), parsed
//! once, for the fuzz targets to start from.

use std::sync::OnceLock;

use tcptrace::probe::tracefs::Format;

macro_rules! fixture {
    ($name:literal) => {
        Format::parse(include_str!(concat!(
            "../../tcptrace/src/probe/fixtures/",
            $name,
            ".format"
        )))
        .expect("fixture parses")
    };
}

pub struct Formats {
    /// Kernel 6.18: inet_sock_set_state, tcp_retransmit_skb,
    /// tcp_send_reset, tcp_receive_reset.
    pub kernel_6_18: [Format; 4],
    /// Kernel 5.15's older tcp_retransmit_skb and tcp_send_reset.
    pub retransmit_5_15: Format,
    pub send_reset_5_15: Format,
}

#[must_use]
pub fn formats() -> &'static Formats {
    static FORMATS: OnceLock<Formats> = OnceLock::new();
    FORMATS.get_or_init(|| Formats {
        kernel_6_18: [
            fixture!("inet_sock_set_state-6.18"),
            fixture!("tcp_retransmit_skb-6.18"),
            fixture!("tcp_send_reset-6.18"),
            fixture!("tcp_receive_reset-6.18"),
        ],
        retransmit_5_15: fixture!("tcp_retransmit_skb-5.15"),
        send_reset_5_15: fixture!("tcp_send_reset-5.15"),
    })
}
