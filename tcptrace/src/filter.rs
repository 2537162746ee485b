//! Which events a session shows: by process, command or port.

use crate::{event::TcpEvent, owner::Owner};

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub ports: Vec<u16>,
}

impl Filter {
    /// An event passes when every given criterion matches: its owner or the
    /// task acting on the socket has one of the pids / comms, and one of its
    /// ports is listed.
    #[must_use]
    pub fn matches(&self, event: &TcpEvent, owner: Option<&Owner>) -> bool {
        let actor = event.actor.as_ref();
        let pid_ok = self.pids.is_empty()
            || owner.is_some_and(|o| self.pids.contains(&o.pid))
            || actor.is_some_and(|a| self.pids.contains(&a.tgid));
        let comm_ok = self.comms.is_empty()
            || owner.is_some_and(|o| self.comms.iter().any(|c| *c == o.comm))
            || actor.is_some_and(|a| {
                let comm = crate::event::comm_str(&a.comm);
                self.comms.iter().any(|c| *c == comm)
            });
        let port_ok = self.ports.is_empty()
            || self.ports.contains(&event.local.port())
            || self.ports.contains(&event.remote.port());
        pid_ok && comm_ok && port_ok
    }
}
