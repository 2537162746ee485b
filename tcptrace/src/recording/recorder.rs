//! Writing a recording while a session runs: every event the socket table
//! sees, as it sees it, then at the end what the replay cannot learn
//! elsewhere (see the module's documentation).

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{DumpRef, Entry, EntryRef, Header, ProcessCgroup, RecordedBirth, RecordedCgroup};
use crate::{
    event::TcpEvent,
    pipeline::Pipeline,
    session::SessionCounts,
    snapshot::Snapshot,
    table::{Cgroups, StackRef},
    FastSet,
};

/// Bytes buffered before a write: few system calls at high event rates.
const BUFFER: usize = 256 * 1024;

pub struct Recorder {
    path: PathBuf,
    out: Output,
    /// Stack captures and cgroup keys the events named: their call sites
    /// and names are written at the end.
    stacks: FastSet<StackRef>,
    cgroups: FastSet<u64>,
    /// The line being written, kept for its capacity: `serde_json` writes
    /// token by token, cheapest into memory.
    line: Vec<u8>,
    /// The first write that failed; nothing is written after it.
    failed: Option<io::Error>,
}

/// The file, buffered: a line at a time costs one copy, and the
/// compressor gets large blocks (called per line, it cost ~80 µs per
/// event).
enum Output {
    Plain(BufWriter<File>),
    /// Boxed: the encoder's state is large, and only one is ever made.
    Gzip(Box<BufWriter<flate2::write::GzEncoder<File>>>),
}

impl Output {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Self::Plain(out) => out,
            Self::Gzip(out) => out,
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Self::Plain(mut out) => out.flush(),
            Self::Gzip(out) => out
                .into_inner()
                .map_err(io::IntoInnerError::into_error)?
                .finish()?
                .flush(),
        }
    }
}

impl Recorder {
    /// Creates `path` (replacing a file there) and writes the header and
    /// the start dump.
    pub fn create(
        path: &Path,
        header: &Header,
        start: &Snapshot,
        cgroups: Option<&mut Cgroups>,
    ) -> Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("creating the recording {}", path.display()))?;
        let gzip = path.extension().is_some_and(|ext| ext == "gz");
        let out = if gzip {
            // Fast: a session at full churn writes tens of MB/s of JSON.
            let encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            Output::Gzip(Box::new(BufWriter::with_capacity(BUFFER, encoder)))
        } else {
            Output::Plain(BufWriter::with_capacity(BUFFER, file))
        };
        let mut recorder = Self {
            path: path.to_owned(),
            out,
            stacks: FastSet::default(),
            cgroups: FastSet::default(),
            line: Vec::with_capacity(4096),
            failed: None,
        };
        recorder.write(&Entry::Header(header.clone()));
        let processes = recorder.processes_of(start, cgroups);
        recorder.write(&EntryRef::Start(DumpRef {
            sockets: start,
            processes: &processes,
        }));
        match recorder.failed.take() {
            Some(err) => Err(err).with_context(|| format!("writing {}", path.display())),
            None => Ok(recorder),
        }
    }

    /// One event as the socket table saw it, with its record's cgroup key.
    pub fn event(&mut self, event: &TcpEvent, cgroup: u64) {
        if self.failed.is_some() {
            return;
        }
        for task in [event.owner(), event.closer(), event.actor.as_ref()]
            .into_iter()
            .flatten()
        {
            if let Some(stack) = StackRef::of_task(task) {
                self.stacks.insert(stack);
            }
        }
        if cgroup != 0 {
            self.cgroups.insert(cgroup);
        }
        self.write(&EntryRef::Event {
            e: event,
            k: cgroup,
        });
    }

    /// The end: call sites, cgroups and live births for the replay, then
    /// the end dump `now` (taken at `now_ns`) and the session's counts.
    /// Consumes the recorder; an error says the recording is incomplete.
    pub fn finish(
        mut self,
        pipeline: &mut Pipeline,
        now: &Snapshot,
        now_ns: u64,
        counts: &SessionCounts,
    ) -> Result<()> {
        let processes = self.processes_of(now, pipeline.cgroups.as_mut());
        for ((netns, inode), &record) in pipeline.live_births(now).entries() {
            self.stacks.extend(record.stack);
            self.stacks.extend(record.eof_stack);
            self.write(&Entry::Birth(RecordedBirth {
                netns,
                inode,
                stack: record.stack,
                established_ns: record.established_ns,
                close_wait_ns: record.close_wait_ns,
                eof_stack: record.eof_stack,
            }));
        }
        for stack in std::mem::take(&mut self.stacks) {
            if let Some(site) = pipeline.call_sites.get(Some(stack)) {
                self.write(&Entry::CallSite {
                    pid: stack.pid,
                    stack: stack.stack,
                    site,
                });
            }
        }
        for key in std::mem::take(&mut self.cgroups) {
            self.write(&Entry::Cgroup(cgroup_of(pipeline, key)));
        }
        self.write(&EntryRef::End {
            now_ns,
            dump: DumpRef {
                sockets: now,
                processes: &processes,
            },
            counts,
        });
        let path = self.path;
        if let Some(err) = self.failed {
            return Err(err).with_context(|| {
                format!("writing the recording {}: it is incomplete", path.display())
            });
        }
        self.out
            .finish()
            .with_context(|| format!("writing the recording {}", path.display()))
    }

    /// Whether a write failed (the session goes on; `finish` says so).
    #[must_use]
    pub fn failed(&self) -> Option<&io::Error> {
        self.failed.as_ref()
    }

    /// The cgroup key of every process holding one of `sockets`.
    fn processes_of(
        &mut self,
        sockets: &Snapshot,
        mut cgroups: Option<&mut Cgroups>,
    ) -> Vec<ProcessCgroup> {
        let mut pids: Vec<u32> = sockets
            .sockets
            .iter()
            .flat_map(|socket| socket.holders.iter().map(|holder| holder.pid))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids.into_iter()
            .map(|pid| {
                let cgroup = cgroups.as_mut().map_or(0, |c| c.key_of_pid(pid));
                if cgroup != 0 {
                    self.cgroups.insert(cgroup);
                }
                ProcessCgroup { pid, cgroup }
            })
            .collect()
    }

    fn write(&mut self, line: &impl Serialize) {
        if self.failed.is_some() {
            return;
        }
        self.line.clear();
        let written = serde_json::to_writer(&mut self.line, line)
            .map_err(io::Error::from)
            .and_then(|()| {
                self.line.push(b'\n');
                self.out.writer().write_all(&self.line)
            });
        if let Err(err) = written {
            eprintln!(
                "tcptrace: error: writing the recording {}: {err}; the session goes on, \
                 the recording stops here",
                self.path.display()
            );
            self.failed = Some(err);
        }
    }
}

/// What cgroup `key` stands for, and the session's workload verdict on it.
fn cgroup_of(pipeline: &mut Pipeline, key: u64) -> RecordedCgroup {
    let (labels, v1_path) = match pipeline.cgroups.as_mut() {
        Some(cgroups) => (
            cgroups.containers.labels(key).clone(),
            cgroups.containers.v1_path(key).map(ToOwned::to_owned),
        ),
        None => Default::default(),
    };
    let selected = match (pipeline.filter.by_workload(), pipeline.cgroups.as_mut()) {
        (true, Some(cgroups)) => Some(pipeline.workloads.matches(
            &pipeline.filter,
            key,
            &mut cgroups.containers,
        )),
        _ => None,
    };
    RecordedCgroup {
        key,
        labels,
        v1_path,
        selected,
    }
}
