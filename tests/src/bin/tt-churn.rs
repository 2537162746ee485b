//! Loopback churn load for benchmarks: THREADS threads each connect, send
//! a small request, read the reply and close, as fast as they can (closed
//! loop) or at a fixed total RATE (open loop), for SECONDS. The server side
//! accepts in its own threads. Clients close with `SO_LINGER` 0 (a reset, no
//! `TIME_WAIT`) when `--linger0` is given, so long runs do not run out of
//! ephemeral ports; otherwise the server closes first and holds `TIME_WAIT`.
//!
//! Prints one JSON line: `{"connections": N, "seconds": S, "per_second": R, "errors": E}`.

use std::{
    env,
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

struct Options {
    threads: usize,
    seconds: f64,
    rate: Option<f64>,
    linger0: bool,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        threads: 4,
        seconds: 5.0,
        rate: None,
        linger0: false,
    };
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--threads" => o.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--seconds" => o.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--rate" => o.rate = Some(value()?.parse().map_err(|e| format!("--rate: {e}"))?),
            "--linger0" => o.linger0 = true,
            other => return Err(format!("unknown argument {other}; usage: tt-churn [--threads N] [--seconds S] [--rate PER_SEC] [--linger0]")),
        }
    }
    if o.threads == 0 || o.seconds <= 0.0 || o.seconds > 3600.0 {
        return Err("threads must be > 0 and seconds in (0, 3600]".into());
    }
    Ok(o)
}

fn set_linger0(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a valid fd with a correctly sized struct.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            u32::try_from(size_of::<libc::linger>()).unwrap_or(8),
        );
    }
}

fn main() {
    let options = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tt-churn: {e}");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..options.threads {
        let listener = listener.try_clone().expect("clone listener");
        thread::spawn(move || {
            while let Ok((mut conn, _)) = listener.accept() {
                let mut request = [0u8; 16];
                if conn.read_exact(&mut request).is_ok() {
                    let _ = conn.write_all(&request);
                    let mut rest = [0u8; 1];
                    let _ = conn.read(&mut rest);
                }
            }
        });
    }
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.seconds);
    #[expect(clippy::cast_precision_loss, reason = "a thread count")]
    let per_thread_interval = options
        .rate
        .map(|rate| Duration::from_secs_f64(options.threads as f64 / rate));
    let clients: Vec<_> = (0..options.threads)
        .map(|_| {
            let (done, errors, stop) = (done.clone(), errors.clone(), stop.clone());
            let linger0 = options.linger0;
            thread::spawn(move || {
                let mut next = Instant::now();
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    if let Some(interval) = per_thread_interval {
                        let now = Instant::now();
                        if next > now {
                            thread::sleep(next - now);
                        }
                        next += interval;
                    }
                    let ok = (|| -> std::io::Result<()> {
                        let mut conn = TcpStream::connect(addr)?;
                        conn.write_all(&[7u8; 16])?;
                        let mut reply = [0u8; 16];
                        conn.read_exact(&mut reply)?;
                        if linger0 {
                            set_linger0(&conn);
                        } else {
                            conn.shutdown(Shutdown::Write)?;
                            let mut end = [0u8; 1];
                            let _ = conn.read(&mut end);
                        }
                        Ok(())
                    })();
                    match ok {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for client in clients {
        let _ = client.join();
    }
    stop.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let connections = done.load(Ordering::Relaxed);
    #[expect(
        clippy::cast_precision_loss,
        reason = "a connection count far below 2^52"
    )]
    let per_second = connections as f64 / seconds;
    println!(
        "{{\"connections\":{connections},\"seconds\":{seconds:.3},\"per_second\":{:.1},\"errors\":{}}}",
        per_second,
        errors.load(Ordering::Relaxed)
    );
}
