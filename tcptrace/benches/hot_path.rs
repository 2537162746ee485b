//! The userspace per-event path: decode → owner → socket table →
//! diagnoses → daemon counters, on a synthetic loopback churn (addresses
//! reused), in records per second on one core: as `trace` gets it (10
//! state-change records per connection) and as the daemon gets it (two
//! summary records per connection, each a whole life, as `tt-churn
//! --linger0` makes them, or as normal closes make them: the server's
//! life through `CLOSE_WAIT`, with the end-of-file read it keeps); and
//! the state-change records again with the JSON line `trace --json`
//! writes for each (the session's reader thread, which must keep up with
//! the kernel).
//!
//! With `TCPTRACE_HOT_PATH_ROUNDS=N` it only feeds one path's records
//! (`TCPTRACE_HOT_PATH=daemon`, `daemon-normal-close`, `every-event` or
//! `trace-json`) N
//! times and prints how
//! many records a round has: `cargo xtask bench` runs that under
//! valgrind to count instructions per record, a figure that does not
//! move with the machine's load as timings do (by a third on the VM the
//! README's table comes from).

use std::{hint::black_box, io};

use criterion::{criterion_group, Criterion, Throughput};
use tcptrace::{
    clock::WallClock,
    event::layout::{RecordLayouts, SockCommonLayout},
    filter::Filter,
    metrics::DaemonMetrics,
    output::{JsonLines, Shown, Sink},
    pipeline::Pipeline,
    probe::tracefs::Format,
};
use tcptrace_common::{
    history::History, state::raw, Event, EventKind, SockInfo, Task, CLOSER_KNOWN, CTX_PROCESS,
    EOF_READ_KEPT, EVENT_SIZE, OWNER_FROM_LISTENER, OWNER_FROM_SYSCALL, RAW_RECORD_LEN,
    RESET_BY_CLOSE,
};

const CONNECTIONS: u64 = 2_000;

fn layouts() -> RecordLayouts {
    let f = |text: &str| Format::parse(text).expect("fixture");
    RecordLayouts::from_formats(
        &f(include_str!(
            "../src/probe/fixtures/inet_sock_set_state-6.18.format"
        )),
        &f(include_str!(
            "../src/probe/fixtures/tcp_retransmit_skb-6.18.format"
        )),
        &f(include_str!(
            "../src/probe/fixtures/tcp_send_reset-6.18.format"
        )),
        &f(include_str!(
            "../src/probe/fixtures/tcp_receive_reset-6.18.format"
        )),
    )
    .expect("layouts")
}

/// `struct sock_common` on `x86_64` (what the kernel's BTF gives there).
const SOCK_COMMON: SockCommonLayout = SockCommonLayout::LINUX_6_18;

fn task(pid: u32, comm: &[u8], stack: u64) -> Task {
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
fn state_event(
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
fn record_bytes(event: &Event) -> Vec<u8> {
    // SAFETY: Event is plain data without padding.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(event).cast::<u8>(), EVENT_SIZE) }
        .to_vec()
}

/// Connection `i` of the churn: its start time, the client's port, and
/// the two sockets' addresses (a small pool, as the slab allocator
/// reuses them), with their owners' records.
fn connection(i: u64) -> (u64, u16, (u64, SockInfo), (u64, SockInfo)) {
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

fn churn() -> Vec<Vec<u8>> {
    let (client, server) = (task(100, b"client", 1), task(200, b"server", 2));
    let mut events = Vec::new();
    for i in 0..CONNECTIONS {
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

/// One summary record: `path` is the socket's whole life.
fn summary_event(
    skaddr: u64,
    mut sock: SockInfo,
    path: &[(i32, i32, u64)],
    (local_port, remote_port): (u16, u16),
    sk_err: i32,
) -> Vec<u8> {
    let mut history = History::EMPTY;
    for &(old, new, ts) in path {
        history.enter(old, new, ts);
    }
    sock.history = history;
    sock.created_ns = path[0].2;
    let l = SOCK_COMMON;
    let mut raw = [0u8; RAW_RECORD_LEN];
    raw[l.daddr..l.daddr + 4].copy_from_slice(&[127, 0, 0, 1]);
    raw[l.rcv_saddr..l.rcv_saddr + 4].copy_from_slice(&[127, 0, 0, 1]);
    raw[l.dport..l.dport + 2].copy_from_slice(&remote_port.to_be_bytes());
    raw[l.num..l.num + 2].copy_from_slice(&local_port.to_ne_bytes());
    raw[l.family..l.family + 2].copy_from_slice(&2u16.to_ne_bytes());
    let closer = sock.closer;
    let (last_ts, context) = (path[path.len() - 1].2, sock.flags & CLOSER_KNOWN);
    let event = Event {
        kind: EventKind::Summary as u16,
        raw_len: u16::try_from(RAW_RECORD_LEN).expect("record length"),
        context: if context != 0 { CTX_PROCESS } else { 0 },
        ts_ns: last_ts,
        skaddr,
        sock,
        actor: closer,
        in_state_ns: 20_000,
        sk_err,
        local_port_be: local_port.to_be(),
        transition: 0,
        raw,
    };
    record_bytes(&event)
}

/// The daemon's records of the same churn: the client closes with
/// `SO_LINGER` 0, the server's socket dies of the reset.
fn summary_churn() -> Vec<Vec<u8>> {
    let mut events = Vec::new();
    for i in 0..CONNECTIONS {
        let (t, port, (active, mut a), (passive, p)) = connection(i);
        a.closer = a.owner;
        a.flags |= CLOSER_KNOWN | RESET_BY_CLOSE;
        let (syn_sent, established, close) = (raw::SYN_SENT, raw::ESTABLISHED, raw::CLOSE);
        events.push(summary_event(
            active,
            a,
            &[
                (close, syn_sent, t),
                (syn_sent, established, t + 2_000),
                (established, close, t + 4_000),
            ],
            (port, 8080),
            0,
        ));
        events.push(summary_event(
            passive,
            p,
            &[
                (raw::LISTEN, raw::SYN_RECV, t + 1_000),
                (raw::SYN_RECV, established, t + 3_000),
                (established, close, t + 5_000),
            ],
            (8080, port),
            104,
        ));
    }
    events
}

/// The daemon's records of churn closed normally: the client closes
/// first and hands its socket to `TIME_WAIT`; the server reads
/// end-of-file in `CLOSE_WAIT` (kept with the socket) and closes.
fn normal_close_churn() -> Vec<Vec<u8>> {
    use raw::{CLOSE, CLOSE_WAIT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, LAST_ACK, SYN_RECV, SYN_SENT};
    let mut events = Vec::new();
    for i in 0..CONNECTIONS {
        let (t, port, (active, mut a), (passive, mut p)) = connection(i);
        a.closer = a.owner;
        a.flags |= CLOSER_KNOWN;
        events.push(summary_event(
            active,
            a,
            &[
                (CLOSE, SYN_SENT, t),
                (SYN_SENT, ESTABLISHED, t + 2_000),
                (ESTABLISHED, FIN_WAIT1, t + 4_000),
                (FIN_WAIT1, FIN_WAIT2, t + 5_000),
                (FIN_WAIT2, CLOSE, t + 6_000),
            ],
            (port, 8080),
            0,
        ));
        let server = p.owner;
        p.closer = server;
        p.eof_reader = server;
        p.eof_read_ns = t + 5_500;
        p.flags |= CLOSER_KNOWN | EOF_READ_KEPT;
        events.push(summary_event(
            passive,
            p,
            &[
                (raw::LISTEN, SYN_RECV, t + 1_000),
                (SYN_RECV, ESTABLISHED, t + 3_000),
                (ESTABLISHED, CLOSE_WAIT, t + 5_000),
                (CLOSE_WAIT, LAST_ACK, t + 6_000),
                (LAST_ACK, CLOSE, t + 7_000),
            ],
            (8080, port),
            0,
        ));
    }
    events
}

/// Which records a run feeds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    EveryEvent,
    /// The same records, each written as a JSON line.
    TraceJson,
    /// Summary records, `SO_LINGER` 0 closes.
    Daemon,
    /// Summary records, normal closes.
    DaemonNormalClose,
}

impl Path {
    fn parse(name: &str) -> Self {
        match name {
            "every-event" => Self::EveryEvent,
            "trace-json" => Self::TraceJson,
            "daemon" => Self::Daemon,
            "daemon-normal-close" => Self::DaemonNormalClose,
            other => panic!(
                "TCPTRACE_HOT_PATH: {other:?} is none of every-event, trace-json, daemon, \
                 daemon-normal-close"
            ),
        }
    }

    /// State changes a connection's records stand for.
    fn state_changes_per_connection(self) -> u64 {
        match self {
            Self::Daemon => 6,
            Self::EveryEvent | Self::TraceJson | Self::DaemonNormalClose => 10,
        }
    }
}

/// The records of one path, and the layouts that decode them.
fn path_records(path: Path) -> (RecordLayouts, Vec<Vec<u8>>) {
    let mut layouts = layouts();
    if matches!(path, Path::Daemon | Path::DaemonNormalClose) {
        layouts.sock_common = Some(SOCK_COMMON);
    }
    let records = match path {
        Path::EveryEvent | Path::TraceJson => churn(),
        Path::Daemon => summary_churn(),
        Path::DaemonNormalClose => normal_close_churn(),
    };
    (layouts, records)
}

/// What the records are fed to after the pipeline.
enum Consumer {
    /// The daemon's counters.
    Metrics(Box<DaemonMetrics>),
    /// `trace --json`'s lines, into memory emptied after each round.
    JsonLines(Vec<u8>),
}

impl Consumer {
    fn of(path: Path) -> Self {
        match path {
            Path::TraceJson => Self::JsonLines(Vec::with_capacity(4 << 20)),
            _ => Self::Metrics(Box::default()),
        }
    }
}

/// Feeds every record through the pipeline and the consumer.
fn feed(pipeline: &mut Pipeline, consumer: &mut Consumer, records: &[Vec<u8>]) {
    match consumer {
        Consumer::Metrics(metrics) => {
            for bytes in records {
                let _ = pipeline.handle::<()>(black_box(bytes), &mut |seen| {
                    metrics.observe(seen);
                    Ok(())
                });
            }
        }
        Consumer::JsonLines(lines) => {
            let clock = WallClock::with_offset(0);
            let mut sink = JsonLines::new(&mut *lines);
            for bytes in records {
                pipeline
                    .handle::<io::Error>(black_box(bytes), &mut |seen| {
                        sink.event(seen.event, &Shown::of(seen, clock))
                    })
                    .expect("writing to memory");
            }
            black_box(&lines);
            lines.clear();
        }
    }
}

fn hot_path(c: &mut Criterion) {
    for (group, name, path) in [
        (
            "userspace hot path",
            "decode+table+diagnoses+metrics",
            Path::EveryEvent,
        ),
        (
            "trace --json hot path",
            "decode+table+diagnoses+JSON line",
            Path::TraceJson,
        ),
        (
            "daemon hot path",
            "summary records: decode+expand+table+diagnoses+metrics",
            Path::Daemon,
        ),
        (
            "daemon hot path, normal closes",
            "summary records: decode+expand+table+diagnoses+metrics",
            Path::DaemonNormalClose,
        ),
    ] {
        let (layouts, records) = path_records(path);
        let mut group = c.benchmark_group(group);
        group.throughput(Throughput::Elements(records.len() as u64));
        group.bench_function(name, |b| {
            let mut pipeline = Pipeline::detached(layouts, Filter::default());
            let mut consumer = Consumer::of(path);
            b.iter(|| feed(&mut pipeline, &mut consumer, &records));
            assert_eq!(pipeline.counts.decode_errors, 0);
            let per_connection = path.state_changes_per_connection();
            assert!(pipeline.counts.state_changes >= per_connection * CONNECTIONS);
        });
        group.finish();
    }
}

/// `rounds` rounds of one path, for an instruction count (see the top).
fn count_rounds(rounds: u32, path: &str) {
    let path = Path::parse(path);
    let (layouts, records) = path_records(path);
    let mut pipeline = Pipeline::detached(layouts, Filter::default());
    let mut consumer = Consumer::of(path);
    for _ in 0..rounds {
        feed(&mut pipeline, &mut consumer, &records);
    }
    assert_eq!(pipeline.counts.decode_errors, 0);
    println!("records_per_round {}", records.len());
}

criterion_group!(benches, hot_path);

fn main() {
    if let Ok(rounds) = std::env::var("TCPTRACE_HOT_PATH_ROUNDS") {
        let rounds = rounds.parse().expect("TCPTRACE_HOT_PATH_ROUNDS: a count");
        let path = std::env::var("TCPTRACE_HOT_PATH").unwrap_or_else(|_| "daemon".to_owned());
        count_rounds(rounds, &path);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
