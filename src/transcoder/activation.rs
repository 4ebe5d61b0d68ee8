//! σ: from a row of pre-activations to the sparse codes of one token and encoder.

use super::config::Activation;

/// Sparse codes in CSR form: one row per (token, encoder), rows in token-major order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Codes {
    /// Row r spans index/value/pre[offsets[r]..offsets[r + 1]]; r = token · encoders + encoder.
    pub offsets: Vec<usize>,
    /// Feature number within its encoder.
    pub index: Vec<u32>,
    /// Activation z_f (0 only for JumpReLU entries kept for the threshold's gradient).
    pub value: Vec<f32>,
    /// Pre-activation, which the backward pass needs for the JumpReLU window.
    pub pre: Vec<f32>,
}

impl Codes {
    pub fn new() -> Self {
        Self { offsets: vec![0], ..Default::default() }
    }
    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }
    pub fn row(&self, r: usize) -> std::ops::Range<usize> {
        self.offsets[r]..self.offsets[r + 1]
    }
    fn push(&mut self, f: usize, value: f32, pre: f32) {
        self.index.push(f as u32);
        self.value.push(value);
        self.pre.push(pre);
    }
    fn end_row(&mut self) {
        self.offsets.push(self.index.len());
    }
    /// Appends all rows of `other` (used to join per-thread chunks in order).
    pub fn extend(&mut self, other: &Codes) {
        let base = self.index.len();
        self.offsets.extend(other.offsets[1..].iter().map(|o| o + base));
        self.index.extend_from_slice(&other.index);
        self.value.extend_from_slice(&other.value);
        self.pre.extend_from_slice(&other.pre);
    }
}

/// How many candidates per token BatchTopK keeps before the batch-wide cut: a token may take more
/// than k of the batch's slots, but rarely more than this (Bussmann et al. 2024 report long tails
/// of a few times k).
pub const BATCH_TOPK_CANDIDATES: usize = 4;

/// Appends one row for the pre-activations `pre` [F]. `window` also keeps JumpReLU entries whose
/// pre-activation lies within half a bandwidth of the threshold, which only training needs.
pub fn select_row(act: &Activation, pre: &[f32], threshold: &[f32], window: bool, scratch: &mut Vec<u32>, out: &mut Codes) {
    match *act {
        Activation::Relu => {
            for (f, &p) in pre.iter().enumerate().filter(|(_, p)| **p > 0.0) {
                out.push(f, p, p);
            }
        }
        Activation::JumpRelu { bandwidth, .. } => {
            for (f, (&p, &t)) in pre.iter().zip(threshold).enumerate() {
                if p > t {
                    out.push(f, p, p);
                } else if window && (p - t).abs() < 0.5 * bandwidth {
                    out.push(f, 0.0, p);
                }
            }
        }
        Activation::TopK { k } => top_k(pre, k, scratch, out),
        Activation::BatchTopK { k } => top_k(pre, (k * BATCH_TOPK_CANDIDATES).min(pre.len()), scratch, out),
    }
    out.end_row();
}

/// The k largest positive entries, in feature order (so results do not depend on the selection).
fn top_k(pre: &[f32], k: usize, scratch: &mut Vec<u32>, out: &mut Codes) {
    // Only positive entries can be kept, and after the bias init most are negative: selecting
    // among the positive ones alone skips a selection over all F.
    scratch.clear();
    scratch.extend((0..pre.len() as u32).filter(|&f| pre[f as usize] > 0.0));
    keep_top(pre, k, scratch, out);
}

/// AuxK's selection: one row of the k largest positive pre-activations among `candidates` (the
/// dead features), in feature order.
pub fn top_k_among(pre: &[f32], candidates: &[u32], k: usize, scratch: &mut Vec<u32>, out: &mut Codes) {
    scratch.clear();
    scratch.extend_from_slice(candidates);
    keep_top(pre, k, scratch, out);
    out.end_row();
}

/// Appends the k largest positive pre[f] for f in `scratch` (which it reorders).
fn keep_top(pre: &[f32], k: usize, scratch: &mut Vec<u32>, out: &mut Codes) {
    if k == 0 {
        return;
    }
    if k < scratch.len() {
        // total_cmp keeps the order deterministic even with NaNs; ties break by feature number.
        scratch.select_nth_unstable_by(k - 1, |&a, &b| pre[b as usize].total_cmp(&pre[a as usize]).then(a.cmp(&b)));
        scratch.truncate(k);
    }
    scratch.sort_unstable();
    for &f in scratch.iter() {
        let p = pre[f as usize];
        if p > 0.0 {
            out.push(f as usize, p, p);
        }
    }
}

/// BatchTopK's cut: keep, for each encoder, the batch·k largest candidates across all tokens.
pub fn batch_top_k(codes: &Codes, encoders: usize, k: usize) -> Codes {
    let tokens = codes.rows() / encoders;
    let cut: Vec<f32> = (0..encoders)
        .map(|e| {
            let mut vals: Vec<f32> = (0..tokens).flat_map(|t| codes.value[codes.row(t * encoders + e)].iter().copied()).collect();
            let keep = tokens * k;
            if vals.len() <= keep {
                return f32::NEG_INFINITY;
            }
            vals.select_nth_unstable_by(keep - 1, |a, b| b.total_cmp(a));
            vals[keep - 1]
        })
        .collect();
    let mut out = Codes::new();
    for r in 0..codes.rows() {
        for i in codes.row(r) {
            if codes.value[i] >= cut[r % encoders] {
                out.push(codes.index[i] as usize, codes.value[i], codes.pre[i]);
            }
        }
        out.end_row();
    }
    out
}

/// ∂z/∂pre and the straight-through ∂z/∂θ of one entry.
pub fn derivatives(act: &Activation, value: f32, pre: f32, threshold: f32) -> (f32, f32) {
    match *act {
        Activation::JumpRelu { bandwidth, .. } => {
            let d_pre = if value != 0.0 { 1.0 } else { 0.0 };
            // Rectangle-kernel STE: ∂z/∂θ = −(θ/ε)·K((pre − θ)/ε), K = 1 on (−½, ½).
            let d_theta = if (pre - threshold).abs() < 0.5 * bandwidth { -threshold / bandwidth } else { 0.0 };
            (d_pre, d_theta)
        }
        _ => (if value > 0.0 { 1.0 } else { 0.0 }, 0.0),
    }
}
