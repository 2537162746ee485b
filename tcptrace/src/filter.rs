//! Which events a session shows: by process, command or port.

use crate::{event::TcpEvent, owner::Owner, snapshot::ExistingSocket, table::SocketRecord};

/// The bytes of a process name the kernel keeps (`TASK_COMM_LEN` less the
/// terminating NUL): `comm` of a longer program name is its first 15.
pub const COMM_BYTES: usize = tcptrace_common::TASK_COMM_LEN - 1;

/// `--comm` names as the kernel keeps them: a name longer than 15 bytes
/// would match nothing, so it is cut (at a character boundary) and a
/// warning says so.
#[must_use]
pub fn kernel_comms(names: Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut warnings = Vec::new();
    let names = names
        .into_iter()
        .map(|name| {
            if name.len() <= COMM_BYTES {
                return name;
            }
            let mut end = COMM_BYTES;
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            let kept = name[..end].to_owned();
            warnings.push(format!(
                "--comm {name}: the kernel keeps the first {COMM_BYTES} bytes of a process name; \
                 matching `{kept}`"
            ));
            kept
        })
        .collect();
    (names, warnings)
}

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
        pid_ok && comm_ok && self.matches_ports(event.local.port(), event.remote.port())
    }

    /// The process criteria alone, for a task known by tgid and name.
    #[must_use]
    pub fn matches_process(&self, tgid: u32, comm: &str) -> bool {
        (self.pids.is_empty() || self.pids.contains(&tgid))
            && (self.comms.is_empty() || self.comms.iter().any(|c| c == comm))
    }

    /// The same test for a socket from a `sock_diag` dump, by its holders.
    #[must_use]
    pub fn matches_existing(&self, socket: &ExistingSocket) -> bool {
        let holders = &socket.holders;
        let pid_ok = self.pids.is_empty() || holders.iter().any(|h| self.pids.contains(&h.pid));
        let comm_ok = self.comms.is_empty()
            || holders
                .iter()
                .any(|h| self.comms.iter().any(|c| **c == *h.comm));
        pid_ok && comm_ok && self.matches_ports(socket.local.port(), socket.remote.port())
    }

    /// The same test for a traced socket, by its owner and closer.
    #[must_use]
    pub fn matches_record(&self, record: &SocketRecord) -> bool {
        let processes = [record.owner, record.closer];
        let pid_ok = self.pids.is_empty()
            || processes
                .iter()
                .flatten()
                .any(|p| self.pids.contains(&p.pid));
        let comm_ok = self.comms.is_empty()
            || processes
                .iter()
                .flatten()
                .any(|p| self.comms.iter().any(|c| *c == p.comm()));
        pid_ok && comm_ok && self.matches_ports(record.local.port(), record.remote.port())
    }

    /// Only the port criterion (sockets without an owner, like `TIME_WAIT`).
    #[must_use]
    pub fn matches_ports(&self, local: u16, remote: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&local) || self.ports.contains(&remote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_comm_names_are_cut_as_the_kernel_cuts_them() {
        let (names, warnings) = kernel_comms(vec![
            "nginx".to_owned(),
            "kube-controller-manager".to_owned(),
            "ééééééééé".to_owned(), // 18 bytes: cut at a char boundary
        ]);
        assert_eq!(names, ["nginx", "kube-controller", "ééééééé"]);
        assert_eq!(warnings.len(), 2);
        assert!(
            warnings[0].contains("matching `kube-controller`"),
            "{}",
            warnings[0]
        );
    }
}
