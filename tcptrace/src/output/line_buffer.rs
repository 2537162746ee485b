//! Output that waits in memory before it is written, with its buffer open
//! to the sink: an event's JSON line is appended where it will be written
//! from, not built elsewhere and copied there. Under churn that copy was
//! a seventh of a `trace --json` session's reader thread, the one thread
//! that must keep up with the kernel.

use std::io::{self, Write};

/// A writer whose bytes collect in a buffer a sink may append to.
pub trait LineBuffer: Write {
    /// The bytes not passed on yet. Append whole lines only, then call
    /// `line_appended`.
    fn pending(&mut self) -> &mut Vec<u8>;

    /// A line was appended: the writer passes its bytes on when enough
    /// of them wait.
    fn line_appended(&mut self) -> io::Result<()>;
}

/// Bytes kept in memory only (tests, fuzzing).
impl LineBuffer for Vec<u8> {
    fn pending(&mut self) -> &mut Vec<u8> {
        self
    }

    fn line_appended(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: LineBuffer + ?Sized> LineBuffer for &mut T {
    fn pending(&mut self) -> &mut Vec<u8> {
        (**self).pending()
    }

    fn line_appended(&mut self) -> io::Result<()> {
        (**self).line_appended()
    }
}

/// Any writer with a buffer in front, written out `WRITE_BYTES` at a time
/// and when flushed or dropped. `std::io::BufWriter` does the same but
/// keeps its buffer to itself.
pub struct BufferedLines<W: Write> {
    out: W,
    pending: Vec<u8>,
}

/// See `BufferedLines`.
const WRITE_BYTES: usize = 64 * 1024;

impl<W: Write> BufferedLines<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            pending: Vec::with_capacity(WRITE_BYTES + 4096),
        }
    }

    fn write_pending(&mut self) -> io::Result<()> {
        let written = self.out.write_all(&self.pending);
        self.pending.clear();
        written
    }
}

impl<W: Write> Write for BufferedLines<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        self.line_appended()?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.out.flush()
    }
}

impl<W: Write> LineBuffer for BufferedLines<W> {
    fn pending(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    fn line_appended(&mut self) -> io::Result<()> {
        if self.pending.len() >= WRITE_BYTES {
            self.write_pending()?;
        }
        Ok(())
    }
}

impl<W: Write> Drop for BufferedLines<W> {
    /// Writes what is left, as `BufWriter` does; an error here has no one
    /// to go to.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that records the size of every write it gets.
    #[derive(Default)]
    struct Writes(Vec<usize>, Vec<u8>);

    impl Write for &mut Writes {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.push(bytes.len());
            self.1.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_go_out_in_large_writes_and_all_of_them_when_dropped() {
        let mut writes = Writes::default();
        {
            let mut out = BufferedLines::new(&mut writes);
            for i in 0..10_000 {
                let line = out.pending();
                line.extend_from_slice(format!("line {i:05}").as_bytes());
                line.push(b'\n');
                out.line_appended().unwrap();
            }
            writeln!(out, "last").unwrap();
        }
        // 10,000 lines of 11 bytes, then 5: one write per 64 KiB, and the
        // rest at the drop.
        let total = 10_000 * 11 + 5;
        assert_eq!(writes.1.len(), total);
        assert_eq!(writes.0.len(), total / WRITE_BYTES + 1);
        assert!(writes.0[..writes.0.len() - 1]
            .iter()
            .all(|&n| (WRITE_BYTES..WRITE_BYTES + 11).contains(&n)));
        let text = String::from_utf8(writes.1).unwrap();
        assert_eq!(text.lines().next(), Some("line 00000"));
        assert_eq!(text.lines().nth(9_999), Some("line 09999"));
        assert_eq!(text.lines().last(), Some("last"));
    }
}
