//! The words findings are written in for people: processes, call sites,
//! durations. Text from outside (comms, names, debug info) is escaped.

use std::io::{self, Write};

use super::parts::{Percentiles, ProcessJson, Processes};
use crate::{callsite::CallSite, output::Escaped};

/// A call site under a row: `label function (file:line) via ...`.
pub fn call_site(out: &mut impl Write, label: &str, site: Option<&CallSite>) -> io::Result<()> {
    match site {
        Some(site) => {
            write!(out, "      {label} {}", Escaped(&site.function))?;
            if site.is_interpreted() {
                write!(out, " (interpreted)")?;
            }
            if let (Some(file), Some(line)) = (&site.file, site.line) {
                // Debug info is the binary's to say: escaped like the rest.
                write!(out, " ({}:{line})", Escaped(file))?;
            }
            if let Some(via) = &site.via {
                write!(out, " via {}", Escaped(via))?;
            }
            if let Some(reason) = &site.unresolved {
                write!(out, " ({})", Escaped(reason))?;
            }
            writeln!(out)?;
            if let Some(advice) = &site.advice {
                writeln!(
                    out,
                    "        (no frame of the program's own code: {})",
                    Escaped(advice)
                )?;
            }
            Ok(())
        }
        None => writeln!(out, "      {label} ? (no stack captured)"),
    }
}

/// A finding's process: pid, name and workload.
pub struct ShownProcess<'a>(pub Option<&'a ProcessJson>);

/// A finding's process, or its program and how many processes of it the
/// finding folds (a shell loop's 200 curls).
pub struct FoldedProcess<'a>(pub Option<&'a ProcessJson>, pub &'a Processes);

impl std::fmt::Display for FoldedProcess<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0, self.1.pids) {
            (Some(p), n) if n > 1 => {
                write!(f, "{}{} ({n} processes)", Escaped(&p.comm), Workload(p))
            }
            (process, _) => ShownProcess(process).fmt(f),
        }
    }
}

impl std::fmt::Display for ShownProcess<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(p) => write!(f, "{}/{}{}", p.pid, Escaped(&p.comm), Workload(p)),
            None => f.write_str("unknown process"),
        }
    }
}

/// Where a process ran, when known: ` [namespace/pod/container]` in
/// Kubernetes (` [namespace/pod]` for the pod's own cgroup), ` [name]` for
/// a container outside it; nothing for a host process. The names come
/// from the node's runtime state: escaped like a comm.
struct Workload<'a>(&'a ProcessJson);

impl std::fmt::Display for Workload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.0;
        let names = [&p.namespace, &p.pod, &p.container];
        let names = if p.pod.is_empty() {
            &names[2..]
        } else {
            &names[..]
        };
        let mut names = names.iter().filter(|n| !n.is_empty());
        let Some(first) = names.next() else {
            return Ok(());
        };
        write!(f, " [{}", Escaped(first))?;
        for name in names {
            write!(f, "/{}", Escaped(name))?;
        }
        f.write_str("]")
    }
}

pub fn micros(us: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    match us {
        0..=999 => format!("{us}us"),
        1_000..=999_999 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

pub fn latency(p: Option<Percentiles>) -> String {
    p.map_or_else(
        || "-".to_owned(),
        |p| {
            format!(
                "p50 {} p99 {} max {}",
                micros(p.p50),
                micros(p.p99),
                micros(p.max)
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(namespace: &str, pod: &str, container: &str) -> ProcessJson {
        ProcessJson {
            pid: 42,
            comm: "api".into(),
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
            cgroup: 7,
        }
    }

    #[test]
    fn rows_name_the_workload_when_known() {
        let shown = |p: &ProcessJson| ShownProcess(Some(p)).to_string();
        assert_eq!(
            shown(&process("shop", "checkout-0", "api")),
            "42/api [shop/checkout-0/api]"
        );
        assert_eq!(
            shown(&process("shop", "checkout-0", "")),
            "42/api [shop/checkout-0]"
        );
        assert_eq!(
            shown(&process("", "", "billing-db-1")),
            "42/api [billing-db-1]"
        );
        assert_eq!(shown(&process("", "", "")), "42/api");
        // Names from the node's files cannot inject control characters.
        assert_eq!(
            shown(&process("shop", "evil\n0", "api")),
            "42/api [shop/evil\\n0/api]"
        );
        let folded = Processes {
            pids: 3,
            pid_list: vec![1, 2, 3],
        };
        let p = process("shop", "checkout-0", "api");
        assert_eq!(
            FoldedProcess(Some(&p), &folded).to_string(),
            "api [shop/checkout-0/api] (3 processes)"
        );
    }
}
