//! PEC SBT exports (CSV): `Key:,Value` lines and a results check above the column line, which
//! names `Total Time (Seconds)` with `Voltage (mV)` and `Current (mA)`, or in newer exports
//! `Total Time (Hours in hh:mm:ss.xxx)` with `Voltage (V)` and `Current (A)`; discharge negative.
//! `TestRegime CellSize:,1500 mAh` above it gives the nominal capacity.

use std::path::Path;

use super::column_map::Conversion as U;
use super::csv_stream::DelimitedReader;
use super::layout::{ColumnSpec, HeaderAt, Layout, SignRule};
use super::{CyclerReader, Format};
use crate::Result;

pub(super) fn layout() -> Layout {
    Layout {
        format: Format::Pec,
        delimiters: vec![b',', b';', b'\t'],
        header: HeaderAt::Search,
        time: ColumnSpec::new("time", &[("Total Time (Seconds)", U::IDENTITY), ("Total Time (Hours in hh:mm:ss.xxx)", U::IDENTITY)]),
        time_may_be_clock: false,
        current: ColumnSpec::new("current", &[("Current (mA)", U::MILLI), ("Current (A)", U::IDENTITY)]),
        voltage: ColumnSpec::new("voltage", &[("Voltage (mV)", U::MILLI), ("Voltage (V)", U::IDENTITY)]),
        temperature: Some(ColumnSpec::new("temperature", &[("Cell surface temperature (°C)", U::IDENTITY), ("Temp (°C)", U::IDENTITY)])),
        cycle: Some(ColumnSpec::unitless("cycle", &["Cycle"])),
        step: Some(ColumnSpec::unitless("step", &["Step"])),
        sign: SignRule::Capacity {
            charge: ColumnSpec::unitless("charge capacity", &["Charge Capacity (mAh)", "Charge Capacity (Ah)"]),
            discharge: ColumnSpec::unitless("discharge capacity", &["Discharge Capacity (mAh)", "Discharge Capacity (Ah)"]),
        },
    }
}

pub(super) fn open(path: &Path) -> Result<Box<dyn CyclerReader>> {
    let mut reader = DelimitedReader::open(path, &layout())?;
    reader.metadata_mut().nominal_capacity_ah = reader.preamble().iter().find_map(|line| cell_size_ah(line));
    Ok(Box::new(reader))
}

/// The header line `TestRegime CellSize:,1500 mAh` (`Default cellsize` where none was set).
fn cell_size_ah(line: &str) -> Option<f64> {
    let (key, value) = line.split_once(',')?;
    if !key.trim().ends_with("CellSize:") {
        return None;
    }
    let (number, unit) = value.trim().split_once(' ')?;
    let scale = match unit.trim() {
        "mAh" => 1e-3,
        "Ah" => 1.0,
        _ => return None,
    };
    number.parse::<f64>().ok().map(|n| n * scale).filter(|c| c.is_finite() && *c > 0.0)
}
