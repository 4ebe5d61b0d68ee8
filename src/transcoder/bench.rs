//! The yardstick run against `shared/bench/clt_reference.py`: the same synthetic problem, written
//! as an activation cache that both trainers read, and the same metrics.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::cache::{write_cache, CacheSource};
use super::config::TranscoderConfig;
use super::metrics::{evaluate, Metrics};
use super::train::train;
use crate::{Error, Result};

/// The reference's `--synthetic` recipe: 4·F true features, about 16 active per token with
/// uniform(0, 1) magnitudes, x = codes·D_x + 0.01·noise, y = relu(codes − 0.3)·D_y, with
/// D_x, D_y ~ N(0, 1/d) per layer. Same distribution, not the same draws (torch's generator).
pub fn synthetic_cache(path: &Path, tokens: usize, layers: usize, d: usize, features: usize, seed: u64) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let nf = 4 * features;
    let p = 16.0 / nf as f32;
    let scale = 1.0 / (d as f32).sqrt();
    let dx: Vec<f32> = (0..layers * nf * d).map(|_| scale * rng.sample::<f32, _>(StandardNormal)).collect(); // [L, nf, d]
    let dy: Vec<f32> = (0..layers * nf * d).map(|_| scale * rng.sample::<f32, _>(StandardNormal)).collect();
    let w = layers * d;
    let mut x = vec![0.0f32; tokens * w];
    let mut y = vec![0.0f32; tokens * w];
    for t in 0..tokens {
        for f in 0..nf {
            if rng.random::<f32>() >= p {
                continue;
            }
            let c = rng.random::<f32>();
            for l in 0..layers {
                let row = (l * nf + f) * d;
                let (xo, yo) = (t * w + l * d, t * w + l * d);
                super::dense::axpy(c, &dx[row..row + d], &mut x[xo..xo + d]);
                if c > 0.3 {
                    super::dense::axpy(c - 0.3, &dy[row..row + d], &mut y[yo..yo + d]);
                }
            }
        }
        for v in &mut x[t * w..(t + 1) * w] {
            *v += 0.01 * rng.sample::<f32, _>(StandardNormal);
        }
    }
    write_cache(path, &x, &y, [tokens, layers, d])
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
