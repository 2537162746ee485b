//! One HTTP connection to the daemon, from accept to close: the TLS
//! handshake when `--web-config` asks for TLS, then HTTP/1.1 with
//! keep-alive served by hyper, under a watchdog that bounds every phase of
//! the connection's life so that no client, idle or slow, holds one of the
//! `http_budget` places for long:
//!
//! - a request head (and the TLS handshake) must arrive within
//!   [`HEAD_TIMEOUT`] of the connection or of its first byte;
//! - an answer is made within [`ANSWER_TIMEOUT`] (a password check waits
//!   its turn for bcrypt);
//! - an idle kept-alive connection is closed after [`IDLE_TIMEOUT`], and
//!   once more than `http_budget::KEEP_ALIVE` places are taken, answers say
//!   `Connection: close`, so idle connections can never take them all.

use std::{
    cell::Cell,
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Instant,
};
use tokio_rustls::TlsAcceptor;

/// From the connection (TLS handshake included), or from the first byte
/// after an idle spell, to a complete request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// From a complete request head to the answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// A kept-alive connection with no request for this long is closed (and
/// the answer's writing to a slow reader must end within it too).
/// Prometheus scrapes every 15 s to 1 min; its client keeps connections
/// 5 min, and opens a new one when the server closed it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Request heads larger than this are refused (431).
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Where a connection is in its life: each phase has its own deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Making the answer.
    Answering,
    /// Answered; writing it out and waiting for the next request.
    Idle,
}

/// The connection's phase and the instant it must leave it by. Shared by
/// the reader (a first byte starts a head), the service (a head starts an
/// answer, an answer made starts idling) and the watchdog.
#[derive(Debug)]
pub struct ConnClock {
    phase: Cell<Phase>,
    deadline: Cell<Instant>,
}

impl ConnClock {
    #[must_use]
    pub fn new(now: Instant) -> Rc<Self> {
        Rc::new(Self {
            phase: Cell::new(Phase::Head),
            deadline: Cell::new(now + HEAD_TIMEOUT),
        })
    }

    fn enter(&self, phase: Phase, now: Instant) {
        let limit = match phase {
            Phase::Head => HEAD_TIMEOUT,
            Phase::Answering => ANSWER_TIMEOUT,
            Phase::Idle => IDLE_TIMEOUT,
        };
        self.phase.set(phase);
        self.deadline.set(now + limit);
    }

    /// Bytes arrived: an idle connection starts its next request head.
    pub fn read_bytes(&self, now: Instant) {
        if self.phase.get() == Phase::Idle {
            self.enter(Phase::Head, now);
        }
    }

    /// A request head is complete.
    pub fn answering(&self, now: Instant) {
        self.enter(Phase::Answering, now);
    }

    /// The answer is made.
    pub fn answered(&self, now: Instant) {
        self.enter(Phase::Idle, now);
    }

    #[must_use]
    pub fn deadline(&self) -> Instant {
        self.deadline.get()
    }

    /// Resolves once the deadline in force passes (a deadline moved later
    /// meanwhile is waited for).
    pub async fn expired(&self) {
        loop {
            let deadline = self.deadline();
            tokio::time::sleep_until(deadline).await;
            if self.deadline() <= Instant::now() {
                return;
            }
        }
    }
}

/// A stream that tells the clock when bytes arrive.
struct Watched<S> {
    inner: S,
    clock: Rc<ConnClock>,
}

impl<S> Watched<S> {
    fn new(inner: S, clock: &Rc<ConnClock>) -> Self {
        Self {
            inner,
            clock: Rc::clone(clock),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.read_bytes(Instant::now());
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// How a connection ended before its first request, for the counters.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Served (zero or more requests) and closed.
    Served,
    /// The TLS handshake failed or timed out.
    TlsFailed,
}

/// Serves `stream` until the client closes or a deadline passes: TLS first
/// when `tls` is given, then every request through `answer`.
pub async fn serve<A, F>(stream: TcpStream, tls: Option<TlsAcceptor>, answer: A) -> Ended
where
    A: Fn(Request<Incoming>) -> F + 'static,
    F: Future<Output = Response<Full<Bytes>>> + 'static,
{
    let clock = ConnClock::new(Instant::now());
    let answer = Rc::new(answer);
    let service = {
        let clock = Rc::clone(&clock);
        service_fn(move |request| {
            let (clock, answer) = (Rc::clone(&clock), Rc::clone(&answer));
            async move {
                clock.answering(Instant::now());
                let response = answer(request).await;
                clock.answered(Instant::now());
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut http = http1::Builder::new();
    http.keep_alive(true)
        .max_header_size(MAX_HEAD_BYTES)
        // The watchdog bounds heads (hyper's own timer is not installed).
        .header_read_timeout(None);
    match tls {
        None => serve_http(&http, Watched::new(stream, &clock), service, &clock).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout_at(clock.deadline(), acceptor.accept(stream));
            let Ok(Ok(stream)) = handshake.await else {
                return Ended::TlsFailed;
            };
            serve_http(&http, Watched::new(stream, &clock), service, &clock).await;
        }
    }
    Ended::Served
}

/// HTTP/1.1 over `stream` until either side ends it or `clock` expires.
async fn serve_http<S, Svc>(http: &http1::Builder, stream: S, service: Svc, clock: &ConnClock)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    Svc: hyper::service::HttpService<Incoming, ResBody = Full<Bytes>>,
    Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::select! {
        _ = http.serve_connection(TokioIo::new(stream), service) => {}
        () = clock.expired() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_has_its_deadline() {
        let start = Instant::now();
        let clock = ConnClock::new(start);
        assert_eq!(clock.deadline(), start + HEAD_TIMEOUT);
        // Bytes of the first head do not extend it (a slow head is cut).
        clock.read_bytes(start + Duration::from_secs(1));
        assert_eq!(clock.deadline(), start + HEAD_TIMEOUT);
        let head = start + Duration::from_secs(1);
        clock.answering(head);
        assert_eq!(clock.deadline(), head + ANSWER_TIMEOUT);
        let answered = head + Duration::from_millis(5);
        clock.answered(answered);
        assert_eq!(clock.deadline(), answered + IDLE_TIMEOUT);
        // The next request's first byte starts a head deadline.
        let next = answered + Duration::from_secs(15);
        clock.read_bytes(next);
        assert_eq!(clock.deadline(), next + HEAD_TIMEOUT);
    }
}
