//! Cell metadata kept beside data files: a `cells.json` list (one object per cell, as the
//! PyBaMM and BatteryArchive samples have) or a JSON object in a Parquet file's key-value metadata.

use std::path::Path;

use serde_json::{Map, Value};

use crate::data::raw::SourceMetadata;
use crate::{Error, Result};

/// Fills what `metadata` lacks from the `cells.json` entry naming the cell, if a `cells.json`
/// sits in the same folder as `data_file`.
pub(super) fn fill_from_cells_json(data_file: &Path, cell_id: &str, metadata: &mut SourceMetadata) -> Result<()> {
    let cells_json = data_file.with_file_name(CELLS_JSON);
    if !cells_json.is_file() {
        return Ok(());
    }
    if let Some(mut cell) = read_entries(&cells_json)?.into_iter().find(|c| entry_names(c, data_file, cell_id)) {
        // The entry's cell_id finds the cell; it does not rename it (a file's stem would).
        cell.remove("cell_id");
        fill_from_object(cell, metadata);
    }
    Ok(())
}

const CELLS_JSON: &str = "cells.json";

fn read_entries(cells_json: &Path) -> Result<Vec<Map<String, Value>>> {
    let text = std::fs::read_to_string(cells_json).map_err(|e| Error::io(cells_json, e))?;
    serde_json::from_str(&text).map_err(|e| Error::in_file(cells_json, format!("not a JSON list of cell objects: {e}")))
}

/// Whether an entry is the one for the cell read from `data_file` as `cell_id`: its `cell_id`
/// is that id or the file's name, with or without extension (a BatteryArchive file
/// `x_timeseries.csv` gives cell `x`, and whoever writes `x_timeseries` means it too).
fn entry_names(entry: &Map<String, Value>, data_file: &Path, cell_id: &str) -> bool {
    let Some(id) = entry.get("cell_id").and_then(Value::as_str) else { return false };
    let file_name = |name: Option<&std::ffi::OsStr>| name.and_then(|n| n.to_str()) == Some(id);
    id == cell_id || file_name(data_file.file_stem()) || file_name(data_file.file_name())
}

/// Warns about the entries of `folder`'s `cells.json` that name none of `cells` (each a file
/// read from the folder and its cell id): a misspelt id would leave its cell without what the
/// entry states, and nothing would say so. Only for a folder ingested whole, where every file
/// with an entry is among `cells`.
pub fn warn_unmatched(folder: &Path, cells: &[(&Path, &str)]) -> Result<()> {
    let cells_json = folder.join(CELLS_JSON);
    if !cells_json.is_file() {
        return Ok(());
    }
    let entries = read_entries(&cells_json)?;
    let unmatched: Vec<String> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| !cells.iter().any(|(file, id)| entry_names(e, file, id)))
        .map(|(i, e)| match e.get("cell_id").and_then(Value::as_str) {
            Some(id) => format!("'{id}'"),
            None => format!("entry {} (no cell_id)", i + 1),
        })
        .collect();
    if !unmatched.is_empty() {
        let ids: Vec<&str> = cells.iter().map(|(_, id)| *id).collect();
        tracing::warn!(
            "{}: {} of {} entries name no file read from the folder, so what they state is not used: {}; \
             an entry's cell_id is a cell id ingest gives (here {}) or its file's name",
            cells_json.display(),
            unmatched.len(),
            entries.len(),
            first_few(&unmatched),
            first_few(&ids),
        );
    }
    Ok(())
}

/// Up to five items, and how many more.
fn first_few<T: std::fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().take(5).map(T::to_string).collect();
    match items.len().saturating_sub(5) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
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
