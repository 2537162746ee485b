//! Arbitrary bytes as ring-buffer records, decoded with the record layouts
//! of the fixtures (6.18, and 5.15's retransmit and reset records).
//!
//! The input is decoded as given, as an event (any length but `EVENT_SIZE`
//! must be an error) and as a stack capture, then cut into `EVENT_SIZE` records (the last one zero-padded) that
//! go one after the other through a pipeline (owner, socket table,
//! diagnoses) into the JSON and text outputs and a final report. Besides
//! "never panics", the outputs are checked: every JSON line parses and
//! carries the exact comm, and no text line is split or carries a raw
//! control character, whatever the record says.

#![no_main]

use std::{sync::OnceLock, time::Duration};

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tcptrace::{
    event::{comm_str, decode, decode_user_stack, layout::RecordLayouts},
    filter::Filter,
    output::{JsonLines, Shown, Sink, TextLines},
    pipeline::Pipeline,
    probe::Counters,
    snapshot::Snapshot,
};
use tcptrace_common::{
    Event, SockInfo, Task, EVENT_SIZE, OWNER_FROM_LISTENER, OWNER_FROM_SYSCALL, USER_STACK_BYTES,
    USER_STACK_SIZE,
};
use tcptrace_fuzz::formats;

/// At most this many records per input.
const MAX_RECORDS: usize = 16;

fn layouts() -> &'static [RecordLayouts; 2] {
    static LAYOUTS: OnceLock<[RecordLayouts; 2]> = OnceLock::new();
    LAYOUTS.get_or_init(|| {
        let fx = formats();
        let [state, retransmit, send_reset, receive_reset] = &fx.kernel_6_18;
        let kernel_6_18 = RecordLayouts::from_formats(state, retransmit, send_reset, receive_reset)
            .expect("6.18 layouts");
        let kernel_5_15 = RecordLayouts::from_formats(
            state,
            &fx.retransmit_5_15,
            &fx.send_reset_5_15,
            receive_reset,
        )
        .expect("5.15 layouts");
        [kernel_6_18, kernel_5_15]
    })
}

/// The kernel programs set `OWNER_FROM_SYSCALL` or `OWNER_FROM_LISTENER`
/// whenever they record an owner, and `owner::resolve` debug-asserts that
/// contract. A record breaking it panics a debug build (found by this
/// target, and reported); it is restored here so that fuzzing goes on past
/// it to the rest of the pipeline.
fn keep_owner_contract(record: &mut [u8; EVENT_SIZE]) {
    use std::mem::offset_of;
    let sock = offset_of!(Event, sock);
    let tgid = sock + offset_of!(SockInfo, owner) + offset_of!(Task, tgid);
    let flags = sock + offset_of!(SockInfo, flags);
    let word = |r: &[u8; EVENT_SIZE], at: usize| {
        u32::from_ne_bytes(r[at..at + 4].try_into().expect("4 bytes"))
    };
    let owner_flags = OWNER_FROM_SYSCALL | OWNER_FROM_LISTENER;
    if word(record, tgid) != 0 && word(record, flags) & owner_flags == 0 {
        let fixed = word(record, flags) | OWNER_FROM_SYSCALL;
        record[flags..flags + 4].copy_from_slice(&fixed.to_ne_bytes());
    }
}

/// Every line of `json` is one JSON object.
fn json_lines(json: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(json).expect("JSON output is UTF-8");
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    for layouts in layouts() {
        let as_given = decode(data, layouts);
        // A stack capture: what decodes fits its record and holds no more
        // stack than a record can.
        if let Ok(stack) = decode_user_stack(data) {
            assert!(data.len() <= USER_STACK_SIZE && stack.stack.len() <= USER_STACK_BYTES);
        }
        if data.len() != EVENT_SIZE {
            assert!(as_given.is_err(), "a {}-byte record decoded", data.len());
        }

        let mut pipeline = Pipeline::detached(*layouts, Filter::default());
        let (mut json, mut text) = (Vec::new(), Vec::new());
        for chunk in data.chunks(EVENT_SIZE).take(MAX_RECORDS) {
            let mut record = [0u8; EVENT_SIZE];
            record[..chunk.len()].copy_from_slice(chunk);
            keep_owner_contract(&mut record);
            let decoded = decode(&record, layouts);
            let (json_before, text_before) = (json.len(), text.len());
            let mut json_sink = JsonLines::new(&mut json);
            let mut text_sink = TextLines::new(&mut text);
            pipeline
                .handle::<std::io::Error>(&record, &mut |seen| {
                    let shown = Shown {
                        owner: seen.owner,
                        labels: seen.labels,
                        unix_ns: 1_700_000_000_000_000_000,
                        history_incomplete: seen.record.is_some_and(|r| r.history_incomplete),
                    };
                    json_sink.event(seen.event, &shown)?;
                    text_sink.event(seen.event, &shown)
                })
                .expect("writing to memory");
            drop((json_sink, text_sink));
            let Ok(event) = decoded else {
                assert_eq!(json.len(), json_before, "an undecodable record was printed");
                continue;
            };

            let line = &json[json_before..];
            let records = json_lines(line);
            assert_eq!(records.len(), 1, "one JSON line per event: {line:?}");
            let printed = &records[0];
            if let Some(owner) = event.owner() {
                assert_eq!(printed["owner"]["pid"], owner.tgid, "{printed}");
                assert_eq!(
                    printed["owner"]["comm"].as_str(),
                    Some(&*comm_str(&owner.comm)),
                    "the exact owner comm: {printed}"
                );
            }
            if let Some(actor) = &event.actor {
                assert_eq!(
                    printed["actor"]["comm"].as_str(),
                    Some(&*comm_str(&actor.comm)),
                    "the exact actor comm: {printed}"
                );
            }
            let line = std::str::from_utf8(&text[text_before..]).expect("text output is UTF-8");
            assert_eq!(
                line.matches('\n').count(),
                1,
                "one text line per event: {line:?}"
            );
            assert!(
                !line.trim_end_matches('\n').chars().any(char::is_control),
                "a raw control character in a text line: {line:?}"
            );
        }

        // The report over whatever the records made of the table.
        let report = pipeline.report_with(
            &Snapshot::default(),
            &Snapshot::default(),
            Duration::from_secs(1),
            &Counters::default(),
            tcptrace::clock::monotonic_ns(),
        );
        let mut out = Vec::new();
        JsonLines::new(&mut out)
            .report(&report)
            .expect("JSON report");
        json_lines(&out);
        let mut out = Vec::new();
        TextLines::new(&mut out)
            .report(&report)
            .expect("text report");
        let text = std::str::from_utf8(&out).expect("text report is UTF-8");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "a raw control character in the text report: {text:?}"
        );
    }
});
