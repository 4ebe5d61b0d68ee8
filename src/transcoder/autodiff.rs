//! The backend-generic trainer (issue 13): the loss of `grad`, differentiated by burn's autodiff,
//! so that it runs wherever burn does (Flex in tests, CUDA or wgpu with their features). On the
//! CPU the hand-written `grad` stays the default; this one is checked against it
//! (tests/transcoder.rs).
//!
//! The decoder forms no dense [batch, F] × [F, L·d] product while few features are active: each
//! token's active features are chosen outside the graph, their pre-activations gathered, and only
//! their decoder rows read, through `sparse::SparseOps` (burn's row gather and scatter on the CPU;
//! CubeCL kernels on a GPU, since burn-cubecl 0.21 differentiates a row gather with a kernel that
//! gives each decoder column one thread walking all batch·k indices in turn: on an H200 a TopK-32
//! step at 24 layers × 8,192 features did not finish 33 steps in 120 s that way). A step costs the
//! dense encoder plus O(batch · k · L · d). A ReLU or JumpReLU step takes as many slots per token
//! as its busiest token has active features, listed by `SparseOps::positive_indices` (not burn's
//! top-k, whose k is compiled into its GPU kernel: a new kernel nearly every step), and decodes
//! densely instead (z [batch, F] times each decoder, nothing gathered) when a row has F/16 or more
//! (early in training: the gathered rows would outweigh the decoder itself, ~0.6 TB for one batch
//! at 24 layers × 8,192 features). TopK and BatchTopK always gather.
//!
//! Parameters and Adam's moments stay on the device between steps, as flat tensors in
//! `Transcoder::tensors` order; `sync` copies them back for checkpoints, which are therefore the
//! same files whichever trainer wrote them (train on the GPU, resume or analyse on the CPU).

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, ElementConversion, IndexingUpdateOp, Int, Tensor, TensorData};
use rayon::prelude::*;

use super::activation::kth_largest;
use super::adam::{Adam, BETA1, BETA2, EPS, MIN_THRESHOLD};
use super::clt::{Shape, Transcoder};
use super::config::{Activation, Sparsity};
use super::grad::{l0_per_encoder, StepStats};
use super::sparse::{float_tensor, ones_column, Active, SparseOps};

/// A transcoder's tensors on a device, flat, in `Transcoder::tensors` order; None where the host
/// tensor is empty (the threshold of a non-JumpReLU transcoder).
#[derive(Clone)]
pub struct Params<B: Backend> {
    pub shape: Shape,
    pub activation: Activation,
    pub tensors: Vec<Option<Tensor<B, 1>>>,
}

impl<B: Backend> Params<B> {
    pub fn from_host(tc: &Transcoder, device: &B::Device) -> Self {
        let tensors = tc
            .tensors()
            .into_iter()
            .map(|(_, v)| (!v.is_empty()).then(|| Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)))
            .collect();
        Params { shape: tc.shape, activation: tc.activation, tensors }
    }

    /// Writes the tensors into `tc`, which has the same shapes.
    pub fn to_host(&self, tc: &mut Transcoder) {
        for (dst, src) in tc.tensors_mut().into_iter().zip(&self.tensors) {
            if let Some(t) = src {
                *dst = t.to_data().convert::<f32>().into_vec().expect("f32 parameters");
            }
        }
    }

    fn w_enc(&self) -> Tensor<B, 3> {
        let s = self.shape;
        self.get(0).reshape([s.encoders(), s.d_in(), s.features])
    }
    fn b_enc(&self) -> Tensor<B, 2> {
        self.get(1).reshape([self.shape.encoders(), self.shape.features])
    }
    /// W_dec[e] as [F, n_out(e)·d].
    fn w_dec(&self, e: usize) -> Tensor<B, 2> {
        self.get(2 + e).reshape([self.shape.features, self.shape.dec_row(e)])
    }
    fn b_dec(&self) -> Tensor<B, 1> {
        self.get(2 + self.shape.encoders())
    }
    fn threshold(&self) -> Option<Tensor<B, 2>> {
        let s = self.shape;
        self.tensors[3 + s.encoders()].clone().map(|t| t.reshape([s.encoders(), s.features]))
    }
    fn w_skip(&self) -> Option<Tensor<B, 3>> {
        let (l, d) = (self.shape.layers, self.shape.d_model);
        self.tensors.get(4 + self.shape.encoders()).cloned().flatten().map(|t| t.reshape([l, d, d]))
    }
    fn get(&self, i: usize) -> Tensor<B, 1> {
        self.tensors[i].clone().expect("parameter present")
    }
}

/// What the loss needs besides the parameters and the batch, on the device.
pub struct Terms<B: Backend> {
    /// Var(y_m) summed over d, [L].
    pub var: Tensor<B, 1>,
    pub lambda: f32,
    pub sparsity: Sparsity,
    /// Weight of the pre-activation loss (0: off).
    pub preact_coef: f32,
    /// AuxK: the dead features [E, F], k and the loss weight.
    pub aux: Option<(Tensor<B, 2, Bool>, usize, f32)>,
    /// How the step decodes.
    pub decoding: Decoding,
}

/// How a step decodes: gathering the active features' decoder rows, or one dense product per
/// decoder (module docs). `Auto`: dense for a ReLU or JumpReLU step whose busiest row is F/16
/// full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decoding {
    #[default]
    Auto,
    Gather,
    Dense,
}

impl Decoding {
    pub fn is_auto(&self) -> bool {
        *self == Decoding::Auto
    }
}

/// The batch's measurements, still on the device (read back by `DeviceStats::to_host`).
pub struct DeviceStats<B: Backend> {
    /// Σ over tokens and d of the squared error, per layer [L].
    sq: Tensor<B, 1>,
    sparsity_loss: Tensor<B, 1>,
    aux_loss: Tensor<B, 1>,
    /// Times each feature fired, [E, F].
    fired: Tensor<B, 2>,
}

impl<B: Backend> DeviceStats<B> {
    /// The same `StepStats` the hand-written trainer reports; `var` and `tokens` as in the loss.
    pub fn to_host(&self, var: &[f32], tokens: usize, encoders: usize) -> StepStats {
        let read = |t: &Tensor<B, 1>| t.to_data().convert::<f32>().into_vec::<f32>().expect("f32");
        let fired: Vec<u32> = read(&self.fired.clone().flatten(0, 1)).iter().map(|&c| c.round() as u32).collect();
        StepStats {
            fvu: read(&self.sq).iter().zip(var).map(|(s, v)| s / (tokens as f32 * v)).collect(),
            l0: l0_per_encoder(&fired, encoders, tokens),
            sparsity_loss: read(&self.sparsity_loss)[0],
            aux_loss: read(&self.aux_loss)[0],
            fired,
        }
    }
}

/// Which features each (encoder, token) uses: indices [E, n, K] and a 0/1 mask of the real ones
/// (rows with fewer than K are padded); no indices when every feature is kept in place (K = F,
/// the dense step).
pub(super) struct Chosen<B: Backend> {
    pub idx: Option<Tensor<B, 3, Int>>,
    pub keep: Tensor<B, 3, Bool>,
}

/// A ReLU or JumpReLU step decodes densely when its busiest row has at least F / DENSE_FROM
/// active features (module docs).
const DENSE_FROM: usize = 16;

/// Loss and gradients of one batch, x and y [n, L·d] (x already scaled), on backend `B`.
pub fn loss_and_grad<B: AutodiffBackend + SparseOps>(
    params: &Params<B::InnerBackend>,
    x: Tensor<B::InnerBackend, 2>,
    y: Tensor<B::InnerBackend, 2>,
    terms: &Terms<B::InnerBackend>,
) -> (Params<B::InnerBackend>, DeviceStats<B::InnerBackend>) {
    let p: Params<B> = Params {
        shape: params.shape,
        activation: params.activation,
        tensors: params.tensors.iter().map(|t| t.clone().map(|t| Tensor::from_inner(t).require_grad())).collect(),
    };
    let (s, n) = (p.shape, x.dims()[0]);
    let (e_n, f_n, l, d) = (s.encoders(), s.features, s.layers, s.d_model);
    let x: Tensor<B, 2> = Tensor::from_inner(x);
    let y: Tensor<B, 2> = Tensor::from_inner(y);
    let var: Tensor<B, 1> = Tensor::from_inner(terms.var.clone());
    let layer_scale = var.clone().mul_scalar((l * n) as f32); // the loss divides layer m by L·Var_m·n

    let pre = x.clone().reshape([n, e_n, s.d_in()]).swap_dims(0, 1).matmul(p.w_enc()) + p.b_enc().reshape([e_n, 1, f_n]);
    let device = pre.device();
    let decoding = terms.decoding;
    let chosen = choose::<B>(&pre.clone().inner(), p.threshold().map(|t| t.inner()), &p.activation, n, decoding, true);
    let z = activate(&p, &pre, &chosen);
    let (z, active) = match chosen.idx {
        Some(idx) if decoding == Decoding::Dense => (spread(z, idx, f_n), None),
        idx => (z, idx.map(|idx| chosen_by_encoder::<B>(idx, f_n))),
    };

    let mut y_hat = p.b_dec().reshape([1, l * d]) + decode(&p, &z, active.as_deref());
    if let Some(w) = p.w_skip() {
        y_hat = y_hat + x.clone().reshape([n, l, d]).swap_dims(0, 1).matmul(w).swap_dims(0, 1).reshape([n, l * d]);
    }
    let sq = layer_sq(y_hat.clone() - y.clone(), l, d);
    let mut loss = (sq.clone() / layer_scale.clone()).sum();

    let mut sparsity_loss = Tensor::<B, 1>::zeros([1], &device);
    if p.activation.penalised() && terms.lambda > 0.0 {
        sparsity_loss = penalty(&p, &z, active.as_deref(), terms.sparsity).mul_scalar(terms.lambda / n as f32);
        loss = loss + sparsity_loss.clone();
    }
    if terms.preact_coef > 0.0 {
        loss = loss + preact_penalty(&p, &pre).mul_scalar(terms.preact_coef / n as f32);
    }
    let mut aux_loss = Tensor::<B, 1>::zeros([1], &device);
    if let Some((dead, k, coef)) = &terms.aux {
        // The dead features' top k per token rebuild the main error, a constant (Gao et al. 2024).
        let candidates = pre.clone().inner().mask_fill(dead.clone().bool_not().reshape([e_n, 1, f_n]).expand([e_n, n, f_n]), f32::NEG_INFINITY);
        let (vals, idx) = top_k(candidates, (*k).min(f_n));
        let z_aux = pre.clone().gather(2, Tensor::from_inner(idx.clone())) * Tensor::from_inner(vals.greater_elem(0.0).float());
        let error = (y - y_hat).detach();
        let rebuilt = match decoding {
            Decoding::Dense => decode(&p, &spread(z_aux, idx, f_n), None),
            _ => decode(&p, &z_aux, Some(&chosen_by_encoder::<B>(idx, f_n))),
        };
        let aux_sq = layer_sq(rebuilt - error, l, d);
        aux_loss = (aux_sq / layer_scale).sum().mul_scalar(*coef);
        loss = loss + aux_loss.clone();
    }

    let grads = loss.backward();
    let grad = Params {
        tensors: p
            .tensors
            .iter()
            .zip(&params.tensors)
            .map(|(t, inner)| t.as_ref().map(|t| t.grad(&grads).unwrap_or_else(|| inner.clone().unwrap().zeros_like())))
            .collect(),
        ..params.clone()
    };
    let fired_entries = z.inner().greater_elem(0.0).float();
    let fired = match active {
        Some(active) => {
            let k = fired_entries.dims()[2];
            let fired_entries: Tensor<B, 3> = Tensor::from_inner(fired_entries);
            let counts = active.iter().enumerate().map(|(e, a)| {
                let entries = fired_entries.clone().slice([e..e + 1, 0..n, 0..k]).reshape([n, k]).into_primitive().tensor();
                float_tensor::<B, 2>(B::rows_scatter(entries, a, ones_column(a, &device))).reshape([1, f_n])
            });
            Tensor::cat(counts.collect(), 0).inner()
        }
        None => fired_entries.sum_dim(1).reshape([e_n, f_n]),
    };
    let stats = DeviceStats { sq: sq.inner(), sparsity_loss: sparsity_loss.inner(), aux_loss: aux_loss.inner(), fired };
    (grad, stats)
}

/// z [E, n, K] of the features `idx` chose, spread back over all F features: [E, n, F], for a
/// dense decoding.
fn spread<B: AutodiffBackend>(z: Tensor<B, 3>, idx: Tensor<B::InnerBackend, 3, Int>, f_n: usize) -> Tensor<B, 3> {
    let [e_n, n, _] = z.dims();
    Tensor::zeros([e_n, n, f_n], &z.device()).scatter(2, Tensor::from_inner(idx), z, IndexingUpdateOp::Add)
}

/// Σ over tokens and d of the squared difference [n, L·d], per layer [L].
fn layer_sq<B: Backend>(diff: Tensor<B, 2>, l: usize, d: usize) -> Tensor<B, 1> {
    let n = diff.dims()[0];
    diff.reshape([n, l, d]).square().sum_dim(2).sum_dim(0).reshape([l])
}

/// The active features of each (encoder, token) from the pre-activations [E, n, F], outside the
/// graph: the same selection as `activation::RowSelect` (and `batch_top_k`); `window` keeps
/// JumpReLU's entries within half a bandwidth below θ too, as training does.
pub(super) fn choose<B: AutodiffBackend + SparseOps>(
    pre: &Tensor<B::InnerBackend, 3>,
    threshold: Option<Tensor<B::InnerBackend, 2>>,
    act: &Activation,
    n: usize,
    decoding: Decoding,
    window: bool,
) -> Chosen<B::InnerBackend> {
    let [e_n, _, f_n] = pre.dims();
    // score > 0 exactly where the hand-written encoder keeps an entry.
    let score = match (act, threshold) {
        // Above θ, or (training) within half a bandwidth below it, kept at 0 for θ's gradient.
        (Activation::JumpRelu { bandwidth, .. }, Some(t)) => pre.clone() - t.reshape([e_n, 1, f_n]) + if window { 0.5 * bandwidth } else { 0.0 },
        _ => pre.clone(),
    };
    let k = match *act {
        Activation::TopK { k } => k,
        Activation::BatchTopK { k } => k * super::activation::BATCH_TOPK_CANDIDATES,
        Activation::Relu | Activation::JumpRelu { .. } => {
            if decoding == Decoding::Dense {
                return Chosen { idx: None, keep: score.greater_elem(0.0) };
            }
            // As many slots as the busiest row has active features (a sync, but one scalar).
            let busiest = score.clone().greater_elem(0.0).int().sum_dim(2).max().into_scalar().elem::<i64>() as usize;
            if decoding == Decoding::Auto && busiest * DENSE_FROM >= f_n {
                return Chosen { idx: None, keep: score.greater_elem(0.0) };
            }
            let idx = positive_indices::<B>(score.clone(), busiest.max(1));
            let keep = score.gather(2, idx.clone()).greater_elem(0.0);
            return Chosen { idx: Some(idx), keep };
        }
    }
    .clamp(1, f_n);
    let (vals, idx) = top_k(score, k);
    let mut keep = vals.clone().greater_elem(0.0);
    if let Activation::BatchTopK { k: per_token } = *act {
        // Each encoder keeps the batch's n·k largest candidates.
        let quota = n * per_token;
        if quota < n * k {
            // The quota-th largest per encoder, found on the host as the hand-written trainer
            // finds it: on a GPU burn's `topk` of n·k of the n·K candidates is a reduction that
            // keeps quota entries per row, and on Flex a full sort.
            let mut host = vals.clone().into_data().convert::<f32>().into_vec::<f32>().expect("f32 candidates");
            let cut: Vec<f32> = host.chunks_mut(n * k).map(|row| kth_largest(row, quota)).collect();
            let cut = Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(cut, [e_n]), &vals.device()).reshape([e_n, 1, 1]).expand([e_n, n, k]);
            keep = keep.bool_and(vals.greater_equal(cut));
        }
    }
    Chosen { idx: Some(idx), keep }
}

/// `SparseOps::positive_indices` of every row of score [E, n, F]: [E, n, k].
fn positive_indices<B: AutodiffBackend + SparseOps>(score: Tensor<B::InnerBackend, 3>, k: usize) -> Tensor<B::InnerBackend, 3, Int> {
    let [e_n, n, f_n] = score.dims();
    let score = Tensor::<B, 2>::from_inner(score.reshape([e_n * n, f_n])).into_primitive().tensor();
    Tensor::<B, 2, Int>::from_primitive(B::positive_indices(score, k)).inner().reshape([e_n, n, k])
}

/// The k largest entries along the last axis and their indices (ties to the lower feature, as
/// the hand-written trainer). burn-cubecl (CUDA, wgpu) has a reduce kernel for this (argtopk);
/// Flex has none in burn 0.21 and its `topk` sorts whole rows, so elsewhere each row is selected
/// on the host (Flex's tensors are host memory), in O(F). Asked for every entry (burn's argtopk
/// refuses k = F), it keeps them in place.
fn top_k<B: Backend>(t: Tensor<B, 3>, k: usize) -> (Tensor<B, 3>, Tensor<B, 3, Int>) {
    let [e_n, n, f_n] = t.dims();
    if k >= f_n {
        let idx = Tensor::arange(0..f_n as i64, &t.device()).reshape([1, 1, f_n]).expand([e_n, n, f_n]);
        return (t, idx);
    }
    if is_gpu::<B>() {
        let idx = t.clone().argtopk(k, 2);
        return (t.gather(2, idx.clone()), idx);
    }
    let host = t.to_data().convert::<f32>().into_vec::<f32>().expect("f32 scores");
    let chosen: Vec<(f32, i64)> = host
        .par_chunks(f_n)
        .flat_map_iter(|row| {
            let mut order: Vec<usize> = (0..f_n).collect();
            order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            order.truncate(k);
            order.sort_unstable();
            order.into_iter().map(|f| (row[f], f as i64))
        })
        .collect();
    let (vals, idx): (Vec<f32>, Vec<i64>) = chosen.into_iter().unzip();
    let device = t.device();
    (Tensor::from_data(TensorData::new(vals, [e_n, n, k]), &device), Tensor::from_data(TensorData::new(idx, [e_n, n, k]), &device))
}

/// Whether `B` is one of burn's GPU backends (CUDA or wgpu), which share burn-cubecl's kernels.
pub(crate) fn is_gpu<B: Backend>() -> bool {
    let b = std::any::TypeId::of::<B>();
    #[cfg(feature = "cuda")]
    if b == std::any::TypeId::of::<burn::backend::Cuda>() {
        return true;
    }
    #[cfg(feature = "wgpu")]
    if b == std::any::TypeId::of::<burn::backend::Wgpu>() {
        return true;
    }
    let _ = b;
    false
}

/// z [E, n, K] of the chosen entries, with σ's derivatives: ∂z/∂pre = 1 on kept entries, and for
/// JumpReLU z = pre·H(pre − θ) plus a term worth 0 whose θ-gradient is the rectangle-kernel
/// straight-through estimate −(θ/ε)·K((pre − θ)/ε) (as `activation::derivatives`).
fn activate<B: AutodiffBackend>(p: &Params<B>, pre: &Tensor<B, 3>, chosen: &Chosen<B::InnerBackend>) -> Tensor<B, 3> {
    let [e_n, n, k] = chosen.keep.dims();
    let select = |t: Tensor<B, 3>| match &chosen.idx {
        Some(idx) => t.gather(2, Tensor::from_inner(idx.clone())),
        None => t,
    };
    let pre_sel = select(pre.clone());
    let keep = chosen.keep.clone();
    match (p.activation, p.threshold()) {
        (Activation::JumpRelu { bandwidth, .. }, Some(theta)) => {
            let f_n = p.shape.features;
            let theta_sel = select(theta.reshape([e_n, 1, f_n]).expand([e_n, n, f_n]));
            let (pre_i, theta_i) = (pre_sel.clone().inner(), theta_sel.clone().inner());
            let active = pre_i.clone().greater(theta_i.clone()).bool_and(keep.clone());
            let window = (pre_i - theta_i.clone()).abs().lower_elem(0.5 * bandwidth).bool_and(keep);
            let ste = window.float() * theta_i.div_scalar(-bandwidth);
            pre_sel * Tensor::from_inner(active.float()) + (theta_sel.clone() - theta_sel.detach()) * Tensor::from_inner(ste)
        }
        _ => pre_sel * Tensor::from_inner(keep.float()),
    }
    .reshape([e_n, n, k])
}

/// Σ_e Σ_active z·W_dec[e][f], [n, L·d]: only the chosen rows of each decoder are read, through
/// `SparseOps::decode` (every row, in one product, when `idx` is None).
fn decode<B: AutodiffBackend + SparseOps>(p: &Params<B>, z: &Tensor<B, 3>, active: Option<&[Active<B>]>) -> Tensor<B, 2> {
    let s = p.shape;
    let [_, n, k] = z.dims();
    let width = s.layers * s.d_model;
    let device = z.device();
    let mut out: Option<Tensor<B, 2>> = None;
    for e in 0..s.encoders() {
        let row = s.dec_row(e);
        let z_e = z.clone().slice([e..e + 1, 0..n, 0..k]);
        let part = match active {
            Some(active) => float_tensor(B::decode(z_e.reshape([n, k]).into_primitive().tensor(), &active[e], p.w_dec(e).into_primitive().tensor())),
            None => z_e.reshape([n, k]).matmul(p.w_dec(e)),
        };
        // Pad to the full [L·d] around the layers this encoder writes.
        let first = s.out_layers(e).start * s.d_model;
        let mut pieces = Vec::new();
        if first > 0 {
            pieces.push(Tensor::zeros([n, first], &device));
        }
        pieces.push(part);
        if first + row < width {
            pieces.push(Tensor::zeros([n, width - first - row], &device));
        }
        let full = Tensor::cat(pieces, 1);
        out = Some(match out {
            Some(o) => o + full,
            None => full,
        });
    }
    out.expect("at least one encoder")
}

/// Each encoder's chosen features [E, n, K], as `SparseOps` takes them (one read back to the host
/// on a GPU, for the whole step).
fn chosen_by_encoder<B: AutodiffBackend + SparseOps>(idx: Tensor<B::InnerBackend, 3, Int>, features: usize) -> Vec<Active<B>> {
    B::active(Tensor::<B, 3, Int>::from_inner(idx).into_primitive(), features)
}

/// Σ over the chosen entries of s(z, ‖W_dec,f‖), [1].
fn penalty<B: AutodiffBackend + SparseOps>(p: &Params<B>, z: &Tensor<B, 3>, active: Option<&[Active<B>]>, sparsity: Sparsity) -> Tensor<B, 1> {
    let [_, n, k] = z.dims();
    let mut total = Tensor::<B, 1>::zeros([1], &z.device());
    for e in 0..p.shape.encoders() {
        let norms = match active {
            Some(active) => float_tensor(B::pick(decoder_norms(p, e).into_primitive().tensor(), &active[e])),
            None => decoder_norms(p, e).reshape([1, k]).expand([n, k]),
        };
        let z_e = z.clone().slice([e..e + 1, 0..n, 0..k]).reshape([n, k]);
        let s = match sparsity {
            Sparsity::L1 => z_e * norms,
            Sparsity::Tanh { c } => (z_e * norms).mul_scalar(c).tanh(),
        };
        total = total + s.sum();
    }
    total
}

/// ‖W_dec,f‖ of encoder e, [F].
fn decoder_norms<B: Backend>(p: &Params<B>, e: usize) -> Tensor<B, 1> {
    p.w_dec(e).square().sum_dim(1).sqrt().reshape([p.shape.features])
}

/// The pre-activation loss (Anthropic, "Circuits updates", January 2025): Σ_{e,f} relu(θ_f − pre_f)
/// ·‖W_dec,f‖ over every feature and token (θ = 0 without JumpReLU), which pulls features that
/// never fire back towards firing. Dense by nature, so only this trainer has it.
fn preact_penalty<B: AutodiffBackend>(p: &Params<B>, pre: &Tensor<B, 3>) -> Tensor<B, 1> {
    let s = p.shape;
    let (e_n, f_n) = (s.encoders(), s.features);
    let below = match p.threshold() {
        Some(theta) => theta.reshape([e_n, 1, f_n]) - pre.clone(),
        None => pre.clone().neg(),
    };
    let norms = Tensor::cat((0..e_n).map(|e| decoder_norms(p, e).reshape([1, 1, f_n])).collect(), 0);
    (burn::tensor::activation::relu(below) * norms).sum()
}

/// The trainer's device state: parameters and Adam's moments, with the same update as `adam::Adam`.
pub struct DeviceTrainer<B: AutodiffBackend + SparseOps> {
    pub params: Params<B::InnerBackend>,
    m: Params<B::InnerBackend>,
    v: Params<B::InnerBackend>,
    lr: f32,
    step: u64,
    /// Var(y_m) summed over d, [L]: the loss's fixed normaliser, uploaded once.
    pub target_var: Tensor<B::InnerBackend, 1>,
    device: B::Device,
}

impl<B: AutodiffBackend + SparseOps> DeviceTrainer<B> {
    pub fn new(model: &Transcoder, adam: &Adam, target_var: &[f32], device: B::Device) -> Self {
        DeviceTrainer {
            params: Params::from_host(model, &device),
            m: Params::from_host(&adam.m, &device),
            v: Params::from_host(&adam.v, &device),
            lr: adam.lr,
            step: adam.step,
            target_var: Tensor::from_data(TensorData::new(target_var.to_vec(), [target_var.len()]), &device),
            device,
        }
    }

    /// Moves a host vector onto the device as [rows, cols].
    pub fn upload(&self, v: &[f32], cols: usize) -> Tensor<B::InnerBackend, 2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len() / cols, cols]), &self.device)
    }

    /// The dead-feature mask [E, F] for AuxK.
    pub fn dead_mask(&self, dead: &[Vec<u32>]) -> Tensor<B::InnerBackend, 2, Bool> {
        let f_n = self.params.shape.features;
        let mut mask = vec![false; dead.len() * f_n];
        for (e, list) in dead.iter().enumerate() {
            list.iter().for_each(|&f| mask[e * f_n + f as usize] = true);
        }
        Tensor::from_data(TensorData::new(mask, [dead.len(), f_n]), &self.device)
    }

    /// One Adam step on x, y [n, L·d] (x already scaled).
    pub fn step(&mut self, x: Tensor<B::InnerBackend, 2>, y: Tensor<B::InnerBackend, 2>, terms: &Terms<B::InnerBackend>) -> DeviceStats<B::InnerBackend> {
        let (grad, stats) = loss_and_grad::<B>(&self.params, x, y, terms);
        self.step += 1;
        let t = self.step as i32;
        let lr_t = self.lr * (1.0 - BETA2.powi(t)).sqrt() / (1.0 - BETA1.powi(t));
        for i in 0..self.params.tensors.len() {
            let (Some(p), Some(m), Some(v), Some(g)) =
                (self.params.tensors[i].take(), self.m.tensors[i].take(), self.v.tensors[i].take(), grad.tensors[i].clone())
            else {
                continue;
            };
            let m = m.mul_scalar(BETA1) + g.clone().mul_scalar(1.0 - BETA1);
            let v = v.mul_scalar(BETA2) + g.square().mul_scalar(1.0 - BETA2);
            let p = p - m.clone().div(v.clone().sqrt().add_scalar(EPS)).mul_scalar(lr_t);
            self.params.tensors[i] = Some(p);
            self.m.tensors[i] = Some(m);
            self.v.tensors[i] = Some(v);
        }
        let th = 3 + self.params.shape.encoders();
        self.params.tensors[th] = self.params.tensors[th].take().map(|t| t.clamp_min(MIN_THRESHOLD));
        stats
    }

    /// Copies parameters and moments back into the host copies (for checkpoints and the result).
    pub fn sync(&self, model: &mut Transcoder, adam: &mut Adam) {
        self.params.to_host(model);
        self.m.to_host(&mut adam.m);
        self.v.to_host(&mut adam.v);
        adam.step = self.step;
    }
}
