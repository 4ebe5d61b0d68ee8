//! The `transcoder` stage (DESIGN.md §3): train a transcoder on activations generated online from
//! a trained model, evaluate it on the held-out cells, export it for circuit-tracer.
//!
//! ```text
//! out_dir/
//!   checkpoint/                               the trainer's (a rerun resumes from it)
//!   metrics.json                              StageMetrics
//!   circuit-tracer/                           export_circuit_tracer
//! ```

use std::path::Path;

use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

use super::cache::{ActivationSource, Batch, MemorySource};
use super::clt::Transcoder;
use super::device_encode::Encoder;
use super::config::{TranscoderConfig, Variant};
use super::export::export_circuit_tracer;
use super::metrics::{evaluate, Metrics};
use super::online::{fidelity, mean_mlp_out, Cells, FidelityReport, ModelActivations, ModelWindows};
use super::train::train_with;
use crate::data::canonical::Dataset;
use crate::io::write_json;
use crate::model::DeviceChoice;
use crate::model::backend::{run_on, BackendTask};
use crate::model::checkpoint::{load_model, LoadedModel};
use crate::{Error, Result};
use super::sparse::SparseOps;

/// The `[transcoder]` table of a pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscoderStageConfig {
    /// The transcoder and its training (`[transcoder.config]`).
    pub config: TranscoderConfig,
    /// Held-out tokens for FVU, L0 and dead/live features; also the most steps each fidelity run
    /// scores, and the training tokens the ablation mean is taken over.
    pub eval_tokens: usize,
    /// Where the model runs to make activations, and where the transcoder trains: on `cuda` the
    /// autodiff trainer runs there too (`cuda` or `wgpu`), on `cpu` the hand-written one (unless
    /// `config.trainer` says).
    pub device: DeviceChoice,
}

impl Default for TranscoderStageConfig {
    fn default() -> Self {
        TranscoderStageConfig { config: TranscoderConfig::default(), eval_tokens: 1 << 16, device: DeviceChoice::Cpu }
    }
}

/// What the stage measured (`metrics.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageMetrics {
    pub variant: Variant,
    pub features: usize,
    pub train_steps: u64,
    /// Training throughput of this run (after any resume).
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub train_tokens_per_s: f64,
    /// FVU, L0, dead and live features on the held-out (test) cells.
    pub heldout: Metrics,
    /// Replacement fidelity on the held-out cells; None for the MLSAE, which cannot replace an
    /// MLP during a forward pass.
    pub fidelity: Option<FidelityReport>,
}

/// Trains, evaluates and exports a transcoder of the model in `model_dir` on the dataset at
/// `dataset_dir` into `out_dir`; `seed` drives the activation streams. Returns a summary.
pub fn run_transcoder_stage(
    dataset_dir: &Path,
    model_dir: &Path,
    cfg: &TranscoderStageConfig,
    seed: u64,
    out_dir: &Path,
) -> Result<serde_json::Value> {
    cfg.config.validate()?;
    if cfg.eval_tokens == 0 {
        return Err(Error::Config("transcoder stage: eval_tokens must be positive".to_owned()));
    }
    let dataset = Dataset::load(dataset_dir)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let metrics = run_on(cfg.device, StageTask { dataset_dir, dataset: &dataset, model_dir, cfg, seed, out_dir })?;
    Ok(summary(&metrics, out_dir))
}

/// The few numbers a pipeline log or a sweep table wants, and where the rest is.
fn summary(m: &StageMetrics, out_dir: &Path) -> serde_json::Value {
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
    serde_json::json!({
        "out_dir": out_dir,
        "variant": m.variant,
        "features": m.features,
        "steps": m.train_steps,
        "fvu": mean(&m.heldout.fvu_per_layer),
        "l0": mean(&m.heldout.l0_per_layer),
        "dead_fraction": m.heldout.dead_fraction,
        "live_fraction": m.heldout.live_fraction,
        "fidelity": m.fidelity.as_ref().map(|f| f.fidelity.all_layers),
        "metrics": out_dir.join("metrics.json"),
        "circuit_tracer": out_dir.join("circuit-tracer"),
    })
}

struct StageTask<'a> {
    dataset_dir: &'a Path,
    dataset: &'a Dataset,
    model_dir: &'a Path,
    cfg: &'a TranscoderStageConfig,
    seed: u64,
    out_dir: &'a Path,
}

impl BackendTask for StageTask<'_> {
    type Output = StageMetrics;
    fn run<B: AutodiffBackend + SparseOps>(self, device: B::Device) -> Result<StageMetrics> {
        train_and_evaluate::<B>(&self, device)
    }
    fn describe(&self) -> String {
        describe_training(&self.cfg.config)
    }
}

fn train_and_evaluate<B: AutodiffBackend + SparseOps>(task: &StageTask, device: B::Device) -> Result<StageMetrics> {
    let (cfg, tc_cfg) = (task.cfg, &task.cfg.config);
    let loaded = load_model::<B::InnerBackend>(task.model_dir, &device)?;
    let mut train_source =
        ModelActivations::open(task.dataset, task.dataset_dir, &loaded, Cells::Train, tc_cfg.shuffle_buffer, task.seed, device.clone())?;
    let trainer = tc_cfg.trainer_on(cfg.device);
    let report = train_with::<B>(tc_cfg, trainer, &mut train_source, task.out_dir, device.clone())?;
    if let Some(step) = report.diverged_at {
        return Err(Error::Other(format!("transcoder training diverged (non-finite loss) at step {step}: lower lr or lambda")));
    }
    let tc = report.transcoder;
    export_circuit_tracer(&tc, &task.out_dir.join("circuit-tracer"))?;
    let judge = Judge::new(task.dataset, task.dataset_dir, &loaded, cfg.eval_tokens, tc_cfg, task.seed, device)?;
    let (heldout, fidelity) = judge.judge::<B>(&tc)?;
    let metrics = StageMetrics {
        variant: tc.shape.variant,
        features: tc.shape.features,
        train_steps: report.steps,
        train_tokens_per_s: report.tokens_per_s,
        heldout,
        fidelity,
    };
    write_json(&task.out_dir.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

/// A transcoder run's size for error messages, and what shrinks it.
pub(crate) fn describe_training(c: &TranscoderConfig) -> String {
    format!(
        "transcoder training ({:?}, {} features per encoder, batch {}, {:?}); lower `batch` or `features`, or use a TopK activation with a smaller k",
        c.variant, c.features, c.batch, c.activation
    )
}

/// What a transcoder is judged on, drawn once so that a sweep judges every run on the same data:
/// held-out tokens, the ablation mean, and the held-out windows replacement fidelity runs over.
pub(crate) struct Judge<'a, B: Backend> {
    loaded: &'a LoadedModel<B>,
    /// The first `eval_tokens` tokens of the test cells' stream.
    heldout: Batch,
    dims: (usize, usize),
    /// Mean mlp_out [L, d] over training tokens.
    mean: Vec<f32>,
    /// Windows tiling the test cells: every held-out step scored once.
    windows: ModelWindows,
    batch: usize,
    device: B::Device,
}

impl<'a, B: Backend> Judge<'a, B> {
    /// `seed` is the stage's: held-out tokens and the ablation mean come from streams of their
    /// own, so that they are the same whether training ran here, was resumed, or read a cache.
    pub(crate) fn new(
        dataset: &Dataset,
        dataset_dir: &Path,
        loaded: &'a LoadedModel<B>,
        eval_tokens: usize,
        tc_cfg: &TranscoderConfig,
        seed: u64,
        device: B::Device,
    ) -> Result<Self> {
        let open = |which, seed| {
            ModelActivations::open(dataset, dataset_dir, loaded, which, tc_cfg.shuffle_buffer, seed, device.clone())
        };
        let mut test = open(Cells::Test, seed.wrapping_add(1))?;
        let dims = test.dims();
        let heldout = test.next_batch(eval_tokens)?;
        let mean = mean_mlp_out(&mut open(Cells::Train, seed.wrapping_add(2))?, eval_tokens, tc_cfg.batch)?;
        let windows =
            ModelWindows::load(dataset, dataset_dir, loaded, Cells::Test, loaded.model.context)?.at_most(eval_tokens);
        Ok(Judge { loaded, heldout, dims, mean, windows, batch: tc_cfg.batch, device })
    }

    /// FVU, L0 and dead/live features on the held-out tokens, and replacement fidelity (None for
    /// the MLSAE, which cannot replace an MLP during a forward pass), its encoder on the model's
    /// device (`A`'s, whose inner backend the model runs on).
    pub(crate) fn judge<A: AutodiffBackend<InnerBackend = B> + SparseOps>(&self, tc: &Transcoder) -> Result<(Metrics, Option<FidelityReport>)> {
        let mut heldout = MemorySource::new(self.heldout.clone(), self.dims);
        let metrics = evaluate(tc, &mut heldout, self.heldout.tokens, self.batch)?;
        let encoder = Encoder::<A>::new(tc, &self.device);
        let fidelity = match tc.shape.variant {
            Variant::Mlsae => None,
            Variant::Clt | Variant::Plt | Variant::Sae => Some(fidelity(&self.loaded.model, tc, &encoder, &self.mean, &self.windows, &self.device)?),
        };
        Ok((metrics, fidelity))
    }
}
