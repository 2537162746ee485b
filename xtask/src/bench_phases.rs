//! Where the daemon's state-change program spends its time: one more
//! daemon run under churn with `TCPTRACE_KERNEL_PHASE_TIMING=1`, its
//! `PHASE_NS` map read before it stops (see `tcptrace_common::phase_timing`).
//! Per transition and per part of a run: runs per connection and
//! nanoseconds per run. Each timed span adds a clock read to the run it
//! times, so this is a breakdown; the untimed cost is the bench's table.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tcptrace::probe::{
    phase_timing::{self as phase_timing_map, SpanTotal},
    PHASE_TIMING_ENV,
};
use tcptrace_common::{
    phase_timing::{self, Phase, SPANS, TRANSITIONS},
    TcpState,
};

use crate::bench::{churn, start_with, Options, Tracer};

/// Transitions rarer than one in this many connections are left out of the
/// printed table.
const RARE: f64 = 100.0;

/// Runs the timed daemon once; its spans with what they cost.
pub fn measure(root: &Path, out_dir: &Path, options: &Options) -> Result<Value> {
    let mut daemon = start_with(
        root,
        out_dir,
        Tracer::Daemon,
        "daemon-phases",
        &[(PHASE_TIMING_ENV, "1")],
    )?
    .context("the timed daemon")?;
    let result = churn(root, options, None)?;
    daemon.ensure_alive(Tracer::Daemon)?;
    let totals = read_map()?;
    daemon.stop();
    let connections = result["connections"].as_f64().unwrap_or(0.0);
    if connections <= 0.0 {
        bail!("the churn of the phase run made no connection");
    }
    let spans = (0..SPANS)
        .filter_map(|span| {
            let total = totals.get(span as usize).copied()?;
            (total.runs > 0).then(|| {
                #[expect(clippy::cast_precision_loss, reason = "totals far below 2^52")]
                let (ns, runs) = (total.ns as f64, total.runs as f64);
                json!({
                    "span": span_name(span),
                    "transition": span < TRANSITIONS,
                    "runs_per_connection": runs / connections,
                    "ns_per_run": ns / runs,
                    "ns_per_connection": ns / connections,
                })
            })
        })
        .collect::<Vec<_>>();
    Ok(json!({ "connections": connections, "spans": spans }))
}

/// A span's name: a transition's states, or the part of a run.
fn span_name(span: u32) -> String {
    if span < TRANSITIONS {
        let (old, new) = phase_timing::states_of(span);
        let name = |state| TcpState::from_raw(state).map_or("?", TcpState::name);
        return format!("{} -> {}", name(old), name(new));
    }
    Phase::ALL
        .iter()
        .find(|&&phase| phase as u32 == span)
        .map_or_else(|| format!("span {span}"), |phase| phase.name().to_owned())
}

/// Each span's totals, from the one `PHASE_NS` map loaded (the bench
/// refuses to run next to another tracer).
fn read_map() -> Result<Vec<SpanTotal>> {
    match phase_timing_map::map_ids()?.as_slice() {
        &[id] => phase_timing_map::read(id),
        ids => bail!("expected the timed daemon's PHASE_NS map alone, found {ids:?}"),
    }
}

/// The measurement's lines under the bench's table (nothing when not run).
pub fn print(report: &Value) {
    let Some(spans) = report["spans"].as_array() else {
        return;
    };
    println!(
        "\nThe daemon's state program, timed (one run with {PHASE_TIMING_ENV}=1; each span adds a clock read):"
    );
    println!(
        "  {:<42} {:>9} {:>8} {:>8}",
        "span", "runs/conn", "ns/run", "ns/conn"
    );
    let figure = |span: &Value, key: &str| span[key].as_f64().unwrap_or(0.0);
    let row = |span: &&Value| {
        println!(
            "  {:<42} {:>9.2} {:>8.0} {:>8.0}",
            span["span"].as_str().unwrap_or("?"),
            figure(span, "runs_per_connection"),
            figure(span, "ns_per_run"),
            figure(span, "ns_per_connection"),
        );
    };
    let (transitions, parts): (Vec<&Value>, Vec<&Value>) = spans
        .iter()
        .partition(|span| span["transition"].as_bool().unwrap_or(false));
    // Rare transitions are the bench's own sockets (the daemon's listener,
    // its scrapes).
    let (common, rare): (Vec<&Value>, Vec<&Value>) = transitions
        .iter()
        .partition(|span| figure(span, "runs_per_connection") >= 1.0 / RARE);
    common.iter().for_each(row);
    if !rare.is_empty() {
        println!(
            "  ({} transitions rarer than one in {RARE} connections: in the JSON)",
            rare.len()
        );
    }
    let whole_runs: f64 = transitions
        .iter()
        .map(|span| figure(span, "ns_per_connection"))
        .sum();
    println!("  {:<42} {:>9} {:>8} {whole_runs:>8.0}", "all runs", "", "");
    println!("  of which:");
    parts.iter().for_each(row);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_named_by_their_states_or_their_part() {
        use tcptrace_common::state::raw::{CLOSE, SYN_SENT};
        assert_eq!(
            span_name(phase_timing::transition(CLOSE, SYN_SENT)),
            "CLOSE -> SYN_SENT"
        );
        assert_eq!(span_name(Phase::Fill as u32), Phase::Fill.name());
    }
}
