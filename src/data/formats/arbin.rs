//! Arbin CSV exports (`Test_Time`, `Current`, `Voltage`, `Step_Index`, `Cycle_Index`…), with the
//! `<name>_Metadata.csv` that Arbin's exporter (and BEEP) writes beside them. Saved again by a
//! European spreadsheet they come semicolon-separated with decimal commas, which read the same.

use std::path::Path;

use super::column_map::Conversion as U;
use super::csv_stream::DelimitedReader;
use super::layout::{ColumnSpec, HeaderAt, Layout, SignRule};
use super::text::{Fields, TextLines};
use super::{CyclerReader, Format};
use crate::Result;

pub(super) fn layout() -> Layout {
    Layout {
        format: Format::Arbin,
        delimiters: vec![b',', b';'],
        header: HeaderAt::Search,
        time: ColumnSpec::new("time", &[("Test_Time", U::IDENTITY), ("Test_Time(s)", U::IDENTITY), ("Test Time (s)", U::IDENTITY)]),
        time_may_be_clock: false,
        current: ColumnSpec::new("current", &[("Current", U::IDENTITY), ("Current(A)", U::IDENTITY), ("Current(mA)", U::MILLI)]),
        voltage: ColumnSpec::new("voltage", &[("Voltage", U::IDENTITY), ("Voltage(V)", U::IDENTITY), ("Voltage (V)", U::IDENTITY)]),
        temperature: Some(ColumnSpec::new(
            "temperature",
            &[("Temperature", U::IDENTITY), ("Temperature(C)", U::IDENTITY), ("Aux_Temperature_1(C)", U::IDENTITY), ("Aux_Temperature_1 (C)", U::IDENTITY)],
        )),
        cycle: Some(ColumnSpec::unitless("cycle", &["Cycle_Index"])),
        step: Some(ColumnSpec::unitless("step", &["Step_Index"])),
        sign: SignRule::Capacity {
            // Only whether a capacity rises counts, so its unit does not matter.
            charge: ColumnSpec::unitless("charge capacity", &["Charge_Capacity", "Charge_Capacity(Ah)", "Charge_Capacity(mAh)"]),
            discharge: ColumnSpec::unitless("discharge capacity", &["Discharge_Capacity", "Discharge_Capacity(Ah)", "Discharge_Capacity(mAh)"]),
        },
    }
}

pub(super) fn open(path: &Path) -> Result<Box<dyn CyclerReader>> {
    let mut reader = DelimitedReader::open(path, &layout())?;
    if let Some(test) = read_metadata_sidecar(path)? {
        let metadata = reader.metadata_mut();
        // The schedule is what Arbin calls the protocol; keep its file name, not the lab's folder.
        metadata.protocol = test.get("schedule_file_name").and_then(|v| v.as_str()).map(|s| s.rsplit(['\\', '/']).next().unwrap_or(s).to_owned());
        metadata.extra.insert("arbin_metadata".into(), serde_json::Value::Object(test));
    }
    Ok(Box::new(reader))
}

/// The first test described in `<stem>_Metadata.csv`, keys lower-cased, empty values left out.
fn read_metadata_sidecar(path: &Path) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { return Ok(None) };
    let sidecar = path.with_file_name(format!("{stem}_Metadata.csv"));
    if !sidecar.is_file() {
        return Ok(None);
    }
    let mut lines = TextLines::open(&sidecar)?;
    let mut fields = Fields::default();
    let Some((_, header)) = lines.next_line()? else { return Ok(None) };
    fields.split(header, b',');
    let keys = fields.to_strings();
    let Some((_, row)) = lines.next_line()? else { return Ok(None) };
    fields.split(row, b',');
    let test = keys
        .iter()
        .enumerate()
        .filter_map(|(i, key)| Some((key.to_lowercase(), fields.get(i)?.to_owned())))
        .filter(|(key, value)| !key.is_empty() && !value.is_empty())
        .map(|(key, value)| (key, serde_json::Value::String(value)))
        .collect();
    Ok(Some(test))
}
