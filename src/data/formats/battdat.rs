//! battery-data-toolkit's (battdat's) Parquet layout, out and in: the only file that knows it.
//!
//! One folder per battery holding `raw_data.parquet`, whose file metadata carries
//! `battery_metadata` (battdat's `BatteryMetadata` as JSON) and `table_metadata` (its column
//! schema: battdat's `RawData` columns and `extra_columns` describing ours). Column names are
//! already battdat's; only the state vocabulary differs, mapped here (`resting` ↔ `hold`). Our
//! `CellInfo` rides along in the battery metadata (`voltlens_cell`, battdat keeps unknown
//! fields), so a round trip loses nothing; a battdat file from elsewhere is read through its own
//! `BatteryMetadata` fields.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, DictionaryArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type};
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::{json, Map, Value};

use super::cells_json::fill_from_object;
use super::parquet_source::ParquetSource;
use super::CyclerReader;
use crate::data::canonical::{self, read_cell, DatasetPaths, Dataset};
use crate::data::cells::CellInfo;
use crate::data::raw::SourceMetadata;
use crate::data::schema::{self, State, CELL_METADATA_KEY};
use crate::{Error, Result};

/// The file battdat keeps a battery's time series in.
pub const RAW_DATA_FILE: &str = "raw_data.parquet";
const BATTERY_METADATA_KEY: &str = "battery_metadata";
const TABLE_METADATA_KEY: &str = "table_metadata";

/// battdat's `ChargingState` for ours.
fn charging_state(state: State) -> &'static str {
    match state {
        State::Charging => "charging",
        State::Discharging => "discharging",
        State::Resting => "hold",
    }
}

/// How battdat's `RawData` describes a column it defines: (type, units, required, monotonic).
fn raw_data_column(name: &str) -> Option<(&'static str, Option<&'static str>, bool, bool)> {
    Some(match name {
        "test_time" => ("float", Some("s"), true, true),
        "current" => ("float", Some("A"), true, false),
        "voltage" => ("float", Some("V"), true, false),
        "temperature" => ("float", Some("C"), false, false),
        "cycle_number" => ("integer", None, false, true),
        "step_index" => ("integer", None, false, false),
        "state" => ("state", None, false, false),
        "method" => ("control", None, false, false),
        _ => return None,
    })
}

/// battdat's data type for one of our columns it does not define.
fn extra_type(data_type: &DataType) -> &'static str {
    if data_type.is_floating() {
        "float"
    } else if data_type.is_integer() {
        "integer"
    } else {
        "other"
    }
}

/// `table_metadata`: every column of `batch`, battdat's own under their names, ours in `extra_columns`.
fn table_metadata(batch: &RecordBatch) -> Value {
    let ours = schema::timeseries_columns();
    let mut table = Map::new();
    let mut extra = Map::new();
    for field in batch.schema().fields() {
        let name = field.name().as_str();
        let canonical = ours.iter().find(|c| c.name == name);
        let description = canonical.map_or("simulation ground truth, carried through untouched", |c| c.description);
        match raw_data_column(name) {
            Some((kind, units, required, monotonic)) => {
                let info = json!({"required": required, "type": kind, "description": description, "units": units, "monotonic": monotonic});
                table.insert(name.to_owned(), info);
            }
            None => {
                let units = canonical.map(|c| c.unit).filter(|u| !u.is_empty());
                let info = json!({"required": false, "type": extra_type(field.data_type()), "description": description, "units": units, "monotonic": false});
                extra.insert(name.to_owned(), info);
            }
        }
    }
    table.insert("extra_columns".to_owned(), Value::Object(extra));
    Value::Object(table)
}

/// `battery_metadata`: battdat's fields we know, and our whole cells-table row.
fn battery_metadata(cell: &CellInfo) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(cell.cell_id));
    // Only the cycler formats are known to be measurements, and synth a simulation.
    let measured = match cell.format.as_str() {
        "synth" => Some(false),
        "arbin" | "maccor" | "biologic" | "novonix" | "battery_archive" => Some(true),
        _ => None,
    };
    if let Some(measured) = measured {
        m.insert("is_measurement".into(), json!(measured));
    }
    let mut protocol = Map::new();
    if let Some(t) = cell.ambient_temperature_c {
        protocol.insert("set_temperature".into(), json!(t));
    }
    if let Some(p) = &cell.protocol {
        protocol.insert("schedule".into(), json!(p));
    }
    if !protocol.is_empty() {
        m.insert("test_protocol".into(), Value::Object(protocol));
    }
    if !cell.capacity_estimated {
        m.insert("battery".into(), json!({"nominal_capacity": cell.nominal_capacity_ah}));
    }
    m.insert(CELL_METADATA_KEY.into(), serde_json::to_value(cell).expect("cell info is plain data"));
    Value::Object(m)
}

/// The canonical rows of one cell with the state column in battdat's vocabulary.
fn battdat_batch(data: canonical::CellData) -> RecordBatch {
    let states: DictionaryArray<Int32Type> = data.state.iter().map(|&s| charging_state(s)).collect();
    let batch = data.into_record_batch();
    let index = batch.schema().index_of("state").expect("canonical rows have a state column");
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns[index] = Arc::new(states);
    RecordBatch::try_new(batch.schema(), columns).expect("same schema, same length")
}

/// Writes every cell of the canonical dataset in `dataset_dir` as `out/<cell_id>/raw_data.parquet`.
/// Each file appears under its name only when complete. Returns the files written.
pub fn export_battdat(dataset_dir: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let paths = DatasetPaths::new(dataset_dir);
    let cells = Dataset::load_cells(dataset_dir)?;
    // Built beside `out` and swapped in whole: a user's folder is refused, never overwritten.
    crate::io::check_replaceable(out)?;
    let build = crate::io::fresh_temp_dir(out)?;
    for cell in &cells {
        let (_, data) = read_cell(&paths.cell_file(&cell.cell_id))?;
        let dir = build.join(&cell.cell_id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        write_raw_data(&dir.join(RAW_DATA_FILE), cell, battdat_batch(data))?;
    }
    crate::io::replace_dir(&build, out)?;
    Ok(cells.iter().map(|cell| out.join(&cell.cell_id).join(RAW_DATA_FILE)).collect())
}

/// Writes one battery's file. Without the encoded Arrow schema, which would hide the footer's
/// metadata from pyarrow (battdat reads through it); the Parquet types say the same.
fn write_raw_data(path: &Path, cell: &CellInfo, batch: RecordBatch) -> Result<()> {
    let metadata = [
        (BATTERY_METADATA_KEY, battery_metadata(cell).to_string()),
        (TABLE_METADATA_KEY, table_metadata(&batch).to_string()),
    ];
    crate::io::write_via_temp(path, |tmp| {
        let file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let options = ArrowWriterOptions::new().with_properties(canonical::writer_properties()).with_skip_arrow_metadata(true);
        let written = (|| {
            let mut writer = ArrowWriter::try_new_with_options(file, batch.schema(), options)?;
            writer.write(&batch)?;
            for (key, value) in metadata {
                writer.append_key_value_metadata(KeyValue::new(key.to_owned(), value));
            }
            writer.close().map(|_| ())
        })();
        written.map_err(|e| Error::parquet(path, e))
    })
}

/// Whether a Parquet file is in battdat's layout (its footer carries battdat's column schema).
pub(super) fn is_battdat(path: &Path) -> Result<bool> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| Error::parquet(path, e))?;
    let kv = reader.metadata().file_metadata().key_value_metadata();
    Ok(kv.is_some_and(|kv| kv.iter().any(|k| k.key == TABLE_METADATA_KEY)))
}

pub(super) fn open(path: &Path) -> Result<Box<dyn CyclerReader>> {
    Ok(Box::new(ParquetSource::open_with(path, read_metadata)?))
}

/// The cell's metadata: our cells-table row when we wrote the file, else battdat's fields. The
/// cell id is the battery's name, else its folder's (every battdat file is `raw_data.parquet`).
fn read_metadata(path: &Path, key_values: Option<&Vec<KeyValue>>) -> Result<SourceMetadata> {
    let stored = key_values.into_iter().flatten().find(|kv| kv.key == BATTERY_METADATA_KEY).and_then(|kv| kv.value.as_deref());
    let mut battery: Map<String, Value> = match stored {
        Some(json) => serde_json::from_str(json)
            .map_err(|e| Error::in_file(path, format!("'{BATTERY_METADATA_KEY}' is not a JSON object: {e}")))?,
        None => Map::new(),
    };
    let mut metadata = SourceMetadata::default();
    if let Some(Value::Object(ours)) = battery.remove(CELL_METADATA_KEY) {
        fill_from_object(ours, &mut metadata);
        return Ok(metadata);
    }
    let battery = Value::Object(battery);
    let get = |pointer: &str| battery.pointer(pointer);
    metadata.nominal_capacity_ah = get("/battery/nominal_capacity").and_then(Value::as_f64);
    metadata.ambient_temperature_c = get("/test_protocol/set_temperature").and_then(Value::as_f64);
    metadata.protocol = get("/test_protocol/schedule").and_then(Value::as_str).map(str::to_owned);
    let electrode = |which| get(&format!("/battery/{which}/name")).and_then(Value::as_str).map(str::to_owned);
    metadata.chemistry = match (electrode("cathode"), electrode("anode")) {
        (Some(c), Some(a)) => Some(format!("{c}/{a}")),
        (c, a) => c.or(a),
    };
    let folder = path.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned());
    let cell_id = get("/name").and_then(Value::as_str).map(str::to_owned).or(folder);
    if let Some(id) = cell_id {
        metadata.extra.insert("cell_id".into(), json!(id));
    }
    metadata.extra.insert("battdat".into(), battery.clone());
    Ok(metadata)
}
