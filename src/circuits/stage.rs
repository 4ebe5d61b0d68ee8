//! The `circuits` pipeline stage (DESIGN §7): pullback and de-embedding tables for the most
//! active features, and one attribution graph of a prediction, for the report to show. A
//! multi-layer SAE, whose one encoder reads every layer, gets its banding and causal alignment
//! instead: the pipeline's own transcoder when it is one, else the best MLSAE of a `[sweep]`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::graph::{graph_for_cell, GraphOptions, GraphSources};
use super::{analyse_mlsae, format_deembed, format_pullback, pullback, write_graph, Embedding, MlsaeSources};
use crate::io::write_atomic;
use crate::mine::stats::WindowKind;
use crate::model::DeviceChoice;
use crate::mine::{MinedFeature, MinedFeatures};
use crate::transcoder::sweep::pareto::SweepRow;
use crate::transcoder::{import_circuit_tracer, Transcoder, Variant};
use crate::{Error, Result};

/// The stage's tables, in the stage directory.
pub const PULLBACKS_FILE: &str = "pullbacks.md";
/// The attribution graph's folder (circuit-tracer JSON, PNG, summary).
pub const GRAPH_DIR: &str = "graph";
pub const SUMMARY_FILE: &str = "circuits.json";
/// Where the MLSAE analyses go in the stage directory, and what `analyse_mlsae` draws there.
pub const MLSAE_DIR: &str = "mlsae";
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
    /// Where the model runs for the MLSAE analyses (their forward passes are the work); the
    /// graph's one forward pass and its attribution run on the CPU.
    #[serde(skip_serializing_if = "DeviceChoice::is_cpu")]
    pub device: DeviceChoice,
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
            device: DeviceChoice::Cpu,
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
    /// A sweep stage's directory: its lowest-FVU MLSAE run is analysed beside the graph.
    pub sweep: Option<PathBuf>,
}

/// Runs the stage into `out_dir` and returns its summary (also written as circuits.json).
pub fn run_circuits_stage(inputs: &CircuitsInputs, cfg: &CircuitsConfig, out_dir: &Path) -> Result<serde_json::Value> {
    let export = inputs.sources.transcoder.join("circuit-tracer");
    let tc = import_circuit_tracer(&export)?;
    let mut summary = serde_json::Map::new();
    if tc.shape.variant == Variant::Sae {
        summary.insert("skipped".into(), super::SAE_HAS_NO_CIRCUITS.into());
    } else if tc.shape.variant == Variant::Mlsae {
        summary.insert("mlsae".into(), mlsae_analyses(inputs, &export, "transcoder", cfg, out_dir)?);
    } else {
        summary.extend(pullbacks_and_graph(inputs, &tc, cfg, out_dir)?);
        if let Some((id, export)) = best_sweep_mlsae(inputs.sweep.as_deref())? {
            summary.insert("mlsae".into(), mlsae_analyses(inputs, &export, &format!("sweep run {id}"), cfg, out_dir)?);
        }
    }
    let summary = serde_json::Value::Object(summary);
    write_atomic(&out_dir.join(SUMMARY_FILE), serde_json::to_string_pretty(&summary).expect("plain data").as_bytes())?;
    Ok(summary)
}

/// Banding and causal alignment of the MLSAE exported at `export`, into `out_dir/mlsae/`.
fn mlsae_analyses(inputs: &CircuitsInputs, export: &Path, source: &str, cfg: &CircuitsConfig, out_dir: &Path) -> Result<serde_json::Value> {
    let sources = MlsaeSources { dataset: &inputs.sources.dataset, model: &inputs.sources.model, transcoder: export };
    let analysis = analyse_mlsae(&sources, cfg.top_features, &out_dir.join(MLSAE_DIR), cfg.device)?;
    Ok(serde_json::json!({ "source": source, "live": analysis.live, "features": analysis.features, "figures": MLSAE_FIGURES }))
}

/// The sweep's MLSAE run with the lowest held-out FVU, and its export, if the sweep has one.
fn best_sweep_mlsae(sweep: Option<&Path>) -> Result<Option<(String, PathBuf)>> {
    let Some(dir) = sweep else { return Ok(None) };
    let pareto = dir.join("pareto.json");
    let text = std::fs::read_to_string(&pareto).map_err(|e| Error::io(&pareto, e))?;
    let rows: Vec<SweepRow> = serde_json::from_str(&text).map_err(|e| Error::in_file(&pareto, e.to_string()))?;
    let best = rows.into_iter().filter(|r| r.variant == Variant::Mlsae).min_by(|a, b| a.fvu.total_cmp(&b.fvu));
    Ok(best.map(|r| {
        let export = dir.join("runs").join(&r.id).join("circuit-tracer");
        (r.id, export)
    }))
}

/// Pullback tables of the most active features and the graph of one prediction (CLT or PLT).
fn pullbacks_and_graph(inputs: &CircuitsInputs, tc: &Transcoder, cfg: &CircuitsConfig, out_dir: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(&inputs.mined).map_err(|e| Error::io(&inputs.mined, e))?;
    let mined: MinedFeatures = serde_json::from_str(&text).map_err(|e| Error::in_file(&inputs.mined, e.to_string()))?;
    let active = most_active(&mined, cfg.top_features);
    let embedding = Embedding::load(&inputs.sources.model)?;
    embedding.check_width(tc.shape.d_model)?;

    let mut tables = String::from("# Pullbacks and de-embeddings of the most active features\n\n");
    for f in &active {
        let (layer, feature) = (f.layer as usize, f.feature as usize);
        let rows = pullback(tc, layer, feature, cfg.pullback_rows)?;
        let channels = embedding.deembed(tc, layer, feature)?;
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
    Ok(summary.as_object().expect("an object").clone())
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
