//! Summary mode's per-CPU rings of whole lives (`tcptrace_common::life_ring`)
//! against the kernel's counters, when they overflow: Debian's nginx in a
//! network namespace the test creates, served to ab (HTTP/1.0, a
//! connection per request) from another, while one summary session is
//! stopped (SIGSTOP) so that its small rings fill and the lives that do not
//! fit go through its event ring buffer instead. A second session sends
//! every life through its event ring buffer (`TCPTRACE_NO_LIFE_RINGS=1`)
//! and reads all along. Both must count what `nstat` counts, the stopped
//! one must say that its rings were full, and neither may lose anything.

use std::{thread, time::Duration};

use tcptrace_tests::{
    kernel_counts::{nstat, ss_count},
    netns::HostPair,
    programs::{shell_in, Nginx},
    require_root,
    trace::Trace,
    Tracer,
};

const PORT: u16 = 18330;
/// Connections of the burst. Only nginx's lives are whole (ab reads the
/// end of file nginx sends first, and that read is sent), and each ends
/// (`TIME_WAIT` -> CLOSE) in the softirq that takes ab's FIN, on ab's CPU.
/// ab runs on one CPU (`taskset`; unspread by the scheduler, as happened
/// in 1 of 9 runs, no ring filled), so its 2,500 lives overflow that CPU's
/// 2,048 slots (2 MiB on a machine of 2 or more CPUs) by about 460, which
/// fit beside ab's records in the event ring of about 4,700.
const REQUESTS: u64 = 2_500;
/// The CPU ab runs on.
const CLIENT_CPU: u32 = 0;
/// Runs before the test gives up finding one in which no session missed
/// a program run (the kernel skips a run nested in its own on one CPU:
/// rare, and said by the session, but its counts then cannot agree).
const RUNS: usize = 3;

/// What a session or the kernel says about the burst.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Figures {
    /// ab's connects (`TcpActiveOpens` of the clients' namespace).
    connects: u64,
    /// nginx's accepted connections (`TcpPassiveOpens` of the server's).
    accepted: u64,
    /// nginx's connections closed (all of them, by the end).
    served: u64,
    /// nginx's `TIME_WAIT` (it closes first under HTTP/1.0).
    time_wait_server: u64,
}

fn findings_sum(trace: &Trace, kind: &str, comm: &str, key: &str) -> u64 {
    trace
        .findings(kind)
        .filter(|f| f["process"]["comm"] == comm)
        .map(|f| f[key].as_u64().unwrap_or(0))
        .sum()
}

fn figures_of(trace: &Trace) -> Figures {
    Figures {
        connects: findings_sum(trace, "connect", "ab", "attempts"),
        accepted: findings_sum(trace, "accept", "nginx", "established"),
        served: trace
            .findings("churn")
            .filter(|f| f["process"]["comm"] == "nginx" && f["role"] == "passive")
            .map(|f| f["connections"].as_u64().unwrap_or(0))
            .sum(),
        time_wait_server: findings_sum(trace, "churn", "nginx", "time_wait_now"),
    }
}

fn kernel_counter(trace: &Trace, name: &str) -> u64 {
    trace.summary()["summary"]["kernel"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("the summary's kernel counters have {name}"))
}

/// One burst; `None` when a session missed program runs (shown).
fn run(attempt: usize) -> Option<()> {
    let hosts = HostPair::new(&format!("tlife{attempt}"));
    let url = format!("http://{}:{PORT}/", hosts.a_addr);
    let nginx = Nginx::start(&hosts.a, &format!("{}:{PORT}", hosts.a_addr));
    let small = ["--ring-buffer-mib", "2"];
    let stopped = Tracer::start_report_only(&small);
    let through_events =
        Tracer::start_report_only_with_env(&small, &[("TCPTRACE_NO_LIFE_RINGS", "1")]);
    let (server_before, clients_before) = (nstat(&hosts.a), nstat(&hosts.b));

    stopped.pause(true);
    shell_in(
        &hosts.b,
        Duration::from_mins(1),
        &format!("taskset -c {CLIENT_CPU} ab -q -n {REQUESTS} -c 4 -s 5 {url} >/dev/null"),
    );
    stopped.pause(false);
    let (server, clients) = (nstat(&hosts.a), nstat(&hosts.b));
    let delta = |after: &std::collections::BTreeMap<String, u64>,
                 before: &std::collections::BTreeMap<String, u64>,
                 key: &str| after[key] - before.get(key).copied().unwrap_or(0);
    let kernel = Figures {
        connects: delta(&clients, &clients_before, "TcpActiveOpens"),
        accepted: delta(&server, &server_before, "TcpPassiveOpens"),
        served: delta(&server, &server_before, "TcpPassiveOpens"),
        time_wait_server: ss_count(&hosts.a, "time-wait"),
    };
    // The stopped session catches up on its drain timer.
    thread::sleep(Duration::from_secs(1));
    let stopped = stopped.stop();
    let through_events = through_events.stop();
    drop(nginx);

    let sessions = [
        ("stopped, rings full", &stopped),
        ("through the event ring", &through_events),
    ];
    eprintln!(
        "{:<24} {:>8} {:>8} {:>8} {:>8}",
        "source", "connects", "accepted", "served", "TW srv"
    );
    let row = |name: &str, f: &Figures| {
        eprintln!(
            "{name:<24} {:>8} {:>8} {:>8} {:>8}",
            f.connects, f.accepted, f.served, f.time_wait_server
        );
    };
    row("kernel (nstat, ss)", &kernel);
    for (name, trace) in sessions {
        row(name, &figures_of(trace));
    }
    let full = kernel_counter(&stopped, "life_ring_full");
    eprintln!(
        "stopped session: {full} whole lives sent through its event ring, {} events sent",
        kernel_counter(&stopped, "events_sent")
    );
    let unseen: Vec<(&str, u64)> = sessions
        .iter()
        .map(|(name, trace)| (*name, trace.unseen()))
        .filter(|&(_, unseen)| unseen > 0)
        .collect();
    if !unseen.is_empty() {
        eprintln!(
            "run {attempt}: sessions missed events {unseen:?}; their counts cannot be compared"
        );
        return None;
    }

    assert!(
        kernel.connects >= REQUESTS,
        "ab made a connection per request: {kernel:?}"
    );
    for (name, trace) in sessions {
        assert_eq!(
            figures_of(trace),
            kernel,
            "{name} counts what the kernel counts"
        );
        assert_eq!(
            kernel_counter(trace, "events_lost"),
            0,
            "{name} lost nothing"
        );
    }
    assert!(
        full > 0,
        "{REQUESTS} connections from one CPU while stopped overflow its ring of whole lives \
         (2 MiB, at least 2 CPUs): {}",
        stopped.summary()
    );
    assert_eq!(
        kernel_counter(&through_events, "life_ring_full"),
        0,
        "a session without the rings never finds one full"
    );
    Some(())
}

#[test]
fn whole_lives_that_overflow_their_ring_are_sent_and_counted_not_lost() {
    require_root();
    for attempt in 1..=RUNS {
        if run(attempt).is_some() {
            return;
        }
    }
    panic!(
        "sessions missed events in each of {RUNS} runs (tables above): nothing could be compared"
    );
}
