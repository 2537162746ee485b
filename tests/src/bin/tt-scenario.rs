//! The incidents of docs/INCIDENTS.md as small programs, for the diagnosis
//! tests (tests/tests/scenarios.rs). The code responsible for each incident
//! lives in a distinctively named `#[inline(never)]` function that makes the
//! connect/bind/close itself through std, so tcptrace's call sites can be
//! checked by name.
//!
//! Every mode prints one line per fact the test needs and flushes it, then
//! prints `done` and stays alive until stdin closes: the tracer symbolizes
//! stacks against the live process and lists `CLOSE_WAIT` holders from a
//! `sock_diag` dump when it makes its report. Every wait is bounded.

use std::{
    env,
    io::{BufRead, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use tcptrace_tests::workload::{exit_code, say};

const USAGE: &str = "usage:
  tt-scenario serve ADDR COUNT respond|close-at-once
        accept COUNT connections; `respond`: read `req`, answer `ok`, read to
        EOF, close; `close-at-once`: close each connection right after accept
  tt-scenario churn ADDR COUNT
        story 1: a new connection per request, closed by the client
  tt-scenario reconnect ADDR COUNT GAP_MS
        story 2: reconnect right after the server closes, GAP_MS apart
  tt-scenario connect-close ADDR COUNT
        connect, send `hello`, close; COUNT times
  tt-scenario leak ADDR COUNT
        story 3: accept COUNT connections, read to EOF, never close them
  tt-scenario late-close ADDR COUNT
        story 3: accept COUNT connections, read to EOF, close them only when
        stdin says `close`
  tt-scenario refused ADDR COUNT
        story 4: COUNT connects to a closed port
  tt-scenario black-hole ADDR
        story 4: one blocking connect to an address that never answers
  tt-scenario abort-after ADDR MS silent|chatty
        incident 5: accept one connection, keep it MS milliseconds, then
        reset it (SO_LINGER 0), as a middlebox's idle timeout does;
        `chatty`: send a byte every 100 ms until then (a busy connection)
  tt-scenario idle ADDR none|keepalive|keepalive-fast
        incident 5: one connection, then no data at all; `keepalive`: probes
        after 10 min idle; `keepalive-fast`: after 1 s, 1 s apart, 2 unanswered
        end it
  tt-scenario idle-then-write ADDR
        incident 5, the writer's side: one connection, no data until stdin
        says `write`; then it writes a byte, and again until the peer's
        reset ends the connection (prints `reset`)
  tt-scenario abort-in-last-ack ADDR
        one connection to itself: the accepted end reads EOF, fills the
        client's tiny receive window, shuts down its write side with data
        unsent (LAST_ACK); on stdin's `abort` it closes with SO_LINGER 0,
        and the kernel resets it from LAST_ACK (TCP_DISCONNECT_WITH_DATA)
  tt-scenario send-into-reset ADDR COUNT
        COUNT connections to itself: the client writes as fast as it can
        while the accepted end reads for 20 ms, then resets it (SO_LINGER
        0); the reset mostly reaches the client inside its write(), from
        the socket's backlog, and ends its write loop with ECONNRESET";

/// `TCP_LAST_ACK` of the kernel's `enum tcp_state` (`TCP_INFO`'s `tcpi_state`).
const TCP_LAST_ACK: u8 = 9;

/// Upper bound of any single wait for the peer.
const PEER_TIMEOUT: Duration = Duration::from_secs(20);

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", addr, count, behaviour] => serve(addr, count, behaviour),
        ["churn", addr, count] => churn(addr, count),
        ["reconnect", addr, count, gap_ms] => reconnect(addr, count, gap_ms),
        ["connect-close", addr, count] => connect_close(addr, count),
        ["leak", addr, count] => leak(addr, count),
        ["late-close", addr, count] => late_close(addr, count),
        ["refused", addr, count] => refused(addr, count),
        ["black-hole", addr] => black_hole(addr),
        ["idle", addr, keepalive] => idle(addr, keepalive),
        ["idle-then-write", addr] => idle_then_write(addr),
        ["abort-after", addr, ms, talk] => abort_after(addr, ms, talk),
        ["abort-in-last-ack", addr] => abort_in_last_ack(addr),
        ["send-into-reset", addr, count] => send_into_reset(addr, count),
        _ => Err(USAGE.to_owned()),
    };
    exit_code("tt-scenario", result)
}

fn parse_addr(addr: &str) -> Result<SocketAddr> {
    addr.parse().map_err(|e| format!("bad address {addr}: {e}"))
}

fn parse_count(count: &str) -> Result<u32> {
    let n: u32 = count
        .parse()
        .map_err(|e| format!("bad count {count}: {e}"))?;
    if n > 10_000 {
        return Err(format!("count {n} is too large"));
    }
    Ok(n)
}

fn err(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Reads stdin lines until it closes; `on_line` sees each one.
fn until_stdin_closes(mut on_line: impl FnMut(&str) -> Result) -> Result {
    let stdin = std::io::stdin();
    let mut line = String::new();
    while stdin.lock().read_line(&mut line).map_err(err("stdin"))? > 0 {
        on_line(line.trim())?;
        line.clear();
    }
    Ok(())
}

/// `done`, then alive until stdin closes.
fn linger() -> Result {
    say("done");
    until_stdin_closes(|_| Ok(()))
}

/// `accept()`, waiting at most `PEER_TIMEOUT`.
fn accept_in_time(listener: &TcpListener) -> Result<(TcpStream, SocketAddr)> {
    let mut poll = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout_ms = i32::try_from(PEER_TIMEOUT.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd, for the duration of the call.
    let ready = unsafe { libc::poll(&raw mut poll, 1, timeout_ms) };
    if ready <= 0 {
        return Err("no connection to accept in time".to_owned());
    }
    let (conn, peer) = listener.accept().map_err(err("accept"))?;
    conn.set_read_timeout(Some(PEER_TIMEOUT))
        .map_err(err("read timeout"))?;
    Ok((conn, peer))
}

fn read_to_eof(conn: &mut TcpStream) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    conn.read_to_end(&mut data).map_err(err("read to EOF"))?;
    Ok(data)
}

fn listen(addr: &str) -> Result<TcpListener> {
    let listener = TcpListener::bind(parse_addr(addr)?).map_err(err("bind"))?;
    say(&format!(
        "listening {}",
        listener.local_addr().map_err(err("local address"))?
    ));
    Ok(listener)
}

// ---------------------------------------------------------------- servers

fn serve(addr: &str, count: &str, behaviour: &str) -> Result {
    let count = parse_count(count)?;
    let listener = listen(addr)?;
    for served in 1..=count {
        let (mut conn, _) = accept_in_time(&listener)?;
        match behaviour {
            "respond" => {
                let mut request = [0u8; 3];
                conn.read_exact(&mut request).map_err(err("read request"))?;
                conn.write_all(b"ok").map_err(err("write answer"))?;
                read_to_eof(&mut conn)?;
            }
            "close-at-once" => {}
            _ => return Err(USAGE.to_owned()),
        }
        drop(conn);
        say(&format!("served {served}"));
    }
    linger()
}

/// Story 3: the server binds here, reads EOF from every client, and never
/// closes: the sockets stay in `CLOSE_WAIT` for as long as it lives.
#[inline(never)]
fn serve_and_never_close(addr: SocketAddr, count: u32) -> Result<Vec<TcpStream>> {
    let listener = TcpListener::bind(addr).map_err(err("bind"))?;
    say(&format!(
        "listening {}",
        listener.local_addr().map_err(err("local address"))?
    ));
    let mut kept = Vec::new();
    for _ in 0..count {
        let (mut conn, peer) = accept_in_time(&listener)?;
        read_to_eof(&mut conn)?;
        say(&format!("eof {peer} fd {}", conn.as_raw_fd()));
        kept.push(conn); // the missing close()
    }
    Ok(kept)
}

fn leak(addr: &str, count: &str) -> Result {
    let kept = serve_and_never_close(parse_addr(addr)?, parse_count(count)?)?;
    let result = linger();
    drop(kept);
    result
}

/// Story 3, second half: the `close()` that comes long after EOF, when the
/// peer may be gone.
#[inline(never)]
fn close_after_peer_vanished(conns: Vec<TcpStream>) {
    for conn in conns {
        drop(conn);
    }
}

fn late_close(addr: &str, count: &str) -> Result {
    let count = parse_count(count)?;
    let listener = listen(addr)?;
    let mut conns = Vec::new();
    for _ in 0..count {
        let (mut conn, peer) = accept_in_time(&listener)?;
        read_to_eof(&mut conn)?;
        say(&format!("eof {peer}"));
        conns.push(conn);
    }
    drop(listener);
    let mut pending = Some(conns);
    until_stdin_closes(|line| {
        if line == "close" {
            if let Some(conns) = pending.take() {
                close_after_peer_vanished(conns);
                say("closed");
            }
        }
        Ok(())
    })
}

// ---------------------------------------------------------------- clients

/// Story 1: a fresh client for every request, closed right after it.
#[inline(never)]
fn create_client_per_request(server: SocketAddr) -> Result<SocketAddr> {
    let mut conn = TcpStream::connect_timeout(&server, PEER_TIMEOUT).map_err(err("connect"))?;
    conn.set_read_timeout(Some(PEER_TIMEOUT))
        .map_err(err("read timeout"))?;
    let local = conn.local_addr().map_err(err("local address"))?;
    conn.write_all(b"req").map_err(err("write request"))?;
    let mut answer = [0u8; 2];
    conn.read_exact(&mut answer).map_err(err("read answer"))?;
    drop(conn);
    Ok(local)
}

fn churn(addr: &str, count: &str) -> Result {
    let server = parse_addr(addr)?;
    for _ in 0..parse_count(count)? {
        let local = create_client_per_request(server)?;
        say(&format!("local {local}"));
    }
    linger()
}

/// Story 2: connect, get closed by the server, connect again at once.
#[inline(never)]
fn reconnect_without_backoff(server: SocketAddr) -> Result<SocketAddr> {
    let mut conn = TcpStream::connect_timeout(&server, PEER_TIMEOUT).map_err(err("connect"))?;
    conn.set_read_timeout(Some(PEER_TIMEOUT))
        .map_err(err("read timeout"))?;
    let local = conn.local_addr().map_err(err("local address"))?;
    read_to_eof(&mut conn)?;
    drop(conn);
    Ok(local)
}

fn reconnect(addr: &str, count: &str, gap_ms: &str) -> Result {
    let server = parse_addr(addr)?;
    let gap = Duration::from_millis(
        gap_ms
            .parse::<u64>()
            .map_err(|e| format!("bad gap {gap_ms}: {e}"))?
            .min(5_000),
    );
    let count = parse_count(count)?;
    for attempt in 1..=count {
        let local = reconnect_without_backoff(server)?;
        say(&format!("local {local}"));
        if attempt < count {
            thread::sleep(gap);
        }
    }
    linger()
}

fn connect_close(addr: &str, count: &str) -> Result {
    let server = parse_addr(addr)?;
    for _ in 0..parse_count(count)? {
        let mut conn = TcpStream::connect_timeout(&server, PEER_TIMEOUT).map_err(err("connect"))?;
        say(&format!(
            "local {}",
            conn.local_addr().map_err(err("local address"))?
        ));
        conn.write_all(b"hello").map_err(err("write"))?;
        drop(conn);
    }
    linger()
}

/// Story 4: a connect the server's host refuses with a reset. It checks
/// the outcome itself, so it stays on the stack during `connect()` (no tail
/// call).
#[inline(never)]
fn connect_to_closed_port(server: SocketAddr) -> Result {
    match TcpStream::connect_timeout(&server, PEER_TIMEOUT) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(format!("connect to {server}: {e}, expected a refusal")),
        Ok(_) => Err(format!("connect to {server} succeeded, expected a refusal")),
    }
}

fn refused(addr: &str, count: &str) -> Result {
    let server = parse_addr(addr)?;
    for _ in 0..parse_count(count)? {
        connect_to_closed_port(server)?;
        say("refused");
    }
    linger()
}

/// Story 4: a blocking connect to an address that drops every packet; the
/// kernel gives up after `net.ipv4.tcp_syn_retries` retransmits.
#[inline(never)]
fn connect_to_black_hole(server: SocketAddr) -> Result<Duration> {
    let started = Instant::now();
    match TcpStream::connect(server) {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(started.elapsed()),
        Err(e) => Err(format!("connect to {server}: {e}, expected a time-out")),
        Ok(_) => Err(format!(
            "connect to {server} succeeded, expected a time-out"
        )),
    }
}

fn black_hole(addr: &str) -> Result {
    let waited = connect_to_black_hole(parse_addr(addr)?)?;
    say(&format!("timed out after {} ms", waited.as_millis()));
    linger()
}

/// Incident 5: a connection opened and then left idle, with or without
/// keepalive. Prints `connected LOCAL` and `done`; the socket lives until
/// stdin closes (or the kernel gives up on a vanished peer).
fn idle(addr: &str, keepalive: &str) -> Result {
    let timing = match keepalive {
        "none" => None,
        "keepalive" => Some((600, 60, 9)),
        "keepalive-fast" => Some((1, 1, 2)),
        _ => return Err(USAGE.to_owned()),
    };
    let conn = hold_idle_connection(parse_addr(addr)?, timing)?;
    let local = conn.local_addr().map_err(err("local address"))?;
    say(&format!("connected {local}"));
    linger()?;
    drop(conn);
    Ok(())
}

/// A pooled connection used again after a long silence: writes when stdin
/// says `write`, until the write fails on the peer's reset.
fn idle_then_write(addr: &str) -> Result {
    let mut conn = hold_idle_connection(parse_addr(addr)?, None)?;
    let local = conn.local_addr().map_err(err("local address"))?;
    say(&format!("connected {local}"));
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(err("stdin"))?;
    if line.trim() != "write" {
        return Err(format!("expected `write` on stdin, got {line:?}"));
    }
    let deadline = Instant::now() + PEER_TIMEOUT;
    loop {
        match conn.write(b".") {
            Ok(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(_) => return Err("no reset came".to_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                break
            }
            Err(e) => return Err(format!("write: {e}, expected a reset")),
        }
    }
    say("reset");
    linger()
}

/// Connects, and arms keepalive with (idle s, interval s, probes) if asked.
#[inline(never)]
fn hold_idle_connection(addr: SocketAddr, keepalive: Option<(i32, i32, i32)>) -> Result<TcpStream> {
    let conn = TcpStream::connect_timeout(&addr, PEER_TIMEOUT).map_err(err("connect"))?;
    if let Some((idle, interval, probes)) = keepalive {
        let fd = conn.as_raw_fd();
        for (level, option, value) in [
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle),
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, interval),
            (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, probes),
        ] {
            // SAFETY: `fd` is the open socket `conn` owns; `value` is a
            // c_int that outlives the call, with its size given.
            let set = unsafe {
                libc::setsockopt(
                    fd,
                    level,
                    option,
                    (&raw const value).cast(),
                    // 4: the size of a c_int.
                    4,
                )
            };
            if set != 0 {
                return Err(format!("setsockopt: {}", std::io::Error::last_os_error()));
            }
        }
    }
    Ok(conn)
}

/// Incident 5: the peer that resets a connection after it has lived a
/// while. Prints `listening ADDR`, `reset` once done, then `done`.
fn abort_after(addr: &str, ms: &str, talk: &str) -> Result {
    let ms: u64 = ms
        .parse()
        .map_err(|e| format!("bad milliseconds {ms}: {e}"))?;
    if ms > 60_000 {
        return Err(format!("{ms} ms is too long"));
    }
    let chatty = match talk {
        "silent" => false,
        "chatty" => true,
        _ => return Err(format!("{talk}: silent or chatty")),
    };
    let listener = listen(addr)?;
    let (mut conn, _) = accept_in_time(&listener)?;
    let until = Instant::now() + Duration::from_millis(ms);
    while chatty && Instant::now() + Duration::from_millis(100) < until {
        conn.write_all(b".").map_err(err("write"))?;
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(until.saturating_duration_since(Instant::now()));
    close_abortively(conn)?; // SO_LINGER 0: the close sends RST
    say("reset");
    linger()
}

/// The peer's reset processed in the sender's system call: each client
/// writes 1 MiB at a time while its server reads, so the client holds its
/// socket's lock most of the time and the kernel queues the server's RST
/// on the socket's backlog, processed when `write()` releases the lock.
fn send_into_reset(addr: &str, count: &str) -> Result {
    let count = parse_count(count)?;
    let listener = listen(addr)?;
    let server_addr = listener.local_addr().map_err(err("local_addr"))?;
    let server = thread::spawn(move || -> Result {
        for _ in 0..count {
            let (mut conn, _) = accept_in_time(&listener)?;
            let mut buffer = vec![0u8; 1 << 20];
            let until = Instant::now() + Duration::from_millis(20);
            while Instant::now() < until {
                if conn.read(&mut buffer).map_err(err("read"))? == 0 {
                    return Err("the client closed first".to_owned());
                }
            }
            close_abortively(conn)?;
        }
        Ok(())
    });
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..count {
        let mut conn =
            TcpStream::connect_timeout(&server_addr, PEER_TIMEOUT).map_err(err("connect"))?;
        conn.set_write_timeout(Some(PEER_TIMEOUT))
            .map_err(err("set_write_timeout"))?;
        loop {
            match conn.write(&chunk) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(format!("write: {e}, expected a reset")),
            }
        }
    }
    server
        .join()
        .map_err(|_| "the server thread panicked".to_owned())??;
    say("done");
    linger()
}

/// `setsockopt` of a `T` (a `c_int`, a `struct linger`) on `fd`.
fn set_option<T>(fd: RawFd, level: i32, option: i32, value: &T) -> Result {
    let size = libc::socklen_t::try_from(size_of::<T>()).map_err(|e| e.to_string())?;
    // SAFETY: `fd` is an open socket its caller owns; `value` is a live
    // `T`, its size given.
    let set =
        unsafe { libc::setsockopt(fd, level, option, std::ptr::from_ref(value).cast(), size) };
    if set != 0 {
        return Err(format!("setsockopt: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `close()` with `SO_LINGER` {on, 0}: `tcp_disconnect`, which resets the
/// connection from most states.
fn close_abortively(conn: TcpStream) -> Result {
    let abortive = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set_option(
        conn.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_LINGER,
        &abortive,
    )?;
    drop(conn);
    Ok(())
}

/// The kernel's `TCP_INFO` of a socket.
fn tcp_info(conn: &TcpStream) -> Result<libc::tcp_info> {
    // SAFETY: tcp_info is plain integers; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut size =
        libc::socklen_t::try_from(size_of::<libc::tcp_info>()).map_err(|e| e.to_string())?;
    // SAFETY: `conn` owns the open socket; `info` and `size` outlive the
    // call and `size` is `info`'s.
    let got = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut size,
        )
    };
    if got != 0 {
        return Err(format!("TCP_INFO: {}", std::io::Error::last_os_error()));
    }
    Ok(info)
}

/// A blocking connect from a socket whose receive buffer was set to
/// `rcvbuf` bytes first, so that the window it offers in its SYN is small.
fn connect_with_receive_buffer(server: SocketAddr, rcvbuf: i32) -> Result<TcpStream> {
    let family = if server.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) with constant arguments; the descriptor it returns
    // is owned at once.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a new socket nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &rcvbuf)?;
    // SAFETY: all-zero sockaddr_storage is valid; it is filled below.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let size = match server {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::sa_family_t::try_from(libc::AF_INET)
                    .map_err(|e| e.to_string())?,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for any
            // sockaddr.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::sa_family_t::try_from(libc::AF_INET6)
                    .map_err(|e| e.to_string())?,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    let size = libc::socklen_t::try_from(size).map_err(|e| e.to_string())?;
    // SAFETY: `fd` is open; `storage` holds a sockaddr of `size` bytes.
    let connected = unsafe { libc::connect(fd, (&raw const storage).cast(), size) };
    if connected != 0 {
        return Err(format!("connect: {}", std::io::Error::last_os_error()));
    }
    Ok(TcpStream::from(owned))
}

/// `tcp_disconnect` resets a connection from `LAST_ACK` only when data it
/// was asked to send never left (`snd_nxt != write_seq`). One connection
/// to itself gets there: the client offers a tiny receive window, reads
/// nothing and shuts down its write side; the server reads that EOF
/// (`CLOSE_WAIT`), writes until its small send buffer is full, and shuts
/// down its write side (`LAST_ACK`, its FIN queued behind the unsent
/// data). Prints `listening ADDR`, then `last-ack unsent BYTES` once
/// there; on stdin's `abort` closes the server's end with `SO_LINGER` 0
/// and prints `aborted in LAST_ACK` and `done`; the client's end lives
/// until stdin closes.
fn abort_in_last_ack(addr: &str) -> Result {
    let listener = listen(addr)?;
    let server = listener.local_addr().map_err(err("local address"))?;
    let client = connect_with_receive_buffer(server, 4096)?;
    let (mut conn, _) = accept_in_time(&listener)?;
    drop(listener);
    set_option(
        conn.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_SNDBUF,
        &4096_i32,
    )?;
    client
        .shutdown(std::net::Shutdown::Write)
        .map_err(err("client shutdown"))?;
    if !read_to_eof(&mut conn)?.is_empty() {
        return Err("the client sent data".to_owned());
    }
    conn.set_nonblocking(true).map_err(err("non-blocking"))?;
    let chunk = [b'x'; 4096];
    let mut full = false;
    // Bounded: the buffers hold some tens of KiB at most.
    for _ in 0..1_000 {
        match conn.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                full = true;
                break;
            }
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    if !full {
        return Err("the send buffer never filled".to_owned());
    }
    conn.shutdown(std::net::Shutdown::Write)
        .map_err(err("server shutdown"))?;
    let info = tcp_info(&conn)?;
    if info.tcpi_state != TCP_LAST_ACK || info.tcpi_notsent_bytes == 0 {
        return Err(format!(
            "expected LAST_ACK with unsent data, got state {} with {} bytes unsent",
            info.tcpi_state, info.tcpi_notsent_bytes
        ));
    }
    say(&format!("last-ack unsent {}", info.tcpi_notsent_bytes));
    let mut pending = Some(conn);
    until_stdin_closes(|line| {
        if line == "abort" {
            if let Some(conn) = pending.take() {
                close_abortively(conn)?;
                say("aborted in LAST_ACK");
                say("done");
            }
        }
        Ok(())
    })?;
    drop(client);
    Ok(())
}
