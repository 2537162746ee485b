//! tcptrace: who leaves TIME_WAIT, CLOSE_WAIT and dead-peer FINs behind.
//!
//! Data flows one way: kernel programs (`probe`) → decoded `event`s →
//! ownership (`owner`, `snapshot`) → the socket `table` → `diagnose` →
//! `output`.

pub mod callsite;
pub mod clock;
pub mod container;
pub mod daemon;
pub mod diagnose;
pub mod event;
pub mod export;
pub mod filter;
pub mod metrics;
pub mod output;
pub mod owner;
pub mod pipeline;
pub mod probe;
pub mod proc_fds;
pub mod session;
pub mod snapshot;
pub mod symbolize;
pub mod table;
