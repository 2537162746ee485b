//! The state program's phase timing (`TCPTRACE_KERNEL_PHASE_TIMING=1`, the
//! bench's breakdown of where the kernel time goes): it must time every run
//! of the program and every record sent, and with the setting off add
//! nothing at all.
//!
//! Truth: the kernel's own count of the program's runs (`bpf_stats`'
//! `run_cnt`), and the client namespace's `TcpActiveOpens`. The workload
//! is Debian's `ab` against Debian's nginx across two namespaces the test
//! creates.

use std::{collections::BTreeMap, process::Command, thread, time::Duration};

use serde_json::Value;
use tcptrace::probe::PHASE_TIMING_ENV;
use tcptrace_common::{
    phase_timing::{self, Phase, TRANSITIONS},
    state::raw::{CLOSE, SYN_SENT},
};
use tcptrace_tests::{
    bpf_stats::BpfStats,
    daemon::{free_loopback_addr, http_get, maps_of, programs_of, sample, Daemon},
    kernel_counts::nstat,
    netns::HostPair,
    programs::{shell_in, Nginx},
    require_root,
};

const PORT: u16 = 18460;
const REQUESTS: u64 = 200;

#[test]
fn timed_spans_count_every_run_and_record_the_kernel_counts() {
    require_root();
    let _stats = BpfStats::enable();
    let hosts = HostPair::new("ttkphase");
    let daemon = start_daemon(&[(PHASE_TIMING_ENV, "1")]);
    let opened = drive(&hosts);

    // The program runs on: its run count is read before and after the map.
    let program = state_program(&daemon);
    let runs_before = run_count(program);
    let spans = read_spans(&daemon);
    let runs_after = run_count(program);
    let timed_runs: u64 = spans[..TRANSITIONS as usize].iter().map(|s| s.1).sum();
    eprintln!(
        "timed runs {timed_runs}, kernel runs {runs_before}..{runs_after}; \
         ab's connects {opened}; spans {spans:?}"
    );
    // Every state change here is TCP's (the program times what passes its
    // protocol check; SCTP's, which would not, has no socket on this host).
    assert!(
        (runs_before..=runs_after).contains(&timed_runs),
        "every run of the program is timed: {timed_runs} timed, the kernel ran it \
         {runs_before} to {runs_after} times"
    );
    let connects = spans[phase_timing::transition(CLOSE, SYN_SENT) as usize].1;
    assert!(
        connects >= opened,
        "CLOSE -> SYN_SENT timed {connects} times, TcpActiveOpens of ab's namespace {opened}"
    );
    assert!(
        spans[..TRANSITIONS as usize]
            .iter()
            .all(|&(ns, runs)| (runs == 0) == (ns == 0)),
        "a span that ran took time, and one that did not took none: {spans:?}"
    );

    // Each record sent went through the three steps of sending once.
    let scrape = daemon.scrape();
    let sent = sample(&scrape, "tcptrace_kernel_events_sent_total", &[])
        .expect("the kernel's records sent");
    let spans = read_spans(&daemon);
    let [reserve, fill, submit] =
        [Phase::Reserve, Phase::Fill, Phase::Submit].map(|p| spans[p as usize].1);
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let reserved = reserve as f64;
    assert!(
        reserve == fill && fill == submit && reserved >= sent && reserve > 0,
        "records reserved {reserve}, filled {fill}, submitted {submit}; sent by the scrape {sent}"
    );
    assert!(
        spans[Phase::ActorAtBirth as usize].1 >= opened,
        "a task was taken at each of ab's connects: {spans:?}"
    );
}

#[test]
fn nothing_is_timed_when_the_setting_is_off() {
    require_root();
    let hosts = HostPair::new("ttkphoff");
    let daemon = start_daemon(&[]);
    let opened = drive(&hosts);
    let spans = read_spans(&daemon);
    assert!(opened >= REQUESTS, "ab's connects: {opened}");
    assert!(
        spans.iter().all(|&(ns, runs)| ns == 0 && runs == 0),
        "untimed, the map stays empty: {spans:?}"
    );
}

fn start_daemon(env: &[(&str, &str)]) -> Daemon {
    let listen = free_loopback_addr();
    let ready = listen.clone();
    Daemon::start_with_env(&listen, &[], env, move || {
        matches!(http_get(&ready, "/healthz", &[]), Some((200, _)))
    })
}

/// `ab` in namespace b against nginx in namespace a; the connects
/// `TcpActiveOpens` of namespace b counted.
fn drive(hosts: &HostPair) -> u64 {
    let before = nstat(&hosts.b)["TcpActiveOpens"];
    let nginx = Nginx::start(&hosts.a, &format!("{}:{PORT}", hosts.a_addr));
    shell_in(
        &hosts.b,
        Duration::from_mins(1),
        &format!(
            "ab -q -n {REQUESTS} -c 4 -s 5 http://{}:{PORT}/ >/dev/null",
            hosts.a_addr
        ),
    );
    drop(nginx);
    // Softirq work of the last connections (their final ACKs) runs on.
    thread::sleep(Duration::from_millis(500));
    nstat(&hosts.b)["TcpActiveOpens"] - before
}

/// The id of the daemon's state-change program.
fn state_program(daemon: &Daemon) -> u64 {
    programs_of(daemon.pid())
        .into_iter()
        .find(|&id| {
            bpftool(&["prog", "show", "id", &id.to_string()])["name"] == "tcptrace_state_summary"
        })
        .expect("the daemon's tcptrace_state_summary program")
}

fn run_count(program: u64) -> u64 {
    bpftool(&["prog", "show", "id", &program.to_string()])["run_cnt"]
        .as_u64()
        .expect("run_cnt: bpf_stats is on")
}

/// (nanoseconds, runs) of each span, summed over CPUs, from the daemon's
/// `PHASE_NS` map.
fn read_spans(daemon: &Daemon) -> Vec<(u64, u64)> {
    let map = maps_of(daemon.pid())
        .into_iter()
        .find(|&id| bpftool(&["map", "show", "id", &id.to_string()])["name"] == "PHASE_NS")
        .expect("the daemon's PHASE_NS map");
    let entries = bpftool(&["map", "dump", "id", &map.to_string()]);
    let mut sums = BTreeMap::new();
    for entry in entries.as_array().expect("entries") {
        let entry = entry.get("formatted").unwrap_or(entry);
        let key = number(&entry["key"]).expect("key");
        let total: u64 = entry["values"]
            .as_array()
            .expect("values per CPU")
            .iter()
            .map(|v| number(&v["value"]).expect("value"))
            .sum();
        sums.insert(key, total);
    }
    (0..u64::from(phase_timing::SPANS))
        .map(|span| (sums[&(2 * span)], sums[&(2 * span + 1)]))
        .collect()
}

/// A number as bpftool prints it: plain (with BTF), or little-endian bytes
/// in hex strings.
fn number(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    value.as_array()?.iter().rev().try_fold(0u64, |acc, byte| {
        let byte = u64::from_str_radix(byte.as_str()?.trim_start_matches("0x"), 16).ok()?;
        Some(acc << 8 | byte)
    })
}

fn bpftool(args: &[&str]) -> Value {
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
