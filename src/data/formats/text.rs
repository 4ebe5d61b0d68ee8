//! Text files line by line (UTF-8 or Latin-1, 1-based line numbers, bounded line length) and
//! lines split into fields (RFC 4180 quotes, whole-line quotes as Novonix writes them).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Longer lines mean the file is not a text export; the cap keeps memory bounded on such files.
const MAX_LINE_BYTES: u64 = 1 << 20;

/// Windows tools' "Unicode text" exports (a UTF-16 byte-order mark first) are refused by name:
/// read as bytes, their column names would print alike and match nothing.
pub(super) fn refuse_utf16(path: &Path, head: &[u8]) -> Result<()> {
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        let msg = "UTF-16 text (a Windows \"Unicode text\" export); save it as UTF-8, e.g. `iconv -f UTF-16 -t UTF-8 IN > OUT.csv`";
        return Err(Error::in_file(path, msg));
    }
    Ok(())
}

/// What to append to an error about `text` (names, values) where it looks like a double-byte
/// encoding (GBK, Big5, Shift-JIS) read as Latin-1: runs of accented letters and control
/// characters where Chinese or Japanese names stood; else nothing. Latin-1 text ("Größe", "°C")
/// has a few such letters, not a fifth of its characters.
pub(super) fn misdecoded_hint(text: &str) -> &'static str {
    let high = |c: &char| ('\u{80}'..='\u{ff}').contains(c);
    let chars: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    let count = chars.iter().filter(|c| high(c)).count();
    let run = chars.windows(2).any(|w| high(&w[0]) && high(&w[1]));
    if count >= 4 && run && count * 5 >= chars.len() {
        "; these names are not UTF-8 and read as Latin-1 they look garbled: if the file is in a Chinese or Japanese \
         encoding (GBK, Big5, Shift-JIS), save it as UTF-8 first, e.g. `iconv -f GBK -t UTF-8 IN > OUT.csv`"
    } else {
        ""
    }
}

/// A text file read line by line, with 1-based line numbers and byte offsets.
pub(super) struct TextLines {
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
    /// Opens `path` at its start (UTF-16 refused by name: [`refuse_utf16`]).
    pub fn open(path: &Path) -> Result<Self> {
        let mut start = [0u8; 2];
        let read = File::open(path).and_then(|mut f| f.read(&mut start)).map_err(|e| Error::io(path, e))?;
        refuse_utf16(path, &start[..read])?;
        Self::open_at(path, 0, 0)
    }

    /// Opens `path` positioned at byte `offset`, which starts line `after_line + 1`.
    pub fn open_at(path: &Path, offset: u64, after_line: u64) -> Result<Self> {
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

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of the line last returned (0 before the first).
    pub fn line_number(&self) -> u64 {
        self.number
    }

    /// The byte offset just past the line last returned.
    pub fn offset(&self) -> u64 {
        self.offset
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
pub(super) fn decode_into(bytes: &[u8], out: &mut String) {
    out.clear();
    match std::str::from_utf8(bytes) {
        Ok(text) => out.push_str(text),
        Err(_) => out.extend(bytes.iter().map(|&b| b as char)),
    }
}

/// The fields of one line, unquoted, reusing their buffers from line to line.
#[derive(Default)]
pub(super) struct Fields {
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
