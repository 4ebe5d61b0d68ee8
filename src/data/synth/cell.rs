//! `SynthCell`: one simulated cell, read chunk by chunk like a cycler file.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, StringArray};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde_json::{json, Map, Value};

use super::cell_model::{CellModel, CellParams, Sample};
use super::protocol::{Outcome, ProtocolCurrents, Schedule, Step, StepKind};
use super::{SynthCellSpec, SynthConfig};
use crate::data::formats::CyclerReader;
use crate::data::raw::{RawChunk, SourceMetadata, CHUNK_ROWS};
use crate::Result;

/// Separate random streams per cell, so changing e.g. the noise level leaves the loads alone.
const PARAMS_STREAM: u64 = 0;
const SCHEDULE_STREAM: u64 = 1;
const NOISE_STREAM: u64 = 2;
/// Cell-to-cell manufacturing spread (± fraction) of resistances and time constants, and of
/// the true capacity around nominal.
const PARAMETER_SPREAD: f64 = 0.15;
const CAPACITY_SPREAD: f64 = 0.02;

/// One synthetic cell: simulates its protocol lazily and logs rows like a cycler
/// (DESIGN.md §1.4), with `gt_soc`, `gt_temperature` and `gt_step_kind` passed through.
pub struct SynthCell {
    spec: SynthCellSpec,
    metadata: SourceMetadata,
    model: CellModel,
    schedule: Schedule,
    logger: Logger,
    ageing: Ageing,
    noise: MeasurementNoise,
    /// The running step; `None` once the protocol is over.
    active: Option<ActiveStep>,
    dt_s: f64,
    /// Internal steps simulated so far.
    tick: u64,
    step_index: i32,
    rows_logged: u64,
}

struct ActiveStep {
    step: Step,
    cycle: i32,
    start_tick: u64,
    /// The step's first row is always logged.
    first_tick: bool,
}

struct Ageing {
    initial_cycles: f64,
    fade_per_cycle: f64,
    growth_per_cycle: f64,
}

struct MeasurementNoise {
    rng: ChaCha8Rng,
    voltage_v: f64,
    temperature_c: f64,
}

impl SynthCell {
    /// The cell `spec` of `cfg`'s plan, ready to read; fails on an invalid config.
    pub fn new(cfg: &SynthConfig, spec: SynthCellSpec) -> Result<Self> {
        cfg.validate()?;
        let params = cell_params(cfg, &spec, &mut cell_rng(spec.seed, PARAMS_STREAM));
        let (_, upper_cutoff_v) = spec.chemistry.voltage_limits();
        let one_c_a = spec.nominal_capacity_ah;
        let currents = ProtocolCurrents {
            one_c_a,
            charge_a: spec.charge_c_rate * one_c_a,
            discharge_a: spec.discharge_c_rate * one_c_a,
            upper_cutoff_v,
        };
        let schedule = Schedule::new(spec.protocol, currents, cfg.cycles, cell_rng(spec.seed, SCHEDULE_STREAM));
        let model = CellModel::new(spec.chemistry, params, spec.initial_soc, spec.ambient_temperature_c, cfg.sim_step_s);
        let mut cell = SynthCell {
            metadata: metadata(cfg, &spec, &params, &schedule),
            model,
            schedule,
            logger: Logger::new(cfg, one_c_a),
            ageing: Ageing {
                initial_cycles: spec.initial_age_cycles,
                fade_per_cycle: cfg.fade_per_cycle,
                growth_per_cycle: cfg.resistance_growth_per_cycle,
            },
            noise: MeasurementNoise {
                rng: cell_rng(spec.seed, NOISE_STREAM),
                voltage_v: cfg.voltage_noise_v,
                temperature_c: cfg.temperature_noise_c,
            },
            spec,
            active: None,
            dt_s: cfg.sim_step_s,
            tick: 0,
            step_index: -1,
            rows_logged: 0,
        };
        cell.begin_next_step(Outcome::Completed);
        Ok(cell)
    }

    pub fn spec(&self) -> &SynthCellSpec {
        &self.spec
    }

    /// Simulated test time so far (s).
    pub fn simulated_s(&self) -> f64 {
        self.tick as f64 * self.dt_s
    }

    /// Runs one internal step, logging a row into `chunk` when the thresholds say so.
    /// Returns false once the protocol is over.
    fn simulate_step(&mut self, chunk: &mut ChunkBuilder) -> bool {
        let Some(active) = &mut self.active else { return false };
        let sample = self.model.step(active.step.control);
        self.tick += 1;
        let elapsed_s = (self.tick - active.start_tick) as f64 * self.dt_s;
        let outcome = active.step.outcome(&sample, elapsed_s, self.model.soc);
        let step_edge = std::mem::take(&mut active.first_tick) || outcome.is_some();
        let (kind, cycle) = (active.step.kind, active.cycle);
        if self.logger.wants(self.tick, &sample, step_edge) {
            self.log_row(chunk, &sample, kind, cycle);
        }
        if let Some(outcome) = outcome {
            self.begin_next_step(outcome);
        }
        true
    }

    fn begin_next_step(&mut self, previous: Outcome) {
        let previous_cycle = self.active.as_ref().map(|a| a.cycle);
        self.active = self.schedule.next_step(previous, self.model.soc).map(|(step, cycle)| {
            ActiveStep { step, cycle, start_tick: self.tick, first_tick: true }
        });
        if let Some(active) = &self.active {
            self.step_index += 1;
            if previous_cycle != Some(active.cycle) {
                let a = &self.ageing;
                let age = a.initial_cycles + active.cycle as f64;
                self.model.set_age(age, a.fade_per_cycle, a.growth_per_cycle);
            }
        }
    }

    fn log_row(&mut self, chunk: &mut ChunkBuilder, sample: &Sample, kind: StepKind, cycle: i32) {
        let noise = &mut self.noise;
        let voltage = sample.voltage + noise.voltage_v * noise.rng.sample::<f64, _>(StandardNormal);
        let temperature = self.model.temperature_c + noise.temperature_c * noise.rng.sample::<f64, _>(StandardNormal);
        self.rows_logged += 1;
        chunk.raw.push(
            self.tick as f64 * self.dt_s,
            sample.current as f32,
            voltage as f32,
            Some(temperature as f32),
            Some(cycle),
            Some(self.step_index),
            self.rows_logged,
        );
        chunk.gt_soc.push(self.model.soc as f32);
        chunk.gt_temperature.push(self.model.temperature_c as f32);
        chunk.gt_step_kind.push(kind);
    }
}

impl CyclerReader for SynthCell {
    fn metadata(&self) -> &SourceMetadata {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut SourceMetadata {
        &mut self.metadata
    }

    fn next_chunk(&mut self) -> Result<Option<RawChunk>> {
        let mut chunk = ChunkBuilder::default();
        while chunk.raw.len() < CHUNK_ROWS && self.simulate_step(&mut chunk) {}
        Ok((!chunk.raw.is_empty()).then(|| chunk.finish()))
    }
}

/// Cycler-like logging: a row when enough time has passed, the voltage or current has moved
/// enough since the last row, or a step begins or ends.
struct Logger {
    interval_ticks: u64,
    delta_v: f64,
    delta_a: f64,
    last_tick: u64,
    last_voltage: f64,
    last_current: f64,
}

impl Logger {
    fn new(cfg: &SynthConfig, one_c_a: f64) -> Self {
        Logger {
            // The first tick at or after the interval (1e-9 absorbs rounding when dt divides it).
            interval_ticks: (cfg.log_interval_s / cfg.sim_step_s - 1e-9).ceil().max(1.0) as u64,
            delta_v: cfg.log_delta_v,
            delta_a: cfg.log_delta_c_rate * one_c_a,
            last_tick: 0,
            last_voltage: f64::NAN,
            last_current: f64::NAN,
        }
    }

    /// Whether to log the row at `tick`; remembers it as the last row if so.
    fn wants(&mut self, tick: u64, sample: &Sample, step_edge: bool) -> bool {
        let due = step_edge
            || tick - self.last_tick >= self.interval_ticks
            || (sample.voltage - self.last_voltage).abs() >= self.delta_v
            || (sample.current - self.last_current).abs() >= self.delta_a;
        if due {
            self.last_tick = tick;
            self.last_voltage = sample.voltage;
            self.last_current = sample.current;
        }
        due
    }
}

/// Rows of one chunk with the ground truth beside them, turned into Arrow columns at the end.
#[derive(Default)]
struct ChunkBuilder {
    raw: RawChunk,
    gt_soc: Vec<f32>,
    gt_temperature: Vec<f32>,
    gt_step_kind: Vec<StepKind>,
}

impl ChunkBuilder {
    fn finish(self) -> RawChunk {
        let kinds = StringArray::from_iter_values(self.gt_step_kind.iter().map(|k| k.as_str()));
        let mut raw = self.raw;
        raw.passthrough = vec![
            ("gt_soc".to_owned(), Arc::new(Float32Array::from(self.gt_soc)) as ArrayRef),
            ("gt_temperature".to_owned(), Arc::new(Float32Array::from(self.gt_temperature)) as ArrayRef),
            ("gt_step_kind".to_owned(), Arc::new(kinds) as ArrayRef),
        ];
        raw
    }
}

fn cell_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// This cell's circuit: the chemistry's per-Ah reference scaled to its capacity, with spread.
fn cell_params(cfg: &SynthConfig, spec: &SynthCellSpec, rng: &mut ChaCha8Rng) -> CellParams {
    let reference = spec.chemistry.reference_params();
    let q = spec.nominal_capacity_ah;
    let mut spread = |fraction: f64| rng.random_range(1.0 - fraction..1.0 + fraction);
    CellParams {
        capacity_ah: q * spread(CAPACITY_SPREAD),
        r0_ohm: reference.r0_ohm_ah / q * spread(PARAMETER_SPREAD),
        r_rc_ohm: [
            reference.r_rc_ohm_ah[0] / q * spread(PARAMETER_SPREAD),
            reference.r_rc_ohm_ah[1] / q * spread(PARAMETER_SPREAD),
        ],
        tau_s: [reference.tau_s[0] * spread(PARAMETER_SPREAD), reference.tau_s[1] * spread(PARAMETER_SPREAD)],
        heat_capacity_j_k: reference.heat_capacity_j_k_ah * q,
        cooling_w_k: reference.cooling_w_k_ah * q,
        max_charge_a: cfg.max_charge_c_rate * q,
        max_discharge_a: cfg.max_discharge_c_rate * q,
    }
}

fn metadata(cfg: &SynthConfig, spec: &SynthCellSpec, params: &CellParams, schedule: &Schedule) -> SourceMetadata {
    let (lower_cutoff_v, upper_cutoff_v) = spec.chemistry.voltage_limits();
    let mut extra = Map::new();
    let mut put = |key: &str, value: Value| extra.insert(key.to_owned(), value);
    put("source", json!("voltlens synth"));
    put("seed", json!(cfg.seed));
    put("cell_index", json!(spec.index));
    put("cell_seed", json!(spec.seed));
    put("charge_c_rate", json!(spec.charge_c_rate));
    put("discharge_c_rate", json!(spec.discharge_c_rate));
    put("cycles", json!(cfg.cycles));
    put("initial_soc", json!(spec.initial_soc));
    put("initial_age_cycles", json!(spec.initial_age_cycles));
    put("lower_cutoff_v", json!(lower_cutoff_v));
    put("upper_cutoff_v", json!(upper_cutoff_v));
    put("true_capacity_ah", json!(params.capacity_ah));
    put("r0_ohm", json!(params.r0_ohm));
    put("r_rc_ohm", json!(params.r_rc_ohm));
    put("tau_s", json!(params.tau_s));
    if let Some(window) = schedule.soc_window() {
        put("soc_window", json!(window));
    }
    SourceMetadata {
        nominal_capacity_ah: Some(spec.nominal_capacity_ah),
        chemistry: Some(spec.chemistry.to_string()),
        protocol: Some(spec.protocol.to_string()),
        ambient_temperature_c: Some(spec.ambient_temperature_c),
        extra,
        warnings: Vec::new(),
        sign_from_data: false,
    }
}

