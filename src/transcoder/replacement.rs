//! A transcoder standing in for the model's MLPs during one forward pass (replacement fidelity,
//! interventions, output effects).
//!
//! The model calls `mlp_out` in layer order. Encoder e's codes are final once its input (resid_mid_e,
//! or mlp_out_e for an SAE) is in, and mlp_out_m needs only the encoders that write to m, so each
//! encoder is encoded at most once a pass, when first needed, and only layer m is decoded. (Encoding
//! the whole [tokens, L, d] at every layer cost L(L+1)/2 encoder products a pass.)

use super::{Codes, Transcoder, Variant};
use crate::{Error, Result};

/// Encodes one encoder's input [tokens, d_in] into its codes, one row per token: the
/// hand-written encoder (`Transcoder`) or the same on a GPU (`device_encode::Encoder`).
pub trait LayerEncoder {
    fn encode_layer(&self, e: usize, x: &[f32]) -> Codes;
}

impl LayerEncoder for Transcoder {
    fn encode_layer(&self, e: usize, x: &[f32]) -> Codes {
        Transcoder::encode_layer(self, e, x)
    }
}

/// One forward pass's encoder inputs and codes, layer by layer.
pub struct ReplacementPass<'a> {
    transcoder: &'a Transcoder,
    encoder: &'a dyn LayerEncoder,
    /// Encoder inputs of this pass per layer, [tokens, d] (empty until the layer is reached).
    inputs: Vec<Vec<f32>>,
    /// Per encoder, its codes once encoded: one row per token.
    codes: Vec<Option<Codes>>,
}

impl<'a> ReplacementPass<'a> {
    /// Refuses the MLSAE, whose one encoder reads every layer: nothing of it is known before the
    /// last layer's MLP would have run. `encoder` encodes `transcoder`'s layers (where it runs).
    pub fn new(transcoder: &'a Transcoder, encoder: &'a dyn LayerEncoder) -> Result<Self> {
        if transcoder.shape.variant == Variant::Mlsae {
            return Err(Error::Config(
                "the MLSAE reads every layer at once, so it cannot stand in for an MLP during a forward pass".to_owned(),
            ));
        }
        let s = transcoder.shape;
        Ok(ReplacementPass { transcoder, encoder, inputs: vec![Vec::new(); s.layers], codes: vec![None; s.encoders()] })
    }

    /// Takes layer `layer`'s encoder input [tokens, d]; layer 0 starts a new pass.
    pub fn input(&mut self, layer: usize, x: Vec<f32>) {
        if layer == 0 {
            self.inputs.iter_mut().for_each(Vec::clear);
            self.codes.iter_mut().for_each(|c| *c = None);
        }
        self.inputs[layer] = x;
    }

    /// The reconstructed mlp_out of layer m, [tokens, d], encoding first the encoders that write to
    /// m and have not been encoded this pass; `edit(e, codes)` sees each encoder's codes once,
    /// before anything decodes them.
    pub fn mlp_out(&mut self, m: usize, mut edit: impl FnMut(usize, &mut Codes)) -> Vec<f32> {
        let s = self.transcoder.shape;
        for e in (0..s.encoders()).filter(|&e| s.out_layers(e).contains(&m)) {
            if self.codes[e].is_none() {
                let mut codes = self.encoder.encode_layer(e, &self.inputs[e]);
                edit(e, &mut codes);
                self.codes[e] = Some(codes);
            }
        }
        let codes = &self.codes;
        self.transcoder.decode_layer(m, |e| codes[e].as_ref().expect("encoded above"), Some(&self.inputs[m]))
    }
}
