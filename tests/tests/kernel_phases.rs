//! The state program's phase timing (`TCPTRACE_KERNEL_PHASE_TIMING=1`, the
//! bench's breakdown of where the kernel time goes): it must time every run
//! of the program and every record sent, and with the setting off add
//! nothing at all.
//!
//! Truth: the kernel's own count of the program's runs (`bpf_stats`'
//! `run_cnt`), and the client namespace's `TcpActiveOpens`. The workload
//! is Debian's `ab` against Debian's nginx across two namespaces the test
//! creates.

use std::{thread, time::Duration};

use tcptrace::probe::{
    phase_timing::{self as phase_map, SpanTotal},
    PHASE_TIMING_ENV,
};
use tcptrace_common::{
    phase_timing::{self, Phase, TRANSITIONS},
    state::raw::{CLOSE, SYN_SENT},
};
use tcptrace_tests::{
    bpf_stats::BpfStats,
    daemon::{bpftool, free_loopback_addr, http_get, maps_of, programs_of, sample, Daemon},
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
    let runs_before = state_program_runs(&daemon);
    let spans = read_spans(&daemon);
    let runs_after = state_program_runs(&daemon);
    let timed_runs: u64 = spans[..TRANSITIONS as usize].iter().map(|s| s.runs).sum();
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
    let connects = spans[phase_timing::transition(CLOSE, SYN_SENT) as usize].runs;
    assert!(
        connects >= opened,
        "CLOSE -> SYN_SENT timed {connects} times, TcpActiveOpens of ab's namespace {opened}"
    );
    assert!(
        spans[..TRANSITIONS as usize]
            .iter()
            .all(|s| (s.runs == 0) == (s.ns == 0)),
        "a span that ran took time, and one that did not took none: {spans:?}"
    );

    // Each record sent went through the three steps of sending once.
    let scrape = daemon.scrape();
    let sent = sample(&scrape, "tcptrace_kernel_events_sent_total", &[])
        .expect("the kernel's records sent");
    let spans = read_spans(&daemon);
    let [reserve, fill, submit] =
        [Phase::Reserve, Phase::Fill, Phase::Submit].map(|p| spans[p as usize].runs);
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let reserved = reserve as f64;
    assert!(
        reserve == fill && fill == submit && reserved >= sent && reserve > 0,
        "records reserved {reserve}, filled {fill}, submitted {submit}; sent by the scrape {sent}"
    );
    assert!(
        spans[Phase::ActorAtBirth as usize].runs >= opened,
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
        spans.iter().all(|s| *s == SpanTotal::default()),
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
/// `TcpActiveOpens` of namespace b counted (a namespace the test created:
/// its counters start at zero).
fn drive(hosts: &HostPair) -> u64 {
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
    nstat(&hosts.b)["TcpActiveOpens"]
}

/// The kernel's run count (`bpf_stats`) of the daemon's state-change
/// program. bpftool gives its whole name (from BTF; the kernel keeps 15
/// characters of it).
fn state_program_runs(daemon: &Daemon) -> u64 {
    programs_of(daemon.pid())
        .into_iter()
        .map(|id| bpftool(&["prog", "show", "id", &id.to_string()]))
        .find(|prog| prog["name"] == "tcptrace_state_summary")
        .expect("the daemon's tcptrace_state_summary program")["run_cnt"]
        .as_u64()
        .expect("run_cnt: bpf_stats is on")
}

/// Each span's totals over CPUs, from the daemon's `PHASE_NS` map.
fn read_spans(daemon: &Daemon) -> Vec<SpanTotal> {
    let ours = maps_of(daemon.pid());
    let ids = phase_map::map_ids().expect("the kernel's maps");
    let id = ids
        .iter()
        .find(|&&id| ours.contains(&u64::from(id)))
        .unwrap_or_else(|| panic!("none of the PHASE_NS maps {ids:?} is the daemon's"));
    phase_map::read(*id).expect("reading PHASE_NS")
}
