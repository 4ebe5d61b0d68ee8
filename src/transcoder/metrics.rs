//! Evaluation (DESIGN.md §3): FVU and L0 per layer, dead and live features, replacement fidelity.

use serde::{Deserialize, Serialize};

use super::cache::ActivationSource;
use super::clt::Transcoder;
use crate::Result;

/// A feature is live when it fires at least once per this many evaluation tokens.
pub const LIVE_PER_TOKENS: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub tokens: u64,
    /// ‖ŷ_m − y_m‖² / ‖y_m − mean(y_m)‖² over the evaluation tokens, per layer.
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub fvu_per_layer: Vec<f32>,
    /// Mean active features per token, per encoder (per layer for CLT/PLT).
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub l0_per_layer: Vec<f32>,
    /// Share of features that never fired on the evaluation tokens.
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub dead_fraction: f32,
    /// Share of features firing at least once per LIVE_PER_TOKENS tokens.
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub live_fraction: f32,
}

/// Metrics of `tc` on the next `tokens` tokens of `source`, read in batches of `batch`.
pub fn evaluate(tc: &Transcoder, source: &mut dyn ActivationSource, tokens: usize, batch: usize) -> Result<Metrics> {
    let s = tc.shape;
    let (layers, d, enc) = (s.layers, s.d_model, s.encoders());
    // Per layer: Σ squared error, Σ y, Σ y² per dimension (for the variance of the same tokens).
    let mut err = vec![0.0f64; layers];
    let mut sum = vec![0.0f64; layers * d];
    let mut sq = vec![0.0f64; layers * d];
    let mut fires = vec![0u64; enc * s.features];
    let mut seen = 0usize;
    while seen < tokens {
        let b = source.next_batch(batch.min(tokens - seen))?.for_variant(s.variant);
        let out = tc.forward(&b.resid_mid);
        for (i, (&yh, &y)) in out.mlp_out.iter().zip(&b.mlp_out).enumerate() {
            let j = i % (layers * d);
            err[j / d] += ((yh - y) as f64).powi(2);
            sum[j] += y as f64;
            sq[j] += (y as f64).powi(2);
        }
        for r in 0..out.codes.rows() {
            for i in out.codes.row(r).filter(|&i| out.codes.value[i] > 0.0) {
                fires[(r % enc) * s.features + out.codes.index[i] as usize] += 1;
            }
        }
        seen += b.tokens;
    }
    let n = seen as f64;
    let fvu_per_layer = (0..layers)
        .map(|l| {
            let var: f64 = (l * d..(l + 1) * d).map(|i| sq[i] - sum[i] * sum[i] / n).sum();
            (err[l] / var.max(1e-30)) as f32
        })
        .collect();
    let l0_per_layer = fires.chunks(s.features).map(|f| (f.iter().sum::<u64>() as f64 / n) as f32).collect();
    let share = |pred: &dyn Fn(u64) -> bool| fires.iter().filter(|&&c| pred(c)).count() as f32 / fires.len() as f32;
    let live_min = (seen as u64).div_ceil(LIVE_PER_TOKENS).max(1);
    Ok(Metrics {
        tokens: seen as u64,
        fvu_per_layer,
        l0_per_layer,
        dead_fraction: share(&|c| c == 0),
        live_fraction: share(&|c| c >= live_min),
    })
}

/// Which MLPs a replacement-fidelity run swaps out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacement {
    /// The model as trained.
    Original,
    /// Every MLP output replaced by its mean.
    MeanAblated,
    /// Every MLP replaced by the transcoder, features read from the replacement model's own stream.
    AllReplaced,
    /// Only this layer's MLP replaced.
    LayerReplaced(usize),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    /// (MSE_ablate − MSE_replaced) / (MSE_ablate − MSE_original) with every MLP replaced.
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub all_layers: f32,
    /// The same with one layer replaced at a time.
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub per_layer: Vec<f32>,
}

/// Replacement fidelity. `next_step_mse` runs the model over the evaluation data in the given
/// mode and returns its next-step MSE; the caller owns the model, this owns the formula.
pub fn replacement_fidelity(layers: usize, mut next_step_mse: impl FnMut(Replacement) -> Result<f32>) -> Result<Fidelity> {
    let original = next_step_mse(Replacement::Original)?;
    let ablated = next_step_mse(Replacement::MeanAblated)?;
    let score = |replaced: f32| (ablated - replaced) / (ablated - original);
    let all_layers = score(next_step_mse(Replacement::AllReplaced)?);
    let per_layer = (0..layers).map(|l| next_step_mse(Replacement::LayerReplaced(l)).map(score)).collect::<Result<_>>()?;
    Ok(Fidelity { all_layers, per_layer })
}

/// Where one MLSAE feature lives: the layer its encoder weights and its decoder rows concentrate in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Band {
    pub encoder_layer: usize,
    pub decoder_layer: usize,
}

/// Per feature of encoder 0, ‖W_enc,f‖² and ‖W_dec,f‖² split by the layer each part reads or
/// writes, ([L], [L]): what `circuits::mlsae::banding_table` bands the MLSAE's features by.
pub fn layer_sq_norms(tc: &Transcoder) -> Vec<(Vec<f32>, Vec<f32>)> {
    let s = tc.shape;
    let (d, f_n) = (s.d_model, s.features);
    let w_enc = tc.w_enc_of(0);
    (0..f_n)
        .map(|f| {
            let mut enc = vec![0.0f32; s.layers];
            for k in 0..s.d_in() {
                enc[(s.input_offset(0) + k) / d] += w_enc[k * f_n + f].powi(2);
            }
            let mut dec = vec![0.0f32; s.layers];
            let row = &tc.w_dec[0][f * s.dec_row(0)..(f + 1) * s.dec_row(0)];
            for (m, r) in s.out_layers(0).zip(row.chunks(d)) {
                dec[m] = r.iter().map(|v| v * v).sum();
            }
            (enc, dec)
        })
        .collect()
}

