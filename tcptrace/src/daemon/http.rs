//! What a request to the daemon asks for: the routes (`/metrics`,
//! `/healthz`, a landing page at `/`) and the content negotiation
//! (`OpenMetrics` or the classic text, gzip or not). The connection itself
//! (keep-alive, TLS, deadlines) is `http_conn.rs`.

use hyper::{header, HeaderMap, Method};

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

/// The route of a request for `path` by `method` with `headers`.
#[must_use]
pub fn route(method: &Method, path: &str, headers: &HeaderMap) -> Route {
    if method != Method::GET && method != Method::HEAD {
        return Route::MethodNotAllowed;
    }
    match path {
        "/metrics" => Route::Metrics(accepts_openmetrics(headers)),
        "/healthz" => Route::Health,
        "/" => Route::Index,
        _ => Route::NotFound,
    }
}

/// The values of the request's headers called `name`, as text (values
/// that are not text are skipped).
fn header_values(headers: &HeaderMap, name: header::HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|value| value.to_str().ok())
}

/// True when the request's `Accept-Encoding` lists gzip (and does not
/// refuse it with `q=0`).
#[must_use]
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    header_values(headers, header::ACCEPT_ENCODING)
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
}

fn accepts_openmetrics(headers: &HeaderMap) -> bool {
    header_values(headers, header::ACCEPT)
        .any(|value| value.contains("application/openmetrics-text"))
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn with(name: header::HeaderName, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.append(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn routes() {
        let none = HeaderMap::new();
        assert_eq!(
            route(&Method::GET, "/metrics", &none),
            Route::Metrics(false)
        );
        // What Prometheus sends.
        let prometheus = with(
            header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        );
        assert_eq!(
            route(&Method::GET, "/metrics", &prometheus),
            Route::Metrics(true)
        );
        assert_eq!(route(&Method::HEAD, "/healthz", &none), Route::Health);
        assert_eq!(
            route(&Method::POST, "/metrics", &none),
            Route::MethodNotAllowed
        );
        assert_eq!(route(&Method::GET, "/", &none), Route::Index);
        assert_eq!(route(&Method::GET, "/other", &none), Route::NotFound);
    }

    #[test]
    fn gzip_when_asked_and_not_refused() {
        let encoding = |value| with(header::ACCEPT_ENCODING, value);
        // What Prometheus sends.
        assert!(accepts_gzip(&encoding("gzip")));
        assert!(accepts_gzip(&encoding("deflate, GZIP;q=0.5")));
        assert!(!accepts_gzip(&encoding("gzip;q=0")));
        assert!(!accepts_gzip(&encoding("identity")));
        assert!(!accepts_gzip(&with(
            header::HeaderName::from_static("x-note"),
            "gzip"
        )));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
