//! Input-dependent attribution through the frozen replacement model (DESIGN.md §7).
//!
//! The replacement model runs one window with every MLP replaced by the transcoder plus an error
//! term (mlp_out − reconstruction) added as a constant, so that it reproduces the real model
//! exactly. Freezing the attention patterns A and the norm scales σ (LayerNorm or RMSNorm) at their values in that
//! pass makes it affine in its nodes: the active features' activations z, the error vectors, and
//! the input channels. Any read — a feature's pre-activation, or the output — is then the sum of
//! one contribution per node plus a constant (biases, LN offsets, learned positions), and the
//! contributions are the edge weights of the attribution graph.
//!
//! How contributions are computed: between a write into the residual stream (slot b = before
//! attention b: the embedding at b = 0, a write into mlp_out_{b−1} at b ≥ 1) and a read, the
//! frozen stream applies, per block, the identity or one attention head h, each a position mix
//! Ã_h[t, s] = A_h[t, s] / σ_s times a fixed d×d map M_h = C·diag(γ)·W_v,h·W_o,h (C centres for LayerNorm, is the identity for RMSNorm), and
//! the transcoder's skip path (I + W_skip). Expanding the product over blocks gives one term per
//! path of head choices, and each term factors into a *position* coefficient c[s] (a product of
//! patterns, fixed by the read's step) times a *direction* q (a product of d×d maps applied to the
//! read vector, fixed by the read's feature). So
//!
//!   contribution(write v at step s) = Σ_paths c_path[s] · (v · q_path),
//!
//! where v · q_path for every active feature is a "virtual weight" computed once per target
//! feature, and c_path once per target step ([`Backward::Paths`]). With (1 + H) choices per block
//! the number of paths grows as (1 + H)^L: 25 for two blocks of four heads, 5^24 for the LBLM
//! study's 24 (the expansion ran a 24-layer graph out of memory). Past [`MAX_PATHS`] each target
//! is carried back instead by one sweep down the blocks ([`Backward::Sweep`]): the gradient of
//! its read with respect to a write at every step and slot, g ← g + Σ_h Ã_hᵀ·(g·M_hᵀ) per block
//! (and g ← g·(I + W_skip)ᵀ per transcoder), linear in depth but not shared between targets.

use std::fmt::Write;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use super::check_feature;
use crate::model::transformer::{Block, Norm, Rotary};
use crate::model::Lblm;
use crate::transcoder::{Transcoder, Variant};
use crate::{Error, Result};

/// One feature that fires at one step of the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActiveFeature {
    pub layer: usize,
    pub pos: usize,
    pub feature: usize,
    pub activation: f32,
}

/// A node of the attribution graph, by what it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeKind {
    Feature { layer: usize, pos: usize, feature: usize },
    /// mlp_out − reconstruction of `layer` at `pos`.
    Error { layer: usize, pos: usize },
    /// Input channel `channel` (index into the model's channel list) at `pos`.
    Input { pos: usize, channel: usize },
    /// The model's output (scaled ΔV) at `pos`.
    Output { pos: usize },
}

/// What a row of attributions explains: a feature's pre-activation or the output, at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Feature { layer: usize, pos: usize, feature: usize },
    Output { pos: usize },
}

impl Target {
    /// Slot of the first block boundary above the read: a feature of layer m reads resid_mid_m
    /// (after attention m), the output reads resid_post of the last block.
    fn top(self, layers: usize) -> usize {
        match self {
            Target::Feature { layer, .. } => layer,
            Target::Output { .. } => layers,
        }
    }
    pub fn pos(self) -> usize {
        match self {
            Target::Feature { pos, .. } | Target::Output { pos } => pos,
        }
    }
}

/// How a target's read is carried back through the frozen blocks to the writes (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backward {
    /// Every path of head choices, factored into steps and directions shared between targets.
    Paths,
    /// One sweep per target: the read's gradient at every step and slot.
    Sweep,
}

/// The most paths of head choices expanded before targets are swept instead. `voltlens bench
/// graph --backward paths|sweep` on the dev shape (four heads, d 64, 512 features, L0 20), 2 cores,
/// seconds paths / sweep: 4 blocks 0.21 / 0.30 (64 steps), 1.18 / 6.24 (256); 5 blocks (3,125
/// paths) 0.53 / 0.51, 2.64 / 10.39; 6 blocks 1.46 / 0.78, 2.83 / 3.28 (128); 7 blocks 4.70 /
/// 1.16, 7.86 / 4.66 (128), the paths' memory growing fivefold a block (244 MB there).
pub const MAX_PATHS: usize = 3125;

impl Backward {
    /// The faster way for a model of `layers` blocks of `heads` heads.
    pub fn for_depth(layers: usize, heads: usize) -> Backward {
        let paths = (0..layers).try_fold(1usize, |n, _| n.checked_mul(heads + 1).filter(|&n| n <= MAX_PATHS));
        if paths.is_some() { Backward::Paths } else { Backward::Sweep }
    }
}

/// A target's read carried back to the writes, by either way.
#[derive(Clone, Copy)]
pub(crate) enum Reads<'a> {
    Paths(&'a ReadTables, &'a StepTables),
    /// Per slot, the gradient [steps ≤ t, d].
    Sweep(&'a [Vec<f32>]),
}

/// What writes into the residual stream at a slot and step.
#[derive(Clone, Copy)]
enum Writer {
    /// Active feature `node` (its decoder row into the slot).
    Feature(usize),
    /// The error of the layer below the slot.
    Error,
    /// An input channel's embedding row (slot 0).
    Input(usize),
}

/// One block's attention with its pattern and norm scale frozen.
struct FrozenAttention {
    /// A_h[t, s] / σ_s, [H, T, T]: the pattern with the norm scale of the source step folded in.
    scaled: Vec<f32>,
    /// Per head, C·diag(γ)·W_v,h·W_o,h [d, d] (row-vector convention: contribution = r·M).
    mix: Vec<Vec<f32>>,
    /// (β·W_v + b_v)·W_o + b_o: what every step receives whatever the inputs, as patterns sum to 1.
    constant: Vec<f32>,
}

/// The model and transcoder frozen on one window, with the real pass's activations.
pub struct FrozenReplacement<'a> {
    tc: &'a Transcoder,
    layers: usize,
    d: usize,
    heads: usize,
    seq: usize,
    /// Input channels per step (C).
    width: usize,
    /// Normalised inputs [T, C].
    inputs: Vec<f32>,
    /// [C, d]
    w_embed: Vec<f32>,
    /// A next-voltage head's direct path from the inputs to the output [C] (empty for a ΔV head).
    input_skip: Vec<f32>,
    /// Embedding bias plus learned position, [T, d].
    embed_const: Vec<f32>,
    attention: Vec<FrozenAttention>,
    /// C·(γ_f ⊙ w_head) [d]: the output reads resid_post·out_read / σ_f + out_const.
    out_read: Vec<f32>,
    final_sigma: Vec<f32>,
    out_const: f32,
    /// The real model's resid_mid [T, L, d] (what the transcoder encodes).
    pub resid_mid: Vec<f32>,
    /// The real model's output (scaled ΔV) per step.
    pub prediction: Vec<f32>,
    /// Sorted by (layer, pos, feature).
    pub features: Vec<ActiveFeature>,
    /// mlp_out − reconstruction, [L, T, d].
    pub errors: Vec<f32>,
    /// Per active feature, its index in `distinct`.
    distinct_of: Vec<usize>,
    /// The (layer, feature) pairs active anywhere in the window.
    distinct: Vec<(usize, usize)>,
    /// First active feature of (layer, pos) at `starts[layer·(T+1) + pos]`.
    starts: Vec<usize>,
    backward: Backward,
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().expect("f32 tensors")
}

use crate::transcoder::dense::dot;

fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

/// y = M·q for M [d, d] row-major: the backward of a row-vector map r ↦ r·M.
fn mat_vec(m: &[f32], q: &[f32]) -> Vec<f32> {
    m.chunks(q.len()).map(|row| dot(row, q)).collect()
}

/// Refuses the MLSAE and a transcoder of another shape than the model.
pub(crate) fn check_pair<B: Backend>(model: &Lblm<B>, tc: &Transcoder) -> Result<()> {
    if tc.shape.variant == Variant::Sae {
        return Err(Error::Config(super::SAE_HAS_NO_CIRCUITS.to_owned()));
    }
    if tc.shape.variant == Variant::Mlsae {
        return Err(Error::Config(
            "attribution needs a CLT or PLT; the MLSAE's encoder reads every layer at once, so it has no per-layer feature to attribute".to_owned(),
        ));
    }
    tc.shape.check_fits(model.layers(), model.d_model(), None)
}

/// Per-step scale of `norm` on rows [T, d]: √(var + ε) for LayerNorm, √(mean(x²) + ε) for
/// RMSNorm, which does not centre.
fn norm_scale<B: Backend>(norm: &Norm<B>, rows: &[f32], d: usize) -> Vec<f32> {
    rows.chunks(d)
        .map(|r| {
            let mean = if norm.rms { 0.0 } else { r.iter().sum::<f32>() / d as f32 };
            (r.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / d as f32 + norm.epsilon as f32).sqrt()
        })
        .collect()
}

/// Removes each column's mean over rows from M [d, d] when `norm` centres its input:
/// (r − mean r)·M = r·(M − mean_i M).
fn centre_columns<B: Backend>(norm: &Norm<B>, m: &mut [f32], d: usize) {
    if norm.rms {
        return;
    }
    for j in 0..d {
        let mean = (0..d).map(|i| m[i * d + j]).sum::<f32>() / d as f32;
        (0..d).for_each(|i| m[i * d + j] -= mean);
    }
}

/// Causal softmax patterns [H, T, T] of one block on resid_pre [1, T, d], as `CausalSelfAttention` computes them.
fn patterns<B: Backend>(block: &Block<B>, rotary: Option<&Rotary<B>>, resid_pre: Tensor<B, 3>) -> Vec<f32> {
    let [_, seq, d] = resid_pre.dims();
    let h = block.attn.heads;
    let hd = d / h;
    let qkv = block.attn.qkv.forward(block.ln_attn.forward(resid_pre));
    let mut qk = qkv.narrow(2, 0, 2 * d).reshape([1, seq, 2 * h, hd]);
    if let Some(rotary) = rotary {
        qk = rotary.apply(qk);
    }
    let qk = to_vec(qk); // [T, 2H, hd]: queries of head i at slot i, keys at slot H + i
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; h * seq * seq];
    for head in 0..h {
        for t in 0..seq {
            let q = &qk[(t * 2 * h + head) * hd..][..hd];
            let row = &mut out[(head * seq + t) * seq..][..seq];
            for (s, r) in row.iter_mut().enumerate().take(t + 1) {
                *r = dot(q, &qk[(s * 2 * h + h + head) * hd..][..hd]) * scale;
            }
            let max = row[..=t].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let sum: f32 = row[..=t].iter_mut().map(|x| {
                *x = (*x - max).exp();
                *x
            }).sum();
            row[..=t].iter_mut().for_each(|x| *x /= sum);
        }
    }
    out
}

/// One block's attention frozen at the pattern and norm scale of resid_pre [T, d].
fn freeze_attention<B: Backend>(block: &Block<B>, rotary: Option<&Rotary<B>>, resid_pre: Tensor<B, 3>) -> FrozenAttention {
    let [_, seq, d] = resid_pre.dims();
    let h = block.attn.heads;
    let hd = d / h;
    let sigma = norm_scale(&block.ln_attn, &to_vec(resid_pre.clone()), d);
    let mut scaled = patterns(block, rotary, resid_pre);
    for row in scaled.chunks_mut(seq) {
        row.iter_mut().zip(&sigma).for_each(|(a, s)| *a /= s);
    }
    let w_qkv = to_vec(block.attn.qkv.weight.val()); // [d, 3d]
    let b_qkv = block.attn.qkv.bias.as_ref().map(|b| to_vec(b.val())).unwrap_or_else(|| vec![0.0; 3 * d]);
    let w_o = to_vec(block.attn.out.weight.val()); // [d, d]
    let b_o = block.attn.out.bias.as_ref().map(|b| to_vec(b.val())).unwrap_or_else(|| vec![0.0; d]);
    let gamma = to_vec(block.ln_attn.gamma.val());
    let beta = block.ln_attn.beta.as_ref().map(|b| to_vec(b.val())).unwrap_or_else(|| vec![0.0; d]);
    let mix = (0..h)
        .map(|head| {
            // γ_i · (W_v,h W_o,h)[i, j], then centred over i for LayerNorm.
            let mut m = vec![0f32; d * d];
            for i in 0..d {
                for k in 0..hd {
                    let v = gamma[i] * w_qkv[i * 3 * d + 2 * d + head * hd + k];
                    axpy(v, &w_o[(head * hd + k) * d..][..d], &mut m[i * d..(i + 1) * d]);
                }
            }
            centre_columns(&block.ln_attn, &mut m, d);
            m
        })
        .collect();
    // (β·W_v + b_v)·W_o + b_o
    let mut constant = b_o;
    for k in 0..d {
        let v: f32 = (0..d).map(|i| beta[i] * w_qkv[i * 3 * d + 2 * d + k]).sum::<f32>() + b_qkv[2 * d + k];
        axpy(v, &w_o[k * d..(k + 1) * d], &mut constant);
    }
    FrozenAttention { scaled, mix, constant }
}

impl<'a> FrozenReplacement<'a> {
    /// Runs `model` on one window of normalised inputs [T, C] (C the model's channels) and
    /// freezes it there, with `tc` (a CLT or PLT) encoding the real pass's resid_mid.
    pub fn new<B: Backend>(model: &Lblm<B>, tc: &'a Transcoder, inputs: &[f32]) -> Result<Self> {
        check_pair(model, tc)?;
        let width = model.channels();
        let seq = inputs.len() / width;
        if seq == 0 || !inputs.len().is_multiple_of(width) {
            return Err(Error::Config(format!("a window is [steps, {width}] inputs, got {} values", inputs.len())));
        }
        if seq > model.context {
            return Err(Error::Config(format!("a window of {seq} steps is longer than the model's context of {}", model.context)));
        }
        let (layers, d) = (tc.shape.layers, tc.shape.d_model);
        let device = model.embed.weight.device();
        let x = Tensor::<B, 3>::from_data(TensorData::new(inputs.to_vec(), [1, seq, width]), &device);
        let (prediction, acts) = model.forward_hooked(x);
        let attention: Vec<FrozenAttention> = model
            .blocks
            .iter()
            .zip(&acts)
            .map(|(block, a)| freeze_attention(block, model.rotary.as_ref(), a.resid_pre.clone()))
            .collect();
        // [L] × [T, d] → [T, L, d], as the transcoder reads.
        let stack = |f: &dyn Fn(usize) -> Tensor<B, 3>| to_vec(Tensor::<B, 3>::stack::<4>((0..layers).map(f).collect(), 2));
        let resid_mid = stack(&|l| acts[l].resid_mid.clone());
        let mlp_out = stack(&|l| acts[l].mlp_out.clone());
        let resid_final = to_vec(acts[layers - 1].resid_post.clone());

        let codes = tc.encode(&resid_mid);
        let reconstruction = tc.decode(&codes, Some(&resid_mid));
        let mut errors = vec![0f32; layers * seq * d];
        for t in 0..seq {
            for l in 0..layers {
                let at = (t * layers + l) * d;
                for k in 0..d {
                    errors[(l * seq + t) * d + k] = mlp_out[at + k] - reconstruction[at + k];
                }
            }
        }
        let mut features: Vec<ActiveFeature> = (0..seq)
            .flat_map(|t| (0..layers).map(move |l| (t, l)))
            .flat_map(|(t, l)| {
                let r = codes.row(t * layers + l);
                codes.index[r.clone()].iter().zip(&codes.value[r]).map(move |(&f, &z)| ActiveFeature { layer: l, pos: t, feature: f as usize, activation: z })
            })
            .filter(|a| a.activation > 0.0)
            .collect();
        features.sort_by_key(|a| (a.layer, a.pos, a.feature));
        let mut distinct: Vec<(usize, usize)> = features.iter().map(|a| (a.layer, a.feature)).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let distinct_of = features.iter().map(|a| distinct.binary_search(&(a.layer, a.feature)).expect("listed")).collect();
        let starts = (0..layers)
            .flat_map(|l| (0..=seq).map(move |p| (l, p)))
            .map(|(l, p)| features.partition_point(|a| (a.layer, a.pos) < (l, p)))
            .collect();

        let w_embed = to_vec(model.embed.weight.val());
        let b_embed = model.embed.bias.as_ref().map(|b| to_vec(b.val())).unwrap_or_else(|| vec![0.0; d]);
        let mut embed_const: Vec<f32> = b_embed.iter().copied().cycle().take(seq * d).collect();
        if let Some(p) = &model.positions {
            embed_const.iter_mut().zip(to_vec(p.val())).for_each(|(e, p)| *e += p);
        }
        let w_head = to_vec(model.head.weight.val());
        let b_head = model.head.bias.as_ref().map(|b| to_vec(b.val())[0]).unwrap_or(0.0);
        // Without a final norm the head reads the stream directly: γ = 1, β = 0, σ = 1.
        let (gamma, beta, final_sigma) = match &model.ln_final {
            Some(norm) => (
                to_vec(norm.gamma.val()),
                norm.beta.as_ref().map(|b| to_vec(b.val())).unwrap_or_else(|| vec![0.0; d]),
                norm_scale(norm, &resid_final, d),
            ),
            None => (vec![1.0; d], vec![0.0; d], vec![1.0; seq]),
        };
        let mut out_read: Vec<f32> = gamma.iter().zip(&w_head).map(|(g, w)| g * w).collect();
        if model.ln_final.as_ref().is_some_and(|n| !n.rms) {
            let mean = out_read.iter().sum::<f32>() / d as f32;
            out_read.iter_mut().for_each(|v| *v -= mean);
        }
        Ok(FrozenReplacement {
            tc,
            layers,
            d,
            heads: model.blocks[0].attn.heads,
            seq,
            width,
            inputs: inputs.to_vec(),
            w_embed,
            input_skip: model.input_skip.as_ref().map(|w| to_vec(w.val())).unwrap_or_default(),
            embed_const,
            attention,
            out_read,
            final_sigma,
            out_const: dot(&beta, &w_head) + b_head,
            resid_mid,
            prediction: to_vec(prediction),
            features,
            errors,
            distinct_of,
            distinct,
            starts,
            backward: Backward::for_depth(layers, model.blocks[0].attn.heads),
        })
    }

    pub fn layers(&self) -> usize {
        self.layers
    }
    /// How targets are carried back: by depth, unless set (to compare the two ways).
    pub fn backward(&self) -> Backward {
        self.backward
    }
    pub fn with_backward(self, backward: Backward) -> Self {
        FrozenReplacement { backward, ..self }
    }
    /// Steps in the window.
    pub fn seq(&self) -> usize {
        self.seq
    }
    pub fn transcoder(&self) -> &Transcoder {
        self.tc
    }
    /// Normalised inputs [T, C].
    pub fn inputs(&self) -> &[f32] {
        &self.inputs
    }

    // Node numbering, as circuit-tracer's: features, errors (layer-major), inputs (step-major), output.
    pub fn n_nodes(&self) -> usize {
        self.output_node() + 1
    }
    pub fn error_node(&self, layer: usize, pos: usize) -> usize {
        self.features.len() + layer * self.seq + pos
    }
    pub fn input_node(&self, pos: usize, channel: usize) -> usize {
        self.features.len() + self.layers * self.seq + pos * self.width + channel
    }
    pub fn output_node(&self) -> usize {
        self.input_node(self.seq, 0)
    }
    pub fn node(&self, i: usize) -> NodeKind {
        let (nf, lt) = (self.features.len(), self.layers * self.seq);
        if i < nf {
            let a = self.features[i];
            NodeKind::Feature { layer: a.layer, pos: a.pos, feature: a.feature }
        } else if i < nf + lt {
            NodeKind::Error { layer: (i - nf) / self.seq, pos: (i - nf) % self.seq }
        } else if i < self.output_node() {
            NodeKind::Input { pos: (i - nf - lt) / self.width, channel: (i - nf - lt) % self.width }
        } else {
            NodeKind::Output { pos: self.seq - 1 }
        }
    }
    /// The node's own value: activation, error norm, normalised input, or output.
    pub fn node_value(&self, i: usize) -> f32 {
        match self.node(i) {
            NodeKind::Feature { .. } => self.features[i].activation,
            NodeKind::Error { layer, pos } => dot(self.error(layer, pos), self.error(layer, pos)).sqrt(),
            NodeKind::Input { pos, channel } => self.inputs[pos * self.width + channel],
            NodeKind::Output { pos } => self.prediction[pos],
        }
    }
    /// Active features of `layer` at steps 0..=pos, as a range of `features`.
    fn layer_range(&self, layer: usize, pos: usize) -> std::ops::Range<usize> {
        let at = layer * (self.seq + 1);
        self.starts[at]..self.starts[at + pos + 1]
    }
    /// Feature `node` as a target (its pre-activation at its own step).
    pub fn feature_target(&self, node: usize) -> Target {
        let a = self.features[node];
        Target::Feature { layer: a.layer, pos: a.pos, feature: a.feature }
    }

    fn error(&self, layer: usize, pos: usize) -> &[f32] {
        &self.errors[(layer * self.seq + pos) * self.d..][..self.d]
    }
    /// Decoder row of feature f of encoder l into mlp_out of layer k [d].
    fn decoder(&self, l: usize, f: usize, k: usize) -> &[f32] {
        let s = self.tc.shape;
        let at = f * s.dec_row(l) + (k - s.out_layers(l).start) * self.d;
        &self.tc.w_dec[l][at..at + self.d]
    }
    /// The slots (block boundaries) that encoder l's decoder writes to: slot k+1 for mlp_out_k.
    fn write_slots(&self, l: usize) -> std::ops::Range<usize> {
        let out = self.tc.shape.out_layers(l);
        out.start + 1..out.end + 1
    }

    /// The read vector of a target: W_enc column, or the output's read scaled by its norm.
    fn read_vector(&self, target: Target) -> Vec<f32> {
        match target {
            Target::Feature { layer, feature, .. } => super::encoder_column(self.tc, layer, feature),
            Target::Output { pos } => self.out_read.iter().map(|u| u / self.final_sigma[pos]).collect(),
        }
    }

    /// The value a target takes in the real pass: the feature's pre-activation or the output.
    pub fn target_value(&self, target: Target) -> f32 {
        match target {
            Target::Feature { layer, pos, feature } => {
                let r = &self.resid_mid[(pos * self.layers + layer) * self.d..][..self.d];
                dot(r, &super::encoder_column(self.tc, layer, feature)) + self.tc.b_enc[layer * self.tc.shape.features + feature]
            }
            Target::Output { pos } => self.prediction[pos],
        }
    }

    /// The part of a target that no node carries: every bias, norm offset and learned position,
    /// read from the frozen model run with all nodes at zero.
    pub fn target_constant(&self, target: Target, zero_run: &FrozenRun) -> f32 {
        match target {
            Target::Feature { layer, pos, feature } => {
                let r = &zero_run.resid_mid[layer][pos * self.d..(pos + 1) * self.d];
                dot(r, &super::encoder_column(self.tc, layer, feature)) + self.tc.b_enc[layer * self.tc.shape.features + feature]
            }
            Target::Output { pos } => zero_run.output[pos],
        }
    }

    /// The frozen model run on its own nodes (`zero`: every node at 0, leaving the constants).
    /// With `zero` false it reproduces the real model up to rounding.
    pub fn run(&self, zero: bool) -> FrozenRun {
        let (d, seq) = (self.d, self.seq);
        let mut r = self.embed_const.clone();
        if !zero {
            for (t, row) in r.chunks_mut(d).enumerate() {
                for c in 0..self.width {
                    axpy(self.inputs[t * self.width + c], &self.w_embed[c * d..(c + 1) * d], row);
                }
            }
        }
        let mut resid_mid = Vec::with_capacity(self.layers);
        for (a, att) in self.attention.iter().enumerate() {
            let mut mid: Vec<f32> = r.clone();
            mid.chunks_mut(d).for_each(|row| row.iter_mut().zip(&att.constant).for_each(|(x, c)| *x += c));
            for (h, m) in att.mix.iter().enumerate() {
                // y = r·M_h per step, then mixed over steps by the scaled pattern.
                let y: Vec<f32> = r.chunks(d).flat_map(|row| (0..d).map(|j| (0..d).map(|i| row[i] * m[i * d + j]).sum::<f32>()).collect::<Vec<_>>()).collect();
                for t in 0..seq {
                    let pattern = &att.scaled[(h * seq + t) * seq..][..=t];
                    for (s, &p) in pattern.iter().enumerate() {
                        axpy(p, &y[s * d..(s + 1) * d], &mut mid[t * d..(t + 1) * d]);
                    }
                }
            }
            let mut mlp: Vec<f32> = self.tc.b_dec[a * d..(a + 1) * d].iter().copied().cycle().take(seq * d).collect();
            if let Some(w) = &self.tc.w_skip {
                for t in 0..seq {
                    for k in 0..d {
                        axpy(mid[t * d + k], &w[(a * d + k) * d..][..d], &mut mlp[t * d..(t + 1) * d]);
                    }
                }
            }
            if !zero {
                axpy(1.0, &self.errors[a * seq * d..(a + 1) * seq * d], &mut mlp);
                for f in self.features.iter().filter(|f| self.write_slots(f.layer).contains(&(a + 1))) {
                    axpy(f.activation, self.decoder(f.layer, f.feature, a), &mut mlp[f.pos * d..(f.pos + 1) * d]);
                }
            }
            r = mid.iter().zip(&mlp).map(|(x, y)| x + y).collect();
            resid_mid.push(mid);
        }
        let mut output: Vec<f32> = r.chunks(d).zip(&self.final_sigma).map(|(row, s)| dot(row, &self.out_read) / s + self.out_const).collect();
        if !zero && !self.input_skip.is_empty() {
            output.iter_mut().zip(self.inputs.chunks(self.width)).for_each(|(o, x)| *o += dot(x, &self.input_skip));
        }
        FrozenRun { resid_mid, output }
    }
}

/// Streams of one frozen run.
pub struct FrozenRun {
    /// Per layer, resid_mid [T, d].
    pub resid_mid: Vec<Vec<f32>>,
    /// Output (scaled ΔV) per step.
    pub output: Vec<f32>,
}

/// The terms of every path from a read down to each slot: `slots[b]` lists them for writes at
/// slot b, children in the order [identity, head 0, head 1, …] under each parent, so term 0 is
/// always the path through no head at all.
fn descend<T: Clone>(
    start: T,
    target: Target,
    layers: usize,
    heads: usize,
    skip: impl Fn(usize, &T) -> T,
    head: impl Fn(usize, usize, &T) -> T,
) -> Vec<Vec<T>> {
    let branch = |terms: Vec<T>, layer: usize| -> Vec<T> {
        terms.iter().flat_map(|t| std::iter::once(t.clone()).chain((0..heads).map(|h| head(layer, h, t)))).collect()
    };
    let top = target.top(layers);
    // A feature reads after its own block's attention; the output after the last block.
    let mut terms = match target {
        Target::Feature { layer, .. } => branch(vec![start], layer),
        Target::Output { .. } => vec![start],
    };
    let mut slots = vec![terms.clone()];
    for b in (0..top).rev() {
        terms = branch(terms.iter().map(|t| skip(b, t)).collect(), b);
        slots.push(terms.clone());
    }
    slots.reverse();
    slots
}

/// Direction side of a target's paths: per slot, the virtual weight (write · q) of every writer.
pub(crate) struct ReadTables {
    /// Terms per slot.
    n: Vec<usize>,
    /// Per slot, [distinct feature, term]: decoder row into this slot · q (0 for non-writers).
    features: Vec<Vec<f32>>,
    /// Per slot b ≥ 1, [step, term]: error of layer b−1 at that step · q.
    errors: Vec<Vec<f32>>,
    /// Slot 0, [channel, term]: the embedding row of the channel · q.
    inputs: Vec<f32>,
}

/// Position side of a target's paths: per slot, [step s ≤ t, term] coefficients.
pub(crate) struct StepTables {
    n: Vec<usize>,
    coeffs: Vec<Vec<f32>>,
}

impl FrozenReplacement<'_> {
    /// Virtual weights of every writer onto `target`'s read, for writes at steps ≤ `max_pos`.
    pub(crate) fn read_tables(&self, target: Target, max_pos: usize) -> ReadTables {
        let head = |b: usize, h: usize, q: &Vec<f32>| mat_vec(&self.attention[b].mix[h], q);
        let skip = |b: usize, q: &Vec<f32>| self.skip_back(b, q);
        let slots = descend(self.read_vector(target), target, self.layers, self.heads, skip, head);
        let n: Vec<usize> = slots.iter().map(Vec::len).collect();
        let features = slots
            .iter()
            .enumerate()
            .map(|(b, qs)| {
                let mut table = vec![0f32; self.distinct.len() * qs.len()];
                for (i, &(l, f)) in self.distinct.iter().enumerate().filter(|(_, &(l, _))| self.write_slots(l).contains(&b)) {
                    let dec = self.decoder(l, f, b - 1);
                    table[i * qs.len()..(i + 1) * qs.len()].iter_mut().zip(qs).for_each(|(v, q)| *v = dot(dec, q));
                }
                table
            })
            .collect();
        let errors = slots
            .iter()
            .enumerate()
            .map(|(b, qs)| match b {
                0 => Vec::new(),
                _ => (0..=max_pos).flat_map(|s| qs.iter().map(move |q| (s, q))).map(|(s, q)| dot(self.error(b - 1, s), q)).collect(),
            })
            .collect();
        let inputs = (0..self.width).flat_map(|c| slots[0].iter().map(move |q| (c, q))).map(|(c, q)| dot(&self.w_embed[c * self.d..(c + 1) * self.d], q)).collect();
        ReadTables { n, features, errors, inputs }
    }

    /// Path coefficients of `target`'s read onto every step ≤ its own.
    pub(crate) fn step_tables(&self, target: Target) -> StepTables {
        let (t, seq) = (target.pos(), self.seq);
        let mut start = vec![0f32; t + 1];
        start[t] = 1.0;
        let head = |b: usize, h: usize, c: &Vec<f32>| {
            // c'[s] = Σ_u c[u]·Ã[u, s]: u ≥ s, as the pattern is causal.
            let mut out = vec![0f32; t + 1];
            let scaled = &self.attention[b].scaled;
            for (u, &cu) in c.iter().enumerate().filter(|(_, &cu)| cu != 0.0) {
                axpy(cu, &scaled[(h * seq + u) * seq..][..=u], &mut out[..=u]);
            }
            out
        };
        let slots = descend(start, target, self.layers, self.heads, |_, c| c.clone(), head);
        let n: Vec<usize> = slots.iter().map(Vec::len).collect();
        // [term][s] → [s][term], so that a writer's terms lie together.
        let coeffs = slots.iter().map(|cs| (0..=t).flat_map(|s| cs.iter().map(move |c| c[s])).collect()).collect();
        StepTables { n, coeffs }
    }

    /// The read carried back by one sweep down the blocks: per slot b ≤ the target's top, the
    /// gradient [steps ≤ t, d] of the read with respect to a write into slot b at each step.
    pub(crate) fn sweep(&self, target: Target) -> Vec<Vec<f32>> {
        let (d, t, top) = (self.d, target.pos(), target.top(self.layers));
        let mut g = vec![0f32; (t + 1) * d];
        g[t * d..].copy_from_slice(&self.read_vector(target));
        // A feature reads after its own block's attention.
        if let Target::Feature { layer, .. } = target {
            self.attention_back(layer, &mut g);
        }
        let mut slots = vec![g.clone()];
        for b in (0..top).rev() {
            if self.tc.w_skip.is_some() {
                for row in g.chunks_mut(d).filter(|r| r.iter().any(|&x| x != 0.0)) {
                    let q = self.skip_back(b, row);
                    row.copy_from_slice(&q);
                }
            }
            self.attention_back(b, &mut g);
            slots.push(g.clone());
        }
        slots.reverse();
        slots
    }

    /// g += the backward of block b's frozen heads: into each step s, Σ_h Σ_{u ≥ s} Ã_h[u, s]·M_h·g[u].
    fn attention_back(&self, b: usize, g: &mut [f32]) {
        let (d, seq) = (self.d, self.seq);
        let att = &self.attention[b];
        let mut added = vec![0f32; g.len()];
        for (u, gu) in g.chunks(d).enumerate().filter(|(_, r)| r.iter().any(|&x| x != 0.0)) {
            for (h, mix) in att.mix.iter().enumerate() {
                let y = mat_vec(mix, gu);
                for (s, &p) in att.scaled[(h * seq + u) * seq..][..=u].iter().enumerate() {
                    axpy(p, &y, &mut added[s * d..(s + 1) * d]);
                }
            }
        }
        g.iter_mut().zip(added).for_each(|(x, a)| *x += a);
    }

    /// q carried back through the transcoder's skip path of layer b: q + W_skip,b·q.
    fn skip_back(&self, b: usize, q: &[f32]) -> Vec<f32> {
        let d = self.d;
        match &self.tc.w_skip {
            Some(w) => q.iter().zip(mat_vec(&w[b * d * d..(b + 1) * d * d], q)).map(|(a, b)| a + b).collect(),
            None => q.to_vec(),
        }
    }

    /// The weight a writer's value is multiplied by in the target's read, for a write into slot
    /// `b` at step `s`.
    fn carried(&self, reads: Reads, b: usize, s: usize, writer: Writer) -> f32 {
        match reads {
            Reads::Paths(tables, steps) => {
                let n = tables.n[b];
                let virtual_weights = match writer {
                    Writer::Feature(i) => &tables.features[b][self.distinct_of[i] * n..][..n],
                    Writer::Error => &tables.errors[b][s * n..][..n],
                    Writer::Input(c) => &tables.inputs[c * n..][..n],
                };
                dot(&steps.coeffs[b][s * steps.n[b]..(s + 1) * steps.n[b]], virtual_weights)
            }
            Reads::Sweep(grads) => {
                let write = match writer {
                    Writer::Feature(i) => self.decoder(self.features[i].layer, self.features[i].feature, b - 1),
                    Writer::Error => self.error(b - 1, s),
                    Writer::Input(c) => &self.w_embed[c * self.d..(c + 1) * self.d],
                };
                dot(write, &grads[b][s * self.d..(s + 1) * self.d])
            }
        }
    }

    /// Every node's contribution to `target`, as (node, weight) pairs in node order: nodes that
    /// cannot reach it (later steps, later or same layers) are left out.
    pub(crate) fn row(&self, target: Target, reads: Reads, out: &mut Vec<(u32, f32)>) {
        out.clear();
        let (t, top) = (target.pos(), target.top(self.layers));
        for l in 0..top.min(self.layers) {
            let slots = self.write_slots(l).start..self.write_slots(l).end.min(top + 1);
            for i in self.layer_range(l, t) {
                let a = self.features[i];
                let w: f32 = slots.clone().map(|b| self.carried(reads, b, a.pos, Writer::Feature(i))).sum();
                out.push((i as u32, a.activation * w));
            }
        }
        for k in 0..top {
            for s in 0..=t {
                out.push((self.error_node(k, s) as u32, self.carried(reads, k + 1, s, Writer::Error)));
            }
        }
        // A next-voltage head also reads the inputs at the output's own step directly.
        let skip = |s: usize, c: usize| match target {
            Target::Output { .. } if s == t && !self.input_skip.is_empty() => self.input_skip[c],
            _ => 0.0,
        };
        for s in 0..=t {
            for c in 0..self.width {
                let w = self.carried(reads, 0, s, Writer::Input(c)) + skip(s, c);
                out.push((self.input_node(s, c) as u32, self.inputs[s * self.width + c] * w));
            }
        }
    }

    /// The read carried down through no attention head: per slot, one direction [d].
    fn straight(&self, target: Target) -> Vec<Vec<f32>> {
        let skip = |b: usize, q: &Vec<f32>| self.skip_back(b, q);
        let slots = descend(self.read_vector(target), target, self.layers, 0, skip, |_, _, q: &Vec<f32>| q.clone());
        slots.into_iter().map(|mut terms| terms.swap_remove(0)).collect()
    }

    /// The direct part of an active feature's contribution: the path through no attention head
    /// at the target's own step (z · pullback when there is no skip path); 0 from other steps.
    /// `straight` is the target's [`Self::straight`] read.
    fn direct(&self, node: usize, target: Target, straight: &[Vec<f32>]) -> f32 {
        let a = self.features[node];
        if a.pos != target.pos() {
            return 0.0;
        }
        let top = target.top(self.layers);
        let slots = self.write_slots(a.layer).start..self.write_slots(a.layer).end.min(top + 1);
        a.activation * slots.map(|b| dot(self.decoder(a.layer, a.feature, b - 1), &straight[b])).sum::<f32>()
    }
}

/// One node's contribution to an attributed target.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Contribution {
    pub node: NodeKind,
    /// Contribution to the target (activation × gradient through the frozen model).
    pub weight: f32,
    /// For a feature: the part through no attention head at the target's step (z · pullback);
    /// the rest of `weight` arrives through attention from the same or earlier steps.
    pub direct: f32,
    /// The node's value: activation, error norm, normalised input.
    pub value: f32,
}

/// Every contribution to one target, and the check that they add up.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Attribution {
    pub target: String,
    /// The target's value in the real pass (pre-activation, or scaled ΔV).
    pub value: f32,
    /// Biases, norm offsets and learned positions: the part no node carries.
    pub constant: f32,
    /// Sorted by |weight|, largest first.
    pub contributions: Vec<Contribution>,
}

impl Attribution {
    /// constant + Σ contributions: equals `value` up to rounding.
    pub fn total(&self) -> f32 {
        self.constant + self.contributions.iter().map(|c| c.weight).sum::<f32>()
    }
}

/// Attribution of one target of a frozen window: every node's contribution, largest first.
pub fn attribute(frozen: &FrozenReplacement, target: Target) -> Result<Attribution> {
    if let Target::Feature { layer, feature, .. } = target {
        check_feature(frozen.tc, layer, feature)?;
    }
    if target.pos() >= frozen.seq {
        return Err(Error::Config(format!("step {} is outside the window of {} steps", target.pos(), frozen.seq)));
    }
    let mut row = Vec::new();
    match frozen.backward {
        Backward::Paths => {
            let (tables, steps) = (frozen.read_tables(target, target.pos()), frozen.step_tables(target));
            frozen.row(target, Reads::Paths(&tables, &steps), &mut row);
        }
        Backward::Sweep => frozen.row(target, Reads::Sweep(&frozen.sweep(target)), &mut row),
    }
    let straight = frozen.straight(target);
    let is_feature = |i: usize| i < frozen.features.len();
    let mut contributions: Vec<Contribution> = row
        .par_iter()
        .map(|&(i, w)| {
            let i = i as usize;
            let direct = if is_feature(i) { frozen.direct(i, target, &straight) } else { 0.0 };
            Contribution { node: frozen.node(i), weight: w, direct, value: frozen.node_value(i) }
        })
        .collect();
    contributions.sort_by(|a, b| b.weight.abs().total_cmp(&a.weight.abs()));
    let name = match target {
        Target::Feature { layer, pos, feature } => format!("L{layer}_F{feature} pre-activation at window step {pos}"),
        Target::Output { pos } => format!("output at window step {pos}"),
    };
    Ok(Attribution { target: name, value: frozen.target_value(target), constant: frozen.target_constant(target, &frozen.run(true)), contributions })
}

/// A node's name for tables and labels; `first_step` numbers steps within the cell, `channels`
/// names the model's input channels.
pub fn node_name(node: NodeKind, first_step: usize, channels: &[String]) -> String {
    match node {
        NodeKind::Feature { layer, pos, feature } => format!("L{layer}_F{feature} @{}", first_step + pos),
        NodeKind::Error { layer, pos } => format!("error L{layer} @{}", first_step + pos),
        NodeKind::Input { pos, channel } => format!("{} @{}", channels[channel], first_step + pos),
        NodeKind::Output { pos } => format!("output @{}", first_step + pos),
    }
}

/// The `top` largest contributions as a text table, with the sum check.
pub fn format_attribution(a: &Attribution, first_step: usize, channels: &[String], top: usize) -> String {
    let mut out = format!("{}\n", a.target);
    let _ = writeln!(out, "{:<32}  {:>10}  {:>10}  {:>10}", "node", "weight", "direct", "value");
    for c in a.contributions.iter().take(top) {
        let _ = writeln!(out, "{:<32}  {:>10.5}  {:>10.5}  {:>10.4}", node_name(c.node, first_step, channels), c.weight, c.direct, c.value);
    }
    let features: f32 = a.contributions.iter().filter(|c| matches!(c.node, NodeKind::Feature { .. })).map(|c| c.weight).sum();
    let errors: f32 = a.contributions.iter().filter(|c| matches!(c.node, NodeKind::Error { .. })).map(|c| c.weight).sum();
    let inputs: f32 = a.contributions.iter().filter(|c| matches!(c.node, NodeKind::Input { .. })).map(|c| c.weight).sum();
    let _ = writeln!(out, "features {features:.5} + errors {errors:.5} + inputs {inputs:.5} + constant {:.5} = {:.5} (actual {:.5})", a.constant, a.total(), a.value);
    out
}
