//! Cell metadata kept beside data files: a `cells.json` list (one object per cell, as the
//! PyBaMM and BatteryArchive samples have) or a JSON object in a Parquet file's key-value metadata.

use std::path::Path;

use serde_json::{Map, Value};

use crate::data::raw::SourceMetadata;
use crate::{Error, Result};

/// Fills what `metadata` lacks from the `cells.json` entry whose `cell_id` is `cell_id`, if a
/// `cells.json` sits in the same folder as `data_file`.
pub(super) fn fill_from_cells_json(data_file: &Path, cell_id: &str, metadata: &mut SourceMetadata) -> Result<()> {
    let cells_json = data_file.with_file_name("cells.json");
    if !cells_json.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&cells_json).map_err(|e| Error::io(&cells_json, e))?;
    let cells: Vec<Map<String, Value>> =
        serde_json::from_str(&text).map_err(|e| Error::in_file(&cells_json, format!("not a JSON list of cell objects: {e}")))?;
    if let Some(cell) = cells.into_iter().find(|c| c.get("cell_id").and_then(Value::as_str) == Some(cell_id)) {
        fill_from_object(cell, metadata);
    }
    Ok(())
}

/// Takes the named fields the metadata has slots for, where still empty, and keeps the rest
/// (cell_id, C-rates, step list…) in `extra` without overwriting what is there.
/// A capacity flagged `capacity_estimated` (a canonical file's own estimate) is not taken as
/// stated, so ingest estimates it afresh and flags it again.
pub(super) fn fill_from_object(object: Map<String, Value>, metadata: &mut SourceMetadata) {
    let estimated = object.get("capacity_estimated").and_then(Value::as_bool) == Some(true);
    for (key, value) in object {
        match key.as_str() {
            "nominal_capacity_ah" if estimated => {
                metadata.extra.entry("estimated_capacity_ah").or_insert(value);
            }
            "nominal_capacity_ah" if metadata.nominal_capacity_ah.is_none() => metadata.nominal_capacity_ah = value.as_f64(),
            "ambient_temperature_c" if metadata.ambient_temperature_c.is_none() => metadata.ambient_temperature_c = value.as_f64(),
            "chemistry" if metadata.chemistry.is_none() => metadata.chemistry = value.as_str().map(str::to_owned),
            "protocol" if metadata.protocol.is_none() => metadata.protocol = value.as_str().map(str::to_owned),
            "nominal_capacity_ah" | "ambient_temperature_c" | "chemistry" | "protocol" => {}
            _ => {
                metadata.extra.entry(key).or_insert(value);
            }
        }
    }
}
