//! `tcptrace daemon --web-config`: TLS and basic authentication in the
//! Prometheus exporter-toolkit format, checked with clients nobody here
//! wrote: curl, and a real Prometheus scraping over TLS with credentials.
//! Certificates come from `openssl`, password hashes from `htpasswd`.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use tcptrace_tests::{
    daemon::{free_loopback_addr, Daemon, Prometheus},
    pki::{bcrypt_hash, Pki},
    require_root,
};

/// What curl got: the status of each URL asked (0 when none came, e.g. a
/// refused handshake), the connections it opened for each, the headers
/// and bodies of them all, and its stderr.
struct Curled {
    statuses: Vec<u16>,
    connects: Vec<u32>,
    output: String,
    stderr: String,
}

/// `curl ARGS URLS...` over TLS trusting `pki`'s CA, one connection reused
/// for the URLs when the server keeps it alive.
fn curl(pki: &Pki, args: &[&str], urls: &[String]) -> Curled {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "10", "-D", "-", "--cacert"])
        .arg(pki.path("ca.crt"))
        .args(args);
    for url in urls {
        command
            .args(["-w", "\n@@ %{http_code} %{num_connects}\n"])
            .arg(url);
    }
    let out = command
        .output()
        .expect("curl (installed by `cargo xtask test`)");
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut statuses = Vec::new();
    let mut connects = Vec::new();
    for line in output.lines().filter_map(|l| l.strip_prefix("@@ ")) {
        let mut fields = line.split(' ');
        statuses.push(fields.next().and_then(|s| s.parse().ok()).unwrap_or(0));
        connects.push(fields.next().and_then(|s| s.parse().ok()).unwrap_or(0));
    }
    Curled {
        statuses,
        connects,
        output,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn https(listen: &str, path: &str) -> String {
    let port = listen.rsplit_once(':').expect("host:port").1;
    format!("https://localhost:{port}{path}")
}

fn write_web_config(pki: &Pki, text: &str) -> String {
    let path = pki.path("web.yml");
    std::fs::write(&path, text).expect("web.yml");
    path.display().to_string()
}

/// The daemon's /healthz over TLS with credentials, parsed.
fn health(pki: &Pki, listen: &str, user: &str) -> serde_json::Value {
    let got = curl(pki, &["-u", user], &[https(listen, "/healthz")]);
    let body = got
        .output
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|rest| rest.split("\n@@").next())
        .unwrap_or_default()
        .to_owned();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/healthz JSON ({e}): {}", got.output))
}

fn signal(daemon: &Daemon, signal: i32) {
    let pid = i32::try_from(daemon.pid()).expect("pid");
    // SAFETY: kill with a pid we started and a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// TLS with basic auth: no or wrong credentials get 401 with a Basic
/// challenge, the right ones get the metrics, plain HTTP gets no answer,
/// a connection is kept alive across requests, and a real Prometheus
/// scrapes over TLS with the credentials (and fails without them).
#[test]
fn tls_and_basic_auth_with_curl_and_a_real_prometheus() {
    require_root();
    let pki = Pki::new("web-auth");
    pki.issue("server", false);
    let hash = bcrypt_hash("prometheus", "s3cret");
    let config = write_web_config(
        &pki,
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  prometheus: {hash}\n"
        ),
    );
    let listen = free_loopback_addr();
    let daemon = Daemon::start_until(&listen, &["--web-config", &config], || {
        curl(&pki, &[], &[https(&listen, "/healthz")]).statuses == [401]
    });
    let metrics = https(&listen, "/metrics");

    let none = curl(&pki, &[], std::slice::from_ref(&metrics));
    assert_eq!(none.statuses, [401], "{}", none.output);
    assert!(
        none.output
            .to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"tcptrace\""),
        "a Basic challenge: {}",
        none.output
    );
    let wrong = curl(
        &pki,
        &["-u", "prometheus:secret"],
        std::slice::from_ref(&metrics),
    );
    assert_eq!(wrong.statuses, [401]);
    let unknown = curl(&pki, &["-u", "root:s3cret"], std::slice::from_ref(&metrics));
    assert_eq!(unknown.statuses, [401]);

    // Three requests, one connection (keep-alive), the right answers.
    let right = curl(
        &pki,
        &["-u", "prometheus:s3cret", "--compressed"],
        &[metrics.clone(), https(&listen, "/healthz"), metrics.clone()],
    );
    assert_eq!(right.statuses, [200, 200, 200], "{}", right.stderr);
    assert_eq!(
        right.connects,
        [1, 0, 0],
        "one TLS connection kept alive for all three: {}",
        right.stderr
    );
    assert!(right.output.contains("tcptrace_events_total"));
    assert!(
        right
            .output
            .to_ascii_lowercase()
            .contains("content-encoding: gzip"),
        "gzip when asked"
    );

    // Plain HTTP to the TLS port: no HTTP answer (the handshake fails).
    let plain = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://{listen}/metrics"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "000");

    let health = health(&pki, &listen, "prometheus:s3cret");
    assert!(
        health["http_unauthorized"].as_u64() >= Some(3),
        "the 401s are counted: {health}"
    );
    assert!(
        health["http_tls_handshakes_failed"].as_u64() >= Some(1),
        "the plain request is counted: {health}"
    );

    real_prometheus_scrapes_with_credentials_only(&pki, &listen);
    drop(daemon);
}

/// A real Prometheus scraping the daemon at `listen` over TLS: a job with
/// the credentials is up and gets tcptrace's series, one without is down.
fn real_prometheus_scrapes_with_credentials_only(pki: &Pki, listen: &str) {
    let ca = pki.path("ca.crt");
    let target = format!("localhost:{}", listen.rsplit_once(':').expect("port").1);
    let job = |name: &str, auth: &str| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n{auth}    static_configs:\n      - targets: ['{target}']\n",
            ca.display()
        )
    };
    let prometheus = Prometheus::start(
        "web",
        &(job(
            "with_credentials",
            "    basic_auth:\n      username: prometheus\n      password: s3cret\n",
        ) + &job("without_credentials", "")),
    );
    let (up, answer) = prometheus.query_until(
        r#"up{job="with_credentials"}"#,
        Duration::from_secs(40),
        |v| v == "1",
    );
    assert_eq!(
        up.as_deref(),
        Some("1"),
        "scraped over TLS with credentials: {answer}"
    );
    let (events, answer) = prometheus.query_until(
        r#"tcptrace_events_total{job="with_credentials"}"#,
        Duration::from_secs(20),
        |_| true,
    );
    assert!(
        events.is_some(),
        "tcptrace's series reach Prometheus: {answer}"
    );
    let (up, answer) = prometheus.query_until(
        r#"up{job="without_credentials"}"#,
        Duration::from_secs(20),
        |_| true,
    );
    assert_eq!(
        up.as_deref(),
        Some("0"),
        "refused without credentials: {answer}"
    );
}

/// `RequireAndVerifyClientCert`: a client certificate signed by the
/// client CA is let in; none, or one from another CA, fails the handshake.
#[test]
fn client_certificates_are_verified() {
    require_root();
    let pki = Pki::new("web-mtls");
    pki.issue("server", false);
    pki.issue("scraper", true);
    let stranger = Pki::new("web-stranger");
    stranger.issue("intruder", true);
    let config = write_web_config(
        &pki,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    );
    let listen = free_loopback_addr();
    let cert = |pki: &Pki, name: &str| {
        [
            "--cert".to_owned(),
            pki.path(&format!("{name}.crt")).display().to_string(),
            "--key".to_owned(),
            pki.path(&format!("{name}.key")).display().to_string(),
        ]
    };
    let scraper = cert(&pki, "scraper");
    let scraper: Vec<&str> = scraper.iter().map(String::as_str).collect();
    let _daemon = Daemon::start_until(&listen, &["--web-config", &config], || {
        curl(&pki, &scraper, &[https(&listen, "/healthz")]).statuses == [200]
    });
    let metrics = https(&listen, "/metrics");
    let with = curl(&pki, &scraper, std::slice::from_ref(&metrics));
    assert_eq!(with.statuses, [200], "{}", with.stderr);
    let without = curl(&pki, &[], std::slice::from_ref(&metrics));
    assert_eq!(without.statuses, [0], "no certificate: {}", without.stderr);
    let intruder = cert(&stranger, "intruder");
    let intruder: Vec<&str> = intruder.iter().map(String::as_str).collect();
    let foreign = curl(&pki, &intruder, std::slice::from_ref(&metrics));
    assert_eq!(foreign.statuses, [0], "a stranger's CA: {}", foreign.stderr);
    let got = curl(&pki, &scraper, &[https(&listen, "/healthz")]);
    assert!(
        got.output.contains("\"http_tls_handshakes_failed\":2"),
        "both refused handshakes are counted: {}",
        got.output
    );
}

/// SIGHUP reads the web configuration again: a changed password applies at
/// once; a broken file is refused, logged, and what was in force stays.
#[test]
fn sighup_reads_the_web_configuration_again() {
    require_root();
    let pki = Pki::new("web-reload");
    pki.issue("server", false);
    let with_password = |password: &str| {
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  prometheus: {}\n",
            bcrypt_hash("prometheus", password)
        )
    };
    let config = write_web_config(&pki, &with_password("first"));
    let listen = free_loopback_addr();
    let mut daemon = Daemon::start_until(&listen, &["--web-config", &config], || {
        curl(
            &pki,
            &["-u", "prometheus:first"],
            &[https(&listen, "/healthz")],
        )
        .statuses
            == [200]
    });
    let metrics = vec![https(&listen, "/metrics")];
    let status =
        |password: &str| curl(&pki, &["-u", &format!("prometheus:{password}")], &metrics).statuses;

    write_web_config(&pki, &with_password("second"));
    signal(&daemon, libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status("second") != [200] {
        assert!(Instant::now() < deadline, "the new password never applied");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(status("first"), [401], "the old password is gone");

    write_web_config(&pki, "tls_server_config:\n  cert_file: missing.crt\n");
    signal(&daemon, libc::SIGHUP);
    let refused = daemon.wait_for_log(
        Duration::from_secs(10),
        "web configuration not reloaded",
        |_| true,
    );
    assert!(refused.is_some(), "a broken file is refused and logged");
    assert_eq!(status("second"), [200], "what was in force stays");
    assert!(
        matches!(daemon.child.try_wait(), Ok(None)),
        "SIGHUP never stops the daemon"
    );
}

/// Keep-alive cannot crowd out scrapers: once more than a quarter of the
/// daemon's 64 connection places are taken, answers say
/// `Connection: close`.
#[test]
fn a_crowded_daemon_closes_connections_after_answering() {
    require_root();
    let listen = free_loopback_addr();
    let _daemon = Daemon::start(&listen, &[]);
    let connection_header = || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "-o", "/dev/null", "-D", "-"])
            .arg(format!("http://{listen}/healthz"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    assert!(
        !connection_header().contains("connection: close"),
        "kept alive while places are free"
    );
    // Held open without a request: each holds a place until its 2 s
    // deadline for a request head.
    let held: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(&listen).expect("connect"))
        .collect();
    thread::sleep(Duration::from_millis(300));
    assert!(
        connection_header().contains("connection: close"),
        "closed after answering while crowded"
    );
    drop(held);
}
