//! Live session output: lines for people or JSON lines for scripts.

pub mod detached;
mod json;
mod report_text;
mod text;

use std::io;

pub use json::JsonLines;
pub use text::{is_unsafe_char, Escaped, TextLines};

use crate::{
    container::ContainerLabels, event::TcpEvent, findings::Report, owner::Owner,
    session::SessionCounts, snapshot::ExistingSocket,
};

/// Where a session writes what it sees.
pub trait Sink {
    /// Called once after attaching, before any event.
    fn start(&mut self, existing: &[ExistingSocket], shown_existing: usize) -> io::Result<()>;
    /// A pre-existing socket that passes the filters.
    fn existing(&mut self, socket: &ExistingSocket) -> io::Result<()>;
    /// An event, with the names of its owner's workload when known.
    fn event(
        &mut self,
        event: &TcpEvent,
        owner: Option<&Owner>,
        labels: Option<&ContainerLabels>,
        unix_ns: u128,
    ) -> io::Result<()>;
    fn summary(&mut self, summary: &SessionCounts) -> io::Result<()>;
    /// The diagnosis report at the end of a session.
    fn report(&mut self, report: &Report) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}
