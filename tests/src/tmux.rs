//! A terminal for the tests of terminal programs: a tmux session, on a
//! tmux server of its own (its own socket), running a shell that stays
//! when the program under test exits, so the screen it leaves behind can
//! be read. The server is killed (and its socket file removed) in `Drop`,
//! also when the test fails.

use std::{
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

/// A detached tmux session of 200x50 running `sh`.
pub struct Tmux {
    socket: String,
    pub session: String,
    /// The server's socket file, which it leaves behind when killed.
    socket_path: String,
}

impl Tmux {
    /// Starts the session `name` (unique per test: its server's socket
    /// is named after it and the test's pid).
    #[must_use]
    pub fn new(name: &str) -> Self {
        let mut tmux = Self {
            socket: format!("{name}-{}", std::process::id()),
            session: name.to_owned(),
            socket_path: String::new(),
        };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "200",
            "-y",
            "50",
            "sh",
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed (is tmux installed? `cargo xtask setup` installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux.socket_path = tmux.display("#{socket_path}");
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// Types `keys` (tmux key names: `Enter`, `Escape`, `C-c`, or text).
    pub fn send_keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "tmux send-keys {keys:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Types a command line and Enter.
    pub fn type_line(&self, line: &str) {
        self.send_keys(&["-l", line]);
        self.send_keys(&["Enter"]);
    }

    /// The screen's text now.
    #[must_use]
    pub fn capture(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", &self.session]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A tmux format of the pane (`#{alternate_on}`, `#{pane_pid}`).
    #[must_use]
    pub fn display(&self, format: &str) -> String {
        let out = self.run(&["display-message", "-p", "-t", &self.session, format]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Whether the program in the pane is on the alternate screen.
    #[must_use]
    pub fn alternate_screen(&self) -> bool {
        self.display("#{alternate_on}") == "1"
    }

    /// The pid of the pane's shell.
    #[must_use]
    pub fn shell_pid(&self) -> u32 {
        self.display("#{pane_pid}")
            .parse()
            .expect("tmux gives the pane's pid")
    }

    /// Reads the screen until `done` accepts it or `timeout` passes;
    /// returns the last screen read and whether it was accepted.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> (String, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.capture();
            if done(&screen) {
                return (screen, true);
            }
            if Instant::now() >= deadline {
                return (screen, false);
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Ends the session, its shell and whatever still runs in it.
        let _ = self.run(&["kill-server"]);
        if !self.socket_path.is_empty() {
            let _ = std::fs::remove_file(&self.socket_path);
        }
    }
}
