//! The one delimited-text reader every CSV/TSV vendor format goes through.
//!
//! A vendor is described by a [`Layout`] (layout.rs): which delimiters it uses, how to find its
//! header line, the header names (aliases, each with its unit) of time, current, voltage,
//! temperature, cycle and step, and how to decide its current sign. [`DelimitedReader`] turns a file plus a layout
//! into `RawChunk`s of at most `CHUNK_ROWS` rows, holding one line in memory at a time.
//!
//! Why not polars: polars-io 0.55 no longer has a batched CSV reader (the eager `CsvReader`
//! materialises the whole file, and `collect_batches` needs polars-lazy's `async` feature, not
//! enabled here), it cannot read Novonix rows that are quoted as a whole line, and its errors do
//! not name the 1-based line and field that a user needs to fix an export.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

use super::column_map::Sign;
use super::layout::{header_key, key_chars, ColumnSpec, HeaderAt, Layout, Resolved, SignRule};
use super::numbers::NumberStyle;
use super::text::{decode_into, misdecoded_hint, Fields, TextLines};
use super::{CyclerReader, Format};
use crate::data::raw::{RawChunk, SourceMetadata, CHUNK_ROWS};
use crate::{Error, Result};

/// How many lines from the top may precede the column header (Novonix summaries, EC-Lab headers).
pub(super) const HEADER_SEARCH_LINES: u64 = 256;

/// The last line the column header may be on: `HEADER_SEARCH_LINES`, or further where a file
/// states its header's length (EC-Lab: `Nb header lines : 309`, the column line the last of them),
/// as `stated` records once the line saying so has been read.
pub(super) fn header_search_end(number: u64, text: &str, stated: &mut u64) -> u64 {
    if number <= 3 {
        let lower = text.to_ascii_lowercase();
        if let Some(n) = lower.strip_prefix("nb header lines").and_then(|rest| rest.trim_start().strip_prefix(':')?.trim().parse::<u64>().ok()) {
            *stated = n;
        }
    }
    HEADER_SEARCH_LINES.max(*stated)
}
/// Rows of sign evidence after which the prescan stops (enough to outvote noise).
const SIGN_EVIDENCE_ROWS: u64 = 500;
/// Data rows searched for a cell that shows the file's decimal mark.
const STYLE_EVIDENCE_ROWS: u64 = 10_000;

// ---------------------------------------------------------------------------------------------
// Header

/// The header line of a file, and the lines above it (vendor summaries, kept for metadata).
struct Header {
    line: u64,
    delimiter: u8,
    names: Vec<String>,
    preamble: Vec<String>,
    /// Byte offset where the first data line starts, and the number of the line before it.
    data_offset: u64,
    data_after: u64,
    /// [`record_lead`] of the names.
    record_lead: usize,
}

/// The empty names a header starts with, where two or more: Neware's "regular export" nests
/// cycle, step and record lines, its record names under `,,DataPoint,Time,Total Time…`. One is
/// an unnamed index column, as pandas writes it, filled on every row.
fn record_lead(names: &[String]) -> usize {
    let lead = names.iter().take_while(|n| n.is_empty()).count();
    if lead >= 2 {
        lead
    } else {
        0
    }
}

/// Whether a line's fields are rows of a header starting with `lead` empty names: only lines
/// with as many empty fields first (the others are the export's cycle and step lines).
fn is_record(fields: &Fields, lead: usize) -> bool {
    (0..lead).all(|k| fields.get(k) == Some(""))
}

fn find_header(lines: &mut TextLines, layout: &Layout) -> Result<Header> {
    let path = lines.path().to_path_buf();
    let mut fields = Fields::default();
    let mut preamble = Vec::new();
    // (score, line, delimiter, names) of the best candidate so far, for the error message.
    let mut best: Option<(usize, u64, u8, Vec<String>)> = None;
    let mut stated = 0;
    // The hint of the first line that looks misdecoded, for a header that is not found.
    let mut hint = "";
    while let Some((number, text)) = lines.next_line()? {
        if hint.is_empty() {
            hint = misdecoded_hint(text);
        }
        let search_end = header_search_end(number, text, &mut stated);
        let candidate = match layout.header {
            HeaderAt::Line { line, .. } if number == line => Some((layout.required().len(), layout.delimiters[0])),
            HeaderAt::Line { .. } => None,
            HeaderAt::Search => Some(layout.header_score(text, &mut fields)).filter(|&(score, _)| score > 0),
        };
        if let Some((score, delimiter)) = candidate {
            fields.split(text, delimiter);
            let mut names = fields.to_strings();
            // A trailing delimiter names no column: BioLogic EC-Lab ends its column line with a
            // tab its data lines lack (rows with one empty field more are read as they are).
            if names.len() > 1 && names.last().is_some_and(String::is_empty) {
                names.pop();
            }
            // A fixed header line is taken as it is; its missing columns are named when resolved.
            if score == layout.required().len() {
                let skip = match layout.header {
                    HeaderAt::Line { skip, .. } => skip,
                    HeaderAt::Search => 0,
                };
                for _ in 0..skip {
                    lines.next_line()?;
                }
                let record_lead = record_lead(&names);
                return Ok(Header { line: number, delimiter, names, preamble, data_offset: lines.offset(), data_after: number + skip, record_lead });
            }
            if best.as_ref().is_none_or(|b| score > b.0) {
                best = Some((score, number, delimiter, names));
            }
        }
        preamble.push(text.to_owned());
        if number >= search_end.max(header_line(layout)) {
            break;
        }
    }
    Err(match (best, lines.line_number()) {
        (_, 0) => Error::in_file(&path, "empty file"),
        (Some((_, number, _, names)), _) => missing_columns(&path, number, &names, &layout.required()),
        (None, _) => no_header(&path, layout, hint),
    })
}

fn header_line(layout: &Layout) -> u64 {
    match layout.header {
        HeaderAt::Line { line, .. } => line,
        HeaderAt::Search => 0,
    }
}

fn no_header(path: &Path, layout: &Layout, hint: &str) -> Error {
    let wanted = layout.required().iter().map(|s| format!("{} ({})", s.role, s.expected())).collect::<Vec<_>>();
    let msg = match layout.header {
        HeaderAt::Line { line, .. } => format!("the file ends before header line {line}"),
        HeaderAt::Search => format!(
            "no {} column header in the first {HEADER_SEARCH_LINES} lines; expected {}",
            layout.format,
            wanted.join(", ")
        ),
    };
    Error::in_file(path, msg + hint)
}

fn missing_columns(path: &Path, line: u64, names: &[String], specs: &[&ColumnSpec]) -> Error {
    let missing: Vec<_> = specs
        .iter()
        .filter(|spec| spec.find(names).is_none())
        .map(|spec| format!("{} (expected one of {})", spec.role, spec.expected()))
        .collect();
    let header = names.join(", ");
    let msg = format!("missing column: {}; the header has: {header}{}", missing.join("; "), misdecoded_hint(&header));
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
    State { column: Resolved, charge: Vec<String>, discharge: Vec<String> },
}

impl RowColumns {
    fn resolve(path: &Path, layout: &Layout, header: &Header) -> Result<Self> {
        let names = &header.names;
        // A column named twice is ambiguous: which one holds the values cannot be known.
        let unique = |r: Resolved| {
            let count = names.iter().filter(|h| header_key(h) == header_key(&r.name)).count();
            if count > 1 {
                return Err(Error::at_row(path, header.line, Some(r.name.trim()), format!("the header names this column {count} times")));
            }
            Ok(r)
        };
        let required =
            |spec: &ColumnSpec| spec.find(names).ok_or_else(|| missing_columns(path, header.line, names, &layout.required())).and_then(unique);
        let optional = |spec: &Option<ColumnSpec>| spec.as_ref().and_then(|s| s.find(names)).map(unique).transpose();
        let sign = match &layout.sign {
            SignRule::Fixed(_) => SignColumns::Fixed,
            SignRule::Capacity { charge, discharge } => {
                SignColumns::Capacity { charge: charge.find(names), discharge: discharge.find(names) }
            }
            SignRule::State { column, charge, discharge } => match column.find(names) {
                Some(column) => SignColumns::State { column, charge: charge.clone(), discharge: discharge.clone() },
                // A vendor export without its state column (PyProBE's Maccor CSV) is signed
                // itself; ingest checks that against the voltage, and refuses it unsigned. A
                // column map's state column was asked for by name.
                None if layout.format != Format::Mapped => SignColumns::Capacity { charge: None, discharge: None },
                None => return Err(missing_columns(path, header.line, names, &[column])),
            },
        };
        Ok(RowColumns {
            time: required(&layout.time)?,
            current: required(&layout.current)?,
            voltage: required(&layout.voltage)?,
            temperature: optional(&layout.temperature)?,
            cycle: optional(&layout.cycle)?,
            step: optional(&layout.step)?,
            sign,
        })
    }
}

/// Parses cells of one row, naming the file, row and column on failure.
struct Cells<'a> {
    path: &'a Path,
    row: u64,
    fields: &'a Fields,
    numbers: &'a NumberStyle,
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
        self.numbers.parse(text).map(Some).ok_or_else(|| self.error(column, format!("not a number: '{text}'{}", self.numbers.explain())))
    }

    /// A finite number in canonical units; empty, NaN and infinite cells are errors.
    fn required(&self, column: &Resolved) -> Result<f64> {
        match self.raw_number(column)? {
            Some(v) if v.is_finite() => Ok(column.unit.apply(v)),
            Some(v) => Err(self.error(column, format!("not a finite number: {v}"))),
            None => Err(self.error(column, "empty cell".into())),
        }
    }

    /// A number in canonical units; empty and NaN cells mean "not measured", and so does a lone
    /// `-` (Landt's auxiliary channels without a sensor).
    fn optional(&self, column: Option<&Resolved>) -> Result<Option<f64>> {
        let Some(column) = column else { return Ok(None) };
        if self.text(column)? == "-" {
            return Ok(None);
        }
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

    /// Elapsed seconds (a number in the column's unit, or `1d 02:03:04.5` as Maccor's clients
    /// write it), or a date-time turned into seconds since the first row's.
    fn time(&self, column: &Resolved, clock_origin: Option<&mut Option<NaiveDateTime>>) -> Result<f64> {
        let text = self.text(column)?;
        if self.numbers.parse(text).is_some() {
            return self.required(column);
        }
        if let Some(seconds) = parse_elapsed(text, self.numbers) {
            return Ok(seconds);
        }
        let Some(origin) = clock_origin else { return Err(self.error(column, format!("neither a number nor an elapsed time ({ELAPSED_FORMS}): '{text}'"))) };
        // A decimal-comma locale writes the seconds' fraction with a comma too.
        let stamp = parse_clock(text)
            .or_else(|| parse_clock(&text.replace(',', ".")))
            .ok_or_else(|| self.error(column, format!("neither a number, an elapsed time ({ELAPSED_FORMS}) nor a date-time ({CLOCK_FORMS}): '{text}'")))?;
        let origin = *origin.get_or_insert(stamp);
        Ok((stamp - origin).num_microseconds().map_or(f64::NAN, |us| us as f64 * 1e-6))
    }
}

/// `[Nd ]HH:MM:SS[.f]` or `[N-]HH:MM:SS[.f]` (Neware's days) elapsed time in seconds (days
/// optional, hours may pass 24).
fn parse_elapsed(text: &str, numbers: &NumberStyle) -> Option<f64> {
    let (days, clock) = match text.trim().split_once(['d', 'D', '-']) {
        Some((days, clock)) => (days.trim().parse::<u32>().ok()?, clock.trim()),
        None => (0, text.trim()),
    };
    let mut parts = clock.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
    let s = numbers.parse(s).filter(|s| (0.0..60.0).contains(s))?;
    (m < 60).then(|| f64::from(days) * 86400.0 + f64::from(h) * 3600.0 + f64::from(m) * 60.0 + s)
}

/// Date-time layouts seen in cycler exports (BioLogic tools write US month-first dates).
const CLOCK_FORMATS: [&str; 3] = ["%m/%d/%Y %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"];
/// The time forms as an error names them.
const ELAPSED_FORMS: &str = "HH:MM:SS, 1d 02:03:04 or 1-02:03:04";
const CLOCK_FORMS: &str = "MM/DD/YYYY HH:MM:SS or YYYY-MM-DD HH:MM:SS";

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
    /// With a state column: whether any row held one of its charge or discharge values, and the
    /// first few values it held instead where current flowed (to show a map whose values miss
    /// the file's; a file that only rests matches none and is fine).
    state_matched: bool,
    other_states: Vec<String>,
}

/// A line with nothing but delimiters and spaces: spreadsheets save the rows below a table as
/// `;;;;;;;;;`, read like blank lines.
fn blank(text: &str, delimiter: u8) -> bool {
    text.bytes().all(|b| b == delimiter || b.is_ascii_whitespace())
}

fn prescan(path: &Path, header: &Header, columns: &RowColumns, skip_line: Option<u64>, numbers: &NumberStyle) -> Result<Prescan> {
    let mut lines = TextLines::open_at(path, header.data_offset, header.data_after)?;
    let mut fields = Fields::default();
    let mut scan = Prescan { data_rows: 0, votes: SignVotes::default(), state_matched: false, other_states: Vec::new() };
    let mut previous: (Option<f64>, Option<f64>) = (None, None);
    let wants_votes = !matches!(columns.sign, SignColumns::Fixed);
    while let Some((number, text)) = lines.next_line()? {
        if blank(text, header.delimiter) || Some(number) == skip_line {
            continue;
        }
        fields.split(text, header.delimiter);
        if !is_record(&fields, header.record_lead) {
            continue;
        }
        scan.data_rows += 1;
        if !wants_votes || scan.votes.total() >= SIGN_EVIDENCE_ROWS {
            break;
        }
        let cells = Cells { path, row: number, fields: &fields, numbers };
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
            SignColumns::State { column, charge, discharge } => {
                let Ok(s) = cells.text(column) else { continue };
                let charging = names(charge, s);
                if charging || names(discharge, s) {
                    scan.state_matched = true;
                    scan.votes.vote(charging, current);
                } else if current != 0.0 && scan.other_states.len() < 12 && !scan.other_states.iter().any(|o| o == s.trim()) {
                    scan.other_states.push(s.trim().to_owned());
                }
            }
        }
    }
    Ok(scan)
}

/// The file's number style, from the first cell of its first rows that shows it.
fn number_style(path: &Path, header: &Header, columns: &RowColumns, skip_line: Option<u64>) -> Result<NumberStyle> {
    let mut lines = TextLines::open_at(path, header.data_offset, header.data_after)?;
    let mut fields = Fields::default();
    let numeric = [Some(&columns.time), Some(&columns.current), Some(&columns.voltage), columns.temperature.as_ref()];
    while let Some((number, text)) = lines.next_line()? {
        if number > header.data_after + STYLE_EVIDENCE_ROWS {
            break;
        }
        if Some(number) == skip_line {
            continue;
        }
        fields.split(text, header.delimiter);
        if !is_record(&fields, header.record_lead) {
            continue;
        }
        for cell in numeric.iter().flatten().filter_map(|column| fields.get(column.index)) {
            if let Some(decimal) = NumberStyle::evidence(cell) {
                return Ok(NumberStyle::Decided { decimal, row: number, cell: cell.trim().to_owned() });
            }
        }
    }
    Ok(NumberStyle::Undecided { decimal_comma: header.delimiter != b',' })
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
        // A stray sample at a step edge is noise; unsigned or reversed current disagrees often.
        (_, SignColumns::State { column, .. }) if votes.disagree * 100 > votes.total() => (
            1.0,
            Some(format!(
                "current sign taken from the '{}' column (charge +, discharge −): the file's current disagreed \
                 with it on {} of {} rows (an unsigned current, as Maccor writes it, differs on every discharge row)",
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
    // The last non-blank line; only line ends are stripped, as an empty last field is a tab.
    let mut end = tail.len();
    let line_start = loop {
        while end > 0 && matches!(tail[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        let line_start = tail[..end].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if !tail[line_start..end].iter().all(|&b| b.is_ascii_whitespace() || b == header.delimiter) {
            break line_start;
        }
        if line_start == 0 {
            return Ok(None); // no data lines
        }
        end = line_start;
    };
    if line_start == 0 && start > header.data_offset {
        return Ok(None); // the last line is longer than the tail: not a cut-off row
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
pub(super) trait Passthrough: Send {
    /// The pass-through arrays for a chunk with these (canonical, seconds) times.
    fn columns_for(&mut self, test_time: &[f64]) -> Result<Vec<(String, arrow::array::ArrayRef)>>;
}

/// Streams a delimited text file described by a [`Layout`].
pub(super) struct DelimitedReader {
    path: PathBuf,
    lines: TextLines,
    fields: Fields,
    delimiter: u8,
    header_fields: usize,
    columns: RowColumns,
    time_may_be_clock: bool,
    clock_origin: Option<NaiveDateTime>,
    numbers: NumberStyle,
    /// +1, or −1 when the file writes charge as negative current.
    sign_factor: f64,
    /// A truncated final line, dropped (the warning is already in the metadata).
    skip_line: Option<u64>,
    metadata: SourceMetadata,
    passthrough: Option<Box<dyn Passthrough>>,
    /// Empty names the header starts with; only lines starting with as many empty fields are rows.
    record_lead: usize,
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
        let numbers = number_style(path, &header, &columns, skip_line)?;
        let scan = prescan(path, &header, &columns, skip_line, &numbers)?;
        if scan.data_rows == 0 {
            return Err(Error::in_file(path, format!("no data rows after the header on line {}", header.line)));
        }
        if let (SignColumns::State { column, charge, discharge }, false) = (&columns.sign, scan.other_states.is_empty()) {
            let others = scan.other_states.join(", ");
            if !scan.state_matched {
                let msg = format!(
                    "no row's '{}' holds a charge value ({}) or a discharge value ({}); it holds {others}{}",
                    column.name,
                    charge.join(", "),
                    discharge.join(", "),
                    misdecoded_hint(&others)
                );
                return Err(Error::in_file(path, msg));
            }
            metadata.warnings.push(format!(
                "rows whose '{}' is {others} carry current but are neither a charge nor a discharge value: they keep the current's own sign",
                column.name
            ));
        }
        metadata.sign_from_data = scan.votes.total() > 0;
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
            numbers,
            sign_factor,
            skip_line,
            metadata,
            passthrough: None,
            record_lead: header.record_lead,
            preamble: header.preamble,
        })
    }

    /// The lines above the header (vendor summaries), for format-specific metadata.
    pub fn preamble(&self) -> &[String] {
        &self.preamble
    }

    pub fn set_passthrough(&mut self, passthrough: Box<dyn Passthrough>) {
        self.passthrough = Some(passthrough);
    }

    /// Reads one data line into `chunk`.
    fn push_row(&mut self, chunk: &mut RawChunk, number: u64) -> Result<()> {
        let columns = &self.columns;
        // More fields than the header shifts no column we can see, but means a value holds the
        // delimiter (a decimal comma in a comma-separated file): its neighbours are misread. One
        // empty field more is a trailing delimiter the header line lacks.
        let trailing_delimiter = self.fields.len() == self.header_fields + 1 && self.fields.get(self.header_fields) == Some("");
        if self.fields.len() != self.header_fields && !trailing_delimiter {
            let msg = format!("the row has {} fields, the header {}", self.fields.len(), self.header_fields);
            return Err(Error::at_row(&self.path, number, None, msg));
        }
        let cells = Cells { path: &self.path, row: number, fields: &self.fields, numbers: &self.numbers };
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
    Ok(if names(charge, state) {
        current.abs()
    } else if names(discharge, state) {
        -current.abs()
    } else {
        current
    })
}

/// Whether a state cell holds one of `values`, compared as column names are (case, spaces and
/// underscores aside: Neware's BTS 7 writes `CC_DChg`, BTS 8 `CC DChg`).
fn names(values: &[String], state: &str) -> bool {
    values.iter().any(|v| key_chars(v).eq(key_chars(state)))
}

impl CyclerReader for DelimitedReader {
    fn metadata(&self) -> &SourceMetadata {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut SourceMetadata {
        &mut self.metadata
    }

    fn next_chunk(&mut self) -> Result<Option<RawChunk>> {
        let mut chunk = RawChunk::default();
        while chunk.len() < CHUNK_ROWS {
            let Some((number, text)) = self.lines.next_line()? else { break };
            if blank(text, self.delimiter) || Some(number) == self.skip_line {
                continue;
            }
            self.fields.split(text, self.delimiter);
            if !is_record(&self.fields, self.record_lead) {
                continue;
            }
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
