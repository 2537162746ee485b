//! Everything between the ring buffer and the outputs, shared by one-off
//! sessions and the daemon: decode → owner → socket table → diagnoses.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use serde::Serialize;
use tcptrace_common::{Listener, ListenerKey, Task, TcpState};
use tokio::io::unix::AsyncFd;

use crate::{
    callsite::CallSites,
    clock::monotonic_ns,
    diagnose::{build_report, ports::local_port_range, Diagnoses, Report, ReportInput},
    event::{
        comm_str, decode, decode_user_stack, expand, is_user_stack, layout::RecordLayouts,
        TcpEvent, What,
    },
    filter::Filter,
    netns::DiagSockets,
    owner::{self, Owner, StartOwners},
    probe::{Counters, Probe},
    snapshot::Snapshot,
    symbolize::Meeter,
    table::{Applied, SocketRecord, SocketTable},
};

/// How often the ring buffer is drained when no wakeup came: records are
/// submitted without waking us (see tcptrace-ebpf/src/emit.rs).
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// Event counts of a session or daemon.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct EventCounts {
    pub events: u64,
    pub state_changes: u64,
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    /// Reads that returned end-of-file in `CLOSE_WAIT` (once per socket).
    pub eof_reads: u64,
    pub shown: u64,
    pub filtered_out: u64,
    pub decode_errors: u64,
}

/// One event that passed the filter, with the socket's record: the live
/// one, or the final one when `closed`.
pub struct Observed<'a> {
    pub event: &'a TcpEvent,
    pub owner: Option<&'a Owner<'a>>,
    pub record: Option<&'a SocketRecord>,
    pub closed: bool,
}

pub struct Pipeline {
    layouts: RecordLayouts,
    /// Owners of the sockets that existed when tracing started.
    pub start: StartOwners,
    pub filter: Filter,
    pub counts: EventCounts,
    pub table: SocketTable,
    pub diagnoses: Diagnoses,
    pub call_sites: CallSites,
    /// `sock_diag` sockets in every network namespace, for the dumps;
    /// shared with the daemon's dumps, which run off its event loop.
    pub diag: Arc<Mutex<DiagSockets>>,
}

/// The kernel's two ring buffers, pollable by tokio: events, and the
/// user stack captures they refer to (apart, so that a burst of captures
/// cannot crowd out events).
pub struct Rings {
    pub events: AsyncFd<RingBuf<MapData>>,
    pub stacks: AsyncFd<RingBuf<MapData>>,
}

impl Rings {
    fn take(probe: &mut Probe) -> Result<Self> {
        let pollable = |ring: RingBuf<MapData>| {
            // SAFETY: the ring buffer owns its fd, which stays open and
            // unchanged for as long as the AsyncFd owns the ring buffer.
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(|e| anyhow::anyhow!("polling a ring buffer: {e}"))
        };
        Ok(Self {
            events: pollable(probe.take_events()?)?,
            stacks: pollable(probe.take_stacks()?)?,
        })
    }

    /// Waits until either ring has records (or the kernel woke us), and
    /// clears the readiness before returning: a wakeup that comes while
    /// the caller drains must not be lost (a process's first stack wakes us
    /// so that its mappings are read while it lives).
    pub async fn readable(&mut self) -> Result<()> {
        tokio::select! {
            ready = self.events.readable_mut() => ready?.clear_ready(),
            ready = self.stacks.readable_mut() => ready?.clear_ready(),
        }
        Ok(())
    }
}

impl Pipeline {
    /// Takes the start snapshot (after the probe is attached: a socket born
    /// in between is seen by both, never by neither), teaches the kernel
    /// the owners of listeners that already existed and keeps the owners of
    /// the others. Returns the snapshot for the caller to show, or drop.
    pub fn start(probe: &mut Probe, filter: Filter) -> Result<(Self, Rings, Snapshot)> {
        // Before the daemon drops its privileges: the helper that enters
        // namespaces is started with them.
        let mut diag = DiagSockets::start();
        let start = Snapshot::take(&mut diag).context("listing existing sockets (sock_diag)")?;
        seed_listeners(probe, &start);
        let rings = Rings::take(probe)?;
        let meeter = Meeter::spawn(probe.take_processes()?)
            .context("starting the thread that meets new processes")?;
        let pipeline = Self {
            layouts: probe.layouts,
            start: StartOwners::of(&start),
            filter,
            counts: EventCounts::default(),
            table: SocketTable::default(),
            diagnoses: Diagnoses::default(),
            call_sites: CallSites::with_meeter(meeter),
            diag: Arc::new(Mutex::new(diag)),
        };
        Ok((pipeline, rings, start))
    }

    /// A pipeline fed by hand (benchmarks, tests): no probe, no snapshot.
    #[must_use]
    pub fn detached(layouts: RecordLayouts, filter: Filter) -> Self {
        Self {
            layouts,
            start: StartOwners::default(),
            filter,
            counts: EventCounts::default(),
            table: SocketTable::default(),
            diagnoses: Diagnoses::default(),
            call_sites: CallSites::default(),
            diag: Arc::new(Mutex::new(DiagSockets::own_only())),
        }
    }

    /// Reads every waiting record; `each` sees those that pass the filter.
    pub fn drain<E>(
        &mut self,
        rings: &mut Rings,
        mut each: impl FnMut(&Observed) -> Result<(), E>,
    ) -> Result<(), E> {
        let (events, stacks) = (rings.events.get_mut(), rings.stacks.get_mut());
        // Stacks are symbolized one at a time once the rings are empty, so
        // the records of other processes (their stacks to unwind while they
        // live) never wait behind the parse of a new binary.
        loop {
            self.drain_stacks(stacks);
            while let Some(item) = events.next() {
                let Some(event) = self.decoded(&item) else {
                    continue;
                };
                // The kernel sends a capture before the event that refers
                // to it: one not met yet is in the stack ring by now.
                if !self.call_sites.knows_captures_of(&event) {
                    self.drain_stacks(stacks);
                }
                self.handle_event(&event, &mut each)?;
            }
            if !self.call_sites.resolve_one() {
                return Ok(());
            }
        }
    }

    fn drain_stacks(&mut self, stacks: &mut RingBuf<MapData>) {
        while let Some(item) = stacks.next() {
            let _ = self.decoded(&item);
        }
    }

    /// One record through decode → owner → table → diagnoses → `each`. A
    /// record that does not decode is counted and skipped: one bad record
    /// must not end the session. A stack capture is unwound and symbolized
    /// for the events that follow it; a summary record (daemon mode) is
    /// unfolded into the events it stands for first.
    pub fn handle<E>(
        &mut self,
        bytes: &[u8],
        each: &mut impl FnMut(&Observed) -> Result<(), E>,
    ) -> Result<(), E> {
        match self.decoded(bytes) {
            Some(event) => self.handle_event(&event, each),
            None => Ok(()),
        }
    }

    /// The event `bytes` holds. A stack capture is taken in (and gives
    /// none); a record that does not decode is counted.
    fn decoded(&mut self, bytes: &[u8]) -> Option<TcpEvent> {
        if is_user_stack(bytes) {
            self.on_user_stack(bytes);
            return None;
        }
        let Ok(event) = decode(bytes, &self.layouts) else {
            self.counts.decode_errors += 1;
            return None;
        };
        self.counts.events += 1;
        Some(event)
    }

    fn handle_event<E>(
        &mut self,
        event: &TcpEvent,
        each: &mut impl FnMut(&Observed) -> Result<(), E>,
    ) -> Result<(), E> {
        if !event.summary {
            return self.process(event, each);
        }
        let mut result = Ok(());
        expand(event, |unfolded| {
            if result.is_ok() {
                result = self.process(unfolded, each);
            }
        });
        result
    }

    /// A stack capture: resolved now when its process passes the filter's
    /// process criteria (an actor outside them acts on sockets the session
    /// does not show, but for a child closing its parent's socket).
    fn on_user_stack(&mut self, bytes: &[u8]) {
        let Ok(record) = decode_user_stack(bytes) else {
            self.counts.decode_errors += 1;
            return;
        };
        if self
            .filter
            .matches_process(record.tgid, &comm_str(&record.comm))
        {
            self.call_sites.capture(record);
        } else {
            self.call_sites.skip();
        }
    }

    fn process<E>(
        &mut self,
        event: &TcpEvent,
        each: &mut impl FnMut(&Observed) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut event = *event;
        self.call_sites.canonicalize(&mut event);
        let event = &event;
        let result = self.observe(event, each);
        if let What::StateChange {
            new: TcpState::Close,
            ..
        } = event.what
        {
            self.start
                .forget(event.sock.netns, event.local, event.remote);
        }
        result
    }

    fn observe<E>(
        &mut self,
        event: &TcpEvent,
        each: &mut impl FnMut(&Observed) -> Result<(), E>,
    ) -> Result<(), E> {
        let c = &mut self.counts;
        match event.what {
            What::StateChange { .. } => c.state_changes += 1,
            What::Retransmit { .. } => c.retransmits += 1,
            What::ResetSent { .. } => c.resets_sent += 1,
            What::ResetReceived => c.resets_received += 1,
            What::EofRead => c.eof_reads += 1,
        }
        let owner = owner::resolve(event, &self.start);
        // The table sees everything, so a socket's record stays whole
        // whatever the filter; diagnoses see what the filter lets by.
        let applied = self.table.apply(event, owner.as_ref());
        if !self.filter.matches(event, owner.as_ref()) {
            self.counts.filtered_out += 1;
            return Ok(());
        }
        self.counts.shown += 1;
        let (record, closed) = match &applied {
            Applied::Live(skaddr) => (self.table.get(*skaddr), false),
            Applied::Closed(record) => (Some(record), true),
            Applied::Untracked => (None, false),
        };
        match (record, closed) {
            (Some(record), false) => self.diagnoses.on_event(event, record),
            (Some(record), true) => self.diagnoses.on_closed(record, event),
            (None, _) => {}
        }
        each(&Observed {
            event,
            owner: owner.as_ref(),
            record,
            closed,
        })
    }

    /// The diagnosis report now, from a fresh `sock_diag` dump.
    pub fn report(&self, elapsed: Duration, kernel: &Counters) -> Result<Report> {
        let (all, owned) = dump(&self.filter, &self.diag)?;
        Ok(self.report_with(&all, &owned, elapsed, kernel))
    }

    /// The sockets `dump_now` says the filter's processes hold.
    #[must_use]
    pub fn owned<'a>(&self, all: &'a Snapshot, owned: &'a Snapshot) -> &'a Snapshot {
        if self.filter.pids.is_empty() && self.filter.comms.is_empty() {
            all
        } else {
            owned
        }
    }

    /// The diagnosis report against the dumps of `dump_now`.
    #[must_use]
    pub fn report_with(
        &self,
        now: &Snapshot,
        owned: &Snapshot,
        elapsed: Duration,
        kernel: &Counters,
    ) -> Report {
        let owned = self.owned(now, owned);
        build_report(
            &self.diagnoses,
            &ReportInput {
                table: &self.table,
                now,
                owned,
                filter: &self.filter,
                now_ns: monotonic_ns(),
                elapsed,
                call_sites: &self.call_sites,
                port_range: local_port_range(),
                // A skipped run is an event never seen, as a lost one is.
                events_lost: kernel.events_lost + kernel.runs_skipped + self.counts.decode_errors,
                sockets_untracked: kernel.sock_map_full,
            },
        )
    }
}

/// A `sock_diag` dump now: every socket on the filter's ports, and the ones
/// the filter's processes hold (empty when there is no process filter: then
/// they are the same, see `Pipeline::owned`). Needs no pipeline state, so
/// the daemon runs it off its event loop.
pub fn dump(filter: &Filter, diag: &Mutex<DiagSockets>) -> Result<(Snapshot, Snapshot)> {
    // A panic elsewhere cannot leave the sockets half-used: each dump
    // reads its replies to the end or drops the socket.
    let mut diag = diag
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut all =
        Snapshot::take(&mut diag).context("listing sockets for the report (sock_diag)")?;
    all.retain(|s| filter.matches_ports(s.local.port(), s.remote.port()));
    let owned = if filter.pids.is_empty() && filter.comms.is_empty() {
        Snapshot::default()
    } else {
        all.filtered(|s| filter.matches_existing(s))
    };
    Ok((all, owned))
}

/// Passive sockets inherit their listener's owner in the kernel; listeners
/// opened before tcptrace started are taught to it from the snapshot.
fn seed_listeners(probe: &mut Probe, snapshot: &Snapshot) {
    for socket in &snapshot.sockets {
        let (TcpState::Listen, Some(holder)) = (socket.state, socket.holders.first()) else {
            continue;
        };
        let mut owner = Task::NOBODY;
        owner.tgid = holder.pid;
        owner.pid = holder.pid;
        let comm = holder.comm.as_bytes();
        let len = comm.len().min(owner.comm.len() - 1);
        owner.comm[..len].copy_from_slice(&comm[..len]);
        let key = ListenerKey {
            netns: socket.netns,
            port: socket.local.port(),
            _pad: 0,
        };
        let listener = Listener {
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
