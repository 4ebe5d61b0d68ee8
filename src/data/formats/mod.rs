//! Vendor readers: detect a file's format from its header and stream it as `RawChunk`s.
//!
//! Every delimited vendor format is a `layout::Layout` (column aliases with units, header
//! position, sign rule) read by one generic reader; Parquet has its own reader.

mod arbin;
mod basytec;
mod battdat;
mod battery_archive;
mod bdf;
mod biologic;
mod cells_json;
mod column_map;
mod csv_stream;
mod detect;
mod landt;
mod layout;
mod maccor;
mod neware;
mod novonix;
mod numbers;
mod parquet_source;
mod pec;
mod text;
mod workbook;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::data::raw::{RawChunk, SourceMetadata};
use crate::{Error, Result};

pub use column_map::{ColumnMap, CurrentUnit, MappedColumns, MappedUnits, Sign, TemperatureUnit, TimeUnit, VoltageUnit};
pub use battdat::{export_battdat, RAW_DATA_FILE};
pub use cells_json::warn_unmatched as warn_unmatched_cells_json;
pub use detect::detect;
pub(crate) use workbook::in_sheets;

/// A source of one cell's rows, read chunk by chunk so memory does not grow with file length.
/// Vendor files, canonical/PyBaMM Parquet and the synthetic generator all implement it.
pub trait CyclerReader: Send {
    /// What the source says about the cell (known before the first chunk is read).
    fn metadata(&self) -> &SourceMetadata;
    /// The same, to fill in what the file itself does not say.
    fn metadata_mut(&mut self) -> &mut SourceMetadata;
    /// The next run of rows, or `None` at the end. Rows are in file order.
    fn next_chunk(&mut self) -> Result<Option<RawChunk>>;
    /// The sheet and the row a spreadsheet shows there for a chunk's `source_row`, for a source
    /// whose rows live in sheets (a workbook); `None` where `source_row` is the file's own row.
    fn sheet_row(&self, _source_row: u64) -> Option<(&str, u64)> {
        None
    }
}

/// The file formats VoltLens reads (DESIGN.md §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Arbin,
    Maccor,
    Biologic,
    Novonix,
    Neware,
    Basytec,
    /// The Battery Data Alliance's Battery Data Format (CSV).
    Bdf,
    Pec,
    /// Landt (LANHE) LANDdt exports (`Record-Tab`).
    Landt,
    BatteryArchive,
    /// Canonical or PyBaMM-generated Parquet.
    Parquet,
    /// Any delimited text file, read through a [`ColumnMap`].
    Mapped,
    /// battery-data-toolkit's layout: `<battery>/raw_data.parquet` with battdat's metadata.
    Battdat,
}

impl Format {
    pub const ALL: [Format; 13] = [
        Format::Arbin,
        Format::Maccor,
        Format::Biologic,
        Format::Novonix,
        Format::Neware,
        Format::Basytec,
        Format::Bdf,
        Format::Pec,
        Format::Landt,
        Format::BatteryArchive,
        Format::Parquet,
        Format::Mapped,
        Format::Battdat,
    ];

    /// The name used in config files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Arbin => "arbin",
            Format::Maccor => "maccor",
            Format::Biologic => "biologic",
            Format::Novonix => "novonix",
            Format::Neware => "neware",
            Format::Basytec => "basytec",
            Format::Bdf => "bdf",
            Format::Pec => "pec",
            Format::Landt => "landt",
            Format::BatteryArchive => "battery_archive",
            Format::Parquet => "parquet",
            Format::Mapped => "mapped",
            Format::Battdat => "battdat",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;

    /// Accepts the names `Display` writes, in any case, with `-` for `_`.
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        Format::ALL.into_iter().find(|f| f.name() == wanted).ok_or_else(|| {
            let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
            Error::Config(format!("unknown format '{s}'; expected one of: {}", names.join(", ")))
        })
    }
}

/// Opens `path` as `format`, what its header lacks filled from a `cells.json` beside it (any
/// format: a cycler's export often states no capacity, cut-offs or protocol). `column_map` is
/// required for `Format::Mapped` and refused otherwise.
pub fn open(path: &Path, format: Format, column_map: Option<&ColumnMap>) -> Result<Box<dyn CyclerReader>> {
    open_detected(path, Some(format), column_map).map(|(_, reader)| reader)
}

/// [`open`] as `format`, or as [`detect`] finds it where `None`; a workbook is converted once
/// for both.
pub fn open_detected(path: &Path, format: Option<Format>, column_map: Option<&ColumnMap>) -> Result<(Format, Box<dyn CyclerReader>)> {
    let book = if workbook::is_workbook(path) { Some(workbook::WorkbookCsv::convert(path, format)?) } else { None };
    let format = match (format, &book) {
        (Some(format), _) => format,
        (None, Some(book)) => book.format.expect("a workbook converted without a format has a detected one"),
        (None, None) => detect(path)?,
    };
    if column_map.is_some() && format != Format::Mapped {
        return Err(Error::Config(format!("a column map applies to format 'mapped' only, not '{format}'")));
    }
    let mut reader = match book {
        Some(book) => workbook::open(book, format, column_map)?,
        None => open_format(path, format, column_map)?,
    };
    let cell_id = crate::data::ingest::source_cell_id(reader.as_ref(), path);
    cells_json::fill_from_cells_json(path, &cell_id, reader.metadata_mut())?;
    Ok((format, reader))
}

fn open_format(path: &Path, format: Format, column_map: Option<&ColumnMap>) -> Result<Box<dyn CyclerReader>> {
    match format {
        Format::Arbin => arbin::open(path),
        Format::Maccor => maccor::open(path),
        Format::Biologic => biologic::open(path),
        Format::Novonix => novonix::open(path),
        Format::Neware => neware::open(path),
        Format::Basytec => basytec::open(path),
        Format::Bdf => bdf::open(path),
        Format::Pec => pec::open(path),
        Format::Landt => landt::open(path),
        Format::BatteryArchive => battery_archive::open(path),
        Format::Parquet => parquet_source::open(path),
        Format::Battdat => battdat::open(path),
        Format::Mapped => {
            let map = column_map.ok_or_else(|| Error::Config("format 'mapped' needs a column map (a TOML file)".into()))?;
            column_map::open(path, map)
        }
    }
}

/// The layout of a vendor's delimited format (`None` for Parquet and column-mapped files).
fn delimited_layout(format: Format) -> Option<layout::Layout> {
    match format {
        Format::Arbin => Some(arbin::layout()),
        Format::Maccor => Some(maccor::layout()),
        Format::Biologic => Some(biologic::layout()),
        Format::Novonix => Some(novonix::layout()),
        Format::Neware => Some(neware::layout()),
        Format::Basytec => Some(basytec::layout()),
        Format::Bdf => Some(bdf::layout()),
        Format::Pec => Some(pec::layout()),
        Format::Landt => Some(landt::layout()),
        Format::BatteryArchive => Some(battery_archive::layout()),
        Format::Parquet | Format::Mapped | Format::Battdat => None,
    }
}
