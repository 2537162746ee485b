//! Live session output: lines for people, JSON lines for scripts, CSV for
//! spreadsheets.

mod csv;
pub mod detached;
pub mod detached_sink;
pub mod fields;
mod json;
mod json_event;
mod line_buffer;
mod report_text;
mod text;

use std::{io, sync::Arc};

pub use csv::CsvLines;
pub use json::JsonLines;
pub use line_buffer::{BufferedLines, LineBuffer};
pub use text::{is_unsafe_char, Escaped, TextLines};

use crate::{
    clock::WallClock, container::ContainerLabels, event::TcpEvent, findings::Report, owner::Owner,
    pipeline::Observed, session::SessionCounts, snapshot::ExistingSocket,
};

/// What is known around an event when it is shown.
pub struct Shown<'a> {
    pub owner: Option<&'a Owner<'a>>,
    /// The names of the owner's workload, when known.
    pub labels: Option<&'a Arc<ContainerLabels>>,
    /// Wall-clock time of the event.
    pub unix_ns: u128,
    /// The socket's record missed a transition (events were lost): what
    /// it says of the socket's past may be incomplete.
    pub history_incomplete: bool,
}

impl<'a> Shown<'a> {
    /// What is shown with an event the pipeline let by, its time told by
    /// `clock` (the session's, or a recording's).
    #[must_use]
    pub fn of(seen: &Observed<'a>, clock: WallClock) -> Self {
        Self {
            owner: seen.owner,
            labels: seen.labels,
            unix_ns: clock.unix_ns(seen.event.ts_ns),
            history_incomplete: seen.record.is_some_and(|r| r.history_incomplete),
        }
    }
}

/// The start of a session's output: how many sockets existed, then each
/// one `is_shown` keeps.
pub fn write_start(
    sink: &mut dyn Sink,
    start: &[ExistingSocket],
    mut is_shown: impl FnMut(&ExistingSocket) -> bool,
) -> io::Result<()> {
    let shown: Vec<&ExistingSocket> = start.iter().filter(|s| is_shown(s)).collect();
    sink.start(start, shown.len())?;
    for socket in shown {
        sink.existing(socket)?;
    }
    Ok(())
}

/// Where a session writes what it sees.
pub trait Sink {
    /// Called once after attaching, before any event.
    fn start(&mut self, existing: &[ExistingSocket], shown_existing: usize) -> io::Result<()>;
    /// A pre-existing socket that passes the filters.
    fn existing(&mut self, socket: &ExistingSocket) -> io::Result<()>;
    /// An event, with what is known around it.
    fn event(&mut self, event: &TcpEvent, shown: &Shown) -> io::Result<()>;
    fn summary(&mut self, summary: &SessionCounts) -> io::Result<()>;
    /// The diagnosis report at the end of a session.
    fn report(&mut self, report: &Report) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}
