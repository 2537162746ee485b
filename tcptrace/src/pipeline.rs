//! Everything between the ring buffer and the outputs, shared by one-off
//! sessions and the daemon: decode → owner → socket table → diagnoses.

use std::{
    os::fd::AsFd,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use serde::Serialize;
use tcptrace_common::{Listener, ListenerKey, Task, TcpState, RESET_BY_CLOSE};
use tokio::io::unix::AsyncFd;

use crate::{
    callsite::CallSites,
    clock::monotonic_ns,
    container::lookup::{cgroup2_mount, cgroup_id_of_pid},
    container::{ContainerConfig, ContainerLabels, Containers},
    diagnose::Diagnoses,
    event::{
        comm_str, decode, decode_user_stack, expand, is_lives_waiting, is_user_stack,
        layout::RecordLayouts, reset_received_before, reset_sent_after, tells_whole_life, TcpEvent,
        TcpEventKind,
    },
    filter::{Filter, Workloads},
    findings::{build_report, Report, ReportInput, DEFAULT_IDLE_THRESHOLD},
    first_seen::FirstSeen,
    live_births::LiveBirths,
    netns::DiagSockets,
    owner::{self, Owner, StartOwners},
    probe::{
        closed_records::{self, SweepCounts},
        Counters, FilterMaps, LifeRings, Probe, RingFill, SocketMap,
    },
    recording::Recorder,
    snapshot::{ExistingSocket, Snapshot},
    symbolize::Meeter,
    table::{Applied, Cgroups, SocketRecord, SocketTable},
    FastMap,
};

/// How often the ring buffer is drained when no wakeup came: records are
/// submitted without waking us (see tcptrace-ebpf/src/emit.rs).
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(100);
/// Event records read between two looks at everything else a reader does
/// (output, signals, deadline, HTTP): a load that never lets the ring
/// empty must not keep it in one drain.
pub const DRAIN_BATCH: usize = 4096;

/// Event counts of a session or daemon.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize)]
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
    /// Socket records dropped because another socket took their address
    /// before they were seen closing: events were lost.
    pub records_replaced: u64,
}

/// One event that passed the filter, with the socket's record: the live
/// one, or the final one when `closed`.
pub struct Observed<'a> {
    pub event: &'a TcpEvent,
    pub owner: Option<&'a Owner<'a>>,
    pub record: Option<&'a SocketRecord>,
    pub closed: bool,
    /// The names of the owner's workload, when `Pipeline::label_events`
    /// asks for them (a one-off session printing events; never the
    /// daemon).
    pub labels: Option<&'a Arc<ContainerLabels>>,
}

pub struct Pipeline {
    /// How to read the kernel's records (`None` when replaying a
    /// recording, whose events are decoded already).
    layouts: Option<RecordLayouts>,
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
    /// Container attribution: each socket's cgroup key, found when its
    /// record is made, and the names of those keys (the daemon's labels).
    /// `None` in a detached pipeline, whose records keep the kernel's id.
    pub cgroups: Option<Cgroups>,
    /// The filter's workload verdicts, per cgroup key.
    pub workloads: Workloads,
    /// Where the filter reaches the kernel programs (`None` when detached).
    kernel_filter: Option<FilterMaps>,
    /// Look up the owner's workload names for each event shown (in
    /// `Observed::labels`): a cache hit per event, for a session's output.
    pub label_events: bool,
    /// Connections idle this long are reported as idle (and lives this
    /// long as long): `set_idle_threshold`.
    idle_threshold: Duration,
    /// When each live connection was first listed by a report's dump.
    first_seen: FirstSeen,
    /// Where the live connections the table has no record of were opened,
    /// from the kernel's socket map (`None` when detached).
    socket_map: Option<SocketMap>,
    births: LiveBirths,
    /// What the thread sweeping closed sockets' records out of the kernel's
    /// socket map did (`None` when detached, or until
    /// `sweep_closed_records`).
    sweeps: Option<Arc<SweepCounts>>,
    /// Where every event the table sees is saved (`trace --write`).
    pub recorder: Option<Recorder>,
}

/// A socket of a workload the filter rejects for good: the kernel stops
/// sending its cgroup's records. Only where the record's key is the
/// kernel's cgroup id (cgroup v2), and only for a cgroup whose sockets all
/// get that key: on a hybrid host a v2 cgroup (the root, a runtime's
/// service) can hold pods that only their v1 paths tell apart, and
/// rejecting it would hide them.
fn reject_in_kernel(
    maps: &mut FilterMaps,
    workloads: &Workloads,
    containers: &mut Containers,
    event: &TcpEvent,
    record: &SocketRecord,
) {
    let id = event.sock.cgroup_id;
    if id != 0
        && record.cgroup == id
        && workloads.rejected_for_good(id)
        && !containers.may_split_by_v1(id)
    {
        maps.reject_cgroup(id);
    }
}

/// The kernel's two ring buffers, pollable by tokio: events, and the
/// user stack captures they refer to (apart, so that a burst of captures
/// cannot crowd out events).
pub struct Rings {
    pub events: AsyncFd<RingBuf<MapData>>,
    pub stacks: AsyncFd<RingBuf<MapData>>,
    /// How full each is (`None` where its positions could not be mapped).
    pub events_fill: Option<RingFill>,
    pub stacks_fill: Option<RingFill>,
    /// Summary mode's per-CPU rings of whole lives (read on each drain:
    /// they wake nobody but through a nudge on `events`).
    pub lives: Option<LifeRings>,
}

impl Rings {
    fn take(probe: &mut Probe) -> Result<Self> {
        let pollable = |ring: RingBuf<MapData>| {
            // SAFETY: the ring buffer owns its fd, which stays open and
            // unchanged for as long as the AsyncFd owns the ring buffer.
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(|e| anyhow::anyhow!("polling a ring buffer: {e}"))
        };
        let (events, stacks) = (
            pollable(probe.take_events()?)?,
            pollable(probe.take_stacks()?)?,
        );
        let fill = |ring: &AsyncFd<RingBuf<MapData>>| RingFill::of(ring.get_ref().as_fd()).ok();
        let lives = probe.take_life_rings()?;
        Ok(Self {
            lives,
            events_fill: fill(&events),
            stacks_fill: fill(&stacks),
            events,
            stacks,
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
    /// Connections idle this long are idle, lives this long are long (for
    /// the report and the diagnoses alike).
    pub fn set_idle_threshold(&mut self, threshold: Duration) {
        self.idle_threshold = threshold;
        self.diagnoses.lost.long_ns = crate::diagnose::lost::duration_ns(threshold);
    }

    /// A new filter (the daemon's SIGHUP), in the kernel programs too: its
    /// workload verdicts are decided again. The socket table is kept.
    pub fn set_filter(&mut self, filter: Filter) -> Result<()> {
        let mount = self.cgroups.as_ref().and_then(Cgroups::mount);
        self.workloads = Workloads::new(&filter, mount);
        let kernel = filter.kernel();
        self.filter = filter;
        if let Some(maps) = &mut self.kernel_filter {
            maps.set(&kernel)
                .context("giving the kernel programs the new filter")?;
        }
        Ok(())
    }

    /// Takes the start snapshot (after the probe is attached: a socket born
    /// in between is seen by both, never by neither), teaches the kernel
    /// the owners of listeners that already existed and keeps the owners of
    /// the others. Returns the snapshot for the caller to show, or drop.
    pub fn start(
        probe: &mut Probe,
        filter: Filter,
        containers: ContainerConfig,
    ) -> Result<(Self, Rings, Snapshot)> {
        // Before the daemon drops its privileges: the helper that enters
        // namespaces is started with them.
        let mut diag = DiagSockets::start();
        let start = Snapshot::take(&mut diag).context("listing existing sockets (sock_diag)")?;
        let listed_ns = monotonic_ns();
        seed_listeners(probe, &start);
        let mut kernel_filter = probe.take_filter_maps()?;
        kernel_filter
            .set(&filter.kernel())
            .context("giving the kernel programs the filter")?;
        let socket_map = probe.take_socket_map()?;
        let rings = Rings::take(probe)?;
        let meeter = Meeter::spawn(probe.take_processes()?)
            .context("starting the thread that meets new processes")?;
        let cgroups = Cgroups::new(Containers::new(containers));
        let pipeline = Self {
            layouts: Some(probe.layouts),
            start: StartOwners::of(&start).listed_by(listed_ns),
            workloads: Workloads::new(&filter, cgroups.mount()),
            kernel_filter: Some(kernel_filter),
            filter,
            counts: EventCounts::default(),
            table: SocketTable::default(),
            diagnoses: Diagnoses::default(),
            call_sites: CallSites::with_meeter(meeter),
            diag: Arc::new(Mutex::new(diag)),
            cgroups: Some(cgroups),
            label_events: false,
            idle_threshold: DEFAULT_IDLE_THRESHOLD,
            first_seen: FirstSeen::default(),
            socket_map: Some(socket_map),
            births: LiveBirths::default(),
            sweeps: None,
            recorder: None,
        };
        Ok((pipeline, rings, start))
    }

    /// A pipeline fed by hand (benchmarks, tests): no probe, no snapshot.
    #[must_use]
    pub fn detached(layouts: RecordLayouts, filter: Filter) -> Self {
        Self {
            layouts: Some(layouts),
            start: StartOwners::default(),
            workloads: Workloads::new(&filter, None),
            kernel_filter: None,
            filter,
            counts: EventCounts::default(),
            table: SocketTable::default(),
            diagnoses: Diagnoses::default(),
            call_sites: CallSites::default(),
            diag: Arc::new(Mutex::new(DiagSockets::own_only())),
            cgroups: None,
            label_events: false,
            idle_threshold: DEFAULT_IDLE_THRESHOLD,
            first_seen: FirstSeen::default(),
            socket_map: None,
            sweeps: None,
            births: LiveBirths::default(),
            recorder: None,
        }
    }

    /// A pipeline replaying a recording: its start owners, call sites,
    /// names and live births are the recording's, nothing of this machine
    /// is read (see `recording::replay`).
    #[must_use]
    pub fn replaying(
        filter: Filter,
        start: &Snapshot,
        call_sites: CallSites,
        cgroups: Cgroups,
        workloads: Workloads,
        births: LiveBirths,
    ) -> Self {
        Self {
            layouts: None,
            start: StartOwners::of(start),
            workloads,
            kernel_filter: None,
            filter,
            counts: EventCounts::default(),
            table: SocketTable::default(),
            diagnoses: Diagnoses::default(),
            call_sites,
            diag: Arc::new(Mutex::new(DiagSockets::own_only())),
            cgroups: Some(cgroups),
            label_events: false,
            idle_threshold: DEFAULT_IDLE_THRESHOLD,
            first_seen: FirstSeen::default(),
            socket_map: None,
            sweeps: None,
            births,
            recorder: None,
        }
    }

    /// A recorded event, whose socket's record takes the recorded cgroup
    /// key, through the same path as a live one.
    pub fn replay_event<E>(
        &mut self,
        event: &TcpEvent,
        cgroup: u64,
        each: &mut impl FnMut(&Observed) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some(cgroups) = self.cgroups.as_mut() {
            cgroups.set_recorded_key(cgroup);
        }
        self.process(event, each)
    }
    /// Reads every waiting record; `each` sees those that pass the filter.
    pub fn drain<E>(
        &mut self,
        rings: &mut Rings,
        mut each: impl FnMut(&Observed) -> Result<(), E>,
    ) -> Result<(), E> {
        while self.drain_up_to(rings, usize::MAX, &mut each)? {}
        Ok(())
    }

    /// Reads waiting records, at most `budget` of the event ring; true when
    /// it stopped there and more may be waiting. Under a load that never
    /// lets the ring empty, the caller gets back to its output, signals and
    /// deadline between batches.
    pub fn drain_up_to<E>(
        &mut self,
        rings: &mut Rings,
        budget: usize,
        each: &mut impl FnMut(&Observed) -> Result<(), E>,
    ) -> Result<bool, E> {
        let (events, stacks) = (rings.events.get_mut(), rings.stacks.get_mut());
        let mut read = 0;
        // Stacks are symbolized one at a time once the rings are empty, so
        // the records of other processes (their stacks to unwind while they
        // live) never wait behind the parse of a new binary.
        loop {
            self.drain_stacks(stacks);
            while let Some(item) = events.next() {
                read += 1;
                let Some(mut event) = self.decoded(&item) else {
                    continue;
                };
                drop(item);
                self.handle_drained(&mut event, stacks, each)?;
                if read >= budget {
                    return Ok(true);
                }
            }
            // Whole lives overtake nothing of their own sockets (see
            // `tcptrace_common::life_ring`): read after the ring buffer.
            if let Some(lives) = &mut rings.lives {
                read += lives.read(budget - read, |bytes| match self.decoded(bytes) {
                    Some(mut event) => self.handle_drained(&mut event, stacks, each),
                    None => Ok(()),
                })?;
                if read >= budget {
                    return Ok(true);
                }
            }
            if !self.call_sites.resolve_one() {
                return Ok(false);
            }
        }
    }

    /// A drained record: its call sites made canonical, then processed.
    fn handle_drained<E>(
        &mut self,
        event: &mut TcpEvent,
        stacks: &mut RingBuf<MapData>,
        each: &mut impl FnMut(&Observed) -> Result<(), E>,
    ) -> Result<(), E> {
        // The kernel sends a capture before the event that refers to it:
        // one not met yet is in the stack ring by now.
        if !self.call_sites.canonicalize(event) {
            self.drain_stacks(stacks);
            self.call_sites.canonicalize(event);
        }
        self.handle_event(event, each)
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
        let Some(mut event) = self.decoded(bytes) else {
            return Ok(());
        };
        // Records fed by hand come with their stacks before them.
        self.call_sites.canonicalize(&mut event);
        self.handle_event(&event, each)
    }

    /// The event `bytes` holds. A stack capture is taken in (and gives
    /// none); a record that does not decode is counted.
    #[inline]
    fn decoded(&mut self, bytes: &[u8]) -> Option<TcpEvent> {
        if is_user_stack(bytes) {
            self.on_user_stack(bytes);
            return None;
        }
        if is_lives_waiting(bytes) {
            return None; // its rings are read on every drain
        }
        let Some(Ok(event)) = self.layouts.as_ref().map(|layouts| decode(bytes, layouts)) else {
            self.counts.decode_errors += 1;
            return None;
        };
        self.counts.events += 1;
        Some(event)
    }

    /// A decoded event whose captures are canonical: unfolded (summary
    /// records) and processed.
    fn handle_event<E>(
        &mut self,
        event: &TcpEvent,
        each: &mut impl FnMut(&Observed) -> Result<(), E>,
    ) -> Result<(), E> {
        if !event.summary {
            // A CLOSE stands for the resets around it, its socket's: one
            // owner for all (a CLOSE lets go of it, see `forget_if_closed`).
            return self.with_owner(event, |pipeline, owner| {
                if let Some(reset) = reset_received_before(event) {
                    pipeline.observe(&reset, owner, each)?;
                }
                pipeline.observe(event, owner, each)?;
                match reset_sent_after(event) {
                    Some(reset) => pipeline.observe(&reset, owner, each),
                    None => Ok(()),
                }
            });
        }
        if tells_whole_life(event) {
            self.table.whole_life(event.skaddr);
        }
        // Every event a summary unfolds into is about the same socket: its
        // owner is resolved once.
        let result = self.with_owner(event, |pipeline, owner| {
            let mut result = Ok(());
            expand(event, |unfolded| {
                if result.is_ok() {
                    result = pipeline.observe(unfolded, owner, each);
                }
            });
            result
        });
        self.table.end_whole_life();
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
        self.with_owner(event, |pipeline, owner| {
            pipeline.observe(event, owner, each)
        })
    }

    /// `f` with the owner of the socket `event` (or the summary it
    /// unfolds into) is about; then a closed socket's start owner goes
    /// (only the last event of a summary can be its CLOSE). The owner may
    /// borrow from the start owners, set aside meanwhile.
    fn with_owner<R>(
        &mut self,
        event: &TcpEvent,
        f: impl FnOnce(&mut Self, Option<&Owner>) -> R,
    ) -> R {
        let start = std::mem::replace(&mut self.start, StartOwners::NONE);
        let owner = owner::resolve(event, &start);
        let result = f(self, owner.as_ref());
        drop(owner);
        self.start = start;
        self.forget_if_closed(event);
        result
    }

    /// A socket from before the session that closed: a later one with its
    /// endpoints is another.
    fn forget_if_closed(&mut self, event: &TcpEvent) {
        if let TcpEventKind::StateChange {
            new: TcpState::Close,
            ..
        } = event.what
        {
            self.start.forget(
                event.sock.netns,
                event.local,
                event.remote,
                event.sock.created_ns,
            );
        }
    }

    fn observe<E>(
        &mut self,
        event: &TcpEvent,
        owner: Option<&Owner>,
        each: &mut impl FnMut(&Observed) -> Result<(), E>,
    ) -> Result<(), E> {
        let c = &mut self.counts;
        match event.what {
            TcpEventKind::StateChange { new, .. } => {
                c.state_changes += 1;
                // An abortive close's reset, sent after the CLOSE.
                if new == TcpState::Close && event.sock.flags & RESET_BY_CLOSE != 0 {
                    c.resets_sent += 1;
                }
            }
            TcpEventKind::Retransmit { .. } | TcpEventKind::SynAckRetransmit => {
                c.retransmits += 1;
            }
            TcpEventKind::ResetSent { by_close, .. } => c.resets_sent += u64::from(!by_close),
            TcpEventKind::ResetReceived => c.resets_received += 1,
            TcpEventKind::EofRead => c.eof_reads += 1,
        }
        // The table sees everything, so a socket's record stays whole
        // whatever the filter; diagnoses see what the filter lets by.
        let applied = self.table.apply_in(event, owner, self.cgroups.as_mut());
        self.counts.records_replaced = self.table.replaced;
        if let Some(recorder) = &mut self.recorder {
            let cgroup = match &applied {
                Applied::Live(skaddr) => self.table.get(*skaddr).map_or(0, |r| r.cgroup),
                Applied::Closed => self.table.closed().map_or(0, |r| r.cgroup),
                Applied::Untracked => 0,
            };
            recorder.event(event, cgroup);
        }
        if !self.filter.matches(event, owner) {
            self.counts.filtered_out += 1;
            return Ok(());
        }
        let (record, closed) = match &applied {
            Applied::Live(skaddr) => (self.table.get(*skaddr), false),
            Applied::Closed => (self.table.closed(), true),
            Applied::Untracked => (None, false),
        };
        // The socket's workload, by the cgroup recorded at its birth: a
        // verdict looked up, decided once per cgroup.
        if self.filter.by_workload() {
            let shown = match (record, self.cgroups.as_mut()) {
                (Some(record), Some(cgroups)) => {
                    self.workloads
                        .matches(&self.filter, record.cgroup, &mut cgroups.containers)
                }
                _ => false,
            };
            if !shown {
                self.counts.filtered_out += 1;
                if let (Some(maps), Some(record), Some(cgroups)) =
                    (self.kernel_filter.as_mut(), record, self.cgroups.as_mut())
                {
                    reject_in_kernel(
                        maps,
                        &self.workloads,
                        &mut cgroups.containers,
                        event,
                        record,
                    );
                }
                return Ok(());
            }
        }
        self.counts.shown += 1;
        match (record, closed) {
            (Some(record), false) => self.diagnoses.on_event(event, record),
            (Some(record), true) => self.diagnoses.on_closed(record, event),
            (None, _) => {}
        }
        let labels = match (record, self.cgroups.as_mut()) {
            (Some(record), Some(cgroups)) if self.label_events && record.cgroup != 0 => {
                Some(cgroups.containers.labels_at(record.cgroup, event.ts_ns))
            }
            _ => None,
        };
        each(&Observed {
            event,
            owner,
            record,
            closed,
            labels,
        })
    }

    /// The container cache (made now in a detached pipeline).
    pub fn containers(&mut self) -> &mut Containers {
        &mut self
            .cgroups
            .get_or_insert_with(|| Cgroups::new(Containers::default()))
            .containers
    }

    /// Whether a socket of a dump passes the filter: its ports, and a
    /// holder of the processes and workloads it asks for.
    pub fn shows_existing(&mut self, socket: &ExistingSocket) -> bool {
        self.filter.matches_existing(socket)
            && self.held_by_workloads(socket, &mut FastMap::default())
    }

    /// Keeps the sockets of a dump held by a process of the filter's
    /// workloads (`dump` applied the rest of the filter).
    pub fn retain_workloads(&mut self, snapshot: &mut Snapshot) {
        if !self.filter.by_workload() {
            return;
        }
        // One verdict per process per dump: holders share processes.
        let mut pids = FastMap::default();
        let mut sockets = std::mem::take(&mut snapshot.sockets);
        sockets.retain(|socket| self.held_by_workloads(socket, &mut pids));
        snapshot.sockets = sockets;
    }

    /// Whether a holder of `socket` runs in a workload the filter asks for
    /// (true when it asks for none); `pids` remembers each process's verdict.
    fn held_by_workloads(
        &mut self,
        socket: &ExistingSocket,
        pids: &mut FastMap<u32, bool>,
    ) -> bool {
        if !self.filter.by_workload() {
            return true;
        }
        let Some(cgroups) = self.cgroups.as_mut() else {
            return false;
        };
        socket.holders.iter().any(|holder| {
            *pids.entry(holder.pid).or_insert_with(|| {
                let key = cgroups.key_of_pid(holder.pid);
                self.workloads
                    .matches(&self.filter, key, &mut cgroups.containers)
            })
        })
    }

    /// The diagnosis report now, from a fresh `sock_diag` dump.
    pub fn report(&mut self, elapsed: Duration, kernel: &Counters) -> Result<Report> {
        let (all, mut owned) = dump(&self.filter, &self.diag)?;
        self.retain_workloads(&mut owned);
        Ok(self.report_with(&all, &owned, elapsed, kernel, monotonic_ns()))
    }

    /// Starts the thread that removes closed sockets' records from the
    /// kernel's socket map once a minute (`probe::closed_records`). The
    /// daemon starts it after dropping its capabilities: a thread keeps
    /// those it was started with, whatever its process drops later.
    pub fn sweep_closed_records(&mut self) -> Result<()> {
        if let (None, Some(map)) = (&self.sweeps, &self.socket_map) {
            self.sweeps = Some(closed_records::sweep_every_minute(map.try_clone()?)?);
        }
        Ok(())
    }

    /// The births of the live connections in `now` the table cannot tell,
    /// learnt now from the kernel's socket map (a recording keeps them).
    pub fn live_births(&mut self, now: &Snapshot) -> &LiveBirths {
        if let Some(map) = &mut self.socket_map {
            // Counted in `births.walks_failed`, shown with the report.
            let _ = self.births.update(
                now,
                &self.table,
                map,
                &self.call_sites,
                self.layouts.as_ref().and_then(|l| l.sock_common.as_ref()),
            );
        }
        if let Some(sweeps) = &self.sweeps {
            // Shown with the report, as a failed walk and as replaced
            // records (see `SweepCounts`).
            self.births.walks_failed += sweeps.failed.swap(0, Ordering::Relaxed);
            self.table.replaced += sweeps.lost.swap(0, Ordering::Relaxed);
        }
        &self.births
    }

    /// The sockets `dump` (then `retain_workloads`) says the filter's
    /// processes and workloads hold.
    #[must_use]
    pub fn owned<'a>(&self, all: &'a Snapshot, owned: &'a Snapshot) -> &'a Snapshot {
        if self.filter.by_process() || self.filter.by_workload() {
            owned
        } else {
            all
        }
    }

    /// Walks of the kernel's socket map that failed so far.
    #[must_use]
    pub fn socket_map_walks_failed(&self) -> u64 {
        self.births.walks_failed
    }

    /// The diagnosis report against the dumps of `dump` (`owned` after
    /// `retain_workloads`) taken at `now_ns` (`CLOCK_MONOTONIC`), its
    /// processes named by the workloads they ran in.
    #[must_use]
    pub fn report_with(
        &mut self,
        now: &Snapshot,
        owned: &Snapshot,
        elapsed: Duration,
        kernel: &Counters,
        now_ns: u64,
    ) -> Report {
        let owned = self.owned(now, owned);
        // Every live socket's workload decided, for the findings about
        // live sockets (most are already, from their events).
        if let (true, Some(cgroups)) = (self.filter.by_workload(), self.cgroups.as_mut()) {
            for record in self.table.live() {
                self.workloads
                    .matches(&self.filter, record.cgroup, &mut cgroups.containers);
            }
        }
        self.live_births(owned);
        let mut report = build_report(
            &self.diagnoses,
            &ReportInput {
                table: &self.table,
                sockets_now: now,
                owned,
                filter: &self.filter,
                workloads: &self.workloads,
                now_ns,
                elapsed,
                call_sites: &self.call_sites,
                // A skipped run or a missed transition is an event never
                // seen, as a lost one is.
                events_lost: kernel.events_lost
                    + kernel.runs_skipped
                    + kernel.transitions_missed
                    + self.counts.decode_errors,
                sockets_untracked: kernel.sock_map_full,
                idle_threshold: self.idle_threshold,
                start: &self.start,
                first_seen: &self.first_seen,
                births: &self.births,
            },
        );
        // The next report knows these connections were alive now.
        self.first_seen.update(now, now_ns);
        if let Some(cgroups) = self.cgroups.as_mut() {
            report.name_processes(|process| {
                // A process only the socket dump knows (a leak's holder):
                // where it runs now.
                if process.cgroup == 0 {
                    process.cgroup = cgroups.key_of_pid(process.pid);
                }
                process.name(cgroups.containers.labels(process.cgroup));
            });
        }
        report
    }
}

/// A `sock_diag` dump now: every socket on the filter's ports, and the ones
/// the filter's processes hold (empty when there is no process or workload
/// filter: then they are the same, see `Pipeline::owned`; the workloads are
/// for `Pipeline::retain_workloads` to check). Needs no pipeline state, so
/// the daemon runs it off its event loop.
pub fn dump(filter: &Filter, diag: &Mutex<DiagSockets>) -> Result<(Snapshot, Snapshot)> {
    // A panic elsewhere cannot leave the sockets half-used: each dump
    // reads its replies to the end or drops the socket.
    let mut diag = diag
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let all = Snapshot::take(&mut diag).context("listing sockets for the report (sock_diag)")?;
    Ok(split_dump(filter, all))
}

/// A dump's sockets on the filter's ports, and the ones the filter's
/// processes hold (see `dump`).
#[must_use]
pub fn split_dump(filter: &Filter, mut all: Snapshot) -> (Snapshot, Snapshot) {
    all.retain(|s| filter.matches_ports(s.local.port(), s.remote.port()));
    let owned = if filter.by_process() || filter.by_workload() {
        all.filtered(|s| filter.matches_existing(s))
    } else {
        Snapshot::default()
    };
    (all, owned)
}

/// Passive sockets inherit their listener's owner in the kernel; listeners
/// opened before tcptrace started are taught to it from the snapshot.
fn seed_listeners(probe: &mut Probe, snapshot: &Snapshot) {
    let cgroup2 = std::fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|mounts| cgroup2_mount(&mounts));
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
        let key = ListenerKey::bound_to(socket.netns, socket.local);
        // The cgroup the server runs in now: its connections are labelled
        // with its container even if it exits before they are counted.
        let listener = Listener {
            owner,
            cgroup_id: cgroup2
                .as_deref()
                .and_then(|root| cgroup_id_of_pid(root, holder.pid))
                .unwrap_or(0),
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
