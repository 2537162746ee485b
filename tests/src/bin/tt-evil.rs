//! A hostile process name for the escaping tests: sets its own comm with
//! `prctl(PR_SET_NAME)` to NAME (quotes, newlines, braces, control
//! characters: whatever the test chose), then makes connections like
//! `tt-workload client`.
//!
//! Prints `comm <NAME as the kernel now has it, Rust-escaped>`, then
//! `local ADDR` per connection and `done`, one line each, flushed.
//!
//! `tt-evil --flood N ADDR`: a local user inventing process names. Forks N
//! processes one after the other, each named `ttflood<i>`, each trying
//! one connection to ADDR (a closed port: refused is fine), then prints
//! `flooded N`.

use std::{
    env,
    ffi::CString,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::ffi::OsStrExt,
    process::ExitCode,
    time::Duration,
};

use tcptrace_tests::workload::{exit_code, say};

const USAGE: &str =
    "usage: tt-evil NAME ADDR COUNT   set comm to NAME (at most 15 bytes), then COUNT times:
                                connect to ADDR, send `hello`, read `ok`, close
       tt-evil --flood N ADDR     N processes with distinct names, one connect each";

fn main() -> ExitCode {
    let args: Vec<_> = env::args_os().skip(1).collect();
    let result = match &args[..] {
        [flag, count, addr] if flag == "--flood" => {
            flood(&count.to_string_lossy(), &addr.to_string_lossy())
        }
        [name, addr, count] => run(
            name.as_bytes(),
            &addr.to_string_lossy(),
            &count.to_string_lossy(),
        ),
        _ => Err(USAGE.to_owned()),
    };
    exit_code("tt-evil", result)
}

fn set_comm(name: &[u8]) -> Result<(), String> {
    if name.len() > 15 {
        return Err(format!(
            "a comm holds 15 bytes; {name:?} has {}",
            name.len()
        ));
    }
    let name = CString::new(name).map_err(|e| format!("NAME: {e}"))?;
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    if rc != 0 {
        return Err(format!("prctl: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// ADDR and COUNT from the command line.
fn addr_and_count(addr: &str, count: &str) -> Result<(SocketAddr, u32), String> {
    let addr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let count = count
        .parse()
        .map_err(|e| format!("bad count {count}: {e}"))?;
    Ok((addr, count))
}

fn run(name: &[u8], addr: &str, count: &str) -> Result<(), String> {
    let (addr, count) = addr_and_count(addr, count)?;
    set_comm(name)?;
    let comm = std::fs::read("/proc/thread-self/comm").map_err(|e| e.to_string())?;
    let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
    say(&format!("comm {:?}", String::from_utf8_lossy(comm)));
    for _ in 0..count {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        say(&format!(
            "local {}",
            conn.local_addr().map_err(|e| e.to_string())?
        ));
        conn.write_all(b"hello").map_err(|e| e.to_string())?;
        let mut ok = [0u8; 2];
        conn.read_exact(&mut ok).map_err(|e| e.to_string())?;
    }
    say("done");
    Ok(())
}

fn flood(count: &str, addr: &str) -> Result<(), String> {
    let (addr, count) = addr_and_count(addr, count)?;
    for i in 0..count {
        // Prepared before the fork: the child only makes system calls.
        let name = CString::new(format!("ttflood{i}")).map_err(|e| e.to_string())?;
        // SAFETY: this program is single-threaded; the child calls prctl,
        // connect (through std, which allocates nothing here) and _exit.
        match unsafe { libc::fork() } {
            -1 => return Err(format!("fork: {}", std::io::Error::last_os_error())),
            0 => unsafe {
                libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0);
                let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
                libc::_exit(0);
            },
            child => {
                let mut status = 0;
                // SAFETY: waits for the child just forked.
                unsafe { libc::waitpid(child, &raw mut status, 0) };
            }
        }
    }
    say(&format!("flooded {count}"));
    Ok(())
}
