//! Exporters: what leaves tcptrace besides the live session output.

pub mod prometheus;
