//! What the workload binaries (`tt-workload`, `tt-scenario`, `tt-evil`)
//! share: progress lines the tests wait for, and one way to end.

use std::{io::Write, process::ExitCode};

/// Prints one progress line and flushes it: the test reads it while the
/// workload goes on.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Success, or the error on stderr prefixed with the binary's `name`.
#[must_use]
pub fn exit_code(name: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: {err}");
            ExitCode::FAILURE
        }
    }
}
