//! Maccor text exports (`.022`, `.034`…): a free-text first line, then a tab-separated header
//! (`Rec#`, `Cyc#`, `Step`, `Test (Sec)`, `Amps`, `Volts`, `State`…), or the same comma-separated
//! when exported as CSV. `State` C/D/R gives the direction, since some exports write `Amps` unsigned.

use std::path::Path;

use super::column_map::Conversion as U;
use super::csv_stream::DelimitedReader;
use super::layout::{ColumnSpec, HeaderAt, Layout, SignRule};
use super::{CyclerReader, Format};
use crate::Result;

pub(super) fn layout() -> Layout {
    Layout {
        format: Format::Maccor,
        delimiters: vec![b'\t', b','],
        header: HeaderAt::Search,
        // `TestTime` holds `0d 00:01:00` where the client exports elapsed time as text.
        time: ColumnSpec::new("time", &[("Test (Sec)", U::IDENTITY), ("Test Time (Sec)", U::IDENTITY), ("Test (Min)", U::MINUTES), ("Test (Hr)", U::HOURS), ("TestTime", U::IDENTITY)]),
        time_may_be_clock: false,
        current: ColumnSpec::new("current", &[("Amps", U::IDENTITY), ("Current", U::IDENTITY), ("Current (A)", U::IDENTITY), ("mAmps", U::MILLI)]),
        voltage: ColumnSpec::new("voltage", &[("Volts", U::IDENTITY), ("Voltage", U::IDENTITY), ("Voltage (V)", U::IDENTITY)]),
        temperature: Some(ColumnSpec::new("temperature", &[("Temp 1", U::IDENTITY), ("Temperature", U::IDENTITY)])),
        cycle: Some(ColumnSpec::unitless("cycle", &["Cyc#", "Cycle", "Cycle C"])),
        step: Some(ColumnSpec::unitless("step", &["Step"])),
        sign: SignRule::State { column: ColumnSpec::unitless("state", &["State", "MD"]), charge: vec!["C".into()], discharge: vec!["D".into()] },
    }
}

pub(super) fn open(path: &Path) -> Result<Box<dyn CyclerReader>> {
    let mut reader = DelimitedReader::open(path, &layout())?;
    if let Some(first) = reader.preamble().first().cloned() {
        let metadata = reader.metadata_mut();
        metadata.protocol = procedure(&first);
        metadata.extra.insert("maccor_header".into(), serde_json::Value::String(first.trim().to_owned()));
    }
    Ok(Box::new(reader))
}

/// The procedure (Maccor's protocol file) named in the free-text first line.
fn procedure(header: &str) -> Option<String> {
    let rest = header.split_once("Procedure:")?.1.trim_start();
    let name = rest.split(['\t', ' ']).next()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}
