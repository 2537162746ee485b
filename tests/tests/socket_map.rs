//! The kernel's socket map as userspace reads and tidies it, in this
//! process: the real programs loaded in summary mode (the daemon's), real
//! loopback connections. A closed socket's record stays for the next
//! socket born at its address (`tcptrace_common::CLOSED`); the walks for
//! live connections skip it, and `sweep_closed` removes it once old. The
//! list of sockets in `CLOSE_WAIT` is read and tidied here too.

use std::{
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::Duration,
};

use tcptrace::{
    clock::monotonic_ns,
    event::close_waiting_endpoints,
    probe::{Probe, ProbeOptions, SocketMap, Visit},
    FastSet,
};
use tcptrace_tests::{
    daemon::{bpf_map_entries, bpf_map_of, bpf_map_update},
    require_root,
};

const CONNECTIONS: usize = 200;

/// The inode of an open file descriptor (a socket's is what the kernel
/// stores at connect).
fn inode_of(fd: &impl AsRawFd) -> u64 {
    // SAFETY: fstat on an open descriptor, into a zeroed stat buffer.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::fstat(fd.as_raw_fd(), &raw mut stat) },
        0,
        "fstat"
    );
    stat.st_ino
}

fn own_netns() -> u32 {
    let inode = std::fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("our network namespace");
    u32::try_from(inode).expect("namespace inodes fit in 32 bits")
}

/// How many of `inodes` (in this network namespace) have a live record.
fn live_records(map: &SocketMap, inodes: &[u64]) -> usize {
    let netns = own_netns();
    let wanted: FastSet<(u32, u64)> = inodes.iter().map(|&inode| (netns, inode)).collect();
    let mut found = FastSet::default();
    map.visit_records(&wanted, |key, _| {
        found.insert(key);
        Visit::More
    })
    .expect("walk the socket map");
    found.len()
}

/// The real programs, loaded as the daemon loads them: summary mode, no
/// accept hook.
fn daemon_probe() -> Probe {
    Probe::load(ProbeOptions {
        summary: true,
        accept_hook: false,
        ..ProbeOptions::default()
    })
    .expect("load and attach the kernel programs")
}

#[test]
fn closed_records_are_skipped_then_swept_and_live_ones_stay() {
    require_root();
    let mut probe = daemon_probe();
    let mut map = probe.take_socket_map().expect("the socket map");
    let loaded_ns = monotonic_ns();

    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let address = listener.local_addr().expect("its address");
    // The open connection first: a socket born after the churn would
    // take the address, and the record, of its last closed socket.
    let kept = TcpStream::connect(address).expect("connect");
    let (_kept_server, _) = listener.accept().expect("accept");
    let kept_inode = inode_of(&kept);
    let mut closed = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let client = TcpStream::connect(address).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        closed.push(inode_of(&client));
        drop(client);
        drop(server);
    }
    // The closes' last transitions (FIN_WAIT2 and LAST_ACK to CLOSE) come
    // with the peers' segments, on loopback within milliseconds.
    std::thread::sleep(Duration::from_millis(200));

    assert_eq!(
        live_records(&map, &[kept_inode]),
        1,
        "the open connection's record"
    );
    assert_eq!(
        live_records(&map, &closed),
        0,
        "closed sockets' records are not live ones"
    );

    // Nothing in the map is a minute old: it was made when the programs
    // were loaded, just now.
    let young = map
        .sweep_closed(monotonic_ns(), 60_000_000_000)
        .expect("sweep");
    assert_eq!(
        young.removed, 0,
        "records younger than a minute stay: {young:?}"
    );

    let age = monotonic_ns() - loaded_ns;
    assert!(age < 60_000_000_000, "the test ran for {age} ns");
    // Through a handle of its own, as the sweeping thread does.
    let swept = map
        .try_clone()
        .expect("a second handle on the map")
        .sweep_closed(monotonic_ns(), 0)
        .expect("sweep");
    assert!(
        swept.removed >= 1 && swept.lost == 0,
        "{CONNECTIONS} closed connections' records swept: {swept:?}"
    );
    assert_eq!(
        live_records(&map, &[kept_inode]),
        1,
        "the open connection's record stays"
    );
    drop(kept);
}

/// Summary mode lists a socket in `CLOSE_WAIT` (`CLOSE_WAITING`) instead of
/// sending it: the list names it with its endpoints while it lingers, an
/// entry with no flagged record behind it (a transition out the kernel ran
/// no program for) is removed as stale when the list is read, and the
/// socket leaves the list when it is closed.
#[test]
fn the_close_wait_list_holds_lingering_sockets_and_sheds_stale_ones() {
    require_root();
    let mut probe = daemon_probe();
    let layout = probe
        .layouts
        .sock_common
        .expect("summary mode decodes sockets with BTF offsets");
    let mut map = probe.take_socket_map().expect("the socket map");
    let listed = |map: &mut SocketMap| {
        let mut found = Vec::new();
        map.visit_close_waiting(|record, listing| {
            let endpoints = close_waiting_endpoints(listing, &layout).expect("endpoints");
            found.push((record.netns, endpoints));
        })
        .expect("read the CLOSE_WAIT list");
        found
    };

    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let client = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    let (server, peer) = listener.accept().expect("accept");
    drop(client); // its FIN puts the server's socket in CLOSE_WAIT
    std::thread::sleep(Duration::from_millis(200));
    let lingering = (
        own_netns(),
        (server.local_addr().expect("local address"), peer),
    );
    // The host's other sockets entering CLOSE_WAIT meanwhile are listed too.
    assert!(
        listed(&mut map).contains(&lingering),
        "the server's socket, listed"
    );

    // An entry the kernel would never take off: no socket at its address.
    let list = bpf_map_of(std::process::id(), "CLOSE_WAITING");
    let stale: u64 = 0xdead_0000_0000_0000;
    let listing_len = bpf_map_entries(list)[0].1.len();
    bpf_map_update(list, &stale.to_ne_bytes(), &vec![0; listing_len]);
    let stale_listed = || {
        bpf_map_entries(list)
            .iter()
            .any(|(key, _)| key[..] == stale.to_ne_bytes())
    };
    assert!(stale_listed(), "the stale entry written");
    assert!(
        listed(&mut map).contains(&lingering),
        "the live one still visited"
    );
    assert!(!stale_listed(), "the stale entry removed");

    drop(server); // CLOSE_WAIT -> LAST_ACK: off the list
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !listed(&mut map).contains(&lingering),
        "closed, the socket left the list"
    );
}
