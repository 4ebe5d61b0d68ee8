//! The transcoder itself: CLT, PLT and MLSAE are one model whose encoders and decoder targets differ.
//!
//! Parameters in the trainer's layout (`export` writes circuit-tracer's), per encoder e (E = L for
//! CLT/PLT, 1 for the MLSAE):
//!   W_enc [E, d_in, F], b_enc [E, F], W_dec[e] [F, n_out(e), d], b_dec [L, d],
//!   threshold [E, F] (JumpReLU), W_skip [L, d, d] (optional).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::activation::{self, Codes, RowSelect};
use super::config::{Activation, TranscoderConfig, Variant};
use super::dense;

/// Sizes of a transcoder and where its encoders read and its decoders write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub variant: Variant,
    pub layers: usize,
    pub d_model: usize,
    pub features: usize,
}

impl Shape {
    /// Refuses a model this transcoder was not made for: it must read the model's layers at its
    /// residual width. `folders` (the transcoder's and the model's), where known, go into the message.
    pub fn check_fits(&self, layers: usize, d_model: usize, folders: Option<(&std::path::Path, &std::path::Path)>) -> crate::Result<()> {
        if (self.layers, self.d_model) == (layers, d_model) {
            return Ok(());
        }
        let (tc, model) = folders.map_or((String::new(), String::new()), |(t, m)| (format!(" in {}", t.display()), format!(" in {}", m.display())));
        Err(crate::Error::Config(format!(
            "the transcoder{tc} reads {} layers of width {}, the model{model} has {layers} of width {d_model}: a transcoder serves the model it was trained on",
            self.layers, self.d_model
        )))
    }

    pub fn encoders(&self) -> usize {
        if self.variant == Variant::Mlsae { 1 } else { self.layers }
    }
    /// Width of an encoder's input: one layer's resid_mid, or all of them concatenated.
    pub fn d_in(&self) -> usize {
        if self.variant == Variant::Mlsae { self.layers * self.d_model } else { self.d_model }
    }
    /// Offset of encoder e's input inside one token's [L, d] resid_mid.
    pub fn input_offset(&self, e: usize) -> usize {
        if self.variant == Variant::Mlsae { 0 } else { e * self.d_model }
    }
    /// The layers encoder e's decoder writes to; the CLT's reach only forward, which is its causality.
    pub fn out_layers(&self, e: usize) -> std::ops::Range<usize> {
        match self.variant {
            Variant::Clt => e..self.layers,
            Variant::Plt | Variant::Sae => e..e + 1,
            Variant::Mlsae => 0..self.layers,
        }
    }
    /// Length of one feature's concatenated decoder rows, n_out(e)·d.
    pub fn dec_row(&self, e: usize) -> usize {
        self.out_layers(e).len() * self.d_model
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transcoder {
    pub shape: Shape,
    pub activation: Activation,
    /// [E, d_in, F]
    pub w_enc: Vec<f32>,
    /// [E, F]
    pub b_enc: Vec<f32>,
    /// Per encoder e: [F, n_out(e), d].
    pub w_dec: Vec<Vec<f32>>,
    /// [L, d]
    pub b_dec: Vec<f32>,
    /// [E, F] JumpReLU thresholds; empty for other activations.
    pub threshold: Vec<f32>,
    /// [L, d, d] skip path, y_m += x_m·W_skip[m].
    pub w_skip: Option<Vec<f32>>,
}

/// AuxK's candidates: per encoder the dead features, and how many of them each token may use.
pub(crate) struct AuxSelect<'a> {
    pub dead: &'a [Vec<u32>],
    pub k: usize,
}

/// Encoder inputs: tokens of `stride` values, holding the inputs of `encoders` from the first one's
/// input offset on (a whole token's resid_mid [L, d], or one layer's [d]).
#[derive(Clone)]
struct Input<'a> {
    x: &'a [f32],
    stride: usize,
    encoders: std::ops::Range<usize>,
}

/// What one forward pass gives back.
pub struct ForwardOutput {
    /// Active features per (token, encoder).
    pub codes: Codes,
    /// Reconstructed mlp_out [n, L, d].
    pub mlp_out: Vec<f32>,
}

/// Tokens handled by one rayon task in the backward pass: few enough to balance.
pub(crate) const CHUNK: usize = 64;
/// Tokens per encoder task, at most and at least, and features per column block of its product.
/// With W_enc packed once per call, tasks of 64, 128 and 256–512 rows ran the encoder within 3 %
/// of each other (F 4,096 and 16,384, 1–2 threads, 3 rounds). Column blocks of 4,096 ran it
/// 10–13 % faster than blocks of 1,024 at F 4,096 and within ±5 % at F 8k–16k (1–2 threads): a
/// row's TopK floor starts at a bound over its first block, so the wider that block, the fewer
/// values of the row pass it. Whole rows at F 16k (16–32 MiB of pre-activations a task) spilled
/// from the L3 cache: 40 % slower on one thread.
const ENCODE_ROWS: std::ops::RangeInclusive<usize> = 128..=512;
const ENCODE_COLS: usize = 4096;
/// Bytes of pre-activations per block of a task's rows (`encode_chunk`): a quarter of the L2
/// cache a core had on the machine that measured it (2 MiB). With AVX-512's twelve-row tiles
/// (`dense`; either change alone gained nothing), blocks ran the encoder 4 % faster than a task's
/// whole rows at F 4,096 and 3 % at F 16,384, the same at F 1,024 (2 threads, alternated).
const PRE_BYTES: usize = 1 << 19;

impl Transcoder {
    /// All-zero parameters of the right shapes (the trainer initialises them).
    pub fn zeros(cfg: &TranscoderConfig, layers: usize, d_model: usize) -> Self {
        let shape = Shape { variant: cfg.variant, layers, d_model, features: cfg.features };
        let (e, f, d) = (shape.encoders(), shape.features, d_model);
        Self {
            shape,
            activation: cfg.activation,
            w_enc: vec![0.0; e * shape.d_in() * f],
            b_enc: vec![0.0; e * f],
            w_dec: (0..e).map(|i| vec![0.0; f * shape.dec_row(i)]).collect(),
            b_dec: vec![0.0; layers * d],
            threshold: match cfg.activation {
                Activation::JumpRelu { threshold, .. } => vec![threshold; e * f],
                _ => Vec::new(),
            },
            w_skip: cfg.skip.then(|| vec![0.0; layers * d * d]),
        }
    }

    /// W_enc[e] as [d_in, F].
    pub fn w_enc_of(&self, e: usize) -> &[f32] {
        let n = self.shape.d_in() * self.shape.features;
        &self.w_enc[e * n..(e + 1) * n]
    }

    fn threshold_of(&self, e: usize) -> &[f32] {
        let f = self.shape.features;
        if self.threshold.is_empty() { &[] } else { &self.threshold[e * f..(e + 1) * f] }
    }

    /// Sparse codes of `n` tokens of resid_mid x [n, L, d]. With `window`, JumpReLU entries near the
    /// threshold are kept at value 0 for training. BatchTopK cuts across the tokens of this call.
    /// With `aux`, also returns AuxK's codes: per (token, encoder) the top k dead features.
    pub(crate) fn encode_with(&self, x: &[f32], window: bool, aux: Option<&AuxSelect>) -> (Codes, Codes) {
        let input = Input { x, stride: self.shape.layers * self.shape.d_model, encoders: 0..self.shape.encoders() };
        self.encode_input(&input, window, aux)
    }

    /// Sparse codes of encoder `e` alone from its input x [n, d_in], one row per token: the rows
    /// `encode` gives that encoder (BatchTopK's cut is per encoder).
    pub fn encode_layer(&self, e: usize, x: &[f32]) -> Codes {
        self.encode_input(&Input { x, stride: self.shape.d_in(), encoders: e..e + 1 }, false, None).0
    }

    fn encode_input(&self, input: &Input, window: bool, aux: Option<&AuxSelect>) -> (Codes, Codes) {
        // Two tasks per thread, so that one slow thread does not hold up the rest.
        let rows = (input.x.len() / input.stride).div_ceil(2 * rayon::current_num_threads()).clamp(*ENCODE_ROWS.start(), *ENCODE_ROWS.end());
        let (f_n, d_in) = (self.shape.features, self.shape.d_in());
        let w: Vec<dense::Panels> = input
            .encoders
            .clone()
            .into_par_iter()
            .map(|e| dense::Panels::pack(self.w_enc_of(e), f_n, d_in, f_n, Some(&self.b_enc[e * f_n..(e + 1) * f_n])))
            .collect();
        let chunks: Vec<(Codes, Codes)> = input
            .x
            .par_chunks(rows * input.stride)
            .map(|x| self.encode_chunk(&Input { x, ..input.clone() }, &w, window, aux))
            .collect();
        let (codes, aux_codes) = (Codes::concat(chunks.iter().map(|c| &c.0)), Codes::concat(chunks.iter().map(|c| &c.1)));
        let codes = match self.activation {
            Activation::BatchTopK { k } => activation::batch_top_k(&codes, input.encoders.len(), k),
            _ => codes,
        };
        (codes, aux_codes)
    }

    /// `encode_input` on a chunk of tokens; w: W_enc and b_enc of the input's encoders, packed.
    fn encode_chunk(&self, input: &Input, w: &[dense::Panels], window: bool, aux: Option<&AuxSelect>) -> (Codes, Codes) {
        let (x, stride, f_n) = (input.x, input.stride, self.shape.features);
        let n = x.len() / stride;
        let cols = ENCODE_COLS.min(f_n);
        let mut pre = Vec::new(); // [rows, cols]: one block of rows and columns of one encoder at a time
        // The selections of every (token, encoder) row at once, in the codes' token-major order,
        // finished into codes allocated once: each encoder's codes, grown entry by entry and then
        // interleaved, were reallocations and one more copy of every entry.
        let enc = input.encoders.len();
        let mut rows: Vec<RowSelect> = (0..n * enc).map(|_| RowSelect::for_activation(&self.activation, f_n)).collect();
        let mut aux_rows: Vec<RowSelect> = (0..n * enc).map(|_| RowSelect::top(aux.map(|a| a.k))).collect();
        // Blocks of rows whose pre-activations stay in the L2 cache from the product to the
        // selection: all of a task's rows at F 4,096 were 4 MiB, written out to L3 and read back.
        let block = (PRE_BYTES / (4 * cols.max(1))).max(1).next_multiple_of(dense::ROW_BLOCK);
        for r0 in (0..n).step_by(block) {
            let (xs, nr) = (&x[r0 * stride..], block.min(n - r0));
            for (i, (e, w)) in input.encoders.clone().zip(w).enumerate() {
                let threshold = self.threshold_of(e);
                let offset = self.shape.input_offset(e) - self.shape.input_offset(input.encoders.start);
                for f0 in (0..f_n).step_by(cols) {
                    let f1 = (f0 + cols).min(f_n);
                    dense::product(xs, stride, offset, nr, w, f0, f1, &mut pre);
                    let dead = aux.map(|a| {
                        let dead = &a.dead[e];
                        &dead[dead.partition_point(|&f| (f as usize) < f0)..dead.partition_point(|&f| (f as usize) < f1)]
                    });
                    let threshold = threshold.get(f0..f1).unwrap_or(&[]);
                    for (r, row) in pre.chunks(f1 - f0).enumerate() {
                        let at = (r0 + r) * enc + i;
                        rows[at].offer(&self.activation, f0, row, threshold, window);
                        if let Some(dead) = dead {
                            aux_rows[at].offer_among(f0, row, dead);
                        }
                    }
                }
            }
        }
        (RowSelect::finish_all(&mut rows), RowSelect::finish_all(&mut aux_rows))
    }

    /// Sparse codes of resid_mid x [n, L, d].
    pub fn encode(&self, x: &[f32]) -> Codes {
        self.encode_with(x, false, None).0
    }

    /// Reconstructed mlp_out [n, L, d] from codes, plus the skip path when x is given.
    pub fn decode(&self, codes: &Codes, x: Option<&[f32]>) -> Vec<f32> {
        let per_token = self.shape.layers * self.shape.d_model;
        let n = codes.rows() / self.shape.encoders();
        let mut y = vec![0.0; n * per_token];
        y.par_chunks_mut(per_token).enumerate().for_each(|(t, yt)| {
            self.decode_token(codes, t, x.map(|x| &x[t * per_token..(t + 1) * per_token]), yt);
        });
        y
    }

    /// Reconstructed mlp_out of layer m alone, [n, d]: b_dec[m] + the writes to m of every
    /// encoder e that reaches it, from `codes(e)` (`encode_layer`'s rows, one per token), plus the
    /// skip path when x_m [n, d] is given. The layer-m slice of `decode`, encoding only what m needs.
    pub fn decode_layer<'c>(&self, m: usize, codes: impl Fn(usize) -> &'c Codes, x: Option<&[f32]>) -> Vec<f32> {
        let (s, d) = (self.shape, self.shape.d_model);
        let writers: Vec<(usize, &Codes)> = (0..s.encoders()).filter(|&e| s.out_layers(e).contains(&m)).map(|e| (e, codes(e))).collect();
        let n = writers.first().map_or(0, |(_, c)| c.rows());
        let mut y = vec![0.0; n * d];
        y.par_chunks_mut(d).enumerate().for_each(|(t, yt)| decode_layer_token(self, m, &writers, t, x.map(|x| &x[t * d..(t + 1) * d]), yt));
        y
    }

    /// ŷ_t [L, d] = b_dec + Σ_e Σ_active z·W_dec[e][f] (+ skip).
    pub(crate) fn decode_token(&self, codes: &Codes, t: usize, x: Option<&[f32]>, y: &mut [f32]) {
        decode_token(self, codes, t, x, y)
    }

    /// encode then decode: resid_mid x [n, L, d] → codes and reconstructed mlp_out [n, L, d].
    pub fn forward(&self, x: &[f32]) -> ForwardOutput {
        let codes = self.encode(x);
        let mlp_out = self.decode(&codes, Some(x));
        ForwardOutput { codes, mlp_out }
    }

    /// ‖W_dec,f‖ over each feature's concatenated decoder rows, [E, F].
    pub fn decoder_norms(&self) -> Vec<f32> {
        (0..self.shape.encoders())
            .flat_map(|e| {
                let row = self.shape.dec_row(e);
                self.w_dec[e].par_chunks(row).map(|r| dense::dot(r, r).sqrt()).collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every parameter tensor with its checkpoint name, in a fixed order (see `tensors_mut`).
    pub fn tensors(&self) -> Vec<(String, &[f32])> {
        let mut t: Vec<(String, &[f32])> = vec![("w_enc".into(), &self.w_enc), ("b_enc".into(), &self.b_enc)];
        t.extend(self.w_dec.iter().enumerate().map(|(e, w)| (format!("w_dec_{e}"), w.as_slice())));
        t.push(("b_dec".into(), &self.b_dec));
        t.push(("threshold".into(), &self.threshold));
        if let Some(w) = &self.w_skip {
            t.push(("w_skip".into(), w));
        }
        t
    }

    /// The same tensors as `tensors`, in the same order, mutable.
    pub(crate) fn tensors_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut t = vec![&mut self.w_enc, &mut self.b_enc];
        t.extend(self.w_dec.iter_mut());
        t.push(&mut self.b_dec);
        t.push(&mut self.threshold);
        if let Some(w) = &mut self.w_skip {
            t.push(w);
        }
        t
    }

    /// Multiply the input by per-layer constants inside the weights, so that the model reads
    /// unscaled resid_mid: pre = (s·x)·W = x·(s·W). scale: [L].
    pub fn fold_input_scale(&mut self, scale: &[f32]) {
        let (s, d, f) = (self.shape, self.shape.d_model, self.shape.features);
        for e in 0..s.encoders() {
            for k in 0..s.d_in() {
                let layer = (s.input_offset(e) + k) / d;
                let base = (e * s.d_in() + k) * f;
                self.w_enc[base..base + f].iter_mut().for_each(|w| *w *= scale[layer]);
            }
        }
        if let Some(w) = &mut self.w_skip {
            for (m, block) in w.chunks_mut(d * d).enumerate() {
                block.iter_mut().for_each(|v| *v *= scale[m]);
            }
        }
    }
}

/// `Transcoder::decode_token`, compiled for AVX2 and AVX-512 too (see `dense`).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn decode_token(model: &Transcoder, codes: &Codes, t: usize, x: Option<&[f32]>, y: &mut [f32]) {
    let s = model.shape;
    y.copy_from_slice(&model.b_dec);
    add_decoded(model, codes, t, y);
    if let (Some(w), Some(x)) = (&model.w_skip, x) {
        let d = s.d_model;
        for m in 0..s.layers {
            add_skip(w, m, &x[m * d..(m + 1) * d], &mut y[m * d..(m + 1) * d]);
        }
    }
}

/// `Transcoder::decode_layer` of token t into y [d], from the codes of the encoders that write to
/// layer m; compiled for AVX2 and AVX-512 too (its decoder rows were a third of an intervention's time without).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn decode_layer_token(model: &Transcoder, m: usize, writers: &[(usize, &Codes)], t: usize, x: Option<&[f32]>, y: &mut [f32]) {
    let (s, d) = (model.shape, model.shape.d_model);
    y.copy_from_slice(&model.b_dec[m * d..(m + 1) * d]);
    for &(e, c) in writers {
        let (row, at) = (s.dec_row(e), (m - s.out_layers(e).start) * d);
        let w = &model.w_dec[e];
        dense::add_weighted(c.row(t).map(|i| (c.value[i], &w[c.index[i] as usize * row + at..][..d])), y);
    }
    if let (Some(w), Some(x)) = (&model.w_skip, x) {
        add_skip(w, m, x, y);
    }
}

/// y [d] += x [d]·W_skip[m], layer m's skip path. Inlined, as `add_decoded` is.
#[inline(always)]
fn add_skip(w_skip: &[f32], m: usize, x: &[f32], y: &mut [f32]) {
    let d = y.len();
    for (k, &xk) in x.iter().enumerate() {
        dense::axpy(xk, &w_skip[(m * d + k) * d..(m * d + k + 1) * d], y);
    }
}

/// y [L, d] += Σ_e Σ_active z·W_dec[e][f] over token t's codes: the decoder rows alone (no bias or
/// skip). Inlined, so that each multiversioned caller has its AVX2 copy.
#[inline(always)]
pub(crate) fn add_decoded(model: &Transcoder, codes: &Codes, t: usize, y: &mut [f32]) {
    let s = model.shape;
    for e in 0..s.encoders() {
        let (row, first) = (s.dec_row(e), s.out_layers(e).start * s.d_model);
        let w = &model.w_dec[e];
        let terms = codes.row(t * s.encoders() + e).map(|i| (codes.value[i], &w[codes.index[i] as usize * row..][..row]));
        dense::add_weighted(terms, &mut y[first..first + row]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Rows wider than one column block (a full block and a partial one), and more tokens than
    /// one block of rows (37 against 36), give, for every activation and for AuxK, the entries that
    /// the definition over whole rows gives: the block offsets of features, thresholds, dead lists
    /// and tokens line up. Pre-activations are recomputed here in f64; the seeds leave no near-tie
    /// at any cut.
    #[test]
    fn encoding_across_column_blocks_matches_the_whole_row_definition() {
        let (layers, d, tokens, f_n) = (2, 3, 37, ENCODE_COLS + 37);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut draw = |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|_| scale * (rng.random::<f32>() * 2.0 - 1.0)).collect() };
        let x = draw(tokens * layers * d, 1.0);
        let dead: Vec<Vec<u32>> = (0..layers).map(|e| (0..f_n as u32).filter(|f| (f + e as u32).is_multiple_of(97)).collect()).collect();
        let aux = AuxSelect { dead: &dead, k: 4 };
        for activation in [Activation::Relu, Activation::JumpRelu { threshold: 0.6, bandwidth: 0.2 }, Activation::TopK { k: 9 }] {
            let cfg = TranscoderConfig { features: f_n, activation, ..Default::default() };
            let mut tc = Transcoder::zeros(&cfg, layers, d);
            tc.w_enc = draw(tc.w_enc.len(), 0.8);
            tc.b_enc = draw(tc.b_enc.len(), 0.3);
            // Thresholds differ by feature, so that a block read against another's shows.
            tc.threshold = draw(tc.threshold.len(), 0.3).iter().map(|v| v + 0.6).collect();
            let (codes, aux_codes) = tc.encode_with(&x, true, Some(&aux));
            let s = tc.shape;
            for t in 0..tokens {
                for e in 0..s.encoders() {
                    let (w, input) = (tc.w_enc_of(e), &x[t * layers * d + s.input_offset(e)..][..s.d_in()]);
                    let pre: Vec<f64> = (0..f_n)
                        .map(|f| {
                            input.iter().enumerate().map(|(i, &v)| v as f64 * w[i * f_n + f] as f64).sum::<f64>() + tc.b_enc[e * f_n + f] as f64
                        })
                        .collect();
                    let top = |candidates: Vec<usize>, k: usize| {
                        let mut c: Vec<usize> = candidates.into_iter().filter(|&f| pre[f] > 0.0).collect();
                        c.sort_by(|&a, &b| pre[b].total_cmp(&pre[a]));
                        c.truncate(k);
                        c.sort();
                        c.into_iter().map(|f| (f as u32, pre[f])).collect::<Vec<_>>()
                    };
                    let want: Vec<(u32, f64)> = match activation {
                        Activation::JumpRelu { bandwidth, .. } => (0..f_n)
                            .filter_map(|f| {
                                let gap = pre[f] - tc.threshold[e * f_n + f] as f64;
                                (gap > 0.0).then_some((f as u32, pre[f])).or((gap.abs() < 0.5 * bandwidth as f64).then_some((f as u32, 0.0)))
                            })
                            .collect(),
                        Activation::TopK { k } => top((0..f_n).collect(), k),
                        _ => top((0..f_n).collect(), f_n),
                    };
                    let want_aux = top(dead[e].iter().map(|&f| f as usize).collect(), aux.k);
                    for (got, want, what) in [(&codes, &want, "codes"), (&aux_codes, &want_aux, "AuxK")] {
                        let r = got.row(t * s.encoders() + e);
                        let got: Vec<(u32, f32)> = r.map(|i| (got.index[i], got.value[i])).collect();
                        let (g, w): (Vec<u32>, Vec<u32>) = (got.iter().map(|g| g.0).collect(), want.iter().map(|w| w.0).collect());
                        let first = g.iter().zip(&w).position(|(a, b)| a != b);
                        assert!(g == w, "{activation:?} {what}, token {t}, encoder {e}: {} entries, {} wanted, first difference at {first:?}", g.len(), w.len());
                        for ((_, g), (f, w)) in got.iter().zip(want.iter()) {
                            assert!((*g as f64 - w).abs() < 1e-5, "{activation:?} {what} feature {f}: {g} vs {w}");
                        }
                    }
                }
            }
            assert!(codes.index.iter().any(|&f| f as usize >= ENCODE_COLS), "{activation:?}: nothing kept from the second block");
        }
    }

    /// A layer's mlp_out decoded from `encode_layer`'s codes of the encoders that reach it equals
    /// that layer's slice of `forward` on the whole [n, L, d], for every causal variant (with the
    /// skip path) and activation, BatchTopK's batch-wide cut included; the codes equal `encode`'s
    /// rows of that encoder.
    #[test]
    fn decoding_one_layer_from_its_encoders_matches_the_whole_forward() {
        let (layers, d, tokens, f_n) = (3, 4, 9, 24);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect() };
        let activations = [Activation::Relu, Activation::JumpRelu { threshold: 0.3, bandwidth: 0.1 }, Activation::TopK { k: 3 }, Activation::BatchTopK { k: 2 }];
        for variant in [Variant::Clt, Variant::Plt, Variant::Sae] {
            for activation in activations {
                let cfg = TranscoderConfig { variant, features: f_n, activation, skip: true, ..Default::default() };
                let mut tc = Transcoder::zeros(&cfg, layers, d);
                for t in tc.tensors_mut() {
                    *t = draw(t.len());
                }
                tc.threshold.iter_mut().for_each(|v| *v = v.abs() * 0.5);
                let x = draw(tokens * layers * d);
                let whole = tc.forward(&x);
                let layer_input = |l: usize| -> Vec<f32> { x.chunks(layers * d).flat_map(|t| &t[l * d..(l + 1) * d]).copied().collect() };
                let codes: Vec<Codes> = (0..layers).map(|e| tc.encode_layer(e, &layer_input(e))).collect();
                for (e, c) in codes.iter().enumerate() {
                    for t in 0..tokens {
                        let (mine, all) = (c.row(t), whole.codes.row(t * layers + e));
                        assert_eq!((&c.index[mine.clone()], &c.value[mine]), (&whole.codes.index[all.clone()], &whole.codes.value[all]), "{variant:?} {activation:?}: encoder {e}, token {t}");
                    }
                }
                assert!(whole.codes.index.len() > tokens, "{variant:?} {activation:?}: too few features fire to test anything");
                for m in 0..layers {
                    let y = tc.decode_layer(m, |e| &codes[e], Some(&layer_input(m)));
                    for t in 0..tokens {
                        let (got, want) = (&y[t * d..(t + 1) * d], &whole.mlp_out[(t * layers + m) * d..][..d]);
                        got.iter().zip(want).for_each(|(g, w)| assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{variant:?} {activation:?} layer {m} token {t}: {got:?} vs {want:?}"));
                    }
                }
            }
        }
    }
}
