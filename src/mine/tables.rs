//! Output tables of the mine stage (`features.parquet`, `examples.parquet`, with CSV twins), and
//! the small column-table type the label stage writes its tables with. Every file is written to
//! a temporary sibling and renamed, so a killed run never leaves half a table.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use polars::prelude::{Column, CsvWriter, DataFrame, SerWriter};

use crate::mine::stats::{MinedFeatures, WindowKind};
use crate::{Error, Result};

/// One column of an output table.
pub enum TableColumn {
    U32(Vec<u32>),
    F64(Vec<f64>),
    Str(Vec<String>),
    Bool(Vec<bool>),
}

/// A table of named columns, written as Parquet (through arrow) and CSV (through polars).
#[derive(Default)]
pub struct Table {
    pub columns: Vec<(String, TableColumn)>,
}

impl Table {
    pub fn push(&mut self, name: &str, column: TableColumn) {
        self.columns.push((name.to_owned(), column));
    }

    fn record_batch(&self) -> RecordBatch {
        let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = self
            .columns
            .iter()
            .map(|(name, c)| {
                let (dt, array): (DataType, ArrayRef) = match c {
                    TableColumn::U32(v) => (DataType::UInt32, Arc::new(UInt32Array::from(v.clone()))),
                    TableColumn::F64(v) => (DataType::Float64, Arc::new(Float64Array::from(v.clone()))),
                    TableColumn::Str(v) => (DataType::Utf8, Arc::new(StringArray::from(v.clone()))),
                    TableColumn::Bool(v) => (DataType::Boolean, Arc::new(BooleanArray::from(v.clone()))),
                };
                (Field::new(name, dt, false), array)
            })
            .unzip();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("table columns have equal lengths")
    }

    pub fn data_frame(&self) -> Result<DataFrame> {
        let columns = self
            .columns
            .iter()
            .map(|(name, c)| match c {
                TableColumn::U32(v) => Column::new(name.into(), v),
                TableColumn::F64(v) => Column::new(name.into(), v),
                TableColumn::Str(v) => Column::new(name.into(), v),
                TableColumn::Bool(v) => Column::new(name.into(), v),
            })
            .collect();
        DataFrame::new_infer_height(columns).map_err(|e| Error::Other(format!("building table: {e}")))
    }

    /// Writes `path` (Parquet) and the same rows as CSV beside it, each atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::io::write_via_temp(path, |tmp| {
            let file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
            let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::default())).build();
            let batch = self.record_batch();
            let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| Error::parquet(path, e))?;
            writer.write(&batch).map_err(|e| Error::parquet(path, e))?;
            writer.close().map(drop).map_err(|e| Error::parquet(path, e))
        })?;
        self.write_csv(&path.with_extension("csv"))
    }

    fn write_csv(&self, path: &Path) -> Result<()> {
        let mut df = self.data_frame()?;
        crate::io::write_via_temp(path, |tmp| {
            let mut file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
            CsvWriter::new(&mut file).finish(&mut df).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
        })
    }
}

fn kind_name(kind: WindowKind) -> &'static str {
    match kind {
        WindowKind::Top => "top",
        WindowKind::Quantile => "quantile",
        WindowKind::NonFiring => "non_firing",
    }
}

/// `features.parquet`: one row per feature; the histogram as JSON arrays of edges and counts.
pub fn features_table(mined: &MinedFeatures) -> Table {
    let f = &mined.features;
    let mut t = Table::default();
    t.push("layer", TableColumn::U32(f.iter().map(|m| m.layer).collect()));
    t.push("feature", TableColumn::U32(f.iter().map(|m| m.feature).collect()));
    t.push("density", TableColumn::F64(f.iter().map(|m| m.density).collect()));
    t.push("mean", TableColumn::F64(f.iter().map(|m| m.mean).collect()));
    t.push("mean_firing", TableColumn::F64(f.iter().map(|m| m.mean_firing).collect()));
    t.push("max", TableColumn::F64(f.iter().map(|m| m.max as f64).collect()));
    t.push("output_effect_mv", TableColumn::F64(f.iter().map(|m| m.output_effect_mv.unwrap_or(f64::NAN)).collect()));
    t.push("histogram_edges", TableColumn::Str(f.iter().map(|m| serde_json::to_string(&m.histogram_edges).expect("floats")).collect()));
    t.push("histogram_counts", TableColumn::Str(f.iter().map(|m| serde_json::to_string(&m.histogram_counts).expect("ints")).collect()));
    t
}

/// `examples.parquet`: one row per window (top, quantile, non-firing) of every feature.
pub fn examples_table(mined: &MinedFeatures) -> Table {
    let rows: Vec<_> = mined.features.iter().flat_map(|m| m.windows.iter().map(move |w| (m, w))).collect();
    let mut t = Table::default();
    t.push("layer", TableColumn::U32(rows.iter().map(|(m, _)| m.layer).collect()));
    t.push("feature", TableColumn::U32(rows.iter().map(|(m, _)| m.feature).collect()));
    t.push("kind", TableColumn::Str(rows.iter().map(|(_, w)| kind_name(w.kind).to_owned()).collect()));
    t.push("rank", TableColumn::U32(rows.iter().map(|(_, w)| w.rank as u32).collect()));
    t.push("cell_id", TableColumn::Str(rows.iter().map(|(_, w)| mined.cell_ids[w.cell].clone()).collect()));
    t.push("peak_row", TableColumn::U32(rows.iter().map(|(_, w)| w.peak_row).collect()));
    t.push("start_row", TableColumn::U32(rows.iter().map(|(_, w)| w.start_row).collect()));
    t.push("end_row", TableColumn::U32(rows.iter().map(|(_, w)| w.end_row).collect()));
    t.push("value", TableColumn::F64(rows.iter().map(|(_, w)| w.value as f64).collect()));
    t
}

/// Writes `DIR/features.parquet` and `DIR/examples.parquet` (+ CSV).
pub fn write_mined(dir: &Path, mined: &MinedFeatures) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    features_table(mined).write(&dir.join("features.parquet"))?;
    examples_table(mined).write(&dir.join("examples.parquet"))
}
