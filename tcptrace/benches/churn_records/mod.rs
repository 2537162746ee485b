//! The loopback churn the userspace benches feed: every connection's
//! state-change records (`churn`), as the kernel's programs write them in
//! the 6.18 layout of the probe's fixtures, and the pieces the daemon's
//! summary records are built from.

use tcptrace::{
    event::layout::{RecordLayouts, SockCommonLayout},
    probe::tracefs::Format,
};
use tcptrace_common::{
    Event, SockInfo, Task, CLOSER_KNOWN, CTX_PROCESS, EVENT_SIZE, OWNER_FROM_LISTENER,
    OWNER_FROM_SYSCALL, RAW_RECORD_LEN,
};

pub const CONNECTIONS: u64 = 2_000;

pub fn layouts() -> RecordLayouts {
    let f = |text: &str| Format::parse(text).expect("fixture");
    RecordLayouts::from_formats(
        &f(include_str!(
            "../../src/probe/fixtures/inet_sock_set_state-6.18.format"
        )),
        &f(include_str!(
            "../../src/probe/fixtures/tcp_retransmit_skb-6.18.format"
        )),
        &f(include_str!(
            "../../src/probe/fixtures/tcp_send_reset-6.18.format"
        )),
        &f(include_str!(
            "../../src/probe/fixtures/tcp_receive_reset-6.18.format"
        )),
    )
    .expect("layouts")
}

/// `struct sock_common` on `x86_64` (what the kernel's BTF gives there).
pub const SOCK_COMMON: SockCommonLayout = SockCommonLayout::LINUX_6_18;

pub fn task(pid: u32, comm: &[u8], stack: u64) -> Task {
    let mut task = Task::NOBODY;
    task.tgid = pid;
    task.pid = pid;
    task.comm[..comm.len()].copy_from_slice(comm);
    task.thread_comm = task.comm;
    task.stack = stack;
    task
}

/// One `inet_sock_set_state` record in the 6.18 layout of the fixtures.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per field of the tracepoint record"
)]
pub fn state_event(
    ts: u64,
    skaddr: u64,
    sock: SockInfo,
    actor: Option<Task>,
    old: i32,
    new: i32,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut raw = [0u8; RAW_RECORD_LEN];
    raw[8..16].copy_from_slice(&skaddr.to_ne_bytes());
    raw[16..20].copy_from_slice(&old.to_ne_bytes());
    raw[20..24].copy_from_slice(&new.to_ne_bytes());
    raw[24..26].copy_from_slice(&sport.to_ne_bytes());
    raw[26..28].copy_from_slice(&dport.to_ne_bytes());
    raw[28..30].copy_from_slice(&2u16.to_ne_bytes());
    raw[30..32].copy_from_slice(&6u16.to_ne_bytes());
    raw[32..36].copy_from_slice(&[127, 0, 0, 1]);
    raw[36..40].copy_from_slice(&[127, 0, 0, 1]);
    let event = Event {
        kind: 1,
        raw_len: 72,
        context: if actor.is_some() { CTX_PROCESS } else { 0 },
        ts_ns: ts,
        skaddr,
        sock,
        actor: actor.unwrap_or(Task::NOBODY),
        in_state_ns: 20_000,
        sk_err: 0,
        local_port_be: 0,
        transition: 0,
        raw,
    };
    record_bytes(&event)
}

/// The bytes of `event` as the ring buffer holds them.
pub fn record_bytes(event: &Event) -> Vec<u8> {
    // SAFETY: Event is plain data without padding.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(event).cast::<u8>(), EVENT_SIZE) }
        .to_vec()
}

/// Connection `i` of the churn: its start time, the client's port, and
/// the two sockets' addresses (a small pool, as the slab allocator
/// reuses them), with their owners' records.
pub fn connection(i: u64) -> (u64, u16, (u64, SockInfo), (u64, SockInfo)) {
    let (client, server) = (task(100, b"client", 1), task(200, b"server", 2));
    let port = 32768 + u16::try_from(i % 28_000).expect("port");
    let mut a = SockInfo::EMPTY;
    a.owner = client;
    a.flags = OWNER_FROM_SYSCALL;
    let mut p = SockInfo::EMPTY;
    p.owner = server;
    p.flags = OWNER_FROM_LISTENER;
    let active = 0xffff_0000 + (i % 64) * 2;
    (i * 50_000, port, (active, a), (active + 1, p))
}

/// The connections of round `round` of a bench: each round's come after
/// the round before's, as a live system's do (a round that replayed the
/// same times would have every connection start arrive out of time order).
pub fn round_connections(round: u64) -> std::ops::Range<u64> {
    round * CONNECTIONS..(round + 1) * CONNECTIONS
}

/// An instruction count's rounds (`TCPTRACE_HOT_PATH_ROUNDS`), each's
/// records made by `round_records`; `None` for a Criterion run. As many
/// rounds are made as `TCPTRACE_HOT_PATH_BUILT_ROUNDS` says (at least the
/// rounds fed), so that the counts of two numbers of rounds differ by
/// feeding alone.
pub fn rounds_to_count(round_records: impl Fn(u64) -> Vec<Vec<u8>>) -> Option<Vec<Vec<Vec<u8>>>> {
    let count = |name: &str| {
        std::env::var(name).ok().map(|n| {
            n.parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}: a count"))
        })
    };
    let rounds = count("TCPTRACE_HOT_PATH_ROUNDS")?;
    let built = count("TCPTRACE_HOT_PATH_BUILT_ROUNDS")
        .unwrap_or(rounds)
        .max(rounds);
    let mut all: Vec<_> = (0..built).map(round_records).collect();
    all.truncate(usize::try_from(rounds).expect("rounds"));
    Some(all)
}

/// Every-event records of round `round`'s connections.
pub fn churn(round: u64) -> Vec<Vec<u8>> {
    let (client, server) = (task(100, b"client", 1), task(200, b"server", 2));
    let mut events = Vec::new();
    for i in round_connections(round) {
        let (t, port, (active, mut a), (passive, mut p)) = connection(i);
        events.push(state_event(t, active, a, Some(client), 7, 2, 0, 8080));
        events.push(state_event(t + 1_000, passive, p, None, 10, 3, 8080, port));
        events.push(state_event(t + 2_000, passive, p, None, 3, 1, 8080, port));
        events.push(state_event(t + 3_000, active, a, None, 2, 1, port, 8080));
        a.closer = client;
        a.flags |= CLOSER_KNOWN;
        events.push(state_event(
            t + 4_000,
            active,
            a,
            Some(client),
            1,
            4,
            port,
            8080,
        ));
        events.push(state_event(t + 5_000, passive, p, None, 1, 8, 8080, port));
        p.closer = server;
        p.flags |= CLOSER_KNOWN;
        events.push(state_event(
            t + 6_000,
            passive,
            p,
            Some(server),
            8,
            9,
            8080,
            port,
        ));
        events.push(state_event(t + 7_000, active, a, None, 4, 5, port, 8080));
        events.push(state_event(t + 8_000, active, a, None, 5, 7, port, 8080));
        events.push(state_event(t + 9_000, passive, p, None, 9, 7, 8080, port));
    }
    events
}
