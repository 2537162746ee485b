//! The userspace per-event path of `trace --json`: the state-change
//! records of `hot_path`'s churn through decode → owner → socket table →
//! diagnoses, then each written as its JSON line (into memory, emptied
//! after each round), in records per second on one core. It runs on the
//! session's reader thread, the one that must keep up with the kernel,
//! until a line is handed to the output thread; this bench is both.
//!
//! A bench of its own: the JSON path in `hot_path`'s binary changed how
//! the compiler inlined that bench's paths, and their instruction counts
//! by 3-6%. With `TCPTRACE_HOT_PATH_ROUNDS=N` it only feeds the records N
//! times and prints how many records a round has, for `cargo xtask
//! bench`'s instruction count.

#[allow(dead_code, reason = "each bench uses the parts it needs")]
mod churn_records;

use std::{hint::black_box, io};

use churn_records::{churn, layouts, rounds_to_count, CONNECTIONS};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use tcptrace::{
    clock::WallClock,
    filter::Filter,
    output::{JsonLines, Shown, Sink},
    pipeline::Pipeline,
};

/// Feeds every record through the pipeline and writes its JSON line.
fn feed(pipeline: &mut Pipeline, lines: &mut Vec<u8>, records: &[Vec<u8>]) {
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

fn trace_json(c: &mut Criterion) {
    let mut group = c.benchmark_group("trace --json hot path");
    group.throughput(Throughput::Elements(churn(0).len() as u64));
    group.bench_function("decode+table+diagnoses+JSON line", |b| {
        let mut pipeline = Pipeline::detached(layouts(), Filter::default());
        let mut lines = Vec::with_capacity(4 << 20);
        // Each iteration a later round (see `round_connections`); building
        // it is not timed.
        let mut round = 0;
        b.iter_batched(
            || {
                round += 1;
                churn(round)
            },
            |records| feed(&mut pipeline, &mut lines, &records),
            BatchSize::LargeInput,
        );
        assert_eq!(pipeline.counts.decode_errors, 0);
        assert!(pipeline.counts.state_changes >= 10 * CONNECTIONS);
    });
    group.finish();
}

/// The rounds an instruction count asks for.
fn count_rounds(rounds: &[Vec<Vec<u8>>]) {
    let mut pipeline = Pipeline::detached(layouts(), Filter::default());
    let mut lines = Vec::with_capacity(4 << 20);
    for records in rounds {
        feed(&mut pipeline, &mut lines, records);
    }
    assert_eq!(pipeline.counts.decode_errors, 0);
    println!("records_per_round {}", rounds.first().map_or(0, Vec::len));
}

criterion_group!(benches, trace_json);

fn main() {
    if let Some(rounds) = rounds_to_count(churn) {
        count_rounds(&rounds);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
