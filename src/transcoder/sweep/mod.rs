//! Sweeps (DESIGN.md §3): many transcoders over a grid of variant, σ, features and λ, all trained
//! on one activation cache (written once, so every run reads the same tokens in the same order)
//! and judged on the same held-out data as the `transcoder` stage; then the Pareto table and
//! figures of FVU and fidelity against L0.
//!
//! ```text
//! out_dir/
//!   cache/            00000.safetensors, … and cache.json (written last: the cache is complete)
//!   runs/<id>/        checkpoint, circuit-tracer/ and metrics.json (written last: the run is done)
//!   pareto.json, pareto.csv (+ .parquet)
//!   pareto_fvu.png, pareto_fidelity.png, pareto_curves.png
//! ```
//!
//! A rerun skips every run whose metrics.json is there and redraws the table and figures.

pub mod grid;
pub mod pareto;
mod plot;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

pub use grid::{Grid, RunPoint, SweepConfig};
pub use pareto::{format_table, pareto_front, SweepRow};
pub use plot::FIGURES;

use super::cache::{write_cache_shards, CacheSource};
use super::config::TranscoderConfig;
use super::export::export_circuit_tracer;
use super::metrics::Metrics;
use super::online::{Cells, FidelityReport, ModelActivations};
use super::stage::Judge;
use super::train::{train_with, CurvePoint};
use crate::data::canonical::Dataset;
use crate::io::{read_json, write_json};
use crate::model::backend::{run_on, BackendTask};
use crate::model::checkpoint::{load_model, LoadedModel};
use crate::{Error, Result};
use crate::transcoder::sparse::SparseOps;

/// Tokens per cache shard: what the cache writer and reader hold in memory at once.
const SHARD_TOKENS: usize = 1 << 16;
const METRICS_FILE: &str = "metrics.json";
/// The training-token cache inside a sweep folder.
pub const CACHE_DIR: &str = "cache";
const CACHE_META: &str = "cache.json";

/// Everything one run measured (`runs/<id>/metrics.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunMetrics {
    pub id: String,
    pub config: TranscoderConfig,
    pub heldout: Metrics,
    pub fidelity: Option<FidelityReport>,
    /// Wall time of training (of its last resume, if it was killed and resumed).
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub train_seconds: f64,
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub train_tokens_per_s: f64,
    /// The training path in (L0, FVU).
    pub curve: Vec<CurvePoint>,
    /// The step where training diverged and stopped (its metrics are NaN, written as null).
    #[serde(default)]
    pub diverged_at: Option<u64>,
}

/// What the cache was made from; a cache that does not match is refused rather than reused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CacheMeta {
    tokens: usize,
    seed: u64,
    shuffle_buffer: usize,
    dataset: PathBuf,
    model: PathBuf,
}

/// What a sweep did.
#[derive(Debug, Clone)]
pub struct SweepSummary {
    pub rows: Vec<SweepRow>,
    /// Runs trained now, and runs found finished.
    pub trained: usize,
    pub skipped: usize,
    /// The PNGs written, inside the sweep folder.
    pub figures: Vec<String>,
}

impl SweepSummary {
    /// The few numbers a pipeline manifest keeps, and where the rest is.
    pub fn to_json(&self, out_dir: &Path) -> serde_json::Value {
        let front: Vec<&str> = self.rows.iter().filter(|r| r.front_fvu).map(|r| r.id.as_str()).collect();
        serde_json::json!({
            "runs": self.rows.len(),
            "trained": self.trained,
            "skipped": self.skipped,
            "front_fvu": front,
            "pareto": out_dir.join("pareto.json"),
            "figures": self.figures.iter().map(|f| out_dir.join(f)).collect::<Vec<_>>(),
        })
    }
}

/// Runs the sweep `cfg` of the model in `model_dir` on the dataset at `dataset_dir` into
/// `out_dir`; `seed` drives the activation streams (the same as the `transcoder` stage's).
pub fn run_sweep(dataset_dir: &Path, model_dir: &Path, cfg: &SweepConfig, seed: u64, out_dir: &Path) -> Result<SweepSummary> {
    let runs = cfg.runs()?;
    let runs_dir = out_dir.join("runs");
    let mut pending = Vec::new();
    for run in &runs {
        if finished(&runs_dir.join(&run.id), run)?.is_none() {
            pending.push(run.clone());
        }
    }
    tracing::info!("sweep: {} runs, {} to train", runs.len(), pending.len());
    if !pending.is_empty() {
        run_on(cfg.device, SweepTask { dataset_dir, model_dir, cfg, runs: &pending, seed, out_dir })?;
    }
    let finished: Vec<RunMetrics> = runs
        .iter()
        .map(|run| finished(&runs_dir.join(&run.id), run)?.ok_or_else(|| Error::Other(format!("sweep: run {} left no metrics", run.id))))
        .collect::<Result<_>>()?;
    let mut rows: Vec<SweepRow> = finished.iter().map(SweepRow::of).collect();
    pareto::mark_fronts(&mut rows);
    pareto::write_tables(&rows, out_dir)?;
    let curves: Vec<&[CurvePoint]> = finished.iter().map(|r| r.curve.as_slice()).collect();
    let figures = plot::draw(&rows, &curves, out_dir)?;
    Ok(SweepSummary { rows, trained: pending.len(), skipped: runs.len() - pending.len(), figures })
}

/// The metrics of a finished run in `dir`, None if it has not finished; a run finished with other
/// settings is an error, as `train` refuses a checkpoint of another configuration.
fn finished(dir: &Path, run: &RunPoint) -> Result<Option<RunMetrics>> {
    let path = dir.join(METRICS_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let m: RunMetrics = read_json(&path)?;
    if m.config != run.config {
        return Err(Error::in_file(&path, "this run was trained with other settings; use a fresh sweep directory"));
    }
    Ok(Some(m))
}

struct SweepTask<'a> {
    dataset_dir: &'a Path,
    model_dir: &'a Path,
    cfg: &'a SweepConfig,
    runs: &'a [RunPoint],
    seed: u64,
    out_dir: &'a Path,
}

impl BackendTask for SweepTask<'_> {
    type Output = ();
    fn run<B: AutodiffBackend + SparseOps>(self, device: B::Device) -> Result<()> {
        train_runs::<B>(&self, device)
    }
    fn describe(&self) -> String {
        let widest = self.runs.iter().map(|r| &r.config).max_by_key(|c| c.features * c.batch);
        format!("a sweep of {} runs, the largest {}", self.runs.len(), widest.map_or_else(String::new, super::stage::describe_training))
    }
}

fn train_runs<B: AutodiffBackend + SparseOps>(task: &SweepTask, device: B::Device) -> Result<()> {
    let cfg = task.cfg;
    let dataset = Dataset::load(task.dataset_dir)?;
    let loaded = load_model::<B::InnerBackend>(task.model_dir, &device)?;
    let cache = task.out_dir.join(CACHE_DIR);
    ensure_cache(task, &dataset, &loaded, &cache, device.clone())?;
    let judge = Judge::new(&dataset, task.dataset_dir, &loaded, cfg.eval_tokens, &cfg.base, task.seed, device.clone())?;
    for (i, run) in task.runs.iter().enumerate() {
        tracing::info!("sweep: training {} ({}/{})", run.id, i + 1, task.runs.len());
        let dir = task.out_dir.join("runs").join(&run.id);
        // The same seed for every run: the same tokens in the same order.
        let mut source = CacheSource::open(&cache, run.config.shuffle_buffer, task.seed)?;
        let t0 = Instant::now();
        let trainer = run.config.trainer_on(cfg.device);
        let report = train_with::<B>(&run.config, trainer, &mut source, &dir, device.clone())?;
        let train_seconds = t0.elapsed().as_secs_f64();
        export_circuit_tracer(&report.transcoder, &dir.join("circuit-tracer"))?;
        let (heldout, fidelity) = judge.judge::<B>(&report.transcoder)?;
        let metrics = RunMetrics {
            id: run.id.clone(),
            config: run.config.clone(),
            heldout,
            fidelity,
            train_seconds,
            train_tokens_per_s: report.tokens_per_s,
            curve: report.curve,
            diverged_at: report.diverged_at,
        };
        write_json(&dir.join(METRICS_FILE), &metrics)?;
    }
    Ok(())
}

/// Writes the training-token cache unless a complete one for the same settings is there.
fn ensure_cache<B: Backend>(task: &SweepTask, dataset: &Dataset, loaded: &LoadedModel<B>, cache: &Path, device: B::Device) -> Result<()> {
    let want = CacheMeta {
        tokens: task.cfg.tokens,
        seed: task.seed,
        shuffle_buffer: task.cfg.base.shuffle_buffer,
        dataset: task.dataset_dir.to_path_buf(),
        model: task.model_dir.to_path_buf(),
    };
    let meta_path = cache.join(CACHE_META);
    if meta_path.exists() {
        let have: CacheMeta = read_json(&meta_path)?;
        if have == want {
            return Ok(());
        }
        return Err(Error::in_file(
            &meta_path,
            format!("the activation cache was made with other settings ({have:?}); use a fresh sweep directory"),
        ));
    }
    if cache.exists() {
        // A cache killed while being written: start it again.
        std::fs::remove_dir_all(cache).map_err(|e| Error::io(cache, e))?;
    }
    tracing::info!("sweep: caching {} training tokens", want.tokens);
    let buffer = want.shuffle_buffer.min(want.tokens);
    let mut source = ModelActivations::open(dataset, task.dataset_dir, loaded, Cells::Train, buffer, task.seed, device)?;
    write_cache_shards(&mut source, cache, want.tokens, SHARD_TOKENS)?;
    write_json(&meta_path, &want)
}
