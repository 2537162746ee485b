//! Real programs the tests run (Debian's nginx, shell loops of curl and
//! ab) inside network namespaces the tests create, stopped in `Drop`.

use std::{
    fs,
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use crate::Workload;

/// `sh -c INSIDE` in a pod of its own in network namespace `netns`: new
/// pid and mount namespaces (private propagation, its own /proc), as a
/// container runtime makes them. `unshare` forks the pod's first process
/// (pid 1 inside; `children_of` finds it), which dies with the handle.
#[must_use]
pub fn pod_in(netns: &str, inside: &str) -> Workload {
    pod_with(netns, inside)
}

/// The same pod with a user namespace of its own as well, made as a
/// rootless container runtime makes it: by host user 100000, who is root
/// in there (`INSIDE` runs as that root). Files of the host are nobody's
/// in the pod, so what `INSIDE` reads must be readable by all.
#[must_use]
pub fn user_namespace_pod_in(netns: &str, inside: &str) -> Workload {
    Workload::spawn_command(
        Command::new("ip")
            .args(["netns", "exec", netns])
            .args([
                "setpriv",
                "--reuid=100000",
                "--regid=100000",
                "--clear-groups",
            ])
            .args(["unshare", "--user", "--map-root-user"])
            .args(POD_NAMESPACES)
            .args(["--mount-proc", "sh", "-c", inside]),
    )
}

/// The namespaces of a pod besides its network and user namespaces: pid
/// (`unshare` forks its pid 1, which dies with it) and mount, with private
/// propagation.
const POD_NAMESPACES: &[&str] = &[
    "--pid",
    "--fork",
    "--kill-child",
    "--mount",
    "--propagation",
    "private",
];

fn pod_with(netns: &str, inside: &str) -> Workload {
    Workload::spawn_command(
        Command::new("ip")
            .args(["netns", "exec", netns, "unshare"])
            .args(POD_NAMESPACES)
            .args(["--mount-proc", "sh", "-c", inside]),
    )
}

/// Where the tests build workloads and keep their findings and configs.
#[must_use]
pub fn scratch_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tt-runtimes");
    fs::create_dir_all(&dir).expect("create target/tt-runtimes");
    dir
}

/// Runs a shell command line in `netns`, bounded by `timeout` (coreutils),
/// and fails the test when it fails.
pub fn shell_in(netns: &str, timeout: Duration, script: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "timeout"])
        .arg(timeout.as_secs().to_string())
        .args(["sh", "-c", script])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` in {netns} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `curls` curl requests to `url` one after the other, then ab's
/// `ab_requests` two at a time, from `netns`: Debian's clients of a
/// server under test (a minute at most; fails the test if either fails).
pub fn curls_then_ab(netns: &str, url: &str, curls: u64, ab_requests: u64) {
    shell_in(
        netns,
        Duration::from_mins(1),
        &format!(
            "i=0; while [ $i -lt {curls} ]; do \
             curl -fsS -o /dev/null --max-time 5 {url} || exit 1; i=$((i+1)); done; \
             ab -q -n {ab_requests} -c 2 -s 5 {url} >/dev/null"
        ),
    );
}

/// Debian's nginx, master and 2 workers (`daemon off`), on `addr` in
/// `netns`, with a config written into a directory of its own. Stopped in
/// `Drop`: the master is asked to quit, and the workers are killed by pid
/// if they outlive it (a killed master leaves its workers running).
pub struct Nginx {
    master: Option<Workload>,
    /// The worker processes' pids.
    pub workers: Vec<u32>,
}

impl Nginx {
    pub const WORKERS: usize = 2;

    #[must_use]
    pub fn start(netns: &str, addr: &str) -> Self {
        Self::start_with(netns, addr, "")
    }

    /// `start`, with `directives` added to the server's block.
    #[must_use]
    pub fn start_with(netns: &str, addr: &str, directives: &str) -> Self {
        Self::start_serving(
            netns,
            addr,
            &format!(
                "server {{\n\
                 \x20       listen {addr};\n\
                 \x20       {directives}\n\
                 \x20       location / {{ return 200 \"ok\\n\"; }}\n\
                 \x20   }}"
            ),
        )
    }

    /// Debian's nginx serving `servers` (`server` and `upstream` blocks of
    /// its `http` block), its files in a directory named after `tag`.
    #[must_use]
    pub fn start_serving(netns: &str, tag: &str, servers: &str) -> Self {
        let dir = scratch_dir().join(format!("nginx-{}", tag.replace([':', '.'], "-")));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("logs")).expect("nginx directory");
        let d = dir.display();
        let config = format!(
            "worker_processes {workers};\n\
             daemon off;\n\
             master_process on;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/logs/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   {servers}\n\
             }}\n",
            workers = Self::WORKERS
        );
        let conf = dir.join("nginx.conf");
        fs::write(&conf, config).expect("write nginx.conf");
        let master = Workload::spawn_command(
            Command::new("ip")
                .args(["netns", "exec", netns, "nginx", "-p"])
                .arg(&dir)
                .arg("-e")
                .arg(dir.join("logs/error.log"))
                .arg("-c")
                .arg(&conf),
        );
        let mut nginx = Self {
            master: Some(master),
            workers: Vec::new(),
        };
        let master_pid = nginx.master_pid();
        let deadline = Instant::now() + Duration::from_secs(10);
        while nginx.workers.len() < Self::WORKERS {
            assert!(
                Instant::now() < deadline,
                "nginx {master_pid} did not start {} workers in time (see {}/logs/error.log)",
                Self::WORKERS,
                d
            );
            thread::sleep(Duration::from_millis(50));
            nginx.workers = children_of(master_pid);
        }
        // The master opened the listening socket before forking: the
        // workers existing means nginx listens.
        nginx
    }

    /// Whether `pid` (as tcptrace's JSON has it) is one of the workers.
    #[must_use]
    pub fn has_worker(&self, pid: Option<u64>) -> bool {
        self.workers.iter().any(|&w| Some(u64::from(w)) == pid)
    }

    #[must_use]
    pub fn master_pid(&self) -> u32 {
        self.master.as_ref().expect("nginx running").pid()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let master = self.master_pid();
        // SAFETY: kill(2) on our own child: SIGQUIT is nginx's graceful stop.
        unsafe { libc::kill(i32::try_from(master).unwrap_or(0), libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !children_of(master).is_empty() {
            thread::sleep(Duration::from_millis(50));
        }
        drop(self.master.take()); // kills and reaps the master
        for &worker in &self.workers {
            let comm = fs::read_to_string(format!("/proc/{worker}/comm")).unwrap_or_default();
            if comm.trim() == "nginx" {
                // SAFETY: kill(2) of a worker of the master this test started.
                unsafe { libc::kill(i32::try_from(worker).unwrap_or(0), libc::SIGKILL) };
            }
        }
    }
}

/// Pids whose parent is `parent`, from /proc.
#[must_use]
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "PID (COMM) STATE PPID ...": the comm may hold spaces and parens.
        let parent_of = status
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent_of == Some(parent) {
            children.push(pid);
        }
    }
    children.sort_unstable();
    children
}
