//! De-embedding: how each input channel drives a feature directly through the embedding
//! (DESIGN.md §7).
//!
//! The embedding writes x·W_embed (x the normalised channels [C], W_embed [C, d]) into the residual
//! stream, and resid_mid of every layer still contains it. Along that direct path, with attention
//! and norms frozen as identity, feature g of layer m reads
//!
//!   deembed(c → g) = W_embed[c, :] · W_enc[m][:, g]
//!
//! per unit of normalised channel c. The model normalises raw inputs as (raw − mean_c) / std_c, so
//! per raw unit (volts, 1/h, …) the weight is deembed / std_c.

use std::fmt::Write;
use std::path::Path;

use burn::backend::Flex;

use super::{check_feature, encoder_column};
use crate::model::{load_model, CHANNELS, N_CHANNELS};
use crate::transcoder::Transcoder;
use crate::Result;

/// One input channel's direct effect on a feature's pre-activation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChannelRow {
    /// Name from `model::CHANNELS`.
    pub channel: String,
    /// Per unit of the normalised channel.
    pub weight: f32,
    /// Per unit of the raw channel (weight / the channel's std over the training cells).
    pub weight_per_unit: f32,
}

/// De-embedding of feature `feature` of `layer` for the model in `model_dir`, one row per channel
/// in `CHANNELS` order.
pub fn deembed(model_dir: &Path, tc: &Transcoder, layer: usize, feature: usize) -> Result<Vec<ChannelRow>> {
    let loaded = load_model::<Flex>(model_dir, &Default::default())?;
    // burn's Linear stores [d_in, d_out]: here [N_CHANNELS, d].
    let w_embed: Vec<f32> = loaded.model.embed.weight.val().into_data().convert::<f32>().into_vec().expect("f32 weights");
    deembed_weights(&w_embed, &loaded.norm.stats.std, tc, layer, feature)
}

/// De-embedding from the embedding weight W_embed [N_CHANNELS, d] and the channels' std [N_CHANNELS].
pub fn deembed_weights(w_embed: &[f32], std: &[f32], tc: &Transcoder, layer: usize, feature: usize) -> Result<Vec<ChannelRow>> {
    check_feature(tc, layer, feature)?;
    let d = tc.shape.d_model;
    assert_eq!(w_embed.len(), N_CHANNELS * d, "W_embed must be [{N_CHANNELS}, {d}] to match the transcoder");
    let target = encoder_column(tc, layer, feature); // [d]
    Ok(w_embed
        .chunks(d)
        .zip(CHANNELS)
        .zip(std)
        .map(|((row, channel), s)| {
            let weight: f32 = row.iter().zip(&target).map(|(w, t)| w * t).sum();
            ChannelRow { channel: channel.to_owned(), weight, weight_per_unit: weight / s }
        })
        .collect())
}

/// The rows as a text table.
pub fn format_deembed(rows: &[ChannelRow]) -> String {
    let mut out = format!("{:<20}  {:>12}  {:>14}\n", "channel", "weight", "per raw unit");
    for r in rows {
        let _ = writeln!(out, "{:<20}  {:>12.5}  {:>14.5}", r.channel, r.weight, r.weight_per_unit);
    }
    out
}
