//! BioLogic EC-Lab text exports: semicolon- or tab-separated, units in the header (`time/s`,
//! `I/mA`, `Ecell/V`), maybe an EC-Lab header block or a leading unnamed index column. Tools
//! that re-save them may write `time/s` as date-times, which become seconds since the first row.

use std::path::Path;

use super::column_map::Conversion as U;
use super::csv_stream::DelimitedReader;
use super::layout::{ColumnSpec, HeaderAt, Layout, SignRule};
use super::{CyclerReader, Format};
use crate::Result;

pub(super) fn layout() -> Layout {
    Layout {
        format: Format::Biologic,
        delimiters: vec![b';', b'\t', b','],
        header: HeaderAt::Search,
        time: ColumnSpec::new("time", &[("time/s", U::IDENTITY)]),
        time_may_be_clock: true,
        current: ColumnSpec::new("current", &[("I/mA", U::MILLI), ("<I>/mA", U::MILLI), ("I/A", U::IDENTITY)]),
        voltage: ColumnSpec::new("voltage", &[("Ecell/V", U::IDENTITY), ("Ewe/V", U::IDENTITY), ("<Ecell>/V", U::IDENTITY), ("<Ewe>/V", U::IDENTITY)]),
        temperature: Some(ColumnSpec::new("temperature", &[("T/°C", U::IDENTITY), ("Temperature/°C", U::IDENTITY), ("T/K", U::KELVIN)])),
        cycle: Some(ColumnSpec::unitless("cycle", &["cycle number"])),
        // `Ns` is EC-Lab's sequence (step) number within the technique.
        step: Some(ColumnSpec::unitless("step", &["Ns"])),
        sign: SignRule::Capacity {
            charge: ColumnSpec::unitless("charge capacity", &["Q charge/mA.h", "Q charge/mAh"]),
            discharge: ColumnSpec::unitless("discharge capacity", &["Q discharge/mA.h", "Q discharge/mAh"]),
        },
    }
}

pub(super) fn open(path: &Path) -> Result<Box<dyn CyclerReader>> {
    Ok(Box::new(DelimitedReader::open(path, &layout())?))
}
