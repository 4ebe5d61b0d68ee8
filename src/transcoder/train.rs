//! The training loop: initialise from the first batch, then step through the source with Adam and
//! either trainer (the hand-written sparse gradient, or burn autodiff on any device), with a
//! progress bar and resumable checkpoints that either trainer can resume.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use burn::tensor::backend::AutodiffBackend;

use super::adam::Adam;
use super::autodiff::{DeviceTrainer, Terms};
use super::cache::{ActivationSource, Batch};
use super::clt::Transcoder;
use super::config::{Activation, Trainer, TranscoderConfig};
use super::grad::{self, AuxK, LossTerms, StepStats};
use super::{dense, tensors};
use crate::model::backend::CpuTrain;
use crate::model::DeviceChoice;
use crate::{Error, Result};
use super::sparse::SparseOps;

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The trained transcoder, input scaling folded in: it reads raw resid_mid.
    pub transcoder: Transcoder,
    pub steps: u64,
    /// Tokens/s over the steps of this run (after initialisation and any resume).
    pub tokens_per_s: f64,
    /// Last step's FVU per layer and L0 per encoder.
    pub fvu: Vec<f32>,
    pub l0: Vec<f32>,
    /// Share of features that have not fired for `dead_tokens` tokens (or never, if fewer seen).
    pub dead_fraction: f32,
    /// The checkpoint folder.
    pub checkpoint: PathBuf,
    /// The step at which the loss stopped being finite; training stopped there and the state
    /// was not checkpointed.
    pub diverged_at: Option<u64>,
    /// The run's path in (L0, FVU) over training, about `CURVE_POINTS` points.
    pub curve: Vec<CurvePoint>,
}

/// Mean training-batch FVU and L0 over the steps since the previous point (averaged, because one
/// batch is noisy); what a sweep draws as the run's training path.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Steps done when the point was taken.
    pub step: u64,
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub l0: f32,
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub fvu: f32,
}

/// Points of the training curve per run.
const CURVE_POINTS: u64 = 50;

/// Everything that moves during training; a checkpoint holds exactly this.
struct State {
    model: Transcoder,
    adam: Adam,
    /// Per layer: resid_mid is multiplied by this while training (folded into W_enc at the end).
    input_scale: Vec<f32>,
    /// Var(y_m) summed over d, the FVU's denominator, [L].
    target_var: Vec<f32>,
    /// Tokens since each feature last fired, [E, F].
    since_fired: Vec<f32>,
    curve: Vec<CurvePoint>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    step: u64,
    layers: usize,
    d_model: usize,
    config: TranscoderConfig,
    /// Absent in checkpoints written before curves were recorded.
    #[serde(default)]
    curve: Vec<CurvePoint>,
}

/// The checkpoint folder in a training directory: the state and its description, committed
/// together by one folder rename, so a kill never pairs one step's weights with another's step.
pub const CHECKPOINT_DIR: &str = "checkpoint";
const CHECKPOINT_STATE: &str = "state.safetensors";
const CHECKPOINT_META: &str = "meta.json";

/// Where the live parameters are between steps.
enum Engine<B: AutodiffBackend + SparseOps> {
    /// The hand-written trainer: `State`'s model and Adam are the live copies; this is the
    /// gradient buffer.
    Sparse(Transcoder),
    /// burn autodiff: the live copies are on the device, copied into `State` by `sync`.
    Autodiff(DeviceTrainer<B>),
}

impl<B: AutodiffBackend + SparseOps> Engine<B> {
    fn sync(&self, state: &mut State) {
        if let Engine::Autodiff(dev) = self {
            dev.sync(&mut state.model, &mut state.adam);
        }
    }
}

/// Train a transcoder on the CPU with the trainer the configuration asks for (by default the
/// hand-written one); see `train_with`.
pub fn train(cfg: &TranscoderConfig, source: &mut dyn ActivationSource, out_dir: &Path) -> Result<TrainReport> {
    train_with::<CpuTrain>(cfg, cfg.trainer_on(DeviceChoice::Cpu), source, out_dir, Default::default())
}

/// Train a transcoder on `source` with `trainer` (autodiff runs on backend `B` at `device`),
/// writing checkpoints to `out_dir`; resumes from a checkpoint already there when its
/// configuration matches, whichever trainer wrote it.
pub fn train_with<B: AutodiffBackend + SparseOps>(
    cfg: &TranscoderConfig,
    trainer: Trainer,
    source: &mut dyn ActivationSource,
    out_dir: &Path,
    device: B::Device,
) -> Result<TrainReport> {
    // Validated with the trainer that will run (preact_coef needs autodiff).
    TranscoderConfig { trainer: Some(trainer), ..cfg.clone() }.validate()?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let (layers, d) = source.dims();
    let (mut state, start) = match load_checkpoint(cfg, out_dir, layers, d)? {
        Some((state, step)) => {
            // The first batch went into initialisation; then one batch per step.
            source.skip_batches(step + 1, cfg.batch)?;
            (state, step)
        }
        None => (init(cfg, &source.next_batch(cfg.batch)?.for_variant(cfg.variant), layers, d), 0),
    };
    let pb = crate::progress::bar(cfg.steps, "transcoder", "steps");
    pb.set_position(start);
    let mut engine: Engine<B> = match trainer {
        Trainer::Sparse => Engine::Sparse(state.model.clone()),
        Trainer::Autodiff => Engine::Autodiff(DeviceTrainer::new(&state.model, &state.adam, &state.target_var, device)),
    };
    let mut last: Option<StepStats> = None;
    let curve_every = cfg.steps.div_ceil(CURVE_POINTS).max(1);
    let mut since_point = (0u64, 0.0f32, 0.0f32);
    let mut diverged_at = None;
    let t0 = Instant::now();
    for step in start..cfg.steps {
        let mut batch = source.next_batch(cfg.batch)?.for_variant(cfg.variant);
        scale_input(&mut batch.resid_mid, &state.input_scale, d);
        let stats = train_step(cfg, &mut state, &mut engine, &batch, step);
        if stats.fvu.iter().any(|f| !f.is_finite()) {
            tracing::warn!("transcoder training diverged at step {step} (FVU {:?}); stopped there", stats.fvu);
            diverged_at = Some(step);
            last = Some(stats);
            break;
        }
        if step % 10 == 0 || step + 1 == cfg.steps {
            let tps = ((step - start + 1) * cfg.batch as u64) as f64 / t0.elapsed().as_secs_f64();
            pb.set_message(format!(
                "FVU {:.3} L0 {:.1} dead {:.1}% {:.0} tok/s",
                mean(&stats.fvu),
                mean(&stats.l0),
                100.0 * dead_fraction(&state.since_fired, cfg),
                tps
            ));
        }
        pb.inc(1);
        since_point = (since_point.0 + 1, since_point.1 + mean(&stats.l0), since_point.2 + mean(&stats.fvu));
        if (step + 1) % curve_every == 0 || step + 1 == cfg.steps {
            let (n, l0, fvu) = since_point;
            state.curve.push(CurvePoint { step: step + 1, l0: l0 / n as f32, fvu: fvu / n as f32 });
            since_point = (0, 0.0, 0.0);
        }
        last = Some(stats);
        if cfg.checkpoint_every > 0 && (step + 1) % cfg.checkpoint_every == 0 && step + 1 < cfg.steps {
            engine.sync(&mut state);
            save_checkpoint(cfg, &state, step + 1, out_dir)?;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    engine.sync(&mut state);
    if diverged_at.is_none() {
        save_checkpoint(cfg, &state, cfg.steps, out_dir)?;
    }
    let mut transcoder = state.model.clone();
    transcoder.fold_input_scale(&state.input_scale);
    let (fvu, l0) = last.map(|s| (s.fvu, s.l0)).unwrap_or_default();
    Ok(TrainReport {
        transcoder,
        steps: cfg.steps,
        tokens_per_s: (cfg.steps - start) as f64 * cfg.batch as f64 / seconds.max(1e-9),
        fvu,
        l0,
        dead_fraction: dead_fraction(&state.since_fired, cfg),
        checkpoint: out_dir.join(CHECKPOINT_DIR),
        diverged_at,
        curve: state.curve,
    })
}

/// One optimiser step on a batch whose resid_mid is already scaled.
fn train_step<B: AutodiffBackend + SparseOps>(cfg: &TranscoderConfig, state: &mut State, engine: &mut Engine<B>, batch: &Batch, step: u64) -> StepStats {
    let dead = dead_features(cfg, state);
    let stats = match engine {
        Engine::Sparse(grad) => {
            let norms = state.model.decoder_norms();
            let aux = dead.as_ref().map(|dead| AuxK { dead, k: cfg.aux_k, coef: cfg.aux_coef });
            let terms = LossTerms { var: &state.target_var, lambda: cfg.lambda_at(step), sparsity: cfg.sparsity, norms: &norms, aux };
            let stats = grad::loss_and_grad(&state.model, &batch.resid_mid, &batch.mlp_out, &terms, grad);
            state.adam.update(&mut state.model, grad);
            stats
        }
        Engine::Autodiff(dev) => {
            let width = state.model.shape.layers * state.model.shape.d_model;
            let terms = Terms {
                var: dev.target_var.clone(),
                lambda: cfg.lambda_at(step),
                sparsity: cfg.sparsity,
                preact_coef: cfg.preact_coef,
                aux: dead.as_ref().map(|dead| (dev.dead_mask(dead), cfg.aux_k, cfg.aux_coef)),
                decoding: cfg.decoding,
            };
            let out = dev.step(dev.upload(&batch.resid_mid, width), dev.upload(&batch.mlp_out, width), &terms);
            out.to_host(&state.target_var, batch.tokens, state.model.shape.encoders())
        }
    };
    for (s, &n) in state.since_fired.iter_mut().zip(&stats.fired) {
        // Capped so that the count stays exact in f32 (2^24) and in checkpoints.
        *s = if n > 0 { 0.0 } else { (*s + batch.tokens as f32).min(16_777_216.0) };
    }
    stats
}

/// Per encoder, the features AuxK may revive; None when AuxK is off or nothing is dead.
fn dead_features(cfg: &TranscoderConfig, state: &State) -> Option<Vec<Vec<u32>>> {
    if cfg.aux_k == 0 || cfg.activation.penalised() {
        return None;
    }
    let limit = (cfg.dead_tokens as f32).min(16_777_216.0);
    let f_n = state.model.shape.features;
    let dead: Vec<Vec<u32>> = state.since_fired.chunks(f_n).map(|e| (0..f_n as u32).filter(|&f| e[f as usize] >= limit).collect()).collect();
    dead.iter().any(|d| !d.is_empty()).then_some(dead)
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len().max(1) as f32
}

fn dead_fraction(since_fired: &[f32], cfg: &TranscoderConfig) -> f32 {
    let limit = (cfg.dead_tokens as f32).min(16_777_216.0);
    since_fired.iter().filter(|&&s| s >= limit).count() as f32 / since_fired.len() as f32
}

/// x [n, L, d] *= scale[l].
fn scale_input(x: &mut [f32], scale: &[f32], d: usize) {
    // Layer by layer: a division per element kept this loop scalar.
    for (i, layer) in x.chunks_mut(d).enumerate() {
        let s = scale[i % scale.len()];
        layer.iter_mut().for_each(|v| *v *= s);
    }
}

/// Initialise from the first batch (DESIGN.md §3): resid_mid scaled to norm √d per layer, b_dec =
/// the mean mlp_out, W_enc ~ N(0, 1/d_in), small decoders, and b_enc set so that each feature
/// fires on about `target_firing_rate` of the batch.
fn init(cfg: &TranscoderConfig, batch: &Batch, layers: usize, d: usize) -> State {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut model = Transcoder::zeros(cfg, layers, d);
    let s = model.shape;
    let n = batch.tokens as f32;
    let input_scale: Vec<f32> = (0..layers)
        .map(|l| {
            let mean_norm = batch.resid_mid.chunks(d).skip(l).step_by(layers).map(|r| dense::dot(r, r).sqrt()).sum::<f32>() / n;
            if mean_norm > 0.0 { (d as f32).sqrt() / mean_norm } else { 1.0 }
        })
        .collect();
    let (mean_y, target_var) = moments(&batch.mlp_out, layers, d);
    model.b_dec = mean_y;
    let enc_std = 1.0 / (s.d_in() as f32).sqrt();
    model.w_enc.iter_mut().for_each(|w| *w = enc_std * rng.sample::<f32, _>(StandardNormal));
    // Small decoders, as the reference: N(0, (0.1/√(F·L))²).
    let dec_std = 0.1 / ((s.features * layers) as f32).sqrt();
    for w in &mut model.w_dec {
        w.iter_mut().for_each(|v| *v = dec_std * rng.sample::<f32, _>(StandardNormal));
    }
    set_encoder_bias(cfg, &mut model, batch, &input_scale);
    let adam = Adam::new(&model, cfg.lr);
    let since_fired = vec![0.0; s.encoders() * s.features];
    State { model, adam, input_scale, target_var, since_fired, curve: Vec::new() }
}

/// Mean [L, d] and total variance per layer [L] of y [n, L, d].
fn moments(y: &[f32], layers: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
    let per_dim: Vec<(f64, f64)> =
        (0..layers * d).map(|i| crate::stats::mean_var(y.iter().skip(i).step_by(layers * d).map(|&v| v as f64))).collect();
    let mean = per_dim.iter().map(|m| m.0 as f32).collect();
    let var = per_dim.chunks(d).map(|layer| layer.iter().map(|m| m.1).sum::<f64>().max(1e-12) as f32).collect();
    (mean, var)
}

/// b_enc[f] = −(the (1 − rate) quantile of feature f's pre-activation on the first batch), shifted by
/// the JumpReLU threshold where there is one.
fn set_encoder_bias(cfg: &TranscoderConfig, model: &mut Transcoder, batch: &Batch, input_scale: &[f32]) {
    let s = model.shape;
    let mut x = batch.resid_mid.clone();
    scale_input(&mut x, input_scale, s.d_model);
    let per_token = s.layers * s.d_model;
    let f_n = s.features;
    let rank = ((1.0 - cfg.target_firing_rate.clamp(0.0, 1.0)) * (batch.tokens - 1) as f32) as usize;
    for e in 0..s.encoders() {
        let mut pre = Vec::new();
        let w = dense::Panels::pack(model.w_enc_of(e), f_n, s.d_in(), f_n, None);
        dense::product(&x, per_token, s.input_offset(e), batch.tokens, &w, 0, f_n, &mut pre);
        for f in 0..f_n {
            let mut col: Vec<f32> = pre.iter().skip(f).step_by(f_n).copied().collect();
            let (_, q, _) = col.select_nth_unstable_by(rank, f32::total_cmp);
            let shift = match cfg.activation {
                Activation::JumpRelu { threshold, .. } => threshold,
                _ => 0.0,
            };
            model.b_enc[e * f_n + f] = shift - *q;
        }
    }
}

fn save_checkpoint(cfg: &TranscoderConfig, state: &State, step: u64, dir: &Path) -> Result<()> {
    let mut named: Vec<tensors::Named> = Vec::new();
    for (prefix, t) in [("", &state.model), ("adam_m.", &state.adam.m), ("adam_v.", &state.adam.v)] {
        named.extend(t.tensors().into_iter().map(|(n, d)| (format!("{prefix}{n}"), vec![d.len()], d)));
    }
    named.push(("input_scale".into(), vec![state.input_scale.len()], &state.input_scale));
    named.push(("target_var".into(), vec![state.target_var.len()], &state.target_var));
    named.push(("since_fired".into(), vec![state.since_fired.len()], &state.since_fired));
    let build = crate::io::fresh_temp_dir(&dir.join(CHECKPOINT_DIR))?;
    tensors::write(&build.join(CHECKPOINT_STATE), &named, None)?;
    let meta = CheckpointMeta {
        step,
        layers: state.model.shape.layers,
        d_model: state.model.shape.d_model,
        config: cfg.clone(),
        curve: state.curve.clone(),
    };
    crate::io::write_json(&build.join(CHECKPOINT_META), &meta)?;
    crate::io::replace_dir(&build, &dir.join(CHECKPOINT_DIR))
}

/// The state and step of a checkpoint in `dir`, if there is one for this configuration (the step
/// count may differ, so that a finished run can be extended).
fn load_checkpoint(cfg: &TranscoderConfig, dir: &Path, layers: usize, d: usize) -> Result<Option<(State, u64)>> {
    let meta_path = dir.join(CHECKPOINT_DIR).join(CHECKPOINT_META);
    if !meta_path.exists() {
        return Ok(None);
    }
    let meta: CheckpointMeta = crate::io::read_json(&meta_path)?;
    let same = TranscoderConfig { steps: cfg.steps, checkpoint_every: cfg.checkpoint_every, trainer: cfg.trainer, decoding: cfg.decoding, ..meta.config.clone() };
    if same != *cfg || meta.layers != layers || meta.d_model != d {
        return Err(Error::in_file(&meta_path, "checkpoint was written for another configuration; use a fresh output directory"));
    }
    let path = dir.join(CHECKPOINT_DIR).join(CHECKPOINT_STATE);
    let mut map = tensors::read(&path)?;
    let mut model = Transcoder::zeros(cfg, layers, d);
    let mut adam = Adam::new(&model, cfg.lr);
    adam.step = meta.step;
    for (prefix, t) in [("", &mut model), ("adam_m.", &mut adam.m), ("adam_v.", &mut adam.v)] {
        let names: Vec<String> = t.tensors().into_iter().map(|(n, _)| n).collect();
        for (name, dst) in names.into_iter().zip(t.tensors_mut()) {
            let len = dst.len();
            *dst = tensors::take(&mut map, &path, &format!("{prefix}{name}"), &[len])?;
        }
    }
    let e_f = model.shape.encoders() * model.shape.features;
    let input_scale = tensors::take(&mut map, &path, "input_scale", &[layers])?;
    let target_var = tensors::take(&mut map, &path, "target_var", &[layers])?;
    let since_fired = tensors::take(&mut map, &path, "since_fired", &[e_f])?;
    let curve = meta.curve;
    Ok(Some((State { model, adam, input_scale, target_var, since_fired, curve }, meta.step)))
}
