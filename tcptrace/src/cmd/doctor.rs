use anyhow::{bail, Result};
use tcptrace::probe::preflight::{run_checks, Status};

pub fn run() -> Result<()> {
    let checks = run_checks();
    for check in &checks {
        let mark = match check.status {
            Status::Ok => "ok  ",
            Status::Degraded => "warn",
            Status::Fail => "FAIL",
        };
        println!("[{mark}] {:<32} {}", check.name, check.detail);
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed > 0 {
        bail!("{failed} check(s) failed: tcptrace cannot trace here");
    }
    println!("tcptrace can trace on this machine");
    Ok(())
}
