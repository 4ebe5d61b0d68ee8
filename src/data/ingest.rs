//! `voltlens ingest`: cycler files → canonical Parquet (DESIGN.md §1).
//!
//! Per source: pass 1 cleans the time axis, checks values and spills the rows to a temporary
//! Parquet file while `StepTracker` summarises the steps; pass 2 streams the spill back and
//! writes the canonical file with the derived columns. The output directory is assembled beside
//! its final place and renamed in one step, so a failed or killed ingest leaves what was there.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::anchor::{Cutoff, CutoffSource, Cutoffs};
use crate::data::canonical::{self, CellData, CellWriter, DatasetPaths};
use crate::data::cells::{AnchorMethod, CellInfo};
use crate::data::schema::Method;
use crate::data::derive::{rest_threshold_a, CellDerivation, RowDeriver, StepTracker, NO_ANCHOR};
use crate::data::formats::{self, ColumnMap, CyclerReader, Format};
use crate::data::inspect::amp_hours;
use crate::data::raw::{RawChunk, SourceMetadata};
use crate::{Error, Result};

/// Settings of an ingest; the defaults suit the shipped data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestOptions {
    /// Force a format instead of detecting it from each file's header.
    pub format: Option<Format>,
    /// Column map for `format = "mapped"` (any CSV).
    pub column_map: Option<PathBuf>,
    /// Nominal capacity (Ah) for every input, overriding metadata and estimation.
    pub nominal_capacity_ah: Option<f64>,
    /// Time may step back by up to this much (s) and the row is dropped with a warning; beyond it
    /// the file is refused.
    pub time_tolerance_s: f64,
    /// |current| / nominal capacity above this means the current unit is wrong (mA read as A).
    pub max_c_rate: f64,
    /// Cut-off voltages (V) for every input, overriding metadata and inference (SOC anchors).
    pub upper_cutoff_v: Option<f64>,
    pub lower_cutoff_v: Option<f64>,
    /// Ingest the files that read and skip, with a warning each, those that do not (else one bad
    /// file of hundreds stops the ingest). Left out of the settings when off, so that pipelines
    /// written before it keep their fingerprints.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skip_unreadable: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            format: None,
            column_map: None,
            nominal_capacity_ah: None,
            time_tolerance_s: 1.0,
            max_c_rate: 40.0,
            upper_cutoff_v: None,
            lower_cutoff_v: None,
            skip_unreadable: false,
        }
    }
}

/// Files in a directory that belong to another file (metadata, ground truth, licences) and are
/// read by that file's reader, not ingested on their own; and the `~$book.xlsx` lock file a
/// spreadsheet leaves beside a workbook it has open.
fn is_sidecar(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    name.ends_with("_metadata.csv")
        || name.ends_with("_truth.csv")
        || name == "cells.json"
        || name.starts_with("license")
        || name.starts_with("readme")
        || name.starts_with('.')
        || name.starts_with("~$")
}

/// Expands directories (one level, sorted) into the files to ingest; a battdat battery folder
/// (`<battery>/raw_data.parquet`) counts as its file, whether given or found in a directory.
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let battdat_file = |dir: &Path| Some(dir.join(formats::RAW_DATA_FILE)).filter(|f| f.is_file());
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| Error::io(input, e))?;
        if let Some(file) = meta.is_dir().then(|| battdat_file(input)).flatten() {
            files.push(file);
        } else if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| Error::io(input, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter_map(|p| if p.is_dir() { battdat_file(&p) } else { Some(p) })
                .filter(|p| p.is_file() && !is_sidecar(p))
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(input.clone());
        }
    }
    if files.is_empty() {
        return Err(Error::Config("no input files found".to_owned()));
    }
    Ok(files)
}

/// Ingests every input into `out` (cells.parquet + timeseries/). Returns the cells table.
pub fn ingest(inputs: &[PathBuf], out: &Path, opts: &IngestOptions) -> Result<Vec<CellInfo>> {
    let files = collect_inputs(inputs)?;
    let column_map = match &opts.column_map {
        Some(p) => Some(ColumnMap::from_file(p)?),
        None => None,
    };
    // Open every file first, so an unreadable one fails the ingest before anything is written;
    // closed again until its turn, so that thousands of files need no more than a few handles.
    let opened: Vec<Result<(PathBuf, Format, String)>> = files
        .iter()
        .map(|file| {
            let (format, reader) = formats::open_detected(file, opts.format, column_map.as_ref())?;
            Ok((file.clone(), format, source_cell_id(reader.as_ref(), file)))
        })
        .collect();
    // With skip_unreadable, what was skipped and why; the dataset keeps the list.
    let mut skipped = Vec::new();
    let mut skip = opts.skip_unreadable.then_some(&mut skipped);
    let sources = all_or_every_error(opened, "inputs cannot be read", skip.as_deref_mut())?;
    refuse_duplicate_ids(sources.iter().map(|(f, _, id)| (id.clone(), f.display().to_string())).collect())?;
    for folder in inputs.iter().filter(|i| i.is_dir()) {
        let cells: Vec<(&Path, &str)> =
            sources.iter().filter(|(f, _, _)| f.parent() == Some(folder.as_path())).map(|(f, _, id)| (f.as_path(), id.as_str())).collect();
        formats::warn_unmatched_cells_json(folder, &cells)?;
    }
    let staging = DatasetStaging::new(out)?;
    // Rows, not files: one large file would show no progress until its end.
    let total = sources.len();
    let bar = crate::progress::counter(&format!("ingest 0/{total} files"), "rows read");
    let done = std::sync::atomic::AtomicUsize::new(0);
    let ingest_one = |(file, format, _): (PathBuf, Format, String)| {
        let reader = formats::open(&file, format, column_map.as_ref())?;
        let info = ingest_source(reader, &file, &format.to_string(), staging.paths(), opts, &bar);
        let done = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        bar.set_message(format!("ingest {done}/{total} files"));
        info
    };
    // A cell that fails half-way leaves nothing behind (its writer and spill remove themselves).
    let cells: Vec<CellInfo> = if opts.skip_unreadable {
        all_or_every_error(sources.into_par_iter().map(ingest_one).collect(), "inputs failed", skip)?
    } else {
        sources.into_par_iter().map(ingest_one).collect::<Result<_>>().map_err(|e| with_skip_hint(e, total))?
    };
    bar.finish_and_clear();
    if !skipped.is_empty() {
        crate::io::write_json(&staging.paths().skipped_list(), &skipped)?;
    }
    staging.commit(cells)
}

/// Every item, or the one error, or every error in one message (a folder of exports with
/// several bad files is fixed in one go, not one file per run); with `skip`, the items there
/// are, each error warned about and added to `skip`, unless there are none.
fn all_or_every_error<T>(results: Vec<Result<T>>, what: &str, skip: Option<&mut Vec<String>>) -> Result<Vec<T>> {
    let total = results.len();
    let (ok, errors): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let ok: Vec<T> = ok.into_iter().filter_map(Result::ok).collect();
    let mut errors: Vec<Error> = errors.into_iter().filter_map(Result::err).collect();
    let strict = skip.is_none();
    if let Some(skipped) = skip.filter(|_| !ok.is_empty()) {
        for e in &errors {
            tracing::warn!("skipped: {e}");
            skipped.push(e.to_string());
        }
        if !errors.is_empty() {
            tracing::warn!("skipped {} of {total} inputs; ingesting the other {}", errors.len(), ok.len());
        }
        return Ok(ok);
    }
    let hint = |e| if strict { with_skip_hint(e, total) } else { e };
    match errors.len() {
        0 => Ok(ok),
        1 => Err(hint(errors.remove(0))),
        n => {
            let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            Err(hint(Error::Config(format!("{n} of {total} {what}, so nothing was written:\n{}", lines.join("\n")))))
        }
    }
}

/// An input's error, with how to ingest the other inputs anyway where there are others.
fn with_skip_hint(e: Error, inputs: usize) -> Error {
    if inputs < 2 {
        return e;
    }
    Error::Config(format!("{e}\n(--skip-unreadable, or skip_unreadable = true under [data.options], ingests the inputs that read and skips the rest)"))
}

/// An output dataset directory built beside its final place and swapped in on success.
pub struct DatasetStaging {
    out: PathBuf,
    paths: DatasetPaths,
}

impl DatasetStaging {
    /// Refuses, before anything is written, an `out` that VoltLens may not replace.
    pub fn new(out: &Path) -> Result<Self> {
        crate::io::check_replaceable(out)?;
        let tmp = crate::io::fresh_temp_dir(out)?;
        Ok(DatasetStaging { out: out.to_path_buf(), paths: DatasetPaths::new(&tmp) })
    }

    pub fn paths(&self) -> &DatasetPaths {
        &self.paths
    }

    /// Writes the cells table and moves the directory into place (replacing an older one).
    /// Cells no rule anchored get their SOC from the dataset's OCV–SOC relation first (DESIGN §1.3).
    pub fn commit(self, mut cells: Vec<CellInfo>) -> Result<Vec<CellInfo>> {
        cells.sort_by(|a, b| a.cell_id.cmp(&b.cell_id));
        crate::data::ocv::anchor_by_ocv(&self.paths, &mut cells)?;
        for cell in cells.iter().filter(|c| c.anchor_method == AnchorMethod::Unanchored) {
            tracing::warn!("{}: {}", cell.source_file, NO_ANCHOR);
        }
        canonical::write_cells_table(&self.paths.cells_table(), &cells)?;
        crate::io::replace_dir(&self.paths.root, &self.out)?;
        Ok(cells)
    }
}

impl Drop for DatasetStaging {
    fn drop(&mut self) {
        // Still there only when commit did not happen.
        let _ = std::fs::remove_dir_all(&self.paths.root);
    }
}

/// Two sources with one cell id would write the same files: refused before anything is written.
/// `ids`: (cell id, source) pairs.
fn refuse_duplicate_ids(mut ids: Vec<(String, String)>) -> Result<()> {
    ids.sort();
    match ids.windows(2).find(|w| w[0].0 == w[1].0) {
        Some(w) => Err(Error::Config(format!("two inputs give the same cell id '{}' ({} and {})", w[0].0, w[0].1, w[1].1))),
        None => Ok(()),
    }
}

/// The cell id of a source: from its metadata, else its file name.
pub(crate) fn source_cell_id(reader: &dyn CyclerReader, source: &Path) -> String {
    cell_id_for(source, reader.metadata().extra.get("cell_id").and_then(|v| v.as_str()))
}

/// A usable cell id from a file name or metadata: letters, digits, '.', '_' and '-'.
pub fn cell_id_for(source: &Path, metadata_id: Option<&str>) -> String {
    let raw = metadata_id.map(str::to_owned).unwrap_or_else(|| {
        let stem = source.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "cell".to_owned());
        stem.trim_end_matches("_timeseries").to_owned()
    });
    crate::io::safe_name(&raw)
}

/// Ingests one source (a vendor file or a generated cell) into `paths`. `source` names it in
/// messages and in the cells table.
pub fn ingest_source(
    mut reader: Box<dyn CyclerReader>,
    source: &Path,
    format: &str,
    paths: &DatasetPaths,
    opts: &IngestOptions,
    rows_read: &indicatif::ProgressBar,
) -> Result<CellInfo> {
    let result = ingest_rows(reader.as_mut(), source, format, paths, opts, rows_read);
    result.map_err(|e| in_sheet(reader.as_ref(), source, e))
}

/// An error at a row of `source` located in its sheet, where the source is a workbook.
fn in_sheet(reader: &dyn CyclerReader, source: &Path, e: Error) -> Error {
    match e {
        Error::Input { file, row: Some(row), field, message } if file == source => match reader.sheet_row(row) {
            Some((sheet, row)) => Error::Input { file: crate::data::formats::in_sheets(source, &format!("'{sheet}'")), row: Some(row), field, message },
            None => Error::Input { file, row: Some(row), field, message },
        },
        other => other,
    }
}

/// How a warning names a source row: "row N", or in a workbook "sheet 'S', row N".
fn row_name(reader: &dyn CyclerReader, row: u64) -> String {
    match reader.sheet_row(row) {
        Some((sheet, row)) => format!("sheet '{sheet}', row {row}"),
        None => format!("row {row}"),
    }
}

fn ingest_rows(
    reader: &mut dyn CyclerReader,
    source: &Path,
    format: &str,
    paths: &DatasetPaths,
    opts: &IngestOptions,
    rows_read: &indicatif::ProgressBar,
) -> Result<CellInfo> {
    let meta = reader.metadata().clone();
    let cell_id = source_cell_id(reader, source);
    let given_capacity = opts.nominal_capacity_ah.or(meta.nominal_capacity_ah);
    if let Some(c) = given_capacity.filter(|c| !(c.is_finite() && *c > 0.0)) {
        return Err(Error::Config(format!("{}: nominal capacity must be a positive number of Ah, got {c}", source.display())));
    }
    let spill_path = paths.root.join(format!(".{cell_id}.pass1.parquet"));
    let _spill_guard = RemoveOnDrop(spill_path.clone());

    // Pass 1: clean, check, summarise steps, spill.
    let mut tracker = StepTracker::new(given_capacity);
    let mut cleaner = TimeCleaner::new(source, opts.time_tolerance_s);
    let mut counters = CounterFill::default();
    let mut spill: Option<ArrowWriter<File>> = None;
    let mut extremes = ExtremeRows::default();
    // Whether any row logs a temperature, and any but exactly 0 °C.
    let mut temperature_logged = (false, false);
    while let Some(chunk) = reader.next_chunk()? {
        rows_read.inc(chunk.len() as u64);
        for &t in chunk.temperature.iter().flatten() {
            temperature_logged = (true, temperature_logged.1 || t != 0.0);
        }
        let mut chunk = cleaner.clean(chunk)?;
        if chunk.is_empty() {
            continue;
        }
        counters.fill(&mut chunk);
        tracker.push_chunk(&chunk);
        for r in 0..chunk.len() {
            extremes.push(chunk.test_time[r], chunk.current[r], chunk.voltage[r], chunk.source_row[r]);
        }
        let batch = chunk.into_record_batch();
        if spill.is_none() {
            let f = File::create(&spill_path).map_err(|e| Error::io(&spill_path, e))?;
            spill = Some(ArrowWriter::try_new(f, batch.schema(), None).map_err(|e| Error::parquet(&spill_path, e))?);
        }
        spill.as_mut().expect("created").write(&batch).map_err(|e| Error::parquet(&spill_path, e))?;
    }
    let Some(spill) = spill else {
        return Err(Error::in_file(source, "no data rows"));
    };
    spill.close().map_err(|e| Error::parquet(&spill_path, e))?;
    let (flip, sign_warning) = check_sign(source, &tracker, &meta)?;
    if flip {
        tracker = retrack(&spill_path, true, given_capacity)?;
    }
    let cutoffs = given_cutoffs(source, &meta, opts)?;
    let mut derivation = CellDerivation::from_steps(&tracker, given_capacity, cutoffs);
    // A small cell whose capacity had to be estimated rests below a smaller current than pass 1
    // knew (a share of the capacity): its C/50 steps were taken for rests, and are steps again.
    if derivation.capacity_estimated && rest_threshold_a(Some(derivation.nominal_capacity_ah)) < tracker.rest_threshold_a() {
        tracker = retrack(&spill_path, flip, Some(derivation.nominal_capacity_ah))?;
        derivation = CellDerivation::from_steps(&tracker, None, cutoffs);
    }
    let name = |row| row_name(reader, row);
    let units_warning = check_units(source, &tracker, &derivation, &extremes, opts, &name)?;
    let gap_warning = extremes.gap_warning(derivation.nominal_capacity_ah, &name);
    let cutoff_warnings = extremes.cutoff_warnings(cutoffs, &name);

    // Pass 2: derive and write the canonical file.
    let out_path = paths.cell_file(&cell_id);
    let mut writer = CellWriter::create(&out_path)?;
    let mut deriver = RowDeriver::new(&derivation, tracker.steps());
    // Exactly 0 °C on every row is a placeholder (a BDF export's unfilled ambient column), not
    // a cell held at 0.000 °C through a test: read as not logged.
    let placeholder_temperature = temperature_logged == (true, false);
    for raw in read_spill(&spill_path, flip)? {
        let mut raw = raw?;
        if placeholder_temperature {
            raw.temperature.iter_mut().for_each(|t| *t = None);
        }
        writer.write(derive_rows(&cell_id, raw, &mut deriver))?;
    }
    let mut warnings = meta.warnings.clone();
    if placeholder_temperature {
        warnings.push("the temperature column reads exactly 0 °C on every row, a placeholder: read as not logged".to_owned());
    }
    warnings.extend(sign_warning);
    warnings.extend(units_warning);
    warnings.extend(gap_warning);
    warnings.extend(cutoff_warnings);
    warnings.extend(cleaner.warnings());
    warnings.extend(counters.warning(&name));
    warnings.extend(derivation.warnings.iter().cloned());
    // Whether the cell has no SOC anchor is known only after the dataset-level OCV pass (`commit`).
    for w in warnings.iter().filter(|w| *w != NO_ANCHOR) {
        tracing::warn!("{}: {w}", source.display());
    }
    let mut extra = meta.extra.clone();
    extra.insert("warnings".to_owned(), serde_json::json!(warnings));
    let cutoffs = derivation.soc_anchor.cutoffs;
    extra.insert("cutoff_sources".to_owned(), serde_json::json!({ "upper": cutoffs.upper.map(|c| c.source), "lower": cutoffs.lower.map(|c| c.source) }));
    let mut info = CellInfo {
        cell_id,
        source_file: source.display().to_string(),
        format: format.to_owned(),
        nominal_capacity_ah: derivation.nominal_capacity_ah,
        capacity_estimated: derivation.capacity_estimated,
        chemistry: meta.chemistry.clone(),
        protocol: meta.protocol.clone(),
        ambient_temperature_c: meta.ambient_temperature_c,
        rows: tracker.rows(),
        anchor_method: derivation.soc_anchor.method,
        anchor_uncertainty: derivation.soc_anchor.uncertainty,
        upper_cutoff_v: cutoffs.upper.map(|c| c.volts),
        lower_cutoff_v: cutoffs.lower.map(|c| c.volts),
        metadata: serde_json::Value::Object(extra).to_string(),
    };
    info.rows = writer.finish(&info)?;
    Ok(info)
}

/// Whether to negate the current because the voltage answers its steps the wrong way round
/// (`data::current_sign`), and what to tell the user. A sign the file's own capacity or state
/// columns settled is kept, and a disagreement only reported.
/// A current written unsigned (discharge as positive too, the sign only in a state column the
/// reader was not told of) is refused: half its steps would be stored backwards.
fn check_sign(source: &Path, tracker: &StepTracker, meta: &SourceMetadata) -> Result<(bool, Option<String>)> {
    // A file whose current never leaves rest (an idle record, µA of noise) shows no sign: its
    // noise "jumps" voted, and one such PEC file was refused as unsigned.
    if tracker.max_abs_current <= tracker.rest_threshold_a() {
        return Ok((false, None));
    }
    let cc_steps = tracker.steps().iter().filter(|s| s.method() == Method::ConstantCurrent);
    // Jumps vote from a tenth of the peak current up; a lone spike of a row must not set that bar
    // (it silenced a GITT's C/10 pulses, leaving two votes).
    let peak = tracker.held_abs_current;
    let votes = tracker.response.votes(peak, cc_steps.map(|s| (s.mean_current(), s.end_voltage - s.start_voltage)));
    let seen = format!("at {} of {} current jumps and constant-current steps the voltage moved against the current", votes.against, votes.with + votes.against);
    if !votes.reversed() {
        if votes.unsigned(tracker.min_current, peak) {
            return Err(Error::Input {
                file: source.to_path_buf(),
                row: None,
                field: Some("current".to_owned()),
                message: format!(
                    "the current is never negative, yet {seen}: it looks written unsigned, discharges as positive too. Give its sign: \
                     a column map's state column (`state` under [columns] with [state_values] charge = [...], discharge = [...], \
                     naming every discharge mode the file writes)"
                ),
            });
        }
        return Ok((false, None));
    }
    Ok(if meta.sign_from_data {
        (false, Some(format!("{seen}, although the file's capacity or state columns gave its sign: check which columns hold current and voltage")))
    } else {
        (true, Some(format!("current sign flipped to + = charge: {seen}, as it does where discharge is written as positive")))
    })
}

/// The steps of the spilled rows again, with the current flipped or the capacity known.
fn retrack(spill_path: &Path, flip: bool, capacity_ah: Option<f64>) -> Result<StepTracker> {
    let mut tracker = StepTracker::new(capacity_ah);
    for chunk in read_spill(spill_path, flip)? {
        tracker.push_chunk(&chunk?);
    }
    Ok(tracker)
}

/// The rows spilled by pass 1, chunk by chunk, the current negated where `flip`.
fn read_spill(path: &Path, flip: bool) -> Result<impl Iterator<Item = Result<RawChunk>>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let batches = ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.with_batch_size(crate::data::raw::CHUNK_ROWS).build())
        .map_err(|e| Error::parquet(path, e))?;
    let path = path.to_path_buf();
    Ok(batches.map(move |batch| {
        let mut raw = RawChunk::from_record_batch(&batch.map_err(|e| Error::arrow(&path, e))?);
        if flip {
            raw.current.iter_mut().for_each(|i| *i = -*i);
        }
        Ok(raw)
    }))
}

/// The cut-off voltages a setting or the source's metadata states: `upper_cutoff_v` and
/// `lower_cutoff_v`, else the voltage limits of a PyBaMM experiment in `steps`.
fn given_cutoffs(source: &Path, meta: &SourceMetadata, opts: &IngestOptions) -> Result<Cutoffs> {
    let given = |setting: Option<f64>, key: &str| -> Result<Option<Cutoff>> {
        let stated = meta.extra.get(key).and_then(serde_json::Value::as_f64);
        let volts = setting.or(stated).or_else(|| experiment_limit(meta, key == "upper_cutoff_v"));
        match volts {
            Some(v) if !(v.is_finite() && v > 0.0 && v < 10.0) => {
                Err(Error::Config(format!("{}: {key} must be a cell voltage in V, got {v}", source.display())))
            }
            v => Ok(v.map(|volts| Cutoff { volts, source: CutoffSource::Given })),
        }
    };
    let cutoffs = Cutoffs { upper: given(opts.upper_cutoff_v, "upper_cutoff_v")?, lower: given(opts.lower_cutoff_v, "lower_cutoff_v")? };
    if let (Some(u), Some(l)) = (cutoffs.upper, cutoffs.lower) {
        if u.volts <= l.volts {
            return Err(Error::Config(format!("{}: upper cut-off {} V is not above the lower {} V", source.display(), u.volts, l.volts)));
        }
    }
    Ok(cutoffs)
}

/// The voltage limit of a PyBaMM experiment's steps (its `Experiment` strings, as the team's
/// generator stores them in `steps`): the lowest "Discharge … until 3.01 V", or the highest
/// "Charge … until 4.19 V". A "Hold at 4.19 V until C/20" counts for the side of the step before
/// it (the CV phase of a CC-CV charge, or a hold at the end of a discharge); a hold that ends on
/// time ("Hold at 3.8 V for 2 hours", a calendar-style hold at any voltage) or follows a rest
/// states no limit. A limit the experiment never states is `None`.
fn experiment_limit(meta: &SourceMetadata, upper: bool) -> Option<f64> {
    let steps: Vec<&str> = meta.extra.get("steps")?.as_array()?.iter().filter_map(|s| s.as_str()).collect();
    // "until 3.01 V" or "until 3.01V"; never mV, A or C/20.
    let volts_after = |text: &str, word: &str| -> Option<f64> {
        let mut words = text[text.find(word)? + word.len()..].split_whitespace();
        let first = words.next()?;
        match first.strip_suffix('V') {
            Some(number) if !number.ends_with('m') => number.parse().ok(),
            Some(_) => None,
            None => (words.next() == Some("V")).then(|| first.parse().ok()).flatten(),
        }
    };
    fn kind(step: &str) -> &str {
        step.split_whitespace().next().unwrap_or("")
    }
    let side = if upper { "Charge" } else { "Discharge" };
    let limits = steps.iter().enumerate().filter_map(|(k, &step)| match kind(step) {
        "Hold" if k > 0 && kind(steps[k - 1]) == side && step.contains(" until ") => volts_after(step, "Hold at "),
        first if first == side => volts_after(step, "until "),
        _ => None,
    });
    if upper { limits.reduce(f64::max) } else { limits.reduce(f64::min) }
}

/// Canonical rows from cleaned raw rows.
fn derive_rows(cell_id: &str, raw: RawChunk, deriver: &mut RowDeriver) -> CellData {
    let n = raw.len();
    let mut out = CellData { cell_id: cell_id.to_owned(), ..Default::default() };
    for r in 0..n {
        let d = deriver.next(raw.test_time[r], raw.current[r], raw.step_index[r]);
        out.dt.push(d.dt);
        out.step_time.push(d.step_time);
        out.state.push(d.state);
        out.method.push(d.method);
        out.c_rate.push(d.c_rate);
        out.soc.push(d.soc);
        out.soh.push(d.soh);
        out.cycle_number.push(d.cycle_number);
        out.step_index.push(d.step_index);
    }
    out.test_time = raw.test_time;
    out.current = raw.current;
    out.voltage = raw.voltage;
    out.temperature = raw.temperature;
    out.gt = raw.passthrough.into_iter().filter(|(name, _)| name.starts_with("gt_")).collect();
    out
}

/// Source rows of the largest |current|, of the voltage farthest from a cell's range and of the
/// interval that moves most charge, so that the unit and time checks can point at one.
#[derive(Default)]
struct ExtremeRows {
    current: (f32, u64),
    voltage: (f32, u64),
    /// The highest and the lowest voltage, with their rows.
    highest: Option<(f32, u64)>,
    lowest: Option<(f32, u64)>,
    last: Option<(f64, f32)>,
    /// Of the intervals between rows that carry current of one sign at both ends: the most charge
    /// one moves (Ah), its length (s) and its closing row.
    widest: (f64, f64, u64),
}

/// A voltage this far past a stated cut-off (V) is warned about. Cyclers overshoot a limit by
/// millivolts as they switch to CV (13 mV at 0.13 s logging), and an HPPC's charge pulses at
/// full charge run 0.1–0.2 V past the cut-off its CC-CV charge names (PyBaMM's Chen2020,
/// Mohtat2020, Ai2020, OKane2022 cells); a failed simulation ran 1.0 V past it.
const CUTOFF_OVERSHOOT_V: f64 = 0.5;

/// An interval between two rows that moves more than this share of the cell's capacity, more
/// than the cell holds, cannot have carried current throughout: the test paused, or the clock
/// jumped (dates read with day and month swapped). Rows merely missing from a file (the shipped
/// Maccor excerpt moves 38 % of its capacity across one) stay below it.
const GAP_CAPACITY_SHARE: f64 = 1.0;

impl ExtremeRows {
    fn push(&mut self, t: f64, current: f32, voltage: f32, row: u64) {
        if current.abs() > self.current.0 {
            self.current = (current.abs(), row);
        }
        if self.highest.is_none_or(|(v, _)| voltage > v) {
            self.highest = Some((voltage, row));
        }
        if self.lowest.is_none_or(|(v, _)| voltage < v) {
            self.lowest = Some((voltage, row));
        }
        let outside = (voltage - 10.0).max(-1.0 - voltage);
        if outside > self.voltage.0 {
            self.voltage = (outside, row);
        }
        if let Some((last_t, last_i)) = self.last.filter(|(_, i)| *i * current > 0.0) {
            let ah = crate::data::derive::trapezoid_ah((last_t, last_i), (t, current)).abs();
            if ah > self.widest.0 {
                self.widest = (ah, t - last_t, row);
            }
        }
        self.last = Some((t, current));
    }

    /// The widest interval, described, where it moves more charge than any cycler logs at once.
    fn gap(&self, capacity_ah: f64, name: &dyn Fn(u64) -> String) -> Option<String> {
        let (ah, seconds, row) = self.widest;
        let hours = seconds / 3600.0;
        let length = if hours >= 48.0 { format!("{:.1} days", hours / 24.0) } else { format!("{hours:.1} h") };
        (ah > GAP_CAPACITY_SHARE * capacity_ah).then(|| {
            format!("{}: {length} pass since the row before while current flows, {:.0} % of the cell's capacity in one interval, more than it holds: a paused test, or dates read with day and month swapped?", name(row), 100.0 * ah / capacity_ah)
        })
    }

    fn gap_warning(&self, capacity_ah: f64, name: &dyn Fn(u64) -> String) -> Option<String> {
        self.gap(capacity_ah, name).map(|gap| format!("{gap} Charge counted across it puts SOC and capacity off"))
    }

    /// A warning for each stated cut-off the voltage runs well past (`CUTOFF_OVERSHOOT_V`): a
    /// cut-off stated for another cell, or a test (or simulation) that ran away. Anchors look
    /// for CV holds and discharges at the stated cut-offs, so a wrong one costs the cell its SOC.
    fn cutoff_warnings(&self, cutoffs: Cutoffs, name: &dyn Fn(u64) -> String) -> Vec<String> {
        let sides = [("upper", cutoffs.upper, self.highest, 1.0), ("lower", cutoffs.lower, self.lowest, -1.0)];
        sides
            .into_iter()
            .filter_map(|(side, cutoff, extreme, sign)| {
                let (cutoff, (volts, row)) = (cutoff?, extreme?);
                let past = sign * (volts as f64 - cutoff.volts);
                (past > CUTOFF_OVERSHOOT_V).then(|| {
                    format!(
                        "{}: the voltage reaches {volts:.3} V, {:.0} mV past the stated {side} cut-off of {:.3} V: a cut-off for another cell, or a test that ran away?",
                        name(row),
                        1000.0 * past,
                        cutoff.volts
                    )
                })
            })
            .collect()
    }
}

/// Refuses data whose magnitudes say the units are wrong (DESIGN §1.2); warns where they only
/// may be (an estimated capacity has nothing to be checked against).
fn check_units(
    source: &Path,
    tracker: &StepTracker,
    d: &CellDerivation,
    extremes: &ExtremeRows,
    opts: &IngestOptions,
    name: &dyn Fn(u64) -> String,
) -> Result<Option<String>> {
    let max_c = tracker.max_abs_current / d.nominal_capacity_ah;
    if !d.capacity_estimated && max_c > opts.max_c_rate {
        return Err(Error::Input {
            file: source.to_path_buf(),
            row: Some(extremes.current.1),
            field: Some("current".to_owned()),
            message: format!(
                "peak current {:.1} A is {max_c:.0}C for a {:.3} Ah cell, which is implausible: is the current in mA labelled as A?",
                tracker.max_abs_current, d.nominal_capacity_ah
            ),
        });
    }
    if d.capacity_estimated && d.nominal_capacity_ah > 1000.0 {
        // The estimate counted charge across an interval no cycler logs: the time is wrong, not the current.
        // No capacity to compare with: take what the peak current moves in an hour.
        // Where no single discharge is implausible, the file's cycles are: each holds many.
        let largest_discharge_ah = tracker.steps().iter().map(|s| -s.charge_ah).fold(0.0, f64::max);
        let (row, field, cause) = match extremes.gap(tracker.max_abs_current, name) {
            Some(gap) => (Some(extremes.widest.2), "test_time", gap),
            None if largest_discharge_ah <= 1000.0 => (
                None,
                "cycle_number",
                format!(
                    "no single discharge moves more than {}, so the file's cycles each hold many (does its cycle column never advance?); \
                     give --lower-cutoff so that full discharges can be told apart, or",
                    amp_hours(largest_discharge_ah)
                ),
            ),
            None => (None, "current", "is the current in mA labelled as A?".to_owned()),
        };
        return Err(Error::Input {
            file: source.to_path_buf(),
            row,
            field: Some(field.to_owned()),
            message: format!("estimated capacity {:.0} Ah is implausible for a cell: {cause} (give --nominal-capacity to override)", d.nominal_capacity_ah),
        });
    }
    if tracker.max_voltage > 10.0 || tracker.min_voltage < -1.0 {
        // Above 10 V a cell's millivolts are likelier; below −1 V with no millivolts in sight, a
        // working electrode's potential against a reference (a three-electrode BioLogic file).
        let cause = if tracker.max_voltage > 10.0 {
            "is it in mV labelled as V?"
        } else {
            "is it a working electrode's potential against a reference, or the voltage column's sign turned around? Read the cell's voltage column (a column map)"
        };
        return Err(Error::Input {
            file: source.to_path_buf(),
            row: Some(extremes.voltage.1),
            field: Some("voltage".to_owned()),
            message: format!("voltage spans {:.2}..{:.2} V, implausible for a cell: {cause}", tracker.min_voltage, tracker.max_voltage),
        });
    }
    // Time in hours read as seconds makes the estimate 3600× too small and every C-rate that large;
    // time in milliseconds (or seconds read as hours) the other way: a discharge at the peak
    // current lasting months.
    let swing_v = tracker.max_voltage - tracker.min_voltage;
    let flows = tracker.max_abs_current > tracker.rest_threshold_a();
    Ok(if !d.capacity_estimated {
        None
    } else if flows && swing_v < MIN_SWING_V {
        Some(format!(
            "the voltage moves only {:.0} mV in the whole record, too little of a charge or discharge to estimate the capacity from: \
             C-rates and SOC use the {} it moved (give --nominal-capacity)",
            1000.0 * swing_v,
            amp_hours(d.nominal_capacity_ah)
        ))
    } else if max_c > opts.max_c_rate {
        Some(format!(
            "the peak current is {max_c:.0}C of the estimated capacity ({}): is the time in minutes or hours read as seconds?",
            amp_hours(d.nominal_capacity_ah)
        ))
    } else if flows && max_c < MIN_PEAK_C {
        Some(format!(
            "the peak current is C/{:.0} of the estimated capacity ({}), a discharge lasting {:.0} days at it: is the time in \
             milliseconds read as seconds, or seconds as hours?",
            1.0 / max_c,
            amp_hours(d.nominal_capacity_ah),
            1.0 / max_c / 24.0
        ))
    } else {
        None
    })
}

/// A record whose voltage moves less than this (V) holds no full charge or discharge of any cell
/// (LFP's flat plateau spans more from cut-off to cut-off), so its estimated capacity says nothing
/// of the time's unit: a 3 s excerpt of a 4.8 A discharge moves 4.4 mAh, "1088C".
const MIN_SWING_V: f64 = 0.2;

/// A cell whose peak current is slower than this C-rate of its estimated capacity discharged for
/// more than 500 hours at its peak: likelier a time in the wrong unit (a BDF file's clock ran
/// 42 years for a coin cell).
const MIN_PEAK_C: f64 = 1.0 / 500.0;

/// Rows closer in time than this to the row before share its timestamp (no cycler logs faster).
pub(crate) const SAME_TIME_S: f64 = 1e-6;

/// Enforces strictly increasing time: repeated timestamps and small steps back are dropped with
/// a warning; a step back beyond the tolerance is an error naming the row. A current switch
/// logged twice at one instant (the old step's end, then the new step's start at the same time,
/// as PyBaMM and cyclers logging whole seconds or milliseconds write it) keeps both rows, the
/// second `SAME_TIME_S` after the first: the charge counted across the switch needs both
/// currents (dropping the second spread the switch over the next logging interval: half of
/// ΔI·Δt miscounted at every step change). Also rejects NaN/inf.
struct TimeCleaner<'a> {
    file: &'a Path,
    tolerance_s: f64,
    /// Time (as the file gave it, and as kept) and current of the last row kept.
    last_source_time: Option<f64>,
    last_time: f64,
    last_current: f32,
    dropped_duplicates: u64,
    dropped_backwards: u64,
}

impl<'a> TimeCleaner<'a> {
    fn new(file: &'a Path, tolerance_s: f64) -> Self {
        TimeCleaner { file, tolerance_s, last_source_time: None, last_time: 0.0, last_current: 0.0, dropped_duplicates: 0, dropped_backwards: 0 }
    }

    fn clean(&mut self, mut chunk: RawChunk) -> Result<RawChunk> {
        let mut keep = vec![true; chunk.len()];
        for r in 0..chunk.len() {
            let row = chunk.source_row[r];
            for (field, value) in
                [("test_time", chunk.test_time[r]), ("current", chunk.current[r] as f64), ("voltage", chunk.voltage[r] as f64)]
            {
                if !value.is_finite() {
                    return Err(Error::at_row(self.file, row, Some(field), format!("value is {value}, not a finite number")));
                }
            }
            let t = chunk.test_time[r];
            if let Some(last) = self.last_source_time {
                // Within a microsecond is the same time (PyBaMM writes 1e-15 s apart); a third
                // row in one logged second is compared with the file's time, not the kept one.
                if (last..last + SAME_TIME_S).contains(&t) {
                    if chunk.current[r] == self.last_current {
                        self.dropped_duplicates += 1;
                        keep[r] = false;
                        continue;
                    }
                    // A current switch: kept, a microsecond on.
                    chunk.test_time[r] = self.last_time + SAME_TIME_S;
                } else if t < last {
                    if last - t > self.tolerance_s {
                        return Err(Error::at_row(
                            self.file,
                            row,
                            Some("test_time"),
                            format!(
                                "time goes backwards by {:.3} s (from {last} to {t}); tolerance is {} s (--time-tolerance). A file joining \
                                 two tests restarts its clock there: split it into one file per test; or the column is a step's time, \
                                 restarting at each step: read the test's total time instead",
                                last - t,
                                self.tolerance_s
                            ),
                        ));
                    }
                    self.dropped_backwards += 1;
                    keep[r] = false;
                    continue;
                }
            }
            (self.last_source_time, self.last_time) = (Some(t), chunk.test_time[r]);
            self.last_current = chunk.current[r];
        }
        Ok(if keep.iter().all(|k| *k) { chunk } else { chunk.filter(&keep) })
    }

    fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.dropped_duplicates > 0 {
            w.push(format!("dropped {} rows repeating the previous timestamp (within a microsecond)", self.dropped_duplicates));
        }
        if self.dropped_backwards > 0 {
            w.push(format!("dropped {} rows whose time stepped back within the tolerance", self.dropped_backwards));
        }
        w
    }
}

/// Carries the cycle and step index of the row before over rows where a file that numbers them
/// left them blank (a logging hiccup, a spreadsheet edit): a blank would otherwise start a step
/// of its own, and a cycle numbered below the file's first.
#[derive(Default)]
struct CounterFill {
    last: [Option<i32>; 2],
    filled_rows: u64,
    first_filled: Option<u64>,
}

impl CounterFill {
    fn fill(&mut self, chunk: &mut RawChunk) {
        for r in 0..chunk.len() {
            let mut filled = false;
            for (value, last) in [&mut chunk.cycle_number[r], &mut chunk.step_index[r]].into_iter().zip(&mut self.last) {
                match value {
                    Some(v) => *last = Some(*v),
                    None if last.is_some() => {
                        *value = *last;
                        filled = true;
                    }
                    None => {}
                }
            }
            if filled {
                self.filled_rows += 1;
                self.first_filled.get_or_insert(chunk.source_row[r]);
            }
        }
    }

    fn warning(&self, name: &dyn Fn(u64) -> String) -> Option<String> {
        let first = self.first_filled?;
        Some(format!("{} rows (the first at {}) had no cycle or step index; each took the one of the row before", self.filled_rows, name(first)))
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `voltlens synth`: generates cells with the equivalent-circuit simulator and writes them as a
/// canonical dataset, through the same derivation as ingested files.
pub fn synthesize(cfg: &crate::data::synth::SynthConfig, out: &Path) -> Result<Vec<CellInfo>> {
    use crate::data::synth::{cell_plan, SynthCell};
    cfg.validate()?;
    let plan = cell_plan(cfg);
    refuse_duplicate_ids(plan.iter().map(|s| (s.cell_id.clone(), format!("synth cell {}", s.cell_id))).collect())?;
    let staging = DatasetStaging::new(out)?;
    let bar = crate::progress::bar(plan.len() as u64, "synth", "cells");
    let opts = IngestOptions::default();
    let cells: Vec<CellInfo> = plan
        .par_iter()
        .map(|spec| {
            let reader: Box<dyn CyclerReader> = Box::new(SynthCell::new(cfg, spec.clone())?);
            let source = PathBuf::from(format!("synth/{}", spec.cell_id));
            let info = ingest_source(reader, &source, "synth", staging.paths(), &opts, &indicatif::ProgressBar::hidden());
            bar.inc(1);
            info
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    staging.commit(cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_steps(steps: &[&str]) -> SourceMetadata {
        let mut meta = SourceMetadata::default();
        meta.extra.insert("steps".into(), serde_json::json!(steps));
        meta
    }

    /// A GITT written discharge-positive: C/10 pulses with rests, then a 1C charge whose CV hold
    /// rings for one row to 1.5C (as PyBaMM's O'Regan2022 hold does). The pulses' jumps still
    /// vote: measured against the spike's 7.5 A they were too small, and two votes kept the sign.
    #[test]
    fn a_lone_current_spike_does_not_silence_the_sign_votes() {
        let mut tracker = StepTracker::new(Some(5.0));
        let (mut t, mut v) = (0.0, 4.1);
        let mut row = |tracker: &mut StepTracker, step: i32, i: f32, dv: f64| {
            v += dv;
            tracker.push(t, i, v as f32, Some(0), Some(step));
            t += 30.0;
        };
        for pulse in 0..6 {
            row(&mut tracker, 2 * pulse, 0.0, 0.0);
            row(&mut tracker, 2 * pulse + 1, 0.5, -0.007); // discharge written +: the voltage falls
            row(&mut tracker, 2 * pulse + 1, 0.5, -0.02);
            row(&mut tracker, 2 * pulse + 2, 0.0, 0.007);
        }
        row(&mut tracker, 20, -5.0, 0.09);
        row(&mut tracker, 20, -5.0, 0.3);
        for i in [-3.0, -7.5, -2.9, -2.8] {
            row(&mut tracker, 21, i, 0.0);
        }
        let (flip, message) = check_sign(Path::new("gitt.parquet"), &tracker, &SourceMetadata::default()).unwrap();
        assert!(flip, "not flipped: {message:?}");
        assert!(message.unwrap().contains("flipped"));
    }

    /// A voltage 1.2 V past the stated upper cut-off (a PyBaMM HPPC that ran away as its
    /// simulation failed) is warned about at its row; a CV switch's 13 mV overshoot and a charge
    /// pulse's 0.19 V at full charge are not.
    #[test]
    fn a_voltage_well_past_a_stated_cut_off_is_warned_about() {
        let given = |volts| Some(Cutoff { volts, source: CutoffSource::Given });
        let cutoffs = Cutoffs { upper: given(4.19), lower: given(2.5) };
        let mut extremes = ExtremeRows::default();
        for (row, v) in [3.6, 4.203, 4.19, 4.379, 3.0, 2.3].into_iter().enumerate() {
            extremes.push(row as f64, 1.0, v, row as u64 + 2);
        }
        let name = |r| format!("row {r}");
        assert!(extremes.cutoff_warnings(cutoffs, &name).is_empty());
        extremes.push(10.0, 1.0, 5.4, 40);
        let warnings = extremes.cutoff_warnings(cutoffs, &name);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("row 40: the voltage reaches 5.400 V, 1210 mV past the stated upper cut-off of 4.190 V"), "{}", warnings[0]);
        extremes.push(12.0, -1.0, 1.9, 42);
        assert!(extremes.cutoff_warnings(cutoffs, &name)[1].starts_with("row 42: the voltage reaches 1.900 V, 600 mV past the stated lower"));
        assert!(extremes.cutoff_warnings(Cutoffs::default(), &name).is_empty(), "no cut-off stated, none to pass");
    }

    #[test]
    fn a_pybamm_experiment_states_its_voltage_limits() {
        let cccv = with_steps(&[
            "Discharge at 3C until 3.01 V (10 second period)",
            "Discharge at C/10 for 40 minutes or until 2.8V (30 second period)",
            "Charge at 1C until 4.19 V (10 second period)",
            "Hold at 4.2 V until C/20 (10 second period)",
        ]);
        assert_eq!((experiment_limit(&cccv, false), experiment_limit(&cccv, true)), (Some(2.8), Some(4.2)));
        // Limits in other units, or none at all (an HPPC's timed pulses), state no cut-off.
        let other = with_steps(&["Discharge at 1C until 2800 mV", "Charge at 1C until C/20", "Discharge at 1C for 10 seconds"]);
        assert_eq!((experiment_limit(&other, false), experiment_limit(&other, true)), (None, None));
        // A calendar-style hold (ending on time) is at no cut-off; a hold after a discharge is at
        // the lower one, not the upper (which a time-limited charge leaves unstated).
        let calendar = with_steps(&["Charge at 0.5C for 30 minutes", "Hold at 3.8 V for 2 hours", "Rest for 30 minutes", "Discharge at 0.5C until 2.51 V"]);
        assert_eq!((experiment_limit(&calendar, false), experiment_limit(&calendar, true)), (Some(2.51), None));
        let low_hold = with_steps(&["Discharge at 0.5C until 2.81 V", "Hold at 2.81 V until C/50", "Rest for 15 minutes", "Charge at 0.5C for 80 minutes"]);
        assert_eq!((experiment_limit(&low_hold, false), experiment_limit(&low_hold, true)), (Some(2.81), None));
    }
}
