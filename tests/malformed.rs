//! A corpus of malformed inputs generated from the small sample of every format: truncations at
//! every line and mid-line, bit flips, other encodings and delimiters, duplicated and reordered
//! headers, huge, tiny and non-finite numbers, empty cells and values with units. Every case is
//! ingested: none may panic, a refused file leaves nothing behind and its error names the file
//! (and, for a bad value, its row and field); an accepted one gives a complete dataset of finite
//! values. Property tests throw random edits at the same readers.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use voltlens::data::canonical::{read_cell, Dataset};
use voltlens::data::formats::{ColumnMap, Format};
use voltlens::data::ingest::{ingest, IngestOptions};

/// A sample file of one format: its name, bytes, the line of its header (0-based), the field
/// separator and the column holding voltage.
struct Sample {
    name: &'static str,
    bytes: Vec<u8>,
    header_line: usize,
    separator: u8,
    voltage_column: usize,
    format: Option<Format>,
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(common::repo().join("tests/fixtures/formats").join(name)).unwrap()
}

fn samples() -> Vec<Sample> {
    let s = |name, header_line, separator, voltage_column, format| Sample { name, bytes: fixture(name), header_line, separator, voltage_column, format };
    vec![
        s("arbin_small.csv", 0, b',', 7, None),
        s("biologic_small.csv", 0, b';', 3, None),
        s("maccor_small.022", 1, b'\t', 8, None),
        s("novonix_small.csv", 12, b',', 6, None),
        s("tiny-00-cccv_timeseries.csv", 0, b',', 4, None),
        s("mapped_small.csv", 1, b';', 2, Some(Format::Mapped)),
    ]
}

/// One malformed input: what was done, and the row and field it broke when it broke one value.
struct Case {
    what: String,
    bytes: Vec<u8>,
    value_at: Option<u64>,
}

fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes.split_inclusive(|&b| b == b'\n').collect()
}

fn replace_field(line: &[u8], sep: u8, column: usize, value: &[u8]) -> Vec<u8> {
    // Novonix quotes whole lines; keep the quotes around the edited line.
    let (open, body, close) = match (line.first(), line.iter().rposition(|&b| b == b'"')) {
        (Some(b'"'), Some(end)) if end > 0 => (&line[..1], &line[1..end], &line[end..]),
        _ => (&line[..0], line, &line[line.len()..]),
    };
    let trimmed = body.strip_suffix(b"\n").unwrap_or(body);
    let mut fields: Vec<Vec<u8>> = trimmed.split(|&b| b == sep).map(<[u8]>::to_vec).collect();
    if column < fields.len() {
        fields[column] = value.to_vec();
    }
    let mut out = [open, &fields.join(&[sep][..])[..], close].concat();
    if body.ends_with(b"\n") || (close.is_empty() && line.ends_with(b"\n")) {
        out.push(b'\n');
    }
    out
}

fn corpus(sample: &Sample) -> Vec<Case> {
    let bytes = &sample.bytes;
    let ls = lines(bytes);
    let mut cases = Vec::new();
    let mut push = |what: String, bytes: Vec<u8>, value_at: Option<u64>| cases.push(Case { what, bytes, value_at });
    // Truncations at every line end and in the middle of every line.
    let mut offset = 0;
    for (i, line) in ls.iter().enumerate() {
        push(format!("cut in the middle of line {}", i + 1), bytes[..offset + line.len() / 2].to_vec(), None);
        offset += line.len();
        if offset < bytes.len() {
            push(format!("cut after line {}", i + 1), bytes[..offset].to_vec(), None);
        }
    }
    // Bit flips at places drawn from a fixed seed.
    let mut rng = ChaCha8Rng::seed_from_u64(bytes.len() as u64);
    for _ in 0..8 {
        let (at, bit) = (rng.random_range(0..bytes.len()), rng.random_range(0..8));
        let mut flipped = bytes.clone();
        flipped[at] ^= 1 << bit;
        push(format!("bit {bit} of byte {at} flipped"), flipped, None);
    }
    // Other encodings.
    let text = String::from_utf8_lossy(bytes);
    let utf16: Vec<u8> = [0xFF, 0xFE].into_iter().chain(text.encode_utf16().flat_map(u16::to_le_bytes)).collect();
    push("UTF-16LE with a byte-order mark".into(), utf16, None);
    let latin1: Vec<u8> = text.chars().map(|c| if (c as u32) < 256 { c as u32 as u8 } else { b'?' }).collect();
    push("Latin-1".into(), latin1, None);
    // Other delimiters.
    for to in [b';', b'\t', b'|'] {
        if to != sample.separator {
            let swapped = bytes.iter().map(|&b| if b == sample.separator { to } else { b }).collect();
            push(format!("separator {:?} for {:?}", to as char, sample.separator as char), swapped, None);
        }
    }
    // Headers: repeated after the first data row, two names swapped, a name doubled.
    let h = sample.header_line;
    let (head, data) = ls.split_at(h + 1);
    if let Some(first) = data.first() {
        let repeated = [head.concat(), first.to_vec(), ls[h].to_vec(), data[1..].concat()].concat();
        push("header repeated after the first data row".into(), repeated, None);
    }
    let names: Vec<&[u8]> = ls[h].split(|&b| b == sample.separator).collect();
    if names.len() > 3 {
        let mut swapped = names.clone();
        swapped.swap(1, sample.voltage_column);
        let mut header = swapped.join(&[sample.separator][..]);
        if !header.ends_with(b"\n") {
            header.push(b'\n');
        }
        push("voltage and another column's names swapped".into(), [head[..h].concat(), header.clone(), data.concat()].concat(), None);
        let mut doubled = names.clone();
        doubled[1] = names[sample.voltage_column];
        let mut header = doubled.join(&[sample.separator][..]);
        if !header.ends_with(b"\n") {
            header.push(b'\n');
        }
        push("voltage column named twice".into(), [head[..h].concat(), header, data.concat()].concat(), None);
    }
    // One value of the second data row: huge, tiny, not finite, empty, with a unit, not a number.
    if data.len() >= 2 {
        let row = (h + 3) as u64; // 1-based line of the second data row
        for value in ["1e308", "1e400", "-1e400", "1e-320", "NaN", "inf", "-inf", "", "3.6V", "3,6", "abc"] {
            let mut edited: Vec<Vec<u8>> = ls.iter().map(|l| l.to_vec()).collect();
            edited[h + 2] = replace_field(ls[h + 2], sample.separator, sample.voltage_column, value.as_bytes());
            push(format!("voltage of line {row} set to {value:?}"), edited.concat(), Some(row));
        }
    }
    cases
}

/// What went wrong with one case, if anything; `refused` counts the cases refused cleanly.
fn check(name: &str, format: Option<Format>, case: &Case, dir: &Path, refused: &mut usize) -> Option<String> {
    let input_dir = dir.join("in");
    std::fs::create_dir_all(&input_dir).unwrap();
    let input = input_dir.join(name);
    std::fs::write(&input, &case.bytes).unwrap();
    let out = dir.join("out");
    let opts = IngestOptions {
        format,
        column_map: format.map(|_| common::repo().join("tests/fixtures/formats/mapped_small.toml")),
        ..IngestOptions::default()
    };
    let result = catch_unwind(AssertUnwindSafe(|| ingest(&[input.clone()], &out, &opts)));
    let problem = match result {
        Err(_) => Some("panicked".to_owned()),
        Ok(Ok(_)) => complete(&out).err(),
        Ok(Err(e)) => {
            *refused += 1;
            let message = e.to_string();
            let leftovers: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "in").collect();
            if !message.contains(name) {
                Some(format!("error does not name the file: {message}"))
            } else if !leftovers.is_empty() {
                Some(format!("left {leftovers:?} behind: {message}"))
            } else if case.value_at.is_some() && !(message.contains(", row ") && (message.contains(", field '") || message.contains("fields, the header"))) {
                Some(format!("error does not name row and field: {message}"))
            } else {
                None
            }
        }
    };
    std::fs::remove_dir_all(dir).unwrap();
    problem.map(|p| format!("{name}: {}: {p}", case.what))
}

/// An accepted input gave a whole dataset: every cell readable, every value finite (SOC is
/// missing as a whole in a cell without a trustworthy anchor, and finite in every other).
fn complete(out: &Path) -> Result<(), String> {
    let dataset = Dataset::load(out).map_err(|e| format!("accepted, but the output does not load: {e}"))?;
    for data in &dataset.data {
        let soc_whole = data.soc.iter().all(|v| v.is_finite()) || data.soc.iter().all(|v| v.is_nan());
        let finite = soc_whole
            && data.voltage.iter().chain(&data.current).all(|v| v.is_finite())
            && data.test_time.iter().all(|t| t.is_finite());
        if !finite {
            return Err(format!("accepted with non-finite values in cell {}", data.cell_id));
        }
    }
    Ok(())
}

#[test]
fn a_corpus_of_malformed_files_is_refused_cleanly_or_read_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut total, mut refused, mut problems) = (0, 0, Vec::new());
    for sample in samples() {
        for (i, case) in corpus(&sample).iter().enumerate() {
            total += 1;
            let dir = tmp.path().join(format!("{}-{i}", sample.name));
            problems.extend(check(sample.name, sample.format, case, &dir, &mut refused));
        }
    }
    eprintln!("{total} malformed inputs: {refused} refused, {} read whole, {} problems", total - refused, problems.len());
    assert!(total >= 100, "only {total} cases");
    assert!(problems.is_empty(), "{} of {total} cases:\n{}", problems.len(), problems.join("\n"));
}

/// A canonical Parquet file and a dataset holding it, cut and flipped: the Parquet reader (as an
/// ingest input) and the canonical reader refuse every broken copy without panicking.
#[test]
fn broken_parquet_files_are_refused_by_both_parquet_readers() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = tmp.path().join("ds");
    let cells = ingest(&[common::repo().join("tests/fixtures/formats/tiny-00-cccv_timeseries.csv")], &dataset, &IngestOptions::default()).unwrap();
    let file = voltlens::data::canonical::DatasetPaths::new(&dataset).cell_file(&cells[0].cell_id);
    let good = std::fs::read(&file).unwrap();
    let mut problems = Vec::new();
    let mut cases: Vec<(String, Vec<u8>)> = (1..16).map(|k| (format!("cut to {k}/16"), good[..good.len() * k / 16].to_vec())).collect();
    cases.push(("empty".into(), Vec::new()));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..16 {
        let at = rng.random_range(0..good.len());
        let mut flipped = good.clone();
        flipped[at] ^= 0x5A;
        cases.push((format!("byte {at} flipped"), flipped));
    }
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("case{i}.parquet"));
        std::fs::write(&path, bytes).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match catch_unwind(|| read_cell(&path)) {
            Err(_) => problems.push(format!("read_cell: {what}: panicked")),
            Ok(Err(e)) if !e.to_string().contains(&name) => problems.push(format!("read_cell: {what}: error does not name the file: {e}")),
            _ => {}
        }
        let out = tmp.path().join(format!("out{i}"));
        match catch_unwind(|| ingest(&[path.clone()], &out, &IngestOptions { format: Some(Format::Parquet), ..IngestOptions::default() })) {
            Err(_) => problems.push(format!("parquet ingest: {what}: panicked")),
            Ok(Err(e)) if !e.to_string().contains(&name) || out.exists() => problems.push(format!("parquet ingest: {what}: {e} (output left: {})", out.exists())),
            Ok(Ok(_)) => {
                if let Err(p) = complete(&out) {
                    problems.push(format!("parquet ingest: {what}: {p}"));
                }
            }
            Ok(Err(_)) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Column maps and pipeline files cut at every line: refused with the file named.
#[test]
fn truncated_settings_files_are_refused_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let map = fixture("mapped_small.toml");
    let pipeline = std::fs::read(common::repo().join("pipelines/quickstart.toml")).unwrap();
    let mut problems = Vec::new();
    for (name, bytes) in [("map.toml", &map), ("p.toml", &pipeline)] {
        let ls = lines(bytes);
        for k in 1..ls.len() {
            let cut = ls[..k].concat();
            let path = tmp.path().join(name);
            std::fs::write(&path, &cut).unwrap();
            let result = catch_unwind(|| match name {
                "map.toml" => ColumnMap::from_file(&path).map(drop),
                _ => voltlens::pipeline::PipelineConfig::load(&path).map(drop),
            });
            match result {
                Err(_) => problems.push(format!("{name} cut after line {k}: panicked")),
                Ok(Err(e)) if !e.to_string().contains(name) => problems.push(format!("{name} cut after line {k}: {e}")),
                _ => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any run of bytes written over any place of any sample: no panic, and a refusal names the
    /// file and leaves nothing behind, or the dataset is whole.
    #[test]
    fn random_edits_never_panic_or_leave_partial_output(which in 0usize..6, at in 0.0f64..1.0, junk in proptest::collection::vec(any::<u8>(), 1..12)) {
        let sample = &samples()[which];
        let mut bytes = sample.bytes.clone();
        let start = ((bytes.len() as f64) * at) as usize;
        for (k, b) in junk.iter().enumerate() {
            if start + k < bytes.len() { bytes[start + k] = *b } else { bytes.push(*b) }
        }
        let tmp = tempfile::tempdir().unwrap();
        let case = Case { what: format!("{junk:?} at byte {start}"), bytes, value_at: None };
        let problem = check(sample.name, sample.format, &case, &tmp.path().join("case"), &mut 0);
        prop_assert!(problem.is_none(), "{}", problem.unwrap_or_default());
    }

    /// Numbers of any size in the voltage column of the Arbin sample: read as they are when finite
    /// and in range, refused with row and field otherwise, never a panic.
    #[test]
    fn any_voltage_value_is_read_or_refused_with_its_row(v in prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(1e-310)]) {
        let sample = &samples()[0];
        let ls = lines(&sample.bytes);
        let mut edited: Vec<Vec<u8>> = ls.iter().map(|l| l.to_vec()).collect();
        edited[2] = replace_field(ls[2], b',', sample.voltage_column, format!("{v}").as_bytes());
        let tmp = tempfile::tempdir().unwrap();
        let case = Case { what: format!("voltage {v}"), bytes: edited.concat(), value_at: Some(3) };
        let problem = check(sample.name, None, &case, &tmp.path().join("case"), &mut 0);
        prop_assert!(problem.is_none(), "{}", problem.unwrap_or_default());
    }
}
