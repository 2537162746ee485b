//! blazesym off the reader's thread. The first parse of a binary with
//! debug info (a Go service, a Rust or C++ program built with it) took
//! 120-210 ms here, longer than the event ring holds at full churn, and
//! the reader drains nothing meanwhile. So a thread of its own names file
//! offsets with a blazesym of its own (blazesym is `!Send`: it is made,
//! used and dropped there) and sends the frames back; they fill the
//! symbolizer's (file, offset) cache, and a capture is settled once all of
//! its file offsets are there, without a parse on the reader's thread.
//!
//! The thread gets a duplicate of each file's descriptor with each
//! request, and keeps the few files it parsed last (by device and inode,
//! unique while it holds them), dropping their parsed data when idle,
//! as the reader's symbolizer does.

use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::PathBuf,
    rc::Rc,
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError},
    thread,
    time::{Duration, Instant},
};

use blazesym::{
    helper::ElfResolver,
    symbolize::{
        self as bz, evict,
        source::{Elf, Source},
        Input,
    },
};

use super::{
    files::FileKey,
    frame::{frames_of, Frame},
};

/// Offsets of one open file to name.
pub(super) struct Request {
    /// The caller's number for the answer.
    pub id: u64,
    pub file: File,
    /// How the process names the file (the frames' module).
    pub module: String,
    /// The path it was opened by, for error messages.
    pub opened_via: PathBuf,
    pub offsets: Vec<u64>,
}

/// Frames per offset of a request, in its order, or why there are none.
pub(super) struct Answer {
    pub id: u64,
    pub frames: Result<Vec<Vec<Frame>>, String>,
}

/// The naming thread ended.
#[derive(Debug)]
pub(super) struct ThreadGone;

/// The caller's end.
pub(super) struct Namer {
    requests: Sender<Request>,
    answers: Receiver<Answer>,
}

impl Namer {
    /// Starts the thread; `keep` parsed files at most, each dropped after
    /// `idle` without use.
    pub fn spawn(keep: usize, idle: Duration) -> std::io::Result<Self> {
        let (requests, incoming) = mpsc::channel();
        let (outgoing, answers) = mpsc::channel();
        let (confined, started) = mpsc::channel();
        thread::Builder::new()
            .name("tcptrace-name".to_owned())
            .spawn(move || {
                crate::privileges::confine_this_thread();
                let _ = confined.send(());
                run(&incoming, &outgoing, keep, idle);
            })?;
        // Parsing files other users own needs no more than the daemon
        // keeps: confined before it is asked anything.
        let _ = started.recv();
        Ok(Self { requests, answers })
    }

    /// Sends a request; false when the thread is gone.
    pub fn ask(&self, request: Request) -> bool {
        self.requests.send(request).is_ok()
    }

    /// An answer that came, if any; `Err` when the thread is gone (a
    /// panic on a file it parsed): its requests will never be answered.
    pub fn answer(&self) -> Result<Option<Answer>, ThreadGone> {
        match self.answers.try_recv() {
            Ok(answer) => Ok(Some(answer)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(ThreadGone),
        }
    }
}

/// A file the thread has parsed.
struct Parsed {
    /// Held so that `fd_path` names it.
    _file: File,
    fd_path: PathBuf,
    last_used: Instant,
}

fn run(incoming: &Receiver<Request>, outgoing: &Sender<Answer>, keep: usize, idle: Duration) {
    let mut backend = bz::Symbolizer::new();
    let mut parsed: HashMap<(u64, u64), Parsed> = HashMap::new();
    loop {
        let request = match incoming.recv_timeout(idle) {
            Ok(request) => request,
            Err(RecvTimeoutError::Timeout) => {
                release(&mut backend, &mut parsed, usize::MAX, idle);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let frames = name(
            &mut backend,
            &mut parsed,
            request.file,
            &request.module,
            &request.offsets,
        )
        .map_err(|err| format!("{}: {err}", request.opened_via.display()));
        if outgoing
            .send(Answer {
                id: request.id,
                frames,
            })
            .is_err()
        {
            return;
        }
        release(&mut backend, &mut parsed, keep, idle);
    }
}

/// Frames at `offsets` of `file`, parsing it first unless it is parsed.
fn name(
    backend: &mut bz::Symbolizer,
    parsed: &mut HashMap<(u64, u64), Parsed>,
    file: File,
    module: &str,
    offsets: &[u64],
) -> Result<Vec<Vec<Frame>>, String> {
    let meta = file.metadata().map_err(|err| err.to_string())?;
    let entry = match parsed.entry((meta.dev(), meta.ino())) {
        Entry::Occupied(entry) => entry.into_mut(),
        Entry::Vacant(entry) => {
            let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            // Our own resolver rather than blazesym's file cache: the debug
            // link and .dwp files it opens belong to it and go with it.
            let resolver = ElfResolver::open(&fd_path).map_err(|err| format!("{err:#}"))?;
            backend
                .register_elf_resolver(&fd_path, Rc::new(resolver))
                .map_err(|err| format!("{err:#}"))?;
            entry.insert(Parsed {
                _file: file,
                fd_path,
                last_used: Instant::now(),
            })
        }
    };
    entry.last_used = Instant::now();
    let symbolized = backend
        .symbolize(
            &Source::Elf(Elf::new(&entry.fd_path)),
            Input::FileOffset(offsets),
        )
        .map_err(|err| format!("{err:#}"))?;
    Ok(symbolized
        .iter()
        .map(|s| frames_of(s, Some(module)).to_vec())
        .collect())
}

/// Drops the parsed data of files idle for `idle`, and of the least
/// recently used beyond `keep`.
fn release(
    backend: &mut bz::Symbolizer,
    parsed: &mut HashMap<(u64, u64), Parsed>,
    keep: usize,
    idle: Duration,
) {
    let now = Instant::now();
    let mut by_use: Vec<((u64, u64), Instant)> =
        parsed.iter().map(|(k, p)| (*k, p.last_used)).collect();
    by_use.sort_unstable_by_key(|&(_, used)| std::cmp::Reverse(used));
    for (i, (inode, used)) in by_use.into_iter().enumerate() {
        if i >= keep || now - used >= idle {
            if let Some(gone) = parsed.remove(&inode) {
                // "Not cached" is not an error.
                let _ = backend.evict(&evict::Elf::new(&gone.fd_path).into());
            }
        }
    }
}

/// What the reader's symbolizer keeps about the naming thread: its
/// requests in flight, by number and by (file, offset).
pub(super) struct Naming {
    pub namer: Namer,
    asked: HashMap<u64, (FileKey, Vec<u64>)>,
    in_flight: HashSet<(FileKey, u64)>,
    /// Offsets the thread could not name: left to the reader's own parse,
    /// which says why.
    unnamed: HashSet<(FileKey, u64)>,
    next_id: u64,
}

/// Offsets left to the reader at most (then forgotten: asked again).
const MAX_UNNAMED: usize = 4096;

impl Naming {
    pub fn new(namer: Namer) -> Self {
        Self {
            namer,
            asked: HashMap::new(),
            in_flight: HashSet::new(),
            unnamed: HashSet::new(),
            next_id: 0,
        }
    }

    /// Whether `(key, offset)` is neither asked nor given up on.
    pub fn to_ask(&self, key: &FileKey, offset: u64) -> bool {
        let entry = (key.clone(), offset);
        !self.in_flight.contains(&entry) && !self.unnamed.contains(&entry)
    }

    /// Whether `(key, offset)` was asked and is not answered yet.
    pub fn is_in_flight(&self, key: &FileKey, offset: u64) -> bool {
        self.in_flight.contains(&(key.clone(), offset))
    }

    /// Asks for `offsets` of the open file `key`; false when the thread is
    /// gone.
    pub fn ask(
        &mut self,
        key: FileKey,
        file: File,
        module: String,
        opened_via: PathBuf,
        offsets: Vec<u64>,
    ) -> bool {
        self.next_id += 1;
        let sent = self.namer.ask(Request {
            id: self.next_id,
            file,
            module,
            opened_via,
            offsets: offsets.clone(),
        });
        if sent {
            for &offset in &offsets {
                self.in_flight.insert((key.clone(), offset));
            }
            self.asked.insert(self.next_id, (key, offsets));
        }
        sent
    }

    /// The (file, offset, frames) of an answer; what it could not name is
    /// left to the reader.
    pub fn take(&mut self, answer: Answer) -> Vec<(FileKey, u64, Vec<Frame>)> {
        let Some((key, offsets)) = self.asked.remove(&answer.id) else {
            return Vec::new();
        };
        for &offset in &offsets {
            self.in_flight.remove(&(key.clone(), offset));
        }
        let Ok(frames) = answer.frames else {
            if self.unnamed.len() >= MAX_UNNAMED {
                self.unnamed.clear();
            }
            self.unnamed
                .extend(offsets.into_iter().map(|offset| (key.clone(), offset)));
            return Vec::new();
        };
        offsets
            .into_iter()
            .zip(frames)
            .map(|(offset, frames)| (key.clone(), offset, frames))
            .collect()
    }
}
