//! Live lines as CSV (`trace -o csv`), one row per event with the columns
//! `--fields` names (every field by default), for spreadsheets and
//! `xsv`/`mlr`. Standard output stays one table: the summary and the
//! report at the end go to the `notes` writer (standard error) as text.

use std::{
    fmt::Write as _,
    io::{self, Write},
};

use super::{
    fields::{EventValue, ExistingValue, Field},
    Shown, Sink, TextLines,
};
use crate::{event::TcpEvent, findings::Report, session::SessionCounts, snapshot::ExistingSocket};

pub struct CsvLines<W: Write, N: Write> {
    rows: csv::Writer<W>,
    fields: Vec<Field>,
    /// Each value is formatted here first: reused, so the per-event path
    /// does not allocate once it has grown.
    scratch: String,
    notes: TextLines<N>,
}

impl<W: Write, N: Write> CsvLines<W, N> {
    pub fn new(out: W, fields: Vec<Field>, notes: N) -> Self {
        Self {
            rows: csv::WriterBuilder::new().flexible(false).from_writer(out),
            fields,
            scratch: String::with_capacity(256),
            notes: TextLines::new(notes),
        }
    }

    fn row<V: std::fmt::Display>(&mut self, value: impl Fn(Field) -> V) -> io::Result<()> {
        for &field in &self.fields {
            self.scratch.clear();
            // Writing into a String cannot fail.
            let _ = write!(self.scratch, "{}", value(field));
            self.rows.write_field(self.scratch.as_str())?;
        }
        self.rows.write_record(None::<&[u8]>)?;
        Ok(())
    }
}

impl<W: Write, N: Write> Sink for CsvLines<W, N> {
    fn start(&mut self, _existing: &[ExistingSocket], _shown: usize) -> io::Result<()> {
        self.row(Field::name)
    }

    fn existing(&mut self, socket: &ExistingSocket) -> io::Result<()> {
        self.row(|field| ExistingValue { field, socket })
    }

    fn event(&mut self, event: &TcpEvent, shown: &Shown) -> io::Result<()> {
        self.row(|field| EventValue {
            field,
            event,
            shown,
        })
    }

    fn summary(&mut self, summary: &SessionCounts) -> io::Result<()> {
        self.rows.flush()?;
        self.notes.summary(summary)
    }

    fn report(&mut self, report: &Report) -> io::Result<()> {
        self.rows.flush()?;
        self.notes.report(report)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.rows.flush()?;
        self.notes.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use tcptrace_common::TcpState;

    use super::*;
    use crate::{
        event::synthetic::{task, Conn, MS},
        output::fields::{CSV_DEFAULT, TEXT_DEFAULT},
        owner::{Owner, OwnerSource},
    };

    fn written(sink: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        sink(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_what_needs_it_and_text_lines_end_without_blanks() {
        let owner_task = task(42, "a,b\"c", 0);
        let conn = Conn::active(0xabc, owner_task, "10.0.0.1:40000", "10.0.0.2:80");
        let mut event = conn.state(5 * MS, TcpState::SynSent, TcpState::Established);
        event.in_state_ns = Some(3 * MS);
        let owner = Owner {
            pid: 42,
            comm: Cow::Borrowed("a,b\"c"),
            source: OwnerSource::Syscall,
        };
        let shown = Shown {
            owner: Some(&owner),
            labels: None,
            unix_ns: 1_796_137_779_193_036_000,
            history_incomplete: false,
        };
        let csv = written(|out| {
            let mut sink = CsvLines::new(out, CSV_DEFAULT.to_vec(), io::sink());
            sink.start(&[], 0).unwrap();
            sink.event(&event, &shown).unwrap();
            sink.flush().unwrap();
        });
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("timestamp,pid,comm,local,remote,event,in_old,by,netns,cgroup,namespace,pod,container,retransmits,error,sock")
        );
        assert_eq!(
            lines.next(),
            Some("1796137779.193036,42,\"a,b\"\"c\",10.0.0.1:40000,10.0.0.2:80,SYN_SENT -> ESTABLISHED,3.0ms,,0,0,,,,0,,0xabc")
        );

        let text = written(|out| {
            let mut sink = TextLines::with_fields(
                out,
                vec![Field::Comm, Field::Event, Field::By, Field::Error],
            );
            sink.event(&event, &shown).unwrap();
        });
        assert_eq!(text, "a,b\"c            SYN_SENT -> ESTABLISHED\n");
        let default = written(|out| {
            TextLines::with_fields(out, TEXT_DEFAULT.to_vec())
                .event(&event, &shown)
                .unwrap();
        });
        assert!(
            default.starts_with("15:09:39.193036      42 a,b\"c"),
            "{default}"
        );
        assert!(
            default.ends_with("SYN_SENT -> ESTABLISHED           3.0ms\n"),
            "{default:?}"
        );
    }
}
