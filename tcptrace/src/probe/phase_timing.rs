//! Reading the state program's phase timing (`PHASE_TIMING_ENV`, see
//! `tcptrace_common::phase_timing`) from outside the tracer that holds it:
//! the bench and the tests find a running tracer's `PHASE_NS` map by id.

use anyhow::{Context, Result};
use aya::maps::{loaded_maps, Map, MapData, PerCpuArray};
use tcptrace_common::phase_timing::SPANS;

/// The map's name, as the kernel keeps it.
const MAP: &str = "PHASE_NS";

/// One span's totals over every CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanTotal {
    pub ns: u64,
    pub runs: u64,
}

/// Ids of every loaded `PHASE_NS` map (one per running tracer).
///
/// # Errors
/// When the kernel's maps cannot be listed (privileges).
pub fn map_ids() -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for info in loaded_maps() {
        let info = info.context("listing the kernel's BPF maps")?;
        if info.name_as_str() == Some(MAP) {
            ids.push(info.id());
        }
    }
    Ok(ids)
}

/// Each span's totals, indexed by span, from the `PHASE_NS` map `id`.
///
/// # Errors
/// When the map is gone or is not a `PHASE_NS` map.
pub fn read(id: u32) -> Result<Vec<SpanTotal>> {
    let data = MapData::from_id(id).with_context(|| format!("opening BPF map {id}"))?;
    let map: PerCpuArray<MapData, u64> = Map::from_map_data(data)
        .and_then(PerCpuArray::try_from)
        .with_context(|| format!("BPF map {id} is not {MAP}"))?;
    let total = |index: u32| -> Result<u64> {
        let per_cpu = map
            .get(&index, 0)
            .with_context(|| format!("{MAP}[{index}]"))?;
        Ok(per_cpu.iter().sum())
    };
    (0..SPANS)
        .map(|span| {
            Ok(SpanTotal {
                ns: total(2 * span)?,
                runs: total(2 * span + 1)?,
            })
        })
        .collect()
}
