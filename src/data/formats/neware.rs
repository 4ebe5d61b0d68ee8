//! Neware BTS record exports (CSV): `Total Time` or `Cumulative Time` as elapsed `H:MM:SS` (hours
//! past 24, days as `1-02:03:04`), `Current(A)` or `Current(mA)`, `Voltage(V)`, and `Step Type`
//! (`CC Chg`, `CC DChg`, `Rest`…), which signs the current: some exports write it unsigned.
//! `Time` is the step's own clock and is not read. BTS 7's `Detail_…` sheet names them
//! `Absolute Time` (a date-time), `Cur(mA)`, `Cycle`, `Step` and `Status` (`CCCV_DChg`); its
//! `Relative Time` is the step's clock.

use std::path::Path;

use super::column_map::Conversion as U;
use super::csv_stream::DelimitedReader;
use super::layout::{ColumnSpec, HeaderAt, Layout, SignRule};
use super::{CyclerReader, Format};
use crate::Result;

pub(super) fn layout() -> Layout {
    // Step types compare as column names do: `CC_DChg` (BTS 7) is `CC DChg` (BTS 8).
    let types = |modes: &[&str], side: &str| modes.iter().map(|m| format!("{m} {side}")).collect();
    let modes = ["CC", "CV", "CCCV", "CC-CV", "CP", "CR"];
    Layout {
        format: Format::Neware,
        delimiters: vec![b',', b'\t', b';'],
        header: HeaderAt::Search,
        time: ColumnSpec::new("time", &[("Total Time", U::IDENTITY), ("Cumulative Time", U::IDENTITY), ("Absolute Time", U::IDENTITY)]),
        time_may_be_clock: true,
        current: ColumnSpec::new("current", &[("Current(A)", U::IDENTITY), ("Current(mA)", U::MILLI), ("Cur(mA)", U::MILLI)]),
        voltage: ColumnSpec::new("voltage", &[("Voltage(V)", U::IDENTITY)]),
        temperature: Some(ColumnSpec::new("temperature", &[("T1(°C)", U::IDENTITY), ("T1(℃)", U::IDENTITY), ("Temperature(°C)", U::IDENTITY)])),
        cycle: Some(ColumnSpec::unitless("cycle", &["Cycle Index", "Cycle ID", "Cycle"])),
        step: Some(ColumnSpec::unitless("step", &["Step Index", "Step ID", "Step"])),
        sign: SignRule::State { column: ColumnSpec::unitless("state", &["Step Type", "Status"]), charge: types(&modes, "Chg"), discharge: types(&modes, "DChg") },
    }
}

pub(super) fn open(path: &Path) -> Result<Box<dyn CyclerReader>> {
    Ok(Box::new(DelimitedReader::open(path, &layout())?))
}
