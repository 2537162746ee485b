//! Diagnoses: each aggregates what the socket table tells it, per flow,
//! socket group or peer; `crate::findings` turns them into answers.

pub mod closewait;
pub mod deadpeer;
pub mod flows;
pub mod fold;
pub mod idle;
pub mod lost;
pub mod ports;
pub mod reconnect;
#[cfg(test)]
mod tests;

use crate::{event::TcpEvent, table::SocketRecord};

#[derive(Default)]
pub struct Diagnoses {
    pub flows: flows::Flows,
    pub dead_peers: deadpeer::DeadPeers,
    pub lost: lost::LostConnections,
}

impl Diagnoses {
    /// An event on a socket that is still alive after it.
    pub fn on_event(&mut self, event: &TcpEvent, record: &SocketRecord) {
        self.flows.on_event(event, record);
    }

    /// A socket's final record, with the event that closed it.
    pub fn on_closed(&mut self, record: &SocketRecord, event: &TcpEvent) {
        self.flows.on_closed(record, event);
        self.dead_peers.on_closed(record, event);
        self.lost.on_closed(record, event);
    }
}
