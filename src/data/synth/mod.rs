//! Synthetic cells (DESIGN.md §1.4): an equivalent-circuit simulator that runs cycler protocols
//! and logs rows the way a cycler does, with the true SOC, temperature and step kind beside them.
//!
//! `cell_plan` decides, from the seed alone, what each cell is (chemistry, capacity, ambient,
//! protocol, C-rates); `SynthCell` simulates one of them lazily as a `CyclerReader`, so ingest
//! treats it like any vendor file.

mod cell;
mod cell_model;
mod chemistry;
mod protocol;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize};

use crate::{Error, Result};

pub use cell::SynthCell;
pub use chemistry::Chemistry;
pub use protocol::Protocol;

/// Settings of the generator, the `[data.synth]` table of a pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    /// Number of cells.
    pub cells: usize,
    /// Seeds the plan and, through it, every cell's simulation.
    pub seed: u64,
    /// Chemistries, alternated in blocks of one protocol round so every pairing appears.
    #[serde(deserialize_with = "non_empty")]
    pub chemistries: Vec<Chemistry>,
    /// Nominal capacity range (Ah), drawn uniformly per cell.
    pub capacity_ah: [f64; 2],
    /// Ambient (chamber) temperatures (°C); each cell gets one at random.
    #[serde(deserialize_with = "non_empty")]
    pub ambient_temperatures_c: Vec<f64>,
    /// Protocol families, cycled through by cell index so every family appears.
    #[serde(deserialize_with = "non_empty")]
    pub protocols: Vec<Protocol>,
    /// Protocol cycles per cell.
    pub cycles: u32,
    /// CC charge C-rate range (1/h), drawn per cell.
    pub charge_c_rate: [f64; 2],
    /// CC discharge (and HPPC pulse, drive load scale) C-rate range (1/h), drawn per cell.
    pub discharge_c_rate: [f64; 2],
    /// The cells' current limits as C-rates; larger requests are clipped.
    pub max_charge_c_rate: f64,
    pub max_discharge_c_rate: f64,
    /// Cycles of ageing before the test starts, drawn per cell, so SOH differs across cells.
    pub initial_age_cycles: [f64; 2],
    /// Capacity lost per cycle, as a fraction of nominal.
    pub fade_per_cycle: f64,
    /// Resistance growth per cycle, as a fraction of the fresh value.
    pub resistance_growth_per_cycle: f64,
    /// Internal integration step (s).
    pub sim_step_s: f64,
    /// Logging: a row at least every `log_interval_s`, and whenever the voltage has moved by
    /// `log_delta_v` (V) or the current by `log_delta_c_rate` × C_nom since the last row, or a
    /// step begins or ends.
    pub log_interval_s: f64,
    pub log_delta_v: f64,
    pub log_delta_c_rate: f64,
    /// Standard deviations of the measurement noise on the logged voltage (V) and temperature (°C).
    pub voltage_noise_v: f64,
    pub temperature_noise_c: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            cells: 10,
            seed: 0,
            chemistries: vec![Chemistry::Nmc, Chemistry::Lfp],
            capacity_ah: [2.0, 5.0],
            ambient_temperatures_c: vec![10.0, 25.0, 40.0],
            protocols: Protocol::ALL.to_vec(),
            cycles: 3,
            charge_c_rate: [0.3, 1.0],
            discharge_c_rate: [0.5, 2.0],
            max_charge_c_rate: 2.0,
            max_discharge_c_rate: 5.0,
            initial_age_cycles: [0.0, 300.0],
            fade_per_cycle: 5e-4,
            resistance_growth_per_cycle: 1e-3,
            sim_step_s: 1.0,
            log_interval_s: 30.0,
            log_delta_v: 0.002,
            log_delta_c_rate: 0.01,
            voltage_noise_v: 2e-4,
            temperature_noise_c: 0.05,
        }
    }
}

impl SynthConfig {
    /// Rejects settings the generator cannot run with, naming the setting.
    pub fn validate(&self) -> Result<()> {
        let fail = |what: &str| -> Result<()> { Err(Error::Config(format!("[data.synth] {what}"))) };
        if self.chemistries.is_empty() || self.protocols.is_empty() || self.ambient_temperatures_c.is_empty() {
            return fail("chemistries, protocols and ambient_temperatures_c must not be empty");
        }
        for (name, [low, high], zero_allowed) in [
            ("capacity_ah", self.capacity_ah, false),
            ("charge_c_rate", self.charge_c_rate, false),
            ("discharge_c_rate", self.discharge_c_rate, false),
            ("initial_age_cycles", self.initial_age_cycles, true),
        ] {
            let low_ok = low > 0.0 || (zero_allowed && low == 0.0);
            if !(low_ok && low <= high && high.is_finite()) {
                let bound = if zero_allowed { "0 <=" } else { "0 <" };
                return fail(&format!("{name} must be [low, high] with {bound} low <= high, got [{low}, {high}]"));
            }
        }
        let positive = [
            ("sim_step_s", self.sim_step_s),
            ("log_interval_s", self.log_interval_s),
            ("log_delta_v", self.log_delta_v),
            ("log_delta_c_rate", self.log_delta_c_rate),
            ("max_charge_c_rate", self.max_charge_c_rate),
            ("max_discharge_c_rate", self.max_discharge_c_rate),
        ];
        if let Some((name, value)) = positive.iter().find(|(_, v)| !(*v > 0.0 && v.is_finite())) {
            return fail(&format!("{name} must be positive, got {value}"));
        }
        if self.sim_step_s > self.log_interval_s {
            return fail("sim_step_s must not exceed log_interval_s");
        }
        Ok(())
    }
}

/// What one synthetic cell is, decided by `cell_plan` before any simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthCellSpec {
    /// `synth-0007-cccv`: index and protocol.
    pub cell_id: String,
    pub index: usize,
    pub chemistry: Chemistry,
    pub protocol: Protocol,
    pub nominal_capacity_ah: f64,
    pub ambient_temperature_c: f64,
    pub charge_c_rate: f64,
    pub discharge_c_rate: f64,
    /// True SOC when the test starts.
    pub initial_soc: f64,
    /// Cycles of ageing before the test.
    pub initial_age_cycles: f64,
    /// Seeds this cell's parameters, drive loads and measurement noise.
    pub seed: u64,
}

/// The cells of a config, deterministic from its seed. Cell `i` does not depend on how many
/// cells follow it. Expects a validated config (panics on an empty protocol, chemistry or
/// ambient list).
pub fn cell_plan(cfg: &SynthConfig) -> Vec<SynthCellSpec> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    (0..cfg.cells).map(|index| draw_cell(cfg, index, &mut rng)).collect()
}

/// One cell's spec. Every cell takes the same number of draws, in field order.
fn draw_cell(cfg: &SynthConfig, index: usize, rng: &mut ChaCha8Rng) -> SynthCellSpec {
    let protocol = cfg.protocols[index % cfg.protocols.len()];
    let chemistry = cfg.chemistries[(index / cfg.protocols.len()) % cfg.chemistries.len()];
    SynthCellSpec {
        cell_id: format!("synth-{index:04}-{protocol}"),
        index,
        chemistry,
        protocol,
        nominal_capacity_ah: uniform(rng, cfg.capacity_ah),
        ambient_temperature_c: cfg.ambient_temperatures_c[rng.random_range(0..cfg.ambient_temperatures_c.len())],
        charge_c_rate: uniform(rng, cfg.charge_c_rate),
        discharge_c_rate: uniform(rng, cfg.discharge_c_rate),
        initial_soc: rng.random_range(0.2..0.8),
        initial_age_cycles: uniform(rng, cfg.initial_age_cycles),
        seed: rng.random(),
    }
}

fn uniform(rng: &mut ChaCha8Rng, [low, high]: [f64; 2]) -> f64 {
    low + (high - low) * rng.random::<f64>()
}

/// A list the plan picks from by index, so it needs at least one entry.
fn non_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Vec<T>, D::Error> {
    let list = Vec::<T>::deserialize(deserializer)?;
    if list.is_empty() {
        return Err(serde::de::Error::custom("must list at least one entry"));
    }
    Ok(list)
}
