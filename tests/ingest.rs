//! Ingest end to end: real cycler files and the PyBaMM set into canonical Parquet, derived
//! columns against ground truth, and bad input refused without partial output.

mod common;

use std::path::{Path, PathBuf};

use voltlens::data::canonical::{read_cell, Dataset};
use voltlens::data::cells::AnchorMethod;
use voltlens::data::ingest::{ingest, IngestOptions};
use voltlens::data::schema::{Method, State};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

use common::shared;

#[test]
#[should_panic(expected = "CI=true")]
fn missing_shared_data_fails_under_ci() {
    common::shared_in(Path::new("/nonexistent-voltlens-shared"), "cyclers", true);
}

#[test]
fn missing_shared_data_is_skipped_outside_ci() {
    assert!(common::shared_in(Path::new("/nonexistent-voltlens-shared"), "cyclers", false).is_none());
}

/// A BatteryArchive-style CSV with the given rows (time s, current A, voltage V).
fn write_csv(dir: &Path, name: &str, rows: &[(f64, f64, f64)]) -> PathBuf {
    let mut text = String::from("Date_Time,Test_Time (s),Cycle_Index,Current (A),Voltage (V),Charge_Capacity (Ah),Discharge_Capacity (Ah),Cell_Temperature (C)\n");
    let (mut qc, mut qd) = (0.0, 0.0);
    let mut last_t = rows.first().map_or(0.0, |r| r.0);
    for &(t, i, v) in rows {
        let dq = i * (t - last_t).max(0.0) / 3600.0;
        if dq > 0.0 { qc += dq } else { qd -= dq }
        last_t = t;
        text.push_str(&format!(",{t},1,{i:.5},{v:.5},{qc:.6},{qd:.6},25.0\n"));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A simple CC discharge then CC charge of a 2 Ah cell, every 10 s.
fn cycle_rows() -> Vec<(f64, f64, f64)> {
    let mut rows = Vec::new();
    for k in 0..360 {
        rows.push((k as f64 * 10.0, -2.0, 4.1 - 0.002 * k as f64));
    }
    for k in 360..720 {
        rows.push((k as f64 * 10.0, 2.0, 3.4 + 0.002 * (k - 360) as f64));
    }
    rows
}

fn opts() -> IngestOptions {
    IngestOptions { nominal_capacity_ah: Some(2.0), ..IngestOptions::default() }
}

#[test]
fn csv_ingest_derives_state_c_rate_and_dt() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = write_csv(tmp.path(), "cell-a.csv", &cycle_rows());
    let out = tmp.path().join("out");
    let cells = ingest(&[csv], &out, &opts()).unwrap();
    assert_eq!(cells.len(), 1);
    let (info, data) = read_cell(&out.join("timeseries/cell-a.parquet")).unwrap();
    assert_eq!(info.rows, 720);
    assert_eq!(data.dt[0], 0.0);
    assert!(data.dt[1..].iter().all(|&d| (d - 10.0).abs() < 1e-3));
    assert_eq!(data.state[0], State::Discharging);
    assert_eq!(data.state[500], State::Charging);
    assert!((data.c_rate[0] + 1.0).abs() < 1e-6, "2 A on a 2 Ah cell is -1C on discharge");
    assert_eq!(data.method[10], Method::ConstantCurrent);
    // A 1C discharge and a CC charge that never tapers: no anchor, so no absolute SOC.
    assert_eq!(info.anchor_method, AnchorMethod::Unanchored);
    assert!(data.soc.iter().all(|s| s.is_nan()));
}

/// Blank cycle and step indices inside a step (as in rows 100 and 101 here) take the row
/// before's: no step of their own, no cycle below the first, and a warning naming the first row.
#[test]
fn blank_cycle_and_step_indices_carry_the_row_before() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::from("Data_Point,Test_Time(s),Step_Index,Cycle_Index,Current(A),Voltage(V)\n");
    for (k, (t, i, v)) in cycle_rows().into_iter().enumerate() {
        let (step, cycle) = if (98..100).contains(&k) { (String::new(), String::new()) } else { ((1 + (k >= 360) as u8).to_string(), "3".to_owned()) };
        text.push_str(&format!("{k},{t},{step},{cycle},{i},{v}\n"));
    }
    let csv = tmp.path().join("cell-a.csv");
    std::fs::write(&csv, text).unwrap();
    let out = tmp.path().join("out");
    let cells = ingest(&[csv], &out, &opts()).unwrap();
    let (_, data) = read_cell(&out.join("timeseries/cell-a.parquet")).unwrap();
    assert!(data.cycle_number.iter().all(|&c| c == 0), "one cycle, numbered from 0");
    assert_eq!(data.step_index[98..100], [1, 1]);
    assert!(data.step_time[1..360].windows(2).all(|w| w[1] > w[0]), "the discharge is one step");
    assert!(cells[0].metadata.contains("2 rows (the first at row 100) had no cycle or step index"), "{}", cells[0].metadata);
}

/// A 30-day jump inside the discharge (a paused test, or dates read with day and month swapped)
/// is named by its row; with no capacity given it is named as the reason the estimate fails.
#[test]
fn a_clock_jump_while_current_flows_is_reported_at_its_row() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: Vec<_> = cycle_rows().into_iter().enumerate().map(|(k, (t, i, v))| (t + if k >= 100 { 30.0 * 86400.0 } else { 0.0 }, i, v)).collect();
    let csv = write_csv(tmp.path(), "cell-a.csv", &rows);
    let cells = ingest(std::slice::from_ref(&csv), &tmp.path().join("out"), &opts()).unwrap();
    // Line 102 of the file holds row 100 (after the header).
    assert!(cells[0].metadata.contains("row 102: 30.0 days pass since the row before while current flows"), "{}", cells[0].metadata);
    let estimated = ingest(&[csv], &tmp.path().join("estimated"), &IngestOptions::default()).unwrap_err().to_string();
    assert!(estimated.contains("row 102") && estimated.contains("30.0 days"), "{estimated}");
}

#[test]
fn repeated_timestamps_are_dropped_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = cycle_rows();
    rows.insert(100, rows[99]);
    // Within a microsecond is the same time; the same current there is a repeat.
    let (t, i, v) = rows[199];
    rows.insert(200, (t + 4e-7, i, v + 0.001));
    let csv = write_csv(tmp.path(), "dup.csv", &rows);
    let out = tmp.path().join("out");
    let cells = ingest(&[csv], &out, &opts()).unwrap();
    assert_eq!(cells[0].rows, 720);
    assert!(cells[0].metadata.contains("dropped 2 rows repeating the previous timestamp"), "{}", cells[0].metadata);
}

/// A 0.19 A (below C/10) discharge to 3.382 V, anchoring SOC 0 at its last row, then a 0.19 A
/// charge for an hour, with the switch logged twice at t = 3590 s: the discharge's end and the
/// charge's start, at the same time (a cycler logging whole seconds) or 4e-7 s apart (PyBaMM).
/// Both rows are needed: without the second, the 10 s after the switch count as half discharge,
/// and the charge ends at SOC 0.0947, not 0.095.
#[test]
fn a_current_switch_logged_twice_at_one_instant_keeps_both_rows_and_counts_charge_exactly() {
    for gap in [0.0, 4e-7] {
        let tmp = tempfile::tempdir().unwrap();
        let mut rows: Vec<(f64, f64, f64)> = cycle_rows().into_iter().map(|(t, i, v)| (t, 0.095 * i, v)).collect();
        let (t, _, v) = rows[359];
        rows.insert(360, (t + gap, 0.19, v));
        let csv = write_csv(tmp.path(), "switch.csv", &rows);
        let out = tmp.path().join("out");
        let options = IngestOptions { lower_cutoff_v: Some(3.382), ..opts() };
        let cells = ingest(&[csv], &out, &options).unwrap();
        assert_eq!(cells[0].rows, 721, "gap {gap}: {}", cells[0].metadata);
        let (info, data) = read_cell(&out.join("timeseries/switch.parquet")).unwrap();
        assert_eq!(info.anchor_method, AnchorMethod::LowRateDischarge, "{}", info.metadata);
        assert!((data.dt[360] - 1e-6).abs() < 1e-9 && data.current[360] == 0.19, "the switch row, a microsecond on: {}", data.dt[360]);
        let end = *data.soc.last().unwrap();
        assert!((end - 0.095).abs() < 2e-5, "gap {gap}: SOC after an hour at 0.19 A is {end}");
    }
}

/// Three rows logged in one second with three currents (a step's end, a rest row, the next
/// step's start) keep a microsecond apart each; a fourth repeating the third is a duplicate. None
/// stepped back (the third was compared with the second's kept time, and dropped as such).
#[test]
fn three_rows_at_one_instant_keep_their_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = cycle_rows();
    let (t, _, v) = rows[359];
    rows.splice(360..360, [(t, 0.0, v), (t, 2.0, v), (t, 2.0, v)]);
    let csv = write_csv(tmp.path(), "three.csv", &rows);
    let out = tmp.path().join("out");
    let cells = ingest(&[csv], &out, &opts()).unwrap();
    assert_eq!(cells[0].rows, 722, "{}", cells[0].metadata);
    assert!(!cells[0].metadata.contains("stepped back") && cells[0].metadata.contains("dropped 1 rows repeating"), "{}", cells[0].metadata);
    let (_, data) = read_cell(&out.join("timeseries/three.parquet")).unwrap();
    assert_eq!((data.current[360], data.current[361]), (0.0, 2.0));
    assert!(data.dt[360..362].iter().all(|&dt| (dt - 1e-6).abs() < 1e-9), "{:?}", &data.dt[359..363]);
}

/// An idle record (0 A and −1 µA of noise, the voltage wandering by a tenth of a mV) carries no
/// current, so it shows no sign: read, not refused as written unsigned.
#[test]
fn a_record_that_never_leaves_rest_is_read_without_a_sign_check() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: Vec<(f64, f64, f64)> = (0..480).map(|k| (k as f64, if k % 97 == 5 { -1e-6 } else { 0.0 }, 3.6825 + 1e-4 * ((k * 7 % 5) as f64 - 2.0))).collect();
    let cells = ingest(&[write_csv(tmp.path(), "idle.csv", &rows)], &tmp.path().join("out"), &IngestOptions::default()).unwrap();
    assert_eq!(cells[0].rows, 480);
}

/// Two full cycles of a 2 Ah cell under one Cycle_Index (a column that never advances): each
/// discharge is one cycle's capacity, 1.0 of nominal, not the two together.
#[test]
fn a_cycle_column_that_never_advances_gives_soh_per_discharge() {
    let tmp = tempfile::tempdir().unwrap();
    let one = cycle_rows();
    let rows: Vec<(f64, f64, f64)> = one.iter().copied().chain(one.iter().map(|&(t, i, v)| (t + 7200.0, i, v))).collect();
    let csv = write_csv(tmp.path(), "twice.csv", &rows);
    let out = tmp.path().join("out");
    let cells = ingest(&[csv], &out, &IngestOptions { lower_cutoff_v: Some(3.382), ..opts() }).unwrap();
    let (_, data) = read_cell(&out.join("timeseries/twice.parquet")).unwrap();
    let soh: Vec<f32> = data.soh.iter().flatten().copied().collect();
    assert!(!soh.is_empty() && soh.iter().all(|s| (s - 0.9972).abs() < 1e-3), "soh {:?}", &soh[..soh.len().min(3)]);
    assert!(cells[0].metadata.contains("holds 2 full discharges"), "{}", cells[0].metadata);
}

/// A 2 mAh coin cell, no capacity given: a C/5 discharge (0.4 mA), a C/50 one (40 µA, below the
/// 0.1 mA floor a cell of unknown size rests under; the voltage relaxes 20 mV as the current
/// drops), then a C/5 charge. Once its capacity is estimated, the C/50 step is a discharge, and
/// counts in the capacity.
#[test]
fn a_small_cell_of_unknown_capacity_keeps_its_slow_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let fast = (0..300).map(|k| (60.0 * k as f64, -4e-4, 4.1 - 0.0035 * k as f64));
    let slow = (300..360).map(|k| (60.0 * k as f64, -4e-5, 3.07 - 0.001 * (k - 300) as f64));
    let charge = (360..660).map(|k| (60.0 * k as f64, 4e-4, 3.1 + 0.0035 * (k - 360) as f64));
    let rows: Vec<(f64, f64, f64)> = fast.chain(slow).chain(charge).collect();
    let csv = write_csv(tmp.path(), "coin.csv", &rows);
    let out = tmp.path().join("out");
    ingest(&[csv], &out, &IngestOptions::default()).unwrap();
    let (info, data) = read_cell(&out.join("timeseries/coin.parquet")).unwrap();
    assert!(data.state[301..360].iter().all(|&s| s == State::Discharging), "{:?}", &data.state[295..305]);
    // 0.4 mA for 5 h, 40 µA for 59 min: each step's charge, not the minute between them.
    let discharged = 4e-4 * 299.0 / 60.0 + 4e-5 * 59.0 / 60.0;
    assert!((info.nominal_capacity_ah - discharged).abs() < 1e-9, "{} Ah", info.nominal_capacity_ah);
}

/// A CC-CV charge under one step index as an Arbin logs it: the current's ramp at the step's start
/// (0.5 s at 60 ms), 1.1 A every 5 s, and the hold's first row logged as the voltage reached
/// 3.6 V (3 mV up, 0.91 A). The ramp is not the step's control and the hold's first row not the
/// CC step's: a CC step, then a CV hold (all one step of method "other" before).
#[test]
fn a_cc_cv_step_with_a_current_ramp_reads_as_cc_then_cv() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rows: Vec<(f64, i32, f64, f64)> = (0..10).map(|k| (10.0 * k as f64, 1, 0.0, 3.3)).collect();
    rows.extend((1..9).map(|k| (100.0 + 0.06 * k as f64, 2, 0.1375 * k as f64, 3.3 + 0.01 * k as f64)));
    rows.extend((0..84).map(|k| (101.0 + 5.0 * k as f64, 2, 1.1, 3.38 + 0.0026 * k as f64)));
    rows.extend((0..120).map(|k| (521.0 + 5.0 * k as f64, 2, 0.91 * (-(k as f64) / 40.0).exp(), 3.6003 - 0.0002 * (k % 2) as f64)));
    let mut text = String::from("Data_Point,Test_Time(s),Step_Time(s),Cycle_Index,Step_Index,Current(A),Voltage(V),Charge_Capacity(Ah),Discharge_Capacity(Ah)\n");
    let mut charge = 0.0;
    for (n, w) in rows.iter().enumerate() {
        if n > 0 {
            charge += 0.5 * (w.2 + rows[n - 1].2) * (w.0 - rows[n - 1].0) / 3600.0;
        }
        let start = rows.iter().find(|r| r.1 == w.1).unwrap().0;
        text.push_str(&format!("{},{},{},1,{},{},{},{charge},0\n", n + 1, w.0, w.0 - start, w.1, w.2, w.3));
    }
    let csv = tmp.path().join("cccv.csv");
    std::fs::write(&csv, text).unwrap();
    let out = tmp.path().join("out");
    ingest(&[csv], &out, &opts()).unwrap();
    let (_, data) = read_cell(&out.join("timeseries/cccv.parquet")).unwrap();
    let cc = 18..102;
    assert!(data.method[cc].iter().all(|&m| m == Method::ConstantCurrent), "{:?}", &data.method[14..24]);
    assert!(data.method[103..].iter().all(|&m| m == Method::ConstantVoltage), "{:?}", &data.method[100..106]);
}

/// Constant-power steps (7.4 W, logged every second): the current moves with the voltage, so
/// each is one step of method "other", neither constant current nor a charge split into holds
/// where its current falls row by row.
#[test]
fn constant_power_steps_are_neither_constant_current_nor_split_into_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let discharge = (0..1500).map(|k| (k as f64, 3.9 - 0.0004 * k as f64));
    let charge = (0..1500).map(|k| (1500.0 + k as f64, 3.3 + 0.0004 * k as f64));
    let rows: Vec<(f64, f64, f64)> = discharge.map(|(t, v)| (t, -7.4 / v, v)).chain(charge.map(|(t, v)| (t, 7.4 / v, v))).collect();
    let csv = write_csv(tmp.path(), "cp.csv", &rows);
    let out = tmp.path().join("out");
    ingest(&[csv], &out, &opts()).unwrap();
    let (_, data) = read_cell(&out.join("timeseries/cp.parquet")).unwrap();
    let not_other: Vec<(usize, &Method)> = data.method.iter().enumerate().filter(|(_, &m)| m != Method::Other).collect();
    assert!(not_other.is_empty(), "{:?}", &not_other[..not_other.len().min(5)]);
    for half in [1..1500, 1501..3000] {
        assert!(data.step_time[half.clone()].windows(2).all(|w| w[1] > w[0]), "one step each: {half:?}");
    }
}

/// A two-stage charge (2 A, then 1 A with its IR drop) in a file without a step index: two
/// constant-current steps, not one step of method "other".
#[test]
fn a_stepped_current_within_one_state_starts_a_step_without_a_step_index() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: Vec<(f64, f64, f64)> =
        (0..200).map(|k| (10.0 * k as f64, 2.0, 3.6 + 0.001 * k as f64)).chain((200..400).map(|k| (10.0 * k as f64, 1.0, 3.78 + 0.0005 * (k - 200) as f64))).collect();
    let csv = write_csv(tmp.path(), "two-stage.csv", &rows);
    let out = tmp.path().join("out");
    ingest(&[csv], &out, &opts()).unwrap();
    let (_, data) = read_cell(&out.join("timeseries/two-stage.parquet")).unwrap();
    assert!(data.method.iter().all(|&m| m == Method::ConstantCurrent), "{:?}", data.method.iter().filter(|&&m| m != Method::ConstantCurrent).count());
    assert_eq!((data.step_time[199] > 1900.0, data.step_time[200], data.step_time[399] > 1900.0), (true, 0.0, true));
}

/// A 1C discharge to 3.382 V, then a hold there whose current decays from 1C (τ = 600 s) to
/// C/20: empty but for what the taper would still give (I_end·τ = 0.1 A × 600 s, 0.83 % of 2 Ah);
/// then 1790 s at 1C (+0.4972) and the 10 s between (+0.0013).
#[test]
fn a_discharge_tapering_at_the_lower_cutoff_anchors_soc_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let discharge = cycle_rows().into_iter().take(360);
    let hold = (1..=180).map(|k| (3590.0 + 10.0 * k as f64, -2.0 * (-(10.0 * k as f64) / 600.0).exp(), 3.382));
    let charge = (1..=180).map(|k| (5390.0 + 10.0 * k as f64, 2.0, 3.5 + 0.001 * k as f64));
    let rows: Vec<(f64, f64, f64)> = discharge.chain(hold).chain(charge).collect();
    let csv = write_csv(tmp.path(), "cv-discharge.csv", &rows);
    let out = tmp.path().join("out");
    let cells = ingest(&[csv], &out, &IngestOptions { lower_cutoff_v: Some(3.382), ..opts() }).unwrap();
    assert_eq!(cells[0].anchor_method, AnchorMethod::LowRateDischarge, "{}", cells[0].metadata);
    let (_, data) = read_cell(&out.join("timeseries/cv-discharge.parquet")).unwrap();
    let (end_of_hold, end) = (data.soc[539], *data.soc.last().unwrap());
    assert!((end_of_hold - 0.0083).abs() < 0.0005 && (end - 0.5068).abs() < 0.0005, "SOC {end_of_hold} after the hold, {end} at the end");
}

#[test]
fn time_going_backwards_is_refused_naming_the_row_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = cycle_rows();
    rows[300].0 = rows[299].0 - 500.0;
    let csv = write_csv(tmp.path(), "back.csv", &rows);
    let out = tmp.path().join("out");
    let err = ingest(&[csv], &out, &opts()).unwrap_err().to_string();
    assert!(err.contains("back.csv") && err.contains("row 302") && err.contains("test_time") && err.contains("backwards"), "{err}");
    assert!(!out.exists(), "no partial output");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 1, "only the input remains: {leftovers:?}");
}

#[test]
fn a_failed_ingest_keeps_the_previous_output() {
    let tmp = tempfile::tempdir().unwrap();
    let good = write_csv(tmp.path(), "good.csv", &cycle_rows());
    let out = tmp.path().join("out");
    ingest(&[good.clone()], &out, &opts()).unwrap();
    let mut rows = cycle_rows();
    rows[10].2 = f64::NAN;
    let bad = write_csv(tmp.path(), "bad.csv", &rows);
    assert!(ingest(&[good, bad], &out, &opts()).is_err());
    assert!(Dataset::load(&out).is_ok(), "the earlier dataset is intact");
}

#[test]
fn a_cell_that_gives_well_past_its_nominal_capacity_is_flagged() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = write_csv(tmp.path(), "big.csv", &cycle_rows());
    // The cycle discharges 2 Ah: on a stated 1.6 Ah that is 1.25×, on 2 Ah nothing to say.
    let rated = IngestOptions { nominal_capacity_ah: Some(1.6), ..IngestOptions::default() };
    let cells = ingest(&[csv.clone()], &tmp.path().join("o1"), &rated).unwrap();
    assert!(cells[0].metadata.contains("1.25× the nominal capacity of 1.6000 Ah"), "{}", cells[0].metadata);
    let cells = ingest(&[csv], &tmp.path().join("o2"), &opts()).unwrap();
    assert!(!cells[0].metadata.contains("the nominal capacity of"), "{}", cells[0].metadata);
}

/// SOH is a full cycle's capacity: the shipped HPPC and GITT cells discharge in stages that stop
/// near 20 % SOC, 80 % of a fresh cell's capacity, and get no SOH (it read 0.80–0.82), while the
/// CC-CV cells, discharged to the lower cut-off, read about 1 (also where the cut-off is not
/// known: their discharge is one step).
#[test]
fn a_discharge_that_stops_short_of_the_lower_cutoff_gives_no_soh() {
    let tmp = tempfile::tempdir().unwrap();
    let src = repo().join("data/pybamm-chen2020");
    let files: Vec<PathBuf> = ["chen2020-11-00-cccv.parquet", "chen2020-11-02-hppc.parquet", "chen2020-11-04-gitt.parquet"].iter().map(|f| src.join(f)).collect();
    ingest(&files, &tmp.path().join("ds"), &IngestOptions::default()).unwrap();
    let ds = Dataset::load(&tmp.path().join("ds")).unwrap();
    for (cell, data) in ds.cells.iter().zip(&ds.data) {
        let soh: Vec<f32> = data.soh.iter().flatten().copied().collect();
        if cell.cell_id.contains("cccv") {
            assert!(!soh.is_empty() && soh.iter().all(|s| (0.95..1.05).contains(s)), "{}: {soh:?}", cell.cell_id);
        } else {
            assert!(soh.is_empty(), "{} stops near 20 % SOC, yet SOH {:?}", cell.cell_id, soh.first());
        }
    }
}

#[test]
fn current_in_milliamps_labelled_as_amps_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: Vec<_> = cycle_rows().into_iter().map(|(t, i, v)| (t, i * 1000.0, v)).collect();
    let csv = write_csv(tmp.path(), "ma.csv", &rows);
    let err = ingest(&[csv.clone()], &tmp.path().join("o1"), &opts()).unwrap_err().to_string();
    assert!(err.contains("mA") && err.contains("ma.csv"), "{err}");
    let estimate = IngestOptions::default();
    let err = ingest(&[csv], &tmp.path().join("o2"), &estimate).unwrap_err().to_string();
    assert!(err.contains("mA"), "with an estimated capacity too: {err}");
    // A 2 Ah cell in mA reads as 2000 Ah and is refused; a 0.3 Ah one as 300 Ah, a size some
    // cells have: kept, with a warning that asks.
    let small: Vec<_> = cycle_rows().into_iter().map(|(t, i, v)| (t, i * 150.0, v)).collect();
    let cells = ingest(&[write_csv(tmp.path(), "small.csv", &small)], &tmp.path().join("o3"), &estimate).unwrap();
    assert!(cells[0].metadata.contains("is the current in mA labelled as A?"), "{}", cells[0].metadata);
}

/// A file whose cycle column never advances sums its 60 discharges of a 20 Ah cell into one
/// cycle's 1200 Ah: refused naming the cycle column, not the current's unit, when the lower
/// cut-off that would tell full discharges apart cannot be inferred (all as long).
#[test]
fn many_discharges_in_one_cycle_are_refused_naming_the_cycle_column() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: Vec<_> = (0..60).flat_map(|c| cycle_rows().into_iter().map(move |(t, i, v)| (t + 7200.0 * c as f64, 10.0 * i, v))).collect();
    let err = ingest(&[write_csv(tmp.path(), "one_cycle.csv", &rows)], &tmp.path().join("out"), &IngestOptions::default()).unwrap_err().to_string();
    assert!(err.contains("cycle column never advance") && err.contains("--lower-cutoff") && !err.contains("mA"), "{err}");
}

/// A temperature column of exact zeros (a BDF export's unfilled ambient column, SINTEF's Landt
/// file) reads as not logged, with a warning; one zero among real readings stays.
#[test]
fn a_temperature_column_of_zeros_is_a_placeholder() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = write_csv(tmp.path(), "zeros.csv", &cycle_rows());
    std::fs::write(&csv, std::fs::read_to_string(&csv).unwrap().replace(",25.0\n", ",0.0\n")).unwrap();
    let cells = ingest(&[csv], &tmp.path().join("out"), &opts()).unwrap();
    let (_, data) = read_cell(&tmp.path().join("out/timeseries/zeros.parquet")).unwrap();
    assert!(data.temperature.iter().all(Option::is_none), "{:?}", &data.temperature[..3]);
    assert!(cells[0].metadata.contains("placeholder"), "{}", cells[0].metadata);
    let csv = write_csv(tmp.path(), "cold.csv", &cycle_rows());
    let text = std::fs::read_to_string(&csv).unwrap().replacen(",25.0\n", ",0.0\n", 1);
    std::fs::write(&csv, text).unwrap();
    ingest(&[csv], &tmp.path().join("out2"), &opts()).unwrap();
    let (_, data) = read_cell(&tmp.path().join("out2/timeseries/cold.parquet")).unwrap();
    assert_eq!((data.temperature[0], data.temperature[1]), (Some(0.0), Some(25.0)));
}

/// Voltage in mV labelled as V, and a working electrode's negative potential, each refused with
/// its likely cause.
#[test]
fn an_implausible_voltage_is_refused_naming_its_likely_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let millivolts: Vec<_> = cycle_rows().into_iter().map(|(t, i, v)| (t, i, v * 1000.0)).collect();
    let err = ingest(&[write_csv(tmp.path(), "mv.csv", &millivolts)], &tmp.path().join("o1"), &opts()).unwrap_err().to_string();
    assert!(err.contains("mV labelled as V"), "{err}");
    let reference: Vec<_> = cycle_rows().into_iter().map(|(t, i, v)| (t, i, v - 7.0)).collect();
    let err = ingest(&[write_csv(tmp.path(), "we.csv", &reference)], &tmp.path().join("o2"), &opts()).unwrap_err().to_string();
    assert!(err.contains("against a reference") && !err.contains("mV"), "{err}");
}

/// Time in hours read as seconds shrinks an estimated capacity 3600× and raises every C-rate
/// as much: nothing to compare the estimate with, so a warning that names the likely cause.
#[test]
fn time_in_the_wrong_unit_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let hours: Vec<_> = cycle_rows().into_iter().map(|(t, i, v)| (t / 3600.0, i, v)).collect();
    let cells = ingest(&[write_csv(tmp.path(), "hours.csv", &hours)], &tmp.path().join("out"), &IngestOptions::default()).unwrap();
    assert!(cells[0].metadata.contains("is the time in minutes or hours read as seconds?"), "{}", cells[0].metadata);
    let cells = ingest(&[write_csv(tmp.path(), "seconds.csv", &cycle_rows())], &tmp.path().join("out2"), &IngestOptions::default()).unwrap();
    assert!(!cells[0].metadata.contains("read as seconds"), "{}", cells[0].metadata);
    // A 2 mAh cell's milliseconds read as seconds: an hour's discharge lasts 42 days.
    let milliseconds: Vec<_> = cycle_rows().into_iter().map(|(t, i, v)| (t * 1000.0, i / 1000.0, v)).collect();
    let cells = ingest(&[write_csv(tmp.path(), "ms.csv", &milliseconds)], &tmp.path().join("out3"), &IngestOptions::default()).unwrap();
    assert!(cells[0].metadata.contains("is the time in milliseconds read as seconds"), "{}", cells[0].metadata);
    // A 3 s excerpt of a 4.8 A discharge (beep's Maccor snippets) moves 4 mAh, "1088C", yet its
    // time is right: what is wrong is the estimate, which a few millivolts cannot give.
    let excerpt: Vec<_> = (0..300).map(|k| (0.01 * k as f64, -4.84, 3.868 - 1e-5 * k as f64)).collect();
    let cells = ingest(&[write_csv(tmp.path(), "excerpt.csv", &excerpt)], &tmp.path().join("out4"), &IngestOptions::default()).unwrap();
    let m = &cells[0].metadata;
    assert!(!m.contains("read as seconds") && m.contains("voltage moves only 3 mV") && m.contains("--nominal-capacity"), "{m}");
}

#[test]
fn estimated_capacity_is_flagged() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = write_csv(tmp.path(), "est.csv", &cycle_rows());
    let cells = ingest(&[csv], &tmp.path().join("out"), &IngestOptions::default()).unwrap();
    assert!(cells[0].capacity_estimated);
    assert!((cells[0].nominal_capacity_ah - 2.0 * 3590.0 / 3600.0).abs() < 0.01, "{}", cells[0].nominal_capacity_ah);
}

#[test]
fn every_shared_cycler_file_ingests_with_charge_positive() {
    let Some(dir) = shared("cyclers") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cells = ingest(&[dir], &out, &IngestOptions::default()).unwrap();
    assert_eq!(cells.len(), 6, "{:?}", cells.iter().map(|c| &c.cell_id).collect::<Vec<_>>());
    let ds = Dataset::load(&out).unwrap();
    for (info, data) in ds.cells.iter().zip(&ds.data) {
        assert!(data.len() > 100, "{}", info.cell_id);
        assert!(info.nominal_capacity_ah > 0.05 && info.nominal_capacity_ah < 20.0, "{}: {}", info.cell_id, info.nominal_capacity_ah);
        let (lo, hi) = data.voltage.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(lo >= -0.1 && hi <= 5.0, "{}: voltage {lo}..{hi}", info.cell_id);
        // Charging raises SOC (sub-millisecond rows move it by less than f32 resolves, hence >=).
        let pairs = || {
            data.state.windows(2).zip(data.soc.windows(2)).filter(|(s, _)| s.iter().all(|s| *s == State::Charging))
        };
        // It may step down only where a CV hold re-anchors SOC at 1: at most once per cycle.
        let falls = pairs().filter(|(_, w)| w[1] < w[0]).count();
        let cycles = data.cycle_number.iter().max().map_or(0, |c| c + 1) as usize;
        assert!(falls <= cycles, "{}: soc falls {falls} times while charging ({cycles} cycles)", info.cell_id);
        let risen: f32 = pairs().map(|(_, w)| w[1] - w[0]).sum();
        let unanchored = info.anchor_method == AnchorMethod::Unanchored;
        assert!(pairs().count() == 0 || risen > 0.0 || unanchored && risen.is_nan(), "{}: soc rises over the charge", info.cell_id);
    }
}

/// Three cells of parameter sets the shared data lacks, made with ../shared/tools/gen_pybamm.py
/// (PyBaMM 26.10.1.1, seed 62): an O'Regan2022 GITT (LG M50, NMC811 at 5 Ah) whose CV hold
/// rings to 7.45 A; a sodium-ion Chayambuka2022 coin cell (3 mAh; thermal inputs from
/// Chen2020) whose 1C charges reach 4.19 V within a row, so holds follow rests; and an OKane2022
/// drive cycle whose 5 A hold falls 1.2 % in its first 10 s.
fn other_chemistries() -> PathBuf {
    repo().join("tests/fixtures/chemistries")
}

/// Derived state and CV holds against the simulator's step kinds (gt_step_kind: charge,
/// cv_charge, discharge, rest) on every shared PyBaMM set and `other_chemistries`, so a rule
/// tuned to one OCV curve or set of cut-offs shows here. More sets, e.g. made with
/// ../shared/tools/gen_pybamm.py: STEP_CHECK_DIRS=a:b.
#[test]
fn derived_state_and_cv_holds_match_the_step_kinds_on_every_chemistry() {
    // The BatteryArchive CSV copy of the dev set goes through another reader and sign convention.
    let sets = ["pybamm-chen2020", "pybamm-chen2020-batteryarchive", "pybamm-mohtat2020", "pybamm-ncakim2011", "pybamm-ai2020"];
    let mut dirs: Vec<PathBuf> = vec![other_chemistries()];
    for set in sets {
        let Some(dir) = shared(set) else { return };
        dirs.push(dir);
    }
    dirs.extend(std::env::var("STEP_CHECK_DIRS").unwrap_or_default().split(':').filter(|d| !d.is_empty()).map(PathBuf::from));
    // The Parquet sets again as a cycler logs a programmed CC-CV step: hold and charge under one
    // index. There a hold's first row, still at the charge current, reads as the charge's last:
    // only a falling current shows the hold, so that row (and any still within 2 % of the charge
    // current after it) may be missed.
    let merged = tempfile::tempdir().unwrap();
    // So may it in a file with no step index at all (BatteryArchive CSV), where the hold's first
    // row, logged at the charge's last instant, still carries the charge current.
    let has_parquet = |d: &Path| std::fs::read_dir(d).unwrap().any(|e| e.unwrap().path().extension().is_some_and(|x| x == "parquet"));
    let mut checks: Vec<(PathBuf, bool)> = dirs.iter().map(|d| (d.clone(), !has_parquet(d))).collect();
    for dir in dirs.iter().filter(|d| has_parquet(d)) {
        let copy = merged.path().join(dir.file_name().unwrap());
        with_cccv_under_one_index(dir, &copy);
        checks.push((copy, true));
    }
    for (dir, one_index) in checks {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        ingest(std::slice::from_ref(&dir), &out, &IngestOptions::default()).unwrap();
        let ds = Dataset::load(&out).unwrap();
        let (mut rows, mut state_wrong, mut cv_missed, mut cv_false) = (0, 0, 0, 0);
        for (info, data) in ds.cells.iter().zip(&ds.data) {
            let kinds = gt_strings(data, "gt_step_kind");
            assert_eq!(kinds.len(), data.len(), "{}: gt_step_kind", info.cell_id);
            // The current of the charge a hold follows (none after a rest or a discharge), and
            // whether this row is among a hold's first, still within 2 % of it: under one index
            // a hold is found where its current falls that far (`HOLD_CURRENT_DROP`), a row late
            // where it falls slowly (OKane2022 at 5 A: 5.00, then 4.94 A 10 s into the hold).
            let (mut charge_current, mut leading) = (f32::INFINITY, false);
            for (i, kind) in kinds.iter().enumerate() {
                let state = match kind.as_str() {
                    "charge" | "cv_charge" => State::Charging,
                    "discharge" => State::Discharging,
                    "rest" => State::Resting,
                    other => panic!("{}: unknown gt_step_kind {other}", info.cell_id),
                };
                let cv = data.method[i] == Method::ConstantVoltage;
                let hold_start = kind == "cv_charge" && (i == 0 || kinds[i - 1] != "cv_charge");
                leading = hold_start || (leading && kind == "cv_charge" && data.current[i].abs() >= 0.98 * charge_current);
                match kind.as_str() {
                    "charge" => charge_current = data.current[i].abs(),
                    "cv_charge" => {}
                    _ => charge_current = f32::INFINITY,
                }
                rows += 1;
                state_wrong += (data.state[i] != state) as usize;
                cv_missed += (kind == "cv_charge" && !cv && !(one_index && leading)) as usize;
                cv_false += (kind != "cv_charge" && cv) as usize;
            }
        }
        println!("{}: {rows} rows, state wrong {state_wrong}, CV hold missed {cv_missed}, CV hold where none {cv_false}", dir.display());
        // The simulator logs every row with its own step's current, so no row may disagree.
        assert_eq!((state_wrong, cv_missed, cv_false), (0, 0, 0), "{}", dir.display());
    }
}

/// A copy of a PyBaMM set with each CV hold logged under the step index of the charge before
/// it, as the shipped Maccor export logs a programmed CC-CV step. A hold straight after a rest
/// keeps its own index: its cell was at the voltage limit as the charge began (a sodium-ion
/// cell of Chayambuka2022 at 1C), and a cycler does not log a rest and a charge as one step.
fn with_cccv_under_one_index(src: &Path, dst: &Path) {
    use arrow::array::{Array, Int32Array, StringArray};
    rewritten_copy(src, dst, |batch| {
        let kind = arrow::compute::cast(batch.column_by_name("gt_step_kind").unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
        let kind = kind.as_any().downcast_ref::<StringArray>().unwrap();
        let mut step = batch.column_by_name("step_index").unwrap().as_any().downcast_ref::<Int32Array>().unwrap().values().to_vec();
        for i in 1..step.len() {
            if kind.value(i) == "cv_charge" && kind.value(i - 1) != "rest" {
                step[i] = step[i - 1];
            }
        }
        ("step_index", std::sync::Arc::new(Int32Array::from(step)))
    });
}

/// A copy of a Parquet set with one column of every cell file replaced by `edit`'s (name,
/// array); other files are copied as they are.
fn rewritten_copy(src: &Path, dst: &Path, edit: impl Fn(&arrow::record_batch::RecordBatch) -> (&'static str, arrow::array::ArrayRef)) {
    use arrow::array::ArrayRef;
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let target = dst.join(path.file_name().unwrap());
        if path.extension().is_none_or(|x| x != "parquet") {
            std::fs::copy(&path, &target).unwrap();
            continue;
        }
        let file = std::fs::File::open(&path).unwrap();
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let key_values = builder.metadata().file_metadata().key_value_metadata().cloned();
        let batches: Vec<_> = builder.build().unwrap().map(Result::unwrap).collect();
        let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let (name, replacement) = edit(&batch);
        let schema = batch.schema();
        let columns: Vec<ArrayRef> =
            schema.fields().iter().zip(batch.columns()).map(|(f, c)| if f.name() == name { replacement.clone() } else { c.clone() }).collect();
        let out = arrow::record_batch::RecordBatch::try_new(schema.clone(), columns).unwrap();
        let props = parquet::file::properties::WriterProperties::builder().set_key_value_metadata(key_values).build();
        let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&target).unwrap(), schema, Some(props)).unwrap();
        writer.write(&out).unwrap();
        writer.close().unwrap();
    }
}

/// PyBaMM's own convention writes discharge as positive current. Every shared chemistry and
/// `other_chemistries` saved that way ingests with the sign flipped back, row for row, from how
/// the voltage answers the current steps alone (Parquet has no capacity columns), and as it is
/// keeps its sign unwarned.
#[test]
fn discharge_positive_parquet_is_flipped_back_on_every_chemistry() {
    use arrow::array::{Array, Float32Array};
    let mut dirs = vec![other_chemistries()];
    for set in ["pybamm-chen2020", "pybamm-mohtat2020", "pybamm-ncakim2011", "pybamm-ai2020"] {
        let Some(dir) = shared(set) else { return };
        dirs.push(dir);
    }
    for dir in dirs {
        let set = dir.file_name().unwrap().to_string_lossy().into_owned();
        let tmp = tempfile::tempdir().unwrap();
        let negated = tmp.path().join("negated");
        rewritten_copy(&dir, &negated, |batch| {
            let current = arrow::compute::cast(batch.column_by_name("current").unwrap(), &arrow::datatypes::DataType::Float32).unwrap();
            let current = current.as_any().downcast_ref::<Float32Array>().unwrap();
            ("current", std::sync::Arc::new(current.iter().map(|i| i.map(|i| -i)).collect::<Float32Array>()))
        });
        let (as_is, flipped) = (tmp.path().join("as-is"), tmp.path().join("flipped"));
        ingest(&[dir], &as_is, &IngestOptions::default()).unwrap();
        ingest(&[negated], &flipped, &IngestOptions::default()).unwrap();
        let (a, b) = (Dataset::load(&as_is).unwrap(), Dataset::load(&flipped).unwrap());
        for ((info_a, data_a), (info_b, data_b)) in a.cells.iter().zip(&a.data).zip(b.cells.iter().zip(&b.data)) {
            assert_eq!(data_a.current, data_b.current, "{set}/{}: current flipped back", info_b.cell_id);
            let bits = |soc: &[f32]| soc.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&data_a.soc), bits(&data_b.soc), "{set}/{}: soc (NaN where unanchored)", info_b.cell_id);
            assert!(!info_a.metadata.contains("against"), "{set}/{}: {}", info_a.cell_id, info_a.metadata);
            assert!(info_b.metadata.contains("current sign flipped"), "{set}/{}: {}", info_b.cell_id, info_b.metadata);
        }
    }
}

/// A ground-truth string column of a cell.
fn gt_strings(data: &voltlens::data::canonical::CellData, name: &str) -> Vec<String> {
    let (_, array) = data.gt.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{}: no {name}", data.cell_id));
    let array = arrow::compute::cast(array, &arrow::datatypes::DataType::Utf8).unwrap();
    let array = array.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
    array.iter().map(|v| v.unwrap_or_default().to_owned()).collect()
}

/// Derived soc against gt_soc per protocol on the PyBaMM development set. SOC = 1 at the end of
/// a CV hold (DESIGN §1.3) sits about 2 % above the simulator's gt_soc (which counts from its own
/// initial state), so the test bounds both the absolute error and the tracking error (error minus
/// the cell's median offset), which is what coulomb counting controls.
#[test]
fn derived_soc_tracks_ground_truth_on_the_pybamm_set() {
    let Some(dir) = shared("pybamm-chen2020") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    ingest(&[dir], &out, &IngestOptions::default()).unwrap();
    let ds = Dataset::load(&out).unwrap();
    assert_eq!(ds.cells.len(), 72);
    let mut absolute: std::collections::BTreeMap<String, Vec<f32>> = Default::default();
    let mut tracking: std::collections::BTreeMap<String, Vec<f32>> = Default::default();
    for (info, data) in ds.cells.iter().zip(&ds.data) {
        assert!(!info.capacity_estimated, "capacity comes from the PyBaMM metadata");
        let protocol = info.protocol.clone().unwrap_or_default();
        // Partial cycling around mid SOC never reaches either cut-off: only rest voltages can
        // anchor it, if they are trustworthy enough. Every other protocol ends in a CV hold,
        // except where the simulation stopped before it (chen2020-12-00-cccv): rests again.
        let expected: &[AnchorMethod] = if protocol == "partial" {
            &[AnchorMethod::OcvRest, AnchorMethod::Unanchored]
        } else {
            &[AnchorMethod::CvHold, AnchorMethod::OcvRest]
        };
        assert!(expected.contains(&info.anchor_method), "{}: {:?}", info.cell_id, info.anchor_method);
        if info.anchor_method == AnchorMethod::Unanchored {
            continue;
        }
        let gt = data.gt_f32("gt_soc").expect("gt_soc passes through");
        let mut signed: Vec<f32> = data.soc.iter().zip(&gt).map(|(a, b)| a - b).collect();
        absolute.entry(protocol.clone()).or_default().extend(signed.iter().map(|e| e.abs()));
        signed.sort_by(f32::total_cmp);
        let offset = signed[signed.len() / 2];
        tracking.entry(protocol).or_default().extend(signed.iter().map(|e| (e - offset).abs()));
    }
    let quantiles = |mut v: Vec<f32>| {
        v.sort_by(f32::total_cmp);
        (v[v.len() / 2], v[(v.len() - 1) * 95 / 100])
    };
    for (protocol, errors) in absolute {
        let (median, p95) = quantiles(errors);
        println!("soc vs gt_soc, {protocol}: median |error| {median:.4}, p95 {p95:.4}");
        assert!(median < 0.03 && p95 < 0.04, "{protocol}: median {median}, p95 {p95}");
    }
    for (protocol, errors) in tracking {
        let (median, p95) = quantiles(errors);
        println!("soc tracking (offset removed), {protocol}: median {median:.4}, p95 {p95:.4}");
        assert!(median < 0.005 && p95 < 0.015, "{protocol}: median {median}, p95 {p95}");
    }
}

#[test]
fn the_shipped_mixed_format_directory_ingests() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cells = ingest(&[repo().join("data/cyclers"), repo().join("data/pybamm-chen2020")], &out, &IngestOptions::default()).unwrap();
    let formats: std::collections::BTreeSet<&str> = cells.iter().map(|c| c.format.as_str()).collect();
    assert!(formats.len() >= 3, "Arbin, Maccor and Parquet in one ingest: {formats:?}");
    assert_eq!(cells.len(), 14);
}

#[test]
fn an_unknown_file_in_a_directory_stops_the_ingest_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    write_csv(&input, "good.csv", &cycle_rows());
    std::fs::write(input.join("garbage.bin"), [0u8, 159, 146, 150, 255, 0, 1, 2]).unwrap();
    let out = tmp.path().join("out");
    let err = ingest(std::slice::from_ref(&input), &out, &opts()).unwrap_err().to_string();
    assert!(err.contains("garbage.bin"), "{err}");
    assert!(!out.exists());
    // Every unreadable file is named at once, not one per run.
    std::fs::write(input.join("notes.txt"), "cell 7 was reassembled\n").unwrap();
    let err = ingest(&[input], &out, &opts()).unwrap_err().to_string();
    assert!(err.starts_with("2 of 3 inputs cannot be read") && err.contains("garbage.bin") && err.contains("notes.txt"), "{err}");
    assert!(!out.exists());
}

/// A folder of workbooks ingests as one of CSV exports, the lock file a spreadsheet leaves beside
/// a workbook it has open (`~$arbin.xlsx`, not a workbook) passed over.
#[test]
fn a_directory_of_workbooks_ingests_as_its_csv_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let (books, csvs) = (tmp.path().join("books"), tmp.path().join("csvs"));
    std::fs::create_dir(&books).unwrap();
    std::fs::create_dir(&csvs).unwrap();
    let fixtures = repo().join("tests/fixtures/workbooks");
    for (name, dir) in [("arbin.xlsx", &books), ("neware.xlsx", &books), ("arbin.csv", &csvs), ("neware.csv", &csvs)] {
        std::fs::copy(fixtures.join(name), dir.join(name)).unwrap();
    }
    std::fs::write(books.join("~$arbin.xlsx"), b"\x0bEmma Lab    ").unwrap();
    ingest(&[books], &tmp.path().join("from-books"), &opts()).unwrap();
    ingest(&[csvs], &tmp.path().join("from-csvs"), &opts()).unwrap();
    for cell in ["arbin", "neware"] {
        // Every column, derived ones included (the cells differ only in their source file's name).
        let read = |run: &str| format!("{:?}", voltlens::data::canonical::read_cell(&tmp.path().join(run).join("timeseries").join(format!("{cell}.parquet"))).unwrap().1);
        assert!(read("from-books") == read("from-csvs"), "{cell}: the workbook's time series differs from its CSV twin's");
    }
}

/// A warning or error at a row of a workbook names the sheet and the row a spreadsheet shows
/// there, also on a record's second sheet (arbin.xlsx: rows 1–200 of its CSV twin on
/// `Channel_1-008_1`, the rest on `Channel_1-008_2`, each sheet under its own header).
#[test]
fn a_workbook_warning_names_the_sheet_and_its_row() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = repo().join("tests/fixtures/workbooks");
    // Cut-offs the cell runs well past on both sides: a warning at its highest and lowest row.
    let cutoffs = IngestOptions { upper_cutoff_v: Some(3.6), lower_cutoff_v: Some(3.1), ..opts() };
    let warnings = |name: &str| {
        let out = tmp.path().join(name);
        let cells = ingest(&[fixtures.join(name)], &out, &cutoffs).unwrap();
        let meta: serde_json::Value = serde_json::from_str(&cells[0].metadata).unwrap();
        meta["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_owned()).filter(|w| w.contains("past the stated")).collect::<Vec<_>>()
    };
    let (twin, book) = (warnings("arbin.csv"), warnings("arbin.xlsx"));
    assert_eq!((twin.len(), book.len()), (2, 2), "{twin:?} {book:?}");
    let mut sheets = Vec::new();
    for (t, b) in twin.iter().zip(&book) {
        let (line, rest) = t.strip_prefix("row ").and_then(|t| t.split_once(':')).unwrap();
        let line: u64 = line.parse().unwrap();
        // The twin's line 1 is its header, as each sheet's row 1 is.
        let (sheet, row) = if line <= 201 { ("Channel_1-008_1", line) } else { ("Channel_1-008_2", line - 200) };
        assert_eq!(b, &format!("sheet '{sheet}', row {row}:{rest}"));
        sheets.push(sheet);
    }
    assert!(sheets.contains(&"Channel_1-008_2"), "neither warning falls on the second sheet: {book:?}");
    // So does an error found after the rows were read: a current in mA among amps, a 300C peak.
    let capacity = IngestOptions { nominal_capacity_ah: Some(5.0), ..opts() };
    let err = ingest(&[fixtures.join("milliamps.xlsx")], &tmp.path().join("milliamps"), &capacity).unwrap_err().to_string();
    assert!(err.contains("milliamps.xlsx (sheet 'Channel_1-008_2'), row 60, field 'current': peak current 1500.0 A"), "{err}");
}

/// A real Maccor file (BEEP PreDiag, shipped in data/) logs its CC-CV charge under one step
/// index: 0.69 A up to 4.2 V, then the hold down to C/20. The hold reads as a CV step of its own.
#[test]
fn a_maccor_cc_cv_charge_under_one_step_index_reads_as_cc_then_a_cv_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    ingest(&[repo().join("data/cyclers")], &out, &IngestOptions::default()).unwrap();
    let ds = Dataset::load(&out).unwrap();
    let data = ds.data.iter().find(|d| d.cell_id.starts_with("PreDiag_000229")).expect("the Maccor cell");
    let charge: Vec<usize> = (0..data.len()).filter(|&i| data.step_index[i] == 5 && data.state[i] == State::Charging).collect();
    let hold: Vec<usize> = charge.iter().copied().filter(|&i| data.method[i] == Method::ConstantVoltage).collect();
    assert!(hold.len() >= 20, "hold rows found: {}", hold.len());
    for &i in &hold {
        assert!((data.voltage[i] - 4.2).abs() < 0.005 && data.current[i] < 0.62, "row {i}: {} V, {} A is no hold", data.voltage[i], data.current[i]);
    }
    let before = charge.iter().copied().filter(|&i| i < hold[0] && data.method[i] == Method::ConstantCurrent).count();
    assert!(before > 100, "the CC part before the hold: {before} rows");
}

/// A `cells.json` beside any cycler's files states what their headers do not: capacity,
/// protocol, ambient temperature and cut-offs, per cell, where one `--nominal-capacity` would
/// set them for every input. An entry names its cell by the id ingest gives it or by the file's
/// name, and does not rename it.
#[test]
fn a_cells_json_beside_vendor_files_states_their_capacity_protocol_and_cut_offs() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for name in ["arbin_small.csv", "biologic_small.csv", "maccor_small.022"] {
        std::fs::copy(repo().join("tests/fixtures/formats").join(name), src.join(name)).unwrap();
    }
    let cells = |out: &str| {
        let out = tmp.path().join(out);
        ingest(&[src.clone()], &out, &IngestOptions::default()).unwrap();
        Dataset::load(&out).unwrap().cells
    };
    let before = cells("before");
    assert!(before[0].cell_id == "arbin_small" && before[0].capacity_estimated, "{:?}", before[0]);
    std::fs::write(
        src.join("cells.json"),
        r#"[{"cell_id": "arbin_small", "nominal_capacity_ah": 1.5, "protocol": "formation", "ambient_temperature_c": 30.0, "lower_cutoff_v": 2.5},
            {"cell_id": "biologic_small.csv", "protocol": "gitt"}]"#,
    )
    .unwrap();
    let after = cells("after");
    let arbin = &after[0];
    assert_eq!((arbin.nominal_capacity_ah, arbin.capacity_estimated), (1.5, false));
    assert_eq!((arbin.protocol.as_deref(), arbin.ambient_temperature_c, arbin.lower_cutoff_v), (Some("formation"), Some(30.0), Some(2.5)));
    assert_eq!((after[1].cell_id.as_str(), after[1].protocol.as_deref()), ("biologic_small", Some("gitt")));
    let (b2, a2) = (&before[2], &after[2]);
    assert_eq!((&a2.cell_id, a2.nominal_capacity_ah, &a2.protocol), (&b2.cell_id, b2.nominal_capacity_ah, &b2.protocol), "a cell the file does not name is untouched");
}

/// One unreadable file of several stops the ingest (naming it, and how to go on without it);
/// with `skip_unreadable` the others are ingested and it is left out.
#[test]
fn skip_unreadable_ingests_the_files_that_read() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_csv(&src, "good_timeseries.csv", &cycle_rows());
    std::fs::write(src.join("notes.csv"), "what,when\nlunch,noon\n").unwrap();
    let strict = ingest(&[src.clone()], &tmp.path().join("strict"), &opts()).unwrap_err().to_string();
    assert!(strict.contains("notes.csv") && strict.contains("--skip-unreadable"), "{strict}");
    assert!(!tmp.path().join("strict").exists());
    let lenient = IngestOptions { skip_unreadable: true, ..opts() };
    let cells = ingest(&[src], &tmp.path().join("lenient"), &lenient).unwrap();
    assert_eq!(cells.iter().map(|c| c.cell_id.as_str()).collect::<Vec<_>>(), ["good"]);
    assert_eq!(Dataset::load(&tmp.path().join("lenient")).unwrap().cells.len(), 1);
    // The dataset says what it lacks: the skipped file and why.
    let skipped: Vec<String> = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("lenient/skipped.json")).unwrap()).unwrap();
    assert!(skipped.len() == 1 && skipped[0].contains("notes.csv"), "{skipped:?}");
    let clean = ingest(&[tmp.path().join("src/good_timeseries.csv")], &tmp.path().join("clean"), &lenient).unwrap();
    assert_eq!(clean.len(), 1);
    assert!(!tmp.path().join("clean/skipped.json").exists());
}
