//! What this machine supports, checked before anything is loaded, so that
//! a missing privilege or kernel feature is one clear sentence, not an
//! errno from deep inside the loader. `tcptrace doctor` prints the same list.

use std::{fs, path::Path};

use super::{
    btf::VMLINUX_BTF,
    hooks::{Hook, When, HOOKS},
    tracefs,
};

/// Oldest kernel with the BPF ring buffer.
pub const MIN_KERNEL: (u32, u32) = (5, 8);

// Capability numbers from linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, with less detail.
    Degraded,
    /// tcptrace cannot run.
    Fail,
}

#[derive(Clone, Debug)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

impl Check {
    fn new(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status,
            detail: detail.into(),
        }
    }
}

/// Every check, in the order `doctor` prints them.
#[must_use]
pub fn run_checks() -> Vec<Check> {
    let mut checks = vec![kernel_version(), privileges(), proc_access()];
    let preempt_count =
        super::btf::kernel_offsets().is_ok_and(|offsets| offsets.layout.task_se_cfs_rq != 0);
    match tracefs::tracefs_root() {
        Ok(root) => {
            checks.push(Check::new(
                "tracefs",
                Status::Ok,
                root.display().to_string(),
            ));
            // Each tracepoint once, with what the hooks on it give; a
            // missing one fails tcptrace when a required hook needs it.
            let mut seen: Vec<(&str, &str)> = Vec::new();
            // The softirq programs are not needed where the programs read
            // `preempt_count` themselves, nor the hooks of kernels without
            // BTF (`tcp_receive_reset`: the CLOSE's `sk_err` tells) where
            // it is there.
            let btf = Path::new(VMLINUX_BTF).exists();
            let not_needed = |hook: &&Hook| match hook.when {
                When::NoPreemptCount => preempt_count,
                When::NoBtf => btf,
                _ => false,
            };
            let needed = HOOKS.iter().filter(|hook| !not_needed(hook));
            for hook in needed {
                for (category, name) in hook.attach.iter().map(|at| at.event()) {
                    if seen.contains(&(category, name)) {
                        continue;
                    }
                    seen.push((category, name));
                    let present = root
                        .join("events")
                        .join(category)
                        .join(name)
                        .join("format")
                        .exists();
                    let (status, detail) = match (present, hook.required) {
                        (true, _) => (Status::Ok, hook.gives.to_owned()),
                        (false, true) => {
                            (Status::Fail, format!("missing: {} unavailable", hook.gives))
                        }
                        (false, false) => {
                            (Status::Degraded, format!("missing: {} lost", hook.gives))
                        }
                    };
                    checks.push(Check::new(
                        format!("tracepoint {category}:{name}"),
                        status,
                        detail,
                    ));
                }
            }
        }
        Err(err) => checks.push(Check::new("tracefs", Status::Fail, format!("{err:#}"))),
    }
    checks.push(if Path::new(VMLINUX_BTF).exists() {
        Check::new("kernel BTF", Status::Ok, VMLINUX_BTF)
    } else {
        Check::new(
            "kernel BTF",
            Status::Degraded,
            format!("{VMLINUX_BTF} missing: network namespaces of sockets will show as 0"),
        )
    });
    checks.push(Check::new(
        "softirq or system call",
        Status::Ok,
        if preempt_count {
            "read from this CPU's preempt_count (offsets from BTF): no softirq programs"
        } else {
            "a per-CPU flag kept by irq:softirq_entry/exit programs (preempt_count not \
             reachable on this kernel)"
        },
    ));
    checks.push(Check::new(
        "socket reads (state changes)",
        Status::Ok,
        if super::btf::types_tracepoint("inet_sock_set_state") {
            "typed tracepoint sock:inet_sock_set_state: fields read with plain loads \
             (if the kernel refuses it: the raw tracepoint's probe reads for the daemon, \
             the classic tracepoint's record for trace and top)"
        } else {
            "no typed tracepoint in this kernel's BTF: the daemon reads fields with the \
             raw tracepoint's probe reads, trace and top copy the classic tracepoint's record"
        },
    ));
    checks.push(Check::new(
        "whole lives (daemon)",
        Status::Ok,
        match super::life_rings_off() {
            Some(why) => format!("through the event ring buffer ({why})"),
            None => "a ring per CPU, mapped into the daemon and read without a system call \
                     (TCPTRACE_NO_LIFE_RINGS=1 sends them through the event ring buffer)"
                .to_owned(),
        },
    ));
    checks.push(hook_availability());
    checks
}

/// The first failing check, as an error message telling what to do.
pub fn ensure_can_trace() -> anyhow::Result<()> {
    let failures: Vec<String> = run_checks()
        .into_iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "tcptrace cannot trace on this machine:\n  {}\n(run `tcptrace doctor` for the full list)",
            failures.join("\n  ")
        )
    }
}

fn kernel_version() -> Check {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    match parse_release(release) {
        Some(version) if version >= MIN_KERNEL => Check::new("kernel", Status::Ok, release),
        Some(_) => Check::new(
            "kernel",
            Status::Fail,
            format!(
                "{release} is older than {}.{}, the first kernel with the BPF ring buffer",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
        ),
        None => Check::new(
            "kernel",
            Status::Degraded,
            format!("cannot parse release `{release}`"),
        ),
    }
}

/// `6.18.44-fc` → (6, 18).
#[must_use]
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn effective_caps() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

fn has_cap(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

fn privileges() -> Check {
    let caps = effective_caps();
    let admin = has_cap(caps, CAP_SYS_ADMIN);
    let bpf = admin || has_cap(caps, CAP_BPF);
    let perfmon = admin || has_cap(caps, CAP_PERFMON);
    if bpf && perfmon {
        Check::new(
            "privileges",
            Status::Ok,
            "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)",
        )
    } else {
        Check::new(
            "privileges",
            Status::Fail,
            "loading tracepoint programs needs CAP_BPF and CAP_PERFMON (or root): \
             run with sudo, or `setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search+ep tcptrace`",
        )
    }
}

fn proc_access() -> Check {
    let caps = effective_caps();
    if has_cap(caps, CAP_SYS_PTRACE) {
        Check::new(
            "process details",
            Status::Ok,
            "CAP_SYS_PTRACE: fds of every process are readable",
        )
    } else {
        Check::new(
            "process details",
            Status::Degraded,
            "no CAP_SYS_PTRACE: owners of sockets that existed before the trace \
             are found only for your own processes",
        )
    }
}

fn hook_availability() -> Check {
    // Documented rather than probed: tcptrace uses tracepoints only, so
    // kprobes and fentry being unavailable costs nothing.
    let kprobes = Path::new("/sys/kernel/tracing/kprobe_events").exists();
    Check::new(
        "hooks",
        Status::Ok,
        format!(
            "tracepoints only (kprobes {}; not needed)",
            if kprobes { "available" } else { "unavailable" }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::parse_release;

    #[test]
    fn releases() {
        assert_eq!(parse_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_release("5.8.0"), Some((5, 8)));
        assert_eq!(parse_release("4.19"), Some((4, 19)));
        assert_eq!(parse_release("garbage"), None);
    }
}
