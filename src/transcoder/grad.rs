//! Loss and hand-written gradient of one batch. Only the encoder product is dense; the decoder's
//! forward and every gradient after it run over the active features alone.
//!
//! Loss = (1/L) Σ_m ‖ŷ_m − y_m‖²/Var(y_m)  (mean over tokens; the mean over layers keeps λ on the
//! reference's scale) + λ · mean_tokens Σ_{e,f} s(z_ef, ‖W_dec,ef‖).

use rayon::prelude::*;

use super::activation::{self, Codes};
use super::clt::{Transcoder, CHUNK};
use super::config::Sparsity;
use super::dense;

/// What one batch measured.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// FVU per layer, against the variance the loss is normalised by.
    pub fvu: Vec<f32>,
    /// Mean active features per token, per encoder.
    pub l0: Vec<f32>,
    /// λ·S(z), mean over tokens.
    pub sparsity_loss: f32,
    /// Times each feature fired in the batch, [E, F].
    pub fired: Vec<u32>,
}

/// Everything the loss needs besides the model and the batch.
pub struct LossTerms<'a> {
    /// Var(y_m) summed over d, [L].
    pub var: &'a [f32],
    pub lambda: f32,
    pub sparsity: Sparsity,
    /// ‖W_dec,f‖, [E, F].
    pub norms: &'a [f32],
}

/// s(z, n) and its partial derivatives ∂s/∂z, ∂s/∂n.
fn penalty(sparsity: Sparsity, z: f32, n: f32) -> (f32, f32, f32) {
    match sparsity {
        Sparsity::L1 => (z * n, n, z),
        Sparsity::Tanh { c } => {
            let t = (c * z * n).tanh();
            let sech2 = 1.0 - t * t;
            (t, c * n * sech2, c * z * sech2)
        }
    }
}

/// Per-entry results of the backward pass, parallel to the codes' entries.
#[derive(Default)]
struct EntryGrads {
    /// ∂loss/∂pre.
    d_pre: Vec<f32>,
    /// ∂loss/∂θ through the straight-through estimator.
    d_theta: Vec<f32>,
    /// ∂loss/∂‖W_dec,f‖ from the penalty.
    d_norm: Vec<f32>,
}

/// Fills `grad` (same shapes as `model`) with ∂loss/∂params for x, y [B, L, d].
pub fn loss_and_grad(model: &Transcoder, x: &[f32], y: &[f32], terms: &LossTerms, grad: &mut Transcoder) -> StepStats {
    let s = model.shape;
    let (l, per_token, enc) = (s.layers, s.layers * s.d_model, s.encoders());
    let b = x.len() / per_token;
    let codes = model.encode_with(x, !model.threshold.is_empty());
    // ∂loss/∂ŷ [B, L, d], and per chunk the squared error per layer and the entries' gradients.
    let mut dy = vec![0.0; b * per_token];
    let parts: Vec<(Vec<f64>, f64, EntryGrads)> = dy
        .par_chunks_mut(CHUNK * per_token)
        .enumerate()
        .map(|(c, dyc)| backward_chunk(model, &codes, x, y, terms, c * CHUNK, dyc, b))
        .collect();
    let mut sq = vec![0.0f64; l];
    let mut sparsity_loss = 0.0f64;
    let mut eg = EntryGrads::default();
    for (sqc, sp, g) in parts {
        sq.iter_mut().zip(&sqc).for_each(|(a, v)| *a += v);
        sparsity_loss += sp;
        eg.d_pre.extend(g.d_pre);
        eg.d_theta.extend(g.d_theta);
        eg.d_norm.extend(g.d_norm);
    }
    let groups = FeatureGroups::new(&codes, enc, s.features);
    encoder_grads(model, &groups, &eg, x, grad);
    decoder_grads(model, &codes, &groups, &eg, &dy, terms.norms, grad);
    dense_grads(model, x, &dy, grad);
    let fired: Vec<u32> = groups.fired(&codes);
    let l0 = (0..enc).map(|e| fired[e * s.features..(e + 1) * s.features].iter().sum::<u32>() as f32 / b as f32).collect();
    StepStats {
        fvu: sq.iter().zip(terms.var).map(|(v, var)| (*v / (b as f64 * *var as f64)) as f32).collect(),
        l0,
        sparsity_loss: sparsity_loss as f32,
        fired,
    }
}

/// Decode the tokens from `t0`, write ∂loss/∂ŷ into dyc, and back-propagate into their entries.
#[allow(clippy::too_many_arguments)]
fn backward_chunk(model: &Transcoder, codes: &Codes, x: &[f32], y: &[f32], terms: &LossTerms, t0: usize, dyc: &mut [f32], b: usize) -> (Vec<f64>, f64, EntryGrads) {
    let s = model.shape;
    let (d, per_token, enc, f_n) = (s.d_model, s.layers * s.d_model, s.encoders(), s.features);
    let mut sq = vec![0.0f64; s.layers];
    let mut sparsity_loss = 0.0f64;
    let mut g = EntryGrads::default();
    let penalised = !matches!(model.activation, super::Activation::TopK { .. } | super::Activation::BatchTopK { .. });
    for (i, dyt) in dyc.chunks_mut(per_token).enumerate() {
        let t = t0 + i;
        let (xt, yt) = (&x[t * per_token..(t + 1) * per_token], &y[t * per_token..(t + 1) * per_token]);
        model.decode_token(codes, t, Some(xt), dyt);
        for m in 0..s.layers {
            let coef = 2.0 / (s.layers as f32 * terms.var[m] * b as f32);
            for (o, &target) in dyt[m * d..(m + 1) * d].iter_mut().zip(&yt[m * d..(m + 1) * d]) {
                let r = *o - target;
                sq[m] += (r * r) as f64;
                *o = coef * r;
            }
        }
        for e in 0..enc {
            let (row, first) = (s.dec_row(e), s.out_layers(e).start * d);
            for j in codes.row(t * enc + e) {
                let (f, z, pre) = (codes.index[j] as usize, codes.value[j], codes.pre[j]);
                let mut dz = dense::dot(&model.w_dec[e][f * row..(f + 1) * row], &dyt[first..first + row]);
                let mut d_norm = 0.0;
                if penalised {
                    let (sv, ds_dz, ds_dn) = penalty(terms.sparsity, z, terms.norms[e * f_n + f]);
                    let scale = terms.lambda / b as f32;
                    sparsity_loss += (scale * sv) as f64;
                    dz += scale * ds_dz;
                    d_norm = scale * ds_dn;
                }
                let theta = if model.threshold.is_empty() { 0.0 } else { model.threshold[e * f_n + f] };
                let (dz_dpre, dz_dtheta) = activation::derivatives(&model.activation, z, pre, theta);
                g.d_pre.push(dz * dz_dpre);
                g.d_theta.push(dz * dz_dtheta);
                g.d_norm.push(d_norm);
            }
        }
    }
    (sq, sparsity_loss, g)
}

/// The entries of each feature, in token order: a counting sort of the codes by (encoder, feature).
struct FeatureGroups {
    /// Group of feature (e, f) is order[start[e·F + f]..start[e·F + f + 1]].
    start: Vec<usize>,
    /// Entry numbers.
    order: Vec<u32>,
    /// Token of each entry.
    token: Vec<u32>,
}

impl FeatureGroups {
    fn new(codes: &Codes, enc: usize, features: usize) -> Self {
        let mut start = vec![0usize; enc * features + 1];
        let mut token = vec![0u32; codes.index.len()];
        for r in 0..codes.rows() {
            for j in codes.row(r) {
                start[(r % enc) * features + codes.index[j] as usize + 1] += 1;
                token[j] = (r / enc) as u32;
            }
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let mut fill = start.clone();
        let mut order = vec![0u32; codes.index.len()];
        for r in 0..codes.rows() {
            for j in codes.row(r) {
                let key = (r % enc) * features + codes.index[j] as usize;
                order[fill[key]] = j as u32;
                fill[key] += 1;
            }
        }
        Self { start, order, token }
    }

    fn of(&self, key: usize) -> &[u32] {
        &self.order[self.start[key]..self.start[key + 1]]
    }

    /// Entries with z > 0 per feature.
    fn fired(&self, codes: &Codes) -> Vec<u32> {
        (0..self.start.len() - 1).map(|k| self.of(k).iter().filter(|&&j| codes.value[j as usize] > 0.0).count() as u32).collect()
    }
}

/// W_enc, b_enc and threshold gradients: one row of d_in per active feature, then transposed into
/// W_enc's [d_in, F] layout.
fn encoder_grads(model: &Transcoder, groups: &FeatureGroups, eg: &EntryGrads, x: &[f32], grad: &mut Transcoder) {
    let s = model.shape;
    let (d_in, f_n, per_token) = (s.d_in(), s.features, s.layers * s.d_model);
    let mut rows = vec![0.0f32; s.encoders() * f_n * d_in]; // [E, F, d_in]
    rows.par_chunks_mut(d_in).enumerate().for_each(|(key, row)| {
        let off = s.input_offset(key / f_n);
        row.fill(0.0);
        for &j in groups.of(key) {
            let t = groups.token[j as usize] as usize;
            dense::axpy(eg.d_pre[j as usize], &x[t * per_token + off..t * per_token + off + d_in], row);
        }
    });
    codes_sum(groups, &eg.d_pre, &mut grad.b_enc);
    if !grad.threshold.is_empty() {
        codes_sum(groups, &eg.d_theta, &mut grad.threshold);
    }
    grad.w_enc.par_chunks_mut(d_in * f_n).zip(rows.par_chunks(d_in * f_n)).for_each(|(g, r)| transpose(r, f_n, d_in, g));
}

/// out[key] = Σ over the feature's entries of v.
fn codes_sum(groups: &FeatureGroups, v: &[f32], out: &mut [f32]) {
    for (key, o) in out.iter_mut().enumerate() {
        *o = groups.of(key).iter().map(|&j| v[j as usize]).sum();
    }
}

/// src [rows, cols] → dst [cols, rows], in blocks that stay in cache.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const B: usize = 32;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// W_dec gradient rows: Σ z·∂loss/∂ŷ over the feature's tokens, plus the penalty's pull on its norm.
fn decoder_grads(model: &Transcoder, codes: &Codes, groups: &FeatureGroups, eg: &EntryGrads, dy: &[f32], norms: &[f32], grad: &mut Transcoder) {
    let s = model.shape;
    let (f_n, per_token, d) = (s.features, s.layers * s.d_model, s.d_model);
    for e in 0..s.encoders() {
        let (row, first) = (s.dec_row(e), s.out_layers(e).start * d);
        let w = &model.w_dec[e];
        grad.w_dec[e].par_chunks_mut(row).enumerate().for_each(|(f, g)| {
            g.fill(0.0);
            let mut d_norm = 0.0;
            for &j in groups.of(e * f_n + f) {
                let (j, t) = (j as usize, groups.token[j as usize] as usize);
                dense::axpy(codes.value[j], &dy[t * per_token + first..t * per_token + first + row], g);
                d_norm += eg.d_norm[j];
            }
            let n = norms[e * f_n + f];
            if d_norm != 0.0 && n > 0.0 {
                dense::axpy(d_norm / n, &w[f * row..(f + 1) * row], g);
            }
        });
    }
}

/// b_dec and W_skip gradients, the dense rest.
fn dense_grads(model: &Transcoder, x: &[f32], dy: &[f32], grad: &mut Transcoder) {
    let s = model.shape;
    let (d, per_token) = (s.d_model, s.layers * s.d_model);
    grad.b_dec.fill(0.0);
    for dyt in dy.chunks(per_token) {
        dense::axpy(1.0, dyt, &mut grad.b_dec);
    }
    if let Some(g) = &mut grad.w_skip {
        // Row (m, k) of W_skip: Σ_t x[t, m, k]·∂loss/∂ŷ[t, m, :].
        g.par_chunks_mut(d).enumerate().for_each(|(mk, row)| {
            let (m, k) = (mk / d, mk % d);
            row.fill(0.0);
            for (xt, dyt) in x.chunks(per_token).zip(dy.chunks(per_token)) {
                dense::axpy(xt[m * d + k], &dyt[m * d..(m + 1) * d], row);
            }
        });
    }
}
