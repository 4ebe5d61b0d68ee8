//! The canonical schemas (DESIGN.md §1.1), defined once here as Arrow schemas. `schemas/*.json`
//! are written from these (`voltlens schema --write schemas/`), and every file VoltLens reads or
//! writes is checked against them.

use arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::{Error, Result};

/// Parquet key-value metadata key holding the cell's `CellInfo` as JSON.
pub const CELL_METADATA_KEY: &str = "voltlens_cell";
/// Key PyBaMM-generated files use for their settings.
pub const PYBAMM_METADATA_KEY: &str = "battery_metadata";

/// Charging state of a step (DESIGN §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Charging,
    Discharging,
    Resting,
}

/// Control method of a step (DESIGN §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    ConstantCurrent,
    ConstantVoltage,
    Rest,
    Pulse,
    Other,
}

impl State {
    pub const ALL: [State; 3] = [State::Charging, State::Discharging, State::Resting];
    pub fn as_str(self) -> &'static str {
        match self {
            State::Charging => "charging",
            State::Discharging => "discharging",
            State::Resting => "resting",
        }
    }
    pub fn parse(s: &str) -> Option<State> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl Method {
    pub const ALL: [Method; 5] =
        [Method::ConstantCurrent, Method::ConstantVoltage, Method::Rest, Method::Pulse, Method::Other];
    pub fn as_str(self) -> &'static str {
        match self {
            Method::ConstantCurrent => "constant_current",
            Method::ConstantVoltage => "constant_voltage",
            Method::Rest => "rest",
            Method::Pulse => "pulse",
            Method::Other => "other",
        }
    }
    pub fn parse(s: &str) -> Option<Method> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

fn dictionary_utf8() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// One column of a canonical table, with its unit for the JSON description.
pub struct Column {
    pub name: &'static str,
    pub data_type: DataType,
    pub nullable: bool,
    pub unit: &'static str,
    pub description: &'static str,
}

fn column(name: &'static str, data_type: DataType, nullable: bool, unit: &'static str, description: &'static str) -> Column {
    Column { name, data_type, nullable, unit, description }
}

/// The time-series columns, in file order. `gt_*` columns may follow them.
pub fn timeseries_columns() -> Vec<Column> {
    use DataType::*;
    vec![
        column("cell_id", Utf8, false, "", "stable cell id"),
        column("test_time", Float64, false, "s", "strictly increasing within a cell"),
        column("current", Float32, false, "A", "positive = charge, negative = discharge"),
        column("voltage", Float32, false, "V", "terminal voltage"),
        column("temperature", Float32, true, "degC", "cell temperature, null when not logged"),
        column("cycle_number", Int32, false, "", "from 0"),
        column("step_index", Int32, false, "", "as the cycler numbered it, or derived"),
        column("dt", Float32, false, "s", "test_time minus previous test_time, 0 on the first row"),
        column("step_time", Float32, false, "s", "time since the current step began"),
        column("state", dictionary_utf8(), false, "", "charging / discharging / resting"),
        column("method", dictionary_utf8(), false, "", "constant_current / constant_voltage / rest / pulse / other"),
        column("c_rate", Float32, false, "1/h", "current / nominal capacity (signed)"),
        column("soc", Float32, true, "0-1", "coulomb-counted state of charge, anchored; null in a cell with no trustworthy anchor"),
        column("soh", Float32, true, "0-1", "cycle discharge capacity / nominal; null unless the cycle discharges most of it down to the lower cut-off (partial cycles, HPPC, GITT)"),
    ]
}

/// The cells-table columns.
pub fn cells_columns() -> Vec<Column> {
    use DataType::*;
    vec![
        column("cell_id", Utf8, false, "", "stable cell id"),
        column("source_file", Utf8, false, "", "file the cell was read from, or synth"),
        column("format", Utf8, false, "", "input format"),
        column("nominal_capacity_ah", Float64, false, "Ah", "given or estimated"),
        column("capacity_estimated", Boolean, false, "", "true when estimated from the data"),
        column("chemistry", Utf8, true, "", "e.g. nmc, lfp"),
        column("protocol", Utf8, true, "", "cccv / hppc / gitt / partial / drive / …"),
        column("ambient_temperature_c", Float64, true, "degC", "ambient (chamber) temperature"),
        column("rows", UInt64, false, "", "rows in the cell's time series"),
        column("anchor_method", Utf8, false, "", "how SOC was anchored: cv_hold / low_rate_discharge / ocv_rest / unanchored (soc null)"),
        column("anchor_uncertainty", Float64, true, "0-1", "the anchor's estimated SOC error (1 sigma), null when unanchored"),
        column("upper_cutoff_v", Float64, true, "V", "upper cut-off voltage, given or inferred (metadata says which)"),
        column("lower_cutoff_v", Float64, true, "V", "lower cut-off voltage, given or inferred (metadata says which)"),
        column("metadata", Utf8, false, "", "free-form JSON object, reader warnings included"),
    ]
}

fn to_schema(columns: &[Column]) -> Schema {
    Schema::new(columns.iter().map(|c| Field::new(c.name, c.data_type.clone(), c.nullable)).collect::<Vec<_>>())
}

pub fn timeseries_schema() -> Schema {
    to_schema(&timeseries_columns())
}

pub fn cells_schema() -> Schema {
    to_schema(&cells_columns())
}

/// Checks a file's schema against a canonical one: every canonical column present with the
/// right type (dictionary and plain strings are both accepted); extra columns only if `gt_*`
/// (time series) — anything else is named in the error.
pub fn validate(file: &Path, found: &Schema, columns: &[Column], allow_gt: bool) -> Result<()> {
    for c in columns {
        let field = found.field_with_name(c.name).map_err(|_| {
            let names: Vec<&str> = found.fields().iter().map(|f| f.name().as_str()).collect();
            Error::in_file(file, format!("missing column '{}' (found: {})", c.name, names.join(", ")))
        })?;
        if !same_type(field.data_type(), &c.data_type) {
            return Err(Error::Input {
                file: file.to_path_buf(),
                row: None,
                field: Some(c.name.to_owned()),
                message: format!("type is {}, expected {}", field.data_type(), c.data_type),
            });
        }
    }
    for f in found.fields() {
        let known = columns.iter().any(|c| c.name == f.name());
        if !known && !(allow_gt && f.name().starts_with("gt_")) {
            return Err(Error::in_file(file, format!("unexpected column '{}' (only gt_* may be added)", f.name())));
        }
    }
    Ok(())
}

/// Refuses a null in a column the schema requires; `first_row`: rows of the file before `batch`.
pub fn check_nulls(file: &Path, batch: &arrow::record_batch::RecordBatch, columns: &[Column], first_row: u64) -> Result<()> {
    for c in columns.iter().filter(|c| !c.nullable) {
        if let Some(array) = batch.column_by_name(c.name).filter(|a| a.null_count() > 0) {
            let row = (0..array.len()).find(|&i| array.is_null(i)).expect("null_count > 0");
            return Err(Error::at_row(file, first_row + row as u64 + 1, Some(c.name), "empty (null) in a required column"));
        }
    }
    Ok(())
}

fn same_type(a: &DataType, b: &DataType) -> bool {
    let strip = |t: &DataType| match t {
        DataType::Dictionary(_, v) => (**v).clone(),
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        other => other.clone(),
    };
    strip(a) == strip(b)
}

/// The canonical tables: name, columns and what else a reader should know.
pub fn tables() -> [(&'static str, Vec<Column>, &'static str); 2] {
    [
        (
            "timeseries",
            timeseries_columns(),
            "one file per cell; generated cells (synth, PyBaMM) add ground-truth columns gt_* after these, so a folder \
             mixing them with measured cells reads whole with pyarrow.dataset.dataset(folder, schema=<a generated cell's \
             schema>) (gt_* null where absent), or without gt_* with polars' scan_parquet(folder + '/*.parquet', \
             missing_columns='insert', extra_columns='ignore')",
        ),
        ("cells", cells_columns(), "one row per cell"),
    ]
}

/// The JSON description of a table written under `schemas/`.
pub fn describe(name: &str, columns: &[Column], note: &str) -> serde_json::Value {
    let cols: Vec<serde_json::Value> = columns
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "type": c.data_type.to_string(),
                "nullable": c.nullable,
                "unit": c.unit,
                "description": c.description,
            })
        })
        .collect();
    serde_json::json!({ "table": name, "note": note, "columns": cols })
}

/// Writes `timeseries.schema.json` and `cells.schema.json` into `dir`.
pub fn write_schema_files(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, columns, note) in tables() {
        let path = dir.join(format!("{name}.schema.json"));
        let text = serde_json::to_string_pretty(&describe(name, &columns, note)).expect("schema is serialisable") + "\n";
        crate::io::write_atomic(&path, text.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_schema_files_match_the_code() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        for (name, columns, note) in tables() {
            let text = std::fs::read_to_string(dir.join(format!("{name}.schema.json"))).expect("schema file shipped");
            let shipped: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(shipped, describe(name, &columns, note), "schemas/{name}.schema.json is stale: run `voltlens schema --write schemas`");
        }
    }

    #[test]
    fn validation_names_the_missing_column() {
        let mut fields: Vec<Field> = timeseries_schema().fields().iter().map(|f| (**f).clone()).collect();
        fields.retain(|f| f.name() != "voltage");
        let err = validate(Path::new("x.parquet"), &Schema::new(fields), &timeseries_columns(), true).unwrap_err();
        assert!(err.to_string().contains("missing column 'voltage'"), "{err}");
    }
}
