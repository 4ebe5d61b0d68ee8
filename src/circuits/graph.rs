//! Attribution graphs for one prediction (DESIGN.md §7), pruned by influence, and written in
//! circuit-tracer's graph-file format.
//!
//! Pruning follows circuit-tracer's `prune_graph` (influence, thresholds, cumulative scores; an
//! independent PyTorch check reproduced its kept features, errors and edge weights) but for the
//! inputs: circuit-tracer keeps every token node, one per position, while here an input node is a
//! channel at a step (channels × steps: 416 at a 32-step window of 13 channels), so inputs are
//! pruned by influence like features and edges are scored among kept nodes; the graph keeps
//! fewer inputs and edges than circuit-tracer's rule would.
//!
//! Nodes: the active features at every step of the window, one error node per layer and step,
//! one input node per channel and step, and the output at the last step. The adjacency row of a
//! target is `attribution::FrozenReplacement::row`: each node's contribution to the target through
//! the frozen replacement model.
//!
//! The full adjacency (tens of thousands of nodes at a 512-step window) is never stored. Rows
//! are visited target by target from the output down the layers: a feature of layer m feeds
//! only later layers and the output, so by the time its row is computed its influence is final,
//! and one pass yields influence = w·(Â + Â² + …) exactly (Â: rows normalised by Σ|w|). Only the
//! rows of the nodes kept by influence are computed a second time, restricted to kept sources,
//! for edge pruning.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::attribution::{node_name, Backward, FrozenReplacement, NodeKind, Reads, Target};
use crate::io::write_atomic;
use crate::model::inputs::{read_dataset_cell, CellSteps};
use burn::backend::Flex;

use crate::model::{load_model, Lblm, LoadedModel};
use crate::transcoder::{import_circuit_tracer, Transcoder};
use crate::{Error, Result};

/// Pruning thresholds, as fractions of influence kept (circuit-tracer's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GraphOptions {
    pub node_threshold: f64,
    pub edge_threshold: f64,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions { node_threshold: 0.8, edge_threshold: 0.98 }
    }
}

/// The window a graph explains: the prediction at its last step.
#[derive(Debug, Clone)]
pub struct GraphWindow {
    pub cell_id: String,
    /// Step number within the cell of the window's first step.
    pub first_step: usize,
    /// The model's input channels, by name (`model::inputs::CATALOGUE`).
    pub channels: Vec<String>,
    /// Normalised inputs [T, C], as the model reads them.
    pub inputs: Vec<f32>,
    /// The same in raw units (for labels).
    pub raw: Vec<f32>,
    /// V_t and C-rate per step, whichever channels the model reads (for the step labels).
    pub voltage: Vec<f32>,
    pub c_rate: Vec<f32>,
    /// Volts per unit of model output.
    pub target_scale: f32,
}

/// A kept node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphNode {
    pub node: NodeKind,
    /// Activation (features), error norm, normalised input, or output (scaled ΔV).
    pub value: f32,
    /// Influence on the output in the unpruned graph.
    pub influence: f32,
    /// Share of all influence held by nodes at least this influential (circuit-tracer's
    /// cumulative score; the node threshold cuts on it).
    pub cumulative: f32,
}

/// A kept edge, between indices of `Graph::nodes`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GraphEdge {
    pub source: usize,
    pub target: usize,
    pub weight: f32,
}

/// circuit-tracer's graph scores: the share of influence that does not pass through error nodes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GraphScores {
    /// Input → output influence through features rather than errors, unpruned.
    pub replacement: f32,
    /// Influence-weighted share of every node's inputs that are not errors, unpruned.
    pub completeness: f32,
    pub pruned_replacement: f32,
    pub pruned_completeness: f32,
}

/// A pruned attribution graph for one prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub cell_id: String,
    pub first_step: usize,
    /// Steps in the window; the output is at the last.
    pub window: usize,
    pub layers: usize,
    pub options: GraphOptions,
    /// Model output at the last step (scaled ΔV).
    pub prediction: f32,
    pub target_scale: f32,
    /// Nodes of the unpruned graph, and of them the active features.
    pub total_nodes: usize,
    pub active_features: usize,
    pub scores: GraphScores,
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
    /// The model's input channels and the raw inputs [T, C] (for labels).
    pub channels: Vec<String>,
    pub raw: Vec<f32>,
    /// V_t and C-rate per step.
    pub step_voltage: Vec<f32>,
    pub step_c_rate: Vec<f32>,
}

impl Graph {
    /// Step number within the cell of the prediction.
    pub fn step(&self) -> usize {
        self.first_step + self.window - 1
    }
    /// Predicted V at the next step.
    pub fn predicted_voltage(&self) -> f32 {
        self.step_voltage[self.window - 1] + self.prediction * self.target_scale
    }
}

/// Row sum below which a row counts as empty (circuit-tracer's clamp).
const MIN_ROW_SUM: f64 = 1e-10;

/// Adds coef·|w|/Σ|w| of each entry of `row` to `acc`; returns the share of Σ|w| on error nodes.
fn spread(row: &[(u32, f32)], coef: f64, acc: &mut [f64], is_error: impl Fn(usize) -> bool) -> f64 {
    let sum = row.iter().map(|&(_, w)| w.abs() as f64).sum::<f64>().max(MIN_ROW_SUM);
    if coef != 0.0 {
        row.iter().for_each(|&(i, w)| acc[i as usize] += coef * w.abs() as f64 / sum);
    }
    row.iter().filter(|(i, _)| is_error(*i as usize)).map(|&(_, w)| w.abs() as f64).sum::<f64>() / sum
}

/// circuit-tracer's `find_threshold`: the smallest score among the top scores holding
/// `fraction` of the total.
fn threshold(scores: &[f64], fraction: f64) -> f64 {
    let mut sorted: Vec<f64> = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = sorted.iter().sum();
    let mut cum = 0.0;
    for (i, &s) in sorted.iter().enumerate() {
        cum += s;
        if cum / total >= fraction {
            return sorted[i];
        }
    }
    sorted.last().copied().unwrap_or(0.0)
}

/// Targets in the order their influence becomes final: the output, then features from the last
/// layer down.
fn target_layers(frozen: &FrozenReplacement) -> Vec<Vec<usize>> {
    let mut by_layer = vec![vec![frozen.output_node()]];
    for m in (0..frozen.layers()).rev() {
        by_layer.push((0..frozen.features.len()).filter(|&i| frozen.features[i].layer == m).collect());
    }
    by_layer
}

fn target_of(frozen: &FrozenReplacement, node: usize) -> Target {
    if node == frozen.output_node() {
        Target::Output { pos: frozen.seq() - 1 }
    } else {
        frozen.feature_target(node)
    }
}

/// At most this many accumulators per layer of targets: the work is cut into this many parts
/// whatever the thread count, so that float sums, and so graphs, do not depend on it.
const MAX_PARTS: usize = 64;

/// Rows of `targets` (one layer's features, or the output) in parallel, folded into one
/// accumulator per part, parts in a fixed order. Carried back by paths, targets of one feature
/// share its virtual weights and targets of one step its path coefficients; by sweeps, nothing.
fn fold_rows<R: Send>(
    frozen: &FrozenReplacement,
    targets: &[usize],
    init: impl Fn() -> R + Sync + Send,
    fold: impl Fn(&mut R, usize, &[(u32, f32)]) + Sync + Send,
) -> Vec<R> {
    if frozen.backward() == Backward::Sweep {
        return targets
            .par_chunks(targets.len().div_ceil(MAX_PARTS).max(1))
            .map(|part| {
                let (mut acc, mut row) = (init(), Vec::new());
                for &node in part {
                    let target = target_of(frozen, node);
                    frozen.row(target, Reads::Sweep(&frozen.sweep(target)), &mut row);
                    fold(&mut acc, node, &row);
                }
                acc
            })
            .collect();
    }
    let mut positions: Vec<usize> = targets.iter().map(|&i| target_of(frozen, i).pos()).collect();
    positions.sort_unstable();
    positions.dedup();
    let first = targets.first().map(|&i| target_of(frozen, i));
    let steps: Vec<_> = positions
        .par_iter()
        .map(|&pos| {
            let target = match first.expect("targets") {
                Target::Feature { layer, feature, .. } => Target::Feature { layer, pos, feature },
                Target::Output { .. } => Target::Output { pos },
            };
            frozen.step_tables(target)
        })
        .collect();
    let mut sorted = targets.to_vec();
    sorted.sort_by_key(|&i| match target_of(frozen, i) {
        Target::Feature { feature, pos, .. } => (feature, pos),
        Target::Output { pos } => (0, pos),
    });
    let groups: Vec<&[usize]> = sorted.chunk_by(|&a, &b| same_read(target_of(frozen, a), target_of(frozen, b))).collect();
    groups
        .par_chunks(groups.len().div_ceil(MAX_PARTS).max(1))
        .map(|part| {
            let (mut acc, mut row) = (init(), Vec::new());
            for group in part {
                let last = group.iter().map(|&i| target_of(frozen, i).pos()).max().expect("non-empty group");
                let reads = frozen.read_tables(target_of(frozen, group[0]), last);
                for &node in group.iter() {
                    let target = target_of(frozen, node);
                    let s = &steps[positions.binary_search(&target.pos()).expect("listed")];
                    frozen.row(target, Reads::Paths(&reads, s), &mut row);
                    fold(&mut acc, node, &row);
                }
            }
            acc
        })
        .collect()
}

/// Whether two targets read the same direction (same feature; the output reads per step).
fn same_read(a: Target, b: Target) -> bool {
    match (a, b) {
        (Target::Feature { layer: la, feature: fa, .. }, Target::Feature { layer: lb, feature: fb, .. }) => (la, fa) == (lb, fb),
        _ => false,
    }
}

/// Influence on the output of every node through the given rows (indexed by target node; empty
/// for nodes without a row), and each row's error share. `order` lists targets output first.
fn propagate(frozen: &FrozenReplacement, rows: &[Vec<(u32, f32)>], order: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let n = frozen.n_nodes();
    let is_error = |i: usize| matches!(frozen.node(i), NodeKind::Error { .. });
    let (mut influence, mut error_share) = (vec![0f64; n], vec![0f64; n]);
    for &t in order {
        let coef = if t == frozen.output_node() { 1.0 } else { influence[t] };
        error_share[t] = spread(&rows[t], coef, &mut influence, is_error);
    }
    (influence, error_share)
}

/// circuit-tracer's replacement and completeness scores from node influence and error shares.
fn scores(frozen: &FrozenReplacement, influence: &[f64], error_share: &[f64], kept: &[bool]) -> (f32, f32) {
    let (mut inputs, mut errors, mut complete, mut total) = (0.0, 0.0, 0.0, 0.0);
    for i in (0..frozen.n_nodes()).filter(|&i| kept[i]) {
        match frozen.node(i) {
            NodeKind::Input { .. } => inputs += influence[i],
            NodeKind::Error { .. } => errors += influence[i],
            _ => {}
        }
        let weight = influence[i] + if i == frozen.output_node() { 1.0 } else { 0.0 };
        complete += (1.0 - error_share[i]) * weight;
        total += weight;
    }
    ((inputs / (inputs + errors).max(MIN_ROW_SUM)) as f32, (complete / total.max(MIN_ROW_SUM)) as f32)
}

/// The attribution graph of the prediction at the last step of `window`, pruned by `options`.
pub fn attribution_graph<B: burn::tensor::backend::Backend>(
    model: &Lblm<B>,
    tc: &Transcoder,
    window: &GraphWindow,
    options: &GraphOptions,
) -> Result<Graph> {
    graph_of(&FrozenReplacement::new(model, tc, &window.inputs)?, window, options)
}

/// [`attribution_graph`] of a window already frozen (`frozen` ran `window`'s inputs).
pub fn graph_of(frozen: &FrozenReplacement, window: &GraphWindow, options: &GraphOptions) -> Result<Graph> {
    for (name, v) in [("node", options.node_threshold), ("edge", options.edge_threshold)] {
        if !(0.0..=1.0).contains(&v) {
            return Err(Error::Config(format!("the {name} threshold must be between 0 and 1, got {v}")));
        }
    }
    let n = frozen.n_nodes();
    let out = frozen.output_node();
    let is_error = |i: usize| matches!(frozen.node(i), NodeKind::Error { .. });

    // Pass 1: exact influence over the full graph, one layer of targets at a time. A row per
    // target and pass: a minute for a 24-layer model's full context on 2 cores.
    let bar = crate::progress::bar(frozen.features.len() as u64 + 1, "graph", "rows");
    let (mut influence, mut error_share) = (vec![0f64; n], vec![0f64; n]);
    for targets in target_layers(frozen) {
        let parts = fold_rows(
            frozen,
            &targets,
            || (vec![0f64; n], Vec::new()),
            |(acc, shares), node, row| {
                let coef = if node == out { 1.0 } else { influence[node] };
                shares.push((node, spread(row, coef, acc, is_error)));
            },
        );
        for (acc, shares) in parts {
            influence.iter_mut().zip(acc).for_each(|(a, b)| *a += b);
            shares.into_iter().for_each(|(node, s)| error_share[node] = s);
        }
        bar.inc(targets.len() as u64);
    }
    let everything = vec![true; n];
    let (replacement, completeness) = scores(frozen, &influence, &error_share, &everything);

    // Nodes by cumulative influence; the output always stays.
    let node_cut = threshold(&influence, options.node_threshold);
    let mut kept: Vec<bool> = influence.iter().map(|&v| v >= node_cut && v > 0.0).collect();
    kept[out] = true;

    // Pass 2: rows of kept targets over kept sources.
    bar.inc_length(kept.iter().enumerate().filter(|&(i, &k)| k && (i < frozen.features.len() || i == out)).count() as u64);
    let mut rows: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n];
    let mut order = Vec::new();
    for targets in target_layers(frozen) {
        let targets: Vec<usize> = targets.into_iter().filter(|&t| kept[t]).collect();
        if targets.is_empty() {
            continue;
        }
        order.extend(&targets);
        let parts = fold_rows(frozen, &targets, Vec::new, |acc: &mut Vec<(usize, Vec<(u32, f32)>)>, node, row| {
            acc.push((node, row.iter().copied().filter(|&(i, _)| kept[i as usize]).collect()));
        });
        parts.into_iter().flatten().for_each(|(node, row)| rows[node] = row);
        bar.inc(targets.len() as u64);
    }

    bar.finish_and_clear();

    // Edges by cumulative edge influence on the pruned graph.
    let (pruned_influence, _) = propagate(frozen, &rows, &order);
    let mut edges: Vec<(usize, usize, f32, f64)> = Vec::new();
    for &t in &order {
        let sum = rows[t].iter().map(|&(_, w)| w.abs() as f64).sum::<f64>().max(MIN_ROW_SUM);
        let weight = pruned_influence[t] + if t == out { 1.0 } else { 0.0 };
        edges.extend(rows[t].iter().map(|&(s, w)| (s as usize, t, w, w.abs() as f64 / sum * weight)));
    }
    let edge_cut = threshold(&edges.iter().map(|e| e.3).collect::<Vec<_>>(), options.edge_threshold);
    edges.retain(|e| e.3 >= edge_cut && e.3 > 0.0);
    prune_dangling(frozen, &mut kept, &mut edges);

    // Scores of the pruned graph, over its kept edges only.
    let mut final_rows: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n];
    edges.iter().for_each(|&(s, t, w, _)| final_rows[t].push((s as u32, w)));
    let (final_influence, final_share) = propagate(frozen, &final_rows, &order);
    let (pruned_replacement, pruned_completeness) = scores(frozen, &final_influence, &final_share, &kept);

    let cumulative = cumulative_scores(&influence);
    let index: Vec<Option<usize>> = kept.iter().scan(0, |k, &keep| Some(keep.then(|| { *k += 1; *k - 1 }))).collect();
    let nodes = (0..n)
        .filter(|&i| kept[i])
        .map(|i| GraphNode { node: frozen.node(i), value: frozen.node_value(i), influence: influence[i] as f32, cumulative: cumulative[i] as f32 })
        .collect();
    let edges = edges
        .iter()
        .map(|&(s, t, w, _)| GraphEdge { source: index[s].expect("kept"), target: index[t].expect("kept"), weight: w })
        .collect();
    let last = frozen.seq() - 1;
    Ok(Graph {
        cell_id: window.cell_id.clone(),
        first_step: window.first_step,
        window: frozen.seq(),
        layers: frozen.layers(),
        options: *options,
        prediction: frozen.prediction[last],
        target_scale: window.target_scale,
        total_nodes: n,
        active_features: frozen.features.len(),
        scores: GraphScores { replacement, completeness, pruned_replacement, pruned_completeness },
        nodes,
        edges,
        channels: window.channels.clone(),
        raw: window.raw.clone(),
        step_voltage: window.voltage.clone(),
        step_c_rate: window.c_rate.clone(),
    })
}

/// circuit-tracer's clean-up: features, errors and inputs need a kept outgoing edge, features a
/// kept incoming one; dropping a node drops its edges, until nothing changes.
fn prune_dangling(frozen: &FrozenReplacement, kept: &mut [bool], edges: &mut Vec<(usize, usize, f32, f64)>) {
    let out = frozen.output_node();
    loop {
        edges.retain(|&(s, t, _, _)| kept[s] && kept[t]);
        let (mut has_out, mut has_in) = (vec![false; kept.len()], vec![false; kept.len()]);
        edges.iter().for_each(|&(s, t, _, _)| {
            has_out[s] = true;
            has_in[t] = true;
        });
        let mut changed = false;
        for i in (0..kept.len()).filter(|&i| i != out) {
            let is_feature = matches!(frozen.node(i), NodeKind::Feature { .. });
            if kept[i] && (!has_out[i] || (is_feature && !has_in[i])) {
                kept[i] = false;
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

/// Per node, the share of total influence held by the nodes at least as influential.
fn cumulative_scores(influence: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..influence.len()).collect();
    order.sort_by(|&a, &b| influence[b].total_cmp(&influence[a]));
    let total: f64 = influence.iter().sum::<f64>().max(MIN_ROW_SUM);
    let mut out = vec![0.0; influence.len()];
    let mut cum = 0.0;
    for i in order {
        cum += influence[i];
        out[i] = cum / total;
    }
    out
}

/// Where a run keeps what a graph needs (runs/<name>/… as the pipeline lays it out).
#[derive(Debug, Clone)]
pub struct GraphSources {
    pub dataset: PathBuf,
    pub model: PathBuf,
    /// A train-transcoder output directory (holding circuit-tracer/).
    pub transcoder: PathBuf,
}

/// The model, the transcoder, and the window of `window` steps of cell `cell_id` ending at step
/// `step` (shorter at the start of the cell; at most the model's context).
pub fn load_window(sources: &GraphSources, cell_id: &str, step: usize, window: usize) -> Result<(LoadedModel<Flex>, Transcoder, GraphWindow)> {
    let (loaded, tc) = load_pair(sources)?;
    let graph_window = read_window(&loaded, &sources.dataset, cell_id, step, window)?;
    Ok((loaded, tc, graph_window))
}

/// The model and the transcoder of `sources`, checked to fit each other: load them once for
/// many windows (a 24-layer CLT of 8,192 features a layer takes a second).
pub fn load_pair(sources: &GraphSources) -> Result<(LoadedModel<Flex>, Transcoder)> {
    let loaded = load_model::<Flex>(&sources.model, &Default::default())?;
    let tc = import_circuit_tracer(&sources.transcoder.join("circuit-tracer"))?;
    super::attribution::check_pair(&loaded.model, &tc)?;
    Ok((loaded, tc))
}

/// The window of [`load_window`] from the dataset at `dataset`, normalised as `loaded` reads it.
pub fn read_window(loaded: &LoadedModel<Flex>, dataset: &Path, cell_id: &str, step: usize, window: usize) -> Result<GraphWindow> {
    let (info, data, file) = read_dataset_cell(dataset, cell_id)?;
    let raw = CellSteps::from_cell(&info, &data, &file, &loaded.norm.channels)?;
    if step >= raw.steps() {
        return Err(Error::Config(format!("cell {cell_id} has steps 0..{}, no step {step}", raw.steps())));
    }
    let len = window.clamp(1, loaded.model.context).min(step + 1);
    let first = step + 1 - len;
    let norm = loaded.norm.apply(&raw);
    let width = raw.width;
    let span = first * width..(step + 1) * width;
    let graph_window = GraphWindow {
        cell_id: cell_id.to_owned(),
        first_step: first,
        channels: loaded.norm.channels.clone(),
        inputs: norm.inputs[span.clone()].to_vec(),
        raw: raw.inputs[span].to_vec(),
        voltage: data.voltage[first..=step].to_vec(),
        c_rate: data.c_rate[first..=step].to_vec(),
        target_scale: loaded.norm.target_scale,
    };
    Ok(graph_window)
}

/// The graph of the prediction at step `step` of cell `cell_id` over the `window` steps ending there.
pub fn graph_for_cell(sources: &GraphSources, cell_id: &str, step: usize, window: usize, options: &GraphOptions) -> Result<Graph> {
    let (loaded, tc, graph_window) = load_window(sources, cell_id, step, window)?;
    attribution_graph(&loaded.model, &tc, &graph_window, options)
}

/// The label stage's labels.json, as far as graphs need it.
#[derive(Deserialize)]
struct LabelEntry {
    layer: usize,
    feature: usize,
    accepted: bool,
    label: String,
}

/// Accepted labels by (layer, feature), from a label stage's labels.json.
pub fn read_labels(path: &Path) -> Result<std::collections::BTreeMap<(usize, usize), String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let entries: Vec<LabelEntry> = serde_json::from_str(&text).map_err(|e| Error::in_file(path, format!("not a labels.json of the label stage: {e}")))?;
    Ok(entries.into_iter().filter(|e| e.accepted).map(|e| ((e.layer, e.feature), e.label)).collect())
}

// circuit-tracer's graph file (frontend/graph_models.py): field names as its front end reads them.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphFile {
    pub metadata: FileMetadata,
    #[serde(rename = "qParams")]
    pub q_params: QParams,
    pub nodes: Vec<FileNode>,
    pub links: Vec<FileLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMetadata {
    pub slug: String,
    pub scan: String,
    pub transcoder_list: Vec<String>,
    pub prompt_tokens: Vec<String>,
    pub prompt: String,
    pub node_threshold: Option<f64>,
    pub schema_version: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QParams {
    #[serde(rename = "pinnedIds")]
    pub pinned_ids: Vec<String>,
    pub supernodes: Vec<Vec<String>>,
    #[serde(rename = "linkType")]
    pub link_type: String,
    #[serde(rename = "clickedId")]
    pub clicked_id: String,
    pub sg_pos: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileNode {
    pub node_id: String,
    pub feature: i64,
    pub layer: String,
    pub ctx_idx: usize,
    pub feature_type: String,
    pub token_prob: f32,
    pub is_target_logit: bool,
    pub run_idx: u32,
    pub reverse_ctx_idx: u32,
    #[serde(rename = "jsNodeId")]
    pub js_node_id: String,
    pub clerp: String,
    pub influence: Option<f32>,
    pub activation: Option<f32>,
}

impl FileNode {
    /// The label a reader sees: the output's without circuit-tracer's `Output "…" (p=…)` around it.
    pub fn shown_label(&self) -> &str {
        match self.is_target_logit {
            true => self.clerp.split('"').nth(1).unwrap_or(&self.clerp),
            false => &self.clerp,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileLink {
    pub source: String,
    pub target: String,
    pub weight: f32,
}

impl Graph {
    /// File name stem of this graph: cell and step.
    pub fn slug(&self) -> String {
        format!("{}-step{}", crate::io::safe_name(&self.cell_id), self.step())
    }

    /// Per window step, a short description for the front end's token row.
    pub fn step_labels(&self) -> Vec<String> {
        self.step_voltage.iter().zip(&self.step_c_rate).map(|(v, c)| format!("{v:.3}V {c:+.2}C")).collect()
    }

    /// A node's label: its automatic label when `labels` has one, else its id.
    pub fn label(&self, node: NodeKind, labels: &std::collections::BTreeMap<(usize, usize), String>) -> String {
        match node {
            NodeKind::Feature { layer, feature, .. } => labels.get(&(layer, feature)).cloned().unwrap_or_else(|| format!("L{layer}_F{feature}")),
            NodeKind::Error { layer, pos } => format!("error L{layer} @{}", self.first_step + pos),
            NodeKind::Input { pos, channel } => input_text(&self.channels[channel], self.raw[pos * self.channels.len() + channel]),
            NodeKind::Output { .. } => format!("V next {:.4} V (ΔV {:+.2} mV)", self.predicted_voltage(), self.prediction * self.target_scale * 1000.0),
        }
    }

    /// The graph in circuit-tracer's graph-file format.
    pub fn to_file(&self, labels: &std::collections::BTreeMap<(usize, usize), String>) -> GraphFile {
        let ids: Vec<String> = self.nodes.iter().map(|n| node_id(n.node, self.layers)).collect();
        let nodes = self
            .nodes
            .iter()
            .zip(&ids)
            .map(|(n, id)| {
                let (feature, layer, pos, feature_type, js) = match n.node {
                    NodeKind::Feature { layer, pos, feature } => {
                        // circuit-tracer numbers features across layers by Cantor pairing.
                        let cantor = (layer + feature) * (layer + feature + 1) / 2 + feature;
                        (cantor as i64, layer.to_string(), pos, "cross layer transcoder", format!("{layer}_{feature}-0"))
                    }
                    NodeKind::Error { layer, pos } => (-1, layer.to_string(), pos, "mlp reconstruction error", format!("{layer}_-1-{pos}")),
                    // circuit-tracer's front end merges nodes of one (layer, feature, step) into one
                    // row: several channels per step need the channel here (a token uses the step).
                    NodeKind::Input { pos, channel } => (channel as i64, "E".to_owned(), pos, "embedding", format!("E_{channel}-{pos}")),
                    NodeKind::Output { pos } => (0, (self.layers + 1).to_string(), pos, "logit", format!("L_0-{pos}")),
                };
                let is_output = matches!(n.node, NodeKind::Output { .. });
                FileNode {
                    node_id: id.clone(),
                    feature,
                    layer,
                    ctx_idx: pos,
                    feature_type: feature_type.to_owned(),
                    token_prob: if is_output { 1.0 } else { 0.0 },
                    is_target_logit: is_output,
                    run_idx: 0,
                    reverse_ctx_idx: 0,
                    js_node_id: js,
                    // Its front end reads the output's label as `Output "…" (p=…)` and stops drawing
                    // without the `(p=`; a regression head's one output has p = 1.
                    clerp: if is_output { format!("Output \"{}\" (p=1.000)", self.label(n.node, labels)) } else { self.label(n.node, labels) },
                    influence: (!is_output).then_some(n.cumulative),
                    activation: matches!(n.node, NodeKind::Feature { .. }).then_some(n.value),
                }
            })
            .collect();
        let links = self.edges.iter().map(|e| FileLink { source: ids[e.source].clone(), target: ids[e.target].clone(), weight: e.weight }).collect();
        GraphFile {
            metadata: FileMetadata {
                slug: self.slug(),
                scan: "voltlens".to_owned(),
                transcoder_list: Vec::new(),
                prompt_tokens: self.step_labels(),
                prompt: format!("cell {}, steps {}–{}: predicted V {:.4} V", self.cell_id, self.first_step, self.step(), self.predicted_voltage()),
                node_threshold: Some(self.options.node_threshold),
                schema_version: Some(1),
            },
            q_params: QParams { pinned_ids: Vec::new(), supernodes: Vec::new(), link_type: "both".to_owned(), clicked_id: String::new(), sg_pos: String::new() },
            nodes,
            links,
        }
    }
}

/// An input channel's value in physical units (the model reads log1p of times; people read seconds).
fn input_text(channel: &str, raw: f32) -> String {
    let seconds = |x: f32| x.exp_m1();
    match channel {
        "voltage" => format!("V now = {raw:.4} V"),
        "c_rate" => format!("C-rate now = {raw:+.2} C"),
        "log1p_dt" => format!("Δt now = {:.3} s", seconds(raw)),
        "c_rate_next" => format!("C-rate next = {raw:+.2} C"),
        "log1p_dt_next" => format!("Δt next = {:.3} s", seconds(raw)),
        "charge_next" => format!("charge next = {:+.4} % of capacity", 100.0 * raw),
        "temperature" => format!("T = {raw:.1} °C"),
        "log1p_step_time" => format!("time in step = {:.0} s", seconds(raw)),
        "current_a" => format!("I now = {raw:+.3} A"),
        "current_next_a" => format!("I next = {raw:+.3} A"),
        "dt_s" => format!("Δt now = {raw:.3} s"),
        "dt_next_s" => format!("Δt next = {raw:.3} s"),
        "step_time_s" => format!("time in step = {raw:.0} s"),
        "soc" => format!("SOC = {:.1} %", 100.0 * raw),
        "soc_present" => format!("SOC known: {}", if raw > 0.5 { "yes" } else { "no" }),
        "temperature_present" => format!("T measured: {}", if raw > 0.5 { "yes" } else { "no" }),
        "current_sign_next" => format!("next: {}", if raw > 0.5 { "charging" } else if raw < -0.5 { "discharging" } else { "resting" }),
        "step_change_next" => format!("next: {}", if raw > 0.5 { "a new step" } else { "the same step" }),
        "charge_ah" => format!("charge moved = {raw:+.4} Ah"),
        "cycle_number" => format!("cycle {raw:.0}"),
        name => format!("{name} = {raw}"),
    }
}

/// circuit-tracer's node ids: "{layer}_{feature}_{pos}", errors feature −1, inputs "E_{channel}_{pos}",
/// the output "{L+1}_0_{pos}".
fn node_id(node: NodeKind, layers: usize) -> String {
    match node {
        NodeKind::Feature { layer, pos, feature } => format!("{layer}_{feature}_{pos}"),
        NodeKind::Error { layer, pos } => format!("{layer}_-1_{pos}"),
        NodeKind::Input { pos, channel } => format!("E_{channel}_{pos}"),
        NodeKind::Output { pos } => format!("{}_0_{pos}", layers + 1),
    }
}

/// What `write_graph` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct GraphFiles {
    /// circuit-tracer's graph file, `{slug}.json`.
    pub json: PathBuf,
    /// The graph index the circuit-tracer server reads, `graph-metadata.json`.
    pub metadata: PathBuf,
    /// Scores and counts, `{slug}.summary.json`.
    pub summary: PathBuf,
    /// Where `graph_plot` draws the figure, `{slug}.png`.
    pub png: PathBuf,
}

/// Writes `graph` into `dir` (created if needed): its circuit-tracer JSON, an entry in the
/// directory's graph-metadata.json and a summary; `labels` from [`read_labels`].
pub fn write_graph_files(graph: &Graph, dir: &Path, labels: &std::collections::BTreeMap<(usize, usize), String>) -> Result<GraphFiles> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let slug = graph.slug();
    let file = graph.to_file(labels);
    let json = dir.join(format!("{slug}.json"));
    write_atomic(&json, serde_json::to_string(&file).expect("plain data").as_bytes())?;

    // circuit-tracer's add_graph_metadata: one entry per slug, replaced when redrawn.
    let metadata = dir.join("graph-metadata.json");
    let mut index: serde_json::Value = match std::fs::read_to_string(&metadata) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| Error::in_file(&metadata, e.to_string()))?,
        Err(_) => serde_json::json!({ "graphs": [] }),
    };
    let graphs = index["graphs"].as_array_mut().ok_or_else(|| Error::in_file(&metadata, "no \"graphs\" list"))?;
    graphs.retain(|g| g["slug"] != slug.as_str());
    graphs.push(serde_json::to_value(&file.metadata).expect("plain data"));
    write_atomic(&metadata, serde_json::to_string_pretty(&index).expect("plain data").as_bytes())?;

    let summary = dir.join(format!("{slug}.summary.json"));
    let text = serde_json::json!({
        "cell_id": graph.cell_id,
        "step": graph.step(),
        "window": graph.window,
        "predicted_voltage": graph.predicted_voltage(),
        "options": graph.options,
        "scores": graph.scores,
        "total_nodes": graph.total_nodes,
        "active_features": graph.active_features,
        "kept_nodes": graph.nodes.len(),
        "kept_edges": graph.edges.len(),
        "top_nodes": top_nodes(graph, labels),
    });
    write_atomic(&summary, serde_json::to_string_pretty(&text).expect("plain data").as_bytes())?;
    Ok(GraphFiles { json, metadata, summary, png: dir.join(format!("{slug}.png")) })
}

/// The ten most influential kept nodes, by name.
fn top_nodes(graph: &Graph, labels: &std::collections::BTreeMap<(usize, usize), String>) -> Vec<serde_json::Value> {
    let mut nodes: Vec<&GraphNode> = graph.nodes.iter().filter(|n| !matches!(n.node, NodeKind::Output { .. })).collect();
    nodes.sort_by(|a, b| b.influence.total_cmp(&a.influence));
    nodes
        .iter()
        .take(10)
        .map(|n| serde_json::json!({ "node": node_name(n.node, graph.first_step, &graph.channels), "label": graph.label(n.node, labels), "influence": n.influence }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::input_text;

    #[test]
    fn input_nodes_read_in_physical_units_and_words() {
        assert_eq!(input_text("log1p_dt", 10f32.ln_1p()), "Δt now = 10.000 s");
        assert_eq!(input_text("soc", 0.291), "SOC = 29.1 %");
        assert_eq!(input_text("current_sign_next", -1.0), "next: discharging");
        assert_eq!(input_text("current_sign_next", 0.0), "next: resting");
        assert_eq!(input_text("step_change_next", 1.0), "next: a new step");
        assert_eq!(input_text("temperature_present", 0.0), "T measured: no");
        assert_eq!(input_text("my_channel", 2.5), "my_channel = 2.5");
    }
}
