//! Computational paths into a feature (Dunefsky, Chlenski & Nanda 2024, "Transcoders find
//! interpretable LLM feature circuits", §4.2): a greedy search that starts at the target
//! feature's pre-activation, keeps its `width` strongest sources (earlier features or input
//! channels, at any step of the window), then, for each feature among them, its own `width`
//! strongest sources. Attributions come from [`attribute`] (attention patterns and norm scales
//! frozen), so a source at an earlier step reaches the target through attention.
//!
//! A path's contribution multiplies the attributions along it, each intermediate feature's
//! activation divided out once (an active feature's activation moves one for one with its
//! pre-activation): for s → f → g, c(s→f) · c(f→g) / z_f; for s → g, c(s→g).
//! Error nodes are not searched through: they carry no reading.

use std::fmt::Write;

use super::attribution::{attribute, node_name, FrozenReplacement, NodeKind, Target};
use crate::Result;

/// One path, source first, ending at the target feature.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ComputationalPath {
    pub nodes: Vec<NodeKind>,
    /// Contribution to the target's pre-activation along this path.
    pub contribution: f32,
}

/// The strongest paths of two and three nodes into `target`, strongest first, at most `top`.
/// `width` sources are kept at each step of the search.
pub fn greedy_paths(frozen: &FrozenReplacement, target: Target, width: usize, top: usize) -> Result<Vec<ComputationalPath>> {
    let Target::Feature { layer, pos, feature } = target else {
        return Err(crate::Error::Config("computational paths end at a feature".to_owned()));
    };
    let end = NodeKind::Feature { layer, pos, feature };
    let searchable = |n: &NodeKind| matches!(n, NodeKind::Feature { .. } | NodeKind::Input { .. });
    let first = attribute(frozen, target)?;
    let sources: Vec<_> = first.contributions.iter().filter(|c| searchable(&c.node)).take(width).collect();
    let mut paths: Vec<ComputationalPath> = sources.iter().map(|c| ComputationalPath { nodes: vec![c.node, end], contribution: c.weight }).collect();
    for middle in sources.iter().filter(|c| c.value != 0.0) {
        let NodeKind::Feature { layer, pos, feature } = middle.node else { continue };
        let into = attribute(frozen, Target::Feature { layer, pos, feature })?;
        for c in into.contributions.iter().filter(|c| searchable(&c.node)).take(width) {
            paths.push(ComputationalPath { nodes: vec![c.node, middle.node, end], contribution: c.weight * middle.weight / middle.value });
        }
    }
    paths.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
    paths.truncate(top);
    Ok(paths)
}

/// The paths as a text table; `first_step` numbers steps within the cell, `channels` names the
/// model's input channels.
pub fn format_paths(paths: &[ComputationalPath], first_step: usize, channels: &[String]) -> String {
    let mut out = format!("{:>12}  path\n", "contribution");
    for p in paths {
        let names: Vec<String> = p.nodes.iter().map(|&n| node_name(n, first_step, channels)).collect();
        let _ = writeln!(out, "{:>12.5}  {}", p.contribution, names.join(" → "));
    }
    out
}

/// The paths into one feature at the peak of its strongest window, as its report page shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeaturePaths {
    pub layer: u32,
    pub feature: u32,
    pub cell_id: String,
    /// The step (within the cell) whose pre-activation the paths explain.
    pub step: usize,
    /// Step within the cell of the window's first step.
    pub first_step: usize,
    /// The model's input channels, which input nodes index.
    pub channels: Vec<String>,
    pub paths: Vec<ComputationalPath>,
}

/// Paths into each of `features` at the peak of its top window (`window` steps of history),
/// with the default search width.
pub fn paths_at_peaks(sources: &super::GraphSources, mined: &crate::mine::MinedFeatures, features: &[(u32, u32)], window: usize) -> Result<Vec<FeaturePaths>> {
    use crate::mine::stats::WindowKind;
    let mut out = Vec::new();
    if features.is_empty() {
        return Ok(out);
    }
    let (loaded, tc) = super::graph::load_pair(sources)?;
    for &(layer, feature) in features {
        let Some(peak) = mined.features.iter().find(|f| (f.layer, f.feature) == (layer, feature)).and_then(|f| f.windows.iter().find(|w| w.kind == WindowKind::Top)) else { continue };
        let (cell_id, step) = (mined.cell_ids[peak.cell].clone(), peak.peak_row as usize);
        let w = super::graph::read_window(&loaded, &sources.dataset, &cell_id, step, window)?;
        let frozen = FrozenReplacement::new(&loaded.model, &tc, &w.inputs)?;
        let target = Target::Feature { layer: layer as usize, pos: frozen.seq() - 1, feature: feature as usize };
        let paths = greedy_paths(&frozen, target, PAGE_WIDTH, PAGE_PATHS)?;
        out.push(FeaturePaths { layer, feature, cell_id, step, first_step: w.first_step, channels: w.channels, paths });
    }
    Ok(out)
}

/// Search width and paths kept for report pages.
const PAGE_WIDTH: usize = 5;
const PAGE_PATHS: usize = 10;
