//! Two hosts in network namespaces the test creates, joined by a veth
//! pair, with nftables rules to make a peer vanish. Everything is removed
//! in `Drop`, also when the test fails.

use std::process::Command;

/// `nft ARGS` inside namespace `ns` (nftables rules live and die with it).
pub fn nft(ns: &str, args: &[&str]) {
    let mut command = vec!["netns", "exec", ns, "nft"];
    command.extend_from_slice(args);
    sh("ip", &command);
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hosts `a` and `b`, at `a_addr` and `b_addr`, on one veth link.
pub struct HostPair {
    pub a: String,
    pub b: String,
    pub a_addr: &'static str,
    pub b_addr: &'static str,
}

impl HostPair {
    /// Creates `<tag>-a` and `<tag>-b`. The addresses exist only inside
    /// these namespaces; no traffic leaves them.
    #[must_use]
    pub fn new(tag: &str) -> Self {
        let pair = Self {
            a: format!("{tag}-a"),
            b: format!("{tag}-b"),
            a_addr: "10.231.0.1",
            b_addr: "10.231.0.2",
        };
        pair.remove(); // leftovers of an earlier, killed run
        sh("ip", &["netns", "add", &pair.a]);
        sh("ip", &["netns", "add", &pair.b]);
        sh(
            "ip",
            &[
                "-n", &pair.a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0",
                "netns", &pair.b,
            ],
        );
        for (ns, addr) in [(&pair.a, pair.a_addr), (&pair.b, pair.b_addr)] {
            sh(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{addr}/24"),
                    "dev",
                    "veth0",
                ],
            );
            sh("ip", &["-n", ns, "link", "set", "veth0", "up"]);
            sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// Sets a sysctl inside one namespace (e.g. `net.ipv4.tcp_retries2`).
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) {
        sh(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-q",
                "-w",
                &format!("{key}={value}"),
            ],
        );
    }

    /// Drops every packet `ns` receives: its peer has vanished.
    pub fn drop_ingress(&self, ns: &str) {
        nft(ns, &["add", "table", "inet", "tcptrace_test"]);
        nft(
            ns,
            &[
                "add",
                "chain",
                "inet",
                "tcptrace_test",
                "input",
                "{ type filter hook input priority 0 ; policy drop ; }",
            ],
        );
    }

    /// Undoes `drop_ingress`, if it was done: `ns` hears its peer again.
    /// Never fails, so that a fixture's `Drop` may call it.
    pub fn allow_ingress(&self, ns: &str) {
        let _ = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "delete", "table", "inet"])
            .arg("tcptrace_test")
            .output();
    }

    /// Inode number of a namespace, as tcptrace reports it.
    #[must_use]
    pub fn inode(&self, ns: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{ns}"))
            .expect("netns file")
            .ino()
    }

    fn remove(&self) {
        for ns in [&self.a, &self.b] {
            // Namespaces own their nft tables and veth ends: deleting the
            // namespace removes them too.
            let _ = Command::new("ip").args(["netns", "delete", ns]).output();
        }
    }
}

impl Drop for HostPair {
    fn drop(&mut self) {
        self.remove();
    }
}
