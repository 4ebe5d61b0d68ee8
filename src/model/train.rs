//! `train-model`: AdamW with warm-up and cosine decay, global-norm gradient clipping, batches of
//! windows from the training cells, periodic validation and resumable checkpoints (DESIGN §2).
//!
//! A run is a pure function of its settings: the batch of step k is drawn from a generator seeded
//! by (seed, k) and the learning rate is a function of k, so a run resumed from a checkpoint
//! reaches the same weights as one that was never interrupted.

use std::path::Path;
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::backend::{run_on, BackendTask};
use super::checkpoint::{ModelDir, RunConfig, TrainState};
use crate::io::{read_json, write_json};
use super::config::{Loss, ModelConfig, TrainConfig};
use super::inputs::{self, dataset_steps, InputNorm, ModelSteps};
use super::transformer::Lblm;
use crate::data::canonical::Dataset;
use crate::data::windows::{windows, Split, Window};
use crate::{Error, Result};
use crate::transcoder::sparse::SparseOps;

/// What a training run reports (also saved as `summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Optimiser steps done.
    pub steps: usize,
    /// False when the run stopped early (`stop_after`); the model directory then holds only a
    /// checkpoint to resume from.
    pub finished: bool,
    /// The step this invocation resumed from, if it did.
    pub resumed_from: Option<usize>,
    /// Mean training loss over the last logging interval (scaled ΔV units).
    pub train_loss: f32,
    /// Last validation loss and skill (1 − MSE/MSE_persistence on the validation windows).
    pub val_loss: Option<f32>,
    pub val_skill: Option<f32>,
    /// Training tokens (window steps) per second in this invocation.
    pub tokens_per_s: f64,
    /// Seconds of training over all invocations.
    pub seconds: f64,
    pub parameters: usize,
    pub train_cells: usize,
    pub val_cells: usize,
    pub test_cells: usize,
}

/// Trains an LBLM on the canonical dataset at `dataset_dir` into `out_dir`; resumes from the
/// newest checkpoint there, and returns the saved summary at once if the run already finished.
pub fn train_model(dataset_dir: &Path, model: &ModelConfig, train: &TrainConfig, out_dir: &Path) -> Result<TrainSummary> {
    model.validate()?;
    train.validate()?;
    let dataset = Dataset::load(dataset_dir)?;
    run_on(train.device, TrainTask { dataset_dir, dataset: &dataset, model, train, out_dir })
}

struct TrainTask<'a> {
    dataset_dir: &'a Path,
    dataset: &'a Dataset,
    model: &'a ModelConfig,
    train: &'a TrainConfig,
    out_dir: &'a Path,
}

impl BackendTask for TrainTask<'_> {
    type Output = TrainSummary;
    fn describe(&self) -> String {
        let m = self.model;
        format!(
            "model training ({} layers, d_model {}, context {}, batch {}); lower `batch` or `context`",
            m.layers, m.d_model, m.context, self.train.batch
        )
    }
    fn run<B: AutodiffBackend + SparseOps>(self, device: B::Device) -> Result<TrainSummary> {
        let dir = ModelDir::new(self.out_dir);
        let run_config = RunConfig {
            model: self.model.clone(),
            train: self.train.identity(),
            dataset: self.dataset_dir.display().to_string(),
            voltlens_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let Some(data) = prepare_run(&dir, &run_config, self.dataset, self.dataset_dir)? else {
            return read_json(&dir.summary());
        };
        Trainer::<B>::new(dir, run_config, data, device)?.run(self.train.stop_after)
    }
}

/// The cells of a run, ready for the model.
struct RunData {
    split: Split,
    train: Vec<ModelSteps>,
    val: Vec<ModelSteps>,
    /// The voltage channel and the normalised volts per unit of model output, for pushforward;
    /// None when the model does not read V_t.
    voltage: Option<(usize, f32)>,
    /// The `soc` and `soc_present` channels with their normalised values on a cell without an
    /// SOC anchor, for `soc_dropout`; None unless the model reads both.
    soc_blank: Option<[(usize, f32); 2]>,
}

/// Creates the model directory (config, split, norm) or checks the one there against the
/// settings. `None` when the run there has already finished.
fn prepare_run(dir: &ModelDir, run: &RunConfig, dataset: &Dataset, dataset_dir: &Path) -> Result<Option<RunData>> {
    let (split, norm) = if dir.config().exists() {
        let saved = dir.read_config()?;
        if saved.model != run.model || saved.train != run.train {
            return Err(Error::Config(format!(
                "{} holds a run with other settings (model {:?}, train {:?}); train into another directory or delete it",
                dir.root.display(),
                saved.model,
                saved.train
            )));
        }
        if dir.summary().exists() && dir.weights().exists() {
            tracing::info!("{}: training already finished", dir.root.display());
            return Ok(None);
        }
        let norm: InputNorm = read_json(&dir.norm())?;
        norm.check_channels(&run.model.channels)?;
        (read_json::<Split>(&dir.split())?, norm)
    } else {
        let split = Split::by_cell(&dataset.conditions(), run.train.val_fraction, run.train.test_fraction, run.train.seed);
        let channels = &run.model.channels;
        let norm = InputNorm::fit(&dataset_steps(dataset, dataset_dir, &split.train, channels)?, channels);
        dir.create()?;
        write_json(&dir.split(), &split)?;
        write_json(&dir.norm(), &norm)?;
        // Written last: its presence says the other two are complete.
        write_json(&dir.config(), run)?;
        (split, norm)
    };
    let steps = |ids: &[String]| -> Result<Vec<ModelSteps>> {
        Ok(dataset_steps(dataset, dataset_dir, ids, &norm.channels)?.iter().map(|c| norm.apply(c)).collect())
    };
    let voltage = norm.channels.iter().position(|c| c == "voltage").map(|c| (c, norm.target_scale / norm.stats.std[c]));
    let mut unanchored = vec![0f32; norm.channels.len()];
    norm.apply_row(&mut unanchored);
    let soc_blank = inputs::soc_anchor_channels(&norm.channels).map(|(s, p)| [(s, unanchored[s]), (p, unanchored[p])]);
    Ok(Some(RunData { train: steps(&split.train)?, val: steps(&split.val)?, split, voltage, soc_blank }))
}

/// Learning rate at `step`: linear warm-up to `lr`, then cosine decay to `lr · min_lr_fraction`.
pub fn learning_rate(cfg: &TrainConfig, step: usize) -> f64 {
    if step < cfg.warmup {
        return cfg.lr * (step + 1) as f64 / cfg.warmup as f64;
    }
    let decay_steps = cfg.steps.saturating_sub(cfg.warmup).max(1);
    let progress = ((step - cfg.warmup) as f64 / decay_steps as f64).min(1.0);
    let floor = cfg.lr * cfg.min_lr_fraction;
    floor + (cfg.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// The training windows of step `step`: uniform draws from a generator seeded by (seed, step).
fn batch_windows(all: &[Window], batch: usize, seed: u64, step: usize) -> Vec<Window> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..batch).map(|_| all[rng.random_range(0..all.len())]).collect()
}

/// Which windows of step `step`'s batch a perturbation takes: a share `share`, drawn from a
/// generator seeded by (seed, step, stream), apart from the batch's own and from other streams'.
fn chosen_windows(batch: usize, share: f64, seed: u64, step: usize, stream: u64) -> Vec<bool> {
    let mut rng = step_rng(seed, step, stream);
    (0..batch).map(|_| rng.random_bool(share)).collect()
}
/// The generator of one (seed, step, stream): each perturbation draws from its own.
fn step_rng(seed: u64, step: usize, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(!seed ^ stream ^ (step as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03))
}
const PUSHFORWARD_STREAM: u64 = 0;
const SOC_DROPOUT_STREAM: u64 = 0x50C0_0D40_9B0E_0001;
const DRIFT_STREAM: u64 = 0x3A1F;

/// Per window of a batch, the gain its drift is read with: 0 for windows not chosen for
/// pushforward, else `gain` × a multiplier drawn uniformly from `pushforward_drift` ± `_spread`.
fn drift_gains(cfg: &TrainConfig, batch: usize, step: usize, gain: f32) -> Vec<f32> {
    let chosen = chosen_windows(batch, cfg.pushforward, cfg.seed, step, PUSHFORWARD_STREAM);
    let mut rng = step_rng(cfg.seed, step, DRIFT_STREAM);
    let (low, width) = ((cfg.pushforward_drift - cfg.pushforward_drift_spread) as f32, 2.0 * cfg.pushforward_drift_spread as f32);
    // A draw for every window, chosen or not, so that a window's multiplier is its own.
    chosen
        .into_iter()
        .map(|c| {
            let g = gain * (low + width * rng.random::<f32>());
            if c { g } else { 0.0 }
        })
        .collect()
}

/// Modality dropout for the SOC anchor: the chosen windows read `soc` and `soc_present` as a
/// cell without an anchor does. Without it a model trained mostly on anchored cells leans on
/// `soc` and fails on the few unanchored ones (dev set, seed 12: a held-out unanchored cell's
/// discharge rollouts at 507 mV, against 47 mV for a model that never read `soc`).
fn blank_soc<B: Backend>(x: Tensor<B, 3>, blank: [(usize, f32); 2], chosen: &[bool]) -> Tensor<B, 3> {
    let [batch, len, width] = x.dims();
    let device = x.device();
    let mut xs = x.into_data().convert::<f32>().into_vec::<f32>().expect("f32 tensor");
    for w in (0..batch).filter(|&w| chosen[w]) {
        for row in xs[w * len * width..(w + 1) * len * width].chunks_exact_mut(width) {
            for (channel, value) in blank {
                row[channel] = value;
            }
        }
    }
    Tensor::from_data(TensorData::new(xs, [batch, len, width]), &device)
}

/// The pushforward trick (Brandstetter, Worrall & Welling 2022, "Message passing neural PDE
/// solvers", §2.3), for voltages: a rollout feeds the model its own voltages, so it learns from
/// voltages that drifted as its own do. For each chosen window the model (no gradient) predicts
/// every step teacher-forced, and its summed errors D_t = Σ_{s<t} (ŷ_s − y_s) move the voltage
/// input to V_t + D_t (model units). The target stays the cell's true step: the model learns the
/// step whatever error its voltage input carries, so that a rollout's drift does not feed on
/// itself. (Aiming the target back at the true V_{t+1} instead taught the model to "correct"
/// clean inputs too: held-out skill fell from 0.99 to below 0 on NCA_Kim2011.)
fn pushforward<B: AutodiffBackend>(model: &Lblm<B::InnerBackend>, x: Tensor<B, 3>, y: &Tensor<B, 2>, channel: usize, gains: &[f32]) -> Tensor<B, 3> {
    let [batch, len, width] = x.dims();
    let device = x.device();
    let vec = |t: TensorData| t.convert::<f32>().into_vec::<f32>().expect("f32 tensor");
    let predicted = vec(model.forward(x.clone().inner()).into_data());
    let (mut xs, ys) = (vec(x.into_data()), vec(y.to_data()));
    for (w, &gain) in gains.iter().enumerate().filter(|(_, &g)| g != 0.0) {
        let mut drift = 0f32;
        for t in 0..len {
            let i = w * len + t;
            xs[i * width + channel] += gain * drift;
            drift += predicted[i] - ys[i];
        }
    }
    Tensor::from_data(TensorData::new(xs, [batch, len, width]), &device)
}

/// `count` windows spread evenly over all validation windows (fixed for the whole run).
fn evenly_spaced(all: Vec<Window>, count: usize) -> Vec<Window> {
    if all.len() <= count {
        return all;
    }
    (0..count).map(|i| all[i * all.len() / count]).collect()
}

/// Loss on scaled ΔV, averaged over every step of every window.
fn loss<B: Backend>(pred: Tensor<B, 2>, target: Tensor<B, 2>, kind: Loss) -> Tensor<B, 1> {
    let err = pred - target;
    match kind {
        Loss::Mse => err.square().mean(),
        Loss::Huber { delta } => {
            // With q = min(|e|, δ): q·(|e| − q/2) is ½e² inside δ and δ(|e| − ½δ) beyond.
            let abs = err.abs();
            let q = abs.clone().clamp_max(delta);
            (q.clone() * (abs - q * 0.5)).mean()
        }
    }
}

/// Sum of squares of the gradients of a module's parameters.
struct GradSquares<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradSquares<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

/// Multiplies every gradient by a factor.
struct GradScale<'a> {
    grads: &'a mut GradientsParams,
    factor: f32,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradScale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Scales the gradients so that their global L2 norm is at most `max_norm` (burn's own clipping
/// works per parameter tensor; the transformer recipe clips the whole gradient). Returns the
/// norm before clipping.
fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f32 {
    let mut squares = GradSquares::<B> { grads, total: None };
    module.visit(&mut squares);
    let norm = squares.total.map_or(0.0, |t| t.into_scalar().elem::<f32>().sqrt());
    if max_norm > 0.0 && norm.is_finite() && norm as f64 > max_norm {
        module.visit(&mut GradScale { grads, factor: (max_norm / norm as f64) as f32 });
    }
    norm
}

/// Sum of squares of all weights: finite exactly when every weight is.
struct WeightSquares<B: Backend> {
    total: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: Backend> ModuleVisitor<B> for WeightSquares<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.total += param.val().square().sum().into_scalar().elem::<f64>();
    }
}

fn weights_finite<B: Backend>(model: &Lblm<B>) -> bool {
    let mut v = WeightSquares::<B> { total: 0.0, _b: std::marker::PhantomData };
    model.visit(&mut v);
    v.total.is_finite()
}

/// Mean loss and skill (1 − MSE/MSE_persistence) of `model` on fixed windows.
pub(crate) fn validate<B: Backend>(
    model: &Lblm<B>,
    cells: &[ModelSteps],
    windows: &[Window],
    context: usize,
    batch: usize,
    device: &B::Device,
) -> (f32, f32) {
    let (mut sse, mut persistence, mut n) = (0f64, 0f64, 0usize);
    for chunk in windows.chunks(batch.max(1)) {
        let (x, y) = inputs::batch::<B>(cells, chunk, context, device);
        let pred = model.forward(x);
        sse += (pred - y.clone()).square().sum().into_scalar().elem::<f64>();
        persistence += y.square().sum().into_scalar().elem::<f64>();
        n += chunk.len() * context;
    }
    let mse = sse / n.max(1) as f64;
    let skill = if persistence > 0.0 { 1.0 - sse / persistence } else { f64::NAN };
    (mse as f32, skill as f32)
}

/// One training run on one backend.
struct Trainer<B: AutodiffBackend> {
    dir: ModelDir,
    run: RunConfig,
    data: RunData,
    train_windows: Vec<Window>,
    val_windows: Vec<Window>,
    device: B::Device,
}

impl<B: AutodiffBackend> Trainer<B> {
    fn new(dir: ModelDir, run: RunConfig, data: RunData, device: B::Device) -> Result<Self> {
        let context = run.model.context;
        let lengths = |cells: &[ModelSteps]| cells.iter().map(ModelSteps::steps).collect::<Vec<_>>();
        let train_windows = windows(&lengths(&data.train), context, run.train.stride);
        if train_windows.is_empty() {
            return Err(Error::Config(format!(
                "no training cell has {} steps (the context): use a shorter context or more data",
                context
            )));
        }
        let val_windows = evenly_spaced(windows(&lengths(&data.val), context, context / 2), run.train.val_windows);
        Ok(Trainer { dir, run, data, train_windows, val_windows, device })
    }

    fn run(self, stop_after: Option<usize>) -> Result<TrainSummary> {
        let cfg = &self.run.train;
        let context = self.run.model.context;
        let mut model = Lblm::<B>::new(&self.run.model, cfg.seed, &self.device);
        let mut optim = AdamWConfig::new().with_weight_decay(cfg.weight_decay as f32).init::<B, Lblm<B>>();
        let mut state = TrainState::default();
        let mut resumed_from = None;
        if let Some((m, record, s)) = self.dir.load_checkpoint::<B, _>(&self.run.model, &self.device)? {
            tracing::info!("{}: resuming from step {}", self.dir.root.display(), s.step);
            model = m;
            optim = optim.load_record(record);
            resumed_from = Some(s.step);
            state = s;
        }
        let start_step = state.step;
        let mut last_checkpoint = resumed_from;
        let end_step = stop_after.map_or(cfg.steps, |s| s.min(cfg.steps));
        let log_every = (cfg.steps / 200).max(1);
        let tokens_per_step = cfg.batch * context;
        let bar = crate::progress::bar(cfg.steps as u64, "train", "steps");
        bar.set_position(start_step as u64);
        let t0 = Instant::now();
        let seconds_before = state.seconds;
        let (mut interval_sum, mut interval_n, mut last_loss) = (0f64, 0usize, f32::NAN);
        let mut last_val = state.val.last().map(|&(_, l, s)| (l, s));

        for step in start_step..end_step {
            let batch = batch_windows(&self.train_windows, cfg.batch, cfg.seed, step);
            let (mut x, y) = inputs::batch::<B>(&self.data.train, &batch, context, &self.device);
            if let Some(blank) = self.data.soc_blank.filter(|_| cfg.soc_dropout > 0.0) {
                x = blank_soc(x, blank, &chosen_windows(batch.len(), cfg.soc_dropout, cfg.seed, step, SOC_DROPOUT_STREAM));
            }
            if let Some((channel, gain)) = self.data.voltage.filter(|_| cfg.pushforward > 0.0) {
                let gains = drift_gains(cfg, batch.len(), step, gain);
                x = pushforward(&model.valid(), x, &y, channel, &gains);
            }
            let loss = loss(model.forward(x), y, cfg.loss);
            let value = loss.clone().into_scalar().elem::<f32>();
            if !value.is_finite() {
                return Err(self.diverged(step, value, last_checkpoint));
            }
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            clip_global_norm(&model, &mut grads, cfg.grad_clip);
            model = optim.step(learning_rate(cfg, step), model, grads);
            state.step = step + 1;
            state.seconds = seconds_before + t0.elapsed().as_secs_f64();
            interval_sum += value as f64;
            interval_n += 1;
            if state.step % log_every == 0 || state.step == end_step {
                last_loss = (interval_sum / interval_n as f64) as f32;
                state.train_loss.push((state.step, last_loss));
                (interval_sum, interval_n) = (0.0, 0);
                let tokens_per_s = ((state.step - start_step) * tokens_per_step) as f64 / t0.elapsed().as_secs_f64();
                let val = last_val.map_or(String::new(), |(l, _)| format!(" val {l:.4}"));
                bar.set_message(format!("loss {last_loss:.4}{val} {tokens_per_s:.0} tok/s"));
            }
            let done = state.step == cfg.steps;
            if !self.val_windows.is_empty() && ((cfg.val_every > 0 && state.step % cfg.val_every == 0) || done) {
                let (l, s) = validate(&model.valid(), &self.data.val, &self.val_windows, context, cfg.batch, &self.device);
                tracing::info!("step {}: train loss {last_loss:.4}, val loss {l:.4}, val skill {s:.4}", state.step);
                state.val.push((state.step, l, s));
                last_val = Some((l, s));
            }
            if (cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0) || done {
                if !weights_finite(&model) {
                    return Err(self.diverged(step, f32::NAN, last_checkpoint));
                }
                self.dir.save_checkpoint::<B, B, _>(&model, optim.to_record(), &state)?;
                last_checkpoint = Some(state.step);
            }
            bar.set_position(state.step as u64);
        }
        bar.finish_and_clear();

        let finished = state.step >= cfg.steps;
        let summary = TrainSummary {
            steps: state.step,
            finished,
            resumed_from,
            train_loss: last_loss,
            val_loss: last_val.map(|v| v.0),
            val_skill: last_val.map(|v| v.1),
            tokens_per_s: ((state.step - start_step) * tokens_per_step) as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            seconds: state.seconds,
            parameters: model.num_params(),
            train_cells: self.data.split.train.len(),
            val_cells: self.data.split.val.len(),
            test_cells: self.data.split.test.len(),
        };
        if finished {
            self.dir.save_weights(&model.valid())?;
            write_json(&self.dir.summary(), &summary)?;
        }
        Ok(summary)
    }

    /// The error for a loss or weights that stopped being finite; the last checkpoint is kept.
    fn diverged(&self, step: usize, value: f32, last_checkpoint: Option<usize>) -> Error {
        let kept = match last_checkpoint {
            None => "no checkpoint was written yet".to_owned(),
            Some(s) => format!("the last good checkpoint (step {s}) in {} is kept", self.dir.root.display()),
        };
        Error::Other(format!(
            "training diverged at step {}: the loss is {value}; {kept}. Lower lr (now {}) or grad_clip, or check the data",
            step + 1,
            self.run.train.lr
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rate_warms_up_then_decays_to_the_floor() {
        let cfg = TrainConfig { steps: 1000, warmup: 100, lr: 1e-3, min_lr_fraction: 0.1, ..TrainConfig::default() };
        assert!((learning_rate(&cfg, 0) - 1e-5).abs() < 1e-12, "first step at lr/warmup");
        assert!((learning_rate(&cfg, 99) - 1e-3).abs() < 1e-12, "peak at the end of warm-up");
        assert!((learning_rate(&cfg, 550) - 0.55e-3).abs() < 1e-9, "half-way down the cosine");
        assert!((learning_rate(&cfg, 999) - 1e-4).abs() < 1e-7, "ends at the floor");
        let lrs: Vec<f64> = (100..1000).map(|s| learning_rate(&cfg, s)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]), "monotone decay after warm-up");
    }

    #[test]
    fn pushforward_moves_the_voltage_input_by_the_models_own_errors() {
        type B = crate::model::backend::CpuTrain;
        let device = Default::default();
        let cfg = ModelConfig { layers: 1, d_model: 16, heads: 2, d_mlp: 32, context: 12, ..ModelConfig::default() };
        let model = Lblm::<B>::new(&cfg, 3, &device).valid();
        let (batch, len, width, channel, gain) = (3, 12, cfg.channels.len(), 0, 0.25f32);
        let noise = |i: usize, k: u64| ((i as u64 * 2654435761 + k) % 1000) as f32 / 500.0 - 1.0;
        let xs: Vec<f32> = (0..batch * len * width).map(|i| noise(i, 1)).collect();
        let ys: Vec<f32> = (0..batch * len).map(|i| noise(i, 2)).collect();
        let x = Tensor::<B, 3>::from_data(TensorData::new(xs.clone(), [batch, len, width]), &device);
        let y = Tensor::<B, 2>::from_data(TensorData::new(ys.clone(), [batch, len]), &device);
        let predicted: Vec<f32> = model.forward(x.clone().inner()).into_data().into_vec().unwrap();
        let x2: Vec<f32> = pushforward(&model, x, &y, channel, &[gain, 0.0, gain]).into_data().into_vec().unwrap();
        let v = |x: &[f32], w: usize, t: usize| x[(w * len + t) * width + channel];
        for w in 0..batch {
            // Only the voltage channel of a chosen window moves.
            let other = |x: &[f32]| (0..len * width).filter(|i| i % width != channel).map(|i| x[w * len * width + i]).collect::<Vec<_>>();
            assert_eq!(other(&x2), other(&xs));
            let mut drift = 0f32;
            for t in 0..len {
                let moved = if w == 1 { 0.0 } else { gain * drift };
                assert!((v(&x2, w, t) - v(&xs, w, t) - moved).abs() < 1e-5, "window {w} step {t}");
                drift += predicted[w * len + t] - ys[w * len + t];
            }
            assert!(w == 1 || drift.abs() > 1e-3, "the test needs the model to err");
        }
    }

    #[test]
    fn soc_dropout_blanks_both_soc_channels_of_the_chosen_windows_only() {
        type B = burn::backend::Flex;
        let (batch, len, width) = (3, 5, 4);
        let xs: Vec<f32> = (0..batch * len * width).map(|i| i as f32).collect();
        let x = Tensor::<B, 3>::from_data(TensorData::new(xs.clone(), [batch, len, width]), &Default::default());
        let blanked: Vec<f32> = blank_soc(x, [(1, -0.5), (3, -2.0)], &[false, true, false]).into_data().into_vec().unwrap();
        for (i, (&before, &after)) in xs.iter().zip(&blanked).enumerate() {
            let (window, channel) = (i / (len * width), i % width);
            let expected = match (window, channel) {
                (1, 1) => -0.5,
                (1, 3) => -2.0,
                _ => before,
            };
            assert_eq!(after, expected, "window {window} channel {channel}");
        }
        // Half the windows of a large batch, and another draw than pushforward's.
        let soc = chosen_windows(4000, 0.5, 7, 3, SOC_DROPOUT_STREAM);
        let share = soc.iter().filter(|&&c| c).count() as f64 / 4000.0;
        assert!((share - 0.5).abs() < 0.03, "share {share}");
        assert_ne!(soc, chosen_windows(4000, 0.5, 7, 3, PUSHFORWARD_STREAM));
    }

    #[test]
    fn drift_gains_spread_each_chosen_windows_multiplier_over_the_range() {
        let cfg = TrainConfig { pushforward: 0.5, pushforward_drift: 3.0, pushforward_drift_spread: 2.0, seed: 7, ..TrainConfig::default() };
        let gains = drift_gains(&cfg, 4000, 3, 0.5);
        let chosen = chosen_windows(4000, 0.5, 7, 3, PUSHFORWARD_STREAM);
        assert!(gains.iter().zip(&chosen).all(|(&g, &c)| (g != 0.0) == c), "drift only on the pushforward windows");
        let multipliers: Vec<f32> = gains.iter().filter(|&&g| g != 0.0).map(|g| g / 0.5).collect();
        assert!(multipliers.iter().all(|m| (1.0..=5.0).contains(m)), "within 3 ± 2");
        // Uniform over [1, 5]: a quarter of them in each unit, mean 3.
        let below_2 = multipliers.iter().filter(|&&m| m < 2.0).count() as f64 / multipliers.len() as f64;
        let mean = multipliers.iter().sum::<f32>() / multipliers.len() as f32;
        assert!((below_2 - 0.25).abs() < 0.03 && (mean - 3.0).abs() < 0.06, "share below 2: {below_2}, mean {mean}");
        assert_eq!(gains, drift_gains(&cfg, 4000, 3, 0.5), "the same seed and step draw the same");
        assert_ne!(gains, drift_gains(&cfg, 4000, 4, 0.5), "each step draws anew");
        // Without spread every chosen window reads the drift × 3 exactly.
        let fixed = drift_gains(&TrainConfig { pushforward_drift_spread: 0.0, ..cfg }, 4000, 3, 0.5);
        assert!(fixed.iter().zip(&chosen).all(|(&g, &c)| g == if c { 1.5 } else { 0.0 }));
    }

    #[test]
    fn a_drift_spread_beyond_the_drift_is_refused() {
        let err = TrainConfig { pushforward_drift_spread: 3.5, ..TrainConfig::default() }.validate().unwrap_err().to_string();
        assert!(err.contains("pushforward_drift_spread 3.5") && err.contains("pushforward_drift = 3"), "{err}");
        assert!(TrainConfig { pushforward_drift_spread: 3.0, ..TrainConfig::default() }.validate().is_ok(), "multipliers down to 0");
    }

    #[test]
    fn huber_is_quadratic_inside_delta_and_linear_beyond() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let pred = Tensor::<B, 2>::from_floats([[0.5, 3.0]], &device);
        let zero = Tensor::<B, 2>::zeros([1, 2], &device);
        let value = loss(pred, zero, Loss::Huber { delta: 1.0 }).into_scalar().elem::<f32>();
        // (½·0.25 + 1·(3 − ½)) / 2
        assert!((value - (0.125 + 2.5) / 2.0).abs() < 1e-6, "{value}");
    }
}
