//! The `circuits` pipeline stage (DESIGN §7): pullback and de-embedding tables for the most
//! active features, and one attribution graph of a prediction, for the report to show. For a
//! multi-layer SAE, whose one encoder reads every layer, its banding and causal alignment instead.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::graph::{graph_for_cell, write_graph, GraphOptions, GraphSources};
use super::{analyse_mlsae, format_deembed, format_pullback, pullback, Embedding};
use crate::data::canonical::write_atomic;
use crate::mine::{MinedFeature, MinedFeatures};
use crate::mine::stats::WindowKind;
use crate::transcoder::{import_circuit_tracer, Variant};
use crate::{Error, Result};

/// The stage's tables, in the stage directory.
pub const PULLBACKS_FILE: &str = "pullbacks.md";
/// The attribution graph's folder (circuit-tracer JSON, PNG, summary).
pub const GRAPH_DIR: &str = "graph";
pub const SUMMARY_FILE: &str = "circuits.json";
/// What `analyse_mlsae` draws, in the stage directory.
pub const MLSAE_FIGURES: [&str; 2] = ["mlsae_banding.png", "mlsae_alignment.png"];

/// Settings of the circuits stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitsConfig {
    /// Pullback and de-embedding tables for this many features, the most active (mean
    /// activation over all steps) first.
    pub top_features: usize,
    /// Rows of each pullback table.
    pub pullback_rows: usize,
    /// The prediction the graph explains. By default the peak of the most active feature's
    /// strongest window; set both to choose another.
    pub cell: Option<String>,
    pub step: Option<usize>,
    /// Steps of context the graph spans (at most the model's context).
    pub window: usize,
    pub node_threshold: f64,
    pub edge_threshold: f64,
}

impl Default for CircuitsConfig {
    fn default() -> Self {
        let graph = GraphOptions::default();
        CircuitsConfig {
            top_features: 8,
            pullback_rows: 10,
            cell: None,
            step: None,
            window: 64,
            node_threshold: graph.node_threshold,
            edge_threshold: graph.edge_threshold,
        }
    }
}

/// Where the stage reads from: the pipeline's earlier stages.
pub struct CircuitsInputs {
    pub sources: GraphSources,
    /// The mine stage's mined.json.
    pub mined: PathBuf,
    /// The label stage's labels.json, for node names.
    pub labels: Option<PathBuf>,
}

/// Runs the stage into `out_dir` and returns its summary (also written as circuits.json).
pub fn run_circuits_stage(inputs: &CircuitsInputs, cfg: &CircuitsConfig, out_dir: &Path) -> Result<serde_json::Value> {
    let tc = import_circuit_tracer(&inputs.sources.transcoder.join("circuit-tracer"))?;
    if tc.shape.variant == Variant::Mlsae {
        let export = inputs.sources.transcoder.join("circuit-tracer");
        let analysis = analyse_mlsae(&inputs.sources.dataset, &inputs.sources.model, &export, cfg.top_features, out_dir)?;
        let summary = serde_json::json!({ "mlsae": { "live": analysis.live, "features": analysis.features, "figures": MLSAE_FIGURES } });
        write_atomic(&out_dir.join(SUMMARY_FILE), serde_json::to_string_pretty(&summary).expect("plain data").as_bytes())?;
        return Ok(summary);
    }
    let text = std::fs::read_to_string(&inputs.mined).map_err(|e| Error::io(&inputs.mined, e))?;
    let mined: MinedFeatures = serde_json::from_str(&text).map_err(|e| Error::in_file(&inputs.mined, e.to_string()))?;
    let active = most_active(&mined, cfg.top_features);
    let embedding = Embedding::load(&inputs.sources.model)?;
    embedding.check_width(tc.shape.d_model)?;

    let mut tables = String::from("# Pullbacks and de-embeddings of the most active features\n\n");
    for f in &active {
        let (layer, feature) = (f.layer as usize, f.feature as usize);
        let rows = pullback(&tc, layer, feature, cfg.pullback_rows)?;
        let channels = embedding.deembed(&tc, layer, feature)?;
        let _ = write!(
            tables,
            "## L{layer}_F{feature} (mean activation {:.3}, density {:.1} %)\n\nEarlier features (direct path, norms frozen):\n\n```\n{}\n```\n\nInput channels:\n\n```\n{}\n```\n\n",
            f.mean,
            100.0 * f.density,
            format_pullback(&rows),
            format_deembed(&channels)
        );
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    write_atomic(&out_dir.join(PULLBACKS_FILE), tables.as_bytes())?;

    let (cell, step) = graph_target(&mined, &active, cfg)?;
    let options = GraphOptions { node_threshold: cfg.node_threshold, edge_threshold: cfg.edge_threshold };
    let graph = graph_for_cell(&inputs.sources, &cell, step, cfg.window, &options)?;
    let files = write_graph(&graph, &out_dir.join(GRAPH_DIR), inputs.labels.as_deref())?;
    let summary = serde_json::json!({
        "features": active.iter().map(|f| format!("L{}_F{}", f.layer, f.feature)).collect::<Vec<_>>(),
        "graph": {
            "cell_id": cell,
            "step": step,
            "png": files.png.file_name().map(|n| n.to_string_lossy().into_owned()),
            "json": files.json.file_name().map(|n| n.to_string_lossy().into_owned()),
            "scores": graph.scores,
            "kept_nodes": graph.nodes.len(),
            "kept_edges": graph.edges.len(),
        },
    });
    write_atomic(&out_dir.join(SUMMARY_FILE), serde_json::to_string_pretty(&summary).expect("plain data").as_bytes())?;
    Ok(summary)
}

/// The `n` features with the highest mean activation (ties: lower layer, then index).
fn most_active(mined: &MinedFeatures, n: usize) -> Vec<&MinedFeature> {
    let mut live: Vec<&MinedFeature> = mined.features.iter().filter(|f| f.density > 0.0).collect();
    live.sort_by(|a, b| b.mean.total_cmp(&a.mean).then((a.layer, a.feature).cmp(&(b.layer, b.feature))));
    live.truncate(n);
    live
}

/// The configured prediction, or the peak of the most active feature's strongest window.
fn graph_target(mined: &MinedFeatures, active: &[&MinedFeature], cfg: &CircuitsConfig) -> Result<(String, usize)> {
    match (&cfg.cell, cfg.step) {
        (Some(cell), Some(step)) => Ok((cell.clone(), step)),
        (None, None) => active
            .iter()
            .flat_map(|f| f.windows.iter().filter(|w| w.kind == WindowKind::Top))
            .next()
            .map(|w| (mined.cell_ids[w.cell].clone(), w.peak_row as usize))
            .ok_or_else(|| Error::Config("[circuits]: no feature fires, so there is no prediction to explain".to_owned())),
        _ => Err(Error::Config("[circuits]: set both cell and step, or neither".to_owned())),
    }
}
