//! tcptrace: who leaves `TIME_WAIT`, `CLOSE_WAIT` and dead-peer FINs behind.
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
pub mod findings;
pub mod first_seen;
pub mod generations;
pub mod live_births;
pub mod metrics;
pub mod netns;
pub mod output;
pub mod owner;
pub mod pipeline;
pub mod port_range;
pub mod privileges;
pub mod probe;
pub mod proc_fds;
pub mod recent_map;
pub mod recording;
pub mod session;
pub mod snapshot;
pub mod symbolize;
pub mod table;
pub mod tally;
pub mod top;

/// Hash map for the per-event path: aHash is several times faster than the
/// default `SipHash` on these small keys (`SipHash` was 30% of the daemon's
/// profile) and, being randomly keyed, still resists collision attacks
/// through attacker-chosen ports.
pub type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
/// The set of `FastMap`.
pub type FastSet<K> = std::collections::HashSet<K, ahash::RandomState>;
