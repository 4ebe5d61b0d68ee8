//! BatteryArchive time-series CSV (`Test_Time (s)`, `Cycle_Index`, `Current (A)`, `Voltage (V)`,
//! `Charge_Capacity (Ah)`, `Discharge_Capacity (Ah)`, `Cell_Temperature (C)`). Simulated cells
//! come with `<cell>_truth.csv` (ground truth keyed by `Test_Time (s)`) and a `cells.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, StringBuilder};

use super::column_map::Conversion as U;
use super::csv_stream::{DelimitedReader, Passthrough};
use super::layout::{ColumnSpec, HeaderAt, Layout, SignRule};
use super::text::{Fields, TextLines};
use super::{CyclerReader, Format};
use crate::{Error, Result};

const TIME_COLUMN: &str = "Test_Time (s)";

pub(super) fn layout() -> Layout {
    Layout {
        format: Format::BatteryArchive,
        delimiters: vec![b','],
        header: HeaderAt::Search,
        time: ColumnSpec::new("time", &[(TIME_COLUMN, U::IDENTITY)]),
        time_may_be_clock: false,
        current: ColumnSpec::new("current", &[("Current (A)", U::IDENTITY)]),
        voltage: ColumnSpec::new("voltage", &[("Voltage (V)", U::IDENTITY)]),
        temperature: Some(ColumnSpec::new("temperature", &[("Cell_Temperature (C)", U::IDENTITY)])),
        cycle: Some(ColumnSpec::unitless("cycle", &["Cycle_Index"])),
        step: Some(ColumnSpec::unitless("step", &["Step_Index"])),
        sign: SignRule::Capacity {
            charge: ColumnSpec::unitless("charge capacity", &["Charge_Capacity (Ah)"]),
            discharge: ColumnSpec::unitless("discharge capacity", &["Discharge_Capacity (Ah)"]),
        },
    }
}

pub(super) fn open(path: &Path) -> Result<Box<dyn CyclerReader>> {
    let mut reader = DelimitedReader::open(path, &layout())?;
    let cell_id = cell_id(path);
    let truth = path.with_file_name(format!("{cell_id}_truth.csv"));
    if truth.is_file() {
        reader.set_passthrough(Box::new(TruthJoin::open(&truth)?));
    }
    Ok(Box::new(reader))
}

/// `chen2020-22-00-cccv_timeseries.csv` → `chen2020-22-00-cccv`.
fn cell_id(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    stem.strip_suffix("_timeseries").unwrap_or(stem).to_owned()
}

/// A truth column: numeric columns become Float64, others (step kinds) strings.
struct TruthColumn {
    name: String,
    index: usize,
    numeric: bool,
}

/// One truth row read ahead of the time series.
struct TruthRow {
    line: u64,
    time: f64,
    values: Vec<String>,
}

/// Streams `*_truth.csv` beside the time series, matching rows by `Test_Time (s)`: a time-series
/// row with no truth row at the same time gets nulls, truth rows with no partner are skipped.
struct TruthJoin {
    path: PathBuf,
    lines: TextLines,
    fields: Fields,
    time_index: usize,
    columns: Vec<TruthColumn>,
    ahead: Option<TruthRow>,
}

impl TruthJoin {
    fn open(path: &Path) -> Result<Self> {
        let mut lines = TextLines::open(path)?;
        let mut fields = Fields::default();
        let (header_line, header) = match lines.next_line()? {
            Some((n, text)) => (n, text.to_owned()),
            None => return Err(Error::in_file(path, "empty file")),
        };
        fields.split(&header, b',');
        let names = fields.to_strings();
        let time_index = names.iter().position(|n| n == TIME_COLUMN).ok_or_else(|| {
            Error::at_row(path, header_line, None, format!("missing column '{TIME_COLUMN}'; the header has: {}", names.join(", ")))
        })?;
        let mut join = TruthJoin { path: path.to_path_buf(), lines, fields, time_index, columns: Vec::new(), ahead: None };
        join.read_ahead()?;
        let first = join.ahead.as_ref().map(|row| row.values.clone()).unwrap_or_default();
        join.columns = names
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != time_index)
            .map(|(index, name)| TruthColumn {
                name: if name.starts_with("gt_") { name.clone() } else { format!("gt_{name}") },
                index,
                numeric: first.get(index).is_some_and(|v| v.parse::<f64>().is_ok()),
            })
            .collect();
        Ok(join)
    }

    /// Loads the next non-blank truth row into `ahead` (left `None` at the end of the file).
    fn read_ahead(&mut self) -> Result<()> {
        while let Some((line, text)) = self.lines.next_line()? {
            if text.trim().is_empty() {
                continue;
            }
            self.fields.split(text, b',');
            let cell = self.fields.get(self.time_index).unwrap_or_default();
            let time = cell.parse::<f64>().ok().filter(|t| t.is_finite()).ok_or_else(|| {
                Error::at_row(&self.path, line, Some(TIME_COLUMN), format!("not a finite number: '{cell}'"))
            })?;
            self.ahead = Some(TruthRow { line, time, values: self.fields.to_strings() });
            return Ok(());
        }
        self.ahead = None;
        Ok(())
    }

    /// The truth row at time `t`, skipping earlier truth rows that matched nothing.
    fn take_row_at(&mut self, t: f64) -> Result<Option<TruthRow>> {
        let tolerance = 1e-6 + 1e-9 * t.abs();
        while let Some(row) = &self.ahead {
            if row.time < t - tolerance {
                self.read_ahead()?;
            } else if row.time <= t + tolerance {
                let row = self.ahead.take();
                self.read_ahead()?;
                return Ok(row);
            } else {
                break;
            }
        }
        Ok(None)
    }
}

/// An Arrow builder for one truth column.
enum TruthBuilder {
    Numeric(Float64Builder),
    Text(StringBuilder),
}

impl Passthrough for TruthJoin {
    fn columns_for(&mut self, test_time: &[f64]) -> Result<Vec<(String, ArrayRef)>> {
        let mut builders: Vec<TruthBuilder> = self
            .columns
            .iter()
            .map(|c| if c.numeric { TruthBuilder::Numeric(Float64Builder::new()) } else { TruthBuilder::Text(StringBuilder::new()) })
            .collect();
        for &t in test_time {
            let row = self.take_row_at(t)?;
            for (column, builder) in self.columns.iter().zip(&mut builders) {
                let value = row.as_ref().and_then(|r| r.values.get(column.index)).filter(|v| !v.is_empty());
                match builder {
                    TruthBuilder::Text(b) => b.append_option(value),
                    TruthBuilder::Numeric(b) => b.append_option(match value {
                        Some(v) => Some(v.parse::<f64>().map_err(|_| {
                            let line = row.as_ref().map_or(0, |r| r.line);
                            Error::at_row(&self.path, line, Some(&column.name), format!("not a number: '{v}'"))
                        })?),
                        None => None,
                    }),
                }
            }
        }
        Ok(self
            .columns
            .iter()
            .zip(builders)
            .map(|(column, builder)| {
                let array: ArrayRef = match builder {
                    TruthBuilder::Numeric(mut b) => Arc::new(b.finish()),
                    TruthBuilder::Text(mut b) => Arc::new(b.finish()),
                };
                (column.name.clone(), array)
            })
            .collect())
    }
}
