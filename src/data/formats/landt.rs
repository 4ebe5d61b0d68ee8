//! Landt (LANHE) exports from LANDdt: the `Record-Tab` sheet of its xlsx (or the same table as
//! CSV), `TestTime/Sec`, `Current/mA` (or `/A`, `/uA`), `Voltage/V`, `Cycle-Index`, `Step-Index`;
//! current + = charge (`Step-State` writes `R`, `RateC`, `RateD`…, which ingest does not need:
//! the voltage confirms the sign). `AuxTemp/dC.` is the auxiliary thermocouple in °C, `-` where
//! the channel has none.

use std::path::Path;

use super::column_map::{Conversion as U, Sign};
use super::csv_stream::DelimitedReader;
use super::layout::{ColumnSpec, HeaderAt, Layout, SignRule};
use super::{CyclerReader, Format};
use crate::Result;

pub(super) fn layout() -> Layout {
    Layout {
        format: Format::Landt,
        delimiters: vec![b',', b'\t', b';'],
        header: HeaderAt::Search,
        time: ColumnSpec::new("time", &[("TestTime/Sec", U::IDENTITY), ("TestTime/s", U::IDENTITY), ("TestTime/h", U::HOURS)]),
        time_may_be_clock: false,
        current: ColumnSpec::new("current", &[("Current/mA", U::MILLI), ("Current/A", U::IDENTITY), ("Current/uA", U::MICRO)]),
        voltage: ColumnSpec::new("voltage", &[("Voltage/V", U::IDENTITY), ("Voltage/mV", U::MILLI)]),
        temperature: Some(ColumnSpec::new("temperature", &[("AuxTemp/dC.", U::IDENTITY), ("AuxTemp/°C", U::IDENTITY)])),
        cycle: Some(ColumnSpec::unitless("cycle", &["Cycle-Index"])),
        step: Some(ColumnSpec::unitless("step", &["Step-Index"])),
        sign: SignRule::Fixed(Sign::ChargePositive),
    }
}

pub(super) fn open(path: &Path) -> Result<Box<dyn CyclerReader>> {
    Ok(Box::new(DelimitedReader::open(path, &layout())?))
}
