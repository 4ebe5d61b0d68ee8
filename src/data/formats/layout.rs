//! How a delimited vendor format names its columns, in which units, where its header is and how
//! its current sign is settled: the table that drives the one generic reader.

use super::column_map::{Conversion, Sign};
use super::text::Fields;
use super::Format;

/// One header name a column may have, and the unit its values are in.
#[derive(Debug, Clone)]
pub(super) struct Alias {
    pub name: String,
    pub unit: Conversion,
}

/// A quantity (time, current…) and the header names it goes by in one format.
#[derive(Debug, Clone)]
pub(super) struct ColumnSpec {
    /// The quantity, for messages ("time", "current").
    pub role: &'static str,
    pub aliases: Vec<Alias>,
}

impl ColumnSpec {
    pub fn new(role: &'static str, aliases: &[(&str, Conversion)]) -> Self {
        let aliases = aliases.iter().map(|&(name, unit)| Alias { name: name.to_owned(), unit }).collect();
        ColumnSpec { role, aliases }
    }

    /// A column whose values carry no unit (counters, states, capacities used only for their trend).
    pub fn unitless(role: &'static str, names: &[&str]) -> Self {
        let aliases: Vec<_> = names.iter().map(|&name| (name, Conversion::IDENTITY)).collect();
        Self::new(role, &aliases)
    }

    /// The first alias found in a header, names compared by [`header_key`].
    pub fn find(&self, header: &[String]) -> Option<Resolved> {
        self.aliases.iter().find_map(|alias| {
            let key = header_key(&alias.name);
            let index = header.iter().position(|h| header_key(h) == key)?;
            Some(Resolved { index, unit: alias.unit, name: header[index].clone() })
        })
    }

    pub fn expected(&self) -> String {
        self.aliases.iter().map(|a| format!("'{}'", a.name)).collect::<Vec<_>>().join(", ")
    }
}

/// A column name as compared: case, spaces and underscores aside. One exporter's versions differ
/// in just these (Arbin's MITS Pro 8 writes `Cycle Index` and `Test Time (s)` where older exports
/// write `Cycle_Index` and `Test_Time(s)`).
pub(super) fn header_key(name: &str) -> String {
    key_chars(name).collect()
}

/// [`header_key`]'s characters, for comparing without allocating (a state cell on every row). A
/// replacement character is the degree sign a re-saved file lost (`Temperature/\u{FFFD}C`).
pub(super) fn key_chars(name: &str) -> impl Iterator<Item = char> + '_ {
    name.chars().filter(|c| !c.is_whitespace() && *c != '_').map(|c| if c == '\u{FFFD}' { '°' } else { c }).flat_map(char::to_lowercase)
}

/// Where the column header is.
#[derive(Debug, Clone, Copy)]
pub(super) enum HeaderAt {
    /// The first line, among the first `HEADER_SEARCH_LINES`, naming time, current and voltage.
    Search,
    /// This 1-based line (column maps say where it is), and how many lines under it to skip
    /// before the data (a units row).
    Line { line: u64, skip: u64 },
}

/// How the reader settles which current sign the file uses.
#[derive(Debug, Clone)]
pub(super) enum SignRule {
    /// The format (or the user) states it.
    Fixed(Sign),
    /// Charge capacity rises while charging and discharge capacity while discharging; the data
    /// decides, and a file that writes charge as negative current is flipped.
    Capacity { charge: ColumnSpec, discharge: ColumnSpec },
    /// A state column says charging or discharging on every row; the current's magnitude is
    /// given that sign (Maccor writes `Amps` unsigned in some exports).
    State { column: ColumnSpec, charge: Vec<String>, discharge: Vec<String> },
}

/// Everything the generic reader needs to know about one delimited format.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub format: Format,
    /// Candidate field separators, tried in order on the header line.
    pub delimiters: Vec<u8>,
    pub header: HeaderAt,
    pub time: ColumnSpec,
    /// Whether the time column may hold date-times instead of elapsed time (BioLogic tools).
    pub time_may_be_clock: bool,
    pub current: ColumnSpec,
    pub voltage: ColumnSpec,
    pub temperature: Option<ColumnSpec>,
    pub cycle: Option<ColumnSpec>,
    pub step: Option<ColumnSpec>,
    pub sign: SignRule,
}

impl Layout {
    pub fn required(&self) -> [&ColumnSpec; 3] {
        [&self.time, &self.current, &self.voltage]
    }

    /// How many of this layout's columns, optional ones and sign columns included, a header names:
    /// of two formats that both read a header, the one that knows more of it reads it.
    pub fn columns_named(&self, names: &[String]) -> usize {
        let sign: Vec<&ColumnSpec> = match &self.sign {
            SignRule::Fixed(_) => Vec::new(),
            SignRule::Capacity { charge, discharge } => vec![charge, discharge],
            SignRule::State { column, .. } => vec![column],
        };
        let optional = [&self.temperature, &self.cycle, &self.step].into_iter().flatten();
        self.required().into_iter().chain(optional).chain(sign).filter(|spec| spec.find(names).is_some()).count()
    }

    /// How many of time, current and voltage a header line names, and with which delimiter.
    /// A line scores only if it names the time column, so free text does not match by chance.
    pub fn header_score(&self, line: &str, fields: &mut Fields) -> (usize, u8) {
        let mut best = (0, self.delimiters[0]);
        for &delimiter in &self.delimiters {
            fields.split(line, delimiter);
            let names = fields.to_strings();
            if self.time.find(&names).is_none() {
                continue;
            }
            let score = self.required().iter().filter(|spec| spec.find(&names).is_some()).count();
            if score > best.0 {
                best = (score, delimiter);
            }
        }
        best
    }
}

/// A column found in the header: its position, unit and name as the file spells it.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub index: usize,
    pub unit: Conversion,
    pub name: String,
}
