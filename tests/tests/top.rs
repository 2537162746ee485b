//! `tcptrace top` on the real kernel, with real programs: Debian's nginx
//! in a network namespace the test makes, driven by curl and ab from a
//! second one.
//!
//! - The terminal view, in tmux: the rows of nginx and curl appear with
//!   connections per second, `s` sorts, Enter opens the detail pane with
//!   the peer, `g` makes one row per program, `q` quits with status 0 and the terminal is given back
//!   (no alternate screen, no raw mode).
//! - `--batch`: the printed rows' connections against the kernel's own
//!   counters (`nstat`).
//! - `--batch --sort close-wait`: a server that never closes holds as
//!   many `CLOSE_WAIT` sockets as `ss` lists, first in the table.
//! - SIGTERM and SIGHUP while the view is up: the terminal is given back.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use tcptrace_tests::{
    kernel_counts::{nstat, ss_count},
    netns::HostPair,
    programs::{children_of, curls_then_ab, scratch_dir, shell_in, Nginx},
    require_root,
    tmux::Tmux,
    trace::tcptrace_bin,
    Workload,
};

/// How long tcptrace may take to load its programs and show a screen.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

/// One row of the table, as printed (`tcptrace::top::columns::HEADINGS`).
#[derive(Debug, Clone)]
struct Row {
    pid: u32,
    /// Processes in the row: more than 1 in a program's row (`1234x3`).
    processes: u32,
    name: String,
    conn_per_s: f64,
    conns: u64,
    close_wait: u64,
    close_wait_oldest: String,
}

/// The rows of a screen or a batch table: lines whose first field is a
/// pid and that have every column.
fn rows(text: &str) -> Vec<Row> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 12 {
                return None;
            }
            let (pid, processes) = fields[0].split_once('x').unwrap_or((fields[0], "1"));
            Some(Row {
                pid: pid.parse().ok()?,
                processes: processes.parse().ok()?,
                name: fields[1].to_owned(),
                conn_per_s: fields[3].parse().ok()?,
                conns: fields[4].parse().ok()?,
                close_wait: fields[7].parse().ok()?,
                close_wait_oldest: fields[8].to_owned(),
            })
        })
        .collect()
}

/// The terminal's settings in the pane, read by `stty -a` typed there:
/// raw mode shows as `-icanon -echo`.
fn stty_in(tmux: &Tmux) -> String {
    let file = scratch_dir().join(format!("stty-{}-{}", tmux.session, std::process::id()));
    let _ = std::fs::remove_file(&file);
    tmux.type_line(&format!("stty -a > {}", file.display()));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            if text.contains("icanon") {
                let _ = std::fs::remove_file(&file);
                return text;
            }
        }
        assert!(Instant::now() < deadline, "stty -a did not run in the pane");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The terminal is back to what a shell needs: the main screen, line
/// editing and echo.
fn assert_terminal_restored(tmux: &Tmux, how: &str) {
    assert!(
        !tmux.alternate_screen(),
        "{how}: the pane is still on the alternate screen:\n{}",
        tmux.capture()
    );
    let stty = stty_in(tmux);
    let flags: Vec<&str> = stty.split_whitespace().collect();
    for flag in ["icanon", "echo"] {
        assert!(
            flags.contains(&flag),
            "{how}: the terminal was left in raw mode (no `{flag}` in stty -a):\n{stty}"
        );
    }
}

/// Starts `tcptrace top ARGS` in the pane's shell, which prints its exit
/// status after; waits until its screen is up.
fn start_top(tmux: &Tmux, args: &str) -> String {
    tmux.type_line(&format!(
        "{} top {args}; echo TOP-EXIT=$?",
        tcptrace_bin().display()
    ));
    let (screen, up) = tmux.wait_for(ATTACH_TIMEOUT, |s| {
        s.contains("tcptrace top -") && s.contains("CONN/s")
    });
    assert!(
        up,
        "tcptrace top did not show its screen in time:\n{screen}"
    );
    assert!(
        tmux.alternate_screen(),
        "the view draws on the alternate screen"
    );
    screen
}

/// The status the shell printed after tcptrace exited (its `TOP-EXIT=N`
/// line, not the command line that asks for it).
fn printed_status(screen: &str) -> Option<String> {
    screen.lines().find_map(|line| {
        let status = line.trim().strip_prefix("TOP-EXIT=")?;
        (!status.is_empty() && status.chars().all(|c| c.is_ascii_digit()))
            .then(|| status.to_owned())
    })
}

/// Waits for the shell's `TOP-EXIT=N` line; returns N.
fn exit_status(tmux: &Tmux, within: Duration) -> String {
    let (screen, exited) = tmux.wait_for(within, |s| printed_status(s).is_some());
    assert!(
        exited,
        "tcptrace top did not exit within {within:?}:\n{screen}"
    );
    printed_status(&screen).unwrap_or_default()
}

#[test]
fn terminal_view_shows_nginx_and_curl_sorts_details_and_quits_cleanly() {
    const PORT: u16 = 18430;
    require_root();
    let hosts = HostPair::new("tttopui");
    let nginx = Nginx::start(&hosts.a, &format!("{}:{PORT}", hosts.a_addr));
    let tmux = Tmux::new("tt-top-ui");
    start_top(&tmux, &format!("--port {PORT}"));

    // About 5 s of curls, one at a time: each interval sees some.
    let (b, url) = (hosts.b.clone(), format!("http://{}:{PORT}/", hosts.a_addr));
    let clients = thread::spawn(move || {
        shell_in(
            &b,
            Duration::from_mins(1),
            &format!(
                "i=0; while [ $i -lt 150 ]; do \
                 curl -fsS -o /dev/null --max-time 5 {url} || exit 1; i=$((i+1)); sleep 0.02; done"
            ),
        );
    });
    let busy = |s: &str| {
        let rows = rows(s);
        let active = |name: &str| rows.iter().any(|r| r.name == name && r.conn_per_s > 0.0);
        active("nginx") && active("curl")
    };
    let (screen, seen) = tmux.wait_for(Duration::from_secs(20), busy);
    assert!(
        seen,
        "no row of nginx and curl with connections per second:\n{screen}"
    );
    println!("the view with nginx and curl busy:\n{screen}");
    let top = rows(&screen)[0].clone();
    assert_eq!(
        top.name, "nginx",
        "sorted by CONN/s, an nginx worker (every curl's peer) comes first:\n{screen}"
    );
    for worker in rows(&screen).iter().filter(|r| r.name == "nginx") {
        assert!(
            worker.pid == nginx.master_pid() || nginx.workers.contains(&worker.pid),
            "nginx row {worker:?} is not the nginx this test started (master {}, workers {:?})",
            nginx.master_pid(),
            nginx.workers
        );
    }

    // The detail pane of the selected (top) row: its peers.
    tmux.send_keys(&["Enter"]);
    let client = format!("{} (clients)", hosts.b_addr);
    let (screen, detailed) = tmux.wait_for(Duration::from_secs(5), |s| {
        s.contains("Top peers") && s.contains(&client)
    });
    assert!(
        detailed,
        "the detail pane does not name nginx's peer {client}:\n{screen}"
    );
    assert!(
        screen.contains(&format!("nginx (pid {})", top.pid)),
        "the detail pane is about the selected row, nginx {}:\n{screen}",
        top.pid
    );
    println!("the detail pane:\n{screen}");

    // `s` moves to the next column.
    tmux.send_keys(&["s"]);
    let (screen, sorted) = tmux.wait_for(Duration::from_secs(5), |s| {
        s.contains("sorted by TIME_WAIT")
    });
    assert!(sorted, "`s` did not sort by the next column:\n{screen}");

    // `g`: one row per program. nginx's master (counted for its
    // listener's handshakes) and its workers (for the connections they
    // accepted and closed) are one row.
    tmux.send_keys(&["g"]);
    // The whole frame: a capture can land while the terminal is still
    // drawing one, with the last frame's rows below the new ones.
    let (screen, grouped) = tmux.wait_for(Duration::from_secs(5), |s| {
        s.contains(" programs - ")
            && rows(s)
                .iter()
                .any(|r| r.name == "nginx" && u64::from(r.processes) == 1 + Nginx::WORKERS as u64)
            && rows(s).iter().filter(|r| r.name == "curl").count() == 1
    });
    assert!(
        grouped,
        "`g` did not make nginx's master and workers one row:\n{screen}"
    );
    let programs = rows(&screen);
    assert_eq!(
        programs.iter().filter(|r| r.name == "curl").count(),
        1,
        "the curls are one row:\n{screen}"
    );
    println!("per program:\n{screen}");

    clients.join().expect("the curl loop");
    let quit_at = Instant::now();
    tmux.send_keys(&["q"]);
    let status = exit_status(&tmux, Duration::from_secs(5));
    let took = quit_at.elapsed();
    assert_eq!(status, "0", "tcptrace top's exit status after q");
    println!("q: exited with status 0 after {took:?}");
    assert_terminal_restored(&tmux, "after q");
    drop(nginx);
}

/// `tcptrace top --batch` as a child, its standard output read on a
/// thread.
struct Batch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Batch {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(tcptrace_bin())
            .args(["top", "--batch"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tcptrace top --batch");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Reads lines until one starts with `prefix`; returns those read.
    fn until(&self, prefix: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut read = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no `{prefix}` line in time; read:\n{}", read.join("\n"))
            });
            let done = line.starts_with(prefix);
            read.push(line);
            if done {
                return read;
            }
        }
    }

    /// The next table: the lines up to the blank one that ends it.
    fn next_table(&self, timeout: Duration) -> String {
        let header = self.until("tcptrace top -", timeout).pop();
        let mut table: Vec<String> = header.into_iter().collect();
        loop {
            let line = self
                .lines
                .recv_timeout(timeout)
                .expect("the rest of a table");
            if line.is_empty() {
                return table.join("\n");
            }
            table.push(line);
        }
    }

    /// Ends it as Ctrl-C would (SIGINT); its exit status.
    fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) of our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGINT) };
        self.child.wait().expect("wait for tcptrace top")
    }

    /// Everything else it prints, and its exit status (it ends by itself
    /// after its iterations).
    fn finish(mut self, timeout: Duration) -> (Vec<String>, std::process::ExitStatus) {
        let deadline = Instant::now() + timeout;
        let mut read = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => read.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => assert!(
                    Instant::now() < deadline,
                    "tcptrace top --batch did not end after its iterations; read:\n{}",
                    read.join("\n")
                ),
            }
        }
        let status = self.child.wait().expect("wait for tcptrace top");
        (read, status)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connections opened per program, summed over its rows (the CONNS
/// column: since the start).
fn conns_by_program(rows: &[Row]) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    for row in rows {
        *by.entry(row.name.clone()).or_default() += row.conns;
    }
    by
}

#[test]
fn batch_rows_count_the_connections_the_kernel_counted() {
    const PORT: u16 = 18431;
    const CURLS: u64 = 25;
    const AB_REQUESTS: u64 = 200;
    const INTERVAL_S: f64 = 2.0;
    require_root();
    let hosts = HostPair::new("tttopb");
    let nginx = Nginx::start(&hosts.a, &format!("{}:{PORT}", hosts.a_addr));
    // Three intervals of 2 s: the first table says the session is
    // attached; the workload runs (about a second) in the second; the
    // third sees it end.
    let batch = Batch::start(&["--iterations", "3", "--interval", "2s", "--port", "18431"]);
    let mut output = batch.until("tcptrace top -", ATTACH_TIMEOUT);
    let (server_before, clients_before) = (nstat(&hosts.a), nstat(&hosts.b));
    let url = format!("http://{}:{PORT}/", hosts.a_addr);
    curls_then_ab(&hosts.b, &url, CURLS, AB_REQUESTS);
    let (server_after, clients_after) = (nstat(&hosts.a), nstat(&hosts.b));
    let (rest, status) = batch.finish(Duration::from_secs(20));
    output.extend(rest);
    let text = output.join("\n");
    println!("tcptrace top --batch printed:\n{text}");
    assert!(
        status.success(),
        "tcptrace top --batch exited with {status}"
    );
    let tables: Vec<&str> = text
        .split("tcptrace top -")
        .filter(|t| !t.trim().is_empty())
        .collect();
    assert_eq!(tables.len(), 3, "one table per iteration:\n{text}");
    for table in &tables {
        assert!(
            table.contains("lost: none"),
            "events were lost, the counts cannot be compared:\n{table}"
        );
    }
    let delta = |after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, key: &str| {
        after.get(key).copied().unwrap_or(0) - before.get(key).copied().unwrap_or(0)
    };
    let active = delta(&clients_after, &clients_before, "TcpActiveOpens");
    let passive = delta(&server_after, &server_before, "TcpPassiveOpens");
    // ab may open a connection more than it has requests.
    assert!(
        active >= CURLS + AB_REQUESTS,
        "the workload's connections as nstat counts them: {active}"
    );

    // The last table's CONNS (since the start) against the kernel: every
    // connection is a birth tcptrace sees (connect, or a passive open
    // under the listener's or the accepting worker's pid), and none was
    // lost, so the sums are exact.
    let last = rows(tables[2]);
    let conns = conns_by_program(&last);
    let clients = conns.get("curl").copied().unwrap_or(0) + conns.get("ab").copied().unwrap_or(0);
    let server = conns.get("nginx").copied().unwrap_or(0);
    println!(
        "rows: curl+ab {clients} (curl {:?}, ab {:?}), nginx {server}; nstat: TcpActiveOpens \
         {active}, TcpPassiveOpens {passive}",
        conns.get("curl"),
        conns.get("ab")
    );
    assert_eq!(
        conns.get("curl").copied(),
        Some(CURLS),
        "one connection per curl:\n{}",
        tables[2]
    );
    assert_eq!(clients, active, "client rows against TcpActiveOpens");
    assert_eq!(server, passive, "nginx rows against TcpPassiveOpens");
    assert_eq!(
        conns.len(),
        3,
        "only curl, ab and nginx used the port: {conns:?}"
    );

    // The per-interval rates add up to the totals: each table's CONN/s
    // is its interval's count over its measured length (2 s and a few
    // ms), so rate x 2 s falls short by under 1%, plus the rounding to
    // 0.1/s (0.2 a table): within 2% + 1 of the totals.
    let opened_in_intervals: f64 = tables
        .iter()
        .flat_map(|t| rows(t))
        .filter(|r| r.name == "nginx")
        .map(|r| r.conn_per_s * INTERVAL_S)
        .sum();
    #[expect(clippy::cast_precision_loss, reason = "counts in the thousands")]
    let server_f = server as f64;
    assert!(
        (opened_in_intervals - server_f).abs() <= server_f * 0.02 + 1.0,
        "nginx's CONN/s over the intervals ({opened_in_intervals:.1}) against its total {server}"
    );
    drop(nginx);
}

#[test]
fn batch_close_wait_held_agrees_with_ss() {
    const PORT: u16 = 18433;
    const LEAKED: usize = 6;
    require_root();
    let hosts = HostPair::new("tttopcw");
    let batch = Batch::start(&["--sort", "close-wait", "--port", "18433"]);
    let _ = batch.next_table(ATTACH_TIMEOUT);
    let scenario = |netns: &str, args: &[&str]| {
        Workload::spawn_command(
            Command::new("ip")
                .args(["netns", "exec", netns, env!("CARGO_BIN_EXE_tt-scenario")])
                .args(args),
        )
    };
    // A server that reads end-of-file from each client and never closes.
    let addr = format!("{}:{PORT}", hosts.a_addr);
    let mut server = scenario(&hosts.a, &["leak", &addr, &LEAKED.to_string()]);
    let listening = server.expect_line("listening ");
    let mut client = scenario(
        &hosts.b,
        &["connect-close", &listening, &LEAKED.to_string()],
    );
    client.expect_lines("local ", LEAKED);
    client.expect_line("done");
    server.expect_lines("eof ", LEAKED);
    let in_kernel = ss_count(&hosts.a, "close-wait");
    assert_eq!(in_kernel, LEAKED as u64, "ss lists the leaked sockets");
    // The held columns follow the socket dump of each interval.
    let deadline = Instant::now() + Duration::from_secs(10);
    let table = loop {
        let table = batch.next_table(Duration::from_secs(5));
        let held = rows(&table)
            .first()
            .is_some_and(|r| r.name == "tt-scenario" && r.close_wait == in_kernel);
        if held {
            break table;
        }
        assert!(
            Instant::now() < deadline,
            "no table with tt-scenario first holding {in_kernel} CLOSE_WAIT sockets (ss):\n{table}"
        );
    };
    println!("{table}");
    let leaky = &rows(&table)[0];
    assert_eq!(leaky.pid, server.pid(), "the server's own row");
    assert_ne!(
        leaky.close_wait_oldest, "-",
        "the oldest one's age is shown"
    );
    let status = batch.interrupt();
    assert!(status.success(), "tcptrace top --batch on SIGINT: {status}");
    drop(client);
    drop(server);
}

#[test]
fn sigterm_and_sighup_give_the_terminal_back() {
    require_root();
    let tmux = Tmux::new("tt-top-signals");
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGHUP, "SIGHUP")] {
        // Nothing to see on this port: the view alone.
        start_top(&tmux, "--port 18432");
        let shell = tmux.shell_pid();
        let top = children_of(shell);
        assert_eq!(top.len(), 1, "the pane's shell runs tcptrace: {top:?}");
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", top[0])).unwrap_or_default();
        assert_eq!(comm.trim(), "tcptrace", "the shell's child is tcptrace");
        // SAFETY: kill(2) of the tcptrace this test started in its pane.
        let sent = unsafe { libc::kill(i32::try_from(top[0]).expect("pid"), signal) };
        assert_eq!(sent, 0, "send {name}");
        let status = exit_status(&tmux, Duration::from_secs(5));
        println!("{name}: tcptrace top exited with status {status}");
        assert_terminal_restored(&tmux, &format!("after {name}"));
        tmux.type_line("clear");
    }
}
