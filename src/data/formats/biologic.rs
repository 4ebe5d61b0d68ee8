//! BioLogic EC-Lab text exports: semicolon- or tab-separated, units in the header (`time/s`,
//! `I/mA`, `Ecell/V`), maybe an EC-Lab header block or a leading unnamed index column. Tools
//! that re-save them may write `time/s` as date-times, which become seconds since the first row.
//! The header's `Battery capacity` line gives the nominal capacity.

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
        // Averaged quantities are written `<I>/mA` or, by some EC-Lab versions, `<I/mA>`.
        current: ColumnSpec::new("current", &[("I/mA", U::MILLI), ("<I>/mA", U::MILLI), ("<I/mA>", U::MILLI), ("I/A", U::IDENTITY)]),
        voltage: ColumnSpec::new(
            "voltage",
            &[("Ecell/V", U::IDENTITY), ("Ewe/V", U::IDENTITY), ("<Ecell>/V", U::IDENTITY), ("<Ewe>/V", U::IDENTITY), ("<Ecell/V>", U::IDENTITY), ("<Ewe/V>", U::IDENTITY)],
        ),
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
    let mut reader = DelimitedReader::open(path, &layout())?;
    reader.metadata_mut().nominal_capacity_ah = reader.preamble().iter().find_map(|line| battery_capacity_ah(line));
    Ok(Box::new(reader))
}

/// EC-Lab's header line `Battery capacity : 5.452 mA.h` (A.h, mA.h or µA.h, maybe a decimal
/// comma): the capacity its C-rates count. Zero is EC-Lab's "not set".
fn battery_capacity_ah(line: &str) -> Option<f64> {
    let value = line.trim().strip_prefix("Battery capacity")?.trim_start().strip_prefix(':')?;
    let (number, unit) = value.trim().split_once(' ')?;
    let number: f64 = number.replace(',', ".").parse().ok()?;
    let scale = match unit.trim() {
        "A.h" => 1.0,
        "mA.h" => 1e-3,
        // µ (micro sign or Greek mu), or the replacement character a re-saved file left.
        u if u.ends_with("A.h") && u.chars().count() == 4 && matches!(u.chars().next(), Some('µ' | 'μ' | '\u{FFFD}')) => 1e-6,
        _ => return None,
    };
    Some(number * scale).filter(|c| c.is_finite() && *c > 0.0)
}

#[cfg(test)]
mod tests {
    use super::battery_capacity_ah;

    #[test]
    fn battery_capacity_lines_read_in_ampere_hours() {
        let close = |line: &str, ah: f64| battery_capacity_ah(line).is_some_and(|c| (c / ah - 1.0).abs() < 1e-12);
        assert!(close("Battery capacity : 5.452 mA.h", 5.452e-3));
        assert!(close("Battery capacity : 1,300 A.h", 1.3));
        assert!(close("Battery capacity : 120.000 µA.h", 120e-6));
        assert!(close("Battery capacity : 168.128 \u{FFFD}A.h", 168.128e-6));
        assert_eq!(battery_capacity_ah("Battery capacity : 0.000 A.h"), None, "not set");
        assert_eq!(battery_capacity_ah("Mass of active material : 0.790 mg"), None);
    }
}
