//! A one-off tracing session: attach, stream events through the filters to
//! a sink until the duration ends or the user interrupts, then summarise.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use serde::Serialize;
use tcptrace_common::ListenerKey;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    callsite::CallSites,
    clock::{monotonic_ns, WallClock},
    diagnose::{build_report, ports::local_port_range, Diagnoses, ReportInput},
    event::{decode, layout::RecordLayouts, TcpEvent, What},
    filter::Filter,
    output::Sink,
    owner,
    probe::{Counters, Probe, ProbeOptions},
    snapshot::{ExistingSocket, Snapshot},
    table::{Applied, SocketTable, StackRef},
};

/// How often the ring buffer is drained when no wakeup came: records are
/// submitted without waking us (see tcptrace-ebpf/src/emit.rs).
const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// Stop after this long; `None` runs until interrupted.
    pub duration: Option<Duration>,
    pub filter: Filter,
    pub probe: ProbeOptions,
    /// Only the report at the end, no live lines.
    pub report_only: bool,
}

/// What a session saw, printed at its end.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    #[serde(serialize_with = "as_secs")]
    pub elapsed: Duration,
    pub events: u64,
    pub state_changes: u64,
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub shown: u64,
    pub filtered_out: u64,
    pub decode_errors: u64,
    /// The kernel programs' own counters (events sent and lost, maps full).
    pub kernel: Counters,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Runs a session, writing to `sink`. Returns when the duration ends, on
/// Ctrl-C or SIGTERM; dropping the probe detaches every program.
pub async fn run(options: SessionOptions, sink: &mut dyn Sink) -> Result<Summary> {
    let mut probe = Probe::load(options.probe)?;
    // Attach first, then snapshot: a socket born in between is seen by both,
    // never by neither.
    let snapshot = Snapshot::take().context("listing existing sockets (sock_diag)")?;
    seed_listeners(&mut probe, &snapshot);

    let shown: Vec<&ExistingSocket> = snapshot
        .sockets
        .iter()
        .filter(|s| options.filter.matches_existing(s))
        .collect();
    if !options.report_only {
        sink.start(&snapshot.sockets, shown.len())?;
        for socket in &shown {
            sink.existing(socket)?;
        }
    }
    sink.flush()?;
    eprintln!("tcptrace: tracing TCP sockets; Ctrl-C to stop");

    let ring = probe.take_events()?;
    // SAFETY: the ring buffer owns its fd, which stays open and unchanged
    // for as long as the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {}", e))?;

    let mut reader = Reader {
        layouts: probe.layouts,
        probe: &probe,
        snapshot: &snapshot,
        filter: &options.filter,
        report_only: options.report_only,
        clock: WallClock::now(),
        summary: Summary::default(),
        table: SocketTable::default(),
        diagnoses: Diagnoses::default(),
        call_sites: CallSites::default(),
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
    loop {
        tokio::select! {
            readable = ring.readable_mut() => {
                let mut guard = readable?;
                reader.drain(guard.get_inner_mut(), sink)?;
                guard.clear_ready();
            }
            _ = interval.tick() => reader.drain(ring.get_mut(), sink)?,
            () = &mut deadline => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    reader.drain(ring.get_mut(), sink)?;
    let mut summary = std::mem::take(&mut reader.summary);
    summary.elapsed = started.elapsed();
    summary.kernel = probe.counters()?;
    sink.summary(&summary)?;

    let mut now = Snapshot::take().context("listing sockets for the report (sock_diag)")?;
    now.retain(|s| options.filter.matches_existing(s));
    let report = build_report(
        &reader.diagnoses,
        &ReportInput {
            table: &reader.table,
            now: &now,
            now_ns: monotonic_ns(),
            elapsed: summary.elapsed,
            call_sites: &reader.call_sites,
            port_range: local_port_range(),
            events_lost: summary.kernel.events_lost + summary.decode_errors,
        },
    );
    sink.report(&report)?;
    sink.flush()?;
    Ok(summary)
}

struct Reader<'a> {
    layouts: RecordLayouts,
    probe: &'a Probe,
    snapshot: &'a Snapshot,
    filter: &'a Filter,
    report_only: bool,
    clock: WallClock,
    summary: Summary,
    table: SocketTable,
    diagnoses: Diagnoses,
    call_sites: CallSites,
}

impl Reader<'_> {
    /// Reads every waiting record. A record that does not decode is counted
    /// and skipped: one bad record must not end the session.
    fn drain(&mut self, ring: &mut RingBuf<MapData>, sink: &mut dyn Sink) -> Result<()> {
        while let Some(item) = ring.next() {
            let event = match decode(&item, &self.layouts) {
                Ok(event) => event,
                Err(_) => {
                    self.summary.decode_errors += 1;
                    continue;
                }
            };
            drop(item);
            let s = &mut self.summary;
            s.events += 1;
            match event.what {
                What::StateChange { .. } => s.state_changes += 1,
                What::Retransmit { .. } => s.retransmits += 1,
                What::ResetSent { .. } => s.resets_sent += 1,
                What::ResetReceived => s.resets_received += 1,
            }
            let owner = owner::resolve(&event, self.snapshot);
            // The table sees everything, so a socket's record stays whole
            // whatever the filter; diagnoses see what the filter lets by.
            let applied = self.table.apply(&event, owner.as_ref());
            if !self.filter.matches(&event, owner.as_ref()) {
                s.filtered_out += 1;
                continue;
            }
            s.shown += 1;
            self.observe_call_sites(&event);
            match applied {
                Applied::Live(skaddr) => {
                    if let Some(record) = self.table.get(skaddr) {
                        self.diagnoses.on_event(&event, record);
                    }
                }
                Applied::Closed(record) => self.diagnoses.on_closed(&record, &event),
                Applied::Untracked => {}
            }
            if !self.report_only {
                sink.event(&event, owner.as_ref(), self.clock.unix_ns(event.ts_ns))?;
            }
        }
        sink.flush()?;
        Ok(())
    }
}

/// Passive sockets inherit their listener's owner in the kernel; listeners
/// opened before tcptrace started are taught to it from the snapshot.
impl Reader<'_> {
    /// Symbolizes stacks on first sight, while their process still lives.
    fn observe_call_sites(&mut self, event: &TcpEvent) {
        let tasks = [event.owner(), event.closer(), event.actor.as_ref()];
        for stack in tasks.into_iter().flatten().filter_map(StackRef::of_task) {
            self.call_sites.observe(stack, self.probe);
        }
    }
}

fn seed_listeners(probe: &mut Probe, snapshot: &Snapshot) {
    for socket in &snapshot.sockets {
        let (tcptrace_common::TcpState::Listen, Some(holder)) =
            (socket.state, socket.holders.first())
        else {
            continue;
        };
        let mut owner = tcptrace_common::Task::NOBODY;
        owner.tgid = holder.pid;
        owner.pid = holder.pid;
        let comm = holder.comm.as_bytes();
        let len = comm.len().min(owner.comm.len() - 1);
        owner.comm[..len].copy_from_slice(&comm[..len]);
        let key = ListenerKey {
            netns: snapshot.netns,
            port: socket.local.port(),
            _pad: 0,
        };
        let listener = tcptrace_common::Listener {
            owner,
            cgroup_id: 0,
            skaddr: 0,
        };
        if let Err(err) = probe.seed_listener(key, listener) {
            eprintln!(
                "tcptrace: warning: cannot record listener on port {}: {err:#}",
                key.port
            );
        }
    }
}
