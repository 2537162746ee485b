//! Debian's redis-server inside a network namespace the test created, with
//! no persistence, killed in `Drop`; and `redis-benchmark` and `redis-cli`
//! driven against it from another namespace.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use crate::{programs::shell_in, Workload};

/// `redis-server` listening on `addr:port` in `netns` (no RDB snapshots, no
/// append-only file, nothing written anywhere). Killed, with its threads,
/// when dropped (also when the test fails).
pub struct Redis {
    server: Workload,
    pub port: u16,
}

impl Redis {
    /// Starts the server and waits (bounded) until it listens.
    #[must_use]
    pub fn start(netns: &str, addr: &str, port: u16) -> Self {
        let server = Workload::spawn_command(Command::new("ip").args([
            "netns",
            "exec",
            netns,
            "redis-server",
            "--bind",
            addr,
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--dir",
            "/tmp",
            "--logfile",
            "",
            "--maxclients",
            "1000",
        ]));
        let redis = Self { server, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !listens(netns, port) {
            assert!(
                Instant::now() < deadline,
                "redis-server {} did not listen on {addr}:{port} in {netns} within 20 s",
                redis.pid()
            );
            thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }
}

/// Whether something listens on TCP `port` in `netns` (`ss`, iproute2).
fn listens(netns: &str, port: u16) -> bool {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "ss", "-Htln"])
        .arg(format!("sport = :{port}"))
        .output()
        .expect("run ss (iproute2)");
    out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// `redis-cli SUBSCRIBE channel` against `host:port` from `netns`, once
/// subscribed: a client holding one idle connection until it is killed
/// (or its connection is).
#[must_use]
pub fn subscriber(netns: &str, host: &str, port: u16, channel: &str) -> Workload {
    let mut client = Workload::spawn_command(
        Command::new("ip")
            .args(["netns", "exec", netns, "redis-cli"])
            .args(["-h", host, "-p", &port.to_string(), "SUBSCRIBE", channel]),
    );
    client.expect_line("subscribe");
    client
}

/// `redis-benchmark ARGS` against `host:port` from `netns`, quiet, bounded
/// by `limit`; fails the test when it fails.
pub fn benchmark(netns: &str, host: &str, port: u16, args: &str, limit: Duration) {
    shell_in(
        netns,
        limit,
        &format!("redis-benchmark -h {host} -p {port} -q {args} >/dev/null"),
    );
}
