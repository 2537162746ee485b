//! A session's sink run by a thread of its own: the session's reader hands
//! over each event with what is shown with it, and the thread writes the
//! lines. Writing them (a JSON line is some 400 bytes, formatted number by
//! number) cost three times what the pipeline did per event, on the one
//! thread that must keep up with the kernel's ring: under load the ring
//! overflowed while that thread was formatting. The reader now only
//! copies an event, so the lines are written on another core, or, on a
//! saturated host, with a scheduler share of their own.
//!
//! As with `detached::DetachedWriter`, a reader of standard output that
//! stops reading never stops the session: events wait in memory up to
//! [`MAX_PENDING_EVENTS`]; beyond that they are dropped from the output
//! and counted, and the session says so on stderr when it ends.

use std::{
    io,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

use smallvec::SmallVec;

use super::{Shown, Sink};
use crate::{
    container::ContainerLabels,
    event::TcpEvent,
    findings::Report,
    owner::{Owner, OwnerSource},
    session::SessionCounts,
    snapshot::ExistingSocket,
};

/// Events allowed to wait for the thread: 64 MiB of them, the memory
/// `detached::MAX_PENDING` allows a writer's bytes.
pub const MAX_PENDING_EVENTS: u64 = 128 * 1024;

/// Events handed over at once: a session's flush hands over what it has,
/// so under load a batch is a drained batch of records.
const BATCH: usize = 4096;

/// An event and what is shown with it, owned: it crosses to the thread.
struct ShownEvent {
    event: TcpEvent,
    owner: Option<OwnerCopy>,
    labels: Option<Arc<ContainerLabels>>,
    unix_ns: u128,
    history_incomplete: bool,
}

/// An `Owner` without borrowing: a comm fits inline.
struct OwnerCopy {
    pid: u32,
    comm: SmallVec<[u8; 16]>,
    source: OwnerSource,
}

/// What the thread is asked to do, in the session's order.
enum Message {
    Start(Vec<ExistingSocket>, usize),
    Existing(ExistingSocket),
    Events(Vec<ShownEvent>),
    Summary(SessionCounts),
    Report(Report),
    Flush,
}

#[derive(Debug, Default)]
struct Shared {
    /// Events handed to the thread and not written yet.
    pending: AtomicU64,
    /// Events dropped: too many were waiting, or the reader is gone.
    dropped: AtomicU64,
    /// The sink failed (the reader closed its end, `EPIPE`).
    gone: AtomicBool,
    /// Every message was handled and the thread ended.
    done: AtomicBool,
}

/// The session's end of the sink.
pub struct DetachedSink {
    batch: Vec<ShownEvent>,
    messages: mpsc::Sender<Message>,
    /// Batches the thread has written, emptied, for reuse: the per-event
    /// path allocates nothing.
    written: mpsc::Receiver<Vec<ShownEvent>>,
    shared: Arc<Shared>,
}

/// What the session asks at its end.
pub struct DetachedSinkStatus {
    shared: Arc<Shared>,
}

/// Starts the thread that runs `sink`.
pub fn spawn(mut sink: Box<dyn Sink + Send>) -> io::Result<(DetachedSink, DetachedSinkStatus)> {
    let (messages, received) = mpsc::channel::<Message>();
    let (return_written, written) = mpsc::channel();
    let shared = Arc::new(Shared::default());
    let theirs = Arc::clone(&shared);
    thread::Builder::new()
        .name("tcptrace-output".to_owned())
        .spawn(move || {
            for message in received {
                let events = match &message {
                    Message::Events(events) => events.len() as u64,
                    _ => 0,
                };
                if !theirs.gone.load(Ordering::Relaxed) && write(sink.as_mut(), &message).is_err() {
                    theirs.gone.store(true, Ordering::Relaxed);
                }
                if theirs.gone.load(Ordering::Relaxed) {
                    theirs.dropped.fetch_add(events, Ordering::Relaxed);
                }
                theirs.pending.fetch_sub(events, Ordering::Relaxed);
                if let Message::Events(mut batch) = message {
                    batch.clear();
                    // Fails only once the session's end is gone.
                    let _ = return_written.send(batch);
                }
            }
            theirs.done.store(true, Ordering::Relaxed);
        })?;
    Ok((
        DetachedSink {
            batch: Vec::with_capacity(BATCH),
            messages,
            written,
            shared: Arc::clone(&shared),
        },
        DetachedSinkStatus { shared },
    ))
}

/// One message, on the thread.
fn write(sink: &mut dyn Sink, message: &Message) -> io::Result<()> {
    match message {
        Message::Start(existing, shown) => sink.start(existing, *shown),
        Message::Existing(socket) => sink.existing(socket),
        Message::Events(events) => events.iter().try_for_each(|shown| {
            let owner = shown.owner.as_ref().map(|o| Owner {
                pid: o.pid,
                // Copied from a `str`.
                comm: String::from_utf8_lossy(&o.comm),
                source: o.source,
            });
            sink.event(
                &shown.event,
                &Shown {
                    owner: owner.as_ref(),
                    labels: shown.labels.as_ref(),
                    unix_ns: shown.unix_ns,
                    history_incomplete: shown.history_incomplete,
                },
            )
        }),
        Message::Summary(summary) => sink.summary(summary),
        Message::Report(report) => sink.report(report),
        Message::Flush => sink.flush(),
    }
}

impl DetachedSink {
    fn gone() -> io::Error {
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            "standard output closed by its reader",
        )
    }

    /// Sends `message`, after the events before it. Never blocks. Fails
    /// once the sink has failed, as a write to a closed pipe does
    /// (`tcptrace trace | head` ends).
    fn send(&mut self, message: Message) -> io::Result<()> {
        self.hand_over_events();
        if self.shared.gone.load(Ordering::Relaxed) {
            return Err(Self::gone());
        }
        // The thread is gone only after a panic, which `gone` reports.
        let _ = self.messages.send(message);
        Ok(())
    }

    /// Hands the waiting events over, or drops them (counted) when too
    /// many wait already.
    fn hand_over_events(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let next = self
            .written
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH));
        let batch = std::mem::replace(&mut self.batch, next);
        let len = batch.len() as u64;
        let shared = &self.shared;
        if shared.pending.load(Ordering::Relaxed) + len > MAX_PENDING_EVENTS {
            shared.dropped.fetch_add(len, Ordering::Relaxed);
            return;
        }
        shared.pending.fetch_add(len, Ordering::Relaxed);
        if self.messages.send(Message::Events(batch)).is_err() {
            shared.pending.fetch_sub(len, Ordering::Relaxed);
            shared.dropped.fetch_add(len, Ordering::Relaxed);
        }
    }
}

impl Sink for DetachedSink {
    fn start(&mut self, existing: &[ExistingSocket], shown_existing: usize) -> io::Result<()> {
        self.send(Message::Start(existing.to_vec(), shown_existing))
    }

    fn existing(&mut self, socket: &ExistingSocket) -> io::Result<()> {
        self.send(Message::Existing(socket.clone()))
    }

    fn event(&mut self, event: &TcpEvent, shown: &Shown) -> io::Result<()> {
        self.batch.push(ShownEvent {
            event: *event,
            owner: shown.owner.map(|owner| OwnerCopy {
                pid: owner.pid,
                comm: SmallVec::from_slice(owner.comm.as_bytes()),
                source: owner.source,
            }),
            labels: shown.labels.cloned(),
            unix_ns: shown.unix_ns,
            history_incomplete: shown.history_incomplete,
        });
        if self.batch.len() >= BATCH {
            self.hand_over_events();
        }
        Ok(())
    }

    fn summary(&mut self, summary: &SessionCounts) -> io::Result<()> {
        self.send(Message::Summary(summary.clone()))
    }

    fn report(&mut self, report: &Report) -> io::Result<()> {
        self.send(Message::Report(report.clone()))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send(Message::Flush)
    }
}

impl DetachedSinkStatus {
    /// Waits up to `limit` for the thread to write everything handed
    /// over (its sink dropped first). Returns whether it did, and the
    /// events dropped from the output.
    #[must_use]
    pub fn settle(&self, limit: Duration) -> (bool, u64) {
        let deadline = Instant::now() + limit;
        while !self.shared.done.load(Ordering::Relaxed) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        (
            self.shared.done.load(Ordering::Relaxed),
            self.shared.dropped.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::{
        borrow::Cow,
        io::Write,
        sync::{Arc, Mutex},
    };

    use tcptrace_common::TcpState;

    use super::*;
    use crate::{
        event::synthetic::{task, Conn},
        output::{detached::tests::Blocked, BufferedLines, JsonLines},
    };

    /// Output kept after the sink is gone.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<u8>>>);

    impl Write for Kept {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A reader that closed its end.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    fn json_to(out: impl Write + Send + 'static) -> Box<dyn Sink + Send> {
        Box::new(JsonLines::new(BufferedLines::new(out)))
    }

    /// The `n`th event of a connection, its owner and labels.
    fn nth_event(n: u64) -> TcpEvent {
        let conn = Conn::active(
            0x1000 + n,
            task(100, "client", 7),
            "10.0.0.1:40000",
            "10.0.0.9:80",
        );
        conn.state(n, TcpState::SynSent, TcpState::Established)
    }

    fn shown<'a>(owner: &'a Owner<'a>, labels: &'a Arc<ContainerLabels>, n: u64) -> Shown<'a> {
        Shown {
            owner: Some(owner),
            labels: Some(labels),
            unix_ns: 1_700_000_000_000_000_000 + u128::from(n),
            history_incomplete: n % 2 == 1,
        }
    }

    #[test]
    fn the_thread_writes_the_lines_the_sink_would_have_written_in_order() {
        let owner = Owner {
            pid: 100,
            comm: Cow::Borrowed("clïent\""),
            source: OwnerSource::Syscall,
        };
        let mut labels = ContainerLabels::EMPTY;
        labels.pod = "cart-1".into();
        let labels = Arc::new(labels);
        let kept = Kept::default();
        let (mut detached, status) = spawn(json_to(kept.clone())).unwrap();
        let mut direct = Vec::new();
        let mut inline = JsonLines::new(&mut direct);
        let counts = SessionCounts::default();
        for sink in [&mut detached as &mut dyn Sink, &mut inline] {
            sink.start(&[], 0).unwrap();
            for n in 0..10_000 {
                sink.event(&nth_event(n), &shown(&owner, &labels, n))
                    .unwrap();
                if n % 3_000 == 0 {
                    sink.flush().unwrap();
                }
            }
            sink.summary(&counts).unwrap();
            sink.flush().unwrap();
        }
        drop(detached);
        assert_eq!(status.settle(Duration::from_secs(10)), (true, 0));
        let written = kept.0.lock().unwrap().clone();
        assert_eq!(written.split(|&b| b == b'\n').count(), 10_003);
        assert!(
            written == direct,
            "the thread's lines differ from the sink's"
        );
    }

    #[test]
    fn a_blocked_reader_never_blocks_the_session_and_drops_are_counted() {
        let owner = Owner {
            pid: 1,
            comm: Cow::Borrowed("x"),
            source: OwnerSource::Listener,
        };
        let labels = Arc::new(ContainerLabels::EMPTY);
        let (mut sink, status) = spawn(json_to(Blocked)).unwrap();
        let started = Instant::now();
        let total = MAX_PENDING_EVENTS + 100_000;
        for n in 0..total {
            sink.event(&nth_event(n), &shown(&owner, &labels, n))
                .unwrap();
        }
        sink.flush().unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        let (done, dropped) = status.settle(Duration::from_millis(50));
        assert!(!done);
        // What could not wait was dropped, and counted.
        let pending = status.shared.pending.load(Ordering::Relaxed);
        assert!(pending <= MAX_PENDING_EVENTS);
        assert!(dropped >= 100_000);
        assert_eq!(pending + dropped, total);
    }

    #[test]
    fn a_closed_reader_ends_the_session_as_a_closed_pipe_does() {
        let (mut sink, status) = spawn(json_to(Closed)).unwrap();
        sink.start(&[], 0).unwrap();
        sink.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            if let Err(err) = sink.flush() {
                break err;
            }
            assert!(
                Instant::now() < deadline,
                "the failure never reached the session"
            );
            thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        drop(sink);
        assert!(status.settle(Duration::from_secs(10)).0);
    }
}
