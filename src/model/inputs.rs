//! The per-step input channels and the target encoding of the LBLM (DESIGN.md §2).
//!
//! Step t of a cell (t = 0 … rows−2) carries what is known when V_{t+1} is to be predicted: the
//! present voltage, current and temperature, and the current and time step that lead to t+1.
//! The target is the voltage change ΔV_t = V_{t+1} − V_t divided by a scale fitted on the
//! training cells, so that predicting 0 is exactly the persistence baseline V_{t+1} = V_t.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::canonical::{CellData, Dataset, DatasetPaths};
use crate::data::cells::{AnchorMethod, CellInfo};
use crate::data::schema::State;
use crate::data::windows::{NormStats, Window};
use crate::{Error, Result};

/// The input channels of VoltLens's own models, in order: the default of `ModelConfig::channels`.
/// `soc` lets a rollout find the end of a discharge from the charge moved rather than from its own
/// drifting voltage; `soc_present` lets the model read cells without an SOC anchor as well.
pub const CHANNELS: [&str; 13] = [
    "voltage",
    "c_rate",
    "log1p_dt",
    "c_rate_next",
    "log1p_dt_next",
    "charge_next",
    "temperature",
    "temperature_present",
    "current_sign_next",
    "step_change_next",
    "log1p_step_time",
    "soc",
    "soc_present",
];

/// The channels of models saved before `soc` joined the default, whose config.json names none.
pub const CHANNELS_BEFORE_SOC: &[&str] = CHANNELS.split_at(11).0;
/// The width of the default channel list.
pub const N_CHANNELS: usize = CHANNELS.len();

/// Channel index of V_t in the default list.
pub const VOLTAGE_CHANNEL: usize = 0;

/// A per-step input channel a model may read. Step t carries what is known when V_{t+1} is to
/// be predicted; "next" channels describe the interval from row t to row t+1.
pub struct Channel {
    pub name: &'static str,
    /// Unit and meaning, for `--help` and error messages.
    pub meaning: &'static str,
    value: fn(&CellRows, usize) -> f32,
}

/// One cell's rows, with the running charge some channels need.
struct CellRows<'a> {
    data: &'a CellData,
    /// Charge moved since the first row, Ah (positive = charge), one per row.
    charge_ah: Vec<f64>,
}

/// Every channel a model may read, by name (the default 11 first). One source of truth for
/// `ModelConfig::channels`, the import TOML's `[[inputs]]` and the de-embedding plots.
pub const CATALOGUE: &[Channel] = &[
    Channel { name: "voltage", meaning: "V_t (V)", value: |r, t| r.data.voltage[t] },
    Channel { name: "c_rate", meaning: "I_t / C_nom (1/h, positive = charge)", value: |r, t| r.data.c_rate[t] },
    Channel { name: "log1p_dt", meaning: "log(1 + dt_t), dt_t the seconds since the previous row", value: |r, t| log1p_seconds(r.data.dt[t]) },
    Channel { name: "c_rate_next", meaning: "I_{t+1} / C_nom: the current applied until the predicted row", value: |r, t| r.data.c_rate[t + 1] },
    Channel { name: "log1p_dt_next", meaning: "log(1 + dt_{t+1}): how long until the predicted row", value: |r, t| log1p_seconds(r.data.dt[t + 1]) },
    // Away from step changes ΔV ≈ (dOCV/dSOC)·ΔSOC: handing the model ΔSOC spares it learning a
    // product of current and time step.
    Channel {
        name: "charge_next",
        meaning: "I_{t+1}·dt_{t+1} / (3600·C_nom): share of capacity moved until t+1",
        value: |r, t| r.data.c_rate[t + 1] * r.data.dt[t + 1].max(0.0) / 3600.0,
    },
    Channel { name: "temperature", meaning: "T_t (°C), 0 where the cell has none", value: |r, t| measured_temperature(r.data, t).unwrap_or(0.0) },
    Channel {
        name: "temperature_present",
        meaning: "1 where T_t was measured, else 0",
        value: |r, t| if measured_temperature(r.data, t).is_some() { 1.0 } else { 0.0 },
    },
    Channel {
        name: "current_sign_next",
        meaning: "+1 charging, −1 discharging, 0 resting at t+1",
        value: |r, t| match r.data.state[t + 1] {
            State::Charging => 1.0,
            State::Discharging => -1.0,
            State::Resting => 0.0,
        },
    },
    Channel {
        name: "step_change_next",
        meaning: "1 when row t+1 starts a new cycler step",
        value: |r, t| if r.data.step_index[t + 1] != r.data.step_index[t] { 1.0 } else { 0.0 },
    },
    Channel { name: "log1p_step_time", meaning: "log(1 + seconds since the current step began)", value: |r, t| log1p_seconds(r.data.step_time[t]) },
    Channel { name: "current_a", meaning: "I_t (A, positive = charge)", value: |r, t| r.data.current[t] },
    Channel { name: "current_next_a", meaning: "I_{t+1} (A): the current applied until the predicted row", value: |r, t| r.data.current[t + 1] },
    Channel { name: "dt_s", meaning: "dt_t: seconds since the previous row", value: |r, t| r.data.dt[t].max(0.0) },
    Channel { name: "dt_next_s", meaning: "dt_{t+1}: seconds until the predicted row", value: |r, t| r.data.dt[t + 1].max(0.0) },
    Channel { name: "step_time_s", meaning: "seconds since the current step began", value: |r, t| r.data.step_time[t] },
    Channel {
        name: "soc",
        meaning: "state of charge at t (0–1, coulomb-counted by ingest), 0 where the cell has none (read it with soc_present)",
        value: |r, t| Some(r.data.soc[t]).filter(|v| v.is_finite()).unwrap_or(0.0),
    },
    Channel {
        name: "soc_present",
        meaning: "1 where ingest gave the cell an absolute SOC (an anchor), else 0",
        value: |r, t| if r.data.soc[t].is_finite() { 1.0 } else { 0.0 },
    },
    Channel { name: "charge_ah", meaning: "cumulative charge since the cell's first row at t (Ah, positive = charge)", value: |r, t| r.charge_ah[t] as f32 },
    Channel { name: "cycle_number", meaning: "the cycler's cycle number at t", value: |r, t| r.data.cycle_number[t] as f32 },
];

/// Where `channels` holds `soc` and `soc_present`, when it holds both. A cell without an SOC
/// anchor reads raw 0 in both.
pub fn soc_anchor_channels(channels: &[String]) -> Option<(usize, usize)> {
    let position = |name: &str| channels.iter().position(|c| c == name);
    position("soc").zip(position("soc_present"))
}

/// Indices into `CATALOGUE` of `names`; an unknown name is an error that lists the catalogue.
pub fn channel_indices(names: &[String]) -> Result<Vec<usize>> {
    if names.is_empty() {
        return Err(Error::Config("a model needs at least one input channel".into()));
    }
    names
        .iter()
        .map(|name| {
            CATALOGUE.iter().position(|c| c.name == name).ok_or_else(|| {
                let list: Vec<String> = CATALOGUE.iter().map(|c| format!("  {:<20} {}", c.name, c.meaning)).collect();
                Error::Config(format!("unknown input channel '{name}'; the channels are:\n{}", list.join("\n")))
            })
        })
        .collect()
}

fn measured_temperature(data: &CellData, t: usize) -> Option<f32> {
    data.temperature[t].filter(|v| v.is_finite())
}

/// One cell turned into model steps, before normalisation.
#[derive(Debug, Clone)]
pub struct CellSteps {
    pub cell_id: String,
    /// [steps, channels] row-major, raw units, the channels a model reads in its order.
    pub inputs: Vec<f32>,
    /// Channels per step.
    pub width: usize,
    /// V_{t+1} − V_t in volts, one per step.
    pub delta_v: Vec<f32>,
    /// The cell's voltages, steps + 1 of them (V_0 … V_steps).
    pub voltage: Vec<f32>,
}

impl CellSteps {
    /// Builds the steps of one cell with the named `channels` (`CATALOGUE`). Every value the
    /// model reads must be finite: a NaN or an infinity is reported with the cell's file, the
    /// 1-based row and the column it sits in.
    pub fn from_cell(info: &CellInfo, data: &CellData, file: &Path, channels: &[String]) -> Result<CellSteps> {
        if let Some(why) = unreadable(info, channels) {
            return Err(Error::in_file(file, format!("cell {}: {why}", info.cell_id)));
        }
        let rows = data.len();
        check_finite(file, "voltage", &data.voltage)?;
        let chosen: Vec<&Channel> = channel_indices(channels)?.into_iter().map(|i| &CATALOGUE[i]).collect();
        let mut charge = 0f64;
        let charge_ah = (0..rows)
            .map(|t| {
                charge += data.current[t] as f64 * data.dt[t].max(0.0) as f64 / 3600.0;
                charge
            })
            .collect();
        let cell = &CellRows { data, charge_ah };
        let steps = rows.saturating_sub(1);
        let inputs: Vec<f32> = (0..steps).flat_map(|t| chosen.iter().map(move |c| (c.value)(cell, t))).collect();
        if let Some(i) = inputs.iter().position(|v| !v.is_finite()) {
            let (row, channel) = (i / chosen.len(), chosen[i % chosen.len()].name);
            return Err(Error::at_row(
                file,
                row as u64 + 1,
                Some(channel),
                format!("input channel {channel} is {}, not a finite number; the model cannot read it (clean or drop these rows)", inputs[i]),
            ));
        }
        let delta_v = data.voltage.windows(2).map(|w| w[1] - w[0]).collect();
        Ok(CellSteps { cell_id: info.cell_id.clone(), inputs, width: chosen.len(), delta_v, voltage: data.voltage.clone() })
    }

    pub fn steps(&self) -> usize {
        self.delta_v.len()
    }

    pub fn row(&self, t: usize) -> &[f32] {
        &self.inputs[t * self.width..(t + 1) * self.width]
    }
}

/// Negative time steps (clock resets the cleaning missed) count as 0 rather than poisoning log1p.
fn log1p_seconds(seconds: f32) -> f32 {
    seconds.max(0.0).ln_1p()
}

fn check_finite(file: &Path, column: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(row) => Err(Error::at_row(
            file,
            row as u64 + 1,
            Some(column),
            format!("{} is not a finite number; the model cannot read it (clean or drop these rows)", values[row]),
        )),
    }
}

/// Input normalisation and target scale, fitted on the training cells only (DESIGN §1.5) and
/// saved with the model as `norm.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputNorm {
    /// Channel names, to refuse a model saved with a different channel list.
    pub channels: Vec<String>,
    pub stats: NormStats,
    /// Volts per unit of model output: the RMS of ΔV over the training steps, so that the
    /// persistence baseline scores an MSE of 1 in model units on the training data.
    pub target_scale: f32,
}

impl InputNorm {
    /// Fits on the training cells, built with `channels`.
    pub fn fit(train: &[CellSteps], channels: &[String]) -> InputNorm {
        let width = channels.len();
        let rows = train.iter().flat_map(|c| c.inputs.chunks_exact(width));
        let stats = NormStats::fit(rows, width);
        let (sum_sq, n) = train
            .iter()
            .flat_map(|c| &c.delta_v)
            .fold((0f64, 0usize), |(s, n), &d| (s + (d as f64).powi(2), n + 1));
        let rms = (sum_sq / n.max(1) as f64).sqrt() as f32;
        // A training set without any voltage change would give a zero scale; 1 mV keeps it usable.
        let target_scale = if rms > 1e-6 { rms } else { 1e-3 };
        InputNorm { channels: channels.to_vec(), stats, target_scale }
    }

    /// Refuses statistics saved for another channel list than the model's.
    pub fn check_channels(&self, model_channels: &[String]) -> Result<()> {
        channel_indices(&self.channels)?;
        if self.channels != model_channels || self.stats.mean.len() != self.channels.len() || self.stats.std.len() != self.channels.len() {
            return Err(Error::Config(format!(
                "norm.json holds statistics of input channels {:?}, the model reads {:?}",
                self.channels, model_channels
            )));
        }
        Ok(())
    }

    /// Normalised inputs and scaled targets of one cell.
    pub fn apply(&self, cell: &CellSteps) -> ModelSteps {
        let mut inputs = cell.inputs.clone();
        for row in inputs.chunks_exact_mut(cell.width) {
            self.stats.apply(row);
        }
        let target = cell.delta_v.iter().map(|d| d / self.target_scale).collect();
        ModelSteps { cell_id: cell.cell_id.clone(), inputs, width: cell.width, target }
    }

    /// Normalises one raw row in place (rollouts build rows from predicted voltages).
    pub fn apply_row(&self, row: &mut [f32]) {
        self.stats.apply(row);
    }
}

/// One cell as the model reads it.
#[derive(Debug, Clone)]
pub struct ModelSteps {
    pub cell_id: String,
    /// [steps, width] row-major, normalised.
    pub inputs: Vec<f32>,
    /// Channels per step.
    pub width: usize,
    /// ΔV / target_scale, one per step.
    pub target: Vec<f32>,
}

impl ModelSteps {
    pub fn steps(&self) -> usize {
        self.target.len()
    }
}

/// Stacks windows of `len` steps into model inputs [batch, len, width] and targets
/// [batch, len]. `cells` is indexed by `Window::cell`.
pub fn batch<B: Backend>(
    cells: &[ModelSteps],
    windows: &[Window],
    len: usize,
    device: &B::Device,
) -> (Tensor<B, 3>, Tensor<B, 2>) {
    let width = cells.first().map_or(N_CHANNELS, |c| c.width);
    let mut x = Vec::with_capacity(windows.len() * len * width);
    let mut y = Vec::with_capacity(windows.len() * len);
    for w in windows {
        let cell = &cells[w.cell];
        x.extend_from_slice(&cell.inputs[w.start * width..(w.start + len) * width]);
        y.extend_from_slice(&cell.target[w.start..w.start + len]);
    }
    let x = Tensor::from_data(TensorData::new(x, [windows.len(), len, width]), device);
    let y = Tensor::from_data(TensorData::new(y, [windows.len(), len]), device);
    (x, y)
}

/// The steps of one cell of the dataset at `dataset_dir` with `channels`, reading only that
/// cell's file.
pub fn cell_steps(dataset_dir: &Path, cell_id: &str, channels: &[String]) -> Result<CellSteps> {
    let (info, data, file) = read_dataset_cell(dataset_dir, cell_id)?;
    CellSteps::from_cell(&info, &data, &file, channels)
}

/// One cell of the dataset at `dataset_dir`, read from its own file, and that file's path.
pub fn read_dataset_cell(dataset_dir: &Path, cell_id: &str) -> Result<(CellInfo, CellData, PathBuf)> {
    let file = DatasetPaths::new(dataset_dir).cell_file(cell_id);
    if !file.exists() {
        return Err(crate::data::canonical::no_such_cell(dataset_dir, cell_id, &crate::data::canonical::Dataset::load_cells(dataset_dir)?));
    }
    let (info, data) = crate::data::canonical::read_cell(&file)?;
    Ok((info, data, file))
}

/// Why a model reading `channels` cannot run on this cell at all, if it cannot: the cell has no
/// value of a channel anywhere. Today that is `soc` on a cell ingest left without an absolute SOC
/// (no trustworthy anchor), for a model that was not also given `soc_present`: a model trained
/// elsewhere on SOC has nothing right to read there, while one that reads the flag learned cells
/// without SOC.
pub fn unreadable(info: &CellInfo, channels: &[String]) -> Option<String> {
    let reads = |name: &str| channels.iter().any(|c| c == name);
    (info.anchor_method == AnchorMethod::Unanchored && reads("soc") && !reads("soc_present")).then(|| {
        "the model reads `soc` without `soc_present` and this cell has none (no trustworthy SOC anchor: anchor_method = unanchored)".to_owned()
    })
}

/// Whether a model reading `channels` can run on this cell ([`unreadable`]); when not, a warning
/// names it (once per cell and process: a pipeline asks often).
pub fn can_read(info: &CellInfo, channels: &[String]) -> bool {
    static WARNED: std::sync::Mutex<std::collections::BTreeSet<String>> = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let Some(why) = unreadable(info, channels) else { return true };
    if WARNED.lock().map(|mut w| w.insert(info.cell_id.clone())).unwrap_or(true) {
        tracing::warn!("cell {} left out: {why}", info.cell_id);
    }
    false
}

/// The steps of the named cells of a dataset loaded from `dataset_dir`, in the order given,
/// with `channels`; cells the model cannot read at all are left out with a warning ([`can_read`]).
pub fn dataset_steps(dataset: &Dataset, dataset_dir: &Path, cell_ids: &[String], channels: &[String]) -> Result<Vec<CellSteps>> {
    use rayon::prelude::*;
    let paths = DatasetPaths::new(dataset_dir);
    let indices = cell_ids
        .iter()
        .map(|id| dataset.index_of(id).ok_or_else(|| Error::Config(format!("cell {id} is not in {}", dataset_dir.display()))))
        .collect::<Result<Vec<usize>>>()?;
    indices
        .into_par_iter()
        .filter(|&i| can_read(&dataset.cells[i], channels))
        .map(|i| {
            let info = &dataset.cells[i];
            CellSteps::from_cell(info, &dataset.data[i], &paths.cell_file(&info.cell_id), channels)
        })
        .collect()
}
