//! A reverse proxy's kept-alive upstream connection, whose upstream host
//! vanishes. Real kernel, Debian's nginx on both ends, in a namespace pair
//! the test creates: nginx in `a` proxies to nginx in `b` over connections
//! it keeps alive between requests. Once `b` drops everything it
//! receives, the proxy's next request goes out on a kept connection and
//! is sent again (data retransmits in ESTABLISHED); the proxy gives up on
//! the upstream after `proxy_read_timeout` and closes the connection, whose
//! FIN, queued behind the unacknowledged request, nobody acknowledges
//! either (retransmits in `FIN_WAIT1`) until the kernel gives up
//! (`tcp_orphan_retries`). The truth is `TcpRetransSegs` of `a`, where
//! nothing else loses a segment, less the tracepoint hits the kernel ran
//! no BPF program for (`tracefs::Hits::runs_missed`).

use std::time::Duration;

use serde_json::Value;
use tcptrace_tests::{
    bpf_stats::BpfStats,
    daemon::{free_loopback_addr, sample, Daemon},
    kernel_counts::nstat,
    netns::HostPair,
    programs::{shell_in, Nginx},
    require_root,
    trace::{without_frames, Trace},
    tracefs, Tracer,
};

const PROXY_PORT: u16 = 18450;
const UPSTREAM_PORT: u16 = 18451;

/// The proxy: each worker keeps its upstream connections alive, gives up
/// on an upstream silent for a second, and does not try it again.
fn proxy_servers(proxy: &str, upstream: &str) -> String {
    format!(
        "upstream backend {{ server {upstream}; keepalive 4; }}\n\
         \x20   server {{\n\
         \x20       listen {proxy} reuseport;\n\
         \x20       location / {{\n\
         \x20           proxy_pass http://backend;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_read_timeout 1s;\n\
         \x20           proxy_send_timeout 1s;\n\
         \x20           proxy_next_upstream off;\n\
         \x20       }}\n\
         \x20   }}"
    )
}

/// The proxy's retransmit events on its upstream connections, by the
/// phase their state belongs to: (data, FIN).
fn retransmits_by_phase(trace: &Trace, proxy_netns: u64) -> (u64, u64) {
    let (mut data, mut fin) = (0, 0);
    for event in proxy_retransmits(trace, proxy_netns) {
        match event["state"].as_str() {
            Some("FIN_WAIT1" | "CLOSING" | "LAST_ACK") => fin += 1,
            _ => data += 1,
        }
    }
    (data, fin)
}

/// Retransmit events of the proxy's namespace (by inode: an earlier run's
/// sockets may still retransmit from a deleted namespace of the same
/// name and addresses) to the upstream port.
fn proxy_retransmits(trace: &Trace, proxy_netns: u64) -> impl Iterator<Item = &Value> {
    let upstream_port = format!(":{UPSTREAM_PORT}");
    trace.of_type("retransmit").filter(move |r| {
        r["netns"].as_u64() == Some(proxy_netns)
            && r["remote"]
                .as_str()
                .is_some_and(|p| p.ends_with(&upstream_port))
    })
}

/// The daemon's count of nginx's retransmits in one phase.
fn scraped(scrape: &str, phase: &str) -> u64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "small counts"
    )]
    sample(
        scrape,
        "tcptrace_retransmits_total",
        &[("comm", "nginx"), ("phase", phase)],
    )
    .map_or(0, |v| v as u64)
}

/// Requests through the proxy from `a` until both of its workers hold a
/// kept-alive upstream connection (`reuseport` spreads the requests), so
/// that the next request, whichever worker takes it, reuses one.
fn keep_upstream_connections(hosts: &HostPair, proxy: &str) {
    shell_in(
        &hosts.a,
        Duration::from_secs(30),
        &format!(
            "i=0; while [ $i -lt 40 ]; do \
               curl -fsS -o /dev/null --max-time 5 http://{proxy}/ || exit 1; \
               kept=$(ss -Htnp state established dst {b}:{UPSTREAM_PORT} \
                      | grep -o 'pid=[0-9]*' | sort -u | wc -l); \
               [ \"$kept\" -ge {workers} ] && exit 0; i=$((i+1)); \
             done; echo 'the workers kept no upstream connection each'; exit 1",
            b = hosts.b_addr,
            workers = Nginx::WORKERS,
        ),
    );
}

/// A request through the proxy from `a` once the upstream has vanished:
/// answered 504 when the proxy gives up and closes the connection, which
/// ends when the kernel gives up on its FIN.
fn request_the_vanished_upstream(
    every_event: &mut Tracer,
    hosts: &HostPair,
    proxy_addr: &str,
    upstream_addr: &str,
) {
    shell_in(
        &hosts.a,
        Duration::from_secs(20),
        &format!(
            "code=$(curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 http://{proxy_addr}/); \
             [ \"$code\" = 504 ] || {{ echo \"HTTP $code, not 504\"; exit 1; }}"
        ),
    );
    let ended = every_event.wait_for(Duration::from_secs(20), |r| {
        r["type"] == "state"
            && r["new"] == "CLOSE"
            && r["old"] == "FIN_WAIT1"
            && r["remote"] == upstream_addr
    });
    assert!(
        ended,
        "the proxy's closed upstream connection did not end within 20 s"
    );
}

/// nginx's data and FIN retransmits on a kept-alive upstream connection
/// to a vanished host are counted in every mode as the kernel counts
/// them, attributed to the nginx worker that opened the connection; the
/// FIN nobody acknowledged is a dead-peer finding of that worker's late
/// close, at an nginx function, whose peer the kernel gave up on.
#[test]
fn a_proxys_kept_upstream_connection_to_a_vanished_host_is_counted_and_named() {
    require_root();
    let hosts = HostPair::new("ttups");
    // Four orphan retries: the FIN is sent again at least once before the
    // kernel gives up (a few seconds in all).
    hosts.sysctl(&hosts.a, "net.ipv4.tcp_orphan_retries", "4");
    // The kernel's run counts of the programs, against a tracefs witness
    // of the tracepoint's hits: the hits no BPF program ran for.
    let _stats = BpfStats::enable();
    let witness = tracefs::Retransmits::start(UPSTREAM_PORT);
    let port = UPSTREAM_PORT.to_string();
    let filter = ["--port", port.as_str()];
    let mut every_event = Tracer::start(&filter);
    let summary = Tracer::start_report_only(&filter);
    let daemon = Daemon::start(
        &free_loopback_addr(),
        &[&filter[..], &["--refresh", "1s"]].concat(),
    );
    let upstream_addr = format!("{}:{UPSTREAM_PORT}", hosts.b_addr);
    let proxy_addr = format!("{}:{PROXY_PORT}", hosts.a_addr);
    let upstream = Nginx::start(&hosts.b, &upstream_addr);
    let proxy = Nginx::start_serving(
        &hosts.a,
        &proxy_addr,
        &proxy_servers(&proxy_addr, &upstream_addr),
    );
    keep_upstream_connections(&hosts, &proxy_addr);

    let before = nstat(&hosts.a);
    hosts.drop_ingress(&hosts.b);
    request_the_vanished_upstream(&mut every_event, &hosts, &proxy_addr, &upstream_addr);
    let retransmitted =
        nstat(&hosts.a)["TcpRetransSegs"] - before.get("TcpRetransSegs").copied().unwrap_or(0);
    let witnessed = witness.hits();
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| {
        scraped(s, "data") + scraped(s, "fin") >= retransmitted
    });
    let (every_event, summary) = (every_event.stop(), summary.stop());
    let proxy_netns = hosts.inode(&hosts.a);
    let (data, fin) = retransmits_by_phase(&every_event, proxy_netns);
    let unseen = every_event.unseen();
    let missed = witnessed.runs_missed(&scrape);
    let table = format!(
        "retransmits, data / FIN phase:\n\
         \x20 kernel (nstat of a)   {retransmitted} in all\n\
         \x20 tracepoint (tracefs)  {} on the port, {missed} hits no BPF program ran for\n\
         \x20 trace --json          {data} / {fin} ({unseen} events unseen)\n\
         \x20 daemon                {} / {}\n",
        witnessed.on_port.len(),
        scraped(&scrape, "data"),
        scraped(&scrape, "fin"),
    );
    eprintln!("{table}");

    assert!(
        data >= 1 && fin >= 1,
        "the run: the request and the FIN were both sent again\n{table}"
    );
    // Short of the kernel's count only by what it never showed a program
    // (the same hits for every session: the daemon must agree exactly).
    assert!(
        data + fin <= retransmitted && data + fin + unseen + missed >= retransmitted,
        "trace --json counts what the kernel counts\n{table}"
    );
    assert_eq!(
        (scraped(&scrape, "data"), scraped(&scrape, "fin")),
        (data, fin),
        "the daemon counts by phase what trace --json shows\n{table}"
    );
    for event in proxy_retransmits(&every_event, proxy_netns) {
        assert_a_worker_of(&proxy, &event["owner"], &event.to_string());
    }

    for (mode, trace) in [("trace --json", &every_event), ("--report-only", &summary)] {
        let finding = late_close(
            mode,
            trace.findings("dead_peer_fin"),
            &upstream_addr,
            &proxy,
        );
        assert_eq!(finding["retransmits"], fin, "{mode}: {finding:#}\n{table}");
        assert_eq!(finding["outcomes"]["gave_up"], 1, "{mode}: {finding:#}");
    }
    // The daemon logs a dead peer once, when its FIN is first sent again.
    let logged = daemon.logged("dead peer");
    late_close(
        "the daemon's log",
        logged.iter().map(|line| &line["fields"]),
        &upstream_addr,
        &proxy,
    );
    // Heard again, the upstream acknowledges the FINs of the proxy's
    // other kept connections as it stops: no socket outlives the test.
    hosts.allow_ingress(&hosts.b);
    drop((proxy, upstream));
}

/// The one dead-peer finding of a proxy worker's late close of its
/// connection to `upstream`, checked to name nginx and an nginx function
/// as its close call site (frames left out).
fn late_close<'a>(
    mode: &str,
    findings: impl Iterator<Item = &'a Value>,
    upstream: &str,
    proxy: &Nginx,
) -> Value {
    let by_a_worker = |f: &&Value| is_a_worker_of(proxy, &f["process"]);
    let dead: Vec<Value> = findings
        .filter(|f| f["peer"] == upstream)
        .filter(by_a_worker)
        .map(without_frames)
        .collect();
    assert_eq!(
        dead.len(),
        1,
        "{mode}: one dead peer, the upstream, closed late by a worker of the proxy {:?}: {dead:#?}",
        proxy.workers
    );
    let finding = dead.into_iter().next().expect("one finding");
    assert_a_worker_of(proxy, &finding["process"], &format!("{mode}: {finding:#}"));
    let function = finding["call_site"]["function"].as_str().unwrap_or("?");
    assert!(
        function.starts_with("ngx_"),
        "{mode}: the close call site is an nginx function: {finding:#}"
    );
    finding
}

/// Whether `process` (pid and comm) is a worker of `nginx`.
fn is_a_worker_of(nginx: &Nginx, process: &Value) -> bool {
    let pid = process["pid"].as_u64().unwrap_or(0);
    process["comm"] == "nginx" && nginx.workers.iter().any(|&w| u64::from(w) == pid)
}

fn assert_a_worker_of(nginx: &Nginx, process: &Value, context: &str) {
    assert!(
        is_a_worker_of(nginx, process),
        "{process} is not a worker of nginx {:?}: {context}",
        nginx.workers
    );
}
