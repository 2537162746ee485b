//! `tcptrace top`: a live view of which processes open, close and hold
//! TCP connections, refreshed every interval, in the terminal (ratatui)
//! or as plain text (`--batch`).
//!
//! The session's pipeline, unchanged: the kernel's records are drained
//! into `Pipeline` as `tcptrace trace` drains them, and each event it lets
//! through is added to its owner's row (`rows`). At each interval the
//! rows' counts are closed and a socket dump runs off the event loop
//! (`pipeline::dump` on a blocking thread, as the daemon's refresh does);
//! the report made against it says what each process holds in
//! `TIME_WAIT` and `CLOSE_WAIT` (`Finding::held`) and where its call
//! sites are (the detail pane). Then the screen is drawn, or the table
//! printed.

pub mod columns;
pub mod detail;
pub mod keys;
pub mod rows;
pub mod status;
pub mod terminal;
pub mod view;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::SignalKind, sync::mpsc::UnboundedReceiver, task::JoinHandle,
    time::MissedTickBehavior,
};

use self::{
    columns::Column,
    keys::Action,
    rows::{Row, Rows},
    status::Status,
    terminal::TerminalGuard,
    view::View,
};
use crate::{
    container::ContainerConfig,
    filter::Filter,
    findings::Report,
    netns::DiagSockets,
    output::detached::DetachedWriter,
    pipeline::{dump, EventCounts, Pipeline, Rings, DRAIN_INTERVAL},
    probe::{Probe, ProbeOptions},
    snapshot::Snapshot,
};

/// Where the view goes.
pub enum Output {
    /// The terminal, redrawn each interval.
    Terminal,
    /// One plain-text table per interval, written here.
    Batch(DetachedWriter),
}

pub struct TopOptions {
    pub filter: Filter,
    pub probe: ProbeOptions,
    pub containers: ContainerConfig,
    pub interval: Duration,
    /// Stop after this long; `None`: until quit.
    pub duration: Option<Duration>,
    /// Stop after this many intervals.
    pub iterations: Option<u64>,
    pub sort: Column,
    /// One row per program at start (`g` changes it).
    pub by_program: bool,
    pub idle_threshold: Duration,
    pub no_jvm_perf_map: bool,
    /// Warnings to show under the header (and print in batch mode).
    pub notes: Vec<String>,
}

/// The live state: the pipeline, the rows and the last report.
struct Live {
    probe: Probe,
    pipeline: Pipeline,
    rows: Rows,
    report: Option<Report>,
    started: Instant,
    /// When the current interval began, and the pipeline's counts then.
    interval_start: Instant,
    counts_before: EventCounts,
}

/// A socket dump running on a blocking thread.
type Dumping = JoinHandle<Result<(Snapshot, Snapshot)>>;

impl Live {
    fn drain(&mut self, rings: &mut Rings) {
        let rows = &mut self.rows;
        let _ = self
            .pipeline
            .drain::<std::convert::Infallible>(rings, |seen| {
                rows.observe(seen);
                Ok(())
            });
    }

    /// Closes the interval: the rows' counts and the header's figures.
    fn end_interval(&mut self) -> (Duration, Status) {
        let now = Instant::now();
        let interval = now - self.interval_start;
        self.interval_start = now;
        self.rows.end_interval();
        let kernel = self.probe.counters().unwrap_or_default();
        let status = Status::of(
            interval,
            &self.counts_before,
            &self.pipeline.counts,
            &kernel,
            self.report.as_ref().map(|r| &r.totals),
        );
        self.counts_before = self.pipeline.counts;
        (interval, status)
    }

    /// A dump of the sockets now, off the event loop.
    fn start_dump(&self) -> Dumping {
        let filter = self.pipeline.filter.clone();
        let diag: Arc<Mutex<DiagSockets>> = Arc::clone(&self.pipeline.diag);
        tokio::task::spawn_blocking(move || dump(&filter, &diag))
    }

    /// The report against a finished dump: what each process holds.
    fn refresh(&mut self, all: &Snapshot, mut owned: Snapshot) {
        self.pipeline.retain_workloads(&mut owned);
        let kernel = self.probe.counters().unwrap_or_default();
        let report = self.pipeline.report_with(
            all,
            &owned,
            self.started.elapsed(),
            &kernel,
            crate::clock::monotonic_ns(),
        );
        self.rows.set_held(&report);
        self.report = Some(report);
        self.pipeline.call_sites.release_idle();
    }

    /// The rows to show, sorted: one per process, or per program.
    fn snapshot(&self, sort: Column, by_program: bool, interval: Duration) -> Vec<Row> {
        let mut rows = if by_program {
            self.rows.by_program()
        } else {
            self.rows
                .sorted(sort, interval)
                .into_iter()
                .cloned()
                .collect()
        };
        if by_program {
            rows.sort_by(|a, b| {
                sort.sort_key(b, interval)
                    .total_cmp(&sort.sort_key(a, interval))
                    .then(a.pid.cmp(&b.pid))
            });
        }
        rows
    }
}

/// Where the interval's results go, and the keys that come back.
#[expect(
    clippy::large_enum_variant,
    reason = "one per run, never moved after it is made"
)]
enum Screen {
    Terminal {
        guard: TerminalGuard,
        view: View,
        actions: UnboundedReceiver<Action>,
    },
    Batch {
        out: DetachedWriter,
        sort: Column,
        by_program: bool,
        notes: Vec<String>,
    },
}

impl Screen {
    /// The next key's action; never, in batch mode.
    async fn action(&mut self) -> Option<Action> {
        match self {
            Self::Terminal { actions, .. } => actions.recv().await,
            Self::Batch { .. } => std::future::pending().await,
        }
    }

    /// The sort column and the grouping.
    fn order(&self) -> (Column, bool) {
        match self {
            Self::Terminal { view, .. } => (view.sort, view.by_program),
            Self::Batch {
                sort, by_program, ..
            } => (*sort, *by_program),
        }
    }

    /// Shows an interval's rows.
    fn publish(
        &mut self,
        live: &Live,
        rows: Vec<Row>,
        interval: Duration,
        status: Status,
    ) -> Result<()> {
        match self {
            Self::Terminal { view, .. } => {
                view.update(rows, interval, status);
                self.draw(live)
            }
            Self::Batch {
                out,
                sort,
                by_program,
                notes,
            } => {
                let mut view = View::new(*sort, *by_program, interval, std::mem::take(notes));
                view.update(rows, interval, status);
                for line in view.header() {
                    writeln!(out, "{line}")?;
                }
                for note in &view.notes {
                    writeln!(out, "{note}")?;
                }
                let rows: Vec<&Row> = view.rows.iter().collect();
                columns::write_table(out, &rows, interval)?;
                writeln!(out)?;
                out.flush()?;
                Ok(())
            }
        }
    }

    /// Draws the screen again (terminal only).
    fn draw(&mut self, live: &Live) -> Result<()> {
        let Self::Terminal { guard, view, .. } = self else {
            return Ok(());
        };
        let detail = if view.detail {
            view.selected_row()
                .map(|row| detail::lines(row, live.report.as_ref()))
        } else {
            None
        };
        guard
            .terminal
            .draw(|frame| view.draw(frame, detail.as_deref()))
            .context("drawing the view")?;
        Ok(())
    }
}

/// Runs the view until quit (q, Esc, Ctrl-C), SIGINT, SIGTERM, SIGHUP,
/// the duration or the iterations. The terminal is restored on every way
/// out (see `terminal`); dropping the probe detaches every program.
pub async fn run(options: TopOptions, output: Output) -> Result<()> {
    let mut probe = Probe::load(options.probe)?;
    let (mut pipeline, mut rings, start) =
        Pipeline::start(&mut probe, options.filter, options.containers)?;
    drop(start);
    pipeline
        .call_sites
        .set_jvm_perf_maps(!options.no_jvm_perf_map);
    pipeline.sweep_closed_records()?;
    // Rows name their owner's container.
    pipeline.label_events = true;
    pipeline.set_idle_threshold(options.idle_threshold);
    let mut notes = options.notes;
    notes.extend(
        probe
            .missing_hooks()
            .iter()
            .map(|missing| format!("warning: {missing}")),
    );
    let now = Instant::now();
    let mut live = Live {
        probe,
        counts_before: pipeline.counts,
        pipeline,
        rows: Rows::default(),
        report: None,
        started: now,
        interval_start: now,
    };
    let mut screen = match output {
        Output::Terminal => {
            let guard = TerminalGuard::enter()?;
            let actions = keys::spawn_reader().context("starting the thread reading keys")?;
            let view = View::new(options.sort, options.by_program, options.interval, notes);
            Screen::Terminal {
                guard,
                view,
                actions,
            }
        }
        Output::Batch(out) => Screen::Batch {
            out,
            sort: options.sort,
            by_program: options.by_program,
            notes,
        },
    };
    screen.draw(&live)?;
    let timing = Timing {
        interval: options.interval,
        duration: options.duration,
        iterations: options.iterations,
    };
    let result = run_loop(&mut live, &mut rings, &mut screen, &timing).await;
    // Restores the terminal (or lets the batch output go) before the
    // probe detaches.
    drop(screen);
    result
}

/// When the loop ends.
struct Timing {
    interval: Duration,
    duration: Option<Duration>,
    iterations: Option<u64>,
}

async fn run_loop(
    live: &mut Live,
    rings: &mut Rings,
    screen: &mut Screen,
    timing: &Timing,
) -> Result<()> {
    let deadline = tokio::time::sleep(timing.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + timing.interval,
        timing.interval,
    );
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sighup = tokio::signal::unix::signal(SignalKind::hangup())?;
    let mut dumping: Option<Dumping> = None;
    // An interval closed, waiting for its dump to be shown.
    let mut unpublished: Option<(Duration, Status)> = None;
    let mut published = 0u64;
    loop {
        tokio::select! {
            readable = rings.readable() => {
                readable?;
                live.drain(rings);
            }
            _ = drain_tick.tick() => live.drain(rings),
            _ = tick.tick() => {
                live.drain(rings);
                let closed = live.end_interval();
                if dumping.is_none() {
                    dumping = Some(live.start_dump());
                    unpublished = Some(closed);
                } else {
                    // The last dump is still running: show what is known.
                    let (interval, status) = closed;
                    let (sort, by_program) = screen.order();
                    let rows = live.snapshot(sort, by_program, interval);
                    screen.publish(live, rows, interval, status)?;
                    published += 1;
                }
            }
            dumped = async { dumping.as_mut().expect("guarded by the branch condition").await }, if dumping.is_some() => {
                dumping = None;
                live.drain(rings);
                // A failed dump: the held columns keep the last report's
                // figures.
                if let Ok(Ok((all, owned))) = dumped {
                    live.refresh(&all, owned);
                }
                if let Some((interval, mut status)) = unpublished.take() {
                    if let Some(report) = &live.report {
                        status.time_wait_kernel = Some(report.totals.time_wait_kernel);
                        status.close_wait_kernel = Some(report.totals.close_wait_kernel);
                        status.namespaces_unreachable = report.totals.namespaces_unreachable.len();
                    }
                    let (sort, by_program) = screen.order();
                    let rows = live.snapshot(sort, by_program, interval);
                    screen.publish(live, rows, interval, status)?;
                    published += 1;
                }
            }
            action = screen.action() => {
                let Some(action) = action else { break };
                let Screen::Terminal { view, .. } = &mut *screen else { continue };
                if !view.apply(action) {
                    break;
                }
                if action == Action::Group {
                    view.replace_rows(live.snapshot(view.sort, view.by_program, view.interval));
                }
                screen.draw(live)?;
            }
            () = &mut deadline => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => break,
        }
        if timing.iterations.is_some_and(|n| published >= n) {
            break;
        }
    }
    if let Some(dumping) = dumping {
        dumping.abort();
    }
    Ok(())
}
