//! The per-step input channels and the target encoding of the LBLM (DESIGN.md §2).
//!
//! Step t of a cell (t = 0 … rows−2) carries what is known when V_{t+1} is to be predicted: the
//! present voltage, current and temperature, and the current and time step that lead to t+1.
//! The target is the voltage change ΔV_t = V_{t+1} − V_t divided by a scale fitted on the
//! training cells, so that predicting 0 is exactly the persistence baseline V_{t+1} = V_t.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::canonical::{CellData, Dataset, DatasetPaths};
use crate::data::cells::CellInfo;
use crate::data::schema::State;
use crate::data::windows::{NormStats, Window};
use crate::{Error, Result};

/// The input channels, in order. One source of truth: the model's input width, the saved
/// normalisation and the de-embedding plots all read this list.
pub const CHANNELS: [&str; 11] = [
    "voltage",             // V_t (V)
    "c_rate",              // I_t / C_nom (1/h, positive = charge)
    "log1p_dt",            // log(1 + dt_t), dt_t the seconds since the previous row
    "c_rate_next",         // I_{t+1} / C_nom: the current applied until the predicted row
    "log1p_dt_next",       // log(1 + dt_{t+1}): how long until the predicted row
    "charge_next",         // I_{t+1}·dt_{t+1} / (3600·C_nom): share of capacity moved until t+1
    "temperature",         // T_t (°C), 0 where the cell has none
    "temperature_present", // 1 where T_t was measured, else 0
    "current_sign_next",   // +1 charging, −1 discharging, 0 resting at t+1
    "step_change_next",    // 1 when row t+1 starts a new cycler step
    "log1p_step_time",     // log(1 + seconds since the current step began)
];
pub const N_CHANNELS: usize = CHANNELS.len();

/// Channel index of V_t: rollouts overwrite it with the model's own predictions.
pub const VOLTAGE_CHANNEL: usize = 0;

/// One cell turned into model steps, before normalisation.
#[derive(Debug, Clone)]
pub struct CellSteps {
    pub cell_id: String,
    /// [steps, N_CHANNELS] row-major, raw units.
    pub inputs: Vec<f32>,
    /// V_{t+1} − V_t in volts, one per step.
    pub delta_v: Vec<f32>,
    /// The cell's voltages, steps + 1 of them (V_0 … V_steps).
    pub voltage: Vec<f32>,
}

impl CellSteps {
    /// Builds the steps of one cell. Every value the model reads must be finite: a NaN or an
    /// infinity is reported with the cell's file, the 1-based row and the column it sits in.
    pub fn from_cell(info: &CellInfo, data: &CellData, file: &Path) -> Result<CellSteps> {
        let rows = data.len();
        for (column, values) in
            [("voltage", &data.voltage), ("c_rate", &data.c_rate), ("dt", &data.dt), ("step_time", &data.step_time)]
        {
            check_finite(file, column, values)?;
        }
        let steps = rows.saturating_sub(1);
        let mut inputs = Vec::with_capacity(steps * N_CHANNELS);
        for t in 0..steps {
            let (temperature, present) = match data.temperature[t] {
                Some(v) if v.is_finite() => (v, 1.0),
                _ => (0.0, 0.0),
            };
            let sign = match data.state[t + 1] {
                State::Charging => 1.0,
                State::Discharging => -1.0,
                State::Resting => 0.0,
            };
            let step_change = if data.step_index[t + 1] != data.step_index[t] { 1.0 } else { 0.0 };
            inputs.extend_from_slice(&[
                data.voltage[t],
                data.c_rate[t],
                log1p_seconds(data.dt[t]),
                data.c_rate[t + 1],
                log1p_seconds(data.dt[t + 1]),
                // Away from step changes ΔV ≈ (dOCV/dSOC)·ΔSOC: handing the model ΔSOC spares it
                // learning a product of current and time step.
                data.c_rate[t + 1] * data.dt[t + 1].max(0.0) / 3600.0,
                temperature,
                present,
                sign,
                step_change,
                log1p_seconds(data.step_time[t]),
            ]);
        }
        let delta_v = data.voltage.windows(2).map(|w| w[1] - w[0]).collect();
        Ok(CellSteps { cell_id: info.cell_id.clone(), inputs, delta_v, voltage: data.voltage.clone() })
    }

    pub fn steps(&self) -> usize {
        self.delta_v.len()
    }

    pub fn row(&self, t: usize) -> &[f32] {
        &self.inputs[t * N_CHANNELS..(t + 1) * N_CHANNELS]
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
    pub fn fit(train: &[CellSteps]) -> InputNorm {
        let rows = train.iter().flat_map(|c| c.inputs.chunks_exact(N_CHANNELS));
        let stats = NormStats::fit(rows, N_CHANNELS);
        let (sum_sq, n) = train
            .iter()
            .flat_map(|c| &c.delta_v)
            .fold((0f64, 0usize), |(s, n), &d| (s + (d as f64).powi(2), n + 1));
        let rms = (sum_sq / n.max(1) as f64).sqrt() as f32;
        // A training set without any voltage change would give a zero scale; 1 mV keeps it usable.
        let target_scale = if rms > 1e-6 { rms } else { 1e-3 };
        InputNorm { channels: CHANNELS.iter().map(|s| s.to_string()).collect(), stats, target_scale }
    }

    /// Refuses statistics saved for another channel list.
    pub fn check_channels(&self) -> Result<()> {
        if self.channels.iter().map(String::as_str).eq(CHANNELS) {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "the model was saved with input channels {:?}, this VoltLens uses {:?}",
                self.channels, CHANNELS
            )))
        }
    }

    /// Normalised inputs and scaled targets of one cell.
    pub fn apply(&self, cell: &CellSteps) -> ModelSteps {
        let mut inputs = cell.inputs.clone();
        for row in inputs.chunks_exact_mut(N_CHANNELS) {
            self.stats.apply(row);
        }
        let target = cell.delta_v.iter().map(|d| d / self.target_scale).collect();
        ModelSteps { cell_id: cell.cell_id.clone(), inputs, target }
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
    /// [steps, N_CHANNELS] row-major, normalised.
    pub inputs: Vec<f32>,
    /// ΔV / target_scale, one per step.
    pub target: Vec<f32>,
}

impl ModelSteps {
    pub fn steps(&self) -> usize {
        self.target.len()
    }
}

/// Stacks windows of `len` steps into model inputs [batch, len, N_CHANNELS] and targets
/// [batch, len]. `cells` is indexed by `Window::cell`.
pub fn batch<B: Backend>(
    cells: &[ModelSteps],
    windows: &[Window],
    len: usize,
    device: &B::Device,
) -> (Tensor<B, 3>, Tensor<B, 2>) {
    let mut x = Vec::with_capacity(windows.len() * len * N_CHANNELS);
    let mut y = Vec::with_capacity(windows.len() * len);
    for w in windows {
        let cell = &cells[w.cell];
        x.extend_from_slice(&cell.inputs[w.start * N_CHANNELS..(w.start + len) * N_CHANNELS]);
        y.extend_from_slice(&cell.target[w.start..w.start + len]);
    }
    let x = Tensor::from_data(TensorData::new(x, [windows.len(), len, N_CHANNELS]), device);
    let y = Tensor::from_data(TensorData::new(y, [windows.len(), len]), device);
    (x, y)
}

/// The steps of one cell of the dataset at `dataset_dir`, reading only that cell's file.
pub fn cell_steps(dataset_dir: &Path, cell_id: &str) -> Result<CellSteps> {
    let file = DatasetPaths::new(dataset_dir).cell_file(cell_id);
    if !file.exists() {
        return Err(Error::Config(format!("{}: no cell {cell_id} in this dataset", dataset_dir.display())));
    }
    let (info, data) = crate::data::canonical::read_cell(&file)?;
    CellSteps::from_cell(&info, &data, &file)
}

/// The steps of the named cells of a dataset loaded from `dataset_dir`, in the order given.
pub fn dataset_steps(dataset: &Dataset, dataset_dir: &Path, cell_ids: &[String]) -> Result<Vec<CellSteps>> {
    use rayon::prelude::*;
    let paths = DatasetPaths::new(dataset_dir);
    cell_ids
        .par_iter()
        .map(|id| {
            let i = dataset.index_of(id).ok_or_else(|| {
                Error::Config(format!("cell {id} of the model's split is not in {}", dataset_dir.display()))
            })?;
            CellSteps::from_cell(&dataset.cells[i], &dataset.data[i], &paths.cell_file(id))
        })
        .collect()
}
