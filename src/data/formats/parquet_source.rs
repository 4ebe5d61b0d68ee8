//! Parquet in the canonical layout (our own files) or as PyBaMM runs write it: columns
//! `test_time`, `current`, `voltage`, optional `temperature`, `cycle_number`, `step_index`, and
//! `gt_*` ground truth passed through untouched. Names are compared as in delimited headers
//! (case, spaces and underscores aside); `test_time` may be seconds, a duration, or timestamps
//! (read as seconds since the first row). Read record batch by record batch.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::record_batch::RecordBatch;
use arrow::datatypes::{ArrowPrimitiveType, DataType, Float64Type, Int32Type, Int64Type, TimeUnit};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use serde_json::{Map, Value};

use super::cells_json::fill_from_object;
use super::layout::header_key;
use super::CyclerReader;
use crate::data::raw::{RawChunk, SourceMetadata, CHUNK_ROWS};
use crate::data::schema::{CELL_METADATA_KEY, PYBAMM_METADATA_KEY};
use crate::{Error, Result};

/// Key-value metadata keys holding the cell's metadata as a JSON object: our canonical files'
/// cells-table row, and the PyBaMM generator's settings.
const METADATA_KEYS: [&str; 2] = [CELL_METADATA_KEY, PYBAMM_METADATA_KEY];
const REQUIRED: [&str; 3] = ["test_time", "current", "voltage"];
const OPTIONAL: [&str; 3] = ["temperature", "cycle_number", "step_index"];

pub(super) struct ParquetSource {
    path: PathBuf,
    batches: ParquetRecordBatchReader,
    metadata: SourceMetadata,
    /// The file's name for each of `REQUIRED` then `OPTIONAL`, where it has the column.
    names: [Option<String>; 6],
    /// The first row's timestamp, where `test_time` holds timestamps.
    time_origin: Option<f64>,
    /// 1-based number of the next record, for error messages.
    next_record: u64,
}

pub(super) fn open(path: &Path) -> Result<Box<dyn CyclerReader>> {
    Ok(Box::new(ParquetSource::open_with(path, read_metadata)?))
}

/// Reads a cell's metadata from a file's key-value metadata.
pub(super) type MetadataReader = fn(&Path, Option<&Vec<parquet::file::metadata::KeyValue>>) -> Result<SourceMetadata>;

impl ParquetSource {
    /// Opens `path`, taking the cell's metadata from the file through `read_metadata` (the
    /// canonical and PyBaMM keys, or battdat's).
    pub fn open_with(path: &Path, read_metadata: MetadataReader) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
        if builder.metadata().file_metadata().num_rows() == 0 {
            return Err(Error::in_file(path, "no data rows"));
        }
        let file_names: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
        let names: [Option<String>; 6] = std::array::from_fn(|k| {
            let key = header_key(REQUIRED.iter().chain(&OPTIONAL).nth(k).expect("six names"));
            file_names.iter().find(|n| header_key(n) == key).cloned()
        });
        let missing: Vec<_> = REQUIRED.iter().zip(&names).filter(|(_, found)| found.is_none()).map(|(r, _)| r).collect();
        if !missing.is_empty() {
            let msg = format!("missing column {missing:?}; the file has: {}", file_names.join(", "));
            return Err(Error::in_file(path, msg));
        }
        let wanted = file_names.iter().enumerate().filter(|(_, n)| names.contains(&Some(n.to_string())) || n.starts_with("gt_")).map(|(i, _)| i);
        let projection = ProjectionMask::roots(builder.parquet_schema(), wanted);
        let metadata = read_metadata(path, builder.metadata().file_metadata().key_value_metadata())?;
        let batches = builder.with_projection(projection).with_batch_size(CHUNK_ROWS).build().map_err(|e| Error::parquet(path, e))?;
        Ok(ParquetSource { path: path.to_path_buf(), batches, metadata, names, time_origin: None, next_record: 1 })
    }

    /// One record batch as canonical rows; `gt_*` arrays are passed on as they are.
    fn to_chunk(&mut self, batch: &RecordBatch) -> Result<RawChunk> {
        let time = self.seconds(batch)?;
        let path = &self.path;
        let column = |k: usize, to: &DataType| match &self.names[k] {
            Some(name) => column_as(path, batch, name, to),
            None => Ok(None),
        };
        let required = |k: usize| column(k, &DataType::Float64)?.ok_or_else(|| Error::in_file(path, format!("no column '{}'", REQUIRED[k])));
        let (current, voltage) = (required(1)?, required(2)?);
        let temperature = column(3, &DataType::Float64)?;
        let cycle = column(4, &DataType::Int32)?;
        let step = column(5, &DataType::Int32)?;

        let mut chunk = RawChunk::default();
        for i in 0..batch.num_rows() {
            let record = self.next_record + i as u64;
            let finite = |name: &str, array: &ArrayRef| finite_value(path, record, name, array.as_primitive::<Float64Type>(), i);
            chunk.push(
                finite("test_time", &time)?,
                finite("current", &current)? as f32,
                finite("voltage", &voltage)? as f32,
                value_at::<Float64Type>(temperature.as_ref(), i).filter(|t| t.is_finite()).map(|t| t as f32),
                value_at::<Int32Type>(cycle.as_ref(), i),
                value_at::<Int32Type>(step.as_ref(), i),
                record,
            );
        }
        let schema = batch.schema();
        chunk.passthrough = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(field, _)| field.name().starts_with("gt_"))
            .map(|(field, array)| (field.name().clone(), array.clone()))
            .collect();
        Ok(chunk)
    }

    /// The batch's `test_time` in seconds: numbers as they are, durations converted, timestamps
    /// counted from the file's first row (as clock times in text exports are).
    fn seconds(&mut self, batch: &RecordBatch) -> Result<ArrayRef> {
        let name = self.names[0].as_deref().expect("test_time was found when the file was opened");
        let array = batch.column_by_name(name).expect("projected column");
        let (unit, is_clock) = match array.data_type() {
            DataType::Timestamp(unit, _) => (*unit, true),
            DataType::Duration(unit) => (*unit, false),
            _ => return Ok(column_as(&self.path, batch, name, &DataType::Float64)?.expect("projected column")),
        };
        let per_second = match unit {
            TimeUnit::Second => 1.0,
            TimeUnit::Millisecond => 1e3,
            TimeUnit::Microsecond => 1e6,
            TimeUnit::Nanosecond => 1e9,
        };
        let ticks = column_as(&self.path, batch, name, &DataType::Int64)?.expect("projected column");
        let ticks = ticks.as_primitive::<Int64Type>();
        if is_clock && self.time_origin.is_none() {
            self.time_origin = ticks.iter().flatten().next().map(|t| t as f64);
        }
        let origin = if is_clock { self.time_origin.unwrap_or(0.0) } else { 0.0 };
        Ok(Arc::new(ticks.iter().map(|t| t.map(|t| (t as f64 - origin) / per_second)).collect::<Float64Array>()))
    }
}

/// Column `name` cast to `to` (files may store float32 or int64), if the batch has it.
fn column_as(path: &Path, batch: &RecordBatch, name: &str, to: &DataType) -> Result<Option<ArrayRef>> {
    let Some(array) = batch.column_by_name(name) else { return Ok(None) };
    let cast = arrow::compute::cast(array, to).map_err(|e| Error::in_file(path, format!("column '{name}': {e}")))?;
    Ok(Some(cast))
}

/// A value that must be present and finite (time, current, voltage).
fn finite_value(path: &Path, record: u64, name: &str, array: &Float64Array, i: usize) -> Result<f64> {
    match array.is_valid(i).then(|| array.value(i)) {
        Some(v) if v.is_finite() => Ok(v),
        Some(v) => Err(Error::at_row(path, record, Some(name), format!("not a finite number: {v}"))),
        None => Err(Error::at_row(path, record, Some(name), "missing value")),
    }
}

/// An optional column's value at row `i`; `None` where the column or the value is missing.
fn value_at<T: ArrowPrimitiveType>(array: Option<&ArrayRef>, i: usize) -> Option<T::Native> {
    let array = array?.as_primitive::<T>();
    array.is_valid(i).then(|| array.value(i))
}

/// The cell's metadata from the key-value metadata (`open` fills gaps from a `cells.json`).
fn read_metadata(path: &Path, key_values: Option<&Vec<parquet::file::metadata::KeyValue>>) -> Result<SourceMetadata> {
    let mut metadata = SourceMetadata::default();
    let stored = key_values
        .into_iter()
        .flatten()
        .find(|kv| METADATA_KEYS.contains(&kv.key.as_str()))
        .and_then(|kv| kv.value.as_deref());
    if let Some(json) = stored {
        let object: Map<String, Value> =
            serde_json::from_str(json).map_err(|e| Error::in_file(path, format!("key-value metadata is not a JSON object: {e}")))?;
        fill_from_object(object, &mut metadata);
    }
    Ok(metadata)
}

impl CyclerReader for ParquetSource {
    fn metadata(&self) -> &SourceMetadata {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut SourceMetadata {
        &mut self.metadata
    }

    fn next_chunk(&mut self) -> Result<Option<RawChunk>> {
        let Some(batch) = self.batches.next() else { return Ok(None) };
        let batch = batch.map_err(|e| Error::arrow(&self.path, e))?;
        let chunk = self.to_chunk(&batch)?;
        self.next_record += batch.num_rows() as u64;
        Ok(Some(chunk))
    }
}
