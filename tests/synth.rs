//! The synthetic-cell generator (DESIGN.md §1.4), checked in the domain's words.

use std::time::Instant;

use arrow::array::{Array, Float32Array, StringArray};
use voltlens::data::formats::CyclerReader;
use voltlens::data::raw::CHUNK_ROWS;
use voltlens::data::synth::{cell_plan, Chemistry, Protocol, SynthCell, SynthCellSpec, SynthConfig};

/// Every row of one cell, flattened out of its chunks.
#[derive(Debug, Default, PartialEq)]
struct Rows {
    test_time: Vec<f64>,
    current: Vec<f32>,
    voltage: Vec<f32>,
    temperature: Vec<f32>,
    cycle: Vec<i32>,
    step: Vec<i32>,
    gt_soc: Vec<f32>,
    gt_temperature: Vec<f32>,
    gt_step_kind: Vec<String>,
}

impl Rows {
    fn len(&self) -> usize {
        self.test_time.len()
    }

    /// Pairs of consecutive rows within one step.
    fn same_step_pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (1..self.len()).filter(|&k| self.step[k] == self.step[k - 1]).map(|k| (k - 1, k))
    }
}

fn column<'a, T: 'static>(chunk: &'a voltlens::data::raw::RawChunk, name: &str) -> &'a T {
    let (_, array) = chunk.passthrough.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}"));
    array.as_any().downcast_ref::<T>().unwrap_or_else(|| panic!("{name} has the wrong type"))
}

fn simulate(cfg: &SynthConfig, spec: SynthCellSpec) -> Rows {
    let mut cell = SynthCell::new(cfg, spec).expect("valid config");
    let mut rows = Rows::default();
    while let Some(chunk) = cell.next_chunk().expect("simulation never fails") {
        assert!(chunk.len() <= CHUNK_ROWS);
        rows.test_time.extend(&chunk.test_time);
        rows.current.extend(&chunk.current);
        rows.voltage.extend(&chunk.voltage);
        rows.temperature.extend(chunk.temperature.iter().map(|t| t.expect("synthetic rows have temperature")));
        rows.cycle.extend(chunk.cycle_number.iter().map(|c| c.unwrap()));
        rows.step.extend(chunk.step_index.iter().map(|s| s.unwrap()));
        let soc = column::<Float32Array>(&chunk, "gt_soc");
        let temperature = column::<Float32Array>(&chunk, "gt_temperature");
        let kind = column::<StringArray>(&chunk, "gt_step_kind");
        assert_eq!((soc.len(), temperature.len(), kind.len()), (chunk.len(), chunk.len(), chunk.len()));
        rows.gt_soc.extend(soc.values().iter());
        rows.gt_temperature.extend(temperature.values().iter());
        rows.gt_step_kind.extend(kind.iter().map(|k| k.unwrap().to_owned()));
    }
    rows
}

fn small_config() -> SynthConfig {
    SynthConfig { cells: 10, cycles: 1, ..SynthConfig::default() }
}

/// A cell of the default plan running `protocol`, with its settings changed by `edit`.
fn cell_with(cfg: &SynthConfig, protocol: Protocol, edit: impl FnOnce(&mut SynthCellSpec)) -> SynthCellSpec {
    let mut spec = cell_plan(cfg).into_iter().find(|s| s.protocol == protocol).expect("every protocol is planned");
    edit(&mut spec);
    spec
}

#[test]
fn same_seed_gives_identical_rows_and_another_seed_differs() {
    let cfg = small_config();
    let run = |cfg: &SynthConfig| cell_plan(cfg).into_iter().map(|s| simulate(cfg, s)).collect::<Vec<_>>();
    let first = run(&cfg);
    assert_eq!(first, run(&cfg));
    assert_ne!(first, run(&SynthConfig { seed: 1, ..cfg }));
}

#[test]
fn plan_is_deterministic_and_cycles_through_every_protocol() {
    let cfg = SynthConfig::default();
    let plan = cell_plan(&cfg);
    assert_eq!(plan, cell_plan(&cfg));
    assert_eq!(plan[7].cell_id, format!("synth-0007-{}", plan[7].protocol));
    for protocol in Protocol::ALL {
        assert!(plan.iter().any(|s| s.protocol == protocol), "{protocol} missing");
    }
    let shorter = cell_plan(&SynthConfig { cells: 3, ..cfg });
    assert_eq!(shorter[..], plan[..3], "a cell does not depend on how many follow it");
}

#[test]
fn config_reads_from_a_partial_toml_table() {
    let cfg: SynthConfig = toml::from_str("cells = 4\nprotocols = [\"gitt\", \"drive\"]\nchemistries = [\"lfp\"]").unwrap();
    assert_eq!((cfg.cells, cfg.protocols.clone(), cfg.chemistries.clone()), (4, vec![Protocol::Gitt, Protocol::Drive], vec![Chemistry::Lfp]));
    assert_eq!(cfg.sim_step_s, SynthConfig::default().sim_step_s);
    assert!(toml::from_str::<SynthConfig>("cell = 4").is_err(), "misspelt settings are rejected");
    assert!(toml::from_str::<SynthConfig>("protocols = []").is_err(), "the plan needs a protocol to pick");
    assert!(SynthConfig { protocols: vec![], ..SynthConfig::default() }.validate().is_err());
}

#[test]
fn ocv_curves_rise_monotonically_between_the_cutoffs() {
    for chemistry in [Chemistry::Nmc, Chemistry::Lfp] {
        let (low, high) = chemistry.voltage_limits();
        let ocv: Vec<f64> = (0..=1000).map(|k| chemistry.ocv(k as f64 / 1000.0)).collect();
        assert!(ocv.windows(2).all(|w| w[1] > w[0]), "{chemistry} OCV not increasing");
        assert!((ocv[0] - low).abs() < 1e-9 && (ocv[1000] - high).abs() < 1e-9);
    }
    let plateau = Chemistry::Lfp.ocv(0.8) - Chemistry::Lfp.ocv(0.2);
    assert!(plateau < 0.2, "LFP mid-SOC plateau spans {plateau} V");
}

#[test]
fn soc_rises_while_charging_and_falls_while_discharging() {
    let cfg = small_config();
    for spec in cell_plan(&cfg) {
        let id = spec.cell_id.clone();
        // Above 1 % of C_nom the SOC moves visibly in f32 within one internal step.
        let visible_a = 0.01 * spec.nominal_capacity_ah as f32;
        let rows = simulate(&cfg, spec);
        for (a, b) in rows.same_step_pairs() {
            let (i, d_soc) = (rows.current[b], rows.gt_soc[b] - rows.gt_soc[a]);
            let consistent = match i {
                i if i >= visible_a => d_soc > 0.0,
                i if i > 0.0 => d_soc >= 0.0,
                i if i <= -visible_a => d_soc < 0.0,
                i if i < 0.0 => d_soc <= 0.0,
                _ => d_soc == 0.0,
            };
            assert!(consistent, "{id} row {b}: current {i} A but SOC moved {d_soc}");
        }
    }
}

#[test]
fn voltage_stays_within_the_chemistry_cutoffs() {
    let cfg = small_config();
    for spec in cell_plan(&cfg) {
        let (low, high) = spec.chemistry.voltage_limits();
        let id = spec.cell_id.clone();
        let rows = simulate(&cfg, spec);
        let (min, max) = rows.voltage.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        // Margin for measurement noise only: the cycler's voltage clamp stops IR overshoot.
        assert!(min as f64 > low - 0.005 && (max as f64) < high + 0.005, "{id}: {min}..{max} V outside {low}..{high}");
    }
}

#[test]
fn cv_hold_keeps_the_voltage_while_the_current_decays() {
    let cfg = small_config();
    let spec = cell_with(&cfg, Protocol::Cccv, |_| {});
    let c_nom = spec.nominal_capacity_ah as f32;
    let (_, upper) = spec.chemistry.voltage_limits();
    let rows = simulate(&cfg, spec);
    let cv: Vec<usize> = (0..rows.len()).filter(|&k| rows.gt_step_kind[k] == "cv_charge").collect();
    assert!(cv.len() > 10, "a CC-CV cell holds CV");
    for &k in &cv {
        assert!((rows.voltage[k] as f64 - upper).abs() < 0.003, "CV row {k} at {} V", rows.voltage[k]);
    }
    for (a, b) in rows.same_step_pairs().filter(|&(a, _)| rows.gt_step_kind[a] == "cv_charge") {
        assert!(rows.current[b] <= rows.current[a] + 1e-4 * c_nom, "CV current rose at row {b}");
    }
    let (first, last) = (rows.current[cv[0]], rows.current[*cv.last().unwrap()]);
    assert!(last < 0.06 * c_nom && last < first / 2.0, "CV current {first} → {last} A");
}

#[test]
fn every_protocol_family_produces_rows_and_step_kinds() {
    let cfg = small_config();
    let mut kinds = std::collections::BTreeSet::new();
    for protocol in Protocol::ALL {
        let spec = cell_with(&cfg, protocol, |_| {});
        let cell = SynthCell::new(&cfg, spec.clone()).unwrap();
        assert_eq!(cell.metadata().protocol.as_deref(), Some(protocol.as_str()));
        assert_eq!(cell.metadata().extra["source"], "voltlens synth");
        let rows = simulate(&cfg, spec);
        assert!(rows.len() > 100, "{protocol}: {} rows", rows.len());
        if protocol == Protocol::Hppc {
            assert!(rows.gt_step_kind.iter().any(|k| k == "pulse"), "HPPC has pulses");
        }
        kinds.extend(rows.gt_step_kind);
    }
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["charge", "cv_charge", "discharge", "pulse", "rest"]);
}

#[test]
fn rows_are_logged_at_least_every_interval_and_time_increases() {
    let cfg = small_config();
    for spec in cell_plan(&cfg) {
        let rows = simulate(&cfg, spec);
        for k in 1..rows.len() {
            let dt = rows.test_time[k] - rows.test_time[k - 1];
            assert!(dt > 0.0 && dt <= cfg.log_interval_s + cfg.sim_step_s, "row {k}: dt {dt} s");
        }
        let steps_never_go_back = rows.step.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1);
        let cycles_never_go_back = rows.cycle.windows(2).all(|w| w[1] >= w[0]);
        assert!(steps_never_go_back && cycles_never_go_back && rows.cycle[0] == 0);
    }
}

#[test]
fn temperature_rises_above_ambient_under_high_c_rate() {
    let cfg = small_config();
    let spec = cell_with(&cfg, Protocol::Cccv, |s| {
        s.discharge_c_rate = 3.0;
        s.ambient_temperature_c = 25.0;
    });
    let rows = simulate(&cfg, spec);
    let hottest = rows.gt_temperature.iter().cloned().fold(f32::MIN, f32::max);
    assert!(hottest > 28.0, "a 3C discharge only reached {hottest} °C from 25 °C");
    assert!(rows.temperature.iter().cloned().fold(f32::MIN, f32::max) > 28.0, "the logged temperature shows it too");
}

#[test]
fn discharge_capacity_fades_over_a_long_cccv_test() {
    let cfg = SynthConfig { cycles: 40, ..small_config() };
    let spec = cell_with(&cfg, Protocol::Cccv, |s| s.ambient_temperature_c = 25.0);
    let rows = simulate(&cfg, spec);
    let mut discharge_ah = vec![0.0f64; 40];
    for k in 1..rows.len() {
        if rows.current[k] < 0.0 && rows.step[k] == rows.step[k - 1] {
            discharge_ah[rows.cycle[k] as usize] -= rows.current[k] as f64 * (rows.test_time[k] - rows.test_time[k - 1]) / 3600.0;
        }
    }
    let (early, late) = (discharge_ah[2], discharge_ah[38]);
    assert!(late < early * 0.995, "discharge capacity {early:.4} Ah in cycle 2, {late:.4} Ah in cycle 38");
}

#[test]
fn throughput_report() {
    let cfg = SynthConfig::default();
    let started = Instant::now();
    let (mut rows, mut simulated_s) = (0usize, 0.0);
    for spec in cell_plan(&cfg) {
        let mut cell = SynthCell::new(&cfg, spec).unwrap();
        while let Some(chunk) = cell.next_chunk().unwrap() {
            rows += chunk.len();
        }
        simulated_s += cell.simulated_s();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "synth: {} cells, {rows} rows, {:.0} simulated h in {seconds:.3} s: {:.2} M rows/s, {:.1} M internal steps/s",
        cfg.cells,
        simulated_s / 3600.0,
        rows as f64 / seconds / 1e6,
        simulated_s / cfg.sim_step_s / seconds / 1e6
    );
}

