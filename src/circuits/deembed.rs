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
//! per raw unit (volts, 1/h, …) the weight is deembed / std_c. The MLSAE reads the embedding in
//! every layer's slice of its input, so its W_enc column is summed over the slices.

use std::fmt::Write;
use std::path::Path;

use burn::backend::Flex;

use super::{check_feature, encoder_column};
use crate::model::load_model;
use crate::transcoder::{Transcoder, Variant};
use crate::{Error, Result};

/// One input channel's direct effect on a feature's pre-activation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChannelRow {
    /// The channel's name (`model::inputs::CATALOGUE`).
    pub channel: String,
    /// Per unit of the normalised channel.
    pub weight: f32,
    /// Per unit of the raw channel (weight / the channel's std over the training cells).
    pub weight_per_unit: f32,
}

/// What the de-embedding reads from a model: the embedding weight and the channels' spread.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// The model's input channels, by name.
    pub channels: Vec<String>,
    /// W_embed [C, d] (burn's Linear stores [d_in, d_out]).
    pub w_embed: Vec<f32>,
    /// Std of each channel over the training cells [C], from the model's normalisation.
    pub std: Vec<f32>,
}

impl Embedding {
    /// Reads W_embed and the channel std of the model in `model_dir` (once: a report de-embeds
    /// every card's feature from one load).
    pub fn load(model_dir: &Path) -> Result<Embedding> {
        let loaded = load_model::<Flex>(model_dir, &Default::default())?;
        let w_embed = loaded.model.embed.weight.val().into_data().convert::<f32>().into_vec().expect("f32 weights");
        Ok(Embedding { w_embed, channels: loaded.norm.channels, std: loaded.norm.stats.std })
    }

    /// Refuses an embedding of another width than the transcoder's `d_model`.
    pub fn check_width(&self, d_model: usize) -> Result<()> {
        if self.w_embed.len() == self.channels.len() * d_model {
            return Ok(());
        }
        Err(Error::Config(format!(
            "de-embedding: the model's embedding is {} wide, the transcoder reads width {d_model}",
            self.w_embed.len() / self.channels.len().max(1)
        )))
    }

    /// De-embedding of feature `feature` of `layer`, one row per channel in the model's order.
    /// The MLSAE (layer 0, its one encoder) finds the embedding in every layer's slice of its
    /// input, so it reads the sum of its encoder's slices.
    pub fn deembed(&self, tc: &Transcoder, layer: usize, feature: usize) -> Result<Vec<ChannelRow>> {
        let d = tc.shape.d_model;
        self.check_width(d)?;
        let target = if tc.shape.variant == Variant::Mlsae && layer == 0 && feature < tc.shape.features {
            let mut read = vec![0.0f32; d];
            for (k, row) in tc.w_enc_of(0).chunks(tc.shape.features).enumerate() {
                read[k % d] += row[feature];
            }
            read
        } else {
            check_feature(tc, layer, feature)?;
            encoder_column(tc, layer, feature)
        }; // [d]
        Ok(self
            .w_embed
            .chunks(d)
            .zip(&self.channels)
            .zip(&self.std)
            .map(|((row, channel), s)| {
                let weight: f32 = row.iter().zip(&target).map(|(w, t)| w * t).sum();
                ChannelRow { channel: channel.to_owned(), weight, weight_per_unit: weight / s }
            })
            .collect())
    }
}

/// De-embedding of feature `feature` of `layer` for the model in `model_dir`, one row per channel
/// in the model's order.
pub fn deembed(model_dir: &Path, tc: &Transcoder, layer: usize, feature: usize) -> Result<Vec<ChannelRow>> {
    Embedding::load(model_dir)?.deembed(tc, layer, feature)
}

/// The rows as a text table.
pub fn format_deembed(rows: &[ChannelRow]) -> String {
    let mut out = format!("{:<20}  {:>12}  {:>14}\n", "channel", "weight", "per raw unit");
    for r in rows {
        let _ = writeln!(out, "{:<20}  {:>12.5}  {:>14.5}", r.channel, r.weight, r.weight_per_unit);
    }
    out
}
