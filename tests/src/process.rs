//! The scenario workloads, run as child processes whose output the test
//! follows line by line.

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::Duration,
};

/// How long a test waits for any one line from a child.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `tt-workload`, optionally inside a network namespace.
pub struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

/// Path of the workload binary, which cargo builds into the same target
/// directory as the test executables (`target/<profile>/deps/..`).
#[must_use]
pub fn workload_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = profile_dir.join("tt-workload");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo xtask test`",
        path.display()
    );
    path
}

impl Workload {
    /// Starts `tt-workload ARGS...`.
    #[must_use]
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(Command::new(workload_bin()).args(args))
    }

    /// Starts `tt-workload ARGS...` inside network namespace `netns`.
    /// `ip netns exec` execs the program, so the pid is the workload's.
    #[must_use]
    pub fn start_in(netns: &str, args: &[&str]) -> Self {
        Self::spawn(
            Command::new("ip")
                .args(["netns", "exec", netns])
                .arg(workload_bin())
                .args(args),
        )
    }

    /// Starts any command as a workload (e.g. a shell that first joins a
    /// cgroup, then execs `tt-workload`).
    #[must_use]
    pub fn spawn_command(command: &mut Command) -> Self {
        Self::spawn(command)
    }

    fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines,
        }
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line starting with `prefix`, minus the prefix.
    pub fn expect_line(&mut self, prefix: &str) -> String {
        loop {
            let line = self.lines.recv_timeout(LINE_TIMEOUT).unwrap_or_else(|_| {
                panic!("workload {} printed no `{prefix}` line in time", self.pid())
            });
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    /// The rest of the next `count` lines starting with `prefix`.
    pub fn expect_lines(&mut self, prefix: &str, count: usize) -> Vec<String> {
        (0..count).map(|_| self.expect_line(prefix)).collect()
    }

    /// Sends a line to the workload's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("workload stdin");
        stdin.flush().expect("workload stdin");
    }

    /// Closes the workload's stdin (its signal to finish).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for a successful exit, bounded in time.
    pub fn wait_success(self) {
        let pid = self.child.id();
        let status = self.wait_exit();
        assert!(status.success(), "workload {pid} failed: {status}");
    }

    /// Whether the workload exits within `limit` (it is killed when
    /// dropped either way).
    pub fn exits_within(&mut self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().expect("wait for workload").is_some() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits for an exit, successful or not, bounded in time (a workload
    /// that outlives the bound fails the test and is killed).
    #[must_use]
    pub fn wait_exit(mut self) -> ExitStatus {
        self.stdin = None;
        assert!(
            self.exits_within(LINE_TIMEOUT),
            "workload {} did not exit in time",
            self.child.id()
        );
        // `exits_within` reaped it: this returns the status it kept.
        self.child
            .try_wait()
            .expect("wait for workload")
            .expect("an exited workload")
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // A failing test must not leave workloads behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
