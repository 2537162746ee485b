//! Every diagnosis on synthetic event sequences: the table and the
//! diagnoses are fed exactly what the kernel would send.

use std::time::Duration;

use tcptrace_common::{Task, TcpState::*};

use super::Diagnoses;
use crate::{
    callsite::CallSites,
    event::{
        synthetic::{task, Conn, MS, SEC},
        TcpEvent,
    },
    findings::{build_report, Finding, Report, ReportInput},
    owner::{self, StartOwners},
    proc_fds::FdHolder,
    snapshot::{ExistingSocket, Snapshot},
    table::{Applied, SocketTable},
};

#[derive(Default)]
struct Pipeline {
    table: SocketTable,
    diagnoses: Diagnoses,
    call_sites: CallSites,
    /// The sockets of the start snapshot.
    start: StartOwners,
}

impl Pipeline {
    fn feed(&mut self, event: &TcpEvent) {
        let start = StartOwners::default();
        let owner = owner::resolve(event, &start);
        match self.table.apply(event, owner.as_ref()) {
            Applied::Live(skaddr) => {
                let record = self.table.get(skaddr).expect("live record");
                self.diagnoses.on_event(event, record);
            }
            Applied::Closed => {
                let record = self.table.closed().expect("the closed record");
                self.diagnoses.on_closed(record, event);
            }
            Applied::Untracked => {}
        }
    }

    fn report(&self, now: &Snapshot, now_ns: u64) -> Report {
        build_report(
            &self.diagnoses,
            &ReportInput {
                table: &self.table,
                sockets_now: now,
                owned: now,
                filter: &crate::filter::Filter::default(),
                workloads: &crate::filter::Workloads::default(),
                now_ns,
                elapsed: Duration::from_secs(10),
                call_sites: &self.call_sites,
                events_lost: 0,
                sockets_untracked: 0,
                idle_threshold: crate::findings::DEFAULT_IDLE_THRESHOLD,
                start: &self.start,
                first_seen: &crate::first_seen::FirstSeen::default(),
                births: &crate::live_births::LiveBirths::default(),
            },
        )
    }
}

/// Histograms keep 2 significant digits (1%).
fn assert_close(value: u64, expected: u64) {
    assert!(
        value.abs_diff(expected) <= expected / 100,
        "{value} is not {expected}"
    );
}

fn findings<'a, T>(report: &'a Report, pick: impl Fn(&'a Finding) -> Option<&'a T>) -> Vec<&'a T> {
    report.findings.iter().filter_map(pick).collect()
}

/// A client that opens, uses and closes a connection per request, every
/// time at the same (reused) struct sock address: churn and `TIME_WAIT`.
fn client_per_request(p: &mut Pipeline, client: Task, count: u64, start: u64, gap: u64) {
    for i in 0..count {
        let t = start + i * gap;
        let local = format!("127.0.0.1:{}", 40000 + i);
        let mut c = Conn::active(0xffff_1000, client, &local, "10.0.0.9:6379");
        p.feed(&c.state(t, Close, SynSent));
        let mut established = c.state(t + MS, SynSent, Established);
        established.in_state_ns = Some(MS);
        p.feed(&established);
        p.feed(&c.closed_by(t + 3 * MS, Established, FinWait1, client));
        p.feed(&c.state(t + 4 * MS, FinWait1, FinWait2));
        p.feed(&c.state(t + 5 * MS, FinWait2, Close));
    }
}

#[test]
fn churn_counts_time_wait_by_closer_and_peer_despite_address_reuse() {
    let mut p = Pipeline::default();
    let client = task(100, "gateway", 3);
    client_per_request(&mut p, client, 20, 0, 10 * MS);
    let report = p.report(&Snapshot::default(), SEC);
    let churn = findings(&report, |f| match f {
        Finding::Churn(c) => Some(c),
        _ => None,
    });
    assert_eq!(churn.len(), 1);
    let c = churn[0];
    assert_eq!(
        c.process.as_ref().map(|p| (p.pid, p.comm.as_str())),
        Some((100, "gateway"))
    );
    assert_eq!(c.peer, "10.0.0.9:6379");
    assert_eq!(
        (c.connections, c.active_closes, c.passive_closes),
        (20, 20, 0)
    );
    assert_eq!(
        c.time_wait_now, 20,
        "every active close left a TIME_WAIT socket"
    );
    assert_close(c.lifetime_us.unwrap().p50, 5_000);
    // 60 s later they are gone.
    assert_eq!(
        p.report(&Snapshot::default(), 62 * SEC)
            .totals
            .time_wait_modelled,
        0
    );
    assert_eq!(
        p.table.replaced, 0,
        "each CLOSE ended its record before the address came back"
    );
    // Closing our own connections is churn, not a reconnect loop.
    assert!(findings(&report, |f| match f {
        Finding::ReconnectLoop(r) => Some(r),
        _ => None,
    })
    .is_empty());
}

#[test]
fn reconnect_loop_against_a_server_that_closes_first() {
    let mut p = Pipeline::default();
    let client = task(200, "zk-client", 4);
    for i in 0..10u64 {
        let t = i * 20 * MS;
        let c = Conn::active(
            0xffff_2000 + i,
            client,
            &format!("127.0.0.1:{}", 41000 + i),
            "10.0.0.7:2181",
        );
        p.feed(&c.state(t, Close, SynSent));
        p.feed(&c.state(t + MS, SynSent, Established));
        p.feed(&c.state(t + 2 * MS, Established, CloseWait)); // the server closes
        let mut c = c;
        p.feed(&c.closed_by(t + 3 * MS, CloseWait, LastAck, client));
        p.feed(&c.state(t + 4 * MS, LastAck, Close));
    }
    let report = p.report(&Snapshot::default(), SEC);
    let loops = findings(&report, |f| match f {
        Finding::ReconnectLoop(r) => Some(r),
        _ => None,
    });
    assert_eq!(loops.len(), 1, "{report:#?}");
    let r = loops[0];
    assert_eq!(r.process.as_ref().map(|p| p.pid), Some(200));
    assert_eq!(r.attempts, 10);
    assert!(
        (r.per_second - 50.0).abs() < 1.0,
        "one attempt every 20 ms: {}",
        r.per_second
    );
    assert_close(r.median_lifetime_us.unwrap(), 4_000);
    assert_eq!(r.backoff, super::reconnect::Backoff::None);
    // The churn row of the same connections gives the same rate (over the
    // window they happened in), not one diluted by the rest of the session.
    let churn = findings(&report, |f| match f {
        Finding::Churn(c) => Some(c),
        _ => None,
    });
    assert_eq!(churn.len(), 1, "{report:#?}");
    assert!(
        (churn[0].per_second - r.per_second).abs() / r.per_second < 0.15,
        "churn {}/s, loop {}/s",
        churn[0].per_second,
        r.per_second
    );
}

/// The same rhythm against a server that answers each request and then
/// closes (HTTP/1.0, `ab`): ordinary request/response, not a loop.
#[test]
fn a_server_that_answers_then_closes_is_not_a_loop() {
    let mut p = Pipeline::default();
    let client = task(202, "ab", 4);
    for i in 0..10u64 {
        let t = i * 20 * MS;
        let mut c = Conn::active(
            0xffff_2200 + i,
            client,
            &format!("127.0.0.1:{}", 43000 + i),
            "10.0.0.7:80",
        );
        p.feed(&c.state(t, Close, SynSent));
        p.feed(&c.state(t + MS, SynSent, Established));
        c.sock.flags |= tcptrace_common::PEER_SENT_DATA; // the response, then the FIN
        p.feed(&c.state(t + 2 * MS, Established, CloseWait));
        p.feed(&c.closed_by(t + 3 * MS, CloseWait, LastAck, client));
        p.feed(&c.state(t + 4 * MS, LastAck, Close));
    }
    let report = p.report(&Snapshot::default(), SEC);
    assert!(
        report
            .findings
            .iter()
            .all(|f| !matches!(f, Finding::ReconnectLoop(_))),
        "{report:#?}"
    );
}

#[test]
fn exponential_backoff_is_not_a_loop() {
    let mut p = Pipeline::default();
    let client = task(201, "polite", 4);
    let mut t = 0;
    for i in 0..8u64 {
        let c = Conn::active(
            0xffff_2100 + i,
            client,
            &format!("127.0.0.1:{}", 42000 + i),
            "10.0.0.7:2181",
        );
        p.feed(&c.state(t, Close, SynSent));
        p.feed(&c.dies(t + MS, SynSent, Some(libc::ECONNREFUSED)));
        t += (1 << i) * 100 * MS;
    }
    let report = p.report(&Snapshot::default(), t);
    assert!(report
        .findings
        .iter()
        .all(|f| !matches!(f, Finding::ReconnectLoop(_))));
    let connect = findings(&report, |f| match f {
        Finding::Connect(c) => Some(c),
        _ => None,
    });
    assert_eq!(connect[0].failures.refused, 8);
}

/// FINs acknowledged after two retransmits crossed a lossy path: their own
/// finding, not a dead peer.
#[test]
fn acknowledged_fin_retransmits_are_not_a_dead_peer() {
    let mut p = Pipeline::default();
    let client = task(301, "uploader", 5);
    let mut c = Conn::active(0xffff_3100, client, "10.0.0.1:42000", "10.0.0.70:443");
    p.feed(&c.state(0, Close, SynSent));
    p.feed(&c.state(MS, SynSent, Established));
    p.feed(&c.closed_by(SEC, Established, FinWait1, client));
    p.feed(&c.retransmit(SEC + 200 * MS, FinWait1));
    p.feed(&c.retransmit(SEC + 600 * MS, FinWait1));
    p.feed(&c.state(SEC + 700 * MS, FinWait1, FinWait2)); // acknowledged
    p.feed(&c.state(SEC + 800 * MS, FinWait2, Close));

    let report = p.report(&Snapshot::default(), 2 * SEC);
    assert!(
        report
            .findings
            .iter()
            .all(|f| !matches!(f, Finding::DeadPeerFin(_))),
        "{report:#?}"
    );
    let recovered = findings(&report, |f| match f {
        Finding::FinRetransmitsRecovered(d) => Some(d),
        _ => None,
    });
    assert_eq!(recovered.len(), 1, "{report:#?}");
    assert_eq!(
        (recovered[0].retransmits, recovered[0].outcomes.acknowledged),
        (2, 1)
    );
}

#[test]
fn dead_peer_fin_retransmits_belong_to_the_late_closer() {
    let mut p = Pipeline::default();
    let server = task(300, "storage", 5);
    let mut c = Conn::passive(0xffff_3000, server, "10.0.0.1:9000", "10.0.0.50:51000");
    late_close_unacknowledged(&mut p, &mut c, server);
    // An ordinary data retransmit elsewhere must not count as a FIN one.
    let mut other = Conn::active(0xffff_3001, server, "10.0.0.1:41000", "10.0.0.60:80");
    p.feed(&other.state(0, Close, SynSent));
    p.feed(&other.state(MS, SynSent, Established));
    p.feed(&other.retransmit(2 * MS, Established));
    p.feed(&c.dies(122 * SEC, LastAck, Some(libc::ETIMEDOUT)));

    let report = p.report(&Snapshot::default(), 123 * SEC);
    let d = the_dead_peer_row(&report);
    assert_eq!(d.process.as_ref().map(|p| p.pid), Some(300));
    assert_eq!(
        d.peer, "10.0.0.50:0",
        "a server's clients are grouped by address"
    );
    assert_eq!((d.retransmits, d.outcomes.gave_up), (3, 1));
    assert_eq!(d.states, ["LAST_ACK"]);
    assert!(
        (d.seconds - 2.0).abs() < 1e-6,
        "FIN sent at 120 s, gave up at 122 s: {}",
        d.seconds
    );
    assert_eq!(
        d.verdict,
        "peer never acknowledged; gave up after 3 retransmits over 2.0 s"
    );
}

/// An accepted connection whose client closed and left; the server closes
/// two minutes later, and three FIN retransmits go unanswered.
fn late_close_unacknowledged(p: &mut Pipeline, c: &mut Conn, server: Task) {
    p.feed(&c.state(0, Listen, SynRecv));
    p.feed(&c.state(MS, SynRecv, Established));
    p.feed(&c.state(2 * MS, Established, CloseWait));
    p.feed(&c.closed_by(120 * SEC, CloseWait, LastAck, server));
    for k in 1..=3u64 {
        p.feed(&c.retransmit(120 * SEC + k * 200 * MS, LastAck));
    }
}

/// The report's one dead-peer row.
fn the_dead_peer_row(report: &Report) -> &crate::findings::DeadPeerFin {
    let dead = findings(report, |f| match f {
        Finding::DeadPeerFin(d) => Some(d),
        _ => None,
    });
    assert_eq!(dead.len(), 1, "{report:#?}");
    dead[0]
}

/// A method closing late, once interpreted and then compiled: two stacks
/// that name the same user code, one row.
#[test]
fn fin_retransmits_of_one_method_by_two_paths_are_one_row() {
    let mut p = Pipeline::default();
    let flush = crate::callsite::CallSite {
        function: "void Store.flush()".to_owned(),
        file: None,
        line: None,
        via: None,
        user_code: true,
        advice: None,
        frames: Vec::new(),
        unresolved: None,
    };
    p.call_sites = CallSites::recorded(
        [7, 8]
            .map(|stack| (crate::table::StackRef { pid: 300, stack }, flush.clone()))
            .into(),
    );
    for (i, stack) in [7_u64, 8].into_iter().enumerate() {
        let server = task(300, "storage", stack);
        let client = format!("10.0.0.50:5100{i}");
        let mut c = Conn::passive(0xffff_3000 + stack, server, "10.0.0.1:9000", &client);
        late_close_unacknowledged(&mut p, &mut c, server);
        p.feed(&c.dies(122 * SEC, LastAck, Some(libc::ETIMEDOUT)));
    }

    let report = p.report(&Snapshot::default(), 123 * SEC);
    let d = the_dead_peer_row(&report);
    assert_eq!(
        (d.sockets, d.retransmits, d.outcomes.gave_up),
        (2, 6, 2),
        "{d:#?}"
    );
    assert_eq!(
        d.call_site.as_ref().map(|s| s.function.as_str()),
        Some("void Store.flush()")
    );
}

#[test]
fn close_wait_leak_ages_exact_or_at_least() {
    let mut p = Pipeline::default();
    let server = task(400, "leaky", 6);
    let c = Conn::passive(0xffff_4000, server, "10.0.0.1:8080", "10.0.0.70:50000");
    p.feed(&c.state(0, Listen, SynRecv));
    p.feed(&c.state(MS, SynRecv, Established));
    p.feed(&c.state(2 * SEC, Established, CloseWait));
    let holder = |fd| FdHolder {
        pid: 400,
        fd,
        comm: "leaky".into(),
    };
    let socket = |remote: &str, fd| ExistingSocket {
        netns: 0,
        state: CloseWait,
        local: "10.0.0.1:8080".parse().unwrap(),
        remote: remote.parse().unwrap(),
        inode: 1000 + u64::from(fd),
        uid: 0,
        holders: [holder(fd)].into_iter().collect(),
        activity: None,
    };
    // One traced into CLOSE_WAIT, one already there before tracing began.
    p.start = StartOwners::of(&Snapshot::from_sockets(
        vec![socket("10.0.0.71:50001", 8)],
        0,
    ));
    let now = Snapshot::from_sockets(
        vec![socket("10.0.0.70:50000", 7), socket("10.0.0.71:50001", 8)],
        0,
    );
    let report = p.report(&now, 9 * SEC);
    let leaks = findings(&report, |f| match f {
        Finding::CloseWaitLeak(l) => Some(l),
        _ => None,
    });
    // Grouped by call site: the traced one has its listener's stack, the
    // older one none, so two groups of the same process.
    assert_eq!(leaks.len(), 2, "{leaks:#?}");
    let traced = leaks
        .iter()
        .find(|l| !l.age_is_lower_bound)
        .expect("traced leak");
    assert!((traced.oldest_age_s - 7.0).abs() < 1e-6);
    assert_eq!(
        traced.fds.iter().map(|f| (f.pid, f.fd)).collect::<Vec<_>>(),
        [(400, 7)]
    );
    let older = leaks
        .iter()
        .find(|l| l.age_is_lower_bound)
        .expect("pre-existing leak");
    assert!(
        (older.oldest_age_s - 10.0).abs() < 1e-6,
        "at least the session length"
    );
    assert_eq!(
        older.process.as_ref().map(|p| p.pid),
        Some(400),
        "owner from the fd scan"
    );
    assert_eq!(report.totals.close_wait_kernel, 2);
}

/// A socket in `CLOSE_WAIT` whose entry was never seen and that was not
/// there at the start (its event was lost): its age is not the session's.
#[test]
fn close_wait_leak_of_a_lost_entry_claims_no_session_age() {
    let p = Pipeline::default();
    let socket = ExistingSocket {
        netns: 0,
        state: CloseWait,
        local: "10.0.0.1:8080".parse().unwrap(),
        remote: "10.0.0.72:50002".parse().unwrap(),
        inode: 1009,
        uid: 0,
        holders: [FdHolder {
            pid: 400,
            fd: 9,
            comm: "leaky".into(),
        }]
        .into_iter()
        .collect(),
        activity: None,
    };
    let report = p.report(&Snapshot::from_sockets(vec![socket], 0), 9 * SEC);
    let leaks = findings(&report, |f| match f {
        Finding::CloseWaitLeak(l) => Some(l),
        _ => None,
    });
    assert_eq!(leaks.len(), 1, "{leaks:#?}");
    assert!(leaks[0].age_is_lower_bound);
    assert!(
        leaks[0].oldest_age_s < 1e-6,
        "no dump listed it before: at least 0 s, not the session's 10 s"
    );
}

#[test]
fn connect_failures_by_cause_and_latency() {
    let mut p = Pipeline::default();
    let client = task(500, "curl", 7);
    let causes = [
        Some(libc::ECONNREFUSED),
        Some(libc::ETIMEDOUT),
        Some(libc::EHOSTUNREACH),
        Some(libc::ECONNRESET),
    ];
    for (i, error) in causes.into_iter().enumerate() {
        let c = Conn::active(
            0xffff_5000 + i as u64,
            client,
            "10.0.0.1:0",
            "10.0.0.80:443",
        );
        p.feed(&c.state(0, Close, SynSent));
        if error == Some(libc::ETIMEDOUT) {
            let mut c = Conn::active(c.skaddr, client, "10.0.0.1:0", "10.0.0.80:443");
            p.feed(&c.retransmit(SEC, SynSent));
            p.feed(&c.dies(3 * SEC, SynSent, error));
        } else {
            p.feed(&c.dies(MS, SynSent, error));
        }
    }
    // The caller gives up (close() during connect): process context, no error.
    let mut aborted = Conn::active(0xffff_5010, client, "10.0.0.1:0", "10.0.0.80:443");
    p.feed(&aborted.state(0, Close, SynSent));
    p.feed(&aborted.closed_by(5 * MS, SynSent, Close, client));
    let ok = Conn::active(0xffff_5011, client, "10.0.0.1:43000", "10.0.0.80:443");
    p.feed(&ok.state(0, Close, SynSent));
    let mut established = ok.state(2 * MS, SynSent, Established);
    established.in_state_ns = Some(2 * MS);
    p.feed(&established);

    let report = p.report(&Snapshot::default(), 4 * SEC);
    let connect = findings(&report, |f| match f {
        Finding::Connect(c) => Some(c),
        _ => None,
    });
    let c = connect[0];
    let f = &c.failures;
    assert_eq!(
        (f.refused, f.timed_out, f.unreachable, f.reset, f.aborted),
        (1, 1, 1, 1, 1)
    );
    assert_eq!((c.attempts, c.established, c.syn_retransmits), (6, 1, 1));
    assert_close(c.latency_us.unwrap().p50, 2_000);
}

#[test]
fn process_exit_mid_session_keeps_attribution() {
    // The owner exits right after close(): the kernel's record still names
    // it, so TIME_WAIT and the closing are attributed to it afterwards.
    let mut p = Pipeline::default();
    let shortlived = task(600, "cronjob", 8);
    client_per_request(&mut p, shortlived, 1, 0, MS);
    let report = p.report(&Snapshot::default(), SEC);
    let churn = findings(&report, |f| match f {
        Finding::Churn(c) => Some(c),
        _ => None,
    });
    assert_eq!(churn[0].process.as_ref().map(|p| p.pid), Some(600));
    assert_eq!(churn[0].time_wait_now, 1);
}

#[test]
fn established_connections_that_time_out_are_lost_by_their_cause() {
    let mut p = Pipeline::default();
    let client = task(400, "pool", 9);
    // Keepalive gave up: nothing outstanding.
    let quiet = Conn::active(0xffff_4000, client, "10.0.0.1:42000", "10.0.0.70:5432");
    p.feed(&quiet.state(0, Close, SynSent));
    p.feed(&quiet.state(MS, SynSent, Established));
    p.feed(&quiet.dies(600 * SEC, Established, Some(libc::ETIMEDOUT)));
    // Retransmits gave up on data.
    let mut busy = Conn::active(0xffff_4001, client, "10.0.0.1:42001", "10.0.0.70:5432");
    p.feed(&busy.state(0, Close, SynSent));
    p.feed(&busy.state(MS, SynSent, Established));
    p.feed(&busy.retransmit(900 * SEC, Established));
    p.feed(&busy.dies(915 * SEC, Established, Some(libc::ETIMEDOUT)));
    // A connect that timed out is a connect failure, not a lost connection.
    let never = Conn::active(0xffff_4002, client, "10.0.0.1:42002", "10.0.0.70:5432");
    p.feed(&never.state(0, Close, SynSent));
    p.feed(&never.dies(SEC, SynSent, Some(libc::ETIMEDOUT)));

    let report = p.report(&Snapshot::default(), 1000 * SEC);
    let lost = findings(&report, |f| match f {
        Finding::LostConnection(l) => Some(l),
        _ => None,
    });
    assert_eq!(lost.len(), 1, "{report:#?}");
    assert_eq!(
        (lost[0].keepalive_timeouts, lost[0].retransmit_timeouts),
        (1, 1),
        "{report:#?}"
    );
    assert_eq!(lost[0].peer, "10.0.0.70:5432");
    // Lifetimes are kept in a histogram of 2 significant digits: within 1 %.
    let longest = lost[0].longest_lifetime_s;
    assert!((914.0..=915.0 * 1.01).contains(&longest), "{longest}");
}

#[test]
fn peer_resets_are_lost_connections_only_after_a_long_silence() {
    let mut p = Pipeline::default();
    let client = task(500, "api", 11);
    let peer = "10.0.0.80:443";
    let opened = |p: &mut Pipeline, skaddr, local| {
        let conn = Conn::active(skaddr, client, local, peer);
        p.feed(&conn.state(0, Close, SynSent));
        p.feed(&conn.state(MS, SynSent, Established));
        p.feed(&conn.reset_received(600 * SEC));
        conn
    };
    // The peer silent for 10 minutes, then a reset (an idle timeout in a
    // middlebox): lost. The threshold is 30 s.
    let idle = opened(&mut p, 0xffff_5000, "10.0.0.1:43000");
    p.feed(&idle.reset_after_silence(600 * SEC, 599 * SEC));
    // As long a life, but busy until the reset: an abortive close, not lost.
    let busy = opened(&mut p, 0xffff_5001, "10.0.0.1:43001");
    p.feed(&busy.reset_after_silence(600 * SEC, 20 * MS));
    // A writer's connection silent as long, whose reset came back inside
    // its write() (from the socket's backlog: the CLOSE has the writer as
    // its actor): lost as well.
    let written = opened(&mut p, 0xffff_5003, "10.0.0.1:43003");
    let mut in_write = written.reset_after_silence(600 * SEC, 599 * SEC);
    in_write.actor = Some(client);
    p.feed(&in_write);
    // Silence unmeasured (an old kernel): the life stands in for it, and 2
    // seconds is short.
    let young = Conn::active(0xffff_5002, client, "10.0.0.1:43002", peer);
    p.feed(&young.state(0, Close, SynSent));
    p.feed(&young.state(MS, SynSent, Established));
    p.feed(&young.reset_received(2 * SEC));
    p.feed(&young.dies(2 * SEC, Established, Some(libc::ECONNRESET)));

    let report = p.report(&Snapshot::default(), 601 * SEC);
    let lost = findings(&report, |f| match f {
        Finding::LostConnection(l) => Some(l),
        _ => None,
    });
    assert_eq!(lost.len(), 1, "{report:#?}");
    assert_eq!(
        (
            lost[0].reset_after_silence,
            lost[0].keepalive_timeouts + lost[0].retransmit_timeouts,
            lost[0].longest_silence_s,
        ),
        (2, 0, Some(599.0)),
        "{report:#?}"
    );
}

#[test]
fn a_folded_churn_row_splits_its_time_wait_by_process() {
    // A shell loop: three processes of one program, one call path, one
    // peer, each leaving its own TIME_WAIT sockets.
    let mut p = Pipeline::default();
    for (pid, connections) in [(701, 1), (702, 2), (703, 3)] {
        let start = u64::from(pid - 700) * SEC;
        client_per_request(&mut p, task(pid, "curl", 4), connections, start, 10 * MS);
    }
    let report = p.report(&Snapshot::default(), 4 * SEC);
    let churn: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::Churn(_)))
        .collect();
    assert_eq!(churn.len(), 1, "one folded row");
    let held: Vec<(u32, u64)> = churn[0]
        .held_by_pid()
        .into_iter()
        .map(|(pid, process, held)| {
            assert_eq!(process.map(|p| p.comm.as_str()), Some("curl"));
            (pid, held.time_wait)
        })
        .collect();
    assert_eq!(held, [(701, 1), (702, 2), (703, 3)]);
    assert_eq!(churn[0].held().map(|(_, held)| held.time_wait), Some(6));
}

/// Findings that rank equal (two clients' churn, two servers' leaks, each
/// of the same size) come out the same way however often the report is
/// built: the maps they are gathered in each have a random order.
#[test]
fn the_same_events_give_the_same_report() {
    let mut p = Pipeline::default();
    client_per_request(&mut p, task(100, "client-a", 1), 5, 0, 10 * MS);
    client_per_request(&mut p, task(200, "client-b", 2), 5, SEC, 10 * MS);
    let mut leaking = Vec::new();
    for (i, name) in [(0u16, "leaky-a"), (1, "leaky-b")] {
        let pid = 400 + u32::from(i);
        let local = format!("10.0.0.1:{}", 8080 + i);
        let remote = format!("10.0.0.70:{}", 50000 + i);
        let c = Conn::passive(
            0xffff_4000 + u64::from(i) * 0x100,
            task(pid, name, 6),
            &local,
            &remote,
        );
        p.feed(&c.state(0, Listen, SynRecv));
        p.feed(&c.state(MS, SynRecv, Established));
        p.feed(&c.state(2 * SEC, Established, CloseWait));
        leaking.push(ExistingSocket {
            netns: 0,
            state: CloseWait,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            inode: 1000 + u64::from(i),
            uid: 0,
            holders: [FdHolder {
                pid,
                fd: 7,
                comm: name.into(),
            }]
            .into_iter()
            .collect(),
            activity: None,
        });
    }
    let now = Snapshot::from_sockets(leaking, 0);
    let first = serde_json::to_string(&p.report(&now, 9 * SEC).findings).unwrap();
    assert!(
        first.contains("client-a") && first.contains("leaky-b"),
        "the findings to compare: {first}"
    );
    for _ in 0..16 {
        let again = serde_json::to_string(&p.report(&now, 9 * SEC).findings).unwrap();
        assert_eq!(again, first);
    }
}

#[test]
fn a_flow_is_made_by_what_it_counts_and_by_closes_not_by_every_transition() {
    let mut p = Pipeline::default();
    let client = task(100, "client", 7);
    // Met mid-life (it connected before the session): its FIN_WAIT
    // transitions count nothing in a flow, and look none up.
    let mut c = Conn::active(1, client, "10.0.0.1:40000", "10.0.0.2:443");
    p.feed(&c.closed_by(MS, Established, FinWait1, client));
    p.feed(&c.state(2 * MS, FinWait1, FinWait2));
    assert!(p.diagnoses.flows.flows.is_empty());
    // Its close makes its flow, and says when it was last active.
    p.feed(&c.state(3 * MS, FinWait2, Close));
    let flows: Vec<_> = p.diagnoses.flows.flows.iter().collect();
    let [(_, flow)] = flows[..] else {
        panic!("one flow, not {}", flows.len());
    };
    assert_eq!((flow.closed, flow.active_closes), (1, 1));
    assert_eq!((flow.attempts, flow.established), (0, 0));
    assert_eq!(flow.last_seen_ns, 3 * MS);

    // A connect is counted at once: an attempt, with its time.
    let d = Conn::active(2, client, "10.0.0.1:40001", "10.0.0.2:443");
    p.feed(&d.state(4 * MS, Close, SynSent));
    p.feed(&d.state(5 * MS, SynSent, Established));
    let flows: Vec<_> = p.diagnoses.flows.flows.iter().collect();
    assert_eq!(flows.len(), 2, "a socket born in the session has a role");
    let born = flows
        .iter()
        .find(|(_, flow)| flow.attempts == 1)
        .map(|(_, flow)| flow)
        .expect("the connect's flow");
    assert_eq!((born.established, born.last_seen_ns), (1, 5 * MS));
}

#[test]
fn connection_starts_read_out_of_order_are_kept_in_time_order() {
    // Whole lives come CPU ring by CPU ring: one CPU's connects, then
    // another's from the same moments.
    let mut p = Pipeline::default();
    let client = task(100, "client", 7);
    let starts = [1, 3, 5, 7, 2, 4, 6, 8].map(|ms| ms * MS);
    for (i, &start) in (0u16..).zip(&starts) {
        let c = Conn::active(
            u64::from(i) + 1,
            client,
            &format!("10.0.0.1:{}", 40000 + i),
            "10.0.0.2:443",
        );
        p.feed(&c.state(start, Close, SynSent));
    }
    let flows: Vec<_> = p.diagnoses.flows.flows.iter().collect();
    let [(_, flow)] = flows[..] else {
        panic!("one flow, not {}", flows.len());
    };
    let expected: Vec<u64> = (1..=8).map(|ms| ms * MS).collect();
    assert_eq!(flow.recent_attempts_ns(), &expected[..]);
    assert_eq!(flow.last_seen_ns, 8 * MS);
}
