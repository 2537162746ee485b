//! Reading a recording line by line, plain or gzip-compressed, counting
//! the lines that do not parse instead of giving up on the rest.

use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;

use super::{Entry, Header, FORMAT, FORMAT_VERSION};
use crate::output::Escaped;

/// How an event line starts (the recorder writes no spaces): the first
/// pass skips events without parsing them.
const EVENT_PREFIX: &str = "{\"event\":";

pub struct Reader {
    path: PathBuf,
    lines: Box<dyn BufRead>,
    line: String,
    number: u64,
    pub unreadable: Unreadable,
}

/// Lines that did not parse: how many, and the first one's place and error
/// (which may quote the line: escape it before showing it).
#[derive(Debug, Default)]
pub struct Unreadable {
    pub lines: u64,
    pub first: Option<String>,
}

/// What a line held.
pub enum Line<T> {
    Parsed(T),
    /// An event line, when events are skipped.
    Event,
}

impl Reader {
    /// Opens `path` and checks its header.
    pub fn open(path: &Path) -> Result<(Self, Header)> {
        let mut file = BufReader::new(
            File::open(path)
                .with_context(|| format!("opening the recording {}", path.display()))?,
        );
        let gzip = file
            .fill_buf()
            .with_context(|| format!("reading {}", path.display()))?
            .starts_with(&[0x1f, 0x8b]);
        let lines: Box<dyn BufRead> = if gzip {
            Box::new(BufReader::new(flate2::bufread::MultiGzDecoder::new(file)))
        } else {
            Box::new(file)
        };
        let mut reader = Self {
            path: path.to_owned(),
            lines,
            line: String::new(),
            number: 0,
            unreadable: Unreadable::default(),
        };
        let not_one = || {
            format!(
                "{} is not a tcptrace recording (`tcptrace trace --write FILE` makes one)",
                path.display()
            )
        };
        let header = match reader.next_raw()? {
            Some(line) => match serde_json::from_str::<Entry>(line) {
                Ok(Entry::Header(header)) if header.format == FORMAT => header,
                _ => bail!(not_one()),
            },
            None => bail!(not_one()),
        };
        if header.version > FORMAT_VERSION {
            bail!(
                "{} is a recording of format {} (tcptrace {}); this tcptrace ({}) reads formats \
                 up to {FORMAT_VERSION}: replay it with a newer tcptrace",
                path.display(),
                header.version,
                Escaped(&header.tcptrace),
                env!("CARGO_PKG_VERSION"),
            );
        }
        Ok((reader, header))
    }

    /// The next line, parsed as `T`; event lines are skipped unparsed
    /// when `skip_events`. Lines that do not parse are counted and passed
    /// over.
    pub fn next<T: DeserializeOwned>(&mut self, skip_events: bool) -> Result<Option<Line<T>>> {
        loop {
            let number = self.number + 1;
            let Some(line) = self.next_raw()? else {
                return Ok(None);
            };
            if skip_events && line.starts_with(EVENT_PREFIX) {
                return Ok(Some(Line::Event));
            }
            match serde_json::from_str(line) {
                Ok(parsed) => return Ok(Some(Line::Parsed(parsed))),
                Err(err) => {
                    self.unreadable.lines += 1;
                    self.unreadable
                        .first
                        .get_or_insert_with(|| format!("line {number}: {err}"));
                }
            }
        }
    }

    fn next_raw(&mut self) -> Result<Option<&str>> {
        self.line.clear();
        let read = self.lines.read_line(&mut self.line);
        match read {
            Ok(0) => Ok(None),
            Ok(_) => {
                self.number += 1;
                Ok(Some(self.line.trim_end()))
            }
            // A gzip stream cut short: the end of what was written.
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(err) if err.kind() == io::ErrorKind::InvalidData => {
                self.unreadable.lines += 1;
                self.unreadable
                    .first
                    .get_or_insert_with(|| format!("after line {}: {err}", self.number));
                Ok(None)
            }
            Err(err) => Err(err).with_context(|| format!("reading {}", self.path.display())),
        }
    }
}
