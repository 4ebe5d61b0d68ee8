//! Which format a file is in, from its first bytes: the Parquet magic (battdat's layout when its
//! footer carries battdat's column schema), else the first header line that one of the delimited
//! layouts recognises.

use std::io::Read;
use std::path::Path;

use super::csv_stream::{header_search_end, HEADER_SEARCH_LINES};
use super::layout::header_key;
use super::text::{Fields, TextLines};
use super::{delimited_layout, Format};
use crate::{Error, Result};

/// The delimited formats in the order they are tried: BatteryArchive before Arbin, whose names it
/// extends, then as `Format::ALL` lists them.
fn delimited() -> impl Iterator<Item = Format> {
    std::iter::once(Format::BatteryArchive).chain(Format::ALL.into_iter().filter(|&f| f != Format::BatteryArchive))
}

/// Columns that only one of the formats writes, counted for it besides the columns its layout
/// reads: an Arbin export names the same time, current, capacity and counter columns as a
/// BatteryArchive CSV, and without these would read as one, its `_Metadata.csv` unread.
const MARKERS: [(Format, &[&str]); 2] = [
    (Format::Arbin, &["Data_Point", "Step_Time", "Step_Time(s)", "Internal_Resistance", "Internal_Resistance(Ohm)"]),
    (Format::BatteryArchive, &["Environment_Temperature (C)"]),
];

pub fn detect(path: &Path) -> Result<Format> {
    let head = read_head(path)?;
    if head.is_empty() {
        return Err(Error::in_file(path, "empty file"));
    }
    if super::workbook::is_workbook(path) {
        return super::workbook::detect(path);
    }
    if head.starts_with(b"PAR1") {
        return Ok(if super::battdat::is_battdat(path)? { Format::Battdat } else { Format::Parquet });
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")) {
        return Err(Error::in_file(path, "named .parquet but does not start with the Parquet magic bytes 'PAR1'"));
    }
    super::text::refuse_utf16(path, &head)?;
    if looks_binary(&head) {
        let what = binary_kind(path, &head).unwrap_or("binary content, neither text nor Parquet");
        return Err(Error::in_file(path, format!("{what}; {}", supported())));
    }
    match detect_delimited(path)? {
        Detected::Format(format) => Ok(format),
        Detected::Unknown(widest) => {
            let seen = widest.map_or(String::new(), |(line, names)| {
                let shown: Vec<&str> = names.iter().take(12).map(String::as_str).collect();
                let more = if names.len() > shown.len() { ", …" } else { "" };
                format!(" (the widest line, {line}, names {}{more}: with a column map it reads as header_line = {line})", shown.join(", "))
            });
            Err(Error::in_file(path, format!("no known column header in the first {HEADER_SEARCH_LINES} lines{seen}; {}", supported())))
        }
    }
}

/// What the header search found: a format, or else the line splitting into most fields (its
/// number and names), which a column map could name.
pub(super) enum Detected {
    Format(Format),
    Unknown(Option<(u64, Vec<String>)>),
}

fn read_head(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = Vec::new();
    file.take(4096).read_to_end(&mut head).map_err(|e| Error::io(path, e))?;
    Ok(head)
}

/// NUL bytes or many control characters: no cycler writes those into a text export.
fn looks_binary(head: &[u8]) -> bool {
    let control = head.iter().filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')).count();
    head.contains(&0) || control * 20 > head.len()
}

/// Binary files users are likely to hand over, by magic bytes or extension, and how to get a
/// file VoltLens reads from each: cycler databases and binaries whose layouts are the vendors'
/// own, and workbooks that lost their extension.
const BINARY_KINDS: [(&[u8], &str, &str); 5] = [
    (b"BIO-LOGIC MODULAR FILE", "mpr", "a BioLogic EC-Lab binary (.mpr): export it as text in EC-Lab (Export as Text, .mpt), which is read as biologic"),
    (b"\x00\x01\x00\x00Standard Jet DB", "res", "an Arbin .res database (Microsoft Access): export the channel from MITS Pro or Data Watcher as CSV or xlsx"),
    (b"NEWARE", "nda", "a Neware binary (.nda): export the record from BTSDA as CSV or xlsx"),
    (b"PK\x03\x04", "ndax", "a zip archive (a Neware .ndax, or a workbook without its extension): export a .ndax from BTSDA as CSV or xlsx; name a workbook .xlsx, .xlsm or .ods"),
    (b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1", "xls", "an OLE2 compound file (an Excel 97-2003 workbook without its extension?): name it .xls"),
];

fn binary_kind(path: &Path, head: &[u8]) -> Option<&'static str> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    BINARY_KINDS.iter().find(|(magic, ext, _)| head.starts_with(magic) || extension.eq_ignore_ascii_case(ext)).map(|(_, _, what)| *what)
}

/// On the first of the first lines where a layout finds time and current or voltage: of the
/// layouts that do, the one naming most of the line's columns, its `MARKERS` included (the first
/// in [`delimited`] order on a tie).
pub(super) fn detect_delimited(path: &Path) -> Result<Detected> {
    let layouts: Vec<_> = delimited().filter_map(|f| Some((f, delimited_layout(f)?))).collect();
    let mut lines = TextLines::open(path)?;
    let mut fields = Fields::default();
    let mut stated = 0;
    let mut widest: Option<(u64, Vec<String>)> = None;
    while let Some((number, text)) = lines.next_line()? {
        for delimiter in [b',', b';', b'\t'] {
            fields.split(text, delimiter);
            if fields.len() >= 3 && widest.as_ref().is_none_or(|(_, names)| fields.len() > names.len()) {
                // Names, not a data row: most fields are not numbers.
                let names = fields.to_strings();
                if names.iter().filter(|n| n.trim().parse::<f64>().is_ok()).count() * 2 < names.len() {
                    widest = Some((number, names));
                }
            }
        }
        let search_end = header_search_end(number, text, &mut stated);
        let mut best: Option<(usize, Format)> = None;
        for (format, layout) in &layouts {
            let (score, delimiter) = layout.header_score(text, &mut fields);
            if score < 2 {
                continue;
            }
            fields.split(text, delimiter);
            let names = fields.to_strings();
            let markers = MARKERS.iter().filter(|(f, _)| f == format).flat_map(|(_, m)| m.iter());
            let named = layout.columns_named(&names) + markers.filter(|m| names.iter().any(|n| header_key(n) == header_key(m))).count();
            if best.is_none_or(|(most, _)| named > most) {
                best = Some((named, *format));
            }
        }
        if let Some((_, format)) = best {
            return Ok(Detected::Format(format));
        }
        if number >= search_end {
            break;
        }
    }
    Ok(Detected::Unknown(widest))
}

fn supported() -> String {
    let names: Vec<_> = Format::ALL.iter().filter(|&&f| f != Format::Mapped).map(|f| f.to_string()).collect();
    format!("supported formats: {} (the text ones also as xlsx, xls or ods workbooks); any other delimited file can be read with --format mapped and a column map", names.join(", "))
}
