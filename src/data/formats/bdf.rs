//! The Battery Data Alliance's Battery Data Format (BDF) CSV: machine-readable names
//! (`test_time_second`, `current_ampere`, `voltage_volt`…) or labels with units (`Test Time / s`,
//! `Current / A`, `Voltage / V`). Its charge and discharge capacities settle the current's sign
//! (BatMo writes discharge as positive).

use std::path::Path;

use super::column_map::Conversion as U;
use super::csv_stream::DelimitedReader;
use super::layout::{ColumnSpec, HeaderAt, Layout, SignRule};
use super::{CyclerReader, Format};
use crate::Result;

pub(super) fn layout() -> Layout {
    Layout {
        format: Format::Bdf,
        delimiters: vec![b',', b';', b'\t'],
        header: HeaderAt::Search,
        time: ColumnSpec::new(
            "time",
            &[("test_time_second", U::IDENTITY), ("Test Time / s", U::IDENTITY), ("Test Time / min", U::MINUTES), ("Test Time / h", U::HOURS)],
        ),
        time_may_be_clock: false,
        current: ColumnSpec::new("current", &[("current_ampere", U::IDENTITY), ("Current / A", U::IDENTITY), ("Current / mA", U::MILLI)]),
        voltage: ColumnSpec::new("voltage", &[("voltage_volt", U::IDENTITY), ("Voltage / V", U::IDENTITY)]),
        // The cell's own temperature where the file has one, else the chamber's.
        temperature: Some(ColumnSpec::new(
            "temperature",
            &[
                ("temperature_t1_celsius", U::IDENTITY),
                ("Temperature T1 / degC", U::IDENTITY),
                ("surface_temperature_celsius", U::IDENTITY),
                ("ambient_temperature_celsius", U::IDENTITY),
                ("Ambient Temperature / degC", U::IDENTITY),
            ],
        )),
        cycle: Some(ColumnSpec::unitless("cycle", &["cycle_count", "Cycle Count / 1"])),
        step: Some(ColumnSpec::unitless("step", &["step_index", "Step Index / 1"])),
        sign: SignRule::Capacity {
            charge: ColumnSpec::unitless("charge capacity", &["charging_capacity_ah", "Charging Capacity / Ah", "Charge Capacity / Ah"]),
            discharge: ColumnSpec::unitless(
                "discharge capacity",
                &["discharging_capacity_ah", "Discharging Capacity / Ah", "Discharge Capacity / Ah"],
            ),
        },
    }
}

pub(super) fn open(path: &Path) -> Result<Box<dyn CyclerReader>> {
    Ok(Box::new(DelimitedReader::open(path, &layout())?))
}
