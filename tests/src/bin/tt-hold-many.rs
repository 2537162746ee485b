//! Scale load: opens COUNT loopback connections (2 × COUNT sockets) spread
//! over 4 listeners in this process, prints `holding N`, and keeps them
//! until stdin closes. Raises `RLIMIT_NOFILE` up to its hard limit; more
//! sockets than that take several processes (`cargo xtask bench --scale`).

use std::{
    io::BufRead,
    net::{TcpListener, TcpStream},
};

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .filter(|&c| c > 0 && c <= 200_000)
        .unwrap_or_else(|| {
            eprintln!("usage: tt-hold-many COUNT (1..=200000)");
            std::process::exit(2);
        });
    let want = (2 * count + 64) as u64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) };
    if want > limit.rlim_max {
        eprintln!(
            "tt-hold-many: {want} fds needed, the hard limit is {}: use more processes",
            limit.rlim_max
        );
        std::process::exit(1);
    }
    limit.rlim_cur = want;
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) };
    let listeners: Vec<TcpListener> = (0..4)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let mut held = Vec::with_capacity(2 * count);
    for i in 0..count {
        let listener = &listeners[i % listeners.len()];
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        held.push(client);
        held.push(server);
    }
    println!("holding {}", held.len());
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line).unwrap_or(0) > 0 {
        line.clear();
    }
}
