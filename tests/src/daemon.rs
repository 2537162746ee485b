//! Running `tcptrace daemon` and talking HTTP to it (and to Prometheus).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use std::path::PathBuf;

use crate::trace::tcptrace_bin;

/// A running daemon on `listen`, stopped (SIGKILL) on drop if still alive.
pub struct Daemon {
    pub child: Child,
    pub listen: String,
    /// Its log (JSON lines on stderr), also echoed to the test's stderr.
    log: Arc<Mutex<Vec<String>>>,
}

/// Log lines kept per daemon; the rest are only echoed.
const LOG_LINES_KEPT: usize = 10_000;

impl Daemon {
    /// Starts `tcptrace daemon --listen LISTEN EXTRA...` and waits for /healthz.
    #[must_use]
    pub fn start(listen: &str, extra: &[&str]) -> Self {
        Self::start_until(listen, extra, || {
            matches!(http_get(listen, "/healthz", &[]), Some((200, _)))
        })
    }

    /// Starts `tcptrace daemon --listen LISTEN EXTRA...` and waits (20 s at
    /// most) until `ready` says it answers (e.g. over TLS, with
    /// credentials).
    #[must_use]
    pub fn start_until(listen: &str, extra: &[&str], ready: impl Fn() -> bool) -> Self {
        Self::start_with_env(listen, extra, &[], ready)
    }

    /// `start_until`, with these environment variables set for the daemon.
    #[must_use]
    pub fn start_with_env(
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        ready: impl Fn() -> bool,
    ) -> Self {
        let child = Command::new(tcptrace_bin())
            .args(["daemon", "--listen", listen])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcptrace daemon");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut child = child;
        let stderr = child.stderr.take().expect("stderr is piped");
        let kept = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut kept = kept
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if kept.len() < LOG_LINES_KEPT {
                    kept.push(line);
                }
            }
        });
        let daemon = Self {
            child,
            listen: listen.to_owned(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ready() {
                return daemon;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("tcptrace daemon did not answer on {listen} within 20 s (see its stderr above)");
    }

    /// `/metrics` in the classic text format.
    #[must_use]
    pub fn scrape(&self) -> String {
        match http_get(&self.listen, "/metrics", &[]) {
            Some((200, body)) => body,
            other => panic!("scrape of {} failed: {other:?}", self.listen),
        }
    }

    /// Scrapes until `check` accepts the scrape or `limit` elapses; returns
    /// the last scrape either way (the caller asserts on it).
    #[must_use]
    pub fn scrape_until(&self, limit: Duration, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let scrape = self.scrape();
            if check(&scrape) || Instant::now() > deadline {
                return scrape;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The log lines so far whose `msg` is `message`, parsed.
    #[must_use]
    pub fn logged(&self, message: &str) -> Vec<Value> {
        let log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log.iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["msg"] == message)
            .collect()
    }

    /// Waits up to `limit` for a log line `message` that `check` accepts.
    #[must_use]
    pub fn wait_for_log(
        &self,
        limit: Duration,
        message: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.logged(message).into_iter().find(|l| check(l)) {
                return Some(line);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port nobody listens on right now.
#[must_use]
pub fn free_loopback_addr() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    probe.local_addr().expect("local addr").to_string()
}

/// A bounded HTTP/1.1 request; `None` when nothing answers.
#[must_use]
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

#[must_use]
pub fn http_get(addr: &str, path: &str, headers: &[&str]) -> Option<(u16, String)> {
    http_request(addr, "GET", path, headers)
}

/// Percent-encodes a query value.
#[must_use]
pub fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Events the daemon says it never saw (a full ring buffer, runs the
/// kernel skipped, transitions it ran no program for), from its own
/// counters in `scrape`.
#[must_use]
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the counters are whole, non-negative and far below 2^53"
)]
pub fn unseen(scrape: &str) -> u64 {
    [
        "tcptrace_events_lost_total",
        "tcptrace_kernel_runs_skipped_total",
        "tcptrace_kernel_transitions_missed_total",
    ]
    .iter()
    .map(|m| sample(scrape, m, &[]).expect("the daemon's loss counters") as u64)
    .sum()
}

/// The value of the sample `name{labels...}` whose labels include every
/// `key="value"` in `want`; summed when several series match.
#[must_use]
pub fn sample(scrape: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, labels) = series.split_once('{').unwrap_or((series, "}"));
        if metric != name {
            continue;
        }
        let matches = want
            .iter()
            .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")));
        if matches {
            let value: f64 = value.parse().ok()?;
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

/// Ids of the BPF programs whose fds `pid` holds, from /proc/PID/fdinfo.
#[must_use]
pub fn programs_of(pid: u32) -> Vec<u64> {
    bpf_fd_ids(pid, "anon_inode:bpf-prog", "prog_id:")
}

/// `bpftool --json ARGS...`, which must succeed.
#[must_use]
pub fn bpftool(args: &[&str]) -> Value {
    let out = Command::new("bpftool")
        .arg("--json")
        .args(args)
        .output()
        .expect("bpftool (Debian package bpftool): `cargo xtask test` installs it");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool JSON")
}

/// The id of the map `name` that `pid`'s programs use.
#[must_use]
pub fn bpf_map_of(pid: u32, name: &str) -> u64 {
    programs_of(pid)
        .iter()
        .flat_map(|id| {
            let prog = bpftool(&["prog", "show", "id", &id.to_string()]);
            prog["map_ids"].as_array().cloned().unwrap_or_default()
        })
        .filter_map(|id| id.as_u64())
        .find(|id| bpftool(&["map", "show", "id", &id.to_string()])["name"] == name)
        .unwrap_or_else(|| panic!("no map {name} among process {pid}'s programs"))
}

/// Every (key, value) of map `id`, as bytes.
#[must_use]
pub fn bpf_map_entries(id: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let bytes = |field: &Value| -> Vec<u8> {
        field
            .as_array()
            .expect("bytes")
            .iter()
            .map(|byte| {
                u8::from_str_radix(byte.as_str().expect("hex").trim_start_matches("0x"), 16)
                    .expect("a hex byte")
            })
            .collect()
    };
    bpftool(&["map", "dump", "id", &id.to_string()])
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| (bytes(&entry["key"]), bytes(&entry["value"])))
        .collect()
}

/// Writes `value` at `key` in map `id`.
pub fn bpf_map_update(id: u64, key: &[u8], value: &[u8]) {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>();
    let (id, key, value) = (id.to_string(), hex(key), hex(value));
    let mut args = vec!["map", "update", "id", &id, "key", "hex"];
    args.extend(key.iter().map(String::as_str));
    args.extend(["value", "hex"]);
    args.extend(value.iter().map(String::as_str));
    // Its JSON answer is `null`.
    let _ = bpftool(&args);
}

/// Ids of the BPF maps whose fds `pid` holds, from /proc/PID/fdinfo.
#[must_use]
pub fn maps_of(pid: u32) -> Vec<u64> {
    bpf_fd_ids(pid, "anon_inode:bpf-map", "map_id:")
}

/// The `key` ids in the fdinfo of `pid`'s fds that link to `anon_inode`.
fn bpf_fd_ids(pid: u32, anon_inode: &str, key: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("fds of process {pid}: {e}"))
        .flatten()
    {
        let is_bpf = std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == anon_inode);
        if !is_bpf {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix(key))
                .filter_map(|v| v.trim().parse::<u64>().ok()),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Programs the daemon attaches on this kernel, as `tcptrace doctor`
/// describes it.
#[must_use]
pub fn daemon_program_count() -> usize {
    let out = std::process::Command::new(crate::trace::tcptrace_bin())
        .arg("doctor")
        .output()
        .expect("run tcptrace doctor");
    let doctor = String::from_utf8_lossy(&out.stdout);
    // state_summary, retransmit, the counter of resets sent and eof_read;
    // SYN-ACK retransmits where the kernel has their tracepoint; softirq
    // entry and exit where preempt_count cannot be read.
    let syn_ack = doctor
        .lines()
        .any(|l| l.starts_with("[ok  ] tracepoint tcp:tcp_retransmit_synack"));
    let softirq = !doctor.contains("no softirq programs");
    4 + usize::from(syn_ack) + 2 * usize::from(softirq)
}

/// A real Prometheus server on loopback, scraping what `scrape_configs`
/// (the YAML list, indented two spaces) says every second; stopped and its
/// directory removed on drop.
pub struct Prometheus {
    child: Child,
    pub dir: PathBuf,
    pub addr: String,
}

impl Prometheus {
    #[must_use]
    pub fn start(tag: &str, scrape_configs: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tcptrace-prometheus-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{scrape_configs}"
            ),
        )
        .expect("prometheus.yml");
        let addr = free_loopback_addr();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "prometheus (Debian package) must be installed: `cargo xtask test` installs it",
            );
        Self { child, dir, addr }
    }

    /// The first result of the instant query `query`, once it has one
    /// that `accept` takes (waits `limit` at most): its value, and the
    /// whole answer.
    #[must_use]
    pub fn query_until(
        &self,
        query: &str,
        limit: Duration,
        accept: impl Fn(&str) -> bool,
    ) -> (Option<String>, String) {
        let path = format!("/api/v1/query?query={}", url_encode(query));
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        loop {
            if let Some((200, body)) = http_get(&self.addr, &path, &[]) {
                let json: Value = serde_json::from_str(&body).unwrap_or_default();
                if let Some(value) = json["data"]["result"][0]["value"][1].as_str() {
                    if accept(value) {
                        return (Some(value.to_owned()), body);
                    }
                }
                last = body;
            }
            if Instant::now() > deadline {
                return (None, last);
            }
            thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
