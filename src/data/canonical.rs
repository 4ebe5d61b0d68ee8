//! Canonical Parquet files: one time-series file per cell under `DIR/timeseries/`, plus
//! `DIR/cells.parquet`. Writes go to a temporary path and are renamed into place, so a killed
//! run never leaves a half-written file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Float32Array, Float64Array, Int32Array, RecordBatch, StringArray,
    UInt64Array,
};
use arrow::datatypes::Int32Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::data::cells::{AnchorMethod, CellInfo};
use crate::data::schema::{self, Method, State, CELL_METADATA_KEY};
use crate::{Error, Result};

/// Rows per Parquet row group in files we write.
pub const ROW_GROUP_ROWS: usize = 65_536;

/// Full canonical rows of one cell (or a run of them), column by column.
#[derive(Debug, Clone, Default)]
pub struct CellData {
    pub cell_id: String,
    pub test_time: Vec<f64>,
    pub current: Vec<f32>,
    pub voltage: Vec<f32>,
    pub temperature: Vec<Option<f32>>,
    pub cycle_number: Vec<i32>,
    pub step_index: Vec<i32>,
    pub dt: Vec<f32>,
    pub step_time: Vec<f32>,
    pub state: Vec<State>,
    pub method: Vec<Method>,
    pub c_rate: Vec<f32>,
    /// NaN where the cell has no absolute SOC (stored as null).
    pub soc: Vec<f32>,
    pub soh: Vec<Option<f32>>,
    /// `gt_*` ground-truth columns carried through untouched.
    pub gt: Vec<(String, ArrayRef)>,
}

impl CellData {
    pub fn len(&self) -> usize {
        self.test_time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.test_time.is_empty()
    }

    /// A ground-truth column as f32, if present and numeric.
    pub fn gt_f32(&self, name: &str) -> Option<Vec<f32>> {
        let (_, array) = self.gt.iter().find(|(n, _)| n == name)?;
        let array = arrow::compute::cast(array, &arrow::datatypes::DataType::Float32).ok()?;
        let array = array.as_any().downcast_ref::<Float32Array>()?;
        Some(array.iter().map(|v| v.unwrap_or(f32::NAN)).collect())
    }

    /// Temperature with missing values as NaN.
    pub fn temperature_or_nan(&self) -> Vec<f32> {
        self.temperature.iter().map(|t| t.unwrap_or(f32::NAN)).collect()
    }

    /// The rows as an Arrow batch in the canonical column order (gt_* last); consumes the rows
    /// so the columns move into the batch instead of being copied.
    pub fn into_record_batch(self) -> RecordBatch {
        let n = self.len();
        let dict = |values: Vec<&str>| -> ArrayRef {
            Arc::new(values.into_iter().collect::<DictionaryArray<Int32Type>>())
        };
        let columns: Vec<ArrayRef> = vec![
            // A plain string, as in every other table: a dictionary reads as polars' Categorical,
            // which does not join a string column.
            Arc::new(StringArray::from(vec![self.cell_id.as_str(); n])),
            Arc::new(Float64Array::from(self.test_time)),
            Arc::new(Float32Array::from(self.current)),
            Arc::new(Float32Array::from(self.voltage)),
            Arc::new(Float32Array::from(self.temperature)),
            Arc::new(Int32Array::from(self.cycle_number)),
            Arc::new(Int32Array::from(self.step_index)),
            Arc::new(Float32Array::from(self.dt)),
            Arc::new(Float32Array::from(self.step_time)),
            dict(self.state.iter().map(|s| s.as_str()).collect()),
            dict(self.method.iter().map(|m| m.as_str()).collect()),
            Arc::new(Float32Array::from(self.c_rate)),
            Arc::new(self.soc.iter().map(|s| s.is_finite().then_some(*s)).collect::<Float32Array>()),
            Arc::new(Float32Array::from(self.soh)),
        ];
        let fields = schema::timeseries_schema().fields().iter().map(|f| (**f).clone()).collect();
        crate::data::raw::batch_with_extra(fields, columns, self.gt)
    }

    /// Reads a batch of canonical rows (already validated against the schema).
    pub fn from_record_batch(batch: &RecordBatch, file: &Path) -> Result<CellData> {
        let col = |name: &str| batch.column_by_name(name).expect("validated schema");
        let strings = |name: &str| -> Result<Vec<String>> {
            let array = arrow::compute::cast(col(name), &arrow::datatypes::DataType::Utf8).map_err(|e| Error::arrow(file, e))?;
            let array = array.as_any().downcast_ref::<StringArray>().expect("cast to utf8");
            Ok(array.iter().map(|v| v.unwrap_or_default().to_owned()).collect())
        };
        let parse_all = |name: &str, parse: &dyn Fn(&str) -> bool| -> Result<()> {
            for (row, v) in strings(name)?.iter().enumerate() {
                if !parse(v) {
                    return Err(Error::at_row(file, row as u64 + 1, Some(name), format!("unknown value '{v}'")));
                }
            }
            Ok(())
        };
        parse_all("state", &|v| State::parse(v).is_some())?;
        parse_all("method", &|v| Method::parse(v).is_some())?;
        let cell_id = strings("cell_id")?.into_iter().next().unwrap_or_default();
        Ok(CellData {
            cell_id,
            test_time: f64s(col("test_time")),
            current: f32s(col("current")),
            voltage: f32s(col("voltage")),
            temperature: opt_f32s(col("temperature")),
            cycle_number: i32s(col("cycle_number")),
            step_index: i32s(col("step_index")),
            dt: f32s(col("dt")),
            step_time: f32s(col("step_time")),
            state: strings("state")?.iter().map(|v| State::parse(v).expect("checked")).collect(),
            method: strings("method")?.iter().map(|v| Method::parse(v).expect("checked")).collect(),
            c_rate: f32s(col("c_rate")),
            soc: opt_f32s(col("soc")).into_iter().map(|s| s.unwrap_or(f32::NAN)).collect(),
            soh: opt_f32s(col("soh")),
            gt: batch
                .schema()
                .fields()
                .iter()
                .zip(batch.columns())
                .filter(|(f, _)| f.name().starts_with("gt_"))
                .map(|(f, c)| (f.name().clone(), c.clone()))
                .collect(),
        })
    }

    /// Appends another run of rows of the same cell, but for its ground-truth columns (which
    /// `read_cell` joins once at the end: joined per batch, they were copied whole each time).
    fn extend(&mut self, other: CellData) {
        if self.is_empty() {
            *self = other;
            return;
        }
        self.test_time.extend(other.test_time);
        self.current.extend(other.current);
        self.voltage.extend(other.voltage);
        self.temperature.extend(other.temperature);
        self.cycle_number.extend(other.cycle_number);
        self.step_index.extend(other.step_index);
        self.dt.extend(other.dt);
        self.step_time.extend(other.step_time);
        self.state.extend(other.state);
        self.method.extend(other.method);
        self.c_rate.extend(other.c_rate);
        self.soc.extend(other.soc);
        self.soh.extend(other.soh);
    }
}

fn f64s(a: &ArrayRef) -> Vec<f64> {
    a.as_any().downcast_ref::<Float64Array>().expect("validated f64").values().to_vec()
}
fn f32s(a: &ArrayRef) -> Vec<f32> {
    a.as_any().downcast_ref::<Float32Array>().expect("validated f32").values().to_vec()
}
fn opt_f32s(a: &ArrayRef) -> Vec<Option<f32>> {
    a.as_any().downcast_ref::<Float32Array>().expect("validated f32").iter().collect()
}
fn i32s(a: &ArrayRef) -> Vec<i32> {
    a.as_any().downcast_ref::<Int32Array>().expect("validated i32").values().to_vec()
}

/// Where a dataset directory keeps its files.
pub struct DatasetPaths {
    pub root: PathBuf,
}

impl DatasetPaths {
    pub fn new(root: &Path) -> Self {
        DatasetPaths { root: root.to_path_buf() }
    }
    pub fn cells_table(&self) -> PathBuf {
        self.root.join("cells.parquet")
    }
    pub fn timeseries_dir(&self) -> PathBuf {
        self.root.join("timeseries")
    }
    /// The inputs an ingest with `skip_unreadable` left out, with why (a JSON list of messages);
    /// absent when none were.
    pub fn skipped_list(&self) -> PathBuf {
        self.root.join("skipped.json")
    }
    pub fn cell_file(&self, cell_id: &str) -> PathBuf {
        self.timeseries_dir().join(format!("{}.parquet", crate::io::safe_name(cell_id)))
    }
}

pub(crate) fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

/// Streams canonical rows of one cell into a Parquet file, row group by row group; the file
/// appears under its final name only on `finish`. Dropping the writer removes the temp file.
pub struct CellWriter {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<ArrowWriter<File>>,
    rows: u64,
}

impl CellWriter {
    pub fn create(path: &Path) -> Result<CellWriter> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let tmp = crate::io::temp_path(path);
        let _ = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(CellWriter { path: path.to_path_buf(), tmp, writer: None, rows: 0 })
    }

    pub fn write(&mut self, rows: CellData) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let n = rows.len() as u64;
        let batch = rows.into_record_batch();
        if self.writer.is_none() {
            let file = File::create(&self.tmp).map_err(|e| Error::io(&self.tmp, e))?;
            let writer = ArrowWriter::try_new(file, batch.schema(), Some(writer_properties()))
                .map_err(|e| Error::parquet(&self.path, e))?;
            self.writer = Some(writer);
        }
        let writer = self.writer.as_mut().expect("created above");
        writer.write(&batch).map_err(|e| Error::parquet(&self.path, e))?;
        self.rows += n;
        Ok(())
    }

    /// Stores the cell's metadata in the file, closes it and renames it into place.
    pub fn finish(mut self, info: &CellInfo) -> Result<u64> {
        let mut writer = self.writer.take().ok_or_else(|| Error::Other(format!("{}: no rows to write", self.path.display())))?;
        let json = serde_json::to_string(info).expect("cell info is serialisable");
        writer.append_key_value_metadata(KeyValue::new(CELL_METADATA_KEY.to_owned(), json));
        writer.close().map_err(|e| Error::parquet(&self.path, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.rows)
    }
}

impl Drop for CellWriter {
    fn drop(&mut self) {
        // Only reached with the temp file still present when `finish` was not called.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Reads a whole canonical cell file, validating its schema.
pub fn read_cell(path: &Path) -> Result<(CellInfo, CellData)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
    schema::validate(path, builder.schema(), &schema::timeseries_columns(), true)?;
    let info = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == CELL_METADATA_KEY).and_then(|k| k.value.clone()))
        .ok_or_else(|| Error::in_file(path, format!("no '{CELL_METADATA_KEY}' metadata: not written by voltlens ingest")))?;
    let info: CellInfo = serde_json::from_str(&info).map_err(|e| Error::in_file(path, format!("bad cell metadata: {e}")))?;
    let reader = builder.build().map_err(|e| Error::parquet(path, e))?;
    let mut data = CellData::default();
    let mut gt: Vec<(String, Vec<ArrayRef>)> = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| Error::arrow(path, e))?;
        schema::check_nulls(path, &batch, &schema::timeseries_columns(), data.len() as u64)?;
        let mut part = CellData::from_record_batch(&batch, path)?;
        for (k, (name, column)) in std::mem::take(&mut part.gt).into_iter().enumerate() {
            match gt.get_mut(k) {
                Some((_, parts)) => parts.push(column),
                None => gt.push((name, vec![column])),
            }
        }
        data.extend(part);
    }
    data.gt = gt
        .into_iter()
        .map(|(name, parts)| {
            let parts: Vec<&dyn arrow::array::Array> = parts.iter().map(|a| a.as_ref()).collect();
            let joined = arrow::compute::concat(&parts).map_err(|e| Error::Other(format!("{}: joining column {name}: {e}", path.display())))?;
            Ok((name, joined))
        })
        .collect::<Result<_>>()?;
    data.cell_id = info.cell_id.clone();
    Ok((info, data))
}

/// Writes the cells table atomically.
pub fn write_cells_table(path: &Path, cells: &[CellInfo]) -> Result<()> {
    let strings = |f: &dyn Fn(&CellInfo) -> Option<String>| -> ArrayRef {
        Arc::new(cells.iter().map(f).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        strings(&|c| Some(c.cell_id.clone())),
        strings(&|c| Some(c.source_file.clone())),
        strings(&|c| Some(c.format.clone())),
        Arc::new(Float64Array::from(cells.iter().map(|c| c.nominal_capacity_ah).collect::<Vec<_>>())),
        Arc::new(BooleanArray::from(cells.iter().map(|c| c.capacity_estimated).collect::<Vec<_>>())),
        strings(&|c| c.chemistry.clone()),
        strings(&|c| c.protocol.clone()),
        Arc::new(Float64Array::from(cells.iter().map(|c| c.ambient_temperature_c).collect::<Vec<_>>())),
        Arc::new(UInt64Array::from(cells.iter().map(|c| c.rows).collect::<Vec<_>>())),
        strings(&|c| Some(c.anchor_method.as_str().to_owned())),
        Arc::new(Float64Array::from(cells.iter().map(|c| c.anchor_uncertainty).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(cells.iter().map(|c| c.upper_cutoff_v).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(cells.iter().map(|c| c.lower_cutoff_v).collect::<Vec<_>>())),
        strings(&|c| Some(c.metadata.clone())),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema::cells_schema()), columns).expect("cells columns agree");
    crate::io::write_via_temp(path, |tmp| {
        let file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(writer_properties())).map_err(|e| Error::parquet(path, e))?;
        writer.write(&batch).map_err(|e| Error::parquet(path, e))?;
        writer.close().map(drop).map_err(|e| Error::parquet(path, e))
    })
}

/// Rows of a cell's time-series file, from its Parquet footer (no data read).
pub fn cell_row_count(path: &Path) -> Result<usize> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
    Ok(builder.metadata().file_metadata().num_rows().max(0) as usize)
}

/// Reads and validates the cells table.
pub fn read_cells_table(path: &Path) -> Result<Vec<CellInfo>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
    schema::validate(path, builder.schema(), &schema::cells_columns(), false)?;
    let mut cells = Vec::new();
    for batch in builder.build().map_err(|e| Error::parquet(path, e))? {
        let batch = batch.map_err(|e| Error::arrow(path, e))?;
        schema::check_nulls(path, &batch, &schema::cells_columns(), cells.len() as u64)?;
        let s = |name: &str| -> Vec<Option<String>> {
            let a = arrow::compute::cast(batch.column_by_name(name).expect("validated"), &arrow::datatypes::DataType::Utf8)
                .expect("utf8");
            a.as_any().downcast_ref::<StringArray>().expect("utf8").iter().map(|v| v.map(str::to_owned)).collect()
        };
        let f = |name: &str| -> Vec<Option<f64>> {
            batch.column_by_name(name).expect("validated").as_any().downcast_ref::<Float64Array>().expect("f64").iter().collect()
        };
        let (ids, sources, formats, chem, protocol, anchors, meta) =
            (s("cell_id"), s("source_file"), s("format"), s("chemistry"), s("protocol"), s("anchor_method"), s("metadata"));
        let (cap, ambient) = (f("nominal_capacity_ah"), f("ambient_temperature_c"));
        let (uncertainty, upper, lower) = (f("anchor_uncertainty"), f("upper_cutoff_v"), f("lower_cutoff_v"));
        let estimated = batch.column_by_name("capacity_estimated").expect("validated").as_any().downcast_ref::<BooleanArray>().expect("bool").clone();
        let rows = batch.column_by_name("rows").expect("validated").as_any().downcast_ref::<UInt64Array>().expect("u64").clone();
        for i in 0..batch.num_rows() {
            let anchor = anchors[i].as_deref().unwrap_or_default();
            cells.push(CellInfo {
                cell_id: ids[i].clone().unwrap_or_default(),
                source_file: sources[i].clone().unwrap_or_default(),
                format: formats[i].clone().unwrap_or_default(),
                nominal_capacity_ah: cap[i].unwrap_or(f64::NAN),
                capacity_estimated: estimated.value(i),
                chemistry: chem[i].clone(),
                protocol: protocol[i].clone(),
                ambient_temperature_c: ambient[i],
                rows: rows.value(i),
                anchor_method: AnchorMethod::parse(anchor)
                    .ok_or_else(|| Error::at_row(path, i as u64 + 1, Some("anchor_method"), format!("unknown value '{anchor}'")))?,
                anchor_uncertainty: uncertainty[i],
                upper_cutoff_v: upper[i],
                lower_cutoff_v: lower[i],
                metadata: meta[i].clone().unwrap_or_default(),
            });
        }
    }
    Ok(cells)
}

/// A canonical dataset loaded in memory: the cells table and every cell's rows, same order.
pub struct Dataset {
    pub cells: Vec<CellInfo>,
    pub data: Vec<CellData>,
}

impl Dataset {
    /// Loads `DIR/cells.parquet` and every cell's time series (in parallel).
    pub fn load(dir: &Path) -> Result<Dataset> {
        Dataset::with_series(dir, Dataset::load_cells(dir)?)
    }

    /// Loads the cells `ids` of the dataset in `dir`, in that order (a record made by a model
    /// that cannot read some cells covers only the others).
    pub fn load_of(dir: &Path, ids: &[String]) -> Result<Dataset> {
        Dataset::with_series(dir, Dataset::load_cells_of(dir, ids)?)
    }

    /// [`Dataset::load_cells`] for the cells `ids`, in that order; an id not in the dataset is
    /// an error.
    pub fn load_cells_of(dir: &Path, ids: &[String]) -> Result<Vec<CellInfo>> {
        let all = Dataset::load_cells(dir)?;
        ids.iter()
            .map(|id| all.iter().find(|c| &c.cell_id == id).cloned().ok_or_else(|| no_such_cell(dir, id, &all)))
            .collect()
    }

    /// The time series of `cells` (in parallel).
    fn with_series(dir: &Path, cells: Vec<CellInfo>) -> Result<Dataset> {
        use rayon::prelude::*;
        let paths = DatasetPaths::new(dir);
        let data = cells
            .par_iter()
            .map(|c| read_cell(&paths.cell_file(&c.cell_id)).map(|(_, d)| d))
            .collect::<Result<Vec<_>>>()?;
        Ok(Dataset { cells, data })
    }

    /// Only `DIR/cells.parquet`: for stages that stream the cells one at a time.
    pub fn load_cells(dir: &Path) -> Result<Vec<CellInfo>> {
        let table = DatasetPaths::new(dir).cells_table();
        if !table.exists() {
            return Err(Error::Config(format!(
                "{} has no cells.parquet: not a canonical dataset (make one with `voltlens ingest` or `voltlens synth`)",
                dir.display()
            )));
        }
        read_cells_table(&table)
    }

    /// Each cell's protocol, temperature and rates, for [`Split::by_cell`](crate::data::windows::Split::by_cell).
    pub fn conditions(&self) -> Vec<crate::data::windows::Conditions> {
        self.cells.iter().zip(&self.data).map(|(info, data)| crate::data::windows::Conditions::of(info, data)).collect()
    }

    pub fn index_of(&self, cell_id: &str) -> Option<usize> {
        self.cells.iter().position(|c| c.cell_id == cell_id)
    }
}

/// "no cell X in this dataset", naming the ids closest to X (longest shared prefix) so a typo or
/// a wrong protocol suffix shows at once.
pub fn no_such_cell(dir: &Path, id: &str, cells: &[CellInfo]) -> Error {
    let shared = |other: &str| id.chars().zip(other.chars()).take_while(|(a, b)| a == b).count();
    let mut known: Vec<&str> = cells.iter().map(|c| c.cell_id.as_str()).collect();
    known.sort_by_key(|other| (std::cmp::Reverse(shared(other)), *other));
    let hint = match known.len() {
        0 => String::new(),
        n => format!(" (closest of its {n} cells: {})", known[..n.min(5)].join(", ")),
    };
    Error::Config(format!("{}: no cell {id} in this dataset{hint}", dir.display()))
}
