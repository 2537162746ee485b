//! Telling systemd (or any manager speaking its notify protocol) what the
//! daemon is doing: ready once the programs are attached and the metrics
//! port answers (`Type=notify`: `systemctl start` returns then, and units
//! ordered after tcptrace see it working), reloading during a SIGHUP, and
//! stopping. Without `NOTIFY_SOCKET` each call does nothing.

use sd_notify::NotifyState;

/// The programs are attached and `/metrics` answers.
pub fn ready() {
    let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status("tracing")]);
}

/// A SIGHUP is being handled: the manager waits for `ready` again. The
/// time goes with it (systemd 253+ wants it with `RELOADING=1`).
pub fn reloading() {
    let usec = format!("MONOTONIC_USEC={}", crate::clock::monotonic_ns() / 1_000);
    let _ = sd_notify::notify(false, &[NotifyState::Reloading, NotifyState::Custom(&usec)]);
}

pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}
