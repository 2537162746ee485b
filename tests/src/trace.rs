//! Running `tcptrace trace --json` and reading its records.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::process::LINE_TIMEOUT;

/// The release `tcptrace` binary (`cargo xtask test` builds it first).
#[must_use]
pub fn tcptrace_bin() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/tcptrace");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo xtask test`, which builds it",
        path.display()
    );
    path
}

/// The lines of `stdout`, read on a thread of their own.
fn line_channel(stdout: std::process::ChildStdout) -> Receiver<String> {
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Waits until a session says on `stderr` that it is tracing (echoing
/// its stderr to the test's, then and afterwards).
pub fn wait_until_tracing(stderr: std::process::ChildStderr) {
    let (ready_tx, ready) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.contains("tracing TCP sockets") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready
        .recv_timeout(LINE_TIMEOUT)
        .expect("tcptrace did not start in time (see its stderr above)");
}

/// A running `tcptrace trace --json` session.
pub struct Tracer {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Tracer {
    /// Starts tracing with `extra` arguments and waits until it is attached.
    #[must_use]
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// The same, with environment variables set for tcptrace.
    #[must_use]
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(tcptrace_bin())
            .args(["trace", "--json"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tcptrace");
        let lines = line_channel(child.stdout.take().expect("stdout is piped"));
        let mut tracer = Self {
            child,
            lines,
            seen: Vec::new(),
        };
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let line = tracer
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("tcptrace did not start in time (see its stderr above)");
            let is_start = line.contains("\"type\":\"start\"");
            tracer.seen.push(line);
            if is_start {
                return tracer;
            }
        }
    }

    /// Starts `tcptrace trace --json --report-only` (summary mode: the
    /// kernel sends one record per socket) and waits until it is attached.
    /// Such a session prints nothing before its report, so readiness is
    /// read from its stderr.
    #[must_use]
    pub fn start_report_only(extra: &[&str]) -> Self {
        Self::start_report_only_with_env(extra, &[])
    }

    /// The same, with environment variables set for tcptrace.
    #[must_use]
    pub fn start_report_only_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(tcptrace_bin())
            .args(["trace", "--json", "--report-only"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcptrace");
        let lines = line_channel(child.stdout.take().expect("stdout is piped"));
        wait_until_tracing(child.stderr.take().expect("stderr is piped"));
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads the live records until `done` accepts one or `timeout` passes;
    /// true when it accepted one. Every record read stays part of what
    /// [`Self::stop`] returns.
    /// Stops (SIGSTOP) or resumes (SIGCONT) the tracer: a stopped reader
    /// lets the kernel's records wait, as a busy one would.
    pub fn pause(&self, paused: bool) {
        let signal = if paused { libc::SIGSTOP } else { libc::SIGCONT };
        let pid = i32::try_from(self.child.id()).expect("a pid fits in i32");
        // SAFETY: signals our own child process, which we have not reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal the tracer");
    }

    pub fn wait_for(&mut self, timeout: Duration, mut done: impl FnMut(&Value) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                return false;
            };
            let accepted = serde_json::from_str::<Value>(&line).is_ok_and(|r| done(&r));
            self.seen.push(line);
            if accepted {
                return true;
            }
        }
    }

    /// Stops the session like Ctrl-C does and returns everything it printed.
    #[must_use]
    pub fn stop(mut self) -> Trace {
        // Let the last events reach the ring buffer and the drain timer.
        thread::sleep(Duration::from_millis(300));
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(i32::try_from(self.child.id()).expect("pid"), libc::SIGINT) };
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    assert!(
                        Instant::now() < deadline,
                        "tcptrace did not stop on SIGINT in time"
                    );
                }
            }
        }
        let status = self.child.wait().expect("wait for tcptrace");
        assert!(status.success(), "tcptrace exited with {status}");
        Trace::parse(&self.seen)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything a session printed.
pub struct Trace {
    pub records: Vec<Value>,
}

impl Trace {
    fn parse(lines: &[String]) -> Self {
        let records = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect();
        Self { records }
    }

    /// Records of one type (`state`, `retransmit`, `existing`, `summary`, ...).
    pub fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.records.iter().filter(move |r| r["type"] == kind)
    }

    /// Every event whose local or remote endpoint is `endpoint` ("ip:port").
    pub fn about<'a>(&'a self, endpoint: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.records
            .iter()
            .filter(move |r| r["local"] == endpoint || r["remote"] == endpoint)
    }

    /// State transitions of the socket with these endpoints, in order,
    /// as `OLD->NEW` strings.
    #[must_use]
    pub fn transitions(&self, local: &str, remote: &str) -> Vec<String> {
        self.of_type("state")
            .filter(|r| r["local"] == local && r["remote"] == remote)
            .map(|r| {
                format!(
                    "{}->{}",
                    r["old"].as_str().unwrap_or("?"),
                    r["new"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    /// The lifetime of the (first) socket that had these endpoints: its
    /// events by kernel address, from its birth (connect, listen or passive
    /// open) to its CLOSE. Bounded both ways because a freed address is
    /// reused.
    #[must_use]
    pub fn socket_events(&self, local: &str, remote: &str) -> Vec<&Value> {
        self.socket_lifetimes(local, remote)
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// Every socket lifetime that had these endpoints, in order: a client
    /// port is reused at once when the server side holds the `TIME_WAIT`.
    #[must_use]
    pub fn socket_lifetimes(&self, local: &str, remote: &str) -> Vec<Vec<&Value>> {
        let events: Vec<&Value> = self
            .records
            .iter()
            .filter(|r| r["type"] != "existing")
            .collect();
        let mut lifetimes: Vec<Vec<&Value>> = Vec::new();
        let mut covered_until = None;
        for hit in (0..events.len())
            .filter(|&i| events[i]["local"] == local && events[i]["remote"] == remote)
        {
            if covered_until.is_some_and(|end| hit <= end) {
                continue;
            }
            let (lifetime, end) = lifetime_at(&events, hit);
            covered_until = Some(end);
            lifetimes.push(lifetime);
        }
        lifetimes
    }

    /// Diagnosis findings of one kind (`churn`, `reconnect_loop`,
    /// `close_wait_leak`, `dead_peer_fin`, `connect`, `accept`,
    /// `port_pressure`).
    pub fn findings<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.of_type("finding").filter(move |r| r["kind"] == kind)
    }

    /// Findings of one kind about process `pid`.
    pub fn findings_of<'a>(
        &'a self,
        kind: &'a str,
        pid: u32,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.findings(kind)
            .filter(move |r| r["process"]["pid"] == pid)
    }

    #[must_use]
    pub fn summary(&self) -> &Value {
        self.of_type("summary").last().expect("a summary record")
    }

    /// Events the kernel never delivered to this session: lost to a full
    /// ring buffer, program runs it skipped (a softirq nested in a run of
    /// the same program on one CPU), or transitions it ran no program for.
    /// The session says how many.
    #[must_use]
    pub fn unseen(&self) -> u64 {
        let kernel = &self.summary()["summary"]["kernel"];
        ["events_lost", "runs_skipped", "transitions_missed"]
            .iter()
            .map(|key| kernel[key].as_u64().unwrap_or(0))
            .sum()
    }
}

/// `OLD->NEW` of a state record.
#[must_use]
pub fn transition(record: &Value) -> String {
    format!(
        "{}->{}",
        record["old"].as_str().unwrap_or("?"),
        record["new"].as_str().unwrap_or("?")
    )
}

/// A `tcptrace trace --report-only` session in text mode, next to a JSON
/// one: the diagnosis report as people read it, for failure messages.
pub struct TextReport {
    child: Child,
    stdout: Receiver<String>,
}

impl TextReport {
    /// Starts the session with `extra` arguments and waits until it is
    /// attached (its "tracing" notice on stderr).
    #[must_use]
    pub fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(tcptrace_bin())
            .args(["trace", "--report-only"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcptrace");
        let (out_tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("stdout is piped");
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if out_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (err_tx, stderr) = mpsc::channel();
        let err = child.stderr.take().expect("stderr is piped");
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let attached = line.contains("tracing TCP sockets");
                if !attached {
                    eprintln!("{line}");
                }
                if attached && err_tx.send(()).is_err() {
                    break;
                }
            }
        });
        stderr
            .recv_timeout(LINE_TIMEOUT)
            .expect("tcptrace (text report) did not start in time (see its stderr above)");
        Self { child, stdout }
    }

    /// Asks the session to stop (SIGINT), without waiting.
    pub fn interrupt(&self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
    }

    /// Stops the session and returns the report it printed. Never panics,
    /// so that it can run while a failing test unwinds.
    #[must_use]
    pub fn finish(self) -> String {
        self.interrupt();
        let deadline = Instant::now() + LINE_TIMEOUT;
        let mut text = String::new();
        loop {
            match self.stdout.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    text.push_str(&line);
                    text.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    text.push_str("(tcptrace did not finish its report in time)\n");
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        text
    }
}

impl Drop for TextReport {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lifetime around `events[hit]`: same kernel address, from the last
/// birth at or before it to the first CLOSE at or after it. Returns the
/// events and the index of the last one.
fn lifetime_at<'a>(events: &[&'a Value], hit: usize) -> (Vec<&'a Value>, usize) {
    let sock = &events[hit]["sock"];
    let same: Vec<(usize, &Value)> = events
        .iter()
        .enumerate()
        .filter(|(_, r)| &r["sock"] == sock)
        .map(|(i, r)| (i, *r))
        .collect();
    let is_birth = |r: &Value| {
        r["type"] == "state"
            && (r["old"] == "CLOSE" || r["old"] == "LISTEN" && r["new"] == "SYN_RECV")
    };
    let start = same
        .iter()
        .rev()
        .find(|(i, r)| *i <= hit && is_birth(r))
        .map_or(0, |(i, _)| *i);
    let end = same
        .iter()
        .find(|(i, r)| *i >= hit && r["type"] == "state" && r["new"] == "CLOSE")
        .map_or(usize::MAX, |(i, _)| *i);
    let lifetime: Vec<&Value> = same
        .into_iter()
        .filter(|(i, _)| *i >= start && *i <= end)
        .map(|(_, r)| r)
        .collect();
    (lifetime, end)
}

/// A finding with its call sites cut to function, file, line and the
/// names of their first frames.
#[must_use]
pub fn without_frames(finding: &Value) -> Value {
    let mut short = finding.clone();
    if let Some(object) = short.as_object_mut() {
        for (_, value) in object.iter_mut() {
            if let Some(site) = value.as_object_mut() {
                if let Some(frames) = site.remove("frames") {
                    let names: Vec<Value> = frames
                        .as_array()
                        .into_iter()
                        .flatten()
                        .take(12)
                        .map(|f| f["function"].clone())
                        .collect();
                    site.insert("frame_functions".to_owned(), Value::Array(names));
                }
            }
        }
    }
    short
}
