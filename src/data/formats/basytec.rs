//! BaSyTec CTS exports: `~`-prefixed header lines (`~Start of Test: …`), the column line
//! `~Time[s]` (or `~Time[h]`), `U[V]`, `I[A]`, `T1[°C]`, tab-separated; current + = charge.

use std::path::Path;

use super::column_map::{Conversion as U, Sign};
use super::csv_stream::DelimitedReader;
use super::layout::{ColumnSpec, HeaderAt, Layout, SignRule};
use super::{CyclerReader, Format};
use crate::Result;

pub(super) fn layout() -> Layout {
    Layout {
        format: Format::Basytec,
        delimiters: vec![b'\t', b',', b';'],
        header: HeaderAt::Search,
        time: ColumnSpec::new("time", &[("~Time[s]", U::IDENTITY), ("~Time[h]", U::HOURS), ("Time[s]", U::IDENTITY), ("Time[h]", U::HOURS)]),
        time_may_be_clock: false,
        current: ColumnSpec::new("current", &[("I[A]", U::IDENTITY), ("I[mA]", U::MILLI)]),
        voltage: ColumnSpec::new("voltage", &[("U[V]", U::IDENTITY)]),
        temperature: Some(ColumnSpec::new("temperature", &[("T1[°C]", U::IDENTITY)])),
        cycle: Some(ColumnSpec::unitless("cycle", &["Cyc-Count"])),
        // `Line` is the line of the test program the row ran: its step.
        step: Some(ColumnSpec::unitless("step", &["Line"])),
        sign: SignRule::Fixed(Sign::ChargePositive),
    }
}

pub(super) fn open(path: &Path) -> Result<Box<dyn CyclerReader>> {
    Ok(Box::new(DelimitedReader::open(path, &layout())?))
}
