//! The userspace per-event path: decode → owner → socket table →
//! diagnoses → daemon counters, on a synthetic loopback churn (addresses
//! reused), in records per second on one core: as `trace` gets it (10
//! state-change records per connection) and as the daemon gets it (two
//! summary records per connection, each a whole life, as `tt-churn
//! --linger0` makes them, or as normal closes make them: the server's
//! life through `CLOSE_WAIT`, with the end-of-file read it keeps).
//!
//! With `TCPTRACE_HOT_PATH_ROUNDS=N` it only feeds one path's records
//! (`TCPTRACE_HOT_PATH=daemon`, `daemon-normal-close` or `every-event`) N
//! times and prints how
//! many records a round has: `cargo xtask bench` runs that under
//! valgrind to count instructions per record, a figure that does not
//! move with the machine's load as timings do (by a third on the VM the
//! README's table comes from).

#[allow(dead_code, reason = "each bench uses the parts it needs")]
mod churn_records;

use std::hint::black_box;

use churn_records::{
    churn, connection, layouts, record_bytes, round_connections, rounds_to_count, CONNECTIONS,
    SOCK_COMMON,
};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use tcptrace::{
    event::layout::RecordLayouts, filter::Filter, metrics::DaemonMetrics, pipeline::Pipeline,
};
use tcptrace_common::{
    history::History, state::raw, Event, EventKind, SockInfo, CLOSER_KNOWN, CTX_PROCESS,
    EOF_READ_KEPT, RAW_RECORD_LEN, RESET_BY_CLOSE,
};

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
fn summary_churn(round: u64) -> Vec<Vec<u8>> {
    let mut events = Vec::new();
    for i in round_connections(round) {
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
fn normal_close_churn(round: u64) -> Vec<Vec<u8>> {
    use raw::{CLOSE, CLOSE_WAIT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, LAST_ACK, SYN_RECV, SYN_SENT};
    let mut events = Vec::new();
    for i in round_connections(round) {
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
    /// Summary records, `SO_LINGER` 0 closes.
    Daemon,
    /// Summary records, normal closes.
    DaemonNormalClose,
}

impl Path {
    fn parse(name: &str) -> Self {
        match name {
            "every-event" => Self::EveryEvent,
            "daemon" => Self::Daemon,
            "daemon-normal-close" => Self::DaemonNormalClose,
            other => panic!(
                "TCPTRACE_HOT_PATH: {other:?} is none of every-event, daemon, daemon-normal-close"
            ),
        }
    }

    /// State changes a connection's records stand for.
    fn state_changes_per_connection(self) -> u64 {
        match self {
            Self::Daemon => 6,
            Self::EveryEvent | Self::DaemonNormalClose => 10,
        }
    }
}

/// The layouts that decode one path's records.
fn path_layouts(path: Path) -> RecordLayouts {
    let mut layouts = layouts();
    if path != Path::EveryEvent {
        layouts.sock_common = Some(SOCK_COMMON);
    }
    layouts
}

/// The records of round `round` of one path.
fn path_records(path: Path, round: u64) -> Vec<Vec<u8>> {
    match path {
        Path::EveryEvent => churn(round),
        Path::Daemon => summary_churn(round),
        Path::DaemonNormalClose => normal_close_churn(round),
    }
}

/// Feeds every record through the pipeline and the daemon's counters.
fn feed(pipeline: &mut Pipeline, metrics: &mut DaemonMetrics, records: &[Vec<u8>]) {
    for bytes in records {
        let _ = pipeline.handle::<()>(black_box(bytes), &mut |seen| {
            metrics.observe(seen);
            Ok(())
        });
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
        let layouts = path_layouts(path);
        let mut group = c.benchmark_group(group);
        group.throughput(Throughput::Elements(path_records(path, 0).len() as u64));
        group.bench_function(name, |b| {
            let mut pipeline = Pipeline::detached(layouts, Filter::default());
            let mut metrics = DaemonMetrics::default();
            // Each iteration a later round; building it is not timed.
            let mut round = 0;
            b.iter_batched(
                || {
                    round += 1;
                    path_records(path, round)
                },
                |records| feed(&mut pipeline, &mut metrics, &records),
                BatchSize::LargeInput,
            );
            assert_eq!(pipeline.counts.decode_errors, 0);
            let per_connection = path.state_changes_per_connection();
            assert!(pipeline.counts.state_changes >= per_connection * CONNECTIONS);
        });
        group.finish();
    }
}

/// The rounds of one path an instruction count asks for (see the top).
fn count_rounds(path: Path, rounds: &[Vec<Vec<u8>>]) {
    let mut pipeline = Pipeline::detached(path_layouts(path), Filter::default());
    let mut metrics = DaemonMetrics::default();
    for records in rounds {
        feed(&mut pipeline, &mut metrics, records);
    }
    assert_eq!(pipeline.counts.decode_errors, 0);
    println!("records_per_round {}", rounds.first().map_or(0, Vec::len));
}

criterion_group!(benches, hot_path);

fn main() {
    let path =
        Path::parse(&std::env::var("TCPTRACE_HOT_PATH").unwrap_or_else(|_| "daemon".to_owned()));
    if let Some(rounds) = rounds_to_count(|round| path_records(path, round)) {
        count_rounds(path, &rounds);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
