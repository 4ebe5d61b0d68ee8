//! Vendor readers against the real sample files in `../shared/datasets` (skipped when absent),
//! small hand-written fixtures in `tests/fixtures/formats`, and broken inputs written to a
//! temporary folder: every row read, in canonical units and sign, and every bad file refused
//! with an error that names the file (and the row and field where there is one).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float32Array, Float64Array, Int32Array, StringArray};
use arrow::record_batch::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use voltlens::data::formats::{self, ColumnMap, Format};
use voltlens::data::raw::{RawChunk, SourceMetadata, CHUNK_ROWS};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Everything a reader produced for one file, its chunks joined.
struct Cell {
    metadata: SourceMetadata,
    rows: RawChunk,
    /// Pass-through arrays per column name, one per chunk.
    passthrough: HashMap<String, Vec<ArrayRef>>,
    chunk_sizes: Vec<usize>,
}

impl Cell {
    fn row_of_line(&self) -> HashMap<u64, usize> {
        self.rows.source_row.iter().enumerate().map(|(i, &line)| (line, i)).collect()
    }

    /// A pass-through column as f64 (files store gt_soc as float32 or float64).
    fn passthrough_f64(&self, name: &str) -> Vec<Option<f64>> {
        let arrays = self.passthrough[name].iter().map(|a| cast(a, &DataType::Float64).unwrap());
        arrays.flat_map(|a| a.as_primitive::<Float64Type>().iter().collect::<Vec<_>>()).collect()
    }

    /// A pass-through column as text (plain or dictionary-encoded strings).
    fn passthrough_str(&self, name: &str) -> Vec<Option<String>> {
        let arrays = self.passthrough[name].iter().map(|a| cast(a, &DataType::Utf8).unwrap());
        arrays.flat_map(|a| a.as_string::<i32>().iter().map(|s| s.map(str::to_owned)).collect::<Vec<_>>()).collect()
    }
}

fn read(path: &Path, format: Format, map: Option<&ColumnMap>) -> voltlens::Result<Cell> {
    let mut reader = formats::open(path, format, map)?;
    let mut cell = Cell { metadata: SourceMetadata::default(), rows: RawChunk::default(), passthrough: HashMap::new(), chunk_sizes: Vec::new() };
    while let Some(chunk) = reader.next_chunk()? {
        for (name, array) in &chunk.passthrough {
            assert_eq!(array.len(), chunk.len(), "pass-through column {name} has as many rows as its chunk");
            cell.passthrough.entry(name.clone()).or_default().push(array.clone());
        }
        cell.chunk_sizes.push(chunk.len());
        let r = &mut cell.rows;
        r.test_time.extend(chunk.test_time);
        r.current.extend(chunk.current);
        r.voltage.extend(chunk.voltage);
        r.temperature.extend(chunk.temperature);
        r.cycle_number.extend(chunk.cycle_number);
        r.step_index.extend(chunk.step_index);
        r.source_row.extend(chunk.source_row);
    }
    cell.metadata = reader.metadata().clone();
    Ok(cell)
}

/// Detects the format, checks it is the expected one, and reads the file.
fn detect_and_read(path: &Path, expected: Format) -> Cell {
    let format = formats::detect(path).unwrap_or_else(|e| panic!("detect {}: {e}", path.display()));
    assert_eq!(format, expected, "format of {}", path.display());
    read(path, format, None).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats").join(name)
}

use common::shared;

/// The file's lines as text (the samples are small), Latin-1 where not UTF-8.
fn lines(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap_or_else(|_| bytes.iter().map(|&b| b as char).collect());
    text.lines().map(|l| l.trim_end_matches('\r').to_owned()).collect()
}

/// Non-blank lines after the 1-based header line: the rows a reader must return.
fn data_line_count(path: &Path, header_line: usize) -> usize {
    lines(path).iter().skip(header_line).filter(|l| !l.trim().is_empty()).count()
}

/// One column of a delimited file as written, keyed by 1-based line number (independent of the
/// reader under test; whole-line quotes as Novonix writes them are removed).
fn raw_column(path: &Path, header_line: usize, delimiter: char, name: &str) -> Vec<(u64, String)> {
    let all = lines(path);
    let split = |line: &str| -> Vec<String> { line.trim_matches('"').split(delimiter).map(|f| f.trim().to_owned()).collect() };
    let header = split(&all[header_line - 1]);
    let index = header.iter().position(|h| h == name).unwrap_or_else(|| panic!("{name} not in {header:?}"));
    all.iter()
        .enumerate()
        .skip(header_line)
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i as u64 + 1, split(l)[index].clone()))
        .collect()
}

/// Lines on which a capacity counter rose since the previous row (and `state` holds, if given).
fn lines_where_rising(capacity: &[(u64, String)], state: Option<(&[(u64, String)], &str)>) -> Vec<u64> {
    let value = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
    capacity
        .windows(2)
        .enumerate()
        .filter(|(_, w)| value(&w[1].1) > value(&w[0].1) + 1e-9)
        .filter(|&(i, _)| state.is_none_or(|(states, wanted)| states[i + 1].1 == wanted))
        .map(|(_, w)| w[1].0)
        .collect()
}

/// The domain's sign rule: while the charge counter rises, the (canonical) current is positive.
/// A counter can still rise on the first sample of a rest (it integrates the interval before
/// it), so zero is allowed there, but never a negative current, and zero only rarely.
fn assert_current_positive_where(cell: &Cell, charging_lines: &[u64], what: &str) {
    assert!(charging_lines.len() >= 3, "{what}: too few charging rows ({}) to check the sign", charging_lines.len());
    let index = cell.row_of_line();
    let currents: Vec<f32> = charging_lines.iter().map(|line| cell.rows.current[index[line]]).collect();
    for (line, current) in charging_lines.iter().zip(&currents) {
        assert!(*current >= 0.0, "{what}: line {line} charges but current is {current} A");
    }
    let positive = currents.iter().filter(|&&c| c > 0.0).count();
    assert!(positive * 100 >= currents.len() * 99, "{what}: only {positive} of {} charging rows have current > 0", currents.len());
}

fn assert_voltage_within(cell: &Cell, low: f32, high: f32) {
    let (min, max) = cell.rows.voltage.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(min >= low && max <= high, "voltage {min}..{max} V outside {low}..{high} V");
}

fn assert_source_rows_increase(cell: &Cell) {
    assert!(cell.rows.source_row.windows(2).all(|w| w[0] < w[1]), "rows come in file order");
}

/// The message of an error expected from detecting or reading `path`, checked to name the file.
fn error_of(path: &Path, format: Option<Format>) -> String {
    let result = match format {
        Some(format) => read(path, format, None).map(|_| ()),
        None => formats::detect(path).and_then(|format| read(path, format, None).map(|_| ())),
    };
    let message = result.err().unwrap_or_else(|| panic!("{} was accepted", path.display())).to_string();
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(message.contains(name), "error names the file: {message}");
    message
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

const ARBIN_HEADER: &str = "Data_Point,Test_Time,Step_Index,Cycle_Index,Current,Voltage,Charge_Capacity,Discharge_Capacity\n";

// ---------------------------------------------------------------------------------------------
// Real exports (../shared/datasets/cyclers)

#[test]
fn arbin_fast_charge_reads_every_row_with_metadata_sidecar() {
    let Some(dir) = shared("cyclers") else { return };
    let path = dir.join("FastCharge_000025_CH8.csv");
    let cell = detect_and_read(&path, Format::Arbin);
    assert_eq!(cell.rows.len(), data_line_count(&path, 1));
    assert_voltage_within(&cell, 2.0, 3.65);
    assert!(cell.rows.temperature.iter().all(|t| t.is_some_and(|t| (20.0..40.0).contains(&t))));
    assert!(cell.rows.step_index.iter().all(|s| *s == Some(0)), "Step_Index 0.0 reads as step 0");
    let sidecar = cell.metadata.extra["arbin_metadata"].as_object().unwrap();
    assert_eq!(sidecar["test_id"], "153");
    assert_eq!(cell.metadata.protocol.as_deref(), Some("20170512-4_4C-80PER_4_4C.SDU"));
    assert_source_rows_increase(&cell);
}

#[test]
fn arbin_contact_test_charges_with_positive_current_and_has_no_steps() {
    let Some(dir) = shared("cyclers") else { return };
    let path = dir.join("2017-05-09_test-TC-contact_CH33.csv");
    let cell = detect_and_read(&path, Format::Arbin);
    assert_eq!(cell.rows.len(), data_line_count(&path, 1));
    assert_voltage_within(&cell, 2.0, 3.8);
    assert!(cell.rows.step_index.iter().all(Option::is_none), "empty Step_Index cells read as None");
    assert!(cell.rows.cycle_number.iter().all(Option::is_none), "empty Cycle_Index cells read as None");
    let charging = lines_where_rising(&raw_column(&path, 1, ',', "Charge_Capacity"), None);
    assert_current_positive_where(&cell, &charging, "Arbin Charge_Capacity");
    assert!(cell.metadata.warnings.is_empty(), "Arbin writes + = charge already: {:?}", cell.metadata.warnings);
}

#[test]
fn maccor_exports_take_their_sign_from_state() {
    let Some(dir) = shared("cyclers") else { return };
    for name in ["PreDiag_000412_00008Fshort.022", "PreDiag_000229_000229_truncated.034"] {
        let path = dir.join(name);
        let cell = detect_and_read(&path, Format::Maccor);
        assert_eq!(cell.rows.len(), data_line_count(&path, 2), "{name}");
        assert_voltage_within(&cell, 2.0, 4.5);
        let states = raw_column(&path, 2, '\t', "State");
        let charging = lines_where_rising(&raw_column(&path, 2, '\t', "Amp-hr"), Some((&states, "C")));
        assert_current_positive_where(&cell, &charging, name);
        let index = cell.row_of_line();
        for (line, state) in &states {
            let current = cell.rows.current[index[line]];
            assert!(state != "D" || current <= 0.0, "{name} line {line}: discharge row has current {current}");
        }
        assert!(cell.rows.cycle_number.iter().all(Option::is_some) && cell.rows.step_index.iter().all(Option::is_some));
        assert!(cell.metadata.protocol.as_deref().is_some_and(|p| p.starts_with("PreDiag_")), "{:?}", cell.metadata.protocol);
    }
}

#[test]
fn biologic_export_with_clock_times_reads_seconds_and_amperes() {
    let Some(dir) = shared("cyclers") else { return };
    let path = dir.join("test_loopsnewoutput_MB_CE1_short10k.csv");
    let cell = detect_and_read(&path, Format::Biologic);
    assert_eq!(cell.rows.len(), data_line_count(&path, 1));
    assert_voltage_within(&cell, 2.0, 4.5);
    // 05/05/2021 15:36:22.757 → 15:36:45.513: 22.756 s later; 2493.26 mA → 2.49 A.
    assert_eq!(cell.rows.test_time[0], 0.0);
    assert!((cell.rows.test_time[1] - 22.756).abs() < 1e-6, "{}", cell.rows.test_time[1]);
    assert!((cell.rows.current[1] - 2.49326).abs() < 1e-4, "{}", cell.rows.current[1]);
    assert!(cell.rows.temperature.iter().all(Option::is_none), "T/°C is empty in this export");
    let charging = lines_where_rising(&raw_column(&path, 1, ';', "Q charge/mA.h"), None);
    assert_current_positive_where(&cell, &charging, "BioLogic Q charge");
}

#[test]
fn novonix_formation_reads_hours_as_seconds_and_the_summary_capacity() {
    let Some(dir) = shared("cyclers") else { return };
    let path = dir.join("test_Nova_Form-CH01-01_short.csv");
    let cell = detect_and_read(&path, Format::Novonix);
    let header_line = lines(&path).iter().position(|l| l == "[Data]").unwrap() + 2;
    assert_eq!(cell.rows.len(), data_line_count(&path, header_line));
    // A formation test starts from an uncharged cell at about 0.1 V.
    assert_voltage_within(&cell, 0.05, 4.5);
    assert!((cell.rows.test_time[1] - 0.0003111 * 3600.0).abs() < 1e-9);
    assert_eq!(cell.metadata.nominal_capacity_ah, Some(0.24));
    assert_eq!(cell.metadata.protocol.as_deref(), Some("XC_Formation_Entree_Test.pro1"));
    assert!(cell.rows.temperature.iter().all(Option::is_some));
}

// ---------------------------------------------------------------------------------------------
// Simulated cells (PyBaMM Parquet and BatteryArchive CSV)

#[test]
fn battery_archive_cells_carry_their_ground_truth_and_cells_json() {
    let Some(dir) = shared("pybamm-chen2020-batteryarchive") else { return };
    for stem in ["chen2020-22-00-cccv", "chen2020-22-01-cccv"] {
        let path = dir.join(format!("{stem}_timeseries.csv"));
        let cell = detect_and_read(&path, Format::BatteryArchive);
        assert_eq!(cell.rows.len(), data_line_count(&path, 1), "{stem}");
        assert_voltage_within(&cell, 2.0, 4.5);
        let charging = lines_where_rising(&raw_column(&path, 1, ',', "Charge_Capacity (Ah)"), None);
        assert_current_positive_where(&cell, &charging, stem);
        assert_eq!(cell.metadata.nominal_capacity_ah, Some(5.0));
        assert_eq!(cell.metadata.protocol.as_deref(), Some("cccv"));
        assert!(cell.metadata.ambient_temperature_c.is_some());
        // Ground truth is matched by Test_Time: every row of these files has its truth row.
        let truth = dir.join(format!("{stem}_truth.csv"));
        let soc: Vec<_> = raw_column(&truth, 1, ',', "gt_soc").into_iter().map(|(_, v)| v.parse::<f64>().unwrap()).collect();
        let kind: Vec<_> = raw_column(&truth, 1, ',', "gt_step_kind").into_iter().map(|(_, v)| Some(v)).collect();
        assert_eq!(cell.passthrough_f64("gt_soc"), soc.into_iter().map(Some).collect::<Vec<_>>());
        assert_eq!(cell.passthrough_str("gt_step_kind"), kind);
    }
}

#[test]
fn pybamm_parquet_cells_read_fully_with_ground_truth_and_metadata() {
    let Some(dir) = shared("pybamm-chen2020") else { return };
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect();
    files.sort();
    assert!(files.len() >= 70, "found {} PyBaMM files", files.len());
    for path in &files {
        let cell = detect_and_read(path, Format::Parquet);
        let file = std::fs::File::open(path).unwrap();
        let expected_rows = parquet::file::reader::FileReader::metadata(&parquet::file::reader::SerializedFileReader::new(file).unwrap())
            .file_metadata()
            .num_rows();
        assert_eq!(cell.rows.len() as i64, expected_rows, "{}", path.display());
        assert_voltage_within(&cell, 2.0, 4.5);
        assert_eq!(cell.metadata.nominal_capacity_ah, Some(5.0));
        assert!(cell.metadata.protocol.is_some() && cell.metadata.ambient_temperature_c.is_some());
        // State of charge rises exactly while charge current flows.
        let soc = cell.passthrough_f64("gt_soc");
        let rising: Vec<_> = (1..soc.len()).filter(|&i| soc[i].unwrap() > soc[i - 1].unwrap() + 1e-6).collect();
        assert!(rising.iter().all(|&i| cell.rows.current[i] > 0.0), "{}: gt_soc rises while current ≤ 0", path.display());
        assert_eq!(cell.passthrough_str("gt_step_kind").len(), cell.rows.len());
        assert!(cell.rows.cycle_number.iter().all(Option::is_some));
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures in the repository (run everywhere)

#[test]
fn fixtures_are_detected_as_their_formats() {
    for (name, format) in [
        ("arbin_small.csv", Format::Arbin),
        ("maccor_small.022", Format::Maccor),
        ("biologic_small.csv", Format::Biologic),
        ("novonix_small.csv", Format::Novonix),
        ("tiny-00-cccv_timeseries.csv", Format::BatteryArchive),
    ] {
        assert_eq!(formats::detect(&fixture(name)).unwrap(), format, "{name}");
    }
}

/// An Arbin export names the columns a BatteryArchive CSV has (and no temperature here); its
/// own columns (`Data_Point`, `Step_Time`) tell them apart, so its `_Metadata.csv` is read.
#[test]
fn arbin_export_without_temperature_is_not_taken_for_battery_archive() {
    let dir = tempfile::tempdir().unwrap();
    let arbin = "Data_Point,Date_Time,Test_Time (s),Step_Time (s),Cycle_Index,Step_Index,Current (A),Voltage (V),Charge_Capacity (Ah),Discharge_Capacity (Ah)\n\
                 1,03/14/2024 09:30:00,0,0,1,1,0,3.5,0,0\n2,03/14/2024 09:31:00,60,0,1,2,1.5,3.6,0.025,0\n";
    let path = write(dir.path(), "cell_CH1.csv", arbin.as_bytes());
    write(dir.path(), "cell_CH1_Metadata.csv", b"test_name,schedule_file_name\ncell,C:\\Schedules\\cc_1C.sdu\n");
    let cell = detect_and_read(&path, Format::Arbin);
    assert_eq!(cell.metadata.protocol.as_deref(), Some("cc_1C.sdu"));
    let archive = "Date_Time,Test_Time (s),Cycle_Index,Current (A),Voltage (V),Charge_Capacity (Ah),Discharge_Capacity (Ah),Environment_Temperature (C)\n\
                   03/14/2024 09:30:00,0,1,0,3.5,0,0,25\n";
    detect_and_read(&write(dir.path(), "archive.csv", archive.as_bytes()), Format::BatteryArchive);
}

/// Variants real exporters write: Arbin current in mA, Maccor elapsed time as `0d 00:01:00`,
/// a BioLogic clock with a decimal-comma fraction, an EC-Lab header longer than the usual search,
/// rows or the column line with a trailing tab, rows of delimiters alone, and Neware's `1-00:00:30` through a column map.
#[test]
fn exporter_variants_read_in_canonical_units() {
    let dir = tempfile::tempdir().unwrap();
    let arbin = "Data_Point,Test_Time (s),Cycle_Index,Step_Index,Current (mA),Voltage (V),Charge_Capacity (mAh),Discharge_Capacity (mAh)\n\
                 1,0,1,1,0,3.5,0,0\n2,60,1,2,1500,3.6,25,0\n";
    let cell = detect_and_read(&write(dir.path(), "arbin_ma.csv", arbin.as_bytes()), Format::Arbin);
    assert_eq!(cell.rows.current, [0.0, 1.5]);
    let maccor = "Today's Date 03/15/2024\nRec#\tCyc#\tStep\tTestTime\tAmps\tVolts\tState\n\
                  1\t0\t1\t0d 00:00:00\t0\t3.5\tR\n2\t0\t2\t1d 01:01:30.5\t1.5\t3.6\tC\n";
    let cell = detect_and_read(&write(dir.path(), "maccor.001", maccor.as_bytes()), Format::Maccor);
    assert_eq!(cell.rows.test_time, [0.0, 86400.0 + 3690.5]);
    let mut mpt = String::from("EC-Lab ASCII FILE\nNb header lines : 300\n");
    mpt.extend((3..300).map(|k| format!("setting {k}\n")));
    // Data lines end in a tab the column line lacks.
    mpt.push_str("time/s\tEwe/V\tI/mA\n03/14/2024 09:00:00,0000\t3,5\t0\t\n03/14/2024 09:01:00,5000\t3,6\t1500\t\n");
    let cell = detect_and_read(&write(dir.path(), "long.mpt", mpt.as_bytes()), Format::Biologic);
    assert_eq!(cell.rows.test_time, [0.0, 60.5]);
    assert_eq!(cell.rows.voltage, [3.5, 3.6]);
    // EC-Lab itself ends the column line with a tab its data lines lack; a file re-saved through
    // the wrong encoding holds U+FFFD for the degree sign.
    let ec_lab = "EC-Lab ASCII FILE\nNb header lines : 4\n\nNs\ttime/s\tEcell/V\tI/mA\tTemperature/\u{FFFD}C\t\n0\t0\t3.5\t0\t25.0\n1\t60\t3.6\t1500\t25.5\n";
    let cell = detect_and_read(&write(dir.path(), "ec-lab.mpt", ec_lab.as_bytes()), Format::Biologic);
    assert_eq!((cell.rows.test_time, cell.rows.current), (vec![0.0, 60.0], vec![0.0, 1.5]));
    assert_eq!(cell.rows.temperature, [Some(25.0), Some(25.5)]);
    // A spreadsheet saves the empty rows below its table as delimiters alone.
    let saved = "time/s;Ecell/V;I/mA\n0;3.5;0\n60;3.6;1500\n;;\n;;\n";
    let cell = detect_and_read(&write(dir.path(), "saved.csv", saved.as_bytes()), Format::Biologic);
    assert_eq!(cell.rows.test_time, [0.0, 60.0]);
    // Neware writes days as `1-02:03:04` and may sign the current only in its step type.
    let neware = "Record ID,Step Type,Total Time,Current(mA),Voltage(V)\n1,Rest,0-00:00:00,0,3.6\n2,CC_DChg,1-00:00:30,1000,3.5\n";
    let map = "[columns]\ntime = \"Total Time\"\ncurrent = \"Current(mA)\"\nvoltage = \"Voltage(V)\"\nstate = \"Step Type\"\n\
               [units]\ncurrent = \"mA\"\n[state_values]\ncharge = [\"CC_Chg\", \"CCCV_Chg\"]\ndischarge = [\"CC_DChg\"]\n";
    let map = ColumnMap::from_file(&write(dir.path(), "neware.toml", map.as_bytes())).unwrap();
    let cell = read(&write(dir.path(), "neware.csv", neware.as_bytes()), Format::Mapped, Some(&map)).unwrap();
    assert_eq!((cell.rows.test_time, cell.rows.current), (vec![0.0, 86430.0], vec![0.0, -1.0]));
}

/// Exports of cyclers read without a column map, as real ones write them (column names from
/// public files: cellpy's and PyProBE's Neware and BaSyTec samples, the Battery Data Alliance's
/// BDF files and BatMo's BDF labels): Neware's unsigned current signed by its step type and its
/// elapsed time past 24 h, BaSyTec's `~` header, BDF's machine names and its labelled hours,
/// written discharge-positive and turned around by its capacities; Neware's nested "regular
/// export"; PEC in mV and mA with its cell size; a Maccor CSV without State.
#[test]
fn neware_basytec_and_bdf_exports_read_in_canonical_units() {
    let dir = tempfile::tempdir().unwrap();
    let neware = "DataPoint,Cycle Index,Step Index,Step Type,Time,Cumulative Time,Current(A),Voltage(V),Chg. Cap.(Ah),DChg. Cap.(Ah),Date\n\
                  1,1,1,Rest,00:00:00,00:00:00,0.0000,3.6000,0,0,2022-05-18 10:00:00\n\
                  2,1,2,CC DChg,00:00:00,25:00:01,0.5000,3.5000,0,0,2022-05-19 11:00:01\n\
                  3,1,3,CC_Chg,00:00:00,25:00:02,0.5000,3.5500,0,0,2022-05-19 11:00:02\n";
    let cell = detect_and_read(&write(dir.path(), "neware.csv", neware.as_bytes()), Format::Neware);
    assert_eq!((cell.rows.test_time, cell.rows.current), (vec![0.0, 90001.0, 90002.0], vec![0.0, -0.5, 0.5]));
    assert_eq!(cell.rows.step_index, [Some(1), Some(2), Some(3)]);
    let basytec = "~Start of Test: 19.06.2023 17:56:53\n~Time[s]\tLine\tCommand\tU[V]\tI[A]\tT1[°C]\tCyc-Count\n\
                   0\t3\tPause\t3.5\t0\t25.4\t0\n60\t4\tDischarge\t3.4\t-0.5\t25.5\t1\n";
    let cell = detect_and_read(&write(dir.path(), "basytec.txt", basytec.as_bytes()), Format::Basytec);
    assert_eq!((cell.rows.test_time, cell.rows.current), (vec![0.0, 60.0], vec![0.0, -0.5]));
    assert_eq!((cell.rows.temperature, cell.rows.step_index), (vec![Some(25.4), Some(25.5)], vec![Some(3), Some(4)]));
    let bdf = "test_time_second,voltage_volt,current_ampere,cycle_count,step_index,charging_capacity_ah,discharging_capacity_ah,ambient_temperature_celsius\n\
               0,3.3,0,1,1,0,0,25\n60,3.4,1.5,1,2,0.025,0,25\n120,3.5,1.5,1,2,0.05,0,25\n";
    let cell = detect_and_read(&write(dir.path(), "cell.bdf.csv", bdf.as_bytes()), Format::Bdf);
    assert_eq!((cell.rows.test_time, cell.rows.current), (vec![0.0, 60.0, 120.0], vec![0.0, 1.5, 1.5]));
    let labelled = "Test Time / h,Current / A,Voltage / V,Step Type / 1,Cycle Count / 1,Step Index / 1,Charge Capacity / Ah,Discharge Capacity / Ah\n\
                    0,0,3.3,rest,1,1,0,0\n0.5,0.1,3.2,discharge,1,2,0,0.05\n1,0.1,3.1,discharge,1,2,0,0.1\n";
    let cell = detect_and_read(&write(dir.path(), "batmo.csv", labelled.as_bytes()), Format::Bdf);
    assert_eq!((cell.rows.test_time, cell.rows.current), (vec![0.0, 1800.0, 3600.0], vec![0.0, -0.1, -0.1]));
    // Neware's "regular export" nests cycle, step and record lines; records start with `,,`.
    let nested = "Cycle Index,Chg. Cap.(Ah),DChg. Cap.(Ah)\n,Step Index,Step Number,Step Type,Step Time\n\
                  ,,DataPoint,Time,Total Time,Current(A),Voltage(V)\n1,0.02256,0.33067,1,1,Rest,00:00:20\n\
                  ,,1,00:00:00,00:00:00,0.00000,4.3185\n,,2,00:00:02,00:00:02,0.00000,4.3186\n\
                  ,2,2,CC DChg,00:41:50\n,,3,00:00:00,00:00:04,-0.50000,4.2011\n";
    let cell = detect_and_read(&write(dir.path(), "regular.csv", nested.as_bytes()), Format::Neware);
    assert_eq!((cell.rows.test_time, cell.rows.current), (vec![0.0, 2.0, 4.0], vec![0.0, 0.0, -0.5]));
    // PEC: its `Key:,Value` lines, then mV and mA, a trailing comma on the column line.
    let pec = "Test:,187\nTestRegime CellSize:,1500 mAh\n\nTest,Cell,Step,Cycle,Total Time (Seconds),Voltage (mV),Current (mA),Charge Capacity (mAh),Discharge Capacity (mAh),\n\
               187,1,0,0,1,3272.632,0,0,0,\n187,1,1,1,61,3201.5,-1640.6,0,27.34,\n";
    let cell = detect_and_read(&write(dir.path(), "pec.csv", pec.as_bytes()), Format::Pec);
    assert_eq!((cell.rows.test_time, cell.rows.current), (vec![1.0, 61.0], vec![0.0, -1.6406]));
    assert_eq!(cell.rows.voltage, [3.272632, 3.2015]);
    assert_eq!(cell.metadata.nominal_capacity_ah, Some(1.5));
    // A Maccor CSV without its State column (PyProBE's sample) writes its current signed.
    let maccor = "Today's Date ,28-Nov-23\nRec,Cycle C,Step,Test Time (sec),Step Time (sec),Capacity,Energy,Current,Voltage,Temp 1\n\
                  1,1,1,0.0000,0.0000,0,0,0,3.668,22.2\n2,1,2,10.06,0.06,0.0001,0.0003,-28.8,3.609,22.3\n";
    let cell = detect_and_read(&write(dir.path(), "maccor.csv", maccor.as_bytes()), Format::Maccor);
    assert_eq!((cell.rows.current, cell.rows.cycle_number), (vec![0.0, -28.8], vec![Some(1), Some(1)]));
}

#[test]
fn arbin_fixture_reads_canonical_rows() {
    let cell = read(&fixture("arbin_small.csv"), Format::Arbin, None).unwrap();
    assert_eq!(cell.rows.test_time, [0.0, 10.0, 20.0, 30.0, 40.0]);
    assert_eq!(cell.rows.current, [0.0, 1.1, 1.1, -1.1, -1.1]);
    assert_eq!(cell.rows.step_index, [Some(1), Some(2), Some(2), Some(3), Some(3)]);
    assert_eq!(cell.rows.source_row, [2, 3, 4, 5, 6]);
    assert!(cell.metadata.warnings.is_empty());
}

/// Arbin's MITS Pro 8 spells the names with spaces (`Test Time (s)`, `Cycle Index`), and a charge
/// written as negative current is still turned around by the capacities: the same rows as the
/// older export, read as Arbin (not as BatteryArchive, whose `Test_Time (s)` reads the same).
#[test]
fn arbin_mits_pro_8_names_with_spaces_read_as_the_older_export() {
    let tmp = tempfile::tempdir().unwrap();
    let header = "Date Time,Test Time (s),Step Time (s),Cycle Index,Step Index,Current (A),Voltage (V),Charge Capacity (Ah),Discharge Capacity (Ah),Aux_Temperature_1 (C)\n";
    let rows = "05/13/2017 03:14:03,0,0,1,1,0,3.3,0,0,25\n05/13/2017 03:14:13,10,10,1,2,-1.1,3.4,0.0031,0,25.1\n\
                05/13/2017 03:14:23,20,20,1,2,-1.1,3.45,0.0061,0,25.2\n05/13/2017 03:14:33,30,10,2,3,1.1,3.25,0.0061,0.0031,25.3\n";
    let path = write(tmp.path(), "mits8.csv", format!("{header}{rows}").as_bytes());
    assert_eq!(formats::detect(&path).unwrap(), Format::Arbin);
    let cell = read(&path, Format::Arbin, None).unwrap();
    assert_eq!(cell.rows.test_time, [0.0, 10.0, 20.0, 30.0]);
    assert_eq!(cell.rows.current, [0.0, 1.1, 1.1, -1.1]);
    assert_eq!(cell.rows.cycle_number, [Some(1), Some(1), Some(1), Some(2)]);
    assert_eq!(cell.rows.step_index, [Some(1), Some(2), Some(2), Some(3)]);
    assert_eq!(cell.rows.temperature, [Some(25.0), Some(25.1), Some(25.2), Some(25.3)]);
}

/// A fixture re-saved by another tool (its text changed by `resave`) is detected as `format` and
/// reads the same rows.
fn resaved_reads_the_same(name: &str, format: Format, resave: impl Fn(&str) -> String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "resaved.csv", resave(&std::fs::read_to_string(fixture(name)).unwrap()).as_bytes());
    assert_eq!(formats::detect(&path).unwrap(), format);
    let (resaved, original) = (read(&path, format, None).unwrap(), read(&fixture(name), format, None).unwrap());
    assert_eq!((resaved.rows.test_time, resaved.rows.current, resaved.rows.voltage), (original.rows.test_time, original.rows.current, original.rows.voltage));
    assert_eq!((resaved.rows.cycle_number, resaved.rows.step_index), (original.rows.cycle_number, original.rows.step_index));
}

/// The same Maccor export saved comma-separated reads the same rows.
#[test]
fn a_comma_separated_maccor_export_reads_as_the_tab_separated_one() {
    resaved_reads_the_same("maccor_small.022", Format::Maccor, |text| {
        let (first, rest) = text.split_once('\n').unwrap();
        format!("{first}\n{}", rest.replace('\t', ","))
    });
}

#[test]
fn unsigned_maccor_amps_get_the_sign_of_the_state() {
    let cell = read(&fixture("maccor_small.022"), Format::Maccor, None).unwrap();
    assert_eq!(cell.rows.current, [0.0, 2.4, 2.4, -2.4, -2.4]);
    assert_eq!(cell.rows.cycle_number, [Some(0), Some(0), Some(0), Some(1), Some(1)]);
    assert_eq!(cell.metadata.protocol.as_deref(), Some("Tiny_000001.000"));
    assert!(cell.metadata.warnings.iter().any(|w| w.contains("State")), "{:?}", cell.metadata.warnings);
}

#[test]
fn biologic_fixture_converts_milliamperes_and_clock_time() {
    let cell = read(&fixture("biologic_small.csv"), Format::Biologic, None).unwrap();
    assert_eq!(cell.rows.test_time[0], 0.0);
    assert!((cell.rows.test_time[3] - 142.756).abs() < 1e-6);
    assert!((cell.rows.current[1] - 2.49326).abs() < 1e-6 && cell.rows.current[3] < 0.0);
    assert_eq!(cell.rows.step_index, [Some(0), Some(1), Some(1), Some(2)]);
    assert!(cell.rows.temperature.iter().all(Option::is_none));
}

#[test]
fn novonix_fixture_unquotes_whole_lines() {
    let cell = read(&fixture("novonix_small.csv"), Format::Novonix, None).unwrap();
    assert_eq!(cell.rows.test_time, [0.0, 1800.0, 3600.0]);
    assert_eq!(cell.rows.source_row, [14, 15, 16]);
    assert_eq!(cell.rows.step_index, [Some(1), Some(2), Some(2)]);
    assert_eq!(cell.metadata.nominal_capacity_ah, Some(0.24));
    assert_eq!(cell.metadata.extra["novonix_summary"]["Channel"], "01");
}

#[test]
fn battery_archive_truth_is_joined_by_test_time_with_nulls_for_gaps() {
    let cell = read(&fixture("tiny-00-cccv_timeseries.csv"), Format::BatteryArchive, None).unwrap();
    assert_eq!(cell.passthrough_f64("gt_soc"), [Some(1.0), Some(0.99861), None, Some(0.99861)]);
    assert_eq!(cell.passthrough_str("gt_step_kind")[3].as_deref(), Some("charge"));
    assert_eq!(cell.metadata.nominal_capacity_ah, Some(5.0));
    assert_eq!(cell.metadata.extra["parameter_set"], "Chen2020");
}

#[test]
fn column_map_converts_units_and_sign() {
    let map = ColumnMap::from_file(&fixture("mapped_small.toml")).unwrap();
    let cell = read(&fixture("mapped_small.csv"), Format::Mapped, Some(&map)).unwrap();
    assert_eq!(cell.rows.test_time, [0.0, 1800.0, 3600.0]);
    assert_eq!(cell.rows.current, [-0.0, 1.0, -0.5], "mA → A, discharge-positive → + = charge");
    assert_eq!(cell.rows.voltage, [3.6, 3.9, 3.5]);
    let temperature: Vec<_> = cell.rows.temperature.iter().map(|t| t.unwrap()).collect();
    assert!(temperature.iter().zip([25.0, 26.0, 27.0]).all(|(t, e)| (t - e).abs() < 1e-4), "K → °C: {temperature:?}");
    assert_eq!(cell.metadata.nominal_capacity_ah, Some(2.0));
    assert!(cell.metadata.warnings.iter().any(|w| w.contains("negated")));
}

/// A cycler we have no layout for writes current unsigned beside a mode column: the column map
/// names the column and its values, and the current takes its sign from it.
#[test]
fn column_map_takes_the_sign_from_a_state_column() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "unsigned.csv", b"Time,Amps,Volts,Mode\n0,0.0,3.60,Rest\n10,1.0,3.70,chg\n20,1.0,3.75,CCCV_Chg\n30,0.5,3.50,DChg\n40,0.01,3.52,Rest\n");
    let toml = "[columns]\ntime = \"Time\"\ncurrent = \"Amps\"\nvoltage = \"Volts\"\nstate = \"Mode\"\n[state_values]\ncharge = [\"CHG\", \"CCCV_Chg\"]\ndischarge = [\"DChg\"]\n";
    let map = ColumnMap::from_file(&write(dir.path(), "map.toml", toml.as_bytes())).unwrap();
    let cell = read(&csv, Format::Mapped, Some(&map)).unwrap();
    assert_eq!(cell.rows.current, [0.0, 1.0, 1.0, -0.5, 0.01], "charge +|I|, discharge −|I|, rest as written");
    // Values compare as column names do (Neware's BTS 7 writes `CC_DChg`, BTS 8 `CC DChg`)…
    let spaced = ColumnMap::from_file(&write(dir.path(), "spaced.toml", toml.replace("CCCV_Chg", "cccv chg").as_bytes())).unwrap();
    assert_eq!(read(&csv, Format::Mapped, Some(&spaced)).unwrap().rows.current, cell.rows.current);
    // …and values that match no row carrying current name what the column holds.
    let wrong = ColumnMap::from_file(&write(dir.path(), "wrong.toml", toml.replace("[\"CHG\", \"CCCV_Chg\"]", "[\"C\"]").replace("[\"DChg\"]", "[\"D\"]").as_bytes())).unwrap();
    let Err(err) = read(&csv, Format::Mapped, Some(&wrong)).map(|_| ()) else { panic!("read with values of no row") };
    let err = err.to_string();
    assert!(err.contains("no row's 'Mode'") && err.contains("CCCV_Chg") && err.contains("DChg"), "{err}");
    // The state column without its values, or beside a stated sign, is refused before any row is read.
    let refused = |toml: &str| ColumnMap::from_file(&write(dir.path(), "bad.toml", toml.as_bytes())).unwrap_err().to_string();
    assert!(refused(&toml[..toml.find("[state_values]").unwrap()]).contains("[state_values]"));
    assert!(refused(&format!("sign = \"discharge_positive\"\n{toml}")).contains("keep one"));
}

/// Neware and Landt may write current unsigned, the sign only in a step-type column: read
/// without it, every discharge would be stored as a charge. The voltage falls under the positive
/// current at each discharge, which no charge-only file shows: refused, naming the remedy; with
/// the state column mapped the same file reads with its discharges negative.
#[test]
fn an_unsigned_current_without_its_state_column_is_refused() {
    use voltlens::data::ingest::{ingest, IngestOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("Time,Amps,Volts,Mode\n");
    let (mut t, mut v) = (0.0, 3.6);
    for _ in 0..2 {
        for (amps, dv, mode, rows) in [(0.0, 0.0, "Rest", 10), (1.0, 0.01, "CC_Chg", 30), (0.0, -0.001, "Rest", 10), (1.0, -0.012, "CC_DChg", 30)] {
            for _ in 0..rows {
                csv.push_str(&format!("{t},{amps},{v:.4},{mode}\n"));
                (t, v) = (t + 30.0, v + dv);
            }
        }
    }
    let csv = write(dir.path(), "unsigned.csv", csv.as_bytes());
    let plain = "[columns]\ntime = \"Time\"\ncurrent = \"Amps\"\nvoltage = \"Volts\"\n";
    let ingest_with = |map: &str, out: &str| {
        let map = write(dir.path(), &format!("{out}.toml"), map.as_bytes());
        let options = IngestOptions { format: Some(Format::Mapped), column_map: Some(map), nominal_capacity_ah: Some(0.5), ..IngestOptions::default() };
        ingest(std::slice::from_ref(&csv), &dir.path().join(out), &options)
    };
    let err = ingest_with(plain, "plain").unwrap_err().to_string();
    assert!(err.contains("unsigned") && err.contains("[state_values]") && err.contains("unsigned.csv"), "{err}");
    assert!(!dir.path().join("plain").exists(), "nothing written");
    let mapped = format!("{plain}state = \"Mode\"\n[state_values]\ncharge = [\"CC_Chg\"]\ndischarge = [\"CC_DChg\"]\n");
    let cells = ingest_with(&mapped, "mapped").unwrap();
    assert_eq!(cells.len(), 1);
}

/// Digatron, Gamry and many spreadsheet exports write a units row under the column names: a
/// column map skips it, and rows keep their line numbers in errors.
#[test]
fn a_column_map_skips_a_units_row() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "units.csv", b"Zeit;Strom;Spannung\nh:m:s;A;V\n0:00:00;0;3,5\n0:00:30;1,5;3,6\n0:01:00;x;3,7\n");
    let map = ColumnMap::from_toml_str(
        "delimiter = \";\"\nskip_after_header = 1\n[columns]\ntime = \"Zeit\"\ncurrent = \"Strom\"\nvoltage = \"Spannung\"\n",
        Path::new("map.toml"),
    )
    .unwrap();
    let Err(err) = read(&csv, Format::Mapped, Some(&map)).map(|_| ()) else { panic!("row 5 holds no number") };
    assert!(err.to_string().contains("row 5, field 'Strom'"), "{err}");
    std::fs::write(&csv, b"Zeit;Strom;Spannung\nh:m:s;A;V\n0:00:00;0;3,5\n0:00:30;1,5;3,6\n").unwrap();
    let cell = read(&csv, Format::Mapped, Some(&map)).unwrap();
    assert_eq!((cell.rows.test_time, cell.rows.current, cell.rows.source_row), (vec![0.0, 30.0], vec![0.0, 1.5], vec![3, 4]));
}

#[test]
fn mapped_format_needs_a_column_map_and_others_refuse_one() {
    let map = ColumnMap::from_file(&fixture("mapped_small.toml")).unwrap();
    assert!(formats::open(&fixture("mapped_small.csv"), Format::Mapped, None).is_err());
    assert!(formats::open(&fixture("arbin_small.csv"), Format::Arbin, Some(&map)).is_err());
}

#[test]
fn bad_column_map_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "map.toml", b"delimiter = \";\"\n[columns]\ntime = \"t\"\n");
    let message = ColumnMap::from_file(&path).unwrap_err().to_string();
    assert!(message.contains("map.toml") && message.contains("current"), "{message}");
    let path = write(dir.path(), "units.toml", b"[columns]\ntime=\"t\"\ncurrent=\"i\"\nvoltage=\"v\"\n[units]\ncurrent=\"kA\"\n");
    assert!(ColumnMap::from_file(&path).unwrap_err().to_string().contains("units.toml"));
}

#[test]
fn format_names_round_trip_through_text_and_serde() {
    for format in Format::ALL {
        assert_eq!(format.to_string().parse::<Format>().unwrap(), format);
        let json = serde_json::to_string(&format).unwrap();
        assert_eq!(json, format!("\"{format}\""));
        assert_eq!(serde_json::from_str::<Format>(&json).unwrap(), format);
    }
    assert_eq!(Format::BatteryArchive.to_string(), "battery_archive");
    assert_eq!("Battery-Archive".parse::<Format>().unwrap(), Format::BatteryArchive);
    let message = "excel".parse::<Format>().unwrap_err().to_string();
    assert!(message.contains("arbin") && message.contains("parquet"), "{message}");
}

/// A 10-row cell in Parquet, in row groups of 4, with `metadata` under key-value `key`.
fn write_parquet_cell(path: &Path, key: &str, metadata: &str) {
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    let rows = 10usize;
    let batch = RecordBatch::try_from_iter([
        ("cell_id", Arc::new(StringArray::from(vec!["cell-a"; rows])) as ArrayRef),
        ("test_time", Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64)))),
        ("current", Arc::new(Float32Array::from_iter_values((0..rows).map(|i| if i < 5 { 1.0 } else { -1.0 })))),
        ("voltage", Arc::new(Float32Array::from(vec![3.7f32; rows]))),
        ("temperature", Arc::new(Float32Array::from(vec![None, Some(25.0f32), None, None, None, None, None, None, None, None]))),
        ("cycle_number", Arc::new(Int32Array::from(vec![0; rows]))),
        ("gt_soc", Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64 / 10.0)))),
    ])
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(4))
        .set_key_value_metadata(Some(vec![KeyValue::new(key.to_owned(), metadata.to_owned())]))
        .build();
    let mut writer = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn pybamm_style_parquet_streams_gt_columns_and_key_value_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cell-a.parquet");
    write_parquet_cell(&path, "battery_metadata", r#"{"cell_id": "cell-a", "nominal_capacity_ah": 2.5, "protocol": "cccv", "seed": 7}"#);
    let cell = detect_and_read(&path, Format::Parquet);
    assert_eq!(cell.rows.len(), 10);
    assert_eq!(cell.chunk_sizes.iter().sum::<usize>(), 10);
    assert_eq!(cell.rows.source_row, (1..=10).collect::<Vec<u64>>());
    assert_eq!(cell.rows.temperature[1], Some(25.0));
    assert_eq!(cell.rows.step_index, vec![None; 10], "no step_index column");
    assert_eq!(cell.passthrough_f64("gt_soc")[9], Some(0.9));
    assert_eq!(cell.metadata.nominal_capacity_ah, Some(2.5));
    assert_eq!(cell.metadata.extra["seed"], 7);
}

#[test]
fn canonical_parquet_keeps_an_estimated_capacity_out_of_the_stated_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cell-a.parquet");
    let info = r#"{"cell_id": "cell-a", "nominal_capacity_ah": 1.07, "capacity_estimated": true, "protocol": "drive"}"#;
    write_parquet_cell(&path, "voltlens_cell", info);
    let cell = read(&path, Format::Parquet, None).unwrap();
    assert_eq!(cell.metadata.nominal_capacity_ah, None);
    assert_eq!(cell.metadata.extra["estimated_capacity_ah"], 1.07);
    assert_eq!(cell.metadata.protocol.as_deref(), Some("drive"));
}

/// pandas writes a time column as timestamps or durations, and other tools capitalise names:
/// both read as seconds (timestamps counted from the first row), names matched as in CSV headers.
#[test]
fn parquet_time_as_timestamps_or_durations_reads_as_seconds() {
    use arrow::array::{DurationMillisecondArray, TimestampMicrosecondArray};
    let dir = tempfile::tempdir().unwrap();
    let start_us = 1_710_408_600_000_000i64; // 2024-03-14 09:30 UTC
    let times: [(ArrayRef, [f64; 4]); 2] = [
        (Arc::new(TimestampMicrosecondArray::from_iter_values((0..4).map(|i| start_us + i * 60_000_000))), [0.0, 60.0, 120.0, 180.0]),
        (Arc::new(DurationMillisecondArray::from_iter_values((0..4).map(|i| 30_000 + i * 60_000))), [30.0, 90.0, 150.0, 210.0]),
    ];
    for (k, (time, seconds)) in times.into_iter().enumerate() {
        let batch = RecordBatch::try_from_iter([
            ("Test_Time", time),
            ("Current", Arc::new(Float64Array::from(vec![0.0, 1.0, 1.0, 0.0])) as ArrayRef),
            ("VOLTAGE", Arc::new(Float64Array::from(vec![3.5, 3.6, 3.7, 3.65]))),
        ])
        .unwrap();
        let path = dir.path().join(format!("cell-{k}.parquet"));
        let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let cell = detect_and_read(&path, Format::Parquet);
        assert_eq!(cell.rows.test_time, seconds, "{}", path.display());
        assert_eq!(cell.rows.voltage[2], 3.7);
    }
}

#[test]
fn long_files_stream_in_bounded_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 2 * CHUNK_ROWS + 17;
    let mut text = String::from(ARBIN_HEADER);
    for i in 0..rows {
        text.push_str(&format!("{i},{i}.0,1,0,1.0,3.5,{:.4},0\n", i as f64 * 1e-3));
    }
    let path = write(dir.path(), "long.csv", text.as_bytes());
    let cell = read(&path, Format::Arbin, None).unwrap();
    assert_eq!(cell.chunk_sizes, [CHUNK_ROWS, CHUNK_ROWS, 17]);
    assert_eq!(*cell.rows.source_row.last().unwrap(), rows as u64 + 1);
}

#[test]
fn current_written_negative_while_charging_is_flipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{ARBIN_HEADER}0,0,1,0,0,3.3,0,0\n1,10,1,0,-1,3.4,0.01,0\n2,20,1,0,-1,3.5,0.02,0\n3,30,2,0,1,3.2,0.02,0.01\n");
    let path = write(dir.path(), "flipped.csv", text.as_bytes());
    let cell = read(&path, Format::Arbin, None).unwrap();
    assert_eq!(cell.rows.current, [-0.0, 1.0, 1.0, -1.0]);
    assert!(cell.metadata.warnings.iter().any(|w| w.contains("flipped")), "{:?}", cell.metadata.warnings);
}

// ---------------------------------------------------------------------------------------------
// Broken inputs: an error naming the file (and row and field), never a panic

#[test]
fn empty_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "empty.csv", b"");
    assert!(error_of(&path, None).contains("empty"));
    assert!(error_of(&path, Some(Format::Arbin)).contains("empty"));
}

#[test]
fn header_only_file_has_no_data_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "header.csv", ARBIN_HEADER.as_bytes());
    assert!(error_of(&path, None).contains("no data rows"));
}

#[test]
fn truncated_last_line_is_dropped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{ARBIN_HEADER}0,0,1,0,0,3.3,0,0\n1,10,1,0,1,3.4,0.01,0\n2,20,1,0,1,3.");
    let path = write(dir.path(), "cut.csv", text.as_bytes());
    let cell = read(&path, Format::Arbin, None).unwrap();
    assert_eq!(cell.rows.len(), 2);
    assert!(cell.metadata.warnings.iter().any(|w| w.contains("row 4")), "{:?}", cell.metadata.warnings);
}

#[test]
fn short_line_before_the_end_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{ARBIN_HEADER}0,0,1,0,0,3.3,0,0\n1,10,1,0,1\n2,20,1,0,1,3.5,0.02,0\n");
    let path = write(dir.path(), "ragged.csv", text.as_bytes());
    assert!(error_of(&path, Some(Format::Arbin)).contains("row 3"));
}

#[test]
fn non_numeric_cell_names_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{ARBIN_HEADER}0,0,1,0,0,3.3,0,0\n1,10,1,0,1,abc,0.01,0\n");
    let path = write(dir.path(), "text.csv", text.as_bytes());
    let message = error_of(&path, None);
    assert!(message.contains("row 3") && message.contains("'Voltage'") && message.contains("abc"), "{message}");
}

#[test]
fn nan_or_infinite_time_current_or_voltage_names_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for (field, row) in [("Test_Time", "1,NaN,1,0,1,3.4,0.01,0"), ("Current", "1,10,1,0,inf,3.4,0.01,0"), ("Voltage", "1,10,1,0,1,NaN,0.01,0")] {
        let text = format!("{ARBIN_HEADER}0,0,1,0,0,3.3,0,0\n{row}\n");
        let path = write(dir.path(), &format!("nan_{field}.csv"), text.as_bytes());
        let message = error_of(&path, None);
        assert!(message.contains("row 3") && message.contains(&format!("'{field}'")), "{message}");
    }
}

#[test]
fn missing_column_is_named_with_the_columns_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "novolt.csv", b"Data_Point,Test_Time,Current,Charge_Capacity\n0,0,1,0\n");
    let message = error_of(&path, Some(Format::Arbin));
    assert!(message.contains("voltage") && message.contains("Charge_Capacity"), "{message}");
    let message = error_of(&path, None);
    assert!(message.contains("voltage"), "detected as Arbin, then the missing column named: {message}");
}

#[test]
fn unknown_format_lists_the_supported_ones_and_the_line_a_column_map_would_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "other.csv", b"Key:,Value\n\nStep,Cycle,Elapsed (Seconds),Voltage (mV),Current (mA)\n1,1,0,3500,0\n");
    let message = error_of(&path, None);
    assert!(message.contains("arbin") && message.contains("battery_archive") && message.contains("mapped"), "{message}");
    // The line a column map would name is shown.
    assert!(message.contains("line, 3, names Step, Cycle, Elapsed (Seconds), Voltage (mV), Current (mA)") && message.contains("header_line = 3"), "{message}");
}

/// An Arbin export saved again by a European spreadsheet (semicolons, decimal commas) reads the same rows.
#[test]
fn a_semicolon_separated_arbin_export_with_decimal_commas_reads_the_same() {
    resaved_reads_the_same("arbin_small.csv", Format::Arbin, |text| text.replace(',', ";").replace('.', ","));
}

/// Spreadsheets save formatted cells with thousands grouped (`1,250` mA, or `1.250` in a German
/// locale): the first cell that shows the decimal mark decides what the other one does, so a
/// grouped `1,250` in a point-decimal file is 1250, not the 1.25 a decimal comma would make it,
/// and a cell the style cannot read names the cell that set it.
#[test]
fn thousands_separators_read_as_the_file_writes_its_decimals() {
    let dir = tempfile::tempdir().unwrap();
    let read_mapped = |name: &str, delimiter: &str, csv: &str| {
        let map = format!("delimiter = \"{delimiter}\"\n[columns]\ntime = \"Time\"\ncurrent = \"I\"\nvoltage = \"U\"\n[units]\ncurrent = \"mA\"\n");
        let map = ColumnMap::from_toml_str(&map, Path::new("map.toml")).unwrap();
        read(&write(dir.path(), name, csv.as_bytes()), Format::Mapped, Some(&map))
    };
    let us = read_mapped("us.tsv", "\\t", "Time\tI\tU\n0\t0\t3.6512\n10\t1,250\t3.7001\n20\t-1,250.5\t3.6\n").unwrap();
    assert_eq!(us.rows.current, [0.0, 1.25, -1.2505]);
    let german = read_mapped("de.csv", ";", "Time;I;U\n0;0;3,6512\n10;1.250;3,7001\n20;-1.250,5;3,6\n").unwrap();
    assert_eq!((german.rows.current, german.rows.voltage), (us.rows.current, us.rows.voltage));
    let Err(err) = read_mapped("mixed.tsv", "\\t", "Time\tI\tU\n0\t0\t3.6512\n10\t500\t3,7001\n").map(|_| ()) else { panic!("a decimal comma in a point file read") };
    let err = err.to_string();
    assert!(err.contains("row 3, field 'U'") && err.contains("'3,7001'") && err.contains("row 2's '3.6512'"), "{err}");
}

/// A "Unicode text" export (UTF-16 with its byte-order mark) is named as such, with the way out.
#[test]
fn utf16_text_is_named_with_how_to_convert_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture("arbin_small.csv")).unwrap();
    let utf16: Vec<u8> = [0xFF, 0xFE].into_iter().chain(text.encode_utf16().flat_map(u16::to_le_bytes)).collect();
    let path = write(dir.path(), "unicode.txt", &utf16);
    let message = error_of(&path, None);
    assert!(message.contains("unicode.txt") && message.contains("UTF-16") && message.contains("iconv"), "{message}");
    // Through a column map too, where no detection runs first.
    let map = ColumnMap::from_toml_str("[columns]\ntime = \"Test_Time\"\ncurrent = \"Current\"\nvoltage = \"Voltage\"\n", Path::new("map.toml")).unwrap();
    let Err(err) = read(&path, Format::Mapped, Some(&map)).map(|_| ()) else { panic!("UTF-16 read through a map") };
    assert!(err.to_string().contains("UTF-16"), "{err}");
}

/// Chinese cycler software (Neware, Landt) may save GBK: its names read as Latin-1 match no column
/// map written in UTF-8, and the refusal says which encoding to convert from; a Latin-1 German
/// header missing a column gets no such hint.
#[test]
fn a_gbk_header_is_refused_with_the_encoding_to_convert_from() {
    let dir = tempfile::tempdir().unwrap();
    let map = ColumnMap::from_toml_str("[columns]\ntime = \"时间\"\ncurrent = \"电流(mA)\"\nvoltage = \"电压(V)\"\n", Path::new("map.toml")).unwrap();
    let gbk = b"\xca\xb1\xbc\xe4,\xb5\xe7\xc1\xf7(mA),\xb5\xe7\xd1\xb9(V)\n0,0,3.6\n10,500,3.7\n";
    let Err(err) = read(&write(dir.path(), "gbk.csv", gbk), Format::Mapped, Some(&map)).map(|_| ()) else { panic!("GBK names matched") };
    assert!(err.to_string().contains("iconv -f GBK"), "{err}");
    let map = ColumnMap::from_toml_str("delimiter = \";\"\n[columns]\ntime = \"Zeit\"\ncurrent = \"Strom\"\nvoltage = \"Spannung\"\n", Path::new("map.toml")).unwrap();
    let latin1 = b"Zeit;Strom;Gr\xf6\xdfe;Temperatur/\xb0C\n0;0;3,6;25\n";
    let Err(err) = read(&write(dir.path(), "de.csv", latin1), Format::Mapped, Some(&map)).map(|_| ()) else { panic!("no Spannung column") };
    assert!(err.to_string().contains("Spannung") && !err.to_string().contains("iconv"), "{err}");
}

#[test]
fn binary_garbage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let path = write(dir.path(), "garbage.bin", &garbage);
    assert!(error_of(&path, None).contains("binary"));
    for format in [Format::Arbin, Format::Maccor, Format::Biologic, Format::Novonix, Format::BatteryArchive, Format::Parquet] {
        error_of(&path, Some(format));
    }
    let path = write(dir.path(), "garbage.parquet", &garbage);
    assert!(error_of(&path, None).contains("PAR1"));
}


/// Binary cycler files users hand over are named, with the export that VoltLens reads.
#[test]
fn vendor_binaries_are_refused_with_the_export_to_make() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 4] = [
        ("cell.mpr", b"BIO-LOGIC MODULAR FILE\x1a      \x00\x00\x01", "EC-Lab"),
        ("cell.res", b"\x00\x01\x00\x00Standard Jet DB\x00\x01\x00\x00", "MITS Pro"),
        ("cell.nda", b"NEWARE\x00\x00\x00\x00\x03\x01", "BTSDA"),
        ("workbook", &std::fs::read(workbook("arbin.xlsx")).unwrap(), "name a workbook .xlsx"),
    ];
    for (name, bytes, hint) in cases {
        let message = error_of(&write(dir.path(), name, bytes), None);
        assert!(message.contains(hint), "{name}: {message}");
    }
}

// ---------------------------------------------------------------------------------------------
// Workbooks (tests/fixtures/workbooks, written by openpyxl, xlwt and odfpy: scripts/workbook_fixtures.py)

fn workbook(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workbooks").join(name)
}

/// Arbin's MITS Pro layout (a record over two sheets that repeat its header, beside info and
/// per-cycle statistics sheets that name the same columns), the same record as Excel 97-2003 and
/// as OpenDocument, and Neware's BTS layout (durations as Excel times, an unsigned current signed by Step Type)
/// read row for row as the CSV twins of the same tables.
#[test]
fn workbooks_read_as_their_csv_twins() {
    for (book, twin, format, sheets) in [
        ("arbin.xlsx", "arbin.csv", Format::Arbin, vec!["Channel_1-008_1", "Channel_1-008_2"]),
        ("arbin.xls", "arbin.csv", Format::Arbin, vec!["Channel_1-008"]),
        ("arbin.ods", "arbin.csv", Format::Arbin, vec!["Channel_1-008"]),
        ("neware.xlsx", "neware.csv", Format::Neware, vec!["record"]),
        ("landt.xlsx", "landt.csv", Format::Landt, vec!["Record-Tab"]),
        ("neware7.xls", "neware7.csv", Format::Neware, vec!["Detail_1_1_8"]),
    ] {
        let (book_cell, twin_cell) = (detect_and_read(&workbook(book), format), detect_and_read(&workbook(twin), format));
        let (a, b) = (&book_cell.rows, &twin_cell.rows);
        assert_eq!(a.len(), 400, "{book}");
        assert_eq!((&a.test_time, &a.current, &a.voltage, &a.temperature), (&b.test_time, &b.current, &b.voltage, &b.temperature), "{book}");
        assert_eq!((&a.cycle_number, &a.step_index, &a.source_row), (&b.cycle_number, &b.step_index, &b.source_row), "{book}");
        assert!(a.current.iter().any(|&i| i < 0.0) && a.current.iter().any(|&i| i > 0.0), "{book}: charge and discharge");
        let read: Vec<&str> = book_cell.metadata.extra["workbook_sheets"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert_eq!(read, sheets, "{book}");
    }
}

/// A bad cell is named by workbook, sheet and the row a spreadsheet shows, also on a record's
/// second sheet; so is a sheet that repeats the record's header but starts its clock again
/// (another channel's); a workbook with no time series lists its sheets.
#[test]
fn workbook_errors_name_the_sheet_and_its_row() {
    let message = error_of(&workbook("bad.xlsx"), None);
    assert!(message.contains("bad.xlsx (sheet 'Channel_1-008_2'), row 57, field 'Voltage(V)'") && message.contains("'n/a'"), "{message}");
    let message = error_of(&workbook("channels.xlsx"), None);
    assert!(message.contains("channels.xlsx (sheet 'Channel_1-002'), row 2") && message.contains("a sheet per channel?"), "{message}");
    let message = error_of(&workbook("notes.xlsx"), None);
    assert!(message.contains("no sheet has a known column header (sheets 'Notes' (3 rows))"), "{message}");
}

/// A workbook no layout knows reads through a column map: its longest sheet.
#[test]
fn a_column_map_reads_a_workbook_of_its_own_layout() {
    let map = "[columns]\ntime = \"Total Time\"\ncurrent = \"Current(A)\"\nvoltage = \"Voltage(V)\"\nstate = \"Step Type\"\n\
               [state_values]\ncharge = [\"CC Chg\", \"CV Chg\"]\ndischarge = [\"CC DChg\"]\n";
    let map = ColumnMap::from_toml_str(map, Path::new("map.toml")).unwrap();
    let mapped = read(&workbook("neware.xlsx"), Format::Mapped, Some(&map)).unwrap();
    let native = detect_and_read(&workbook("neware.csv"), Format::Neware);
    assert_eq!((&mapped.rows.test_time, &mapped.rows.current, &mapped.rows.voltage), (&native.rows.test_time, &native.rows.current, &native.rows.voltage));
}

/// MIMS Client's export with a header block writes `TestTime` as a number in the unit chosen at
/// export; its `DPt Time` clock (whole seconds, 12-hour) tells which. 70 rows a minute apart.
#[test]
fn a_maccor_test_time_in_minutes_or_hours_is_read_by_its_clock() {
    let dir = tempfile::tempdir().unwrap();
    let start = chrono::NaiveDate::from_ymd_opt(2021, 5, 11).unwrap().and_hms_opt(11, 40, 24).unwrap();
    for (unit, per_minute, warned) in [("seconds", 60.0, false), ("minutes", 1.0, true), ("hours", 1.0 / 60.0, true)] {
        let mut text = String::from("Name:\tCW-015.053\nChannel:\t53\nProcedure\tCW_CT.000\nStarted\t5/11/2021 11:40:24 AM\n\n");
        text.push_str("Rec\tCycle P\tCycle C\tStep\tTestTime\tStepTime\tCap. [Ah]\tCurrent [A]\tVoltage [V]\tMd\tES\tDPt Time\n\n");
        for i in 0..70 {
            let (md, amps, volts) = if i < 35 { ("C", 0.5, 3.5 + 0.01 * i as f64) } else { ("D", 0.5, 3.85 - 0.01 * (i - 35) as f64) };
            let stamp = (start + chrono::Duration::minutes(i)).format("%-m/%-d/%Y %-I:%M:%S %p");
            text.push_str(&format!("{}\t0\t1\t1\t{:.6}\t0\t0\t{amps}\t{volts:.4}\t{md}\t0\t{stamp}\n", i + 1, i as f64 * per_minute));
        }
        let cell = detect_and_read(&write(dir.path(), &format!("mims-{unit}.txt"), text.as_bytes()), Format::Maccor);
        assert!((cell.rows.test_time[69] - 69.0 * 60.0).abs() < 1e-3, "{unit}: {:?}", &cell.rows.test_time[60..]);
        assert_eq!(cell.rows.current[0], 0.5, "{unit}: charging (Md C) is +");
        assert_eq!(cell.rows.current[40], -0.5, "{unit}: discharging (Md D) is −");
        let warning = cell.metadata.warnings.iter().any(|w| w.contains(&format!("TestTime read in {unit}")));
        assert_eq!(warning, warned, "{unit}: {:?}", cell.metadata.warnings);
    }
}
