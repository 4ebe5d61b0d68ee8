//! Circuits (DESIGN.md §7): how a transcoder's features connect, read from the weights alone and
//! tested by intervening on the replacement model.
//!
//! Every weight-based quantity here is a *direct path* with *norms frozen as identity*: it follows
//! one write into the residual stream to one encoder's read of it, ignoring attention (which mixes
//! positions) and the MLP layer norm (which the transcoders do not read: they encode resid_mid).
//!
//! - `pullback`: a later feature's encoder pulled back onto every earlier feature's decoder;
//! - `deembed`: a feature's encoder pulled back onto the input channels through the embedding;
//! - `intervene`: ablate or scale one feature in the replacement model and measure the predicted
//!   voltage;
//! - `mlsae` (figures in `mlsae_plot`): the MLSAE's banding and causal alignment, which unlike the
//!   rest follow the full model (its Jacobian) rather than the direct path.
//!
//! - `attribution`: input-dependent attribution of one prediction through the replacement model
//!   with attention patterns and norm scales frozen, attention paths included;
//! - `graph` (drawn by `graph_plot`): attribution graphs pruned by influence, as circuit-tracer
//!   JSON and PNG;
//! - `paths`: the strongest computational paths of two and three nodes into one feature.
//!
//! Each returns rows the CLI prints with the matching `format_*` function.

pub mod attribution;
pub mod bench;
pub mod deembed;
pub mod graph;
mod graph_plot;
pub mod intervene;
pub mod mlsae;
pub mod mlsae_plot;
pub mod paths;
pub mod pullback;
pub mod stage;

pub use attribution::{attribute, format_attribution, node_name, Attribution, Backward, Contribution, FrozenReplacement, NodeKind, Target};
pub use graph::{attribution_graph, graph_for_cell, graph_of, Graph, GraphFiles, GraphFile, GraphOptions, GraphScores, GraphSources, GraphWindow};
pub use deembed::{deembed, format_deembed, ChannelRow, Embedding};
pub use mlsae::{format_mlsae, MlsaeAnalysis, MlsaeSources};
pub use intervene::{ablate_or_steer, draw_intervention, format_intervention, Intervention, InterventionReport, SteeredMlps};
pub use pullback::{format_pullback, pullback, PullbackRow};
pub use paths::{format_paths, greedy_paths, ComputationalPath};

use std::path::Path;

use crate::model::DeviceChoice;
use crate::transcoder::{Transcoder, Variant};
use crate::{Error, Result};

/// Writes an attribution graph's files (`graph`) and draws its figure (`graph_plot`) into `dir`;
/// `labels`: a label stage's labels.json. The analysis and its drawing never call each other.
pub fn write_graph(graph: &Graph, dir: &Path, labels: Option<&Path>) -> Result<GraphFiles> {
    let labels = labels.map(graph::read_labels).transpose()?.unwrap_or_default();
    let files = graph::write_graph_files(graph, dir, &labels)?;
    graph_plot::draw_graph(graph, &labels, &files.png)?;
    Ok(files)
}

/// `voltlens circuits mlsae`: the MLSAE analysis (`mlsae`) and its two figures (`mlsae_plot`),
/// into `out_dir`.
pub fn analyse_mlsae(sources: &MlsaeSources, top: usize, out_dir: &Path, device: DeviceChoice) -> Result<MlsaeAnalysis> {
    let analysis = mlsae::analyse_mlsae(sources, top, out_dir, device)?;
    let note = format!(
        "activity = firing tokens in {} tokens of {} · encoder parts weighed by each layer's mean ‖resid_mid‖",
        analysis.tokens,
        sources.dataset.display()
    );
    mlsae_plot::draw_banding(&analysis.banding, analysis.layers, &note, &out_dir.join(stage::MLSAE_FIGURES[0]))?;
    mlsae_plot::draw_alignment(&analysis.alignment, analysis.layers, &out_dir.join(stage::MLSAE_FIGURES[1]))?;
    Ok(analysis)
}

/// Why circuits refuse an SAE on mlp_out.
pub(crate) const SAE_HAS_NO_CIRCUITS: &str =
    "circuits need a CLT or PLT; an SAE on mlp_out reads the MLP's output, so its features do not stand in for the MLP in the residual stream";

/// Refuses a (layer, feature) outside a causal transcoder (CLT or PLT): the MLSAE's one encoder
/// reads every layer at once, so it has no per-layer feature to pull back or steer.
pub(crate) fn check_feature(tc: &Transcoder, layer: usize, feature: usize) -> Result<()> {
    let s = tc.shape;
    if s.variant == Variant::Mlsae {
        return Err(Error::Config("circuits need a CLT or PLT; the MLSAE's encoder reads every layer at once".to_owned()));
    }
    if s.variant == Variant::Sae {
        return Err(Error::Config(SAE_HAS_NO_CIRCUITS.to_owned()));
    }
    if layer >= s.layers || feature >= s.features {
        return Err(Error::Config(format!(
            "feature {feature} at layer {layer} is outside the transcoder ({} layers × {} features)",
            s.layers, s.features
        )));
    }
    Ok(())
}

/// Column `feature` of W_enc[layer] [d, F]: the direction in resid_mid that the feature reads, [d].
pub(crate) fn encoder_column(tc: &Transcoder, layer: usize, feature: usize) -> Vec<f32> {
    let f = tc.shape.features;
    tc.w_enc_of(layer).chunks(f).map(|row| row[feature]).collect()
}
