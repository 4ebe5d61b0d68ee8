//! The record's Parquet files: buffered writers that emit one row group per full buffer, and
//! [`read_sparse`], which reads them back (through `stream`) into [`SparseActivations`].

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, DictionaryArray, Float32Array, StringArray, UInt16Array, UInt32Array};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::run::RecordSummary;
use super::stream::RecordDir;
use crate::io::temp_path;
use crate::label::covariates::{Covariate, Covariates};
use crate::mine::{FeatureActivations, FiringCounts, SparseActivations};
use crate::{Error, Result};

/// The covariates stored per step: all but `Protocol`, which is per cell (in the cells table).
fn stored_covariates() -> impl Iterator<Item = Covariate> {
    Covariate::ALL.into_iter().filter(|c| *c != Covariate::Protocol)
}

/// A plain string column (Parquet still dictionary-encodes its pages): a dictionary type would
/// read as polars' Categorical, which does not join the string `cell_id` of the other tables.
fn cell_id_field() -> Field {
    Field::new("cell_id", DataType::Utf8, false)
}

/// Schema of `activations.parquet`.
pub fn activations_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        cell_id_field(),
        Field::new("row", DataType::UInt32, false),
        Field::new("layer", DataType::UInt16, false),
        Field::new("feature", DataType::UInt32, false),
        Field::new("value", DataType::Float32, false),
    ]))
}

/// Schema of `covariates.parquet`: cell_id, row, then one f32 column per stored covariate.
pub fn covariates_schema() -> SchemaRef {
    let mut fields = vec![cell_id_field(), Field::new("row", DataType::UInt32, false)];
    fields.extend(stored_covariates().map(|c| Field::new(c.name(), DataType::Float32, true)));
    Arc::new(Schema::new(fields))
}

/// A Parquet file written one row group per `write`, under a temporary name until `finish`.
struct RowGroupFile {
    path: PathBuf,
    tmp: PathBuf,
    schema: SchemaRef,
    writer: ArrowWriter<File>,
    row_groups: usize,
}

impl RowGroupFile {
    fn create(path: &Path, schema: SchemaRef) -> Result<Self> {
        let tmp = temp_path(path);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| Error::parquet(&tmp, e))?;
        Ok(RowGroupFile { path: path.to_path_buf(), tmp, schema, writer, row_groups: 0 })
    }

    /// Writes `columns` as one row group (flushed at once, so the buffer is the only memory).
    fn write(&mut self, columns: Vec<ArrayRef>) -> Result<()> {
        let batch = RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| Error::arrow(&self.tmp, e))?;
        self.writer.write(&batch).map_err(|e| Error::parquet(&self.tmp, e))?;
        self.writer.flush().map_err(|e| Error::parquet(&self.tmp, e))?;
        self.row_groups += 1;
        Ok(())
    }

    /// Closes the file and moves it to its final name; returns the number of row groups.
    fn finish(self) -> Result<usize> {
        self.writer.close().map_err(|e| Error::parquet(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.row_groups)
    }
}

/// `keys` (cell indices) as the dataset's cell ids.
fn cell_id_column(keys: Vec<u32>, cell_ids: &Arc<StringArray>) -> ArrayRef {
    arrow::compute::take(cell_ids.as_ref(), &UInt32Array::from(keys), None).expect("keys index the cell ids")
}

/// Streams (cell, row, layer, feature, value) rows into `activations.parquet`.
pub struct ActivationWriter {
    file: RowGroupFile,
    cell_ids: Arc<StringArray>,
    max_rows: usize,
    cell: Vec<u32>,
    row: Vec<u32>,
    layer: Vec<u16>,
    feature: Vec<u32>,
    value: Vec<f32>,
    /// Rows written so far.
    pub rows: u64,
}

impl ActivationWriter {
    pub fn create(path: &Path, cell_ids: &[String], max_rows: usize) -> Result<Self> {
        Ok(ActivationWriter {
            file: RowGroupFile::create(path, activations_schema())?,
            cell_ids: Arc::new(StringArray::from(cell_ids.to_vec())),
            max_rows,
            cell: Vec::with_capacity(max_rows),
            row: Vec::with_capacity(max_rows),
            layer: Vec::with_capacity(max_rows),
            feature: Vec::with_capacity(max_rows),
            value: Vec::with_capacity(max_rows),
            rows: 0,
        })
    }

    pub fn push(&mut self, cell: u32, row: u32, layer: u16, feature: u32, value: f32) -> Result<()> {
        self.cell.push(cell);
        self.row.push(row);
        self.layer.push(layer);
        self.feature.push(feature);
        self.value.push(value);
        self.rows += 1;
        if self.cell.len() == self.max_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.cell.is_empty() {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = vec![
            cell_id_column(std::mem::take(&mut self.cell), &self.cell_ids),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.row))),
            Arc::new(UInt16Array::from(std::mem::take(&mut self.layer))),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.feature))),
            Arc::new(Float32Array::from(std::mem::take(&mut self.value))),
        ];
        self.file.write(columns)
    }

    /// Writes what is buffered and closes the file; returns the number of row groups.
    pub fn finish(mut self) -> Result<usize> {
        self.flush()?;
        self.file.finish()
    }
}

/// Streams each step's covariates into `covariates.parquet`.
pub struct CovariateWriter {
    file: RowGroupFile,
    cell_ids: Arc<StringArray>,
    max_rows: usize,
    cell: Vec<u32>,
    row: Vec<u32>,
    /// One buffer per stored covariate, in `stored_covariates` order.
    columns: Vec<Vec<f32>>,
}

impl CovariateWriter {
    pub fn create(path: &Path, cell_ids: &[String], max_rows: usize) -> Result<Self> {
        Ok(CovariateWriter {
            file: RowGroupFile::create(path, covariates_schema())?,
            cell_ids: Arc::new(StringArray::from(cell_ids.to_vec())),
            max_rows,
            cell: Vec::new(),
            row: Vec::new(),
            columns: vec![Vec::new(); stored_covariates().count()],
        })
    }

    /// Appends every step of one cell (`cell` indexes the dataset's cells).
    pub fn push_cell(&mut self, cell: u32, covariates: &Covariates) -> Result<()> {
        let sources: Vec<&[f32]> = stored_covariates().map(|c| covariates.column(c)).collect();
        for row in 0..covariates.len() {
            self.cell.push(cell);
            self.row.push(row as u32);
            for (buffer, source) in self.columns.iter_mut().zip(&sources) {
                buffer.push(source[row]);
            }
            if self.cell.len() == self.max_rows {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.cell.is_empty() {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = vec![
            cell_id_column(std::mem::take(&mut self.cell), &self.cell_ids),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.row))),
        ];
        // Missing values (SOC of an unanchored cell) are nulls, as in the timeseries, not NaN.
        let nullable = |c: Vec<f32>| Arc::new(c.into_iter().map(|v| (!v.is_nan()).then_some(v)).collect::<Float32Array>()) as ArrayRef;
        columns.extend(self.columns.iter_mut().map(|c| nullable(std::mem::take(c))));
        self.file.write(columns)
    }

    pub fn finish(mut self) -> Result<usize> {
        self.flush()?;
        self.file.finish()
    }
}

/// Every feature's activations in memory at once, for what needs them all together (the
/// report); sorted by (layer, feature), entries grouped by cell in dataset order. Features that
/// never fire are left out; `record.json` holds the features per layer to count them.
pub fn read_sparse(record_dir: &Path) -> Result<SparseActivations> {
    read_sparse_where(record_dir, &|_| Some(0))
}

/// [`read_sparse`] of the features `keep` gives a size for only (None: skipped), so a reader can
/// hold a bounded share of a large record at a time. The size, the feature's firing steps where
/// known (else 0), sizes its buffers once: grown by doubling they would briefly hold twice that.
pub fn read_sparse_where(record_dir: &Path, keep: &dyn Fn((u32, u32)) -> Option<usize>) -> Result<SparseActivations> {
    let record = RecordDir::open(record_dir)?;
    let mut features: BTreeMap<(u32, u32), FeatureActivations> = BTreeMap::new();
    for cell in record.cells(&[])? {
        let cell = cell?.activations;
        for ((layer, feature), firing) in cell.features() {
            let Some(size) = keep((layer, feature)) else { continue };
            let f = features.entry((layer, feature)).or_insert_with(|| FeatureActivations {
                layer,
                feature,
                rows: Vec::with_capacity(size),
                values: Vec::with_capacity(size),
                ..Default::default()
            });
            // Cells since the feature last fired hold none of its entries.
            f.cell_offsets.resize(cell.cell + 1, f.rows.len());
            f.rows.extend(firing.iter().map(|e| e.row));
            f.values.extend(firing.iter().map(|e| e.value));
            f.cell_offsets.push(f.rows.len());
        }
    }
    let RecordSummary { cell_ids, cell_rows, .. } = record.summary;
    for f in features.values_mut() {
        f.cell_offsets.resize(cell_ids.len() + 1, f.rows.len());
    }
    Ok(SparseActivations { cell_ids, cell_rows, features: features.into_values().collect() })
}

/// Firing steps per cell of every feature that fires, in (layer, feature) order: one pass that
/// holds one cell at a time.
pub fn firing_counts(record_dir: &Path) -> Result<Vec<FiringCounts>> {
    let record = RecordDir::open(record_dir)?;
    let n_cells = record.summary.cell_ids.len();
    let mut counts: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
    for cell in record.cells(&[])? {
        let cell = cell?.activations;
        for (key, firing) in cell.features() {
            counts.entry(key).or_insert_with(|| vec![0; n_cells])[cell.cell] = firing.len() as u32;
        }
    }
    Ok(counts.into_iter().map(|((layer, feature), per_cell)| FiringCounts { layer, feature, per_cell }).collect())
}

pub(super) fn downcast<'a, T: 'static>(array: &'a ArrayRef, path: &Path) -> Result<&'a T> {
    array.as_any().downcast_ref::<T>().ok_or_else(|| Error::in_file(path, format!("unexpected column type {}", array.data_type())))
}

/// The dataset index of each row's cell_id.
pub(super) fn cell_indices(batch: &RecordBatch, index: &HashMap<String, u32>, path: &Path) -> Result<Vec<u32>> {
    let column = batch.column_by_name("cell_id").ok_or_else(|| Error::in_file(path, "no column cell_id"))?;
    let lookup = |id: &str| index.get(id).copied().ok_or_else(|| Error::in_file(path, format!("cell {id} is not in record.json")));
    if let Some(ids) = column.as_any().downcast_ref::<StringArray>() {
        // Rows come grouped by cell: look each run up once.
        let mut last: Option<(&str, u32)> = None;
        return ids
            .iter()
            .map(|id| {
                let id = id.ok_or_else(|| Error::in_file(path, "a null cell_id"))?;
                match last {
                    Some((l, c)) if l == id => Ok(c),
                    _ => {
                        let c = lookup(id)?;
                        last = Some((id, c));
                        Ok(c)
                    }
                }
            })
            .collect();
    }
    // Records written before cell_id was a plain string hold a dictionary.
    let dict = downcast::<DictionaryArray<Int32Type>>(column, path)?;
    let values = dict.values().as_any().downcast_ref::<StringArray>().ok_or_else(|| Error::in_file(path, "cell_id is not a utf8 dictionary"))?;
    // Resolve each dictionary value once, then index by key.
    let resolved = (0..values.len())
        .map(|v| lookup(values.value(v)))
        .collect::<Result<Vec<_>>>()?;
    Ok(dict.keys().values().iter().map(|&k| resolved[k as usize]).collect())
}
