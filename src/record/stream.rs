//! Reading a record back one cell at a time, so that what reads it (mine, label) holds one
//! cell's activations and covariates, not the dataset's.
//!
//! ```no_run
//! # fn main() -> voltlens::Result<()> {
//! use voltlens::label::covariates::Covariate;
//! let record = voltlens::record::RecordDir::open("runs/quickstart/record".as_ref())?;
//! for cell in record.cells(&[Covariate::Soc])? {
//!     let cell = cell?;
//!     let soc = cell.covariates.column(Covariate::Soc).expect("asked for");
//!     for ((layer, feature), firing) in cell.activations.features() {
//!         let mean_soc = firing.iter().map(|f| soc[f.row as usize]).sum::<f32>() / firing.len() as f32;
//!         println!("{} L{layer} F{feature}: mean SOC when firing {mean_soc}", cell.activations.cell_id);
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use arrow::array::{Float32Array, UInt16Array, UInt32Array};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use super::run::RecordSummary;
use super::tables::{cell_indices, downcast};
use super::{ACTIVATIONS_FILE, COVARIATES_FILE, SUMMARY_FILE};
use crate::label::covariates::Covariate;
use crate::io::read_json;
use crate::{Error, Result};

/// Rows decoded per Parquet read: large enough to keep decoding fast, small beside a cell.
const BATCH_ROWS: usize = 64 * 1024;

/// A record directory, opened for streaming reads.
#[derive(Debug, Clone)]
pub struct RecordDir {
    pub dir: PathBuf,
    pub summary: RecordSummary,
}

impl RecordDir {
    pub fn open(dir: &Path) -> Result<RecordDir> {
        Ok(RecordDir { dir: dir.to_path_buf(), summary: read_json(&dir.join(SUMMARY_FILE))? })
    }

    /// Every cell in record order with its firing steps and the chosen stored covariates
    /// (`Protocol` is per cell and lives in the cells table, not here).
    pub fn cells(&self, covariates: &[Covariate]) -> Result<RecordCells<'_>> {
        Ok(RecordCells {
            record: self,
            activations: CellRuns::open(&self.dir.join(ACTIVATIONS_FILE), &self.summary.cell_ids, None)?,
            covariates: CovariateRuns::open(&self.dir.join(COVARIATES_FILE), &self.summary.cell_ids, covariates)?,
            next: 0,
        })
    }
}

/// One firing step of one feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Firing {
    pub layer: u32,
    pub feature: u32,
    pub row: u32,
    /// Activation, > 0.
    pub value: f32,
}

/// The firing steps of every feature in one cell.
#[derive(Debug, Clone, Default)]
pub struct CellActivations {
    /// Index of the cell in record (dataset) order.
    pub cell: usize,
    pub cell_id: String,
    /// Rows of the cell; the model has a step at every row but the last.
    pub rows: usize,
    /// Sorted by (layer, feature, row), each step at most once per feature.
    pub firing: Vec<Firing>,
}

impl CellActivations {
    /// Each firing feature with its steps (rows ascending), in (layer, feature) order.
    pub fn features(&self) -> impl Iterator<Item = ((u32, u32), &[Firing])> + '_ {
        self.firing.chunk_by(|a, b| (a.layer, a.feature) == (b.layer, b.feature)).map(|g| ((g[0].layer, g[0].feature), g))
    }
}

/// Stored covariates of one cell, one value per row.
#[derive(Debug, Clone, Default)]
pub struct CellCovariates {
    pub columns: Vec<(Covariate, Vec<f32>)>,
}

impl CellCovariates {
    /// The column of `covariate`, if it was asked for.
    pub fn column(&self, covariate: Covariate) -> Option<&[f32]> {
        self.columns.iter().find(|(c, _)| *c == covariate).map(|(_, v)| v.as_slice())
    }
}

/// One cell of a record.
#[derive(Debug, Clone)]
pub struct RecordCell {
    pub activations: CellActivations,
    pub covariates: CellCovariates,
}

/// Iterator over a record's cells: memory holds one cell and one Parquet batch of each file.
pub struct RecordCells<'a> {
    record: &'a RecordDir,
    activations: CellRuns,
    covariates: CovariateRuns,
    next: usize,
}

impl Iterator for RecordCells<'_> {
    type Item = Result<RecordCell>;

    fn next(&mut self) -> Option<Result<RecordCell>> {
        let s = &self.record.summary;
        let c = self.next;
        if c == s.cell_ids.len() {
            return None;
        }
        self.next += 1;
        // Sized exactly where the record says how many: a growing Vec would briefly hold twice that.
        let firing = Vec::with_capacity(s.cell_activation_rows.get(c).map_or(0, |&n| n as usize));
        let cell = CellActivations { cell: c, cell_id: s.cell_ids[c].clone(), rows: s.cell_rows[c], firing };
        Some(read_activations(&mut self.activations, cell).and_then(|activations| {
            let covariates = self.covariates.read(c as u32, activations.rows)?;
            Ok(RecordCell { activations, covariates })
        }))
    }
}

/// Fills `cell.firing` from the activation rows of cell `cell.cell`.
fn read_activations(runs: &mut CellRuns, mut cell: CellActivations) -> Result<CellActivations> {
    let path = runs.path.clone();
    runs.read_cell(cell.cell as u32, &mut |batch, range| {
        let column = |name: &str| batch.column_by_name(name).ok_or_else(|| Error::in_file(&path, format!("no column {name}")));
        let rows = downcast::<UInt32Array>(column("row")?, &path)?;
        let layers = downcast::<UInt16Array>(column("layer")?, &path)?;
        let features = downcast::<UInt32Array>(column("feature")?, &path)?;
        let values = downcast::<Float32Array>(column("value")?, &path)?;
        for i in range {
            let f = Firing { layer: layers.value(i) as u32, feature: features.value(i), row: rows.value(i), value: values.value(i) };
            if f.row as usize >= cell.rows {
                return Err(Error::in_file(&path, format!("cell {}: row {} is beyond its {} rows", cell.cell_id, f.row, cell.rows)));
            }
            cell.firing.push(f);
        }
        Ok(())
    })?;
    cell.firing.sort_unstable_by_key(|f| (f.layer, f.feature, f.row));
    if let Some(w) = cell.firing.windows(2).find(|w| (w[0].layer, w[0].feature, w[0].row) == (w[1].layer, w[1].feature, w[1].row)) {
        let f = w[0];
        return Err(Error::in_file(&path, format!("cell {}: feature {}/{} fires twice at row {}", cell.cell_id, f.layer, f.feature, f.row)));
    }
    Ok(cell)
}

/// `covariates.parquet` read a cell at a time, only the chosen columns.
struct CovariateRuns {
    runs: CellRuns,
    wanted: Vec<Covariate>,
}

impl CovariateRuns {
    fn open(path: &Path, cell_ids: &[String], wanted: &[Covariate]) -> Result<CovariateRuns> {
        if let Some(c) = wanted.iter().find(|c| **c == Covariate::Protocol) {
            return Err(Error::Config(format!("{}: covariate {} is per cell, not stored per row", path.display(), c.name())));
        }
        let mut columns = vec!["cell_id", "row"];
        columns.extend(wanted.iter().map(|c| c.name()));
        Ok(CovariateRuns { runs: CellRuns::open(path, cell_ids, Some(&columns))?, wanted: wanted.to_vec() })
    }

    fn read(&mut self, cell: u32, rows: usize) -> Result<CellCovariates> {
        let path = self.runs.path.clone();
        let mut columns: Vec<(Covariate, Vec<f32>)> = self.wanted.iter().map(|&c| (c, Vec::with_capacity(rows))).collect();
        let mut next_row = 0u32;
        self.runs.read_cell(cell, &mut |batch, range| {
            let row = batch.column_by_name("row").ok_or_else(|| Error::in_file(&path, "no column row"))?;
            for &r in &downcast::<UInt32Array>(row, &path)?.values()[range.clone()] {
                if r != next_row {
                    return Err(Error::in_file(&path, format!("cell {cell}: row {r} where row {next_row} was expected")));
                }
                next_row += 1;
            }
            for (c, out) in &mut columns {
                let array = batch.column_by_name(c.name()).ok_or_else(|| Error::in_file(&path, format!("no column {}", c.name())))?;
                let values = downcast::<Float32Array>(array, &path)?;
                out.extend(range.clone().map(|i| if arrow::array::Array::is_null(values, i) { f32::NAN } else { values.value(i) }));
            }
            Ok(())
        })?;
        if next_row as usize != rows {
            return Err(Error::in_file(&path, format!("cell {cell} has {next_row} rows, record.json says {rows}")));
        }
        Ok(CellCovariates { columns })
    }
}

/// Row batches of a record file whose rows are grouped by cell in record order, handed out one
/// cell at a time.
struct CellRuns {
    path: PathBuf,
    index: HashMap<String, u32>,
    reader: ParquetRecordBatchReader,
    /// The current batch and the record index of each of its rows' cell.
    batch: Option<(RecordBatch, Vec<u32>)>,
    /// Next unread row of `batch`, and the file rows before it.
    pos: usize,
    offset: u64,
}

impl CellRuns {
    /// Opens `path`, reading all columns or only `columns`.
    fn open(path: &Path, cell_ids: &[String], columns: Option<&[&str]>) -> Result<CellRuns> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?.with_batch_size(BATCH_ROWS);
        if let Some(columns) = columns {
            let roots = columns
                .iter()
                .map(|name| builder.schema().index_of(name).map_err(|_| Error::in_file(path, format!("no column {name}: recorded by an older VoltLens? Record again (`voltlens run PIPELINE --from record`)"))))
                .collect::<Result<Vec<_>>>()?;
            let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
            builder = builder.with_projection(mask);
        }
        let reader = builder.build().map_err(|e| Error::parquet(path, e))?;
        let index = cell_ids.iter().enumerate().map(|(i, id)| (id.clone(), i as u32)).collect();
        Ok(CellRuns { path: path.to_path_buf(), index, reader, batch: None, pos: 0, offset: 0 })
    }

    /// Hands `take` each run of rows of cell `cell`, which must be the next cell in the file (a
    /// cell without rows reads as empty).
    fn read_cell(&mut self, cell: u32, take: &mut dyn FnMut(&RecordBatch, Range<usize>) -> Result<()>) -> Result<()> {
        loop {
            let exhausted = self.batch.as_ref().is_none_or(|(b, _)| self.pos == b.num_rows());
            if exhausted && !self.next_batch()? {
                return Ok(());
            }
            let (batch, cells) = self.batch.as_ref().expect("a batch is loaded");
            let start = self.pos;
            let end = start + cells[start..].iter().take_while(|&&k| k == cell).count();
            if end > start {
                take(batch, start..end)?;
            }
            self.pos = end;
            if end < cells.len() {
                if cells[end] < cell {
                    let row = self.offset + end as u64 + 1;
                    return Err(Error::at_row(&self.path, row, Some("cell_id"), "rows are not grouped by cell in record.json's order"));
                }
                return Ok(());
            }
        }
    }

    /// Loads the next batch; false at the end of the file.
    fn next_batch(&mut self) -> Result<bool> {
        let Some(batch) = self.reader.next() else { return Ok(false) };
        let batch = batch.map_err(|e| Error::arrow(&self.path, e))?;
        let cells = cell_indices(&batch, &self.index, &self.path)?;
        self.offset += self.batch.as_ref().map_or(0, |(b, _)| b.num_rows() as u64);
        self.batch = Some((batch, cells));
        self.pos = 0;
        Ok(true)
    }
}
