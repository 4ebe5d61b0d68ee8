//! The yardstick run against `shared/bench/clt_reference.py` (the same synthetic problem, written
//! as an activation cache that both trainers read, and the same metrics), and `voltlens bench
//! transcoder`: either trainer's throughput and memory at a given shape, on the CPU or a GPU.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use burn::tensor::backend::AutodiffBackend;

use super::cache::{write_cache, Batch, CacheSource, MemorySource};
use super::config::{Trainer, TranscoderConfig};
use super::metrics::{evaluate, Metrics};
use super::train::{train, train_with};
use crate::model::backend::{run_on, BackendTask};
use crate::model::DeviceChoice;
use crate::{Error, Result};
use super::sparse::SparseOps;

/// The reference's `--synthetic` recipe: 4·F true features, about 16 active per token with
/// uniform(0, 1) magnitudes, x = codes·D_x + 0.01·noise, y = relu(codes − 0.3)·D_y, with
/// D_x, D_y ~ N(0, 1/d) per layer. Same distribution, not the same draws (torch's generator).
pub fn synthetic_cache(path: &Path, tokens: usize, layers: usize, d: usize, features: usize, seed: u64) -> Result<()> {
    let batch = synthetic_batch(tokens, layers, d, features, seed);
    write_cache(path, &batch.resid_mid, &batch.mlp_out, [tokens, layers, d])
}

/// `synthetic_cache`'s tokens, in memory.
pub fn synthetic_batch(tokens: usize, layers: usize, d: usize, features: usize, seed: u64) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let nf = 4 * features;
    let p = (16.0 / nf as f64).min(1.0);
    let scale = 1.0 / (d as f32).sqrt();
    let dx: Vec<f32> = (0..layers * nf * d).map(|_| scale * rng.sample::<f32, _>(StandardNormal)).collect(); // [L, nf, d]
    let dy: Vec<f32> = (0..layers * nf * d).map(|_| scale * rng.sample::<f32, _>(StandardNormal)).collect();
    let w = layers * d;
    let mut x = vec![0.0f32; tokens * w];
    let mut y = vec![0.0f32; tokens * w];
    for t in 0..tokens {
        // Each feature is active with probability p: jump from one active feature to the next by
        // geometric gaps instead of drawing for all 4·F (the same distribution, far fewer draws).
        let mut f = 0usize;
        loop {
            let gap = if p >= 1.0 { 0.0 } else { ((1.0 - rng.random::<f64>()).ln() / (1.0 - p).ln()).floor() };
            f += gap.min(nf as f64) as usize;
            if f >= nf {
                break;
            }
            let c = rng.random::<f32>();
            for l in 0..layers {
                let row = (l * nf + f) * d;
                let o = t * w + l * d;
                super::dense::axpy(c, &dx[row..row + d], &mut x[o..o + d]);
                if c > 0.3 {
                    super::dense::axpy(c - 0.3, &dy[row..row + d], &mut y[o..o + d]);
                }
            }
            f += 1;
        }
        for v in &mut x[t * w..(t + 1) * w] {
            *v += 0.01 * rng.sample::<f32, _>(StandardNormal);
        }
    }
    Batch { tokens, resid_mid: x, mlp_out: y }
}

/// One side of the comparison, printed as the reference prints its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    pub implementation: String,
    pub threads: usize,
    pub tokens_per_s: f64,
    pub metrics: Metrics,
}

/// Train on `cache` with `cfg` on `threads` cores and evaluate as the reference does (the first
/// min(tokens, 16384) tokens of the cache, in order).
pub fn bench_vs_reference(cache: &Path, cfg: &TranscoderConfig, threads: usize, work_dir: &Path) -> Result<BenchResult> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| Error::Other(e.to_string()))?;
    pool.install(|| {
        let out = work_dir.join("bench-transcoder");
        crate::io::fresh_owned_dir(&out)?; // a fresh run, never a resume
        let mut source = CacheSource::open(cache, cfg.shuffle_buffer, cfg.seed)?;
        let report = train(cfg, &mut source, &out)?;
        let mut eval = CacheSource::open(cache, 0, 0)?;
        let metrics = evaluate(&report.transcoder, &mut eval, 16_384, 4096)?;
        Ok(BenchResult { implementation: "voltlens-sparse".into(), threads, tokens_per_s: report.tokens_per_s, metrics })
    })
}

/// One row of `voltlens bench transcoder`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainerBench {
    pub trainer: Trainer,
    pub device: DeviceChoice,
    pub layers: usize,
    pub d_model: usize,
    pub features: usize,
    pub batch: usize,
    pub steps: u64,
    /// Training tokens/s over the timed steps (after initialisation).
    pub tokens_per_s: f64,
    /// Peak resident memory of the process during the run, MB (host memory; on a GPU the
    /// device's own memory is not in it).
    pub peak_rss_mb: Option<f64>,
    /// Training-batch FVU after the last step (a short run: a check that it trains, not a score).
    pub fvu: f32,
}

/// Trains `cfg` for `cfg.steps` timed steps (after a few untimed ones) with `trainer` on
/// `device`, on `pool` tokens of the synthetic recipe (cycled), and measures it.
pub fn bench_trainer(cfg: &TranscoderConfig, trainer: Trainer, device: DeviceChoice, layers: usize, d_model: usize, pool: usize, work_dir: &Path) -> Result<TrainerBench> {
    let data = synthetic_batch(pool, layers, d_model, cfg.features, cfg.seed);
    let (warm_up, out) = (work_dir.join("bench-warm-up"), work_dir.join("bench-transcoder"));
    for dir in [&warm_up, &out] {
        crate::io::fresh_owned_dir(dir)?; // fresh runs, never a resume
    }
    // Linux resets the peak (VmHWM) on writing 5 to clear_refs; elsewhere the process peak is kept.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let task = TrainerTask { cfg, trainer, source: MemorySource::new(data, (layers, d_model)), warm_up: &warm_up, out: &out };
    let (tokens_per_s, fvu) = run_on(device, task)?;
    Ok(TrainerBench {
        trainer,
        device,
        layers,
        d_model,
        features: cfg.features,
        batch: cfg.batch,
        steps: cfg.steps,
        tokens_per_s,
        peak_rss_mb: crate::bench::peak_rss_mb(),
        fvu,
    })
}

/// Untimed steps first, as the reference's `--warmup`: a GPU compiles and tunes its kernels on the
/// first steps of a shape.
const WARM_UP_STEPS: u64 = 3;

struct TrainerTask<'a> {
    cfg: &'a TranscoderConfig,
    trainer: Trainer,
    source: MemorySource,
    warm_up: &'a Path,
    out: &'a Path,
}

impl BackendTask for TrainerTask<'_> {
    type Output = (f64, f32);
    fn run<B: AutodiffBackend + SparseOps>(mut self, device: B::Device) -> Result<(f64, f32)> {
        let warm_up = TranscoderConfig { steps: WARM_UP_STEPS, ..self.cfg.clone() };
        train_with::<B>(&warm_up, self.trainer, &mut self.source, self.warm_up, device.clone())?;
        let report = train_with::<B>(self.cfg, self.trainer, &mut self.source, self.out, device)?;
        Ok((report.tokens_per_s, report.fvu.iter().sum::<f32>() / report.fvu.len().max(1) as f32))
    }
    fn describe(&self) -> String {
        super::stage::describe_training(self.cfg)
    }
}
