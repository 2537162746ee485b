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
        let child = Command::new(tcptrace_bin())
            .args(["daemon", "--listen", listen])
            .args(extra)
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
            if let Some((200, _)) = http_get(listen, "/healthz", &[]) {
                return daemon;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("tcptrace daemon did not answer /healthz on {listen} within 20 s (see its stderr above)");
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
    // state_summary, retransmit, the two reset counters and eof_read;
    // SYN-ACK retransmits where the kernel has their tracepoint; softirq
    // entry and exit where preempt_count cannot be read.
    let syn_ack = doctor
        .lines()
        .any(|l| l.starts_with("[ok  ] tracepoint tcp:tcp_retransmit_synack"));
    let softirq = !doctor.contains("no softirq programs");
    5 + usize::from(syn_ack) + 2 * usize::from(softirq)
}
