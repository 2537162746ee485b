//! Every kernel program tcptrace attaches: where, in which mode, whether a
//! session can do without it, and what it gives. The one table that
//! preflight (and `tcptrace doctor`) and the loader read.

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// A classic tracepoint (category, name): the kernel builds a record.
    Tracepoint(&'static str, &'static str),
    /// A raw tracepoint (category, name): the `TP_PROTO` arguments, no
    /// record. The category only locates it in tracefs.
    Raw(&'static str, &'static str),
    /// A typed raw tracepoint (`tp_btf`, category, name; Linux 5.5 with
    /// BTF): the same arguments, with their BTF types, so the program
    /// reads the socket's fields with plain loads instead of probe reads.
    Typed(&'static str, &'static str),
}

impl Attach {
    /// (category, name) in tracefs `events/`.
    #[must_use]
    pub const fn event(self) -> (&'static str, &'static str) {
        match self {
            Self::Tracepoint(category, name)
            | Self::Raw(category, name)
            | Self::Typed(category, name) => (category, name),
        }
    }
}

/// When a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Always,
    /// Every-event mode (`trace`): every transition sent with its record.
    EveryEvent,
    /// Summary mode (the daemon, `--report-only`).
    Summary,
    /// Sessions that want accepted sockets' owners at `accept()` (not the
    /// daemon: a syscall tracepoint taxes every system call on the host),
    /// on kernels whose BTF leads from an fd to its socket.
    AcceptHook,
    /// Kernels with BTF (the programs read `struct sock` fields).
    Btf,
    /// Kernels without it: the classic tracepoint, whose record carries
    /// what the raw one reads from the socket.
    NoBtf,
    /// Kernels where the programs cannot reach this CPU's `preempt_count`
    /// (see `KernelLayout::preempt_count_from_rq`): softirq entry and exit
    /// keep a per-CPU flag instead.
    NoPreemptCount,
    /// Kernels whose `tcp_retransmit_synack` record the decoder reads.
    SynAck,
}

/// What a session runs with, which decides the programs attached.
#[derive(Clone, Copy, Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent yes-or-no facts about the session and the kernel"
)]
pub struct Selection {
    pub summary: bool,
    pub accept: bool,
    pub btf: bool,
    pub preempt_count: bool,
    pub syn_ack: bool,
}

/// One kernel program.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// The program's name in the eBPF object.
    pub program: &'static str,
    /// Where it attaches (all of one kind).
    pub attach: &'static [Attach],
    pub when: When,
    /// Without it tcptrace cannot run; otherwise it runs with less, and
    /// says what is lost (`gives`).
    pub required: bool,
    pub gives: &'static str,
    /// Attached instead where the kernel refuses this program (a kernel
    /// without typed tracepoints, or whose verifier rejects it): the same
    /// records, read more slowly.
    pub fallback: Option<Fallback>,
}

/// A program that does what a hook's does, another way.
#[derive(Clone, Copy, Debug)]
pub struct Fallback {
    pub program: &'static str,
    pub attach: &'static [Attach],
}

/// In attach order. Softirq bracketing (where needed) first, so
/// attribution is right from the first event; the exit before the entry:
/// attached the other way round, a softirq running while they attach could
/// leave its CPU's flag stuck at "in softirq" (entry seen, exit missed)
/// until that CPU's next softirq, and a `connect()` or `listen()` there
/// would lose its owner.
pub const HOOKS: [Hook; 12] = [
    Hook {
        program: "tcptrace_softirq_exit",
        attach: &[Attach::Raw("irq", "softirq_exit")],
        when: When::NoPreemptCount,
        required: true,
        gives: "tells softirq from system calls (attribution)",
        fallback: None,
    },
    Hook {
        program: "tcptrace_softirq_entry",
        attach: &[Attach::Raw("irq", "softirq_entry")],
        when: When::NoPreemptCount,
        required: true,
        gives: "tells softirq from system calls (attribution)",
        fallback: None,
    },
    Hook {
        program: "tcptrace_state_change",
        attach: &[Attach::Typed("sock", "inet_sock_set_state")],
        when: When::EveryEvent,
        required: true,
        gives: "every TCP state change",
        fallback: Some(Fallback {
            program: "tcptrace_set_state",
            attach: &[Attach::Tracepoint("sock", "inet_sock_set_state")],
        }),
    },
    Hook {
        program: "tcptrace_state_summary",
        attach: &[Attach::Typed("sock", "inet_sock_set_state")],
        when: When::Summary,
        required: true,
        gives: "every TCP state change, one record per socket",
        fallback: Some(Fallback {
            program: "tcptrace_state_summary_raw",
            attach: &[Attach::Raw("sock", "inet_sock_set_state")],
        }),
    },
    Hook {
        program: "tcptrace_retransmit_raw",
        attach: &[Attach::Raw("tcp", "tcp_retransmit_skb")],
        when: When::Btf,
        required: true,
        gives: "retransmits, including FINs to dead peers",
        fallback: None,
    },
    Hook {
        program: "tcptrace_retransmit",
        attach: &[Attach::Tracepoint("tcp", "tcp_retransmit_skb")],
        when: When::NoBtf,
        required: true,
        gives: "retransmits, including FINs to dead peers",
        fallback: None,
    },
    Hook {
        program: "tcptrace_syn_ack_retransmit",
        attach: &[Attach::Tracepoint("tcp", "tcp_retransmit_synack")],
        when: When::SynAck,
        required: false,
        gives: "SYN-ACK retransmits (a client's handshake a server answers again)",
        fallback: None,
    },
    Hook {
        program: "tcptrace_send_reset",
        attach: &[Attach::Tracepoint("tcp", "tcp_send_reset")],
        when: When::EveryEvent,
        required: true,
        gives: "resets sent",
        fallback: None,
    },
    // With BTF a reset received is told by the CLOSE it causes (`sk_err`),
    // in both modes: `event::reset_received_before` and the summaries.
    Hook {
        program: "tcptrace_receive_reset",
        attach: &[Attach::Tracepoint("tcp", "tcp_receive_reset")],
        when: When::NoBtf,
        required: true,
        gives: "resets received",
        fallback: None,
    },
    Hook {
        program: "tcptrace_count_reset_sent",
        attach: &[Attach::Raw("tcp", "tcp_send_reset")],
        when: When::Summary,
        required: true,
        gives: "resets sent, counted",
        fallback: None,
    },
    Hook {
        program: "tcptrace_accept",
        attach: &[
            Attach::Tracepoint("syscalls", "sys_exit_accept4"),
            Attach::Tracepoint("syscalls", "sys_exit_accept"),
        ],
        when: When::AcceptHook,
        required: false,
        gives: "accepted sockets become the accepting process's, with its accept call site",
        fallback: None,
    },
    Hook {
        program: "tcptrace_eof_read",
        attach: &[Attach::Raw("sock", "sock_recv_length")],
        when: When::Btf,
        required: false,
        gives: "CLOSE_WAIT leaks name the code that read end-of-file",
        fallback: None,
    },
];

/// The hooks a session attaches, in order: `summary` mode or not, with
/// the accept hook or not, on a kernel with BTF or not.
pub fn selected(with: Selection) -> impl Iterator<Item = &'static Hook> {
    HOOKS.iter().filter(move |hook| match hook.when {
        When::Always => true,
        When::EveryEvent => !with.summary,
        When::Summary => with.summary,
        When::AcceptHook => with.accept,
        When::Btf => with.btf,
        When::NoBtf => !with.btf,
        When::NoPreemptCount => !with.preempt_count,
        When::SynAck => with.syn_ack,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::probe::object::EBPF_OBJECT;

    /// The table and the committed object name the same programs.
    #[test]
    fn every_program_in_the_table_is_in_the_object() {
        let object = aya_obj::Object::parse(EBPF_OBJECT).expect("the committed eBPF object parses");
        let in_object: BTreeSet<&str> = object.programs.keys().map(String::as_str).collect();
        let in_table: BTreeSet<&str> = HOOKS
            .iter()
            .flat_map(|hook| [Some(hook.program), hook.fallback.map(|f| f.program)])
            .flatten()
            .collect();
        assert_eq!(in_table, in_object);
    }

    #[test]
    fn each_mode_attaches_one_state_program_and_one_reset_program() {
        for summary in [false, true] {
            for preempt_count in [false, true] {
                let with = Selection {
                    summary,
                    accept: true,
                    btf: true,
                    preempt_count,
                    syn_ack: true,
                };
                let names: Vec<&str> = selected(with).map(|h| h.program).collect();
                let state = names.iter().filter(|n| n.contains("state")).count();
                let resets = names.iter().filter(|n| n.contains("reset")).count();
                // With BTF a reset received is counted with the CLOSE it
                // causes (`sk_err`): one reset program, for those sent.
                assert_eq!((state, resets), (1, 1), "{names:?}");
                let softirq = ["tcptrace_softirq_exit", "tcptrace_softirq_entry"];
                if preempt_count {
                    assert!(!names.iter().any(|n| n.contains("softirq")), "{names:?}");
                } else {
                    assert_eq!(names[..2], softirq);
                }
            }
        }
        let daemon = Selection {
            summary: true,
            accept: false,
            btf: true,
            preempt_count: true,
            syn_ack: false,
        };
        let daemon: Vec<&str> = selected(daemon).map(|h| h.program).collect();
        assert!(!daemon.contains(&"tcptrace_accept"), "{daemon:?}");
        // A kernel whose SYN-ACK record the decoder cannot read.
        assert!(
            !daemon.contains(&"tcptrace_syn_ack_retransmit"),
            "{daemon:?}"
        );
    }
}
