//! Units, sign conventions and the TOML column map that lets any delimited text file be read.
//!
//! ```toml
//! delimiter = ";"          # one character; "\t" for tab
//! header_line = 3          # 1-based line holding the column names; data starts on the next line…
//! skip_after_header = 1    # …or this many lines later (a units row under the names)
//! sign = "discharge_positive"
//! nominal_capacity_ah = 2.5
//!
//! [columns]
//! time = "Elapsed"
//! current = "I"
//! voltage = "U"
//! temperature = "T_cell"   # optional, as are cycle, step and state
//! state = "Mode"           # a charge/discharge column: the current's sign comes from it
//!
//! [state_values]           # with `state`: what it writes while charging and discharging
//! charge = ["CHG", "CCCV_CHG"]
//! discharge = ["DCHG"]
//!
//! [units]
//! time = "h"               # s | min | h
//! current = "mA"           # A | mA
//! voltage = "V"            # V | mV
//! temperature = "K"        # C | K
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::csv_stream::DelimitedReader;
use super::layout::{ColumnSpec, HeaderAt, Layout, SignRule};
use super::{CyclerReader, Format};
use crate::{Error, Result};

/// A linear map from a file's unit to the canonical one: canonical = value · scale + offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Conversion {
    pub scale: f64,
    pub offset: f64,
}

impl Conversion {
    pub const IDENTITY: Conversion = Conversion { scale: 1.0, offset: 0.0 };
    pub const MILLI: Conversion = Conversion { scale: 1e-3, offset: 0.0 };
    pub const MICRO: Conversion = Conversion { scale: 1e-6, offset: 0.0 };
    pub const MINUTES: Conversion = Conversion { scale: 60.0, offset: 0.0 };
    pub const HOURS: Conversion = Conversion { scale: 3600.0, offset: 0.0 };
    pub const KELVIN: Conversion = Conversion { scale: 1.0, offset: -273.15 };

    pub fn apply(self, value: f64) -> f64 {
        value * self.scale + self.offset
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TimeUnit {
    #[default]
    #[serde(rename = "s")]
    Seconds,
    #[serde(rename = "min")]
    Minutes,
    #[serde(rename = "h")]
    Hours,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CurrentUnit {
    #[default]
    #[serde(rename = "A")]
    Amperes,
    #[serde(rename = "mA")]
    Milliamperes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum VoltageUnit {
    #[default]
    #[serde(rename = "V")]
    Volts,
    #[serde(rename = "mV")]
    Millivolts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TemperatureUnit {
    #[default]
    #[serde(rename = "C")]
    Celsius,
    #[serde(rename = "K")]
    Kelvin,
}

impl From<TimeUnit> for Conversion {
    fn from(unit: TimeUnit) -> Self {
        match unit {
            TimeUnit::Seconds => Conversion::IDENTITY,
            TimeUnit::Minutes => Conversion::MINUTES,
            TimeUnit::Hours => Conversion::HOURS,
        }
    }
}

impl From<CurrentUnit> for Conversion {
    fn from(unit: CurrentUnit) -> Self {
        match unit {
            CurrentUnit::Amperes => Conversion::IDENTITY,
            CurrentUnit::Milliamperes => Conversion::MILLI,
        }
    }
}

impl From<VoltageUnit> for Conversion {
    fn from(unit: VoltageUnit) -> Self {
        match unit {
            VoltageUnit::Volts => Conversion::IDENTITY,
            VoltageUnit::Millivolts => Conversion::MILLI,
        }
    }
}

impl From<TemperatureUnit> for Conversion {
    fn from(unit: TemperatureUnit) -> Self {
        match unit {
            TemperatureUnit::Celsius => Conversion::IDENTITY,
            TemperatureUnit::Kelvin => Conversion::KELVIN,
        }
    }
}

/// Which direction of current a file writes as positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sign {
    /// Positive while charging (the canonical convention).
    #[default]
    ChargePositive,
    /// Positive while discharging; the reader negates the current.
    DischargePositive,
}

/// The header names of a mapped file's columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappedColumns {
    pub time: String,
    pub current: String,
    pub voltage: String,
    pub temperature: Option<String>,
    pub cycle: Option<String>,
    pub step: Option<String>,
    /// Says charging or discharging on each row: charge rows get +|I|, discharge rows −|I|
    /// (the current may be written unsigned), other rows keep theirs.
    pub state: Option<String>,
}

/// The values of the state column on charge and discharge rows (compared case aside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateValues {
    pub charge: Vec<String>,
    pub discharge: Vec<String>,
}

/// The units of a mapped file's columns (canonical units where left out).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappedUnits {
    pub time: TimeUnit,
    pub current: CurrentUnit,
    pub voltage: VoltageUnit,
    pub temperature: TemperatureUnit,
}

/// How to read a delimited text file no vendor reader knows (`Format::Mapped`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMap {
    /// Field separator, one ASCII character.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// 1-based line holding the column names; data rows follow it.
    #[serde(default = "default_header_line")]
    pub header_line: u64,
    /// Lines between the column names and the data to skip (a units row under the header: 1).
    #[serde(default)]
    pub skip_after_header: u64,
    pub columns: MappedColumns,
    #[serde(default)]
    pub units: MappedUnits,
    #[serde(default)]
    pub sign: Sign,
    /// Needed with `columns.state`.
    pub state_values: Option<StateValues>,
    pub nominal_capacity_ah: Option<f64>,
}

fn default_delimiter() -> char {
    ','
}

fn default_header_line() -> u64 {
    1
}

impl ColumnMap {
    /// Parses and checks a column map from TOML text; `origin` names it in error messages.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self> {
        let map: ColumnMap = toml::from_str(text).map_err(|e| Error::in_file(origin, format!("bad column map: {e}")))?;
        map.validate().map_err(|msg| Error::in_file(origin, msg))?;
        Ok(map)
    }

    /// Reads a column map from a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml_str(&text, path)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if !self.delimiter.is_ascii() || self.delimiter == '"' || self.delimiter == '\n' {
            return Err(format!("delimiter must be one ASCII character other than a quote or newline, got {:?}", self.delimiter));
        }
        if self.header_line == 0 {
            return Err("header_line is 1-based; 0 is not a line".into());
        }
        match (&self.columns.state, &self.state_values) {
            (Some(_), None) => return Err("columns.state needs [state_values] with the values it writes while charging and discharging, e.g. charge = [\"C\"], discharge = [\"D\"]".into()),
            (None, Some(_)) => return Err("[state_values] without columns.state: name the column that holds them".into()),
            (Some(_), Some(v)) if v.charge.is_empty() || v.discharge.is_empty() => return Err("state_values.charge and state_values.discharge each need at least one value".into()),
            (Some(_), Some(_)) if self.sign == Sign::DischargePositive => return Err("sign = \"discharge_positive\" and columns.state both say how to sign the current; keep one".into()),
            _ => {}
        }
        if let Some(c) = self.nominal_capacity_ah {
            if !(c.is_finite() && c > 0.0) {
                return Err(format!("nominal_capacity_ah must be a positive number, got {c}"));
            }
        }
        Ok(())
    }
}

impl ColumnMap {
    /// The generic reader's description of a mapped file.
    pub(super) fn layout(&self) -> Layout {
        let column = |role, name: &str, unit: Conversion| ColumnSpec::new(role, &[(name, unit)]);
        let counter = |role, name: &Option<String>| name.as_deref().map(|n| ColumnSpec::unitless(role, &[n]));
        let columns = &self.columns;
        Layout {
            format: Format::Mapped,
            delimiters: vec![self.delimiter as u8],
            header: HeaderAt::Line { line: self.header_line, skip: self.skip_after_header },
            time: column("time", &columns.time, self.units.time.into()),
            // A time column of date-times (Neware's `Realtime`) counts seconds from the first row.
            time_may_be_clock: true,
            current: column("current", &columns.current, self.units.current.into()),
            voltage: column("voltage", &columns.voltage, self.units.voltage.into()),
            temperature: columns.temperature.as_deref().map(|n| column("temperature", n, self.units.temperature.into())),
            cycle: counter("cycle", &columns.cycle),
            step: counter("step", &columns.step),
            sign: match (&columns.state, &self.state_values) {
                (Some(name), Some(values)) => SignRule::State { column: ColumnSpec::unitless("state", &[name]), charge: values.charge.clone(), discharge: values.discharge.clone() },
                _ => SignRule::Fixed(self.sign),
            },
        }
    }
}

/// Opens a delimited file through a column map.
pub(super) fn open(path: &Path, map: &ColumnMap) -> Result<Box<dyn CyclerReader>> {
    let mut reader = DelimitedReader::open(path, &map.layout())?;
    reader.metadata_mut().nominal_capacity_ah = map.nominal_capacity_ah;
    Ok(Box::new(reader))
}
