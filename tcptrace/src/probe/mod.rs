//! Loading the kernel programs: feature checks, layouts from tracefs and
//! BTF, load, attach. Dropping a `Probe` detaches everything.

pub mod btf;
pub mod closed_records;
pub mod hooks;
mod life_rings;
mod load;
mod map_memory;
pub mod object;
mod object_info;
pub mod phase_timing;
pub mod preflight;
mod program_stats;
mod ring_fill;
mod socket_map;
pub mod tracefs;

pub use life_rings::LifeRings;
pub use load::{
    life_rings_off, parse_stack_interval, Counters, FilterMaps, Probe, ProbeOptions,
    DEFAULT_SOCKET_MAP_ENTRIES, DEFAULT_STACK_RING_BYTES, INTERACTIVE_STACK_BURST,
    INTERACTIVE_STACK_INTERVAL, NO_LIFE_RINGS_ENV, PHASE_TIMING_ENV, SOCKET_MAP_ENTRIES_RANGE,
};
pub use program_stats::{bpf_stats_enabled, ProgramRuns};
pub use ring_fill::RingFill;
pub use socket_map::{SocketMap, Swept, Visit};
