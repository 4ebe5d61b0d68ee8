//! Pullbacks: how strongly each earlier feature's decoder writes drive a later feature's encoder,
//! through the residual stream alone (DESIGN.md §7).
//!
//! A CLT feature f of layer l writes z_f·W_dec[l][f, k−l, :] into mlp_out of every layer k ≥ l.
//! mlp_out of layer k joins the residual stream at resid_post_k, so resid_mid_m contains the writes
//! to every k with l ≤ k < m (the write to k = m comes after resid_mid_m and is not seen). With
//! attention and norms taken as identity, feature g of layer m therefore reads
//!
//!   pullback(f → g) = ( Σ_{k=l}^{m−1} W_dec[l][f, k−l, :] ) · W_enc[m][:, g],
//!
//! the change of g's pre-activation per unit of z_f; the input-dependent attribution is
//! z_f · pullback. A PLT feature writes only to k = l, so its sum has one term. The skip path
//! W_skip is a map from resid_mid to mlp_out, not a feature, and has no pullback.

use std::fmt::Write;

use super::{check_feature, encoder_column};
use crate::transcoder::Transcoder;
use crate::Result;

/// One earlier feature's direct effect on the target feature's pre-activation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PullbackRow {
    /// Layer l of the earlier feature (l < m).
    pub layer: usize,
    pub feature: usize,
    /// Change of the target's pre-activation per unit of this feature's activation.
    pub weight: f32,
}

/// The `top` earlier features with the largest |pullback| onto feature `feature` of `layer`,
/// largest first. Empty for layer 0, which nothing earlier writes to.
pub fn pullback(tc: &Transcoder, layer: usize, feature: usize, top: usize) -> Result<Vec<PullbackRow>> {
    check_feature(tc, layer, feature)?;
    let target = encoder_column(tc, layer, feature); // [d]
    let mut rows: Vec<PullbackRow> = (0..layer).flat_map(|l| layer_pullback(tc, l, layer, &target)).collect();
    rows.sort_by(|a, b| b.weight.abs().total_cmp(&a.weight.abs()));
    rows.truncate(top);
    Ok(rows)
}

/// Pullback of `target` [d], read at resid_mid of layer m, onto every feature of encoder l < m.
fn layer_pullback(tc: &Transcoder, l: usize, m: usize, target: &[f32]) -> Vec<PullbackRow> {
    let s = tc.shape;
    let d = s.d_model;
    let row = s.dec_row(l); // one feature's decoder rows [n_out(l), d], flattened
    let written = s.out_layers(l).filter(|&k| k < m); // the layers whose writes resid_mid_m holds
    let offsets: Vec<usize> = written.map(|k| (k - l) * d).collect();
    tc.w_dec[l]
        .chunks(row)
        .enumerate()
        .map(|(f, dec)| {
            let weight = offsets.iter().map(|&o| dot(&dec[o..o + d], target)).sum();
            PullbackRow { layer: l, feature: f, weight }
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The rows as a text table.
pub fn format_pullback(rows: &[PullbackRow]) -> String {
    let mut out = format!("{:>5}  {:>7}  {:>12}\n", "layer", "feature", "weight");
    for r in rows {
        let _ = writeln!(out, "{:>5}  {:>7}  {:>12.5}", r.layer, r.feature, r.weight);
    }
    out
}
