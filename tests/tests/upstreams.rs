//! A reverse proxy's kept-alive upstream connections: idle, and with
//! their upstream host vanishing. Real kernel, Debian's nginx on both ends, in a namespace pair
//! the test creates: nginx in `a` proxies to nginx in `b` over connections
//! it keeps alive between requests. Once `b` drops everything it
//! receives, the proxy's next request goes out on a kept connection and
//! is sent again (data retransmits in ESTABLISHED). Then either the proxy
//! gives up first (`proxy_read_timeout`) and closes the connection, whose
//! FIN nobody acknowledges either: a dead peer; or the kernel gives up
//! first (`tcp_retries2`): a connection lost to retransmit timeouts.
//!
//! Events and counts are matched by the namespace's inode, or by ports no
//! other test uses: an earlier run's sockets may still retransmit from a
//! deleted namespace of the same name and addresses.

use std::time::Duration;

use serde_json::Value;
use tcptrace_tests::{
    bpf_stats::BpfStats,
    daemon::{free_loopback_addr, sample, Daemon},
    kernel_counts::{established_to, nstat},
    netns::HostPair,
    programs::{shell_in, Nginx},
    require_root,
    trace::{without_frames, Trace},
    tracefs, Tracer,
};

/// nginx in `hosts.a` proxying to nginx in `hosts.b`. Dropped in the
/// order that leaves nothing behind: the upstream hears again (the
/// proxy's other kept connections are closed cleanly as nginx stops),
/// then both stop, then the namespaces go.
struct Proxied {
    proxy: Nginx,
    /// Held to be stopped in turn.
    _upstream: Nginx,
    proxy_addr: String,
    upstream_addr: String,
    upstream_port: u16,
    hosts: HostPair,
}

impl Proxied {
    /// `tag` names the namespaces; the proxy listens on `port` and the
    /// upstream on `port + 1`; the proxy waits `proxy_timeout` for the
    /// upstream before it answers 504 (and never tries it again).
    fn start(tag: &str, port: u16, proxy_timeout: &str, tune: impl FnOnce(&HostPair)) -> Self {
        let hosts = HostPair::new(tag);
        tune(&hosts);
        let upstream_port = port + 1;
        let proxy_addr = format!("{}:{port}", hosts.a_addr);
        let upstream_addr = format!("{}:{upstream_port}", hosts.b_addr);
        let upstream = Nginx::start(&hosts.b, &upstream_addr);
        let proxy = Nginx::start_serving(
            &hosts.a,
            &proxy_addr,
            &format!(
                "upstream backend {{ server {upstream_addr}; keepalive 4; }}\n\
                 \x20   server {{\n\
                 \x20       listen {proxy_addr} reuseport;\n\
                 \x20       location / {{\n\
                 \x20           proxy_pass http://backend;\n\
                 \x20           proxy_http_version 1.1;\n\
                 \x20           proxy_set_header Connection \"\";\n\
                 \x20           proxy_read_timeout {proxy_timeout};\n\
                 \x20           proxy_send_timeout {proxy_timeout};\n\
                 \x20           proxy_next_upstream off;\n\
                 \x20       }}\n\
                 \x20   }}"
            ),
        );
        let proxied = Self {
            proxy,
            _upstream: upstream,
            proxy_addr,
            upstream_addr,
            upstream_port,
            hosts,
        };
        proxied.keep_upstream_connections();
        proxied
    }

    /// Requests through the proxy from `a` until both of its workers hold
    /// a kept-alive upstream connection (`reuseport` spreads the
    /// requests), so that the next request, whichever worker takes it,
    /// reuses one.
    fn keep_upstream_connections(&self) {
        shell_in(
            &self.hosts.a,
            Duration::from_secs(30),
            &format!(
                "i=0; while [ $i -lt 40 ]; do \
                   curl -fsS -o /dev/null --max-time 5 http://{proxy}/ || exit 1; \
                   kept=$(ss -Htnp state established dst {upstream} \
                          | grep -o 'pid=[0-9]*' | sort -u | wc -l); \
                   [ \"$kept\" -ge {workers} ] && exit 0; i=$((i+1)); \
                 done; echo 'the workers kept no upstream connection each'; exit 1",
                proxy = self.proxy_addr,
                upstream = self.upstream_addr,
                workers = Nginx::WORKERS,
            ),
        );
    }

    /// Waits (5 s at most) until the proxy has acknowledged every byte the
    /// upstream sent. The last response's ACK may be delayed; dropped at
    /// the upstream, it would leave the upstream retransmitting that
    /// response, a retransmit of nginx on the port that is not the proxy's
    /// (seen once in CI: the daemon, filtered by port, counted it).
    fn wait_upstream_acknowledged(&self) {
        shell_in(
            &self.hosts.b,
            Duration::from_secs(10),
            &format!(
                "i=0; while [ $i -lt 100 ]; do \
                   unacked=$(ss -Htn state established sport = :{port} \
                             | awk '{{ s += $2 }} END {{ print s + 0 }}'); \
                   [ \"$unacked\" -eq 0 ] && exit 0; sleep 0.05; i=$((i+1)); \
                 done; echo \"the upstream still has $unacked bytes unacknowledged\"; exit 1",
                port = self.upstream_port,
            ),
        );
    }

    /// The upstream's host vanishes, and a request goes through the
    /// proxy: answered `code` (504 when the proxy gave up waiting, 502
    /// when the kernel gave up on the connection).
    fn request_the_vanished_upstream(&self, code: u16) {
        self.wait_upstream_acknowledged();
        self.hosts.drop_ingress(&self.hosts.b);
        shell_in(
            &self.hosts.a,
            Duration::from_secs(30),
            &format!(
                "code=$(curl -sS -o /dev/null -w '%{{http_code}}' --max-time 25 http://{}/); \
                 [ \"$code\" = {code} ] || {{ echo \"HTTP $code, not {code}\"; exit 1; }}",
                self.proxy_addr
            ),
        );
    }

    /// Waits (bounded) for the proxy's upstream connection to reach CLOSE
    /// from `old` in `trace`'s live records.
    fn wait_for_close_from(&self, trace: &mut Tracer, old: &str) {
        let ended = trace.wait_for(Duration::from_secs(20), |r| {
            r["type"] == "state"
                && r["new"] == "CLOSE"
                && r["old"] == old
                && r["remote"] == self.upstream_addr.as_str()
        });
        assert!(
            ended,
            "the proxy's upstream connection did not leave {old} within 20 s"
        );
    }

    /// Whether `process` (pid and comm) is a worker of the proxy.
    fn is_a_proxy_worker(&self, process: &Value) -> bool {
        is_a_worker_of(&self.proxy, process)
    }

    fn assert_a_proxy_worker(&self, process: &Value, context: &str) {
        assert!(
            self.is_a_proxy_worker(process),
            "{process} is not a worker of the proxy {:?}: {context}",
            self.proxy.workers
        );
    }

    /// The one finding of `findings` about the upstream by a proxy worker,
    /// checked to name nginx and an nginx function as its call site
    /// (frames left out).
    fn the_finding<'a>(&self, mode: &str, findings: impl Iterator<Item = &'a Value>) -> Value {
        let ours: Vec<Value> = findings
            .filter(|f| f["peer"] == self.upstream_addr.as_str())
            .filter(|f| self.is_a_proxy_worker(&f["process"]))
            .map(without_frames)
            .collect();
        assert_eq!(
            ours.len(),
            1,
            "{mode}: one finding about the upstream, by a worker of the proxy {:?}: {ours:#?}",
            self.proxy.workers
        );
        let finding = ours.into_iter().next().expect("one finding");
        let function = finding["call_site"]["function"].as_str().unwrap_or("?");
        assert!(
            function.starts_with("ngx_"),
            "{mode}: the call site is an nginx function: {finding:#}"
        );
        finding
    }
}

impl Drop for Proxied {
    fn drop(&mut self) {
        self.hosts.allow_ingress(&self.hosts.b);
    }
}

/// Every mode of tcptrace, filtered to `port`: an every-event session, a
/// summary session (`--report-only`) and a daemon refreshing every second.
fn every_mode(port: u16) -> (Tracer, Tracer, Daemon) {
    let port = port.to_string();
    let filter = ["--port", port.as_str()];
    (
        Tracer::start(&filter),
        Tracer::start_report_only(&filter),
        Daemon::start(
            &free_loopback_addr(),
            &[&filter[..], &["--refresh", "1s"]].concat(),
        ),
    )
}

/// The proxy's retransmit events on its upstream connections, by the
/// phase their state belongs to: (data, FIN).
fn retransmits_by_phase(trace: &Trace, proxied: &Proxied) -> (u64, u64) {
    let (mut data, mut fin) = (0, 0);
    for event in proxy_retransmits(trace, proxied) {
        match event["state"].as_str() {
            Some("FIN_WAIT1" | "CLOSING" | "LAST_ACK") => fin += 1,
            _ => data += 1,
        }
    }
    (data, fin)
}

/// Retransmit events of the proxy's namespace (by inode) to the upstream.
fn proxy_retransmits<'a>(trace: &'a Trace, proxied: &Proxied) -> impl Iterator<Item = &'a Value> {
    let proxy_netns = proxied.hosts.inode(&proxied.hosts.a);
    let upstream_port = format!(":{}", proxied.upstream_port);
    trace.of_type("retransmit").filter(move |r| {
        r["netns"].as_u64() == Some(proxy_netns)
            && r["remote"]
                .as_str()
                .is_some_and(|p| p.ends_with(&upstream_port))
    })
}

/// A daemon counter of nginx's, with `labels` besides its name.
fn scraped(scrape: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    let labels = [&[("comm", "nginx")][..], labels].concat();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "small counts"
    )]
    sample(scrape, name, &labels).map_or(0, |v| v as u64)
}

fn retransmits_scraped(scrape: &str, phase: &str) -> u64 {
    scraped(scrape, "tcptrace_retransmits_total", &[("phase", phase)])
}

/// nginx's data and FIN retransmits on a kept-alive upstream connection
/// to a vanished host are counted in every mode as the kernel counts
/// them (`TcpRetransSegs` of `a`, where nothing else loses a segment,
/// less the tracepoint hits the kernel ran no BPF program for), attributed
/// to the nginx worker that opened the connection; the FIN nobody
/// acknowledged, after the proxy gave up waiting, is a dead-peer finding
/// of that worker's late close at an nginx function, whose peer the
/// kernel gave up on (`tcp_orphan_retries`).
#[test]
fn a_proxys_kept_upstream_connection_to_a_vanished_host_is_counted_and_named() {
    require_root();
    // The kernel's run counts of the programs, against a tracefs witness
    // of the tracepoint's hits: the hits no BPF program ran for.
    let _stats = BpfStats::enable();
    let witness = tracefs::Retransmits::start(18451);
    let (mut every_event, summary, daemon) = every_mode(18451);
    // Four orphan retries: the FIN is sent again at least once before the
    // kernel gives up (a few seconds in all).
    let proxied = Proxied::start("ttups", 18450, "1s", |hosts| {
        hosts.sysctl(&hosts.a, "net.ipv4.tcp_orphan_retries", "4");
    });
    let before = nstat(&proxied.hosts.a);
    proxied.request_the_vanished_upstream(504);
    proxied.wait_for_close_from(&mut every_event, "FIN_WAIT1");
    let retransmitted = nstat(&proxied.hosts.a)["TcpRetransSegs"]
        - before.get("TcpRetransSegs").copied().unwrap_or(0);
    let witnessed = witness.hits();
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| {
        retransmits_scraped(s, "data") + retransmits_scraped(s, "fin") >= retransmitted
    });
    let (every_event, summary) = (every_event.stop(), summary.stop());
    let (data, fin) = retransmits_by_phase(&every_event, &proxied);
    let unseen = every_event.unseen();
    let missed = witnessed.runs_missed(&scrape);
    let table = format!(
        "retransmits, data / FIN phase:\n\
         \x20 kernel (nstat of a)   {retransmitted} in all\n\
         \x20 tracepoint (tracefs)  {} on the port, {missed} hits no BPF program ran for\n\
         \x20 trace --json          {data} / {fin} ({unseen} events unseen)\n\
         \x20 daemon                {} / {}\n",
        witnessed.on_port.len(),
        retransmits_scraped(&scrape, "data"),
        retransmits_scraped(&scrape, "fin"),
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
        (
            retransmits_scraped(&scrape, "data"),
            retransmits_scraped(&scrape, "fin")
        ),
        (data, fin),
        "the daemon counts by phase what trace --json shows\n{table}"
    );
    for event in proxy_retransmits(&every_event, &proxied) {
        proxied.assert_a_proxy_worker(&event["owner"], &event.to_string());
    }

    for (mode, trace) in [("trace --json", &every_event), ("--report-only", &summary)] {
        let finding = proxied.the_finding(mode, trace.findings("dead_peer_fin"));
        assert_eq!(finding["retransmits"], fin, "{mode}: {finding:#}\n{table}");
        assert_eq!(finding["outcomes"]["gave_up"], 1, "{mode}: {finding:#}");
        assert_eq!(finding["states"], serde_json::json!(["FIN_WAIT1"]));
    }
    // The daemon logs a dead peer once, when its FIN is first sent again.
    let logged = daemon.logged("dead peer");
    proxied.the_finding(
        "the daemon's log",
        logged.iter().map(|line| &line["fields"]),
    );
}

/// The proxy waits longer than the kernel does (`tcp_retries2` 3 in `a`,
/// about 3 s of retransmits): the kernel gives up on the kept upstream
/// connection while ESTABLISHED, and nginx answers 502. The proxy
/// namespace's `TcpExtTCPAbortOnTimeout` counts one abort; every mode
/// reports one connection lost to retransmit timeouts, the nginx worker
/// that opened it and its connect call site at an nginx function, and the
/// daemon counts it as `connections_lost_total{cause="retransmit_timeout"}`.
#[test]
fn a_proxys_kept_upstream_connection_the_kernel_gives_up_on_is_lost() {
    require_root();
    let (mut every_event, summary, daemon) = every_mode(18453);
    let proxied = Proxied::start("ttupl", 18452, "30s", |hosts| {
        hosts.sysctl(&hosts.a, "net.ipv4.tcp_retries2", "3");
    });
    let before = nstat(&proxied.hosts.a);
    proxied.request_the_vanished_upstream(502);
    proxied.wait_for_close_from(&mut every_event, "ESTABLISHED");
    let aborted = nstat(&proxied.hosts.a)["TcpExtTCPAbortOnTimeout"]
        - before.get("TcpExtTCPAbortOnTimeout").copied().unwrap_or(0);
    assert_eq!(aborted, 1, "the kernel aborted one connection on a timeout");
    let lost_scraped = |scrape: &str| {
        scraped(
            scrape,
            "tcptrace_connections_lost_total",
            &[("cause", "retransmit_timeout")],
        )
    };
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| lost_scraped(s) >= aborted);
    let (every_event, summary) = (every_event.stop(), summary.stop());

    for (mode, trace) in [("trace --json", &every_event), ("--report-only", &summary)] {
        let finding = proxied.the_finding(mode, trace.findings("lost_connection"));
        assert_eq!(
            finding["retransmit_timeouts"], aborted,
            "{mode}: {finding:#}"
        );
        assert_eq!(finding["keepalive_timeouts"], 0, "{mode}: {finding:#}");
    }
    assert_eq!(lost_scraped(&scrape), aborted, "the daemon:\n{scrape}");
    assert!(
        proxy_retransmits(&every_event, &proxied).count() >= 2,
        "the request was sent again before the kernel gave up"
    );
}

/// A proxy's kept upstream connections are what an idle timeout of a NAT
/// or a load balancer drops without a word: nginx arms no keepalive on
/// them unless `proxy_socket_keepalive` says so. One pool without it, one
/// with it (probes after the kernel's 2 h): past the 2 s idle threshold,
/// every mode reports the first pool's connections, as many as `ss` shows,
/// as idle without keepalive, by the proxy's workers at their nginx
/// connect call site, and not the second's, whose sockets `ss -o` shows
/// with a keepalive timer; the daemon counts them in
/// `idle_connections_without_keepalive`.
#[test]
fn a_proxys_idle_upstream_pool_without_keepalive_is_reported() {
    const HOLD: Duration = Duration::from_millis(3500);
    const BARE: u16 = 18454;
    const KEPT: u16 = 18455;
    require_root();
    let hosts = HostPair::new("ttupi");
    let ports = [BARE.to_string(), KEPT.to_string()];
    let mut args: Vec<&str> = ports.iter().flat_map(|p| ["--port", p.as_str()]).collect();
    args.extend(["--idle-threshold", "2s"]);
    let trace = Tracer::start(&args);
    let summary = Tracer::start_report_only(&args);
    args.extend(["--refresh", "1s"]);
    let daemon = Daemon::start(&free_loopback_addr(), &args);
    let (proxy, upstream) = two_pools(&hosts, BARE, KEPT);
    let b = hosts.b_addr;
    std::thread::sleep(HOLD);

    let (bare, kept) = (
        established_to(&hosts.a, BARE),
        established_to(&hosts.a, KEPT),
    );
    assert!(
        !bare.is_empty() && bare.iter().all(|l| !l.contains("keepalive")),
        "ss -o: the bare pool's connections, no keepalive timer: {bare:#?}"
    );
    assert!(
        !kept.is_empty() && kept.iter().all(|l| l.contains("keepalive")),
        "ss -o: the kept pool's connections, each with a keepalive timer: {kept:#?}"
    );
    // The daemon counts idle sockets by process name: the proxy's bare
    // pool, and the upstream's accepted ends of both pools (an nginx
    // server arms no keepalive either).
    let idle_nginx = 2 * bare.len() as u64 + kept.len() as u64;
    let scrape = daemon.scrape_until(Duration::from_secs(10), |s| scraped_idle(s) >= idle_nginx);
    let (trace, summary) = (trace.stop(), summary.stop());
    let by_a_worker = |f: &&Value| is_a_worker_of(&proxy, &f["process"]);
    for (mode, trace) in [("trace --json", &trace), ("--report-only", &summary)] {
        let idle: Vec<Value> = trace
            .findings("idle_connections")
            .filter(by_a_worker)
            .map(without_frames)
            .collect();
        let to = |port: u16| {
            let peer = format!("{b}:{port}");
            idle.iter().filter(move |f| f["peer"] == peer.as_str())
        };
        let sockets: u64 = to(BARE).map(|f| f["sockets"].as_u64().unwrap_or(0)).sum();
        assert_eq!(
            sockets,
            bare.len() as u64,
            "{mode}: the bare pool is idle without keepalive: {idle:#?}"
        );
        for finding in to(BARE) {
            assert_eq!(finding["keepalive"], false, "{mode}: {finding:#}");
            let function = finding["call_site"]["function"].as_str().unwrap_or("?");
            assert!(
                function.starts_with("ngx_"),
                "{mode}: the connect call site is an nginx function: {finding:#}"
            );
        }
        assert_eq!(
            to(KEPT).count(),
            0,
            "{mode}: keepalive protects the kept pool: {idle:#?}"
        );
    }
    assert_eq!(scraped_idle(&scrape), idle_nginx, "the daemon:\n{scrape}");
    drop((proxy, upstream));
}

/// The daemon's idle connections without keepalive, of nginx.
fn scraped_idle(scrape: &str) -> u64 {
    scraped(scrape, "tcptrace_idle_connections_without_keepalive", &[])
}

/// Whether `process` (pid and comm, as tcptrace's JSON has them) is a
/// worker of `nginx`.
fn is_a_worker_of(nginx: &Nginx, process: &Value) -> bool {
    process["comm"] == "nginx" && nginx.has_worker(process["pid"].as_u64())
}

/// nginx in `hosts.b` serving on ports `bare` and `kept`, and a proxy in
/// `hosts.a` keeping connections to each, `proxy_socket_keepalive` off
/// for the first pool and on for the second, each pool used eight times.
fn two_pools(hosts: &HostPair, bare: u16, kept: u16) -> (Nginx, Nginx) {
    let b = hosts.b_addr;
    let upstream = Nginx::start_serving(
        &hosts.b,
        &format!("{b}:{bare}"),
        &format!(
            "server {{ listen {b}:{bare}; location / {{ return 200 \"ok\\n\"; }} }}\n\
             \x20   server {{ listen {b}:{kept}; location / {{ return 200 \"ok\\n\"; }} }}"
        ),
    );
    let proxy_addr = format!("{}:18456", hosts.a_addr);
    let location = |name: &str, keepalive: &str| {
        format!(
            "location /{name} {{ proxy_pass http://{name}; proxy_http_version 1.1; \
             proxy_set_header Connection \"\"; proxy_socket_keepalive {keepalive}; }}"
        )
    };
    let proxy = Nginx::start_serving(
        &hosts.a,
        &proxy_addr,
        &format!(
            "upstream bare {{ server {b}:{bare}; keepalive 4; }}\n\
             \x20   upstream kept {{ server {b}:{kept}; keepalive 4; }}\n\
             \x20   server {{ listen {proxy_addr} reuseport; {} {} }}",
            location("bare", "off"),
            location("kept", "on"),
        ),
    );
    shell_in(
        &hosts.a,
        Duration::from_secs(30),
        &format!(
            "for i in $(seq 8); do \
               curl -fsS -o /dev/null --max-time 5 http://{proxy_addr}/bare || exit 1; \
               curl -fsS -o /dev/null --max-time 5 http://{proxy_addr}/kept || exit 1; \
             done"
        ),
    );
    (proxy, upstream)
}
