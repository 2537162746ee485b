//! A deliberately tiny, read-only HTTP/1.1 responder for `/metrics` and
//! `/healthz`. Written by hand (two GET routes, `Connection: close`) rather
//! than pulling a web framework into a privileged agent: less code to trust,
//! faster to build. Requests are bounded in size and time.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const MAX_REQUEST: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// A response is written in pieces of `WRITE_CHUNK`, each within
/// `WRITE_TIMEOUT`: a slow scraper that keeps reading gets the whole
/// response (a large /metrics takes a while at a few MB/s), one that stops
/// is dropped 2 s later, and none holds its connection past
/// `RESPONSE_LIMIT`.
const WRITE_CHUNK: usize = 256 * 1024;
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_LIMIT: Duration = Duration::from_secs(30);

/// What the client asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/metrics`; true when the client accepts `OpenMetrics`.
    Metrics(bool),
    Health,
    /// `/`: a page that says what this is and links the endpoints.
    Index,
    NotFound,
    /// Anything but GET/HEAD: the endpoints are read-only.
    MethodNotAllowed,
    BadRequest,
}

/// What a browser pointed at the daemon sees.
pub const LANDING_PAGE: &str = concat!(
    "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>tcptrace</title></head>\n",
    "<body><h1>tcptrace ",
    env!("CARGO_PKG_VERSION"),
    "</h1>\n<p>TCP connection lifecycle tracer: who churns, leaks CLOSE_WAIT, ",
    "retransmits FINs to dead peers, and holds idle connections.</p>\n<ul>\n",
    "<li><a href=\"/metrics\">/metrics</a>: Prometheus metrics</li>\n",
    "<li><a href=\"/healthz\">/healthz</a>: health, with the reasons when degraded</li>\n",
    "</ul></body></html>\n"
);

/// Parses the request line of `head`.
#[must_use]
pub fn route(head: &[u8]) -> Route {
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let mut parts = text.lines().next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    if method != "GET" && method != "HEAD" {
        return Route::MethodNotAllowed;
    }
    match target.split('?').next() {
        Some("/metrics") => Route::Metrics(accepts_openmetrics(text)),
        Some("/healthz") => Route::Health,
        Some("/") => Route::Index,
        _ => Route::NotFound,
    }
}

/// The values of the request's headers called `name` (any case).
fn header_values<'a>(head: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(move |(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// True when the request's `Accept-Encoding` lists gzip (and does not
/// refuse it with `q=0`). A head that is not UTF-8 is a bad request.
#[must_use]
pub fn accepts_gzip(head: &[u8]) -> bool {
    std::str::from_utf8(head).is_ok_and(|text| {
        header_values(text, "accept-encoding")
            .flat_map(|value| value.split(','))
            .any(|coding| {
                let mut parts = coding.split(';').map(str::trim);
                parts.next().is_some_and(|c| c.eq_ignore_ascii_case("gzip"))
                    && !parts.any(|p| {
                        p.strip_prefix("q=")
                            .and_then(|q| q.parse::<f32>().ok())
                            .is_some_and(|q| q <= 0.0)
                    })
            })
    })
}

fn accepts_openmetrics(head: &str) -> bool {
    header_values(head, "accept").any(|value| value.contains("application/openmetrics-text"))
}

/// Reads a request head (up to the blank line), bounded in size and time.
pub async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Some(());
            }
            if head.len() > MAX_REQUEST {
                return None;
            }
        }
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.ok()??;
    Some(head)
}

/// Whether the request is a HEAD: answered with the headers only.
#[must_use]
pub fn is_head(head: &[u8]) -> bool {
    head.starts_with(b"HEAD ")
}

/// Writes a complete response and closes; the body's length is always
/// given, the body itself only when `send_body` (not for HEAD).
pub async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    gzipped: bool,
    body: &[u8],
    send_body: bool,
) {
    let encoding = if gzipped {
        "Content-Encoding: gzip\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{encoding}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let body = if send_body { body } else { &[] };
    let write = async {
        let timed =
            |piece: &'static str| move |_| std::io::Error::new(std::io::ErrorKind::TimedOut, piece);
        tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(head.as_bytes()))
            .await
            .map_err(timed("head"))??;
        for chunk in body.chunks(WRITE_CHUNK) {
            tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(chunk))
                .await
                .map_err(timed("body"))??;
        }
        tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown())
            .await
            .map_err(timed("shutdown"))?
    };
    let _ = tokio::time::timeout(RESPONSE_LIMIT, write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics(false)
        );
        let prometheus = b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n";
        assert_eq!(route(prometheus), Route::Metrics(true));
        assert_eq!(route(b"GET /healthz HTTP/1.0\r\n\r\n"), Route::Health);
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"),
            Route::Metrics(false)
        );
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::Index);
        assert_eq!(route(b"GET /other HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"garbage"), Route::BadRequest);
        assert_eq!(route(&[0xff, 0xfe]), Route::BadRequest);
    }

    #[test]
    fn gzip_when_asked_and_not_refused() {
        let head = |encoding: &str| format!("GET /metrics HTTP/1.1\r\n{encoding}\r\n\r\n");
        // What Prometheus sends.
        assert!(accepts_gzip(head("Accept-Encoding: gzip").as_bytes()));
        assert!(accepts_gzip(
            head("accept-encoding: deflate, GZIP;q=0.5").as_bytes()
        ));
        assert!(!accepts_gzip(head("Accept-Encoding: gzip;q=0").as_bytes()));
        assert!(!accepts_gzip(head("Accept-Encoding: identity").as_bytes()));
        assert!(!accepts_gzip(head("X-Note: gzip").as_bytes()));
        assert!(!accepts_gzip(b"GET /metrics HTTP/1.1\r\n\r\n"));
    }
}
