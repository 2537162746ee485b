//! `tcptrace daemon`: the session pipeline, long-running, exporting
//! Prometheus metrics on a loopback address and logging new findings.
//!
//! Everything runs on one thread: the ring buffer drain, the periodic
//! refresh (socket dump + diagnoses) and the HTTP handlers, which borrow
//! the state only to render a scrape, never across an await.

mod basic_auth;
pub mod config;
mod health;
mod http;
mod http_budget;
mod http_conn;
mod reload;
mod rendered;
mod scrape;
mod service_manager;
pub mod web_config;

use std::{cell::RefCell, collections::HashSet, rc::Rc, time::Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, header, Request, Response, StatusCode};
use tcptrace_common::Counter;
use tokio::{
    net::TcpListener,
    signal::unix::{Signal, SignalKind},
    task::LocalSet,
    time::Interval,
};
use tokio_rustls::TlsAcceptor;

use self::{
    config::DaemonConfig,
    health::{Health, Losses},
    http::Route,
    http_budget::{HttpBudget, Slot},
    reload::Changes,
    rendered::{Format, RenderedMetrics, Variant},
    scrape::Refreshed,
    web_config::WebConfig,
};
use crate::{
    export::{
        process_stats::ProcessStats,
        prometheus::{render, Scrape},
        tracer_costs::{RingFillStats, TracerCosts},
    },
    findings::Report,
    metrics::DaemonMetrics,
    pipeline::{dump, Pipeline, Rings, DRAIN_BATCH, DRAIN_INTERVAL},
    probe::{bpf_stats_enabled, Probe, ProbeOptions},
    snapshot::Snapshot,
};

struct Daemon {
    config: DaemonConfig,
    probe: Probe,
    /// Its `cgroups` hold the container cache: the labels of every series,
    /// each cgroup resolved once for the daemon's life.
    pipeline: Pipeline,
    metrics: DaemonMetrics,
    refreshed: Refreshed,
    started: Instant,
    /// Findings already logged (kind, process, peer or call site).
    logged: HashSet<String>,
    /// Times the kernel woke the reader (the ring buffer filled past the
    /// wakeup mark); the rest is drained on the 100 ms timer.
    wakeups: u64,
    /// Loss counters over the last minute, for `/healthz`.
    health: Health,
    /// HTTP connections open, refused and failed to accept.
    http: Rc<HttpBudget>,
    /// Socket dumps that failed (`/healthz` says so while they do).
    refresh_errors: u64,
    /// The last `/metrics` text, shared by the scrapes that follow it.
    rendered: RenderedMetrics,
    /// TLS, users and headers of `--web-config` (read again on SIGHUP).
    web: WebConfig,
    /// How full each ring was at each drain: the event and stack ring
    /// buffers, and the fullest CPU ring of whole lives.
    rings: [RingFillStats; 3],
}

/// Reads the configuration again (the file, under the same flags).
pub type ReadConfig = Box<dyn Fn() -> Result<DaemonConfig>>;

pub fn run(config: DaemonConfig, read_config: ReadConfig) -> Result<()> {
    // Every thread started from here on keeps only what the daemon keeps
    // after attaching (capabilities are per thread: see `privileges`).
    crate::privileges::confine_threads_to(&crate::privileges::KEPT);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(crate::privileges::confine_this_thread)
        .build()
        .context("starting the async runtime")?;
    LocalSet::new().block_on(&runtime, serve(config, read_config))
}

/// The daemon's stack ring buffer (see `ProbeOptions::stack_ring_bytes`).
const DAEMON_STACK_RING_BYTES: u32 = 4 * 1024 * 1024;
/// Batches read at most before a socket dump is applied (the events
/// before it first).
const REFRESH_DRAIN_BATCHES: usize = 64;

async fn serve(config: DaemonConfig, read_config: ReadConfig) -> Result<()> {
    // Bind before loading anything: a taken port is the commonest mistake.
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {} (--listen)", config.listen))?;
    let web = load_web_config(&config)?;
    let open_files = raise_open_files_limit();
    let http = Rc::new(HttpBudget::default());
    let mut probe = Probe::load(ProbeOptions {
        ring_bytes: config.ring_buffer_mib * 1024 * 1024,
        // Stacks are sampled (`stack-interval`): a few per process and
        // second need little room.
        stack_ring_bytes: DAEMON_STACK_RING_BYTES,
        capture_stacks: config.stacks,
        stack_interval_ms: u32::try_from(config.stack_interval.as_millis()).unwrap_or(u32::MAX),
        // A series needs one call site per interval, not a burst of them.
        stack_burst: 1,
        summary: !config.every_event,
        // A syscall tracepoint taxes every system call on the host: the
        // daemon makes a passive socket its closer's instead.
        accept_hook: false,
        socket_map_entries: config.socket_map_entries,
    })?;
    // The daemon shows no start listing: only the owners are kept.
    let (mut pipeline, mut rings, _) =
        Pipeline::start(&mut probe, config.filter(), config.containers())?;
    log_warnings(&config, &probe, &pipeline);
    let kept = crate::privileges::drop_after_attach()?;
    pipeline.sweep_closed_records()?;
    release_free_heap();
    log(
        "info",
        "capabilities dropped after attach",
        &serde_json::json!({ "kept": kept.iter().map(ToString::to_string).collect::<Vec<_>>() }),
    );
    let daemon = Rc::new(RefCell::new(Daemon::new(
        config.clone(),
        probe,
        pipeline,
        Rc::clone(&http),
        web,
    )));
    log(
        "info",
        "started",
        &serde_json::json!({
            "listen": listener.local_addr().map_or_else(|_| config.listen.to_string(), |a| a.to_string()),
            "tls": daemon.borrow().web.tls.is_some(),
            "basic_auth": daemon.borrow().web.auth.required(),
            "open_files_limit": open_files,
        }),
    );
    service_manager::ready();

    let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
    let mut refresh_tick = tokio::time::interval(config.refresh);
    let mut dumping = None;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut hangup = tokio::signal::unix::signal(SignalKind::hangup())?;
    let mut ignored = IgnoredSignals::new()?;
    // Records left waiting by the last batch: read on after a yield, so
    // scrapes, signals and timers are served in between.
    let mut more = false;
    loop {
        tokio::select! {
            () = tokio::task::yield_now(), if more => more = daemon.borrow_mut().drain(&mut rings),
            readable = rings.readable() => {
                readable?;
                let mut d = daemon.borrow_mut();
                d.wakeups += 1;
                more = d.drain(&mut rings);
            }
            _ = drain_tick.tick() => more = daemon.borrow_mut().drain(&mut rings),
            _ = refresh_tick.tick() => {
                // The socket dump and /proc scan take long with 100k
                // sockets: run them on a blocking thread while events drain.
                if dumping.is_none() {
                    let (filter, diag) = {
                        let d = daemon.borrow();
                        (d.pipeline.filter.clone(), std::sync::Arc::clone(&d.pipeline.diag))
                    };
                    dumping = Some(tokio::task::spawn_blocking(move || dump(&filter, &diag)));
                }
            }
            dumped = async { dumping.as_mut().expect("guarded by the branch condition").await }, if dumping.is_some() => {
                dumping = None;
                more = daemon.borrow_mut().apply_dump(&mut rings, dumped);
            }
            accepted = listener.accept(), if http.accepting(Instant::now()) => {
                match accepted {
                    // Over the budget: closed at once (dropped), counted.
                    Ok((stream, _)) => if let Some(slot) = http.take() {
                        tokio::task::spawn_local(connection(stream, Rc::clone(&daemon), slot));
                    },
                    Err(_) => http.accept_failed(Instant::now()),
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = hangup.recv() => reload(&daemon, &read_config, &mut refresh_tick),
            name = ignored.recv() => ignored_signal(name),
        }
    }
    log("info", "stopping", &serde_json::json!({}));
    service_manager::stopping();
    drop(rings);
    // Dropping the probe detaches every program; nothing is pinned.
    drop(daemon);
    Ok(())
}

/// SIGHUP: the configuration reloaded, with the refresh timer it sets.
fn reload(daemon: &RefCell<Daemon>, read_config: &ReadConfig, refresh_tick: &mut Interval) {
    service_manager::reloading();
    let mut daemon = daemon.borrow_mut();
    let refresh = daemon.config.refresh;
    daemon.reload(read_config);
    service_manager::ready();
    if daemon.config.refresh != refresh {
        *refresh_tick = tokio::time::interval(daemon.config.refresh);
    }
}

/// Signals whose default action would end the daemon silently: logged
/// and otherwise ignored. (SIGHUP reloads the configuration.)
struct IgnoredSignals {
    user1: Signal,
    user2: Signal,
    alarm: Signal,
}

impl IgnoredSignals {
    fn new() -> std::io::Result<Self> {
        let handle = |kind| tokio::signal::unix::signal(kind);
        Ok(Self {
            user1: handle(SignalKind::user_defined1())?,
            user2: handle(SignalKind::user_defined2())?,
            alarm: handle(SignalKind::alarm())?,
        })
    }

    /// The next one to arrive, by name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.user1.recv() => "SIGUSR1",
            _ = self.user2.recv() => "SIGUSR2",
            _ = self.alarm.recv() => "SIGALRM",
        }
    }
}

/// A signal that would otherwise have ended the daemon: said in the log.
fn ignored_signal(name: &str) {
    log(
        "warn",
        "signal ignored",
        &serde_json::json!({
            "signal": name,
            "why": "only SIGTERM and SIGINT stop the daemon, and SIGHUP reloads the configuration",
        }),
    );
}

/// Raises the soft limit on open files to the hard one (no privilege
/// needed): the default soft limit, 1024, is a budget a local user could
/// exhaust with idle connections, and the socket dumps need descriptors
/// too. Returns the limit now in force (0 when unknown).
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// The web configuration `config` names (none: plain HTTP, no users).
fn load_web_config(config: &DaemonConfig) -> Result<WebConfig> {
    config.web_config.as_deref().map_or_else(
        || Ok(WebConfig::default()),
        |path| WebConfig::load(path).context("--web-config"),
    )
}

/// One HTTP connection, holding its place in the budget until it ends,
/// served with the web configuration in force when it was accepted.
async fn connection(stream: tokio::net::TcpStream, daemon: Rc<RefCell<Daemon>>, slot: Slot) {
    let (web, budget) = {
        let d = daemon.borrow();
        (d.web.clone(), Rc::clone(&d.http))
    };
    let tls = web.tls.clone().map(TlsAcceptor::from);
    let answers = Rc::clone(&budget);
    let ended = http_conn::serve(stream, tls, move |request| {
        let (daemon, web, budget) = (Rc::clone(&daemon), web.clone(), Rc::clone(&answers));
        async move {
            let authorization = request.headers().get(header::AUTHORIZATION);
            let mut response = if web
                .auth
                .allows(authorization.map(header::HeaderValue::as_bytes))
                .await
            {
                answer(&request, &daemon)
            } else {
                budget.unauthorized.set(budget.unauthorized.get() + 1);
                unauthorized()
            };
            let headers = response.headers_mut();
            for (name, value) in web.headers.iter() {
                headers.insert(name.clone(), value.clone());
            }
            if budget.crowded() {
                headers.insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            response
        }
    })
    .await;
    if ended == http_conn::Ended::TlsFailed {
        budget.tls_failed.set(budget.tls_failed.get() + 1);
    }
    drop(slot);
}

fn unauthorized() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"unauthorized\n")));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"tcptrace\""),
    );
    response
}

/// The answer to an authenticated request.
fn answer(request: &Request<Incoming>, daemon: &RefCell<Daemon>) -> Response<Full<Bytes>> {
    let gzip = http::accepts_gzip(request.headers());
    let metrics = |format| Variant { format, gzip };
    let (status, content_type, gzipped, body) =
        match http::route(request.method(), request.uri().path(), request.headers()) {
            Route::Metrics(true) => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                gzip,
                daemon
                    .borrow_mut()
                    .metrics_text(metrics(Format::OpenMetrics)),
            ),
            Route::Metrics(false) => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                gzip,
                daemon.borrow_mut().metrics_text(metrics(Format::Classic)),
            ),
            Route::Health => (
                StatusCode::OK,
                "application/json",
                false,
                Bytes::from(daemon.borrow_mut().health()),
            ),
            Route::Index => (
                StatusCode::OK,
                "text/html; charset=utf-8",
                false,
                Bytes::from_static(http::LANDING_PAGE.as_bytes()),
            ),
            Route::NotFound => (
                StatusCode::NOT_FOUND,
                "text/plain",
                false,
                Bytes::from_static(b"try /metrics or /healthz\n"),
            ),
            Route::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                false,
                Bytes::from_static(b"read-only\n"),
            ),
        };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    if gzipped {
        headers.insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    response
}

impl Daemon {
    fn new(
        config: DaemonConfig,
        probe: Probe,
        pipeline: Pipeline,
        http: Rc<HttpBudget>,
        web: WebConfig,
    ) -> Self {
        let mut daemon = Self {
            metrics: DaemonMetrics::default(),
            config: config.clone(),
            probe,
            pipeline,
            refreshed: Refreshed::default(),
            started: Instant::now(),
            logged: HashSet::new(),
            wakeups: 0,
            health: Health::default(),
            http,
            refresh_errors: 0,
            rendered: RenderedMetrics::default(),
            web,
            rings: [
                RingFillStats {
                    ring: "events",
                    ..RingFillStats::default()
                },
                RingFillStats {
                    ring: "stacks",
                    ..RingFillStats::default()
                },
                RingFillStats {
                    ring: "lives",
                    ..RingFillStats::default()
                },
            ],
        };
        daemon.apply(config);
        daemon
    }

    /// The settings that take effect without re-attaching, at start and
    /// at each SIGHUP (see `reload::Changes`).
    fn apply(&mut self, config: DaemonConfig) {
        if let Err(err) = self.pipeline.set_filter(config.filter()) {
            // Userspace still applies the whole filter: only the kernel's
            // saving is lost.
            log(
                "warn",
                "the kernel programs keep the previous filter",
                &serde_json::json!({ "error": format!("{err:#}") }),
            );
        }
        self.pipeline.set_idle_threshold(config.idle_threshold);
        self.pipeline
            .call_sites
            .set_jvm_perf_maps(config.jvm_perf_map);
        self.metrics.set_idle_threshold(config.idle_threshold);
        self.config = config;
    }

    /// Applies a socket dump taken just now, after the events before it (a
    /// bounded number of batches under a load without end); true when
    /// more records are waiting.
    fn apply_dump(
        &mut self,
        rings: &mut Rings,
        dumped: Result<Result<(Snapshot, Snapshot)>, tokio::task::JoinError>,
    ) -> bool {
        let mut more = false;
        for _ in 0..REFRESH_DRAIN_BATCHES {
            more = self.drain(rings);
            if !more {
                break;
            }
        }
        match dumped {
            Ok(Ok((all, owned))) => self.refresh(all, owned),
            Ok(Err(err)) => self.refresh_failed(&format!("{err:#}")),
            Err(err) => self.refresh_failed(&err.to_string()),
        }
        more
    }

    /// Reads a batch of records; true when more are waiting.
    fn drain(&mut self, rings: &mut Rings) -> bool {
        // The pressure that ends in lost events, as the reader finds it.
        for (stats, fill) in self
            .rings
            .iter_mut()
            .zip([&rings.events_fill, &rings.stacks_fill])
        {
            if let Some(fill) = fill {
                stats.size_bytes = fill.size;
                stats.fill.observe(fill.ratio());
            }
        }
        if let Some(lives) = &rings.lives {
            let stats = &mut self.rings[2];
            stats.size_bytes = lives.size_bytes();
            stats.fill.observe(lives.fill_ratio());
        }
        let metrics = &mut self.metrics;
        let more = self
            .pipeline
            .drain_up_to::<std::convert::Infallible>(rings, DRAIN_BATCH, &mut |seen| {
                metrics.observe(seen);
                Ok(())
            })
            .unwrap_or(false);
        // Resets on sockets nobody owns belong to no filter's scope: with a
        // filter they are host-wide figures only (`tcptrace_kernel_*`).
        if self.pipeline.filter.is_empty() {
            // Two counters, not all of them: this runs ten times a second.
            let count = |counter| self.probe.counter(counter).unwrap_or(0);
            self.metrics.resets_without_socket(
                count(Counter::ResetsSentWithoutSocket),
                count(Counter::ResetsReceivedWithoutSocket),
            );
        }
        more
    }

    /// Diagnoses and the findings log, against a fresh socket dump.
    fn refresh(&mut self, all: Snapshot, mut owned: Snapshot) {
        self.pipeline.retain_workloads(&mut owned);
        let kernel = self.probe.counters().unwrap_or_default();
        let losses = self.losses(&kernel);
        self.health.observe(Instant::now(), losses);
        let report = self.pipeline.report_with(
            &all,
            &owned,
            self.started.elapsed(),
            &kernel,
            crate::clock::monotonic_ns(),
        );
        if self.config.log_findings {
            self.log_new_findings(&report);
        }
        let owned_now = self.pipeline.owned(&all, &owned);
        self.refreshed = Refreshed::new(
            &all,
            owned_now,
            &report,
            self.config.top_peers,
            self.pipeline.containers(),
        );
        drop((all, owned, report));
        self.metrics.evict_idle(crate::clock::monotonic_ns());
        self.pipeline.call_sites.release_idle();
        // A refresh allocates per socket and frees it all again.
        release_free_heap();
    }

    fn log_new_findings(&mut self, report: &Report) {
        for finding in &report.findings {
            let Some(line) = finding.log_line() else {
                continue;
            };
            // Bounded: a daemon running for weeks forgets old keys.
            if self.logged.len() > 10_000 {
                self.logged.clear();
            }
            if self.logged.insert(line.key) {
                log(
                    "warn",
                    line.message,
                    &serde_json::to_value(finding).unwrap_or_default(),
                );
            }
        }
    }

    /// SIGHUP: the configuration read again; what can change without
    /// re-attaching is applied, the rest is named in the log (restart).
    /// A configuration that does not read changes nothing.
    fn reload(&mut self, read_config: &ReadConfig) {
        let new = match read_config() {
            Ok(new) => new,
            Err(error) => {
                log(
                    "warn",
                    "configuration not reloaded",
                    &serde_json::json!({ "error": format!("{error:#}") }),
                );
                return;
            }
        };
        let changes = Changes::between(&self.config, &new);
        let config = Changes::in_force(&self.config, &new);
        log_config_warnings(&config);
        // Read again even when its path is the same: certificates are
        // renewed in place.
        match load_web_config(&config) {
            Ok(web) => self.web = web,
            Err(error) => log(
                "warn",
                "web configuration not reloaded",
                &serde_json::json!({ "error": format!("{error:#}") }),
            ),
        }
        self.apply(config);
        log(
            "info",
            "configuration reloaded",
            &serde_json::json!({
                "tls": self.web.tls.is_some(),
                "basic_auth": self.web.auth.required(),
                "applied": changes.applied,
                "need_restart": changes.need_restart,
            }),
        );
    }

    /// `/metrics` as `variant`: from the last render if recent, else a new
    /// one.
    fn metrics_text(&mut self, variant: Variant) -> Bytes {
        let mut rendered = std::mem::take(&mut self.rendered);
        let text = rendered.get(variant, Instant::now(), || self.render());
        self.rendered = rendered;
        text
    }

    fn render(&mut self) -> String {
        let mut scrape = Scrape {
            kernel: self.probe.counters().unwrap_or_default(),
            events: self.pipeline.counts,
            stacks: self.pipeline.call_sites.counts(),
            socket_map_walks_failed: self.pipeline.socket_map_walks_failed(),
            version: env!("CARGO_PKG_VERSION"),
            kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            sockets: self.refreshed.sockets.clone(),
            kernel_sockets: self.refreshed.kernel_sockets.clone(),
            network_namespaces: (
                self.refreshed.namespaces_listed,
                self.refreshed.namespaces_unreachable.len() as u64,
            ),
            time_wait: self.refreshed.time_wait.clone(),
            close_wait_oldest: self.refreshed.close_wait_oldest.clone(),
            idle_without_keepalive: self.refreshed.idle_without_keepalive.clone(),
            connection_ages: self.refreshed.connection_ages.clone(),
            oldest_connection: self.refreshed.oldest_connection.clone(),
            listeners_in_range: self.refreshed.listeners_in_range.clone(),
            ports_in_use: self.refreshed.ports_in_use.clone(),
            port_range_sizes: self.refreshed.port_range_sizes.clone(),
            process: ProcessStats::of_self(),
            costs: Some(TracerCosts {
                bpf_stats_enabled: bpf_stats_enabled(),
                programs: self.probe.program_runs(),
                rings: self
                    .rings
                    .iter()
                    .filter(|ring| ring.size_bytes > 0)
                    .cloned()
                    .collect(),
            }),
            ..Scrape::default()
        };
        scrape::counters(
            &self.metrics,
            self.pipeline.containers(),
            self.config.top_peers,
            &mut scrape,
        );
        render(scrape)
    }

    /// A socket dump failed: logged, and `/healthz` degraded while they do.
    fn refresh_failed(&mut self, error: &str) {
        self.refresh_errors += 1;
        log(
            "warn",
            "refresh failed",
            &serde_json::json!({ "error": error }),
        );
    }

    /// Every counter `/healthz` watches, now.
    fn losses(&self, kernel: &crate::probe::Counters) -> Losses {
        Losses {
            refresh_errors: self.refresh_errors,
            http_refused: self.http.refused.get(),
            http_accept_errors: self.http.accept_errors.get(),
            ..Losses::of(kernel, self.pipeline.counts.decode_errors)
        }
    }

    fn health(&mut self) -> String {
        let kernel = self.probe.counters().unwrap_or_default();
        let now = Instant::now();
        let losses = self.losses(&kernel);
        self.health.observe(now, losses);
        let mut verdict = self.health.verdict(now, losses);
        // Sockets of namespaces the last dump could not list are missing
        // from the gauges until one can.
        for namespace in &self.refreshed.namespaces_unreachable {
            verdict.status = "degraded";
            verdict
                .reasons
                .push(format!("sockets not listed: {namespace}"));
        }
        serde_json::json!({
            "status": verdict.status,
            "reasons": verdict.reasons,
            "window_s": health::WINDOW.as_secs(),
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "events": self.pipeline.counts.events,
            "state_changes": self.pipeline.counts.state_changes,
            "events_lost": kernel.events_lost,
            "kernel_runs_skipped": kernel.runs_skipped,
            "kernel_transitions_missed": kernel.transitions_missed,
            "events_sent_by_kernel": kernel.events_sent,
            "events_folded_by_kernel": kernel.events_folded,
            "events_filtered_by_kernel": kernel.filtered_out,
            "decode_errors": self.pipeline.counts.decode_errors,
            "stacks": self.pipeline.call_sites.counts(),
            "stack_errors": kernel.stack_errors,
            "sock_map_full": kernel.sock_map_full,
            "listener_map_full": kernel.listener_map_full,
            "close_wait_map_full": kernel.close_wait_map_full,
            "life_ring_full": kernel.life_ring_full,
            "http_connections_refused": self.http.refused.get(),
            "http_accept_errors": self.http.accept_errors.get(),
            "http_unauthorized": self.http.unauthorized.get(),
            "http_tls_handshakes_failed": self.http.tls_failed.get(),
            "refresh_errors": self.refresh_errors,
            "kernel_read_errors": kernel.read_errors,
            "processes_not_announced": kernel.processes_not_announced,
            "missing_hooks": self.probe.missing_hooks(),
            "ring_wakeups": self.wakeups,
            "live_sockets_traced": self.pipeline.table.len(),
        })
        .to_string()
            + "\n"
    }
}

/// What the configuration and the kernel could not give, logged once at
/// start.
fn log_warnings(config: &DaemonConfig, probe: &Probe, pipeline: &Pipeline) {
    log_config_warnings(config);
    for missing in probe.missing_hooks() {
        log(
            "warn",
            "a hook is missing",
            &serde_json::json!({ "lost": missing }),
        );
    }
    let priority = pipeline.call_sites.counts().meeting_priority;
    if priority.is_degraded() {
        log(
            "warn",
            "process meeting thread below real-time priority",
            &serde_json::json!({
                "priority": priority.as_str(),
                "consequence": crate::symbolize::MeetingPriority::CONSEQUENCE,
            }),
        );
    }
}

/// What the configuration asked that cannot be done as asked (a `comm`
/// longer than the kernel keeps).
fn log_config_warnings(config: &DaemonConfig) {
    for warning in &config.warnings {
        log(
            "warn",
            "configuration",
            &serde_json::json!({ "warning": warning }),
        );
    }
}

/// One structured log line on stderr.
/// Hands freed heap back to the kernel, so RSS tracks what the daemon
/// keeps rather than its peaks (parsing the kernel's BTF at load, a socket
/// dump at refresh).
fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn log(level: &str, message: &str, fields: &serde_json::Value) {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    eprintln!(
        "{}",
        serde_json::json!({ "ts": ts, "level": level, "msg": message, "fields": fields })
    );
}
