//! Spreadsheet workbooks (xlsx, xlsm, xlsb, xls, ods), as Arbin's MITS Pro, Neware's BTS and
//! Landt's LANDdt export them. The sheets that hold the time series are written out as one
//! temporary CSV (removed with its reader) and read by the delimited layout whose header they
//! carry, so a workbook reads exactly as the same table saved as CSV. calamine reads the
//! workbook; a sheet is read whole (Excel's 1,048,576 rows per sheet bound it).
//!
//! The CSV has a line per sheet row, so an error names the workbook, the sheet and the row a
//! spreadsheet shows. A record longer than a sheet goes on over sheets that repeat its header
//! (as Arbin splits one); those are read in workbook order after the first while the time goes
//! on (a sheet that starts it again is another channel's, refused), and row numbers in ingest's
//! warnings then count through them.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use calamine::{Data, Reader};

use super::detect::{detect_delimited, Detected};
use super::{ColumnMap, CyclerReader, Format};
use crate::data::raw::{RawChunk, SourceMetadata};
use crate::{Error, Result};

const EXTENSIONS: [&str; 5] = ["xlsx", "xlsm", "xlsb", "xls", "ods"];

/// Whether `path` is a workbook: named as one (calamine tells the kinds apart by the name) and
/// a zip archive (xlsx, xlsm, xlsb, ods) or an OLE2 file (xls). Some cyclers write tab-separated
/// text named `.xls`; that is read as text.
pub(super) fn is_workbook(path: &Path) -> bool {
    let named = path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.iter().any(|w| e.eq_ignore_ascii_case(w)));
    let mut head = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
    named && read.is_ok() && (head == *b"PK\x03\x04" || head == [0xD0, 0xCF, 0x11, 0xE0])
}

/// The format of the workbook's time series, from the headers of its sheets.
pub(super) fn detect(path: &Path) -> Result<Format> {
    let book = WorkbookCsv::convert(path, None)?;
    Ok(book.format.expect("a detected workbook has a format"))
}

/// Opens a converted workbook's time series as `format` (given, or as [`detect`] found it).
pub(super) fn open(book: WorkbookCsv, format: Format, column_map: Option<&ColumnMap>) -> Result<Box<dyn CyclerReader>> {
    if matches!(format, Format::Parquet | Format::Battdat) {
        return Err(Error::in_file(&book.workbook, format!("a spreadsheet workbook, not {format}")));
    }
    let mut inner = super::open_format(&book.csv, format, column_map).map_err(|e| book.locate(e))?;
    let sheets = book.parts.iter().map(|p| serde_json::Value::String(p.sheet.clone())).collect();
    inner.metadata_mut().extra.insert("workbook_sheets".into(), serde_json::Value::Array(sheets));
    Ok(Box::new(WorkbookReader { inner, book, last_time: None }))
}

/// A delimited reader over the workbook's CSV, its errors located in the workbook.
struct WorkbookReader {
    inner: Box<dyn CyclerReader>,
    book: WorkbookCsv,
    /// The time of the last row read, to see a later sheet start its clock again.
    last_time: Option<f64>,
}

impl WorkbookReader {
    /// Sheets that repeat a header are one record only while its time goes on: one that starts
    /// again is another channel's (an export of several channels), which is another cell.
    fn check_continued(&mut self, chunk: &RawChunk) -> Result<()> {
        for (&line, &time) in chunk.source_row.iter().zip(&chunk.test_time) {
            let starts_a_sheet = self.book.parts.iter().skip(1).any(|p| p.first_line == line);
            if let Some(last) = self.last_time.filter(|&last| starts_a_sheet && time < last) {
                let message = format!(
                    "this sheet repeats the header of sheet '{}' but its time starts again ({time} s after {last} s): \
                     a sheet per channel? Save each channel's sheet as a workbook or CSV of its own",
                    self.book.parts[0].sheet
                );
                return Err(self.book.locate(Error::at_row(&self.book.csv, line, None, message)));
            }
            self.last_time = Some(time);
        }
        Ok(())
    }
}

impl CyclerReader for WorkbookReader {
    fn metadata(&self) -> &SourceMetadata {
        self.inner.metadata()
    }

    fn metadata_mut(&mut self) -> &mut SourceMetadata {
        self.inner.metadata_mut()
    }

    fn next_chunk(&mut self) -> Result<Option<RawChunk>> {
        let chunk = self.inner.next_chunk().map_err(|e| self.book.locate(e))?;
        if let Some(chunk) = &chunk {
            if self.book.parts.len() > 1 {
                self.check_continued(chunk)?;
            }
        }
        Ok(chunk)
    }

    fn sheet_row(&self, source_row: u64) -> Option<(&str, u64)> {
        Some(self.book.sheet_row(source_row))
    }
}

/// How an error names a place in a workbook: `book.xlsx (sheet 'S')`, `sheets` quoted as there.
pub(crate) fn in_sheets(workbook: &Path, sheets: &str) -> PathBuf {
    PathBuf::from(format!("{} (sheet {sheets})", workbook.display()))
}

/// One sheet of the CSV: its name, the CSV line its rows start at and that line's sheet row.
struct Part {
    sheet: String,
    first_line: u64,
    sheet_row: u64,
}

/// The time-series sheets of a workbook as one CSV file.
pub(super) struct WorkbookCsv {
    workbook: PathBuf,
    csv: tempfile::TempPath,
    /// The format the sheets' header was detected as (`None` where a given format read sheets
    /// that no layout recognises, as a column map does).
    pub format: Option<Format>,
    parts: Vec<Part>,
}

/// One sheet written out as CSV.
struct SheetCsv {
    name: String,
    csv: tempfile::TempPath,
    rows: u64,
    /// Its first non-blank line: a sheet that repeats it continues the record.
    first_line: String,
    format: Option<Format>,
}

impl WorkbookCsv {
    /// Writes every sheet out, detects each one's header, and keeps the sheets of the time series:
    /// the longest sheet of `wanted`'s format (of any detected format when `None`; of any sheet
    /// when a given format matches none, as a column map's), with the sheets that repeat its first
    /// line, in workbook order.
    pub fn convert(path: &Path, wanted: Option<Format>) -> Result<WorkbookCsv> {
        let mut book = calamine::open_workbook_auto(path).map_err(|e| Error::in_file(path, format!("cannot read the workbook: {e}")))?;
        let mut sheets = Vec::new();
        for name in book.sheet_names() {
            let range = book.worksheet_range(&name).map_err(|e| Error::in_file(path, format!("cannot read sheet '{name}': {e}")))?;
            if let Some(sheet) = write_sheet(path, &name, &range)? {
                sheets.push(sheet);
            }
        }
        let matches = |s: &SheetCsv| s.format.is_some() && (wanted.is_none() || s.format == wanted);
        let mut candidates: Vec<usize> = (0..sheets.len()).filter(|&i| matches(&sheets[i])).collect();
        if candidates.is_empty() && wanted.is_some() {
            candidates = (0..sheets.len()).collect();
        }
        let Some(&longest) = candidates.iter().rev().max_by_key(|&&i| sheets[i].rows) else {
            return Err(no_time_series(path, &sheets));
        };
        let (format, first_line) = (sheets[longest].format, sheets[longest].first_line.clone());
        candidates.retain(|&i| sheets[i].format == format && sheets[i].first_line == first_line);
        let group: Vec<SheetCsv> = sheets.into_iter().enumerate().filter(|(i, _)| candidates.contains(i)).map(|(_, s)| s).collect();
        let (csv, parts) = join(path, group)?;
        Ok(WorkbookCsv { workbook: path.to_path_buf(), csv, format, parts })
    }

    /// The sheet of the CSV's `line` and the row a spreadsheet shows for it there.
    fn sheet_row(&self, line: u64) -> (&str, u64) {
        let part = self.parts.iter().rev().find(|p| p.first_line <= line).unwrap_or(&self.parts[0]);
        (&part.sheet, part.sheet_row + line.saturating_sub(part.first_line))
    }

    /// `e` with the CSV's name and line replaced by the workbook's, the sheet's and its row.
    fn locate(&self, e: Error) -> Error {
        let sheets = || self.parts.iter().map(|p| format!("'{}'", p.sheet)).collect::<Vec<_>>().join(", ");
        let named = |sheets: String| in_sheets(&self.workbook, &sheets);
        match e {
            Error::Input { file, row: Some(line), field, message } if file == *self.csv => {
                let (sheet, row) = self.sheet_row(line);
                Error::Input { file: named(format!("'{sheet}'")), row: Some(row), field, message }
            }
            Error::Input { file, row: None, field, message } if file == *self.csv => Error::Input { file: named(sheets()), row: None, field, message },
            Error::Io { path, source } if path == *self.csv => Error::Io { path: named(sheets()), source },
            other => other,
        }
    }
}

/// Writes a sheet as CSV, a line per row from the sheet's first (blank lines above its used
/// range, so that line numbers are its rows); `None` for an empty sheet.
fn write_sheet(workbook: &Path, name: &str, range: &calamine::Range<Data>) -> Result<Option<SheetCsv>> {
    let Some((top, _)) = range.start() else { return Ok(None) };
    let csv = temp_csv(workbook, "voltlens-sheet-")?;
    let file = std::fs::File::create(&csv).map_err(|e| Error::io(&csv, e))?;
    let mut out = BufWriter::new(file);
    let mut line = String::new();
    let mut first_line = None;
    let mut write = |text: &str| writeln!(out, "{text}").map_err(|e| Error::io(&csv, e));
    for _ in 0..top {
        write("")?;
    }
    for row in range.rows() {
        line.clear();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            push_cell(&mut line, cell);
        }
        if first_line.is_none() && line.bytes().any(|b| b != b',') {
            first_line = Some(line.clone());
        }
        write(&line)?;
    }
    out.flush().map_err(|e| Error::io(&csv, e))?;
    drop(out);
    let Some(first_line) = first_line else { return Ok(None) };
    let format = match detect_delimited(&csv)? {
        Detected::Format(format) => Some(format),
        Detected::Unknown(_) => None,
    };
    Ok(Some(SheetCsv { name: name.to_owned(), csv, rows: range.height() as u64, first_line, format }))
}

/// A cell as a CSV field: numbers as Rust writes them (shortest round trip, `.` decimals),
/// durations (Excel's `[h]:mm:ss` cells, OpenDocument's `PT…`) as elapsed `H:MM:SS.fff` and
/// date-times as `YYYY-MM-DD HH:MM:SS.fff` (both forms the delimited reader takes for time), an
/// error cell as Excel shows it (`#DIV/0!`, which the reader then reports at its row), text
/// quoted where it holds a comma or a quote.
fn push_cell(line: &mut String, cell: &Data) {
    use std::fmt::Write as _;
    match cell {
        Data::Empty => {}
        Data::Int(i) => write!(line, "{i}").expect("to a String"),
        Data::Float(x) => write!(line, "{x}").expect("to a String"),
        Data::Bool(b) => line.push_str(if *b { "TRUE" } else { "FALSE" }),
        Data::DateTime(t) if t.is_duration() => push_elapsed(line, (t.as_f64() * 86_400_000.0).round() as i64),
        Data::DateTime(t) => match t.as_datetime() {
            Some(t) => write!(line, "{}", t.format("%Y-%m-%d %H:%M:%S%.3f")).expect("to a String"),
            None => write!(line, "{}", t.as_f64()).expect("to a String"),
        },
        Data::DurationIso(s) => match iso_duration_ms(s) {
            Some(ms) => push_elapsed(line, ms),
            None => push_text(line, s),
        },
        Data::String(s) | Data::DateTimeIso(s) => push_text(line, s),
        Data::Error(e) => write!(line, "{e}").expect("to a String"),
    }
}

/// Milliseconds as elapsed `H:MM:SS.fff`, hours past 24.
fn push_elapsed(line: &mut String, ms: i64) {
    use std::fmt::Write as _;
    let (sign, ms) = (if ms < 0 { "-" } else { "" }, ms.unsigned_abs());
    write!(line, "{sign}{}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000).expect("to a String");
}

/// An OpenDocument duration (`PT25H02M03.5S`, as ods stores a time-valued cell) in milliseconds.
fn iso_duration_ms(s: &str) -> Option<i64> {
    let mut rest = s.trim().strip_prefix("PT")?;
    let mut ms = 0.0;
    for (unit, scale) in [('H', 3_600_000.0), ('M', 60_000.0), ('S', 1000.0)] {
        if let Some((value, after)) = rest.split_once(unit) {
            ms += value.parse::<f64>().ok()? * scale;
            rest = after;
        }
    }
    rest.is_empty().then_some(ms.round() as i64)
}

fn push_text(line: &mut String, s: &str) {
    let s = s.replace(['\r', '\n'], " ");
    if s.contains([',', '"']) {
        line.push('"');
        line.push_str(&s.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(&s);
    }
}

/// The sheets of one record as one CSV: the first whole, each later one from the line after its
/// repeated first line. One sheet is used as written.
fn join(workbook: &Path, mut group: Vec<SheetCsv>) -> Result<(tempfile::TempPath, Vec<Part>)> {
    let part = |s: &SheetCsv, first_line, sheet_row| Part { sheet: s.name.clone(), first_line, sheet_row };
    if group.len() == 1 {
        let sheet = group.pop().expect("one sheet");
        let parts = vec![part(&sheet, 1, 1)];
        return Ok((sheet.csv, parts));
    }
    let csv = temp_csv(workbook, "voltlens-workbook-")?;
    let mut out = BufWriter::new(std::fs::File::create(&csv).map_err(|e| Error::io(&csv, e))?);
    let (mut parts, mut written) = (Vec::new(), 0u64);
    for (i, sheet) in group.iter().enumerate() {
        let lines = BufReader::new(std::fs::File::open(&sheet.csv).map_err(|e| Error::io(&sheet.csv, e))?).lines();
        let mut started = i == 0;
        for (n, text) in lines.enumerate() {
            let text = text.map_err(|e| Error::io(&sheet.csv, e))?;
            if !started {
                started = text == sheet.first_line;
                continue;
            }
            if parts.len() == i {
                parts.push(part(sheet, written + 1, n as u64 + 1));
            }
            writeln!(out, "{text}").map_err(|e| Error::io(&csv, e))?;
            written += 1;
        }
    }
    out.flush().map_err(|e| Error::io(&csv, e))?;
    Ok((csv, parts))
}

/// A new empty temporary CSV file, removed when its path is dropped.
fn temp_csv(workbook: &Path, prefix: &str) -> Result<tempfile::TempPath> {
    let temp = tempfile::Builder::new().prefix(prefix).suffix(".csv").tempfile().map_err(|e| Error::io(workbook, e))?;
    Ok(temp.into_temp_path())
}

/// No sheet carries a header a layout knows: the sheets and their sizes, and what to do.
fn no_time_series(path: &Path, sheets: &[SheetCsv]) -> Error {
    let listed: Vec<String> = sheets.iter().map(|s| format!("'{}' ({} rows)", s.name, s.rows)).collect();
    let listed = if listed.is_empty() { "every sheet is empty".to_owned() } else { format!("sheets {}", listed.join(", ")) };
    Error::in_file(path, format!("no sheet has a known column header ({listed}); with --format mapped and a column map its longest sheet is read"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_become_elapsed_times_the_reader_takes() {
        let cell = |d: Data| {
            let mut line = String::new();
            push_cell(&mut line, &d);
            line
        };
        assert_eq!(cell(Data::DurationIso("PT25H02M03.5S".into())), "25:02:03.500");
        assert_eq!(cell(Data::DurationIso("PT90S".into())), "0:01:30.000");
        assert_eq!(cell(Data::DurationIso("P1DT2H".into())), "P1DT2H", "a form it does not know stays text");
        let excel = calamine::ExcelDateTime::new(1.0 + 1.0 / 24.0 + 0.5 / 86_400.0, calamine::ExcelDateTimeType::TimeDelta, false);
        assert_eq!(cell(Data::DateTime(excel)), "25:00:00.500");
        assert_eq!(cell(Data::String("a, \"b\"".into())), "\"a, \"\"b\"\"\"");
    }
}
