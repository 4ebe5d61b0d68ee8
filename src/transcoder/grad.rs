//! Loss and hand-written gradient of one batch. Only the encoder product is dense; the decoder's
//! forward and every gradient after it run over the active features alone.
//!
//! Loss = (1/L) Σ_m ‖ŷ_m − y_m‖²/Var(y_m)  (mean over tokens; the mean over layers keeps λ on the
//! reference's scale) + λ · mean_tokens Σ_{e,f} s(z_ef, ‖W_dec,ef‖).

use rayon::prelude::*;

use super::activation::{self, Codes};
use super::clt::{add_decoded, AuxSelect, Transcoder, CHUNK};
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
    /// The AuxK loss (0 without AuxK).
    pub aux_loss: f32,
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
    pub aux: Option<AuxK<'a>>,
}

/// AuxK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", §A.2): the top `k` dead
/// features of each token reconstruct the main model's error e = y − ŷ, with loss
/// coef · (1/L) Σ_m ‖ê_m − e_m‖²/Var(y_m) (normalised like the main loss; e is a constant).
pub struct AuxK<'a> {
    /// Per encoder, the dead features.
    pub dead: &'a [Vec<u32>],
    pub k: usize,
    pub coef: f32,
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

/// One entry's results of the backward pass; a step's are parallel to the codes' entries.
#[derive(Clone, Copy, Default)]
struct EntryGrad {
    /// ∂loss/∂pre.
    d_pre: f32,
    /// ∂loss/∂θ through the straight-through estimator.
    d_theta: f32,
    /// ∂loss/∂‖W_dec,f‖ from the penalty.
    d_norm: f32,
}

/// Fills `grad` (same shapes as `model`) with ∂loss/∂params for x, y [B, L, d].
pub fn loss_and_grad(model: &Transcoder, x: &[f32], y: &[f32], terms: &LossTerms, grad: &mut Transcoder) -> StepStats {
    let s = model.shape;
    let (l, per_token, enc) = (s.layers, s.layers * s.d_model, s.encoders());
    let b = x.len() / per_token;
    let aux_select = terms.aux.as_ref().map(|a| AuxSelect { dead: a.dead, k: a.k });
    let (mut codes, aux_codes) = model.encode_with(x, !model.threshold.is_empty(), aux_select.as_ref());
    // Room for AuxK's entries and tokens up front, so that appending them moves nothing.
    let mut eg = Vec::with_capacity(codes.index.len() + aux_codes.index.len());
    eg.resize(codes.index.len(), EntryGrad::default());
    let mut dy = Vec::with_capacity(if terms.aux.is_some() { 2 } else { 1 } * b * per_token);
    dy.resize(b * per_token, 0.0);
    // ∂loss/∂ŷ [B, L, d] and the entries' gradients, per chunk of tokens; the squared error per
    // layer and the sparsity loss come back.
    let entry_chunks = split_by_tokens(&mut eg, &codes, enc, b);
    let parts: Vec<(Vec<f64>, f64)> = dy
        .par_chunks_mut(CHUNK * per_token)
        .zip(entry_chunks)
        .enumerate()
        .map(|(c, (dyc, g))| backward_chunk(model, &codes, x, y, terms, c * CHUNK, dyc, g, b))
        .collect();
    let mut sq = vec![0.0f64; l];
    let mut sparsity_loss = 0.0f64;
    for (sqc, sp) in parts {
        sq.iter_mut().zip(&sqc).for_each(|(a, v)| *a += v);
        sparsity_loss += sp;
    }
    // b_dec and W_skip see the main reconstruction only (AuxK's ê has no bias or skip path).
    dense_grads(model, x, &dy, grad);
    let mut aux_loss = 0.0;
    if let Some(aux) = &terms.aux {
        // AuxK entries join the main ones as tokens B..2B, whose ∂loss/∂ŷ is ∂aux/∂ê.
        let (dy_aux, eg_aux, loss) = aux_backward(model, &aux_codes, &dy, terms.var, aux.coef);
        codes.extend(&aux_codes);
        eg.extend(eg_aux);
        dy.extend(dy_aux);
        aux_loss = loss;
    }
    let groups = FeatureGroups::new(&codes, enc, s.features, b);
    encoder_grads(model, &groups, &eg, x, grad);
    decoder_grads(model, &codes, &groups, &eg, &dy, terms.norms, grad);
    StepStats {
        fvu: sq.iter().zip(terms.var).map(|(v, var)| (*v / (b as f64 * *var as f64)) as f32).collect(),
        l0: l0_per_encoder(&groups.fired, enc, b),
        sparsity_loss: sparsity_loss as f32,
        aux_loss,
        fired: groups.fired,
    }
}

/// The entry gradients of each CHUNK tokens of `tokens`, as disjoint slices (a chunk's entries
/// are contiguous: codes are token-major).
fn split_by_tokens<'a>(eg: &'a mut [EntryGrad], codes: &Codes, enc: usize, tokens: usize) -> Vec<&'a mut [EntryGrad]> {
    split_at_ends(eg, (0..tokens).step_by(CHUNK).map(|t0| codes.offsets[(t0 + CHUNK).min(tokens) * enc]))
}

/// `s` cut into consecutive pieces ending at the ascending offsets `ends`: s[..ends[0]],
/// s[ends[0]..ends[1]], …
fn split_at_ends<T>(mut s: &mut [T], ends: impl Iterator<Item = usize>) -> Vec<&mut [T]> {
    let mut start = 0;
    ends.map(|end| {
        let (piece, rest) = std::mem::take(&mut s).split_at_mut(end - start);
        (s, start) = (rest, end);
        piece
    })
    .collect()
}

/// Decode the tokens from `t0`, write ∂loss/∂ŷ into dyc, and back-propagate into their entries
/// (g: the entries of these tokens).
#[allow(clippy::too_many_arguments)]
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn backward_chunk(model: &Transcoder, codes: &Codes, x: &[f32], y: &[f32], terms: &LossTerms, t0: usize, dyc: &mut [f32], g: &mut [EntryGrad], b: usize) -> (Vec<f64>, f64) {
    let s = model.shape;
    let (d, per_token, enc, f_n) = (s.d_model, s.layers * s.d_model, s.encoders(), s.features);
    let mut sq = vec![0.0f64; s.layers];
    let mut sparsity_loss = 0.0f64;
    let mut g = g.iter_mut();
    let penalised = model.activation.penalised();
    for (i, dyt) in dyc.chunks_mut(per_token).enumerate() {
        let t = t0 + i;
        let (xt, yt) = (&x[t * per_token..(t + 1) * per_token], &y[t * per_token..(t + 1) * per_token]);
        model.decode_token(codes, t, Some(xt), dyt);
        for m in 0..s.layers {
            let coef = 2.0 / (s.layers as f32 * terms.var[m] * b as f32);
            // Summed in a local: added to sq[m] in place, each element's add was a store and load.
            let mut layer_sq = 0.0f64;
            for (o, &target) in dyt[m * d..(m + 1) * d].iter_mut().zip(&yt[m * d..(m + 1) * d]) {
                let r = *o - target;
                layer_sq += (r * r) as f64;
                *o = coef * r;
            }
            sq[m] += layer_sq;
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
                *g.next().expect("one gradient per entry") = EntryGrad { d_pre: dz * dz_dpre, d_theta: dz * dz_dtheta, d_norm };
            }
        }
    }
    (sq, sparsity_loss)
}

/// Mean active features per token of each encoder, from the firing counts [E, F] of `tokens` tokens.
pub(crate) fn l0_per_encoder(fired: &[u32], encoders: usize, tokens: usize) -> Vec<f32> {
    fired.chunks(fired.len() / encoders.max(1)).map(|c| c.iter().sum::<u32>() as f32 / tokens as f32).collect()
}

/// ∂aux/∂ê [B, L, d] and the AuxK entries' gradients, from the main ∂loss/∂ŷ (which is
/// 2(ŷ − y)/(L·Var·B), so it gives back the error e). Returns the AuxK loss too.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn aux_backward(model: &Transcoder, aux: &Codes, dy: &[f32], var: &[f32], coef: f32) -> (Vec<f32>, Vec<EntryGrad>, f32) {
    let s = model.shape;
    let (d, l, per_token, enc) = (s.d_model, s.layers, s.layers * s.d_model, s.encoders());
    let b = dy.len() / per_token;
    let mut dy_aux = vec![0.0; dy.len()];
    let mut loss = 0.0f64;
    let mut g = Vec::with_capacity(aux.index.len());
    for (t, (dat, dyt)) in dy_aux.chunks_mut(per_token).zip(dy.chunks(per_token)).enumerate() {
        dat.fill(0.0);
        add_decoded(model, aux, t, dat);
        for m in 0..l {
            let main_coef = 2.0 / (l as f32 * var[m] * b as f32);
            for (o, &dm) in dat[m * d..(m + 1) * d].iter_mut().zip(&dyt[m * d..(m + 1) * d]) {
                let diff = *o + dm / main_coef; // ê − e, with e = y − ŷ = −dm/main_coef
                loss += (coef * diff * diff / (l as f32 * var[m] * b as f32)) as f64;
                *o = coef * main_coef * diff;
            }
        }
        for e in 0..enc {
            let (row, first) = (s.dec_row(e), s.out_layers(e).start * d);
            for j in aux.row(t * enc + e) {
                let f = aux.index[j] as usize;
                let d_pre = dense::dot(&model.w_dec[e][f * row..(f + 1) * row], &dat[first..first + row]);
                g.push(EntryGrad { d_pre, ..Default::default() });
            }
        }
    }
    (dy_aux, g, loss as f32)
}

/// The entries of each feature, in token order: a counting sort of the codes by (encoder,
/// feature), each encoder's in parallel (its groups are one contiguous span).
struct FeatureGroups {
    /// Group of feature (e, f) is members[start[e·F + f]..start[e·F + f + 1]].
    start: Vec<usize>,
    /// (entry number, token) of each member.
    members: Vec<(u32, u32)>,
    /// Entries with z > 0 per feature among the first `main` tokens' (AuxK's follow them), [E, F],
    /// counted in the sort's counting pass: a pass of their own took 3 % of a step (F 1,024, ReLU).
    fired: Vec<u32>,
}

impl FeatureGroups {
    fn new(codes: &Codes, enc: usize, features: usize, main: usize) -> Self {
        let tokens = codes.rows() / enc;
        let rows_of = |e: usize| (0..tokens).map(move |t| (t, codes.row(t * enc + e)));
        let counts: Vec<(Vec<usize>, Vec<u32>)> = (0..enc)
            .into_par_iter()
            .map(|e| {
                let (mut n, mut fired) = (vec![0usize; features], vec![0u32; features]);
                for (t, r) in rows_of(e) {
                    for (&f, &z) in codes.index[r.clone()].iter().zip(&codes.value[r]) {
                        n[f as usize] += 1;
                        fired[f as usize] += (t < main && z > 0.0) as u32;
                    }
                }
                (n, fired)
            })
            .collect();
        let mut start = Vec::with_capacity(enc * features + 1);
        start.push(0);
        for n in counts.iter().flat_map(|c| &c.0) {
            start.push(start[start.len() - 1] + n);
        }
        let fired = counts.into_iter().flat_map(|c| c.1).collect();
        let mut members = vec![(0u32, 0u32); codes.index.len()];
        let spans = split_at_ends(&mut members, (1..=enc).map(|e| start[e * features]));
        spans.into_par_iter().enumerate().for_each(|(e, span)| {
            let base = start[e * features];
            let mut fill: Vec<usize> = start[e * features..(e + 1) * features].iter().map(|s| s - base).collect();
            for (t, r) in rows_of(e) {
                for j in r {
                    let at = &mut fill[codes.index[j] as usize];
                    span[*at] = (j as u32, t as u32);
                    *at += 1;
                }
            }
        });
        Self { start, members, fired }
    }

    fn of(&self, key: usize) -> &[(u32, u32)] {
        &self.members[self.start[key]..self.start[key + 1]]
    }
}

/// Features per task of `encoder_grads`: their rows of d_in fit in L1 while they are transposed.
const GRAD_BLOCK: usize = 64;

/// W_enc, b_enc and threshold gradients. Each task takes GRAD_BLOCK features of one encoder: it
/// sums their rows of d_in, then writes them transposed into its columns of W_enc's [d_in, F]
/// layout, so that no [E, F, d_in] buffer the size of W_enc is ever held.
fn encoder_grads(model: &Transcoder, groups: &FeatureGroups, eg: &[EntryGrad], x: &[f32], grad: &mut Transcoder) {
    let s = model.shape;
    let (d_in, f_n, per_token) = (s.d_in(), s.features, s.layers * s.d_model);
    let b = x.len() / per_token; // AuxK entries sit at tokens B..2B
    // Per (encoder, block): the block's piece of each of the encoder's d_in rows.
    let per_enc = f_n.div_ceil(GRAD_BLOCK);
    let mut columns: Vec<Vec<&mut [f32]>> = (0..s.encoders() * per_enc).map(|_| Vec::with_capacity(d_in)).collect();
    for (r, row) in grad.w_enc.chunks_mut(f_n).enumerate() {
        for (c, piece) in row.chunks_mut(GRAD_BLOCK).enumerate() {
            columns[(r / d_in) * per_enc + c].push(piece);
        }
    }
    columns.into_par_iter().enumerate().for_each(|(task, mut cols)| {
        let (e, f0) = (task / per_enc, (task % per_enc) * GRAD_BLOCK);
        let (n, off) = (cols[0].len(), s.input_offset(e));
        let mut rows = vec![0.0f32; n * d_in]; // [n, d_in]
        for (i, row) in rows.chunks_mut(d_in).enumerate() {
            let inputs = groups.of(e * f_n + f0 + i).iter().map(|&(j, t)| {
                let t = t as usize % b;
                (eg[j as usize].d_pre, &x[t * per_token + off..t * per_token + off + d_in])
            });
            weighted_sum(inputs, row);
        }
        for (k, col) in cols.iter_mut().enumerate() {
            for (i, v) in col.iter_mut().enumerate() {
                *v = rows[i * d_in + k];
            }
        }
    });
    codes_sum(groups, |j| eg[j].d_pre, &mut grad.b_enc);
    if !grad.threshold.is_empty() {
        codes_sum(groups, |j| eg[j].d_theta, &mut grad.threshold);
    }
}

/// out = Σ a·x over the (a, x) pairs.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn weighted_sum<'a>(terms: impl Iterator<Item = (f32, &'a [f32])> + Clone, out: &mut [f32]) {
    out.fill(0.0);
    dense::add_weighted(terms, out);
}

/// out[key] = Σ over the feature's entries j of v(j).
fn codes_sum(groups: &FeatureGroups, v: impl Fn(usize) -> f32 + Sync, out: &mut [f32]) {
    out.par_iter_mut().with_min_len(256).enumerate().for_each(|(key, o)| {
        *o = groups.of(key).iter().map(|&(j, _)| v(j as usize)).sum();
    });
}

/// W_dec gradient rows: Σ z·∂loss/∂ŷ over the feature's tokens, plus the penalty's pull on its norm.
fn decoder_grads(model: &Transcoder, codes: &Codes, groups: &FeatureGroups, eg: &[EntryGrad], dy: &[f32], norms: &[f32], grad: &mut Transcoder) {
    let s = model.shape;
    let (f_n, per_token, d) = (s.features, s.layers * s.d_model, s.d_model);
    for e in 0..s.encoders() {
        let (row, first) = (s.dec_row(e), s.out_layers(e).start * d);
        let w = &model.w_dec[e];
        grad.w_dec[e].par_chunks_mut(row).enumerate().for_each(|(f, g)| {
            let entries = groups.of(e * f_n + f);
            let inputs = entries.iter().map(|&(j, t)| {
                let t = t as usize;
                (codes.value[j as usize], &dy[t * per_token + first..t * per_token + first + row])
            });
            weighted_sum(inputs, g);
            let d_norm: f32 = entries.iter().map(|&(j, _)| eg[j as usize].d_norm).sum();
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
