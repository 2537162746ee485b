//! Scenario workloads for the kernel tests: small, deterministic TCP
//! programs whose pids and comm ("tt-workload") the tests look for.
//!
//! Every mode prints one line per fact the test needs (`port 4242`,
//! `local 127.0.0.1:50000`) and flushes it, so the test can follow along.

use std::{
    env,
    io::{BufRead, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::ExitCode,
    time::Duration,
};

use tcptrace_tests::workload::{exit_code, say};

const USAGE: &str = "usage:
  tt-workload server ADDR COUNT     accept COUNT connections; per connection read
                                    5 bytes, answer `ok`, read to EOF, close
  tt-workload client ADDR COUNT     COUNT times: connect, send `hello`, read `ok`, close
  tt-workload hold ADDR             connect, exchange, then hold the socket open
                                    until stdin closes, then close
  tt-workload stream ADDR           connect; send 1 KiB per stdin line; close at EOF
  tt-workload leak ADDR COUNT       like server, but never close after EOF (CLOSE_WAIT)
                                    until stdin closes
  tt-workload refused ADDR COUNT    COUNT connects that must fail (nobody listens)";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["server", addr, count] => server(addr, count),
        ["client", addr, count] => client(addr, count),
        ["hold", addr] => hold(addr),
        ["stream", addr] => stream(addr),
        ["leak", addr, count] => leak(addr, count),
        ["refused", addr, count] => refused(addr, count),
        _ => Err(USAGE.to_owned()),
    };
    exit_code("tt-workload", result)
}

fn parse_addr(addr: &str) -> Result<SocketAddr, String> {
    addr.parse().map_err(|e| format!("bad address {addr}: {e}"))
}

fn parse_count(count: &str) -> Result<u32, String> {
    count.parse().map_err(|e| format!("bad count {count}: {e}"))
}

fn server(addr: &str, count: &str) -> Result<(), String> {
    let listener = TcpListener::bind(parse_addr(addr)?).map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    say(&format!("port {port}"));
    for _ in 0..parse_count(count)? {
        let (mut conn, peer) = listener.accept().map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut hello = [0u8; 5];
        conn.read_exact(&mut hello).map_err(|e| e.to_string())?;
        conn.write_all(b"ok").map_err(|e| e.to_string())?;
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        say(&format!("served {peer}"));
        drop(conn);
    }
    Ok(())
}

/// Connects and exchanges `hello`/`ok`.
fn exchange(addr: SocketAddr) -> Result<TcpStream, String> {
    let mut conn =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    say(&format!(
        "local {}",
        conn.local_addr().map_err(|e| e.to_string())?
    ));
    conn.write_all(b"hello").map_err(|e| e.to_string())?;
    let mut ok = [0u8; 2];
    conn.read_exact(&mut ok).map_err(|e| e.to_string())?;
    Ok(conn)
}

fn client(addr: &str, count: &str) -> Result<(), String> {
    let addr = parse_addr(addr)?;
    for _ in 0..parse_count(count)? {
        let conn = exchange(addr)?;
        drop(conn);
    }
    Ok(())
}

fn hold(addr: &str) -> Result<(), String> {
    let conn = exchange(parse_addr(addr)?)?;
    say("holding");
    let mut line = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?
        > 0
    {
        line.clear();
    }
    drop(conn);
    say("closed");
    Ok(())
}

fn stream(addr: &str) -> Result<(), String> {
    let addr = parse_addr(addr)?;
    let mut conn =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    say(&format!(
        "local {}",
        conn.local_addr().map_err(|e| e.to_string())?
    ));
    let chunk = [b'x'; 1024];
    let mut line = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?
        > 0
    {
        conn.write_all(&chunk).map_err(|e| e.to_string())?;
        say("sent");
        line.clear();
    }
    Ok(())
}

fn leak(addr: &str, count: &str) -> Result<(), String> {
    let listener = TcpListener::bind(parse_addr(addr)?).map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    say(&format!("port {port}"));
    let mut leaked = Vec::new();
    for _ in 0..parse_count(count)? {
        let (mut conn, _) = listener.accept().map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut hello = [0u8; 5];
        conn.read_exact(&mut hello).map_err(|e| e.to_string())?;
        conn.write_all(b"ok").map_err(|e| e.to_string())?;
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        leaked.push(conn); // the bug under test: never closed after EOF
    }
    say(&format!("leaking {}", leaked.len()));
    let mut line = String::new();
    while std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?
        > 0
    {
        line.clear();
    }
    Ok(())
}

fn refused(addr: &str, count: &str) -> Result<(), String> {
    let addr = parse_addr(addr)?;
    for _ in 0..parse_count(count)? {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok() {
            return Err(format!("{addr} accepted a connection"));
        }
    }
    say("refused");
    Ok(())
}
