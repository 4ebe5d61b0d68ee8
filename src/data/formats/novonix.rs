//! Novonix CSV: `[Summary]`, `[Protocol]` and `[Data]` sections; the data header and rows may be
//! quoted as whole lines; run time in hours. The summary states the cell capacity.

use std::path::Path;

use super::column_map::{Conversion as U, Sign};
use super::csv_stream::DelimitedReader;
use super::layout::{ColumnSpec, HeaderAt, Layout, SignRule};
use super::{CyclerReader, Format};
use crate::data::raw::SourceMetadata;
use crate::Result;

pub(super) fn layout() -> Layout {
    Layout {
        format: Format::Novonix,
        delimiters: vec![b','],
        header: HeaderAt::Search,
        time: ColumnSpec::new("time", &[("Run Time (h)", U::HOURS)]),
        time_may_be_clock: false,
        current: ColumnSpec::new("current", &[("Current (A)", U::IDENTITY)]),
        voltage: ColumnSpec::new("voltage", &[("Potential (V)", U::IDENTITY)]),
        temperature: Some(ColumnSpec::new("temperature", &[("Temperature (°C)", U::IDENTITY)])),
        cycle: Some(ColumnSpec::unitless("cycle", &["Cycle Number"])),
        step: Some(ColumnSpec::unitless("step", &["Step Number"])),
        // Novonix writes charge current as positive and has no charge-capacity column to check it
        // against (`Capacity (Ah)` counts up in either direction).
        sign: SignRule::Fixed(Sign::ChargePositive),
    }
}

pub(super) fn open(path: &Path) -> Result<Box<dyn CyclerReader>> {
    let mut reader = DelimitedReader::open(path, &layout())?;
    let summary = summary(reader.preamble());
    apply_summary(&summary, reader.metadata_mut());
    Ok(Box::new(reader))
}

/// The `key: value` lines between `[Summary]` and `[End Summary]`.
fn summary(preamble: &[String]) -> serde_json::Map<String, serde_json::Value> {
    preamble
        .iter()
        .map(|line| line.trim().trim_matches('"').trim())
        .skip_while(|line| *line != "[Summary]")
        .take_while(|line| *line != "[End Summary]")
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim()))
        .filter(|(key, value)| !key.is_empty() && !value.is_empty())
        .map(|(key, value)| (key, serde_json::Value::String(value.to_owned())))
        .collect()
}

fn apply_summary(summary: &serde_json::Map<String, serde_json::Value>, metadata: &mut SourceMetadata) {
    let text = |key: &str| summary.get(key).and_then(|v| v.as_str());
    metadata.nominal_capacity_ah = text("Capacity (Ah)").and_then(|s| s.parse().ok()).filter(|c: &f64| *c > 0.0);
    metadata.protocol = text("Protocol").map(str::to_owned);
    metadata.extra.insert("novonix_summary".into(), serde_json::Value::Object(summary.clone()));
}
