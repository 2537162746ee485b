//! The socket table: one lifecycle record per live socket, keyed by its
//! kernel address, updated by every event and handed to the diagnoses when
//! the socket dies.
//!
//! A freed `struct sock` address comes back for a new socket, so a birth
//! (connect, listen, passive open) at a known address ends the old record
//! first; a record is also indexed by its endpoints so the end-of-session
//! `sock_diag` dump can be joined with what was traced.
//!
//! Each record also carries where its owner ran: a cgroup key (`Cgroups`),
//! found once at the socket's birth or first sight, so that series,
//! findings and filters name the container even after the process is gone.

use std::{
    collections::hash_map::Entry,
    fs,
    net::SocketAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tcptrace_common::{
    Birth, Moment, RetransmitPhase, Side, Task, TcpState, PEER_SENT_DATA, RESET_BY_CLOSE,
};

use crate::{
    container::{lookup, proc_cgroup, Containers},
    event::{TcpEvent, TcpEventKind},
    owner::{Owner, OwnerSource},
    FastMap,
};

/// A process as the reports name it. `comm` is kept inline (no allocation
/// per socket) and turned into text only when reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Process {
    pub pid: u32,
    pub comm: [u8; 16],
    /// Where it ran: the cgroup key of the socket it owns (or closed, when
    /// it is that socket's owner); 0 when not known. Two processes of one
    /// program in two containers are two processes to the reports.
    pub cgroup: u64,
}

impl Process {
    #[must_use]
    pub fn of_task(task: &Task) -> Self {
        Self {
            pid: task.tgid,
            comm: task.comm,
            cgroup: 0,
        }
    }

    #[must_use]
    pub fn of_owner(owner: &Owner) -> Self {
        Self::named(owner.pid, &owner.comm)
    }

    /// A process known by pid and comm text (cut to the kernel's 15 bytes).
    #[must_use]
    pub fn named(pid: u32, comm: &str) -> Self {
        let mut bytes = [0u8; 16];
        let len = comm.len().min(15);
        bytes[..len].copy_from_slice(&comm.as_bytes()[..len]);
        Self {
            pid,
            comm: bytes,
            cgroup: 0,
        }
    }

    #[must_use]
    pub fn comm(&self) -> std::borrow::Cow<'_, str> {
        crate::event::comm_str(&self.comm)
    }
}

/// A user stack the kernel captured for a process (`Task::stack`).
/// Ordered by pid, then id: where counts tie, the lowest names a call
/// site, so the same events name the same one.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct StackRef {
    pub pid: u32,
    /// The `UserStack` record's id.
    pub stack: u64,
}

impl StackRef {
    #[must_use]
    pub fn of_task(task: &Task) -> Option<Self> {
        (task.is_known() && task.stack != 0).then_some(Self {
            pid: task.tgid,
            stack: task.stack,
        })
    }
}

/// How the socket came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `connect()`
    Active,
    /// accepted from a listener
    Passive,
    Listener,
    /// born before tracing started
    Unknown,
}

impl From<Birth> for Role {
    fn from(birth: Birth) -> Self {
        match birth {
            Birth::Active => Self::Active,
            Birth::Passive => Self::Passive,
            Birth::Listener => Self::Listener,
        }
    }
}

/// Retransmits split by the phase of the connection they happened in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retransmits {
    /// SYN (`SYN_SENT`) and SYN-ACK (`SYN_RECV`) retransmits.
    pub syn: u32,
    /// ESTABLISHED and `CLOSE_WAIT`.
    pub data: u32,
    /// `FIN_WAIT1`, CLOSING, `LAST_ACK`: our FIN (or data before it) unacknowledged.
    pub fin: u32,
    pub first_fin_ns: u64,
    pub last_fin_ns: u64,
}

/// Everything known about one socket.
#[derive(Clone, Debug)]
pub struct SocketRecord {
    pub skaddr: u64,
    pub role: Role,
    pub owner: Option<Process>,
    pub owner_source: Option<OwnerSource>,
    /// Stack of `connect()/listen()` (a passive socket: its listener's).
    pub owner_stack: Option<StackRef>,
    pub closer: Option<Process>,
    pub closer_stack: Option<StackRef>,
    /// Who read end-of-file in `CLOSE_WAIT`, and where: the code that saw
    /// the peer's FIN and had to close.
    pub eof_reader: Option<Process>,
    pub eof_stack: Option<StackRef>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: TcpState,
    pub netns: u32,
    /// The owner's cgroup-v2 id at the socket's birth, as the kernel
    /// recorded it (0 when it did not see the birth).
    pub cgroup_id: u64,
    /// The key of the owner's container (`Containers::key_at_birth`):
    /// `cgroup_id`, or a key of its own where the v2 cgroup does not tell
    /// containers apart, or the owner's current cgroup for a socket whose
    /// birth the kernel did not see; 0 when unknown. What series, findings
    /// and filters name the socket's workload by.
    pub cgroup: u64,
    /// When the socket was born (connect, listen, passive open); `None` when
    /// it existed before tracing started.
    pub born_ns: Option<u64>,
    /// The time of the first event of this record.
    pub seen_since_ns: u64,
    pub established_ns: Option<u64>,
    /// When it entered `state`; `None` when not seen.
    pub state_since_ns: Option<u64>,
    /// When our FIN went out (`FIN_WAIT1` or `LAST_ACK` entered).
    pub fin_sent_ns: Option<u64>,
    /// Which side sent the first FIN (or reset).
    pub closed_by: Option<Side>,
    pub retransmits: Retransmits,
    pub resets_received: u32,
    pub resets_sent: u32,
    /// The peer had sent data when its FIN came (see
    /// `tcptrace_common::PEER_SENT_DATA`): it answered before closing.
    pub peer_sent_data: bool,
    /// A transition left a state the record was not in: one in between
    /// was lost, and what the record says of the past may be incomplete.
    pub history_incomplete: bool,
}

/// What `SocketTable::apply` did with an event.
pub enum Applied {
    /// The event updated a live socket.
    Live(u64),
    /// The socket entered CLOSE: its final record is `SocketTable::closed`
    /// (kept there, not handed over: a record is some 300 bytes, and
    /// copying it out was a few percent of the daemon's time).
    Closed,
    /// Nothing to track (a reset without a socket).
    Untracked,
}

#[derive(Default)]
pub struct SocketTable {
    live: FastMap<u64, SocketRecord>,
    /// By (network namespace, local, remote): pods reuse addresses.
    by_endpoints: FastMap<(u32, SocketAddr, SocketAddr), u64>,
    /// Records replaced because their address was reused before we saw
    /// them close (e.g. events were lost).
    pub replaced: u64,
    /// The record of a socket whose whole life one summary record tells
    /// (see `whole_life`): born, updated and closed while the summary
    /// unfolds, never entered in `live` or the endpoint index, since
    /// nothing looks it up in between. The daemon's churn takes this path.
    passing: Option<SocketRecord>,
    /// The address `whole_life` announced, until its birth arrives.
    whole_life_at: Option<u64>,
    /// The last record closed in the live table (see `closed`).
    last_closed: Option<SocketRecord>,
}

impl SocketTable {
    #[must_use]
    pub fn get(&self, skaddr: u64) -> Option<&SocketRecord> {
        match &self.passing {
            Some(passing) if passing.skaddr == skaddr => Some(passing),
            _ => self.live.get(&skaddr),
        }
    }

    /// The final record of the socket the last `Applied::Closed` was about
    /// (until the next event is applied, or a whole life ends).
    #[must_use]
    pub fn closed(&self) -> Option<&SocketRecord> {
        match &self.passing {
            Some(passing) if passing.state == TcpState::Close => Some(passing),
            _ => self.last_closed.as_ref(),
        }
    }

    /// The next events, up to a CLOSE, are the whole life of the socket at
    /// `skaddr` (a summary record from its birth to its end): unless the
    /// table has a record of this socket there, it is kept out of the live
    /// records (see `apply_in`).
    pub fn whole_life(&mut self, skaddr: u64) {
        self.whole_life_at = Some(skaddr);
    }

    /// The summary has unfolded: a record that did not close (which a
    /// whole life always does) becomes live like any other.
    pub fn end_whole_life(&mut self) {
        self.whole_life_at = None;
        if let Some(record) = self.passing.take().filter(|r| r.state != TcpState::Close) {
            self.by_endpoints
                .insert((record.netns, record.local, record.remote), record.skaddr);
            self.live.insert(record.skaddr, record);
        }
    }

    /// The live socket with these endpoints in network namespace `netns`.
    #[must_use]
    pub fn find(&self, netns: u32, local: SocketAddr, remote: SocketAddr) -> Option<&SocketRecord> {
        self.by_endpoints
            .get(&(netns, local, remote))
            .and_then(|s| self.live.get(s))
    }

    pub fn live(&self) -> impl Iterator<Item = &SocketRecord> {
        self.live.values()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.live.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// An event, without container attribution (records keep the kernel's
    /// cgroup id as their key).
    pub fn apply(&mut self, event: &TcpEvent, owner: Option<&Owner>) -> Applied {
        self.apply_in(event, owner, None)
    }

    /// An event; a socket seen for the first time (or whose owner is
    /// learnt only now) gets its cgroup key from `cgroups`. Nothing else
    /// asks it: the per-event path stays free of lookups.
    pub fn apply_in(
        &mut self,
        event: &TcpEvent,
        owner: Option<&Owner>,
        mut cgroups: Option<&mut Cgroups>,
    ) -> Applied {
        // A reset after its socket's end (counted with the CLOSE) or
        // without any socket.
        if event.skaddr == 0 || matches!(event.what, TcpEventKind::ResetSent { by_close: true, .. })
        {
            return Applied::Untracked;
        }
        let birth = match event.what {
            TcpEventKind::StateChange { old, new } => TcpState::birth(old, new).map(Role::from),
            _ => None,
        };
        let key_of =
            |cgroups: &mut Option<&mut Cgroups>| cgroup_key(cgroups.as_deref_mut(), event, owner);
        if event.what == TcpEventKind::SynAckRetransmit {
            // About a handshake the listener answers, not about its own
            // life; a listener from before the session is met here.
            if !self.live.contains_key(&event.skaddr) {
                let listener = SocketRecord::listener_seen(event, owner, key_of(&mut cgroups));
                self.by_endpoints.insert(
                    (listener.netns, listener.local, listener.remote),
                    event.skaddr,
                );
                self.live.insert(event.skaddr, listener);
            }
            return Applied::Live(event.skaddr);
        }
        let born = birth.map(|role| SocketRecord::born(event, role, owner, key_of(&mut cgroups)));
        if let Some(born) = born {
            // A whole life passes by a live record of another socket at
            // its address: records read from the CPU rings of whole lives
            // come after the ring buffer's, so that record may be of a
            // socket born there after this one closed (or before it, its
            // close not read yet); either way it is not this socket's to
            // replace. A record of this very socket (its end-of-file read
            // was sent) takes the rest of its life.
            if self.whole_life_at.take() == Some(event.skaddr)
                && self
                    .live
                    .get(&event.skaddr)
                    .is_none_or(|live| live.is_another_socket_than(event))
            {
                self.passing = Some(born);
                return self.apply_passing(event, owner, cgroups);
            }
            self.end_whole_life();
            return self.apply_live(event, owner, cgroups, Some(born));
        }
        if self.passing.as_ref().is_some_and(|passing| {
            passing.skaddr == event.skaddr && passing.state != TcpState::Close
        }) {
            return self.apply_passing(event, owner, cgroups);
        }
        self.apply_live(event, owner, cgroups, None)
    }

    /// `event` about the whole-life record in `passing`.
    fn apply_passing(
        &mut self,
        event: &TcpEvent,
        owner: Option<&Owner>,
        cgroups: Option<&mut Cgroups>,
    ) -> Applied {
        let Some(record) = self.passing.as_mut() else {
            return Applied::Untracked;
        };
        record.observe_in(event, owner, cgroups);
        if record.state == TcpState::Close {
            // Read in place (`closed`) until the whole life ends.
            return Applied::Closed;
        }
        Applied::Live(event.skaddr)
    }

    /// `event` about a record of the live table (`born`: the record its
    /// birth starts).
    fn apply_live(
        &mut self,
        event: &TcpEvent,
        owner: Option<&Owner>,
        mut cgroups: Option<&mut Cgroups>,
        born: Option<SocketRecord>,
    ) -> Applied {
        let key_of =
            |cgroups: &mut Option<&mut Cgroups>| cgroup_key(cgroups.as_deref_mut(), event, owner);
        // One lookup per event: a birth, or the first sight of a socket born
        // before tracing started, starts a record; so does an event the
        // kernel says is about another socket than the record's (the old
        // one's close and the new one's birth were lost).
        let mut fresh = true;
        let record = match self.live.entry(event.skaddr) {
            Entry::Occupied(mut slot) => {
                if born.is_some() || slot.get().is_another_socket_than(event) {
                    let new = born.unwrap_or_else(|| {
                        SocketRecord::seen_mid_life(event, owner, key_of(&mut cgroups))
                    });
                    let old = slot.insert(new);
                    unindex(&mut self.by_endpoints, &old);
                    self.replaced += 1;
                } else {
                    fresh = false;
                }
                slot.into_mut()
            }
            Entry::Vacant(slot) => slot.insert(born.unwrap_or_else(|| {
                SocketRecord::seen_mid_life(event, owner, key_of(&mut cgroups))
            })),
        };
        let old_endpoints = (record.netns, record.local, record.remote);
        record.observe_in(event, owner, cgroups);
        let new_endpoints = (record.netns, record.local, record.remote);
        let moved = old_endpoints != new_endpoints;
        if moved && self.by_endpoints.get(&old_endpoints) == Some(&event.skaddr) {
            self.by_endpoints.remove(&old_endpoints);
        }
        if record.state == TcpState::Close {
            let record = self
                .live
                .remove(&event.skaddr)
                .expect("the record just updated");
            unindex(&mut self.by_endpoints, &record);
            self.last_closed = Some(record);
            return Applied::Closed;
        }
        // The index changes only when a socket appears or its endpoints do
        // (connect's port 0 becomes the real port): not on every event.
        if fresh || moved {
            self.by_endpoints.insert(new_endpoints, event.skaddr);
        }
        Applied::Live(event.skaddr)
    }
}

/// The cgroup key a record made (or first owned) at `event` takes: from
/// the container cache when there is one, else the kernel's cgroup id.
fn cgroup_key(cgroups: Option<&mut Cgroups>, event: &TcpEvent, owner: Option<&Owner>) -> u64 {
    match cgroups {
        Some(cgroups) => {
            cgroups.key_at_birth(event.sock.cgroup_id, owner.map(|o| o.pid), event.ts_ns)
        }
        None => event.sock.cgroup_id,
    }
}

/// Drops `record`'s entry from the endpoint index, if it is still its.
fn unindex(by_endpoints: &mut FastMap<(u32, SocketAddr, SocketAddr), u64>, record: &SocketRecord) {
    let key = (record.netns, record.local, record.remote);
    if by_endpoints.get(&key) == Some(&record.skaddr) {
        by_endpoints.remove(&key);
    }
}

impl SocketRecord {
    /// `observe`, and an owner learnt only now (a listener seeded from
    /// the start dump) gets its cgroup, if the birth did not give one.
    fn observe_in(
        &mut self,
        event: &TcpEvent,
        owner: Option<&Owner>,
        cgroups: Option<&mut Cgroups>,
    ) {
        let unowned = self.owner.is_none();
        self.observe(event, owner);
        if unowned && self.owner.is_some() && self.cgroup == 0 {
            let cgroup = cgroup_key(cgroups, event, owner);
            self.set_cgroup(cgroup);
        }
    }

    fn born(event: &TcpEvent, role: Role, owner: Option<&Owner>, cgroup: u64) -> Self {
        let mut record = Self::seen_mid_life(event, owner, cgroup);
        record.role = role;
        record.born_ns = Some(event.ts_ns);
        record
    }

    /// A listener first met through a SYN-ACK it sent again (`event`'s
    /// remote end is the client, not the listener's).
    fn listener_seen(event: &TcpEvent, owner: Option<&Owner>, cgroup: u64) -> Self {
        let mut record = Self::seen_mid_life(event, owner, cgroup);
        record.role = Role::Listener;
        let any: std::net::IpAddr = if event.local.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        record.remote = SocketAddr::new(any, 0);
        record
    }

    fn seen_mid_life(event: &TcpEvent, owner: Option<&Owner>, cgroup: u64) -> Self {
        let state = match event.what {
            TcpEventKind::StateChange { old, .. } => old,
            TcpEventKind::Retransmit { state } | TcpEventKind::ResetSent { state, .. } => {
                state.unwrap_or(TcpState::Established)
            }
            TcpEventKind::ResetReceived => TcpState::Established,
            TcpEventKind::EofRead => TcpState::CloseWait,
            TcpEventKind::SynAckRetransmit => TcpState::Listen,
        };
        Self {
            skaddr: event.skaddr,
            role: Role::Unknown,
            owner: owner.map(|o| Process {
                cgroup,
                ..Process::of_owner(o)
            }),
            owner_source: owner.map(|o| o.source),
            owner_stack: event.owner().and_then(StackRef::of_task),
            closer: None,
            closer_stack: None,
            eof_reader: None,
            eof_stack: None,
            local: event.local,
            remote: event.remote,
            state,
            netns: event.sock.netns,
            cgroup_id: event.sock.cgroup_id,
            cgroup,
            born_ns: None,
            seen_since_ns: event.ts_ns,
            established_ns: None,
            state_since_ns: None,
            fin_sent_ns: None,
            closed_by: None,
            retransmits: Retransmits::default(),
            resets_received: 0,
            resets_sent: 0,
            peer_sent_data: false,
            history_incomplete: false,
        }
    }

    /// Whether `event` is about another socket at this record's address:
    /// the kernel saw it born (at `created_ns`) but this record is of an
    /// earlier one, whose close and the new one's birth were lost.
    fn is_another_socket_than(&self, event: &TcpEvent) -> bool {
        let created = event.sock.created_ns;
        created != 0
            && match self.born_ns {
                Some(born) => born != created,
                None => created > self.seen_since_ns,
            }
    }

    /// The socket's cgroup key, and so its owner's (and that of a closer
    /// or reader that is its owner).
    fn set_cgroup(&mut self, cgroup: u64) {
        self.cgroup = cgroup;
        let owner = self.owner.map(|o| o.pid);
        for process in [&mut self.owner, &mut self.closer, &mut self.eof_reader]
            .into_iter()
            .flatten()
        {
            if Some(process.pid) == owner {
                process.cgroup = cgroup;
            }
        }
    }

    /// `process` as the reports name it: in this socket's cgroup when it
    /// is its owner (another process may run anywhere).
    fn placed(&self, mut process: Process) -> Process {
        if self.owner.is_some_and(|o| o.pid == process.pid) {
            process.cgroup = self.cgroup;
        }
        process
    }

    fn observe(&mut self, event: &TcpEvent, owner: Option<&Owner>) {
        let cgroup = self.cgroup;
        let placed_owner = |o: &Owner| Process {
            cgroup,
            ..Process::of_owner(o)
        };
        // The kernel's record may learn the owner later (a listener seeded
        // from the snapshot); take the best we have.
        if self.owner.is_none() {
            self.owner = owner.map(placed_owner);
            self.owner_source = owner.map(|o| o.source);
        }
        // accept() hands a passive socket from its listener's owner to the
        // process that accepted it (a pre-fork server's worker), with the
        // accept call site.
        let accepted = owner.is_some_and(|o| o.source == OwnerSource::Accept);
        if accepted && self.owner_source != Some(OwnerSource::Accept) {
            self.owner = owner.map(placed_owner);
            self.owner_source = Some(OwnerSource::Accept);
            self.owner_stack = event.owner().and_then(StackRef::of_task);
        }
        if self.owner_stack.is_none() {
            self.owner_stack = event.owner().and_then(StackRef::of_task);
        }
        if self.closer.is_none() {
            if let Some(closer) = event.closer() {
                self.closer = Some(self.placed(Process::of_task(closer)));
                self.closer_stack = StackRef::of_task(closer);
            }
        }
        // A CLOSE→SYN_SENT record carries local port 0; later ones the real port.
        if event.local.port() != 0 || self.local.port() == 0 {
            self.local = event.local;
        }
        self.remote = event.remote;
        self.netns = event.sock.netns;
        // Met after its birth event was lost: the kernel saw the birth.
        if self.born_ns.is_none() && event.sock.created_ns != 0 {
            self.born_ns = Some(event.sock.created_ns);
        }
        self.peer_sent_data |= event.sock.flags & PEER_SENT_DATA != 0;
        match event.what {
            TcpEventKind::StateChange { old, new } => self.transition(event, old, new),
            TcpEventKind::Retransmit { state } => {
                self.retransmit(event.ts_ns, state.unwrap_or(self.state));
            }
            TcpEventKind::ResetSent { .. } => {
                self.resets_sent += 1;
                self.closed_by.get_or_insert(Side::Local);
            }
            TcpEventKind::ResetReceived => {
                self.resets_received += 1;
                self.closed_by.get_or_insert(Side::Peer);
            }
            TcpEventKind::EofRead => {
                if let Some(reader) = &event.actor {
                    self.eof_reader = Some(self.placed(Process::of_task(reader)));
                    self.eof_stack = StackRef::of_task(reader);
                }
            }
            // Not applied to the listener (see `SocketTable::apply_in`).
            TcpEventKind::SynAckRetransmit => {}
        }
    }

    fn transition(&mut self, event: &TcpEvent, old: TcpState, new: TcpState) {
        match TcpState::moment(old, new) {
            Some(Moment::Established) => self.established_ns = Some(event.ts_ns),
            Some(Moment::FinSent) => self.fin_sent_ns = Some(event.ts_ns),
            Some(Moment::CloseWait) | None => {}
        }
        if let Some(side) = TcpState::closing_side(old, new, event.actor.is_some()) {
            self.closed_by.get_or_insert(side);
        }
        self.history_incomplete |= old != self.state;
        // An abortive close: its reset comes after the CLOSE.
        if new == TcpState::Close && event.sock.flags & RESET_BY_CLOSE != 0 {
            self.resets_sent += 1;
            self.closed_by.get_or_insert(Side::Local);
        }
        self.state = new;
        self.state_since_ns = Some(event.ts_ns);
    }

    fn retransmit(&mut self, ts_ns: u64, state: TcpState) {
        let r = &mut self.retransmits;
        match state.retransmit_phase() {
            RetransmitPhase::Handshake => r.syn += 1,
            RetransmitPhase::Fin => {
                if r.fin == 0 {
                    r.first_fin_ns = ts_ns;
                }
                r.fin += 1;
                r.last_fin_ns = ts_ns;
            }
            RetransmitPhase::Data => r.data += 1,
        }
    }

    /// Born → now (or → close, for a closed record), when the birth was seen.
    #[must_use]
    pub fn lifetime_ns(&self, now_ns: u64) -> Option<u64> {
        self.born_ns.map(|born| now_ns.saturating_sub(born))
    }

    /// The peer as a report groups it: a client's server endpoint, or a
    /// server's client address (any port: clients use ephemeral ports).
    #[must_use]
    pub fn peer_key(&self) -> SocketAddr {
        match self.role {
            Role::Passive => SocketAddr::new(self.remote.ip(), 0),
            _ => self.remote,
        }
    }

    /// The process a report names for this socket's close: the closer when
    /// recorded, else the owner.
    #[must_use]
    pub fn responsible(&self) -> Option<Process> {
        self.closer.or(self.owner)
    }
}

/// How long the cgroup found for a process serves its next sockets.
const PID_TTL: Duration = Duration::from_secs(5);
/// Processes remembered at most (then forgotten all at once).
const MAX_PIDS: usize = 4096;

/// Where sockets' owners run: the container cache, asked for a socket's
/// key once, when its record is made (`SocketTable::apply_in`), and for the
/// processes of the socket dumps.
pub struct Cgroups {
    pub containers: Containers,
    /// The cgroup-v2 mount: the id of a process's cgroup is its
    /// directory's inode there.
    mount: Option<PathBuf>,
    /// pid → (cgroup-v2 id, when read), for `PID_TTL`.
    pids: FastMap<u32, (u64, Instant)>,
    /// Keys given by a recording instead of read from this machine.
    recorded: Option<RecordedKeys>,
}

/// The keys a recording gives: the one the next new record takes, and
/// each process's (from the dump being replayed).
#[derive(Default)]
struct RecordedKeys {
    next: u64,
    pids: FastMap<u32, u64>,
}

impl Cgroups {
    #[must_use]
    pub fn new(containers: Containers) -> Self {
        let config = containers.config();
        let mount = config.cgroup2.clone().or_else(|| {
            let mounts = fs::read_to_string(config.proc.join("self/mounts")).unwrap_or_default();
            lookup::cgroup2_mount(&mounts)
        });
        Self {
            containers,
            mount,
            pids: FastMap::default(),
            recorded: None,
        }
    }

    /// Keys from a recording (`set_recorded_key`, `set_recorded_pids`):
    /// nothing of this machine is read.
    #[must_use]
    pub fn recorded(containers: Containers) -> Self {
        Self {
            containers,
            mount: None,
            pids: FastMap::default(),
            recorded: Some(RecordedKeys::default()),
        }
    }

    /// The key the next new record takes (a recorded event's).
    pub fn set_recorded_key(&mut self, key: u64) {
        if let Some(recorded) = &mut self.recorded {
            recorded.next = key;
        }
    }

    /// The processes' keys as a recorded dump gives them.
    pub fn set_recorded_pids(&mut self, pids: impl IntoIterator<Item = (u32, u64)>) {
        if let Some(recorded) = &mut self.recorded {
            recorded.pids = pids.into_iter().collect();
        }
    }

    /// The cgroup-v2 mount, if there is one.
    #[must_use]
    pub fn mount(&self) -> Option<&Path> {
        self.mount.as_deref()
    }

    /// The key of a socket whose kernel record says `cgroup_id`, owned by
    /// `pid`: `Containers::key_at_birth`, which labels a new cgroup at
    /// once. A socket the kernel saw no birth of (id 0: born before
    /// tracing, or accepted from a listener that was) takes its owner's
    /// cgroup now.
    pub fn key_at_birth(&mut self, cgroup_id: u64, pid: Option<u32>, birth_ns: u64) -> u64 {
        if let Some(recorded) = &self.recorded {
            return recorded.next;
        }
        match (cgroup_id, pid) {
            (0, Some(pid)) => self.key_of_pid(pid),
            (0, None) => 0,
            (id, Some(pid)) => self.containers.key_at_birth(id, pid, birth_ns),
            (id, None) => id,
        }
    }

    /// A live process's key (0 when it is gone, or has no cgroup here).
    pub fn key_of_pid(&mut self, pid: u32) -> u64 {
        if let Some(recorded) = &self.recorded {
            return recorded.pids.get(&pid).copied().unwrap_or(0);
        }
        let id = self.id_of_pid(pid);
        self.containers.key_at_birth(id, pid, 0)
    }

    /// A process's cgroup-v2 id, from `/proc/PID/cgroup` and the mount.
    fn id_of_pid(&mut self, pid: u32) -> u64 {
        let now = Instant::now();
        if let Some(&(id, read)) = self.pids.get(&pid) {
            if now.duration_since(read) < PID_TTL {
                return id;
            }
        }
        let proc = &self.containers.config().proc;
        let text =
            fs::read_to_string(proc.join(pid.to_string()).join("cgroup")).unwrap_or_default();
        let id = match (proc_cgroup::unified(&text), &self.mount) {
            (Some(path), Some(mount)) => {
                fs::metadata(mount.join(path.trim_start_matches('/'))).map_or(0, |m| m.ino())
            }
            _ => 0,
        };
        if self.pids.len() >= MAX_PIDS {
            self.pids.clear();
        }
        self.pids.insert(pid, (id, now));
        id
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;

    use tcptrace_common::TcpState::*;

    use super::*;
    use crate::{
        event::synthetic::{task, Conn},
        owner::{self, StartOwners},
    };

    const REMOTE: &str = "10.0.0.9:6379";

    fn apply(table: &mut SocketTable, e: &TcpEvent) -> Applied {
        let start = StartOwners::default();
        let owner = owner::resolve(e, &start);
        table.apply(e, owner.as_ref())
    }

    /// `e`, which must close its socket: the final record.
    fn close(table: &mut SocketTable, e: &TcpEvent) -> SocketRecord {
        let Applied::Closed = apply(table, e) else {
            panic!("CLOSE ends the record");
        };
        table.closed().cloned().expect("the closed record")
    }

    fn endpoints(local: &str) -> (SocketAddr, SocketAddr) {
        (local.parse().unwrap(), REMOTE.parse().unwrap())
    }

    #[test]
    fn active_lifecycle_ends_in_a_closed_record() {
        let mut table = SocketTable::default();
        let client = task(100, "client", 7);
        let connecting = Conn::active(1, client, "10.0.0.1:0", REMOTE);
        apply(&mut table, &connecting.state(1_000, Close, SynSent));
        let mut c = Conn::active(1, client, "10.0.0.1:40000", REMOTE);
        apply(&mut table, &c.state(2_000, SynSent, Established));
        let (local, remote) = endpoints("10.0.0.1:40000");
        assert!(table.find(0, local, remote).is_some());
        apply(
            &mut table,
            &c.closed_by(5_000, Established, FinWait1, client),
        );
        apply(&mut table, &c.retransmit(6_000, FinWait1));
        let record = close(&mut table, &c.state(9_000, FinWait1, Close));
        assert_eq!(record.role, Role::Active);
        assert_eq!(record.lifetime_ns(9_000), Some(8_000));
        assert_eq!(record.closed_by, Some(Side::Local));
        assert_eq!(record.closer.map(|c| c.pid), Some(100));
        assert_eq!(record.retransmits.fin, 1);
        assert_eq!(
            record.local.port(),
            40000,
            "the real port replaces connect's port 0"
        );
        assert!(table.is_empty());
        assert!(table.find(0, local, remote).is_none());
    }

    /// What a summary record's unfolding does: the same record, whether
    /// it lived in the live table or passed through.
    fn abortive_life(table: &mut SocketTable, skaddr: u64, whole_life: bool) -> SocketRecord {
        let client = task(100, "client", 7);
        let mut c = Conn::active(skaddr, client, "10.0.0.1:40002", REMOTE);
        if whole_life {
            table.whole_life(skaddr);
        }
        apply(table, &c.state(1, Close, SynSent));
        assert_eq!(table.get(skaddr).map(|r| r.state), Some(SynSent));
        apply(table, &c.state(2, SynSent, Established));
        let record = close(table, &c.closed_by(3, Established, Close, client));
        table.end_whole_life();
        record
    }

    #[test]
    fn a_whole_life_passes_through_without_entering_the_live_table() {
        let mut table = SocketTable::default();
        let lived = abortive_life(&mut table, 3, false);
        let passed = abortive_life(&mut table, 3, true);
        assert_eq!(format!("{lived:?}"), format!("{passed:?}"));
        assert!(table.is_empty() && table.by_endpoints.is_empty());
        assert!(table.passing.is_none());

        // A record already at the address that the birth cannot be told
        // apart from (no kernel creation time): the birth replaces it,
        // counted, as without the announcement.
        let server = task(200, "server", 9);
        let listener = Conn::active(4, server, "10.0.0.1:80", "0.0.0.0:0");
        apply(&mut table, &listener.state(1, Close, Listen));
        abortive_life(&mut table, 4, true);
        assert_eq!(table.replaced, 1);
        assert!(table.is_empty());

        // A whole life that does not close (never so from the kernel)
        // stays live when the summary ends.
        let client = task(100, "client", 7);
        let c = Conn::active(5, client, "10.0.0.1:40005", REMOTE);
        table.whole_life(5);
        apply(&mut table, &c.state(1, Close, SynSent));
        table.end_whole_life();
        assert_eq!(table.len(), 1);
        assert!(table.passing.is_none());
        let (local, remote) = endpoints("10.0.0.1:40005");
        assert_eq!(table.find(0, local, remote).map(|r| r.skaddr), Some(5));
    }

    #[test]
    fn a_whole_life_read_late_passes_by_another_sockets_record() {
        // The socket born at address 6 after another closed there was
        // read first (the ring buffer); the older one's whole life comes
        // after (a CPU ring). It must not take the newer one's record.
        let mut table = SocketTable::default();
        let client = task(100, "client", 7);
        let mut newer = Conn::active(6, client, "10.0.0.1:40010", REMOTE);
        newer.sock.created_ns = 50;
        apply(&mut table, &newer.state(50, Close, SynSent));
        apply(&mut table, &newer.state(51, SynSent, Established));
        let mut older = Conn::active(6, client, "10.0.0.1:40011", REMOTE);
        older.sock.created_ns = 10;
        table.whole_life(6);
        apply(&mut table, &older.state(10, Close, SynSent));
        apply(&mut table, &older.state(11, SynSent, Established));
        let passed = close(&mut table, &older.closed_by(12, Established, Close, client));
        table.end_whole_life();
        assert_eq!((passed.local.port(), passed.born_ns), (40011, Some(10)));
        assert_eq!(table.replaced, 0);
        // The newer socket's record is still whole when it closes.
        let record = close(&mut table, &newer.closed_by(60, Established, Close, client));
        assert_eq!((record.role, record.born_ns), (Role::Active, Some(50)));
        assert_eq!(record.lifetime_ns(60), Some(10));
        assert!(table.is_empty());
    }

    #[test]
    fn abort_in_close_is_a_local_close() {
        let mut table = SocketTable::default();
        let client = task(100, "client", 7);
        let mut c = Conn::active(3, client, "10.0.0.1:40002", REMOTE);
        apply(&mut table, &c.state(1, Close, SynSent));
        apply(&mut table, &c.state(2, SynSent, Established));
        // SO_LINGER 0: close() resets the connection, ESTABLISHED → CLOSE.
        let record = close(&mut table, &c.closed_by(3, Established, Close, client));
        assert_eq!(record.closed_by, Some(Side::Local));
        // The same transition in softirq (the peer's RST) names nobody.
        let d = Conn::active(4, client, "10.0.0.1:40003", REMOTE);
        apply(&mut table, &d.state(1, Close, SynSent));
        apply(&mut table, &d.state(2, SynSent, Established));
        let record = close(&mut table, &d.state(3, Established, Close));
        assert_eq!(record.closed_by, None);
    }

    #[test]
    fn reused_address_starts_a_new_record() {
        let mut table = SocketTable::default();
        let client = task(100, "client", 7);
        apply(
            &mut table,
            &Conn::active(2, client, "10.0.0.1:0", REMOTE).state(1, Close, SynSent),
        );
        apply(
            &mut table,
            &Conn::active(2, client, "10.0.0.1:40001", REMOTE).state(2, SynSent, Established),
        );
        // Its CLOSE was lost; the address now belongs to a new connection.
        apply(
            &mut table,
            &Conn::active(2, client, "10.0.0.1:0", REMOTE).state(10, Close, SynSent),
        );
        assert_eq!(table.replaced, 1);
        let record = table.get(2).unwrap();
        assert_eq!(record.born_ns, Some(10));
        assert_eq!(record.state, SynSent);
        let (local, remote) = endpoints("10.0.0.1:40001");
        assert!(table.find(0, local, remote).is_none());
    }

    #[test]
    fn a_socket_whose_birth_was_lost_does_not_inherit_a_stale_record() {
        let mut table = SocketTable::default();
        let old = task(100, "old", 7);
        let mut first = Conn::active(4, old, "10.0.0.1:40004", REMOTE);
        first.sock.created_ns = 1;
        apply(&mut table, &first.state(1, Close, SynSent));
        apply(&mut table, &first.state(2, SynSent, Established));
        // Its close and the next socket's birth at the same address were
        // lost; the next socket's peer closes. The kernel's record says when
        // it was born.
        let mut second = Conn::active(4, task(200, "new", 9), "10.0.0.1:40005", REMOTE);
        second.sock.created_ns = 50;
        apply(&mut table, &second.state(60, Established, CloseWait));
        assert_eq!(table.replaced, 1);
        let record = table.get(4).unwrap();
        assert_eq!(record.owner.map(|o| o.pid), Some(200));
        assert_eq!(record.born_ns, Some(50), "the kernel's birth time");
        assert_eq!(record.state_since_ns, Some(60));
        let (local, remote) = endpoints("10.0.0.1:40004");
        assert!(
            table.find(0, local, remote).is_none(),
            "the old one is gone"
        );
    }

    #[test]
    fn a_socket_met_after_its_birth_event_was_lost_gets_the_kernels_birth_time() {
        let mut table = SocketTable::default();
        let mut c = Conn::active(5, task(100, "client", 7), "10.0.0.1:40006", REMOTE);
        c.sock.created_ns = 10;
        apply(&mut table, &c.state(20, Established, CloseWait));
        apply(&mut table, &c.state(30, CloseWait, LastAck));
        assert_eq!(table.replaced, 0, "the same socket all along");
        assert_eq!(table.get(5).unwrap().born_ns, Some(10));
    }

    #[test]
    fn socket_from_before_the_session_has_no_birth() {
        let mut table = SocketTable::default();
        let c = Conn::active(3, task(100, "client", 7), "10.0.0.1:8080", REMOTE);
        apply(&mut table, &c.state(50, Established, CloseWait));
        let record = table.get(3).unwrap();
        assert_eq!(record.role, Role::Unknown);
        assert_eq!(record.born_ns, None);
        assert_eq!(record.closed_by, Some(Side::Peer));
        assert_eq!(record.state_since_ns, Some(50));
        assert_eq!(record.peer_key(), REMOTE.parse::<SocketAddr>().unwrap());
    }

    /// A fake host for the container wiring: `cgroup/` (a v2 tree whose
    /// ids are its directories' inodes, as on cgroupfs), `proc/` and
    /// `node/` (a containerd task's bundle), removed on drop.
    pub(crate) struct FakeHost(std::path::PathBuf);

    pub(crate) const CTR: &str = "2752ea5db34c1dc718967086526c49d5f55793678e2002db3f7a3e45a4a97b2a";
    pub(crate) const UID: &str = "1b2c3d4e-5f60-4182-93a4-b5c6d7e8f901";

    /// The fixture container's cgroup (systemd driver).
    pub(crate) fn pod_path() -> String {
        format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CTR}.scope",
            UID.replace('-', "_")
        )
    }

    impl FakeHost {
        pub(crate) fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "tcptrace-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            let host = Self(dir);
            host.file("proc/self/mounts", "");
            host.file(
                &format!(
                    "node/run/containerd/io.containerd.runtime.v2.task/k8s.io/{CTR}/config.json"
                ),
                include_str!("container/fixtures/containerd-container.config.json"),
            );
            host
        }

        pub(crate) fn path(&self) -> &std::path::Path {
            &self.0
        }

        pub(crate) fn file(&self, relative: &str, contents: &str) {
            let path = self.0.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, contents).unwrap();
        }

        /// Makes a cgroup and returns its id.
        pub(crate) fn cgroup(&self, path: &str) -> u64 {
            let dir = self.0.join("cgroup").join(path.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            fs::metadata(dir).unwrap().ino()
        }

        pub(crate) fn process(&self, pid: u32, cgroup: &str) {
            self.file(&format!("proc/{pid}/cgroup"), cgroup);
        }

        pub(crate) fn containers(&self) -> Containers {
            Containers::new(crate::container::ContainerConfig {
                cgroup2: Some(self.0.join("cgroup")),
                proc: self.0.join("proc"),
                node: crate::container::NodeState::default().under(self.0.join("node")),
                walk_interval: Duration::from_secs(3600),
                ..crate::container::ContainerConfig::default()
            })
        }
    }

    impl Drop for FakeHost {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Each socket's cgroup key is found when its record is made: the
    /// kernel's id at a birth (its names read then), the owner's own
    /// cgroup for a socket the kernel saw no birth of; the owner (and a
    /// closer that is the owner) carry it into the reports.
    #[test]
    fn cgroup_key_found_once_per_socket() {
        let host = FakeHost::new("table-keys");
        let pod = host.cgroup(&pod_path());
        host.process(100, &format!("0::{}\n", pod_path()));
        host.process(300, &format!("0::{}\n", pod_path()));
        let mut cgroups = Cgroups::new(host.containers());
        let mut table = SocketTable::default();
        let start = StartOwners::default();
        let feed = |table: &mut SocketTable, cgroups: &mut Cgroups, e: &TcpEvent| {
            let owner = owner::resolve(e, &start);
            match table.apply_in(e, owner.as_ref(), Some(cgroups)) {
                Applied::Closed => table.closed().cloned(),
                _ => None,
            }
        };

        // Born in the pod's cgroup: that id, named at once.
        let client = task(100, "api", 0);
        let mut c = Conn::active(1, client, "10.0.0.1:40000", REMOTE);
        c.sock.cgroup_id = pod;
        feed(&mut table, &mut cgroups, &c.state(1, Close, SynSent));
        let record = table.get(1).unwrap();
        assert_eq!((record.cgroup_id, record.cgroup), (pod, pod));
        assert_eq!(record.owner.unwrap().cgroup, pod);
        assert_eq!(cgroups.containers.labels(pod).container, "api");
        feed(&mut table, &mut cgroups, &c.state(2, SynSent, Established));
        let other = task(101, "sidecar", 0);
        let closed = feed(
            &mut table,
            &mut cgroups,
            &c.closed_by(3, Established, Close, other),
        )
        .unwrap();
        assert_eq!(closed.cgroup, pod);
        assert_eq!(
            closed.closer.unwrap().cgroup,
            0,
            "another process: not placed"
        );
        let mut d = Conn::active(2, client, "10.0.0.1:40001", REMOTE);
        d.sock.cgroup_id = pod;
        feed(&mut table, &mut cgroups, &d.state(4, Close, SynSent));
        let closed = feed(
            &mut table,
            &mut cgroups,
            &d.closed_by(5, SynSent, Close, client),
        )
        .unwrap();
        assert_eq!(closed.closer.unwrap().cgroup, pod, "the owner closed it");

        // Seen mid-life (id 0), its owner known from the start dump: the
        // owner's cgroup now.
        let old = Conn::active(3, Task::NOBODY, "10.0.0.1:8080", REMOTE);
        let event = old.state(6, Established, CloseWait);
        let snapshot_owner = Owner {
            pid: 300,
            comm: "old-api".into(),
            source: OwnerSource::Snapshot,
        };
        table.apply_in(&event, Some(&snapshot_owner), Some(&mut cgroups));
        let record = table.get(3).unwrap();
        assert_eq!((record.cgroup_id, record.cgroup), (0, pod));
        assert_eq!(record.owner.unwrap().cgroup, pod);
        // No owner, no cgroup: nothing to look up.
        let orphan = Conn::active(4, Task::NOBODY, "10.0.0.1:8081", REMOTE);
        table.apply_in(
            &orphan.state(7, Established, CloseWait),
            None,
            Some(&mut cgroups),
        );
        assert_eq!(table.get(4).unwrap().cgroup, 0);
        // The owner learnt later (a seeded listener's child): its cgroup then.
        table.apply_in(
            &orphan.state(8, CloseWait, LastAck),
            Some(&snapshot_owner),
            Some(&mut cgroups),
        );
        assert_eq!(table.get(4).unwrap().cgroup, pod);

        // Without attribution a record keeps the kernel's id.
        let mut plain = SocketTable::default();
        let mut e = Conn::active(5, client, "10.0.0.1:40002", REMOTE);
        e.sock.cgroup_id = 77;
        apply(&mut plain, &e.state(9, Close, SynSent));
        assert_eq!(plain.get(5).unwrap().cgroup, 77);
    }

    /// Hybrid host, runtime on the cgroupfs driver: every container shares
    /// the runtime's v2 cgroup, the born process's v1 path tells them
    /// apart, and the socket keeps that key (and so its names) after the
    /// process is gone.
    #[test]
    fn shared_v2_cgroup_keyed_by_the_v1_path_at_birth() {
        let host = FakeHost::new("table-hybrid");
        host.file(
            "proc/self/mounts",
            "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n",
        );
        let shared = host.cgroup("/system.slice/containerd.service");
        host.process(
            200,
            &format!(
                "5:memory:/kubepods/besteffort/pod{UID}/{CTR}\n0::/system.slice/containerd.service\n"
            ),
        );
        let mut cgroups = Cgroups::new(host.containers());
        let mut table = SocketTable::default();
        let mut c = Conn::active(1, task(200, "api", 0), "10.0.0.1:40000", REMOTE);
        c.sock.cgroup_id = shared;
        let born = c.state(1, Close, SynSent);
        let start = StartOwners::default();
        let owner = owner::resolve(&born, &start);
        table.apply_in(&born, owner.as_ref(), Some(&mut cgroups));
        let key = table.get(1).unwrap().cgroup;
        assert!(key & crate::container::V1_KEY != 0 && key != shared);
        fs::remove_file(host.0.join("proc/200/cgroup")).unwrap();
        let closed = table.apply_in(
            &c.dies(2, SynSent, Some(libc::ECONNREFUSED)),
            owner.as_ref(),
            Some(&mut cgroups),
        );
        let Applied::Closed = closed else {
            panic!("CLOSE ends the record");
        };
        let record = table.closed().expect("the closed record");
        assert_eq!(record.cgroup, key);
        assert_eq!(
            cgroups.containers.labels(key).pod,
            "checkout-7d9f8b6c5-x2x9z"
        );
    }
}
