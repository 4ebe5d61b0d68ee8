//! The transcoders' side of the battery model (DESIGN.md §3): activations generated online from a
//! trained LBLM, a cache of them on disk, and replacement fidelity with the model's MLPs swapped
//! for their means or for a transcoder.
//!
//! Activations come from windows of the model's context over the cells of one part of its split,
//! run a pass at a time through `Lblm::forward_hooked` and mixed token by token in a seeded
//! shuffle buffer, so that a batch holds tokens of many windows, cells and positions.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::cache::{write_cache, ActivationSource, Batch};
use super::clt::Transcoder;
use super::metrics::{replacement_fidelity, Fidelity, Replacement};
use super::replacement::{LayerEncoder, ReplacementPass};
use crate::data::canonical::Dataset;
use crate::data::windows::{windows, Window};
use crate::model::checkpoint::{load_model, LoadedModel};
use crate::model::inputs::{self, dataset_steps, ModelSteps};
use crate::model::{Lblm, MlpReplacement};
use crate::{Error, Result};

/// Windows per forward pass of the model: large enough to keep the matmuls busy, small enough
/// that one pass's activations are a small part of the shuffle buffer.
const WINDOWS_PER_PASS: usize = 16;

/// Shuffle buffer of `cache_activations`: the cache is shuffled again when it is read.
const CACHE_SHUFFLE_TOKENS: usize = 1 << 16;

/// Which of the model's cells to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cells {
    /// The cells the model was trained on: what transcoders train on.
    Train,
    /// The held-out test cells: what transcoders are evaluated on.
    Test,
}

/// Steps per window over cells of `lengths` for a model of `context`: the context, unless it is
/// longer than the median cell (a model trained elsewhere on longer series, as the LBLM's 8,192
/// steps): then the median cell's length, so that half the cells or more give windows, each
/// token seeing the longest history those cells hold. Shorter cells give none.
pub fn window_len(context: usize, lengths: &[usize]) -> usize {
    let mut sorted = lengths.to_vec();
    sorted.sort_unstable();
    match sorted.get(sorted.len() / 2) {
        Some(&median) if median > 0 => context.min(median),
        _ => context,
    }
}

/// Cells as the model reads them, cut into windows of `len` steps.
pub struct ModelWindows {
    pub cells: Vec<ModelSteps>,
    pub windows: Vec<Window>,
    /// Steps per window: the model's context, or less on short cells ([`window_len`]).
    pub len: usize,
}

impl ModelWindows {
    /// The `which` cells of `loaded`'s split, normalised with its statistics, in windows of its
    /// context every `stride` steps.
    pub fn load<B: Backend>(
        dataset: &Dataset,
        dataset_dir: &Path,
        loaded: &LoadedModel<B>,
        which: Cells,
        stride: usize,
    ) -> Result<ModelWindows> {
        let ids = match which {
            Cells::Train => &loaded.split.train,
            Cells::Test => &loaded.split.test,
        };
        if ids.is_empty() {
            return Err(Error::Config(format!(
                "the model's split has no {which:?} cells (a model imported without --data has none): import it again with --data DIR to split that dataset's cells"
            )));
        }
        let cells: Vec<ModelSteps> = dataset_steps(dataset, dataset_dir, ids, &loaded.norm.channels)?.iter().map(|c| loaded.norm.apply(c)).collect();
        let lengths: Vec<usize> = cells.iter().map(ModelSteps::steps).collect();
        let len = window_len(loaded.model.context, &lengths);
        let windows = windows(&lengths, len, stride.clamp(1, len));
        if windows.is_empty() {
            return Err(Error::Config(format!(
                "no {which:?} cell of the model's split has the {len} steps of a window ({} cells)",
                cells.len()
            )));
        }
        Ok(ModelWindows { cells, windows, len })
    }

    /// Keeps at most `max_tokens` steps' worth of windows, evenly spread over the cells.
    pub fn at_most(mut self, max_tokens: usize) -> ModelWindows {
        let keep = (max_tokens / self.len).max(1);
        let n = self.windows.len();
        if keep < n {
            self.windows = (0..keep).map(|i| self.windows[i * n / keep]).collect();
        }
        self
    }

    pub fn tokens(&self) -> usize {
        self.windows.len() * self.len
    }

    /// Model inputs [batch, len, N_CHANNELS] and scaled-ΔV targets [batch, len] of `windows`.
    fn batch<B: Backend>(&self, windows: &[Window], device: &B::Device) -> (Tensor<B, 3>, Tensor<B, 2>) {
        inputs::batch::<B>(&self.cells, windows, self.len, device)
    }
}

/// resid_mid and mlp_out of a trained model, generated as they are read (an `ActivationSource`).
/// The same seed gives the same tokens.
pub struct ModelActivations<B: Backend> {
    model: Lblm<B>,
    data: ModelWindows,
    device: B::Device,
    rng: ChaCha8Rng,
    /// Window indices in this epoch's shuffled order, and the next one to run.
    order: Vec<usize>,
    cursor: usize,
    /// The last forward pass, [tokens, L, d] each, and its next token not yet handed on.
    pass: Batch,
    pos: usize,
    /// Tokens waiting to be drawn at random, [capacity, L, d] each; empty when reading in order.
    buffer: Batch,
    capacity: usize,
}

impl<B: Backend> ModelActivations<B> {
    /// A source over `data` through a shuffle buffer of `buffer_tokens` tokens (0: in order).
    pub fn new(model: Lblm<B>, data: ModelWindows, buffer_tokens: usize, seed: u64, device: B::Device) -> Self {
        let order = (0..data.windows.len()).collect();
        let mut source = ModelActivations {
            model,
            data,
            device,
            rng: ChaCha8Rng::seed_from_u64(seed),
            order,
            cursor: 0,
            pass: empty_batch(),
            pos: 0,
            buffer: empty_batch(),
            capacity: buffer_tokens,
        };
        source.restart(seed);
        source
    }

    /// The `which` cells of a loaded model, in the windows it was trained on.
    pub fn open(
        dataset: &Dataset,
        dataset_dir: &Path,
        loaded: &LoadedModel<B>,
        which: Cells,
        buffer_tokens: usize,
        seed: u64,
        device: B::Device,
    ) -> Result<Self> {
        let data = ModelWindows::load(dataset, dataset_dir, loaded, which, loaded.config.train.stride)?;
        Ok(Self::new(loaded.model.clone(), data, buffer_tokens, seed, device))
    }

    /// Starts the stream afresh from `seed`: a new window order, an empty pass, a full buffer.
    fn restart(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed);
        self.order.shuffle(&mut self.rng);
        self.cursor = 0;
        self.pass = empty_batch();
        self.pos = 0;
        self.buffer = empty_batch();
        // A buffer larger than the data would hold some tokens twice.
        for _ in 0..self.capacity.min(self.data.tokens()) {
            let t = self.stream_token();
            let w = self.token_width();
            self.buffer.resid_mid.extend_from_slice(&self.pass.resid_mid[t * w..(t + 1) * w]);
            self.buffer.mlp_out.extend_from_slice(&self.pass.mlp_out[t * w..(t + 1) * w]);
            self.buffer.tokens += 1;
        }
    }

    fn token_width(&self) -> usize {
        let (layers, d) = self.dims();
        layers * d
    }

    /// Index in `self.pass` of the stream's next token, running the model when the pass is spent.
    fn stream_token(&mut self) -> usize {
        if self.pos == self.pass.tokens {
            self.pass = self.run_pass();
            self.pos = 0;
        }
        self.pos += 1;
        self.pos - 1
    }

    /// The next WINDOWS_PER_PASS windows of the shuffled order through the model; a new epoch
    /// reshuffles.
    fn run_pass(&mut self) -> Batch {
        let mut picked = Vec::with_capacity(WINDOWS_PER_PASS);
        while picked.len() < WINDOWS_PER_PASS.min(self.order.len()) {
            if self.cursor == self.order.len() {
                self.order.shuffle(&mut self.rng);
                self.cursor = 0;
            }
            picked.push(self.data.windows[self.order[self.cursor]]);
            self.cursor += 1;
        }
        let (x, _) = self.data.batch::<B>(&picked, &self.device);
        let (_, acts) = self.model.forward_hooked(x);
        // L × [batch, seq, d] → [batch, seq, L, d]: token-major, as the transcoders read.
        let stack = |f: &dyn Fn(usize) -> Tensor<B, 3>| {
            to_vec(Tensor::<B, 3>::stack::<4>((0..acts.len()).map(f).collect(), 2))
        };
        Batch {
            tokens: picked.len() * self.data.len,
            resid_mid: stack(&|l| acts[l].resid_mid.clone()),
            mlp_out: stack(&|l| acts[l].mlp_out.clone()),
        }
    }
}

impl<B: Backend> ActivationSource for ModelActivations<B> {
    fn dims(&self) -> (usize, usize) {
        let d = self.model.d_model();
        (self.model.layers(), d)
    }

    fn next_batch(&mut self, tokens: usize) -> Result<Batch> {
        let w = self.token_width();
        let mut out = Batch { tokens, resid_mid: Vec::with_capacity(tokens * w), mlp_out: Vec::with_capacity(tokens * w) };
        for _ in 0..tokens {
            let t = self.stream_token();
            let r = t * w..(t + 1) * w;
            if self.buffer.tokens == 0 {
                out.resid_mid.extend_from_slice(&self.pass.resid_mid[r.clone()]);
                out.mlp_out.extend_from_slice(&self.pass.mlp_out[r]);
                continue;
            }
            // Emit a random buffered token and put the stream's next token in its place.
            let i = self.rng.random_range(0..self.buffer.tokens);
            let b = i * w..(i + 1) * w;
            out.resid_mid.extend_from_slice(&self.buffer.resid_mid[b.clone()]);
            out.mlp_out.extend_from_slice(&self.buffer.mlp_out[b.clone()]);
            self.buffer.resid_mid[b.clone()].copy_from_slice(&self.pass.resid_mid[r.clone()]);
            self.buffer.mlp_out[b].copy_from_slice(&self.pass.mlp_out[r]);
        }
        Ok(out)
    }
}

fn empty_batch() -> Batch {
    Batch { tokens: 0, resid_mid: Vec::new(), mlp_out: Vec::new() }
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().expect("f32 activations")
}

/// `voltlens cache-activations`: `tokens` shuffled tokens of the model in `model_dir` over its
/// training cells, written to `out_path` in the `write_cache` format (what `CacheSource` and the
/// PyTorch reference bench read). Runs on the CPU. Returns the cached shape [tokens, L, d].
pub fn cache_activations(dataset_dir: &Path, model_dir: &Path, out_path: &Path, tokens: usize, seed: u64) -> Result<[usize; 3]> {
    let device = Default::default();
    let loaded = load_model::<Flex>(model_dir, &device)?;
    let dataset = Dataset::load(dataset_dir)?;
    let buffer = CACHE_SHUFFLE_TOKENS.min(tokens);
    let mut source = ModelActivations::open(&dataset, dataset_dir, &loaded, Cells::Train, buffer, seed, device)?;
    let (layers, d) = source.dims();
    let batch = source.next_batch(tokens)?;
    if let Some(dir) = out_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let shape = [tokens, layers, d];
    write_cache(out_path, &batch.resid_mid, &batch.mlp_out, shape)?;
    Ok(shape)
}

/// Mean mlp_out per layer [L, d] over the next `tokens` tokens of `source`: what mean ablation
/// puts in place of every MLP.
pub fn mean_mlp_out(source: &mut dyn ActivationSource, tokens: usize, batch: usize) -> Result<Vec<f32>> {
    let (layers, d) = source.dims();
    let mut sum = vec![0.0f64; layers * d];
    let mut seen = 0;
    while seen < tokens {
        let b = source.next_batch(batch.min(tokens - seen))?;
        for row in b.mlp_out.chunks(layers * d) {
            sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
        }
        seen += b.tokens;
    }
    Ok(sum.iter().map(|s| (s / seen.max(1) as f64) as f32).collect())
}

/// Next-step MSE in the model's scaled-ΔV units (the units `eval-model` scores, before it
/// converts to mV) over every step of every window of `data`; `replacement` supplies MLP
/// outputs (None: the model as trained).
pub fn next_step_mse<B: Backend>(
    model: &Lblm<B>,
    data: &ModelWindows,
    replacement: Option<&dyn MlpReplacement<B>>,
    device: &B::Device,
) -> f32 {
    let mut sum = 0.0f64;
    for chunk in data.windows.chunks(WINDOWS_PER_PASS) {
        let (x, y) = data.batch::<B>(chunk, device);
        let pred = match replacement {
            Some(r) => model.forward_with_replacement(x, r).0,
            None => model.forward(x),
        };
        sum += to_vec(pred).iter().zip(to_vec(y)).map(|(p, t)| ((p - t) as f64).powi(2)).sum::<f64>();
    }
    (sum / data.tokens().max(1) as f64) as f32
}

/// Every MLP output replaced by its mean over training tokens.
pub struct MeanMlps<B: Backend> {
    /// [L, d]
    mean: Tensor<B, 2>,
}

impl<B: Backend> MeanMlps<B> {
    /// `mean`: mean mlp_out [L, d] (from `mean_mlp_out`).
    pub fn new(mean: &[f32], layers: usize, d: usize, device: &B::Device) -> Self {
        MeanMlps { mean: Tensor::from_data(TensorData::new(mean.to_vec(), [layers, d]), device) }
    }
}

impl<B: Backend> MlpReplacement<B> for MeanMlps<B> {
    fn mlp_out(&self, layer: usize, resid_mid: Tensor<B, 3>) -> Tensor<B, 3> {
        let d = self.mean.dims()[1];
        // [1, 1, d] broadcast over [batch, seq, d]
        resid_mid.zeros_like() + self.mean.clone().narrow(0, layer, 1).reshape([1, 1, d])
    }
}

/// MLPs replaced by a causal transcoder (CLT or PLT) whose features read the replacement run's
/// own resid_mid (a `ReplacementPass`), all layers or one.
pub struct TranscoderMlps<'a, B: Backend> {
    /// The model, whose own MLPs run below the one replaced layer.
    model: &'a Lblm<B>,
    /// The one layer replaced, or None for every layer.
    only: Option<usize>,
    pass: RefCell<ReplacementPass<'a>>,
    reads_mlp_out: bool,
}

impl<'a, B: Backend> TranscoderMlps<'a, B> {
    pub fn new(model: &'a Lblm<B>, transcoder: &'a Transcoder, encoder: &'a dyn LayerEncoder, only: Option<usize>) -> Result<Self> {
        let pass = RefCell::new(ReplacementPass::new(transcoder, encoder)?);
        Ok(TranscoderMlps { model, only, pass, reads_mlp_out: transcoder.shape.variant.reads_mlp_out() })
    }
}

impl<B: Backend> MlpReplacement<B> for TranscoderMlps<'_, B> {
    /// With one layer m replaced, the layers below it run their own MLP here (rather than in the
    /// model) so that the pass sees their resid_mid for the CLT's codes. An SAE rebuilds the
    /// MLP's own output, so the MLP runs first.
    fn replaces(&self, layer: usize) -> bool {
        self.only.is_none_or(|m| layer <= m)
    }

    fn mlp_out(&self, layer: usize, resid_mid: Tensor<B, 3>) -> Tensor<B, 3> {
        let block = &self.model.blocks[layer];
        let own_mlp = || block.mlp.forward(block.ln_mlp.forward(resid_mid.clone()));
        let input = if self.reads_mlp_out { own_mlp() } else { resid_mid.clone() };
        let mut pass = self.pass.borrow_mut();
        pass.input(layer, to_vec(input));
        if self.only.is_some_and(|m| layer < m) {
            return own_mlp();
        }
        let y = pass.mlp_out(layer, |_, _| {});
        Tensor::from_data(TensorData::new(y, resid_mid.dims()), &resid_mid.device())
    }
}

/// Replacement fidelity and the next-step MSE of every run behind it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FidelityReport {
    #[serde(flatten)]
    pub fidelity: Fidelity,
    /// Next-step MSE (scaled ΔV) per run: original, mean_ablated, all_replaced, layer_{l}.
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub mse: BTreeMap<String, f32>,
}

/// Replacement fidelity of `transcoder` (encoded by `encoder`) in `model` over the windows of
/// `data` (DESIGN.md §3): `mean` is the mean mlp_out [L, d] over training tokens.
pub fn fidelity<B: Backend>(
    model: &Lblm<B>,
    transcoder: &Transcoder,
    encoder: &dyn LayerEncoder,
    mean: &[f32],
    data: &ModelWindows,
    device: &B::Device,
) -> Result<FidelityReport> {
    let s = transcoder.shape;
    let ablation = MeanMlps::<B>::new(mean, s.layers, s.d_model, device);
    let mut mse = BTreeMap::new();
    // A pass per layer and three more over every held-out window: minutes on a deep model.
    let bar = crate::progress::bar(s.layers as u64 + 3, "fidelity", "passes");
    let fidelity = replacement_fidelity(s.layers, |mode| {
        let (name, value) = match mode {
            Replacement::Original => ("original".to_owned(), next_step_mse(model, data, None, device)),
            Replacement::MeanAblated => ("mean_ablated".to_owned(), next_step_mse(model, data, Some(&ablation), device)),
            Replacement::AllReplaced => {
                let r = TranscoderMlps::new(model, transcoder, encoder, None)?;
                ("all_replaced".to_owned(), next_step_mse(model, data, Some(&r), device))
            }
            Replacement::LayerReplaced(l) => {
                let r = TranscoderMlps::new(model, transcoder, encoder, Some(l))?;
                (format!("layer_{l}"), next_step_mse(model, data, Some(&r), device))
            }
        };
        mse.insert(name, value);
        bar.inc(1);
        Ok(value)
    })?;
    bar.finish_and_clear();
    Ok(FidelityReport { fidelity, mse })
}
