//! The kernel's own view of a network namespace, to compare tcptrace's
//! numbers with: SNMP/netstat counters (`nstat`) and socket states (`ss`),
//! read inside the namespace with iproute2, which nobody here wrote.

use std::{collections::BTreeMap, process::Command};

use serde_json::Value;

/// Every TCP counter of `netns` (absolute values: a namespace the test
/// created starts at zero), as `nstat -asz --json` prints them:
/// `TcpActiveOpens`, `TcpPassiveOpens`, `TcpAttemptFails`, `TcpOutRsts`,
/// `TcpRetransSegs`, `TcpExtTCPSynRetrans`, ...
#[must_use]
pub fn nstat(netns: &str) -> BTreeMap<String, u64> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "nstat", "-asz", "--json"])
        .output()
        .expect("run nstat (iproute2)");
    assert!(
        out.status.success(),
        "nstat in {netns} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("nstat --json output");
    json["kernel"]
        .as_object()
        .expect("nstat's \"kernel\" object")
        .iter()
        .filter(|(name, _)| name.starts_with("Tcp"))
        .map(|(name, value)| (name.clone(), value.as_u64().unwrap_or(0)))
        .collect()
}

/// Sockets of `netns` in `state` (an `ss` state filter: `time-wait`,
/// `close-wait`, `established`, ...), IPv4 and IPv6.
#[must_use]
pub fn ss_count(netns: &str, state: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "ss", "-Htan", "state", state])
        .output()
        .expect("run ss (iproute2)");
    assert!(
        out.status.success(),
        "ss in {netns} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count() as u64
}

/// `ss -tnoH state established` lines in `netns` towards port `port`.
pub fn established_to(netns: &str, port: u16) -> Vec<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "ss",
            "-tnoH",
            "state",
            "established",
        ])
        .arg(format!("( dport = :{port} )"))
        .output()
        .expect("run ss (iproute2)");
    assert!(out.status.success(), "ss in {netns} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}
