//! Training and inference throughput of an LBLM shape, in tokens (window steps) per second, on
//! random inputs: what `voltlens bench` reports for the model.

use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::backend::{run_on, run_on_cpu, BackendTask, CpuBackend};
use super::config::{DeviceChoice, ModelConfig};
use super::inputs::N_CHANNELS;
use super::transformer::Lblm;
use crate::Result;
use crate::transcoder::sparse::SparseOps;

#[derive(Debug, Clone, Serialize)]
pub struct ModelBench {
    /// The burn backend measured: `flex`, `ndarray`, `candle` (CPU) or `cuda`.
    pub backend: String,
    pub parameters: usize,
    pub batch: usize,
    pub context: usize,
    /// Forward + backward + AdamW step.
    pub train_tokens_per_s: f64,
    /// Forward only, no autodiff.
    pub infer_tokens_per_s: f64,
}

/// Times `steps` training steps and `steps` inference passes of `batch` full windows (after one
/// untimed warm-up of each) on `device`; on the CPU, with the burn backend `backend` (anything but
/// Flex needs its cargo feature).
pub fn bench(model: &ModelConfig, batch: usize, steps: usize, device: DeviceChoice, backend: CpuBackend) -> Result<ModelBench> {
    model.validate()?;
    let task = BenchTask { model, batch: batch.max(1), steps: steps.max(1) };
    let mut figures = match (device, backend) {
        (DeviceChoice::Cpu, _) => run_on_cpu(backend, task)?,
        (_, CpuBackend::Flex) => run_on(device, task)?,
        (_, _) => {
            return Err(crate::Error::Config(format!("--backend {backend} is a CPU backend; use it with --device cpu")))
        }
    };
    figures.backend = match device {
        DeviceChoice::Cpu => backend.name().to_owned(),
        gpu => gpu.to_string(),
    };
    Ok(figures)
}

struct BenchTask<'a> {
    model: &'a ModelConfig,
    batch: usize,
    steps: usize,
}

impl BackendTask for BenchTask<'_> {
    type Output = ModelBench;
    fn describe(&self) -> String {
        let m = self.model;
        format!("the model benchmark ({} layers, d_model {}, context {}, batch {})", m.layers, m.d_model, m.context, self.batch)
    }
    fn run<B: AutodiffBackend + SparseOps>(self, device: B::Device) -> Result<ModelBench> {
        let (batch, context) = (self.batch, self.model.context);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut random = |shape: Vec<usize>| -> TensorData {
            let n = shape.iter().product();
            TensorData::new((0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>(), shape)
        };
        let x_data = random(vec![batch, context, N_CHANNELS]);
        let y_data = random(vec![batch, context]);
        let tokens = (batch * context * self.steps) as f64;

        let mut model = Lblm::<B>::new(self.model, 0, &device);
        let mut optim = AdamWConfig::new().init::<B, Lblm<B>>();
        let mut train_step = |model: Lblm<B>| -> Lblm<B> {
            let x = Tensor::<B, 3>::from_data(x_data.clone(), &device);
            let y = Tensor::<B, 2>::from_data(y_data.clone(), &device);
            let loss = (model.forward(x) - y).square().mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            optim.step(1e-4, model, grads)
        };
        model = train_step(model);
        let t0 = Instant::now();
        for _ in 0..self.steps {
            model = train_step(model);
        }
        sync(&model.valid());
        let train_tokens_per_s = tokens / t0.elapsed().as_secs_f64();

        let inner = model.valid();
        let infer = || {
            let x = Tensor::<B::InnerBackend, 3>::from_data(x_data.clone(), &device);
            inner.forward(x).sum().into_scalar().elem::<f32>()
        };
        infer();
        let t0 = Instant::now();
        for _ in 0..self.steps {
            infer();
        }
        let infer_tokens_per_s = tokens / t0.elapsed().as_secs_f64();
        Ok(ModelBench { backend: String::new(), parameters: inner.num_params(), batch, context, train_tokens_per_s, infer_tokens_per_s })
    }
}

/// Waits for queued work (GPU backends run asynchronously).
fn sync<B: Backend>(model: &Lblm<B>) {
    let _ = model.head.weight.val().sum().into_scalar().elem::<f32>();
}

/// Forward-only throughput and peak memory of one LBLM shape on one window (batch 1), on the
/// CPU or a GPU: the LBLM-scale table of `voltlens bench model --forward`.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardBench {
    pub layers: usize,
    pub d_model: usize,
    pub context: usize,
    pub parameters: usize,
    /// Window steps per second over the timed passes.
    pub tokens_per_s: f64,
    /// Seconds per full-context forward pass.
    pub seconds_per_pass: f64,
    /// Peak resident memory while building the model and running it, MB (the process's peak
    /// where the kernel cannot reset it).
    pub peak_rss_mb: f64,
}

/// The shape of an LBLM-scale model: heads of 64 dimensions (at least 2), MLP 4·d_model.
pub fn scale_config(layers: usize, d_model: usize, context: usize) -> ModelConfig {
    ModelConfig { layers, d_model, heads: (d_model / 64).max(2), d_mlp: 4 * d_model, context, ..ModelConfig::default() }
}

/// Times `passes` forward passes of one full window after two untimed ones, on `device`. On the
/// CPU attention runs in Flex's tiled kernel beyond 512 steps, so no [T, T] score matrix per head
/// is held.
pub fn bench_forward(cfg: &ModelConfig, passes: usize, device: DeviceChoice) -> Result<ForwardBench> {
    cfg.validate()?;
    // Linux resets the peak (VmHWM) on writing 5 to clear_refs; elsewhere the process peak is kept.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    run_on(device, ForwardTask { cfg, passes: passes.max(1) })
}

struct ForwardTask<'a> {
    cfg: &'a ModelConfig,
    passes: usize,
}

impl BackendTask for ForwardTask<'_> {
    type Output = ForwardBench;
    fn describe(&self) -> String {
        let m = self.cfg;
        format!("the forward benchmark ({} layers, d_model {}, context {}); lower the context or d_model", m.layers, m.d_model, m.context)
    }
    fn run<A: AutodiffBackend>(self, device: A::Device) -> Result<ForwardBench> {
        type B<A> = <A as AutodiffBackend>::InnerBackend;
        let cfg = self.cfg;
        let model = Lblm::<B<A>>::new(cfg, 0, &device);
        let c = cfg.channels.len();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut window = |len: usize| {
            let x: Vec<f32> = (0..len * c).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            Tensor::<B<A>, 3>::from_data(TensorData::new(x, [1, len, c]), &device)
        };
        // Untimed: a short window, then a full one (a GPU compiles its kernels per shape).
        let _ = model.forward(window(cfg.context.min(64))).sum().into_scalar().elem::<f32>();
        let _ = model.forward(window(cfg.context)).sum().into_scalar().elem::<f32>();
        let t0 = Instant::now();
        for _ in 0..self.passes {
            let _ = model.forward(window(cfg.context)).sum().into_scalar().elem::<f32>();
        }
        let seconds = t0.elapsed().as_secs_f64() / self.passes as f64;
        Ok(ForwardBench {
            layers: cfg.layers,
            d_model: cfg.d_model,
            context: cfg.context,
            parameters: model.num_params(),
            tokens_per_s: cfg.context as f64 / seconds,
            seconds_per_pass: seconds,
            peak_rss_mb: crate::bench::peak_rss_mb().unwrap_or(f64::NAN),
        })
    }
}
