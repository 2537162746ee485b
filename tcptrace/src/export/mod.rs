//! Exporters: what leaves tcptrace besides the live session output.

pub mod process_stats;
pub mod prometheus;
pub mod tracer_costs;
