use std::path::Path;

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, RawTracePoint, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use tcptrace_common::{
    life_ring::life_slots_per_cpu, AcceptLayout, Counter, KernelFilter, KernelLayout, Listener,
    ListenerKey, Settings, TASK_COMM_LEN,
};

use super::{
    btf,
    hooks::{self, Attach, Hook},
    life_rings::LifeRings,
    object::EBPF_OBJECT,
    preflight, program_stats,
    socket_map::SocketMap,
    tracefs,
};
use crate::{event::layout::RecordLayouts, filter::KernelCriteria};

/// How to load the programs.
#[derive(Clone, Copy, Debug)]
pub struct ProbeOptions {
    /// Event ring buffer size in bytes (a power of two, at least a page).
    pub ring_bytes: u32,
    /// Stack ring buffer size in bytes (likewise): captures of up to 4 KiB
    /// each, apart from the events, so a burst of them can cost call sites
    /// but never events.
    pub stack_ring_bytes: u32,
    /// Capture user stacks at connect, listen and close.
    pub capture_stacks: bool,
    /// At most one stack per process and call kind per this many ms after
    /// bursts of `stack_burst` (0: every time). See
    /// `tcptrace_common::stack_budget`.
    pub stack_interval_ms: u32,
    pub stack_burst: u32,
    /// Summary mode (the daemon): one record per socket at CLOSE and at
    /// `CLOSE_WAIT` instead of one per event. Needs kernel BTF; without it
    /// tcptrace falls back to sending every event.
    pub summary: bool,
    /// Attach `syscalls:sys_exit_accept4`/`sys_exit_accept`, so accepted
    /// sockets become the accepting process's with the accept call site.
    /// Enabling any syscall tracepoint sends every system call on the host
    /// through the kernel's slow path: the daemon leaves it off, and a
    /// passive socket becomes its closer's when another process than its
    /// listener's owner closes it (a pre-fork server's worker).
    pub accept_hook: bool,
    /// Capacity of the kernel's socket map. When it is full, new sockets
    /// are counted (`sock_map_full`) and not tracked: the sockets already
    /// in it are the evidence (a `CLOSE_WAIT` leak is an old socket), so
    /// nothing is evicted to make room.
    pub socket_map_entries: u32,
}

/// The stack ring's size when not asked: about two thousand captures,
/// the stacks of a burst of 500 connections between two reads.
pub const DEFAULT_STACK_RING_BYTES: u32 = 8 * 1024 * 1024;

/// Set to 1: tell softirq from system calls with the softirq programs'
/// flag even where the programs could read `preempt_count`.
pub const SOFTIRQ_PROGRAMS_ENV: &str = "TCPTRACE_SOFTIRQ_PROGRAMS";

/// Set to 1: attach the probe-read fallback of a typed tracepoint's
/// program even where the kernel takes the typed one (`Hook::fallback`).
pub const UNTYPED_TRACEPOINTS_ENV: &str = "TCPTRACE_UNTYPED_TRACEPOINTS";

/// Set to 1: time the state program's runs and their parts into the
/// `PHASE_NS` map (profiling: `cargo xtask bench` reads it in a run of its
/// own; see `tcptrace_common::phase_timing`).
pub const PHASE_TIMING_ENV: &str = "TCPTRACE_KERNEL_PHASE_TIMING";

/// Sockets the kernel tracks at once by default.
pub const DEFAULT_SOCKET_MAP_ENTRIES: u32 = 262_144;
/// The stack budget of `trace` and `top` (`tcptrace_common::stack_budget`):
/// every call site of a process is its own until it makes more than 64
/// calls of a kind back to back, then one capture per millisecond. A
/// churning process otherwise costs a 4 KiB copy and an unwind per call:
/// at 26k connections a second that was most of `trace`'s cost, and the
/// reason it lost events.
pub const INTERACTIVE_STACK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1);
pub const INTERACTIVE_STACK_BURST: u32 = 64;

/// A stack interval as `--stack-interval` takes it (the daemon's flag and
/// configuration key, and `trace`'s): a duration in whole milliseconds up
/// to an hour (the kernel counts milliseconds, and `stack_budget` bounds
/// its arithmetic by the hour), `0` for every call.
pub fn parse_stack_interval(text: &str) -> Result<std::time::Duration, String> {
    let interval = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 1ms or 1s, or 0: {e}"))?;
    if interval > std::time::Duration::from_secs(3600) {
        return Err(format!("`{text}`: at most 1h"));
    }
    if interval.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("`{text}`: whole milliseconds only"));
    }
    Ok(interval)
}

/// Bounds of `--socket-map-entries`.
pub const SOCKET_MAP_ENTRIES_RANGE: std::ops::RangeInclusive<u32> = 16..=16_777_216;

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            ring_bytes: 4 * 1024 * 1024,
            stack_ring_bytes: DEFAULT_STACK_RING_BYTES,
            capture_stacks: true,
            stack_interval_ms: 0,
            stack_burst: 1,
            summary: false,
            accept_hook: true,
            socket_map_entries: DEFAULT_SOCKET_MAP_ENTRIES,
        }
    }
}

/// The loaded and attached kernel programs.
pub struct Probe {
    ebpf: Ebpf,
    /// Optional hooks not attached, with what that costs.
    missing: Vec<String>,
    pub layouts: RecordLayouts,
    /// `SOCKS`' capacity.
    socket_map_entries: u32,
    /// The rings of whole lives, where summary mode uses them.
    lives: Option<LifeRingSize>,
}

/// The per-CPU rings of whole lives of a probe (`life_rings`).
#[derive(Clone, Copy, Debug)]
struct LifeRingSize {
    cpus: u32,
    slots: u32,
}

/// Set to 1, summary mode sends whole lives through the event ring buffer
/// like every other record (the path kernels without the rings take).
pub const NO_LIFE_RINGS_ENV: &str = "TCPTRACE_NO_LIFE_RINGS";

/// Why summary mode sends whole lives through the event ring buffer
/// rather than the per-CPU rings, if it does: only x86-64 has them (their
/// writer relies on its store order, see `tcptrace_common::life_ring`),
/// and `NO_LIFE_RINGS_ENV` turns them off.
#[must_use]
pub fn life_rings_off() -> Option<&'static str> {
    if !cfg!(target_arch = "x86_64") {
        Some("the per-CPU rings of whole lives rely on x86-64's store order")
    } else if std::env::var_os(NO_LIFE_RINGS_ENV).is_some_and(|v| v == "1") {
        Some("TCPTRACE_NO_LIFE_RINGS=1")
    } else {
        None
    }
}

impl LifeRingSize {
    /// Rings within the event ring buffer's budget of bytes, unless they
    /// are off (`life_rings_off`).
    fn for_events(ring_bytes: u32) -> Option<Self> {
        if life_rings_off().is_some() {
            return None;
        }
        let cpus = u32::try_from(aya::util::nr_cpus().ok()?).ok()?;
        let slots = life_slots_per_cpu(cpus, u64::from(ring_bytes));
        Some(Self { cpus, slots })
    }
}

impl Probe {
    pub fn load(options: ProbeOptions) -> Result<Self> {
        preflight::ensure_can_trace()?;
        let root = tracefs::tracefs_root()?;
        let mut layouts = read_layouts(&root)?;
        let globals = layouts.kernel_globals();
        let (mut kernel, regs_sp) = match btf::kernel_offsets() {
            Ok(offsets) => {
                // Summary and end-of-file records copy the socket's start.
                layouts.sock_common = Some(offsets.sock_common);
                (offsets.layout, offsets.regs_sp)
            }
            Err(err) => {
                eprintln!(
                    "tcptrace: warning: {err:#}; network namespaces and socket errors will show \
                     as 0, call sites may miss the direct caller of libc, and every event is \
                     sent (no summary mode)"
                );
                (tcptrace_common::KernelLayout::default(), 0)
            }
        };
        if std::env::var_os(SOFTIRQ_PROGRAMS_ENV).is_some_and(|v| v == "1") {
            // Softirq or system call from the softirq programs' flag, not
            // from `preempt_count` (tests of that path; a way out should
            // the runqueue path misbehave on some kernel).
            kernel.task_se_cfs_rq = 0;
            kernel.cfs_rq_rq = 0;
        }
        let summary = options.summary && layouts.sock_common.is_some();
        let lives = summary
            .then(|| LifeRingSize::for_events(options.ring_bytes))
            .flatten();
        let accept = accept_layout(&root, &kernel).filter(|_| options.accept_hook);
        let settings = Settings {
            capture_stacks: u32::from(options.capture_stacks),
            // Wake the reader early enough that a burst cannot fill the
            // rest while it is being scheduled.
            wakeup_bytes: options.ring_bytes / 4,
            stack_wakeup_bytes: options.stack_ring_bytes / 4,
            regs_sp,
            stack_interval_ms: options.stack_interval_ms,
            stack_burst: options.stack_burst.max(1),
            summary: u32::from(summary),
            tracer_tgid: std::process::id(),
            phase_timing: u32::from(std::env::var_os(PHASE_TIMING_ENV).is_some_and(|v| v == "1")),
            life_slots: lives.map_or(0, |size| size.slots),
        };
        let ring_bytes = options.ring_bytes.next_power_of_two().max(4096);
        let stack_ring_bytes = options.stack_ring_bytes.next_power_of_two().max(4096);
        // Parsed once for aya's relocations and the typed tracepoints.
        let kernel_btf = Btf::from_sys_fs().ok();
        let mut ebpf = EbpfLoader::new()
            .btf(kernel_btf.as_ref())
            .override_global("STATE_LAYOUT", &globals.state, true)
            .override_global("RETRANSMIT_LAYOUT", &globals.retransmit, true)
            .override_global("SYN_ACK_LAYOUT", &globals.syn_ack, true)
            .override_global("SEND_RESET_LAYOUT", &globals.send_reset, true)
            .override_global("RECEIVE_RESET_LAYOUT", &globals.receive_reset, true)
            .override_global("KERNEL_LAYOUT", &kernel, true)
            .override_global("ACCEPT_LAYOUT", &accept.unwrap_or_default(), true)
            .override_global("SETTINGS", &settings, true)
            .map_max_entries("EVENTS", ring_bytes)
            .map_max_entries("USER_STACKS", stack_ring_bytes)
            .map_max_entries("SOCKS", options.socket_map_entries)
            .map_max_entries("LIVES", lives.map_or(1, |size| size.cpus * size.slots))
            .map_max_entries("LIFE_POSITIONS", lives.map_or(1, |size| size.cpus))
            .load(EBPF_OBJECT)
            .map_err(|err| refused("loading the eBPF object", &err))?;
        let btf = layouts.sock_common.is_some();
        let mut missing = Vec::new();
        let selection = hooks::Selection {
            summary,
            accept: accept.is_some(),
            btf,
            preempt_count: kernel.task_se_cfs_rq != 0,
            syn_ack: layouts.syn_ack.is_some(),
        };
        for hook in hooks::selected(selection) {
            match attach_hook(&mut ebpf, hook, kernel_btf.as_ref(), &mut missing) {
                Ok(()) => {}
                Err(err) if hook.required => return Err(err),
                Err(err) => missing.push(format!("{} lost ({err:#})", hook.gives)),
            }
        }
        if options.accept_hook && accept.is_none() {
            missing.push(
                "accepted sockets stay their listener's owner's until closed (no \
                 syscalls:sys_exit_accept4 tracepoint, or no fd-to-socket offsets in BTF)"
                    .to_owned(),
            );
        }
        if !btf {
            missing.push(
                "CLOSE_WAIT leaks do not name the code that read end-of-file (no kernel BTF)"
                    .to_owned(),
            );
        }
        // Parsing kernel BTF (twice: here and in aya) leaves tens of MB of
        // freed heap behind; give it back so the daemon's RSS is its own.
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe {
            libc::malloc_trim(0);
        }
        Ok(Self {
            ebpf,
            missing,
            layouts,
            socket_map_entries: options.socket_map_entries,
            lives,
        })
    }

    /// Optional hooks this kernel did not give, with what is lost.
    #[must_use]
    pub fn missing_hooks(&self) -> &[String] {
        &self.missing
    }

    /// The ring buffer of events; can be taken once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .context("ring buffer EVENTS already taken or missing from the eBPF object")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// The per-CPU rings of whole lives, where this probe has them; can be
    /// taken once.
    pub fn take_life_rings(&mut self) -> Result<Option<LifeRings>> {
        let Some(size) = self.lives else {
            return Ok(None);
        };
        let mut take = |name: &str| {
            self.ebpf.take_map(name).with_context(|| {
                format!("map {name} already taken or missing from the eBPF object")
            })
        };
        let (lives, positions) = (take("LIVES")?, take("LIFE_POSITIONS")?);
        LifeRings::map(lives, positions, size.cpus, size.slots).map(Some)
    }

    /// The ring buffer of user stack captures; can be taken once.
    pub fn take_stacks(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("USER_STACKS")
            .context("ring buffer USER_STACKS already taken or missing from the eBPF object")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// The ring on which the kernel announces each process's first stack
    /// (see `symbolize::Meeter`); can be taken once.
    pub fn take_processes(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("PROCESSES")
            .context("ring buffer PROCESSES already taken or missing from the eBPF object")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// One kernel-side counter, summed over CPUs.
    pub fn counter(&self, counter: Counter) -> Result<u64> {
        let map = self
            .ebpf
            .map("COUNTERS")
            .context("map COUNTERS missing from the eBPF object")?;
        let array: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        Ok(array.get(&(counter as u32), 0)?.iter().sum())
    }

    /// Kernel-side counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let sum = |counter| self.counter(counter);
        Ok(Counters {
            events_sent: sum(Counter::EventsSent)?,
            events_lost: sum(Counter::EventsLost)?,
            sock_map_full: sum(Counter::SockMapFull)?,
            listener_map_full: sum(Counter::ListenerMapFull)?,
            stack_errors: sum(Counter::StackErrors)?,
            stacks_taken: sum(Counter::StacksTaken)?,
            stacks_sampled: sum(Counter::StacksSampled)?,
            processes_not_announced: sum(Counter::ProcessesNotAnnounced)?,
            read_errors: sum(Counter::ReadErrors)?,
            events_folded: sum(Counter::EventsFolded)?,
            resets_sent_without_socket: sum(Counter::ResetsSentWithoutSocket)?,
            resets_received_without_socket: sum(Counter::ResetsReceivedWithoutSocket)?,
            filtered_out: sum(Counter::FilteredOut)?,
            retransmits_failed: sum(Counter::RetransmitsFailed)?,
            transitions_missed: sum(Counter::TransitionsMissed)?,
            close_wait_map_full: sum(Counter::CloseWaitMapFull)?,
            life_ring_full: sum(Counter::LifeRingFull)?,
            runs_skipped: self
                .ebpf
                .programs()
                .filter_map(|(_, program)| program_stats::runs_of(program))
                .map(|runs| runs.recursion_misses)
                .sum(),
        })
    }

    /// Each attached program's runs, by name (what the tracer costs the
    /// kernel; see `program_stats`).
    #[must_use]
    pub fn program_runs(&self) -> Vec<(String, program_stats::ProgramRuns)> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| Some((name.to_owned(), program_stats::runs_of(program)?)))
            .collect()
    }

    /// The maps through which the session's filter reaches the kernel
    /// programs; can be taken once.
    pub fn take_filter_maps(&mut self) -> Result<FilterMaps> {
        let mut take = |name: &str| {
            self.ebpf.take_map(name).with_context(|| {
                format!("map {name} already taken or missing from the eBPF object")
            })
        };
        Ok(FilterMaps {
            which: Array::try_from(take("FILTER")?)?,
            pids: HashMap::try_from(take("FILTER_PIDS")?)?,
            comms: HashMap::try_from(take("FILTER_COMMS")?)?,
            ports: HashMap::try_from(take("FILTER_PORTS")?)?,
            current: KernelCriteria::default(),
            rejected: HashMap::try_from(take("REJECTED_CGROUPS")?)?,
            known: crate::FastSet::default(),
        })
    }

    /// The kernel's record of each socket it follows; can be taken once.
    pub fn take_socket_map(&mut self) -> Result<SocketMap> {
        let map = self
            .ebpf
            .take_map("SOCKS")
            .context("map SOCKS already taken or missing from the eBPF object")?;
        let close_waiting = self
            .ebpf
            .take_map("CLOSE_WAITING")
            .context("map CLOSE_WAITING already taken or missing from the eBPF object")?;
        Ok(SocketMap::new(
            HashMap::try_from(map)?,
            HashMap::try_from(close_waiting)?,
            self.socket_map_entries,
        ))
    }

    /// Tells the kernel who owns a listener that existed before the probe,
    /// so its passive children get an owner too.
    pub fn seed_listener(&mut self, key: ListenerKey, listener: Listener) -> Result<()> {
        let map = self
            .ebpf
            .map_mut("LISTENERS")
            .context("map LISTENERS missing from the eBPF object")?;
        let mut listeners: HashMap<_, ListenerKey, Listener> = HashMap::try_from(map)?;
        // BPF_NOEXIST: a listen() seen live is fresher than a snapshot.
        if let Err(err) = listeners.insert(key, listener, BPF_NOEXIST) {
            if !matches!(&err, aya::maps::MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EEXIST))
            {
                return Err(err.into());
            }
        }
        Ok(())
    }
}

/// The session's filter as the kernel programs see it.
pub struct FilterMaps {
    which: Array<MapData, KernelFilter>,
    pids: HashMap<MapData, u32, u8>,
    comms: HashMap<MapData, [u8; TASK_COMM_LEN], u8>,
    ports: HashMap<MapData, u16, u8>,
    /// The criteria written last, to take out when they change.
    current: KernelCriteria,
    rejected: HashMap<MapData, u64, u8>,
    /// What `rejected` holds, so that a cgroup costs one system call.
    known: crate::FastSet<u64>,
}

/// `REJECTED_CGROUPS`' capacity (tcptrace-ebpf's maps.rs).
const REJECTED_CGROUPS_MAX: usize = 16_384;

impl FilterMaps {
    /// Applies `criteria` from now on, and forgets every cgroup verdict
    /// (they were the previous filter's). While the lists change the kernel
    /// applies no criterion: it sends more, never less, than either filter
    /// shows.
    pub fn set(&mut self, criteria: &KernelCriteria) -> Result<()> {
        self.which.set(0, KernelFilter::NONE, 0)?;
        let old = std::mem::take(&mut self.current);
        for pid in &old.pids {
            let _ = self.pids.remove(pid);
        }
        for comm in &old.comms {
            let _ = self.comms.remove(comm);
        }
        for port in &old.ports {
            let _ = self.ports.remove(port);
        }
        for key in self.known.drain() {
            let _ = self.rejected.remove(&key);
        }
        for &pid in &criteria.pids {
            self.pids.insert(pid, 1, 0)?;
        }
        for comm in &criteria.comms {
            self.comms.insert(comm, 1, 0)?;
        }
        for &port in &criteria.ports {
            self.ports.insert(port, 1, 0)?;
        }
        self.current = criteria.clone();
        self.which.set(0, criteria.which, 0)?;
        Ok(())
    }

    /// Tells the kernel that the sockets of cgroup `id` are not shown. A
    /// full map only means the kernel keeps sending that cgroup's records
    /// for userspace to drop.
    pub fn reject_cgroup(&mut self, id: u64) {
        if self.known.len() < REJECTED_CGROUPS_MAX && self.known.insert(id) {
            let _ = self.rejected.insert(id, 1, 0);
        }
    }
}

/// Kernel-side counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Counters {
    pub events_sent: u64,
    pub events_lost: u64,
    pub sock_map_full: u64,
    pub listener_map_full: u64,
    pub stack_errors: u64,
    pub stacks_taken: u64,
    /// Stacks reused from a process's last capture (sampling).
    pub stacks_sampled: u64,
    /// New processes not announced to the meeting thread (its ring full).
    pub processes_not_announced: u64,
    pub read_errors: u64,
    /// Summary mode: events kept in the kernel's socket history, not sent.
    pub events_folded: u64,
    /// Summary mode: resets sent, and received, on sockets tcptrace did
    /// not know (or with no socket at all).
    pub resets_sent_without_socket: u64,
    pub resets_received_without_socket: u64,
    /// Records the kernel did not send because the filter rejects them.
    pub filtered_out: u64,
    /// Retransmit attempts that did not go out (not counted as retransmits).
    pub retransmits_failed: u64,
    /// Transitions of known sockets the kernel ran no program for (told by
    /// the next one, or by a retransmit: `Counter::TransitionsMissed`).
    /// Recordings made before it have none.
    #[serde(default)]
    pub transitions_missed: u64,
    /// Summary mode: sockets entering `CLOSE_WAIT` sent as a record because
    /// the `CLOSE_WAITING` map was full (a cost, not a loss).
    #[serde(default)]
    pub close_wait_map_full: u64,
    /// Whole lives sent through the event ring buffer because their CPU's
    /// ring of whole lives was full: nothing lost, more cost.
    pub life_ring_full: u64,
    /// Program runs the kernel skipped because the same program was already
    /// running on that CPU (a softirq nested in a process-context run):
    /// those events were never seen.
    pub runs_skipped: u64,
}

/// Loads `program` and attaches it everywhere `at` says (all of one kind).
fn attach(ebpf: &mut Ebpf, program: &str, at: &[Attach], btf: Option<&Btf>) -> Result<()> {
    let program_mut = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} missing from the eBPF object"))?;
    let verify = |err: &dyn std::error::Error| refused(&format!("verifying {program}"), err);
    let attached = |err: &dyn std::error::Error| refused(&format!("attaching {program}"), err);
    match at.first() {
        Some(Attach::Tracepoint(..)) => {
            let tracepoint: &mut TracePoint = program_mut.try_into()?;
            tracepoint.load().map_err(|err| verify(&err))?;
            for at in at {
                let (category, name) = at.event();
                tracepoint
                    .attach(category, name)
                    .map_err(|err| attached(&err))?;
            }
        }
        Some(Attach::Raw(..)) => {
            let tracepoint: &mut RawTracePoint = program_mut.try_into()?;
            tracepoint.load().map_err(|err| verify(&err))?;
            for at in at {
                tracepoint
                    .attach(at.event().1)
                    .map_err(|err| attached(&err))?;
            }
        }
        Some(Attach::Typed(_, name)) => {
            let btf = btf.context("no kernel BTF for a typed tracepoint")?;
            let tracepoint: &mut BtfTracePoint = program_mut.try_into()?;
            tracepoint.load(name, btf).map_err(|err| verify(&err))?;
            tracepoint.attach().map_err(|err| attached(&err))?;
        }
        None => {}
    }
    Ok(())
}

/// Attaches `hook`, or its fallback where the kernel refuses it (said in
/// `notes`, with why: the same records, read more slowly).
fn attach_hook(
    ebpf: &mut Ebpf,
    hook: &Hook,
    btf: Option<&Btf>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let typed = if hook.fallback.is_some()
        && std::env::var_os(UNTYPED_TRACEPOINTS_ENV).is_some_and(|v| v == "1")
    {
        Err(anyhow::anyhow!("{UNTYPED_TRACEPOINTS_ENV}=1"))
    } else {
        attach(ebpf, hook.program, hook.attach, btf)
    };
    match (typed, hook.fallback) {
        (Ok(()), _) => Ok(()),
        (Err(err), Some(fallback)) => {
            attach(ebpf, fallback.program, fallback.attach, btf)?;
            notes.push(format!(
                "{}: read with probe reads, slower, nothing lost ({} refused: {})",
                hook.gives,
                hook.program,
                verdict(&format!("{err:#}"))
            ));
            Ok(())
        }
        (Err(err), None) => Err(err),
    }
}

/// Where `ret` sits in the accept exit tracepoints, when both exist with
/// the same layout and the kernel's offsets lead from an fd to its socket.
fn accept_layout(root: &Path, kernel: &KernelLayout) -> Option<AcceptLayout> {
    if kernel.task_files == 0
        || kernel.files_fdt == 0
        || kernel.fdtable_fd == 0
        || kernel.file_private_data == 0
        || kernel.socket_sk == 0
    {
        return None;
    }
    let ret = |name| -> Option<u32> {
        let format = tracefs::read_format(root, "syscalls", name).ok()?;
        u32::try_from(format.field("ret", 8).ok()?.offset).ok()
    };
    let offset = ret("sys_exit_accept4")?;
    (ret("sys_exit_accept") == Some(offset)).then_some(AcceptLayout {
        ret: offset,
        _pad: 0,
    })
}

/// `BPF_NOEXIST` from linux/bpf.h: insert only when the key is absent.
const BPF_NOEXIST: u64 = 1;

/// The tracepoints whose records the decoder reads, in the order
/// `RecordLayouts::from_formats` takes them.
const DECODED_RECORDS: [(&str, &str); 4] = [
    ("sock", "inet_sock_set_state"),
    ("tcp", "tcp_retransmit_skb"),
    ("tcp", "tcp_send_reset"),
    ("tcp", "tcp_receive_reset"),
];

fn read_layouts(root: &Path) -> Result<RecordLayouts> {
    let [state, retransmit, send_reset, receive_reset] =
        DECODED_RECORDS.map(|(category, name)| tracefs::read_format(root, category, name));
    let layouts =
        RecordLayouts::from_formats(&state?, &retransmit?, &send_reset?, &receive_reset?)?;
    // Optional: without it (or with a layout the decoder does not know),
    // its hook is not attached and the session says so.
    Ok(
        match tracefs::read_format(root, "tcp", "tcp_retransmit_synack") {
            Ok(format) => layouts.with_syn_ack(&format).unwrap_or(layouts),
            Err(_) => layouts,
        },
    )
}

/// A refusal in one line: the message, and of a verifier log only its
/// verdict (the line before its statistics), not the thousands of lines
/// before it. For notes shown at every start and in `/healthz`.
fn verdict(message: &str) -> String {
    let Some((head, log)) = message.split_once("Verifier output:") else {
        return message.lines().next().unwrap_or_default().to_owned();
    };
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let end = lines
        .iter()
        .position(|line| line.starts_with("verification time"))
        .unwrap_or(lines.len());
    let last = end
        .checked_sub(1)
        .and_then(|i| lines.get(i))
        .copied()
        .unwrap_or_default();
    format!("{} verifier: {last}", head.trim_end())
}

/// Turns a loader error into advice: EPERM almost always means missing
/// privileges or a lockdown, not a bug in tcptrace.
fn refused(what: &str, err: &dyn std::error::Error) -> anyhow::Error {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        chain.push_str(": ");
        chain.push_str(&inner.to_string());
        source = inner.source();
    }
    let hint = if chain.contains("Operation not permitted") || chain.contains("EPERM") {
        "\nhint: the kernel refused BPF: run as root or with CAP_BPF+CAP_PERFMON, \
         and check `kernel.unprivileged_bpf_disabled` and kernel lockdown"
    } else {
        ""
    };
    anyhow!("{what} failed: {chain}{hint}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{parse_stack_interval, verdict};

    #[test]
    fn a_stack_interval_is_whole_milliseconds_up_to_an_hour() {
        assert_eq!(parse_stack_interval("0"), Ok(Duration::ZERO));
        assert_eq!(parse_stack_interval("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_stack_interval("1h"), Ok(Duration::from_secs(3600)));
        // The kernel counts milliseconds: 500us would have been 0, every call.
        assert!(parse_stack_interval("500us").is_err());
        assert!(parse_stack_interval("61m").is_err());
        assert!(parse_stack_interval("soon").is_err());
    }

    #[test]
    fn a_refusal_is_told_by_its_verifier_verdict() {
        let refused = "verifying p failed: the BPF_PROG_LOAD syscall returned Permission denied \
                       (os error 13). Verifier output: 0: R1=ctx() R10=fp0\n1: (69) r3 = *(u16 *)(r4 +0)\n\
                       access beyond struct sock at off 814 size 2\nverification time 2155 usec\n\
                       stack depth 312\n: Permission denied (os error 13)";
        assert_eq!(
            verdict(refused),
            "verifying p failed: the BPF_PROG_LOAD syscall returned Permission denied \
             (os error 13). verifier: access beyond struct sock at off 814 size 2"
        );
        assert_eq!(
            verdict("attaching p failed: EINVAL\nmore"),
            "attaching p failed: EINVAL"
        );
    }
}
