//! Live session output: lines for people, JSON lines for scripts, CSV for
//! spreadsheets.

mod csv;
pub mod detached;
pub mod fields;
mod json;
mod report_text;
mod text;

use std::io;

pub use csv::CsvLines;
pub use json::JsonLines;
pub use text::{is_unsafe_char, Escaped, TextLines};

use crate::{
    container::ContainerLabels, event::TcpEvent, findings::Report, owner::Owner,
    session::SessionCounts, snapshot::ExistingSocket,
};

/// What is known around an event when it is shown.
pub struct Shown<'a> {
    pub owner: Option<&'a Owner<'a>>,
    /// The names of the owner's workload, when known.
    pub labels: Option<&'a ContainerLabels>,
    /// Wall-clock time of the event.
    pub unix_ns: u128,
    /// The socket's record missed a transition (events were lost): what
    /// it says of the socket's past may be incomplete.
    pub history_incomplete: bool,
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
