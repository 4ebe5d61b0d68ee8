//! The one delimited-text reader every CSV/TSV vendor format goes through.
//!
//! A vendor is described by a [`Layout`]: which delimiters it uses, how to find its header line,
//! the header names (aliases, each with its unit) of time, current, voltage, temperature, cycle
//! and step, and how to decide its current sign. [`DelimitedReader`] turns a file plus a layout
//! into `RawChunk`s of at most `CHUNK_ROWS` rows, holding one line in memory at a time.
//!
//! Why not polars: polars-io 0.55 no longer has a batched CSV reader (the eager `CsvReader`
//! materialises the whole file, and `collect_batches` needs polars-lazy's `async` feature, not
//! enabled here), it cannot read Novonix rows that are quoted as a whole line, and its errors do
//! not name the 1-based line and field that a user needs to fix an export.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

use super::column_map::{Conversion, Sign};
use super::{CyclerReader, Format};
use crate::data::raw::{RawChunk, SourceMetadata, CHUNK_ROWS};
use crate::{Error, Result};

/// How many lines from the top may precede the column header (Novonix summaries, EC-Lab headers).
pub(crate) const HEADER_SEARCH_LINES: u64 = 256;
/// Longer lines mean the file is not a text export; the cap keeps memory bounded on such files.
const MAX_LINE_BYTES: u64 = 1 << 20;
/// Rows of sign evidence after which the prescan stops (enough to outvote noise).
const SIGN_EVIDENCE_ROWS: u64 = 500;

// ---------------------------------------------------------------------------------------------
// Lines and fields

/// A text file read line by line, with 1-based line numbers and byte offsets.
pub(crate) struct TextLines {
    reader: BufReader<File>,
    path: PathBuf,
    /// Number of the line last returned.
    number: u64,
    /// Byte offset just past the line last returned.
    offset: u64,
    bytes: Vec<u8>,
    text: String,
}

impl TextLines {
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_at(path, 0, 0)
    }

    /// Opens `path` positioned at byte `offset`, which starts line `after_line + 1`.
    fn open_at(path: &Path, offset: u64, after_line: u64) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(path, e))?;
        Ok(TextLines {
            reader: BufReader::with_capacity(1 << 16, file),
            path: path.to_path_buf(),
            number: after_line,
            offset,
            bytes: Vec::new(),
            text: String::new(),
        })
    }

    /// The next line without its line end, and its number; `None` at the end of the file.
    pub fn next_line(&mut self) -> Result<Option<(u64, &str)>> {
        self.bytes.clear();
        let read = (&mut self.reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut self.bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        self.offset += read as u64;
        if read as u64 == MAX_LINE_BYTES && self.bytes.last() != Some(&b'\n') {
            let msg = format!("line longer than {MAX_LINE_BYTES} bytes; this does not look like a text export");
            return Err(Error::at_row(&self.path, self.number, None, msg));
        }
        while matches!(self.bytes.last(), Some(b'\n' | b'\r')) {
            self.bytes.pop();
        }
        decode_into(&self.bytes, &mut self.text);
        if self.number == 1 && self.text.starts_with('\u{feff}') {
            self.text.remove(0);
        }
        Ok(Some((self.number, &self.text)))
    }
}

/// UTF-8, or Windows-1252/Latin-1 as older cycler software writes it ("°C" as byte 0xB0).
fn decode_into(bytes: &[u8], out: &mut String) {
    out.clear();
    match std::str::from_utf8(bytes) {
        Ok(text) => out.push_str(text),
        Err(_) => out.extend(bytes.iter().map(|&b| b as char)),
    }
}

/// The fields of one line, unquoted, reusing their buffers from line to line.
#[derive(Default)]
pub(crate) struct Fields {
    buf: String,
    spans: Vec<Range<usize>>,
}

impl Fields {
    pub fn split(&mut self, line: &str, delimiter: u8) {
        self.buf.clear();
        self.spans.clear();
        let line = unwrap_quoted_line(line, delimiter);
        if line.contains('"') {
            self.split_quoted(line, delimiter as char);
        } else {
            self.buf.push_str(line);
            let mut start = 0;
            for (i, &b) in line.as_bytes().iter().enumerate() {
                if b == delimiter {
                    self.spans.push(start..i);
                    start = i + 1;
                }
            }
            self.spans.push(start..line.len());
        }
    }

    /// RFC 4180 quoting: `"a,b"` is one field, `""` inside quotes is a quote.
    fn split_quoted(&mut self, line: &str, delimiter: char) {
        let mut in_quotes = false;
        let mut start = 0;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (in_quotes, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    self.buf.push('"');
                    chars.next();
                }
                (_, '"') => in_quotes = !in_quotes,
                (false, c) if c == delimiter => {
                    self.spans.push(start..self.buf.len());
                    start = self.buf.len();
                }
                (_, c) => self.buf.push(c),
            }
        }
        self.spans.push(start..self.buf.len());
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Field `i`, trimmed of surrounding spaces.
    pub fn get(&self, i: usize) -> Option<&str> {
        self.spans.get(i).map(|span| self.buf[span.clone()].trim())
    }

    pub fn to_strings(&self) -> Vec<String> {
        (0..self.len()).filter_map(|i| self.get(i)).map(str::to_owned).collect()
    }
}

/// Some exporters (Novonix) quote each whole line: `"a,b,c"`. Such a line is one quoted field
/// holding delimiters, which no real column is; read it as the fields inside.
fn unwrap_quoted_line(line: &str, delimiter: u8) -> &str {
    let trimmed = line.trim();
    match trimmed.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) if !inner.contains('"') && inner.as_bytes().contains(&delimiter) => inner,
        _ => line,
    }
}

// ---------------------------------------------------------------------------------------------
// Layouts: what a vendor's columns are called and in which units

/// One header name a column may have, and the unit its values are in.
#[derive(Debug, Clone)]
pub(crate) struct Alias {
    pub name: String,
    pub unit: Conversion,
}

/// A quantity (time, current…) and the header names it goes by in one format.
#[derive(Debug, Clone)]
pub(crate) struct ColumnSpec {
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

    /// The first alias found in a header (case-insensitive, ignoring surrounding spaces).
    fn find(&self, header: &[String]) -> Option<Resolved> {
        self.aliases.iter().find_map(|alias| {
            let index = header.iter().position(|h| h.trim().eq_ignore_ascii_case(alias.name.trim()))?;
            Some(Resolved { index, unit: alias.unit, name: header[index].clone() })
        })
    }

    fn expected(&self) -> String {
        self.aliases.iter().map(|a| format!("'{}'", a.name)).collect::<Vec<_>>().join(", ")
    }
}

/// Where the column header is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HeaderAt {
    /// The first line, among the first `HEADER_SEARCH_LINES`, naming time, current and voltage.
    Search,
    /// This 1-based line (column maps say where it is).
    Line(u64),
}

/// How the reader settles which current sign the file uses.
#[derive(Debug, Clone)]
pub(crate) enum SignRule {
    /// The format (or the user) states it.
    Fixed(Sign),
    /// Charge capacity rises while charging and discharge capacity while discharging; the data
    /// decides, and a file that writes charge as negative current is flipped.
    Capacity { charge: ColumnSpec, discharge: ColumnSpec },
    /// A state column says charging or discharging on every row; the current's magnitude is
    /// given that sign (Maccor writes `Amps` unsigned in some exports).
    State { column: ColumnSpec, charge: &'static str, discharge: &'static str },
}

/// Everything the generic reader needs to know about one delimited format.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
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
    fn required(&self) -> [&ColumnSpec; 3] {
        [&self.time, &self.current, &self.voltage]
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

// ---------------------------------------------------------------------------------------------
// Header

/// A column found in the header: its position, unit and name as the file spells it.
#[derive(Debug, Clone)]
struct Resolved {
    index: usize,
    unit: Conversion,
    name: String,
}

/// The header line of a file, and the lines above it (vendor summaries, kept for metadata).
pub(crate) struct Header {
    pub line: u64,
    pub delimiter: u8,
    pub names: Vec<String>,
    pub preamble: Vec<String>,
    /// Byte offset where the first data line starts.
    data_offset: u64,
}

fn find_header(lines: &mut TextLines, layout: &Layout) -> Result<Header> {
    let path = lines.path.clone();
    let mut fields = Fields::default();
    let mut preamble = Vec::new();
    // (score, line, delimiter, names) of the best candidate so far, for the error message.
    let mut best: Option<(usize, u64, u8, Vec<String>)> = None;
    while let Some((number, text)) = lines.next_line()? {
        let found = match layout.header {
            HeaderAt::Line(line) if number == line => Some((3, layout.delimiters[0])),
            HeaderAt::Line(_) => None,
            HeaderAt::Search => Some(layout.header_score(text, &mut fields)).filter(|&(score, _)| score > 0),
        };
        if let Some((score, delimiter)) = found {
            fields.split(text, delimiter);
            let names = fields.to_strings();
            if score == 3 || matches!(layout.header, HeaderAt::Line(_)) {
                return Ok(Header { line: number, delimiter, names, preamble, data_offset: lines.offset });
            }
            if best.as_ref().is_none_or(|b| score > b.0) {
                best = Some((score, number, delimiter, names));
            }
        }
        preamble.push(text.to_owned());
        if number >= HEADER_SEARCH_LINES.max(header_line(layout)) {
            break;
        }
    }
    Err(match (best, lines.number) {
        (_, 0) => Error::in_file(&path, "empty file"),
        (Some((_, number, _, names)), _) => missing_columns(&path, number, &names, &layout.required()),
        (None, _) => no_header(&path, layout),
    })
}

fn header_line(layout: &Layout) -> u64 {
    match layout.header {
        HeaderAt::Line(line) => line,
        HeaderAt::Search => 0,
    }
}

fn no_header(path: &Path, layout: &Layout) -> Error {
    let wanted = layout.required().iter().map(|s| format!("{} ({})", s.role, s.expected())).collect::<Vec<_>>();
    let msg = match layout.header {
        HeaderAt::Line(line) => format!("the file ends before header line {line}"),
        HeaderAt::Search => format!(
            "no {} column header in the first {HEADER_SEARCH_LINES} lines; expected {}",
            layout.format,
            wanted.join(", ")
        ),
    };
    Error::in_file(path, msg)
}

fn missing_columns(path: &Path, line: u64, names: &[String], specs: &[&ColumnSpec]) -> Error {
    let missing: Vec<_> = specs
        .iter()
        .filter(|spec| spec.find(names).is_none())
        .map(|spec| format!("{} (expected one of {})", spec.role, spec.expected()))
        .collect();
    let msg = format!("missing column: {}; the header has: {}", missing.join("; "), names.join(", "));
    Error::at_row(path, line, None, msg)
}

// ---------------------------------------------------------------------------------------------
// Rows

/// The header positions of every column the reader uses.
#[derive(Debug, Clone)]
struct RowColumns {
    time: Resolved,
    current: Resolved,
    voltage: Resolved,
    temperature: Option<Resolved>,
    cycle: Option<Resolved>,
    step: Option<Resolved>,
    sign: SignColumns,
}

#[derive(Debug, Clone)]
enum SignColumns {
    Fixed,
    Capacity { charge: Option<Resolved>, discharge: Option<Resolved> },
    State { column: Resolved, charge: &'static str, discharge: &'static str },
}

impl RowColumns {
    fn resolve(path: &Path, layout: &Layout, header: &Header) -> Result<Self> {
        let names = &header.names;
        let required = |spec: &ColumnSpec| spec.find(names).ok_or_else(|| missing_columns(path, header.line, names, &layout.required()));
        let optional = |spec: &Option<ColumnSpec>| spec.as_ref().and_then(|s| s.find(names));
        let sign = match &layout.sign {
            SignRule::Fixed(_) => SignColumns::Fixed,
            SignRule::Capacity { charge, discharge } => {
                SignColumns::Capacity { charge: charge.find(names), discharge: discharge.find(names) }
            }
            SignRule::State { column, charge, discharge } => match column.find(names) {
                Some(column) => SignColumns::State { column, charge, discharge },
                None => return Err(missing_columns(path, header.line, names, &[column])),
            },
        };
        Ok(RowColumns {
            time: required(&layout.time)?,
            current: required(&layout.current)?,
            voltage: required(&layout.voltage)?,
            temperature: optional(&layout.temperature),
            cycle: optional(&layout.cycle),
            step: optional(&layout.step),
            sign,
        })
    }
}

/// Parses cells of one row, naming the file, row and column on failure.
struct Cells<'a> {
    path: &'a Path,
    row: u64,
    fields: &'a Fields,
    /// Whether `3,14` may mean 3.14 (semicolon- or tab-separated European exports).
    decimal_comma: bool,
}

impl Cells<'_> {
    fn text(&self, column: &Resolved) -> Result<&str> {
        self.fields.get(column.index).ok_or_else(|| {
            let msg = format!("the row has {} fields; this column is field {}", self.fields.len(), column.index + 1);
            Error::at_row(self.path, self.row, Some(&column.name), msg)
        })
    }

    fn error(&self, column: &Resolved, msg: String) -> Error {
        Error::at_row(self.path, self.row, Some(&column.name), msg)
    }

    /// A number in the column's file unit, or `None` for an empty cell.
    fn raw_number(&self, column: &Resolved) -> Result<Option<f64>> {
        let text = self.text(column)?;
        if text.is_empty() {
            return Ok(None);
        }
        parse_number(text, self.decimal_comma).map(Some).ok_or_else(|| self.error(column, format!("not a number: '{text}'")))
    }

    /// A finite number in canonical units; empty, NaN and infinite cells are errors.
    fn required(&self, column: &Resolved) -> Result<f64> {
        match self.raw_number(column)? {
            Some(v) if v.is_finite() => Ok(column.unit.apply(v)),
            Some(v) => Err(self.error(column, format!("not a finite number: {v}"))),
            None => Err(self.error(column, "empty cell".into())),
        }
    }

    /// A number in canonical units; empty and NaN cells mean "not measured".
    fn optional(&self, column: Option<&Resolved>) -> Result<Option<f64>> {
        let Some(column) = column else { return Ok(None) };
        Ok(self.raw_number(column)?.filter(|v| v.is_finite()).map(|v| column.unit.apply(v)))
    }

    /// A counter (cycle, step): written `3`, `3.0` or `3.000E+000` by different cyclers.
    fn counter(&self, column: Option<&Resolved>) -> Result<Option<i32>> {
        let Some(column) = column else { return Ok(None) };
        match self.raw_number(column)? {
            None => Ok(None),
            Some(v) if v.fract() == 0.0 && v >= i32::MIN as f64 && v <= i32::MAX as f64 => Ok(Some(v as i32)),
            Some(v) => Err(self.error(column, format!("not a whole number: {v}"))),
        }
    }

    /// Elapsed seconds, or a date-time turned into seconds since the first row's.
    fn time(&self, column: &Resolved, clock_origin: Option<&mut Option<NaiveDateTime>>) -> Result<f64> {
        let text = self.text(column)?;
        let Some(origin) = clock_origin else { return self.required(column) };
        if parse_number(text, self.decimal_comma).is_some() {
            return self.required(column);
        }
        let stamp = parse_clock(text).ok_or_else(|| self.error(column, format!("neither a number nor a date-time: '{text}'")))?;
        let origin = *origin.get_or_insert(stamp);
        Ok((stamp - origin).num_microseconds().map_or(f64::NAN, |us| us as f64 * 1e-6))
    }
}

fn parse_number(text: &str, decimal_comma: bool) -> Option<f64> {
    match text.parse::<f64>() {
        Ok(v) => Some(v),
        Err(_) if decimal_comma && text.contains(',') => text.replace(',', ".").parse().ok(),
        Err(_) => None,
    }
}

/// Date-time layouts seen in cycler exports (BioLogic tools write US month-first dates).
const CLOCK_FORMATS: [&str; 3] = ["%m/%d/%Y %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"];

fn parse_clock(text: &str) -> Option<NaiveDateTime> {
    CLOCK_FORMATS.iter().find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
}

// ---------------------------------------------------------------------------------------------
// Sign evidence

/// Rows on which the file's current agrees or disagrees with + = charge.
#[derive(Debug, Default, Clone, Copy)]
struct SignVotes {
    agree: u64,
    disagree: u64,
}

impl SignVotes {
    fn vote(&mut self, charging: bool, current: f64) {
        if current == 0.0 {
            return;
        }
        if (current > 0.0) == charging {
            self.agree += 1;
        } else {
            self.disagree += 1;
        }
    }

    fn total(&self) -> u64 {
        self.agree + self.disagree
    }
}

/// Capacity counters reset between steps or cycles; only a real rise is evidence. The floor
/// ignores float noise such as Arbin's 4e-11 Ah "discharge" during a charge.
fn rose(previous: Option<f64>, now: Option<f64>) -> bool {
    match (previous, now) {
        (Some(p), Some(n)) => n - p > 1e-9 * p.abs().max(1.0),
        _ => false,
    }
}

/// What a first pass over the data found: whether there are rows, and sign evidence.
struct Prescan {
    data_rows: u64,
    votes: SignVotes,
}

fn prescan(path: &Path, header: &Header, columns: &RowColumns, skip_line: Option<u64>, decimal_comma: bool) -> Result<Prescan> {
    let mut lines = TextLines::open_at(path, header.data_offset, header.line)?;
    let mut fields = Fields::default();
    let mut scan = Prescan { data_rows: 0, votes: SignVotes::default() };
    let mut previous: (Option<f64>, Option<f64>) = (None, None);
    let wants_votes = !matches!(columns.sign, SignColumns::Fixed);
    while let Some((number, text)) = lines.next_line()? {
        if text.trim().is_empty() || Some(number) == skip_line {
            continue;
        }
        scan.data_rows += 1;
        if !wants_votes || scan.votes.total() >= SIGN_EVIDENCE_ROWS {
            break;
        }
        fields.split(text, header.delimiter);
        let cells = Cells { path, row: number, fields: &fields, decimal_comma };
        // Bad rows are reported by the main pass, with their context; here they are no evidence.
        let Ok(current) = cells.required(&columns.current) else { continue };
        match &columns.sign {
            SignColumns::Fixed => {}
            SignColumns::Capacity { charge, discharge } => {
                let now = (cells.optional(charge.as_ref()).ok().flatten(), cells.optional(discharge.as_ref()).ok().flatten());
                if rose(previous.0, now.0) {
                    scan.votes.vote(true, current);
                }
                if rose(previous.1, now.1) {
                    scan.votes.vote(false, current);
                }
                previous = now;
            }
            SignColumns::State { column, charge, discharge } => match cells.text(column) {
                Ok(s) if s.eq_ignore_ascii_case(charge) => scan.votes.vote(true, current),
                Ok(s) if s.eq_ignore_ascii_case(discharge) => scan.votes.vote(false, current),
                _ => {}
            },
        }
    }
    Ok(scan)
}

/// The factor that makes the file's current + = charge, and a warning when it is not 1.
fn decide_sign(rule: &SignRule, columns: &RowColumns, votes: SignVotes) -> (f64, Option<String>) {
    match (rule, &columns.sign) {
        (SignRule::Fixed(Sign::ChargePositive), _) => (1.0, None),
        (SignRule::Fixed(Sign::DischargePositive), _) => {
            (-1.0, Some("current negated to + = charge, as the column map says the file writes discharge as positive".into()))
        }
        (_, SignColumns::Capacity { .. }) if votes.disagree > votes.agree => (
            -1.0,
            Some(format!(
                "current sign flipped to + = charge: on {} of {} rows where a charge/discharge capacity rose, \
                 the file's current had the opposite sign",
                votes.disagree,
                votes.total()
            )),
        ),
        (_, SignColumns::State { column, .. }) if votes.disagree > 0 => (
            1.0,
            Some(format!(
                "current sign taken from the '{}' column (charge +, discharge −): the file's current disagreed \
                 with it on {} of {} rows",
                column.name,
                votes.disagree,
                votes.total()
            )),
        ),
        _ => (1.0, None),
    }
}

// ---------------------------------------------------------------------------------------------
// Truncated last line

/// The number of the file's last non-blank line if it has fewer fields than the header (a file
/// cut off while it was written), so the reader can drop it with a warning.
fn incomplete_last_line(path: &Path, header: &Header) -> Result<Option<u64>> {
    const TAIL_BYTES: u64 = 1 << 16;
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let start = len.saturating_sub(TAIL_BYTES).max(header.data_offset);
    file.seek(SeekFrom::Start(start)).map_err(|e| Error::io(path, e))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).map_err(|e| Error::io(path, e))?;
    let end = tail.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    let line_start = tail[..end].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if line_start == 0 && start > header.data_offset || end == 0 {
        return Ok(None); // the last line is longer than the tail, or there are no data lines
    }
    let mut text = String::new();
    decode_into(&tail[line_start..end], &mut text);
    let mut fields = Fields::default();
    fields.split(&text, header.delimiter);
    if fields.len() >= header.names.len() {
        return Ok(None);
    }
    let newlines_before = count_newlines(path, start + line_start as u64)?;
    Ok(Some(newlines_before + 1))
}

fn count_newlines(path: &Path, up_to: u64) -> Result<u64> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file.take(up_to));
    let mut count = 0;
    loop {
        let buf = reader.fill_buf().map_err(|e| Error::io(path, e))?;
        if buf.is_empty() {
            return Ok(count);
        }
        count += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let n = buf.len();
        reader.consume(n);
    }
}

// ---------------------------------------------------------------------------------------------
// The reader

/// Columns carried beside the rows (BatteryArchive ground truth), produced chunk by chunk.
pub(crate) trait Passthrough: Send {
    /// The pass-through arrays for a chunk with these (canonical, seconds) times.
    fn columns_for(&mut self, test_time: &[f64]) -> Result<Vec<(String, arrow::array::ArrayRef)>>;
}

/// Streams a delimited text file described by a [`Layout`].
pub(crate) struct DelimitedReader {
    path: PathBuf,
    lines: TextLines,
    fields: Fields,
    delimiter: u8,
    header_fields: usize,
    columns: RowColumns,
    time_may_be_clock: bool,
    clock_origin: Option<NaiveDateTime>,
    decimal_comma: bool,
    /// +1, or −1 when the file writes charge as negative current.
    sign_factor: f64,
    /// A truncated final line, dropped (the warning is already in the metadata).
    skip_line: Option<u64>,
    metadata: SourceMetadata,
    passthrough: Option<Box<dyn Passthrough>>,
    preamble: Vec<String>,
}

impl DelimitedReader {
    pub fn open(path: &Path, layout: &Layout) -> Result<Self> {
        let mut lines = TextLines::open(path)?;
        let header = find_header(&mut lines, layout)?;
        let columns = RowColumns::resolve(path, layout, &header)?;
        let mut metadata = SourceMetadata::default();
        let skip_line = incomplete_last_line(path, &header)?;
        if let Some(line) = skip_line {
            metadata.warnings.push(format!("row {line} is cut short (fewer fields than the header) and is the last line; dropped"));
        }
        let decimal_comma = header.delimiter != b',';
        let scan = prescan(path, &header, &columns, skip_line, decimal_comma)?;
        if scan.data_rows == 0 {
            return Err(Error::in_file(path, format!("no data rows after the header on line {}", header.line)));
        }
        let (sign_factor, warning) = decide_sign(&layout.sign, &columns, scan.votes);
        metadata.warnings.extend(warning);
        Ok(DelimitedReader {
            path: path.to_path_buf(),
            lines,
            fields: Fields::default(),
            delimiter: header.delimiter,
            header_fields: header.names.len(),
            columns,
            time_may_be_clock: layout.time_may_be_clock,
            clock_origin: None,
            decimal_comma,
            sign_factor,
            skip_line,
            metadata,
            passthrough: None,
            preamble: header.preamble,
        })
    }

    /// The lines above the header (vendor summaries), for format-specific metadata.
    pub fn preamble(&self) -> &[String] {
        &self.preamble
    }

    pub fn metadata_mut(&mut self) -> &mut SourceMetadata {
        &mut self.metadata
    }

    pub fn set_passthrough(&mut self, passthrough: Box<dyn Passthrough>) {
        self.passthrough = Some(passthrough);
    }

    /// Reads one data line into `chunk`.
    fn push_row(&mut self, chunk: &mut RawChunk, number: u64) -> Result<()> {
        let columns = &self.columns;
        if self.fields.len() < self.header_fields {
            let msg = format!("the row has {} fields, the header {}", self.fields.len(), self.header_fields);
            return Err(Error::at_row(&self.path, number, None, msg));
        }
        let cells = Cells { path: &self.path, row: number, fields: &self.fields, decimal_comma: self.decimal_comma };
        let clock = self.time_may_be_clock.then_some(&mut self.clock_origin);
        let test_time = cells.time(&columns.time, clock)?;
        let current = self.sign_factor * signed_by_state(&cells, columns, cells.required(&columns.current)?)?;
        let voltage = cells.required(&columns.voltage)?;
        let temperature = cells.optional(columns.temperature.as_ref())?;
        let cycle = cells.counter(columns.cycle.as_ref())?;
        let step = cells.counter(columns.step.as_ref())?;
        chunk.push(test_time, current as f32, voltage as f32, temperature.map(|t| t as f32), cycle, step, number);
        Ok(())
    }
}

/// With a state column, charge rows get +|I| and discharge rows −|I|; others keep their value.
fn signed_by_state(cells: &Cells, columns: &RowColumns, current: f64) -> Result<f64> {
    let SignColumns::State { column, charge, discharge } = &columns.sign else { return Ok(current) };
    let state = cells.text(column)?;
    Ok(if state.eq_ignore_ascii_case(charge) {
        current.abs()
    } else if state.eq_ignore_ascii_case(discharge) {
        -current.abs()
    } else {
        current
    })
}

impl CyclerReader for DelimitedReader {
    fn metadata(&self) -> &SourceMetadata {
        &self.metadata
    }

    fn next_chunk(&mut self) -> Result<Option<RawChunk>> {
        let mut chunk = RawChunk::default();
        while chunk.len() < CHUNK_ROWS {
            let Some((number, text)) = self.lines.next_line()? else { break };
            if text.trim().is_empty() || Some(number) == self.skip_line {
                continue;
            }
            self.fields.split(text, self.delimiter);
            self.push_row(&mut chunk, number)?;
        }
        if chunk.is_empty() {
            return Ok(None);
        }
        if let Some(passthrough) = &mut self.passthrough {
            chunk.passthrough = passthrough.columns_for(&chunk.test_time)?;
        }
        Ok(Some(chunk))
    }
}
