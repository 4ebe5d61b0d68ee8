//! Maccor text exports (`.022`, `.034`…): a free-text first line, then a tab-separated header
//! (`Rec#`, `Cyc#`, `Step`, `Test (Sec)`, `Amps`, `Volts`, `State`…), or the same comma-separated
//! when exported as CSV. `State` C/D/R gives the direction, since some exports write `Amps` unsigned.
//! MIMS Client's export with a header block names them `TestTime`, `Current [A]`, `Voltage [V]`
//! and `Md`, its `TestTime` a number in the unit chosen at export, which its `DPt Time` clock tells.

use std::path::Path;

use chrono::NaiveDateTime;

use super::column_map::Conversion as U;
use super::csv_stream::{DelimitedReader, HEADER_SEARCH_LINES};
use super::layout::{header_key, ColumnSpec, HeaderAt, Layout, SignRule};
use super::text::{Fields, TextLines};
use super::{CyclerReader, Format};
use crate::Result;

pub(super) fn layout() -> Layout {
    Layout {
        format: Format::Maccor,
        delimiters: vec![b'\t', b','],
        header: HeaderAt::Search,
        // `TestTime` holds `0d 00:01:00` where the client exports elapsed time as text, else a
        // number whose unit `open` reads off the `DPt Time` clock.
        time: ColumnSpec::new("time", &[("Test (Sec)", U::IDENTITY), ("Test Time (Sec)", U::IDENTITY), ("Test (Min)", U::MINUTES), ("Test (Hr)", U::HOURS), ("TestTime", U::IDENTITY)]),
        time_may_be_clock: false,
        current: ColumnSpec::new("current", &[("Amps", U::IDENTITY), ("Current", U::IDENTITY), ("Current (A)", U::IDENTITY), ("Current [A]", U::IDENTITY), ("mAmps", U::MILLI)]),
        voltage: ColumnSpec::new("voltage", &[("Volts", U::IDENTITY), ("Voltage", U::IDENTITY), ("Voltage (V)", U::IDENTITY), ("Voltage [V]", U::IDENTITY)]),
        temperature: Some(ColumnSpec::new("temperature", &[("Temp 1", U::IDENTITY), ("Temperature", U::IDENTITY)])),
        cycle: Some(ColumnSpec::unitless("cycle", &["Cyc#", "Cycle", "Cycle C"])),
        step: Some(ColumnSpec::unitless("step", &["Step"])),
        sign: SignRule::State { column: ColumnSpec::unitless("state", &["State", "MD"]), charge: vec!["C".into()], discharge: vec!["D".into()] },
    }
}

pub(super) fn open(path: &Path) -> Result<Box<dyn CyclerReader>> {
    let mut layout = layout();
    let unit = test_time_unit(path)?;
    if let Some((scale, _)) = unit {
        layout.time.aliases.iter_mut().filter(|a| a.name == "TestTime").for_each(|a| a.unit = scale);
    }
    let mut reader = DelimitedReader::open(path, &layout)?;
    if let Some((_, name)) = unit.filter(|(scale, _)| *scale != U::IDENTITY) {
        reader.metadata_mut().warnings.push(format!("TestTime read in {name}: its span over the first rows matches the DPt Time clock's in {name}"));
    }
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

/// The units a numeric `TestTime` may be in.
const TEST_TIME_UNITS: [(U, &str); 3] = [(U::IDENTITY, "seconds"), (U::MINUTES, "minutes"), (U::HOURS, "hours")];
/// The clock span over which `TestTime` is compared with `DPt Time` (its seconds are whole).
const UNIT_EVIDENCE_S: f64 = 3600.0;
/// How far the two spans may differ once scaled.
const UNIT_TOLERANCE: f64 = 0.02;

/// The unit of a numeric `TestTime` beside a `DPt Time` clock: the one whose scale brings the
/// TestTime span of the first rows (up to an hour of clock) within 2 % of the clock's. `None`
/// where the file has no such pair of columns, writes TestTime as elapsed text (`0d 00:01:00`),
/// or no unit fits (the default, seconds, then stands).
fn test_time_unit(path: &Path) -> Result<Option<(U, &'static str)>> {
    let mut lines = TextLines::open(path)?;
    let mut fields = Fields::default();
    let mut columns: Option<(usize, usize, u8)> = None;
    let mut span: Option<((f64, NaiveDateTime), (f64, NaiveDateTime))> = None;
    while let Some((number, text)) = lines.next_line()? {
        let Some((time, clock, delimiter)) = columns else {
            if number > HEADER_SEARCH_LINES {
                return Ok(None);
            }
            for delimiter in [b'\t', b','] {
                fields.split(text, delimiter);
                let find = |name: &str| (0..fields.len()).find(|&i| fields.get(i).is_some_and(|f| header_key(f) == header_key(name)));
                if let (Some(time), Some(clock)) = (find("TestTime"), find("DPt Time")) {
                    columns = Some((time, clock, delimiter));
                }
            }
            continue;
        };
        fields.split(text, delimiter);
        let test_time = fields.get(time).and_then(|t| t.parse::<f64>().ok());
        let stamp = fields.get(clock).and_then(|c| ["%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S"].iter().find_map(|f| NaiveDateTime::parse_from_str(c, f).ok()));
        let (Some(test_time), Some(stamp)) = (test_time, stamp) else { continue };
        let first = span.map_or((test_time, stamp), |(first, _)| first);
        span = Some((first, (test_time, stamp)));
        if (stamp - first.1).num_seconds() as f64 >= UNIT_EVIDENCE_S {
            break;
        }
    }
    let Some(((t0, c0), (t1, c1))) = span else { return Ok(None) };
    let clock_s = (c1 - c0).num_seconds() as f64;
    if !(clock_s >= 60.0 && t1 > t0) {
        return Ok(None);
    }
    Ok(TEST_TIME_UNITS.into_iter().find(|(unit, _)| ((t1 - t0) * unit.scale / clock_s - 1.0).abs() <= UNIT_TOLERANCE))
}
