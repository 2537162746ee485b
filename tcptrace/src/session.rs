//! A one-off tracing session: attach, stream events through the filters to
//! a sink until the duration ends or the user interrupts, then report.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Result;
use serde::Serialize;
use tokio::signal::unix::SignalKind;

use crate::{
    callsite::StackCounts,
    clock::monotonic_ns,
    clock::WallClock,
    container::ContainerConfig,
    filter::Filter,
    output::{write_start, Shown, Sink},
    pipeline::{dump, EventCounts, Pipeline, Rings, DRAIN_INTERVAL},
    probe::{Counters, Probe, ProbeOptions},
    recording::{Header, Recorder},
};

#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// Stop after this long; `None` runs until interrupted.
    pub duration: Option<Duration>,
    pub filter: Filter,
    pub probe: ProbeOptions,
    /// Only the report at the end, no live lines.
    pub report_only: bool,
    /// See `Pipeline::set_idle_threshold`.
    pub idle_threshold: Duration,
    /// Never ask JVMs for their perf maps.
    pub no_jvm_perf_map: bool,
    /// Where container names are read from (the node's runtime state).
    pub containers: ContainerConfig,
    /// Save the session here for `tcptrace report` (see `recording`).
    pub write: Option<PathBuf>,
}

/// What a session saw, printed at its end.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct SessionCounts {
    #[serde(serialize_with = "as_secs", deserialize_with = "from_secs")]
    pub elapsed: Duration,
    #[serde(flatten)]
    pub counts: EventCounts,
    /// The kernel programs' own counters (events sent and lost, maps full).
    pub kernel: Counters,
    /// What became of the stacks the kernel captured.
    pub stacks: StackCounts,
    /// Optional hooks this kernel did not give, with what is lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_hooks: Vec<String>,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn from_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = <f64 as serde::Deserialize>::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

/// Runs a session, writing to `sink`. Returns when the duration ends, on
/// Ctrl-C or SIGTERM; dropping the probe detaches every program.
pub async fn run(options: SessionOptions, sink: &mut dyn Sink) -> Result<SessionCounts> {
    let mut probe = Probe::load(options.probe)?;
    let (mut pipeline, mut rings, start) = Pipeline::start(
        &mut probe,
        options.filter.clone(),
        options.containers.clone(),
    )?;
    pipeline
        .call_sites
        .set_jvm_perf_maps(!options.no_jvm_perf_map);
    pipeline.sweep_closed_records()?;
    let priority = pipeline.call_sites.counts().meeting_priority;
    if priority.is_degraded() {
        eprintln!(
            "tcptrace: warning: {} (it runs at {} priority)",
            crate::symbolize::MeetingPriority::CONSEQUENCE,
            priority.as_str()
        );
    }
    // Events printed name their owner's workload.
    pipeline.label_events = !options.report_only;
    pipeline.set_idle_threshold(options.idle_threshold);
    for missing in probe.missing_hooks() {
        eprintln!("tcptrace: warning: {missing}");
    }
    let clock = WallClock::now();
    if let Some(path) = &options.write {
        let header = Header::new(&options, clock);
        let recorder = Recorder::create(path, &header, &start, pipeline.cgroups.as_mut())?;
        pipeline.recorder = Some(recorder);
    }
    if !options.report_only {
        write_start(sink, &start.sockets, |s| pipeline.shows_existing(s))?;
    }
    drop(start);
    sink.flush()?;
    eprintln!("tcptrace: tracing TCP sockets; Ctrl-C to stop");

    let report_only = options.report_only;
    // A batch of records at a time: true when more are waiting.
    let drain = |pipeline: &mut Pipeline, rings: &mut Rings, sink: &mut dyn Sink| {
        let more = pipeline.drain_up_to(rings, crate::pipeline::DRAIN_BATCH, &mut |seen| {
            if report_only {
                return Ok(());
            }
            sink.event(seen.event, &Shown::of(seen, clock))
        })?;
        sink.flush()?;
        anyhow::Ok(more)
    };

    let started = Instant::now();
    let deadline = tokio::time::sleep(
        options
            .duration
            .unwrap_or(Duration::from_secs(u64::MAX / 4)),
    );
    tokio::pin!(deadline);
    let mut interval = tokio::time::interval(DRAIN_INTERVAL);
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    // Records left waiting by the last batch: read on at once, but the
    // deadline and signals come first.
    let mut more = false;
    loop {
        tokio::select! {
            biased;
            () = &mut deadline => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            // A yield, not a ready future: the runtime must get to its
            // timers and signals between batches.
            () = tokio::task::yield_now(), if more => {
                more = drain(&mut pipeline, &mut rings, sink)?;
            }
            readable = rings.readable() => {
                readable?;
                more = drain(&mut pipeline, &mut rings, sink)?;
            }
            _ = interval.tick() => more = drain(&mut pipeline, &mut rings, sink)?,
        }
    }
    // What is waiting now; a load that goes on after the end is not waited for.
    let last = Instant::now() + LAST_DRAIN;
    let mut unread = drain(&mut pipeline, &mut rings, sink)?;
    while unread && Instant::now() < last {
        unread = drain(&mut pipeline, &mut rings, sink)?;
    }
    if unread {
        eprintln!(
            "tcptrace: records were still arriving {LAST_DRAIN:?} after the session ended; \
             those not read yet are not in this report"
        );
    }
    pipeline.call_sites.finish();
    let summary = SessionCounts {
        elapsed: started.elapsed(),
        counts: pipeline.counts,
        kernel: probe.counters()?,
        stacks: pipeline.call_sites.counts(),
        missing_hooks: probe.missing_hooks().to_vec(),
    };
    end(&mut pipeline, summary, options.write.as_deref(), sink)
}

/// The longest the end of a session goes on reading records.
const LAST_DRAIN: Duration = Duration::from_secs(1);

/// The session's summary and report (and the end of its recording),
/// against a socket dump taken now.
fn end(
    pipeline: &mut Pipeline,
    summary: SessionCounts,
    recording: Option<&Path>,
    sink: &mut dyn Sink,
) -> Result<SessionCounts> {
    let now_ns = monotonic_ns();
    let (all, mut owned) = dump(&pipeline.filter, &pipeline.diag)?;
    pipeline.retain_workloads(&mut owned);
    let recorded = pipeline
        .recorder
        .take()
        .map(|recorder| recorder.finish(pipeline, &all, now_ns, &summary));
    sink.summary(&summary)?;
    let report = pipeline.report_with(&all, &owned, summary.elapsed, &summary.kernel, now_ns);
    sink.report(&report)?;
    sink.flush()?;
    if let (Some(recorded), Some(path)) = (recorded, recording) {
        recorded?;
        eprintln!(
            "tcptrace: session saved to {0}; `tcptrace report {0}` replays it",
            path.display()
        );
    }
    Ok(summary)
}
