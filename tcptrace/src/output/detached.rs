//! Standard output written by a thread of its own, so that a reader that
//! stops reading (`tcptrace trace --duration 5s | sleep 30`, a paused
//! terminal) never stops the session: events keep draining, `--duration`
//! and signals are honoured, and the kernel's ring buffer does not fill
//! behind a blocked `write`. Output waits in memory up to
//! [`MAX_PENDING`]; beyond that it is dropped and counted, and the session
//! says so on stderr when it ends.

use std::{
    io::{self, Write},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

/// Output allowed to wait for a slow reader.
pub const MAX_PENDING: u64 = 64 * 1024 * 1024;

#[derive(Debug, Default)]
struct Shared {
    /// Bytes handed to the thread and not written yet.
    pending: AtomicU64,
    /// Bytes dropped: more than `MAX_PENDING` were waiting, or the reader
    /// is gone.
    dropped: AtomicU64,
    /// The reader closed its end (`EPIPE`).
    gone: AtomicBool,
}

/// The writing end: buffers until `flush`, then hands the batch over.
pub struct DetachedWriter {
    buffer: Vec<u8>,
    batches: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
}

/// What the session asks at its end.
pub struct DetachedStatus {
    shared: Arc<Shared>,
}

/// Starts the thread that writes to `out`.
pub fn spawn(mut out: impl Write + Send + 'static) -> io::Result<(DetachedWriter, DetachedStatus)> {
    let (batches, received) = mpsc::channel::<Vec<u8>>();
    let shared = Arc::new(Shared::default());
    let theirs = Arc::clone(&shared);
    thread::Builder::new()
        .name("tcptrace-stdout".to_owned())
        .spawn(move || {
            for batch in received {
                let len = batch.len() as u64;
                if !theirs.gone.load(Ordering::Relaxed)
                    && out.write_all(&batch).and_then(|()| out.flush()).is_err()
                {
                    theirs.gone.store(true, Ordering::Relaxed);
                }
                if theirs.gone.load(Ordering::Relaxed) {
                    theirs.dropped.fetch_add(len, Ordering::Relaxed);
                }
                theirs.pending.fetch_sub(len, Ordering::Relaxed);
            }
        })?;
    Ok((
        DetachedWriter {
            buffer: Vec::with_capacity(64 * 1024),
            batches,
            shared: Arc::clone(&shared),
        },
        DetachedStatus { shared },
    ))
}

/// A batch this large goes to the thread at the next line's end, flushed
/// or not: a session under load may write for a long time between flushes,
/// and a batch larger than [`MAX_PENDING`] would be dropped whole.
pub const HANDOVER_BYTES: usize = 256 * 1024;

impl DetachedWriter {
    /// Hands the batch over once it is large and ends a line (a dropped
    /// batch must not cut a line in two).
    #[inline]
    fn hand_over_if_large(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.buffer.len() >= HANDOVER_BYTES && bytes.ends_with(b"\n") {
            self.flush()?;
        }
        Ok(())
    }
}

impl Write for DetachedWriter {
    // Inlined into the serializers, which write a line in many small
    // pieces: a call per piece cost a tenth of `trace --json` under churn.
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        self.hand_over_if_large(bytes)?;
        Ok(bytes.len())
    }

    #[inline]
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buffer.extend_from_slice(bytes);
        self.hand_over_if_large(bytes)
    }

    /// Hands the batch to the thread, or drops it (counted) when too much
    /// is waiting already. Never blocks. Fails once the reader is gone, as
    /// a write to a closed pipe does (`tcptrace trace | head` ends).
    fn flush(&mut self) -> io::Result<()> {
        let shared = &self.shared;
        if shared.gone.load(Ordering::Relaxed) {
            self.buffer.clear();
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "standard output closed by its reader",
            ));
        }
        if self.buffer.is_empty() {
            return Ok(());
        }
        // The next batch starts as large as this one was: growing an empty
        // buffer again by doubling copied every batch several times.
        let capacity = self
            .buffer
            .len()
            .clamp(64 * 1024, HANDOVER_BYTES + 64 * 1024);
        let batch = std::mem::replace(&mut self.buffer, Vec::with_capacity(capacity));
        let len = batch.len() as u64;
        if shared.pending.load(Ordering::Relaxed) + len > MAX_PENDING {
            shared.dropped.fetch_add(len, Ordering::Relaxed);
            return Ok(());
        }
        shared.pending.fetch_add(len, Ordering::Relaxed);
        if self.batches.send(batch).is_err() {
            shared.pending.fetch_sub(len, Ordering::Relaxed);
            shared.dropped.fetch_add(len, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl DetachedStatus {
    /// Waits up to `limit` for everything handed over to be written.
    /// Returns the bytes still waiting (0: all written) and those dropped.
    #[must_use]
    pub fn settle(&self, limit: Duration) -> (u64, u64) {
        let deadline = Instant::now() + limit;
        while self.shared.pending.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        (
            self.shared.pending.load(Ordering::Relaxed),
            self.shared.dropped.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A reader that never reads: writes block for an hour.
    pub(in crate::output) struct Blocked;

    impl Write for Blocked {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            thread::sleep(Duration::from_secs(3600));
            Ok(0)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_reader_never_blocks_the_writer() {
        let (mut writer, status) = spawn(Blocked).unwrap();
        let started = Instant::now();
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..100 {
            writer.write_all(&line).unwrap();
            writer.flush().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        let (pending, dropped) = status.settle(Duration::from_millis(50));
        // 64 MiB wait; the rest was dropped, and counted.
        assert_eq!(pending, MAX_PENDING);
        assert_eq!(dropped, 100 * 1024 * 1024 - MAX_PENDING);
    }

    /// A session under load writes for a long time between flushes: its
    /// output still goes out in bounded batches (one larger than
    /// `MAX_PENDING` was dropped whole: `trace --json > file` under churn
    /// kept 0.3 % of its lines), each ending a line.
    #[test]
    fn long_output_between_flushes_goes_out_in_whole_lines() {
        let path = std::env::temp_dir().join(format!("tcptrace-batches-{}", std::process::id()));
        let (mut writer, status) = spawn(std::fs::File::create(&path).unwrap()).unwrap();
        let piece = [b'y'; 100];
        for i in 0..20_000 {
            // A line in pieces, as the serializers write it.
            for _ in 0..5 {
                writer.write_all(&piece).unwrap();
            }
            writeln!(writer, " {i}").unwrap();
            assert!(writer.buffer.len() < HANDOVER_BYTES + 600);
        }
        writer.flush().unwrap();
        assert_eq!(status.settle(Duration::from_secs(10)), (0, 0));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let numbers: Vec<usize> = text
            .lines()
            .map(|line| line.rsplit_once(' ').unwrap().1.parse().unwrap())
            .collect();
        assert_eq!(numbers, (0..20_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_reader_gets_everything_in_order() {
        let (file, path) = {
            let path =
                std::env::temp_dir().join(format!("tcptrace-detached-{}", std::process::id()));
            (std::fs::File::create(&path).unwrap(), path)
        };
        let (mut writer, status) = spawn(file).unwrap();
        for i in 0..1000 {
            writeln!(writer, "line {i}").unwrap();
            if i % 10 == 0 {
                writer.flush().unwrap();
            }
        }
        writer.flush().unwrap();
        assert_eq!(status.settle(Duration::from_secs(5)), (0, 0));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let expected: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
        assert_eq!(lines, expected);
    }
}
