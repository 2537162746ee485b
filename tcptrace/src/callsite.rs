//! Call sites: user stacks the kernel captured at connect, listen and
//! close (registers and stack bytes), unwound and symbolized as they
//! arrive, and remembered by capture for the events that refer to them.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use crate::{
    event::{TcpEvent, UserStackRecord},
    generations::Generations,
    symbolize::{
        advice, choose, CapturedStack, Chosen, Frame, Meeter, MeetingPriority, Symbolizer,
        UNKNOWN_FUNCTION,
    },
    table::StackRef,
};

/// Resolved frames of one stack, innermost first, and the frame that names
/// the call site (the first outside libc and the language runtime).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CallSite {
    pub function: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The frame just inside the call site when it tells how the user
    /// reached the socket (the API called: `net.Dial`, `curl_easy_perform`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// False when no frame of the user's code was on the stack and the call
    /// site is the library API or runtime frame nearest to it.
    pub user_code: bool,
    /// What the user can do to get the user's function named, when the
    /// stack shows a runtime that was started without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
    pub frames: Vec<Frame>,
    /// Why no function could be named (process gone, /proc unreadable,
    /// stack evicted, no symbols), when that is the case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
}

impl CallSite {
    /// Whether the function named is a Java method the JVM was
    /// interpreting (not compiled yet).
    #[must_use]
    pub fn is_interpreted(&self) -> bool {
        self.frames.iter().any(|frame| {
            frame.function == self.function
                && frame.module.as_deref() == Some(crate::symbolize::INTERPRETED_MODULE)
        })
    }

    /// What names the user's code here (function, file, line), when the
    /// call site is the user's: stacks of an interpreted and a compiled
    /// path of one method differ, but this does not.
    #[must_use]
    pub fn user_code_text(&self) -> Option<(String, Option<String>, Option<u32>)> {
        self.user_code
            .then(|| (self.function.clone(), self.file.clone(), self.line))
    }

    fn unknown(reason: impl Into<String>, frames: Vec<Frame>) -> Self {
        Self {
            function: "?".to_owned(),
            file: None,
            line: None,
            via: None,
            user_code: false,
            advice: None,
            frames,
            unresolved: Some(reason.into()),
        }
    }
}

/// Captures remembered. Under process churn every new process brings new
/// captures: the least recently seen half is forgotten when full, so a
/// long-running daemon stays bounded and keeps resolving the call sites of
/// new processes. A forgotten capture's findings say so.
const MAX_STACKS: usize = 16_384;

/// What became of the stacks the kernel captured.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct StackCounts {
    /// Captures received and unwound.
    pub unwound: u64,
    /// Captures whose process's mappings could not be read (it exited
    /// before tcptrace met it): no call site.
    pub unmapped: u64,
    /// Captures skipped because their process is outside the filter.
    pub filtered_out: u64,
    /// Processes announced by the kernel that were gone before their
    /// mappings could be read.
    pub processes_missed: u64,
    /// How soon the thread that reads new processes' mappings runs: below
    /// real-time priority, more short-lived processes are missed.
    pub meeting_priority: MeetingPriority,
}

pub struct CallSites {
    symbolizer: Symbolizer,
    /// Call sites by canonical capture.
    resolved: Generations<StackRef, CallSite>,
    /// Each capture → the first capture of the same process that unwound
    /// to the same addresses: every connection's capture is its own record,
    /// but findings group by call path, and each path is symbolized once.
    aliases: Generations<StackRef, StackRef>,
    /// The captures `canonicalize` met last, with their aliases: under
    /// churn a process's records repeat the few captures the kernel reuses
    /// over its sampling budget, and comparing a key costs less than two
    /// hash probes per record. Emptied whenever `aliases` changes.
    recent_aliases: [Option<(StackRef, StackRef)>; RECENT_ALIASES],
    /// (process, unwound addresses) → that first capture.
    paths: Generations<(u32, Vec<u64>), StackRef>,
    /// Unwound, not symbolized yet: see [`Self::capture`].
    pending: VecDeque<(StackRef, Vec<u64>)>,
    /// Symbolized without naming the user's code while frames were
    /// unknown: tried again later, since JIT runtimes name new code as it
    /// is compiled (a JVM's perf map comes when asked).
    retries: VecDeque<Retry>,
    pub counts: StackCounts,
}

/// Aliases `canonicalize` remembers: a connection's owner and closer, on
/// each of its two sockets.
const RECENT_ALIASES: usize = 4;

/// Captures waiting for symbolization at most; past this they are
/// symbolized as they come.
const MAX_PENDING: usize = 4096;

/// A call site to symbolize again at `at`.
struct Retry {
    key: StackRef,
    ips: Vec<u64>,
    at: Instant,
    tries: u32,
}

/// Tries after the first, each after twice the wait of the one before.
const RETRIES: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Call sites waiting for a retry at most.
const MAX_RETRIES: usize = 1024;

impl Default for CallSites {
    fn default() -> Self {
        Self {
            symbolizer: Symbolizer::default(),
            resolved: Generations::new(MAX_STACKS),
            aliases: Generations::new(MAX_STACKS),
            recent_aliases: [None; RECENT_ALIASES],
            paths: Generations::new(MAX_STACKS),
            pending: VecDeque::new(),
            retries: VecDeque::new(),
            counts: StackCounts::default(),
        }
    }
}

impl CallSites {
    /// Call sites of a live session: processes are met by `meeter` the
    /// moment the kernel announces them.
    #[must_use]
    pub fn with_meeter(meeter: Meeter) -> Self {
        let mut call_sites = Self::default();
        call_sites.symbolizer.attach_meeter(meeter);
        // Without it files are parsed on the reader's thread, which then
        // drains nothing for the time of a parse.
        if let Err(err) = call_sites.symbolizer.start_naming_thread() {
            eprintln!("tcptrace: warning: no thread to symbolize on ({err}): events may be lost while a binary is parsed");
        }
        call_sites
    }

    /// Call sites resolved elsewhere (a recording's), by canonical capture.
    #[must_use]
    pub fn recorded(sites: Vec<(StackRef, CallSite)>) -> Self {
        // Room for all of them in the young generation: none is forgotten.
        let mut resolved = Generations::new(2 * sites.len() + 2);
        for (key, site) in sites {
            resolved.insert(key, site);
        }
        Self {
            resolved,
            ..Self::default()
        }
    }

    /// Counts, with the processes the meeting thread missed.
    #[must_use]
    pub fn counts(&self) -> StackCounts {
        StackCounts {
            processes_missed: self.symbolizer.processes_missed(),
            meeting_priority: self.symbolizer.meeting_priority(),
            ..self.counts
        }
    }

    /// A stack the kernel captured: its process's mappings are read (if
    /// new) and the stack unwound now, while the process most likely still
    /// lives (the kernel wakes us at a process's first capture). Symbolizing
    /// can take a while the first time a file is seen (parsing it), so it
    /// waits for [`Self::resolve_one`], which the reader calls when the ring
    /// buffer is empty: other short-lived processes are met first.
    pub fn capture(&mut self, record: UserStackRecord) {
        let ips = self.symbolizer.unwind(&CapturedStack {
            tgid: record.tgid,
            mm: record.mm,
            ip: record.ip,
            sp: record.sp,
            bp: record.bp,
            stack: record.stack,
        });
        let key = StackRef {
            pid: record.tgid,
            stack: record.id,
        };
        if ips.is_empty() {
            self.counts.unmapped += 1;
            let reason = self
                .symbolizer
                .image_error(record.tgid)
                .unwrap_or("the stack could not be unwound");
            self.resolved
                .insert(key, CallSite::unknown(reason, Vec::new()));
            return;
        }
        self.counts.unwound += 1;
        let path = (record.tgid, ips);
        if let Some(first) = self.paths.get(&path) {
            self.alias(key, first);
            return;
        }
        // The first capture of a path is its own alias: every capture met
        // has one (see `canonicalize`).
        self.alias(key, key);
        self.paths.insert(path.clone(), key);
        self.pending.push_back((key, path.1));
        if self.pending.len() > MAX_PENDING {
            // Past the bound the oldest is settled now, parse or not.
            if let Some((key, ips)) = self.pending.pop_front() {
                self.settle(key, ips, 0);
            }
        }
    }

    /// `key` unwound to the addresses `first` did. The insert may drop a
    /// generation of aliases, so what `canonicalize` remembers goes too.
    fn alias(&mut self, key: StackRef, first: StackRef) {
        self.aliases.insert(key, first);
        self.recent_aliases = [None; RECENT_ALIASES];
    }

    /// The canonical capture of `key`: the first of its process that
    /// unwound to the same addresses (itself until it is unwound).
    #[must_use]
    pub fn canonical(&self, key: StackRef) -> StackRef {
        self.aliases.peek(&key).copied().unwrap_or(key)
    }

    /// Rewrites the captures an event names to their canonical ones, and
    /// says whether every one of them has been met (a capture forgotten
    /// since, older than the last `MAX_STACKS`, counts as unmet: that costs
    /// only a look at an empty ring).
    pub fn canonicalize(&mut self, event: &mut TcpEvent) -> bool {
        let mut all_met = true;
        let sock = &mut event.sock;
        for task in [&mut sock.owner, &mut sock.closer, &mut sock.eof_reader]
            .into_iter()
            .chain(event.actor.as_mut())
        {
            if task.stack == 0 {
                continue;
            }
            let key = StackRef {
                pid: task.tgid,
                stack: task.stack,
            };
            let mut remembered = self.recent_aliases.iter().flatten();
            if let Some((_, first)) = remembered.find(|(met, _)| *met == key) {
                task.stack = first.stack;
                continue;
            }
            match self.aliases.peek(&key) {
                Some(&first) => {
                    task.stack = first.stack;
                    self.recent_aliases.rotate_right(1);
                    self.recent_aliases[0] = Some((key, first));
                }
                // Unmapped captures are resolved (as unknown) under their own key.
                None => all_met &= self.resolved.peek(&key).is_some(),
            }
        }
        all_met
    }

    /// Symbolizes the oldest capture waiting, or else a retry that is
    /// due; false when there was none, or when its files are still being
    /// parsed on the naming thread (the reader comes back on its timer).
    pub fn resolve_one(&mut self) -> bool {
        if let Some((key, ips)) = self.pending.front() {
            // Its files are being parsed off this thread: later.
            if !self.symbolizer.ready_to_symbolize(key.pid, ips) {
                return false;
            }
            let (key, ips) = self.pending.pop_front().expect("looked at above");
            self.settle(key, ips, 0);
            return true;
        }
        let now = Instant::now();
        let Some(due) = self.retries.iter().position(|r| r.at <= now) else {
            return false;
        };
        let retry = &self.retries[due];
        if !self
            .symbolizer
            .ready_to_symbolize(retry.key.pid, &retry.ips)
        {
            return false;
        }
        let retry = self.retries.remove(due).expect("found above");
        self.settle(retry.key, retry.ips, retry.tries);
        true
    }

    /// Symbolizes everything waiting, retries included, after giving the
    /// JVMs asked for perf maps a moment to answer: the end of a session.
    pub fn finish(&mut self) {
        // Settled as any capture is: one whose JIT frames the maps read so
        // far do not name is tried again below, after the last maps (a
        // short session ends with captures of code compiled since).
        while let Some((key, ips)) = self.pending.pop_front() {
            self.settle(key, ips, 0);
        }
        if self.retries.is_empty() {
            return;
        }
        self.symbolizer.wait_for_perf_maps(Duration::from_secs(2));
        for retry in std::mem::take(&mut self.retries) {
            self.settle(retry.key, retry.ips, RETRIES);
        }
    }

    /// Symbolizes a capture (`tries` times before) and keeps its call
    /// site, scheduling another try if it names no user code while some
    /// frames are still unknown, or if JIT code not named yet lies inside
    /// the user frame it names (an interpreted `main` calling a compiled
    /// method: the perf map has not named that method yet).
    fn settle(&mut self, key: StackRef, ips: Vec<u64>, tries: u32) {
        let site = self.resolve(key.pid, &ips);
        let unknown = site.frames.iter().any(|f| f.function == UNKNOWN_FUNCTION);
        let site_at = site
            .frames
            .iter()
            .position(|f| f.function == site.function)
            .unwrap_or(0);
        let unnamed_jit_inside = site.frames[..site_at].iter().any(|f| {
            f.function == UNKNOWN_FUNCTION && self.symbolizer.in_anonymous_code(key.pid, f.addr)
        });
        let named_later = (!site.user_code && unknown) || unnamed_jit_inside;
        if named_later && tries < RETRIES && self.retries.len() < MAX_RETRIES {
            self.retries.push_back(Retry {
                key,
                ips,
                at: Instant::now() + FIRST_RETRY * 2_u32.pow(tries),
                tries: tries + 1,
            });
        }
        self.resolved.insert(key, site);
    }

    /// Whether `stack`'s call site names the user's code.
    #[must_use]
    pub fn names_user_code(&self, stack: StackRef) -> bool {
        self.resolved
            .peek(&stack)
            .is_some_and(|site| site.user_code)
    }

    /// A capture that is not resolved: counted (its process is outside the
    /// session's filter).
    pub fn skip(&mut self) {
        self.counts.filtered_out += 1;
    }

    fn resolve(&mut self, tgid: u32, ips: &[u64]) -> CallSite {
        let frames = self.symbolizer.symbolize(tgid, ips);
        let Some(Chosen { site, via, user }) = choose(&frames) else {
            let reason = self.symbolizer.last_error(tgid).map_or_else(
                || "no symbols for these addresses".to_owned(),
                ToOwned::to_owned,
            );
            return CallSite::unknown(reason, frames);
        };
        CallSite {
            function: site.function.clone(),
            file: site.file.clone(),
            line: site.line,
            via: via.map(|frame| frame.function.clone()),
            user_code: user,
            advice: (!user).then(|| self.advice(tgid, &frames)).flatten(),
            unresolved: None,
            frames,
        }
    }

    /// What the user can do to get their code named; with why asking the
    /// JVM for its perf map failed, when it did.
    fn advice(&self, tgid: u32, frames: &[Frame]) -> Option<String> {
        let advice = advice(frames)?;
        Some(match self.symbolizer.perf_map_failure(tgid) {
            Some(failure) => {
                format!("{advice}; asking this JVM for its perf map failed: {failure}")
            }
            None => advice.to_owned(),
        })
    }

    /// The call site of `stack`; for a capture still waiting to be
    /// symbolized, or one that never arrived or was forgotten, an unknown
    /// one that says which.
    #[must_use]
    pub fn get(&self, stack: Option<StackRef>) -> Option<CallSite> {
        let stack = stack?;
        if let Some(site) = self.resolved.peek(&stack) {
            return Some(site.clone());
        }
        let reason = if self.pending.iter().any(|(key, _)| *key == stack) {
            "its stack capture is still being symbolized (its files are being read): \
             a later report names it"
                .to_owned()
        } else {
            format!(
                "its stack capture was lost (ring buffer full, see the session summary) \
                 or forgotten (more than {MAX_STACKS} captures since)"
            )
        };
        Some(CallSite::unknown(reason, Vec::new()))
    }

    /// Whether tcptrace may ask JVMs for their perf maps (on by default).
    pub fn set_jvm_perf_maps(&mut self, enabled: bool) {
        self.symbolizer.set_jvm_perf_maps(enabled);
    }

    /// Lets the symbolizer drop parsed debug info nobody used lately (tens
    /// of MiB for a large binary); known call sites stay resolved.
    pub fn release_idle(&mut self) {
        self.symbolizer.release_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::synthetic::{task, Conn};
    use tcptrace_common::TcpState;

    fn stack(id: u64) -> StackRef {
        StackRef { pid: 7, stack: id }
    }

    #[test]
    fn captures_are_rewritten_to_their_first_also_when_remembered_and_after_aliases_change() {
        let mut sites = CallSites::default();
        sites.alias(stack(1), stack(1));
        sites.alias(stack(2), stack(1));
        let conn = Conn::active(1, task(7, "client", 2), "10.0.0.1:40000", "10.0.0.2:443");
        let event = conn.state(1, TcpState::Close, TcpState::SynSent);
        // Twice: the second from what canonicalize remembers.
        for _ in 0..2 {
            let mut seen = event;
            assert!(sites.canonicalize(&mut seen));
            assert_eq!(seen.sock.owner.stack, 1);
        }
        // Aliases change (a capture of another path takes the key over):
        // nothing remembered stands in for them.
        sites.alias(stack(2), stack(2));
        let mut seen = event;
        assert!(sites.canonicalize(&mut seen));
        assert_eq!(seen.sock.owner.stack, 2);
        // A capture never met is left as it is, and said unmet.
        let mut unmet = event;
        unmet.sock.owner.stack = 9;
        assert!(!sites.canonicalize(&mut unmet));
        assert_eq!(unmet.sock.owner.stack, 9);
    }
}
