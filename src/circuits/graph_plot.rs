//! The attribution graph as a PNG: layers as rows (inputs at the bottom, the output on top),
//! window steps as columns (only steps with kept nodes), edges coloured by sign and drawn wider
//! and darker the larger their weight, a legend at the bottom. Nodes left without an edge by the
//! pruning are not drawn (the JSON keeps them).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::attribution::NodeKind;
use super::graph::{Graph, GraphEdge, GraphNode};
use crate::plot_style::{self, FONT};
use crate::{Error, Result};

/// Beyond these, the least influential steps and the weakest edges are left out of the drawing
/// (the JSON and the graph viewer keep them all): six columns keep labels readable where the report
/// shows the figure at page width.
const MAX_COLUMNS: usize = 6;
const MAX_EDGES: usize = 250;
const MAX_LABEL: usize = 28;
const COLUMN_W: i32 = 260;
const NODE_H: i32 = 30;
const LEFT: i32 = 110;
const TOP: i32 = 70;
const BOTTOM: i32 = 90;
/// Text size of node labels and step numbers.
const LABEL_SIZE: u32 = 16;

/// Red raises, blue lowers, as in the graph viewer and the feature cards.
const POSITIVE: RGBColor = plot_style::CURRENT;
const NEGATIVE: RGBColor = plot_style::VOLTAGE;

/// Row of a node, 0 at the top: the output, then layers from the last down, then the inputs.
fn row_of(node: NodeKind, layers: usize) -> usize {
    match node {
        NodeKind::Output { .. } => 0,
        NodeKind::Feature { layer, .. } | NodeKind::Error { layer, .. } => layers - layer,
        NodeKind::Input { .. } => layers + 1,
    }
}

fn pos_of(node: NodeKind) -> usize {
    match node {
        NodeKind::Feature { pos, .. } | NodeKind::Error { pos, .. } | NodeKind::Input { pos, .. } | NodeKind::Output { pos } => pos,
    }
}

fn colour_of(node: NodeKind) -> RGBColor {
    match node {
        NodeKind::Feature { .. } => plot_style::PREDICTION,
        NodeKind::Error { .. } => RGBColor(150, 150, 150),
        NodeKind::Input { .. } => plot_style::SOC,
        NodeKind::Output { .. } => plot_style::TEMPERATURE,
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_LABEL {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(MAX_LABEL - 1).collect::<String>())
    }
}

/// Draws `graph` to `png_path` (written atomically); features carry their `labels` where given.
pub fn draw_graph(graph: &Graph, labels: &BTreeMap<(usize, usize), String>, png_path: &Path) -> Result<()> {
    plot_style::ensure_fonts();
    // Columns: the steps holding the most influence, in step order.
    let mut weight_of_pos: BTreeMap<usize, f32> = BTreeMap::new();
    // Only nodes with an edge (and the output) are drawn.
    let mut linked = vec![false; graph.nodes.len()];
    for e in &graph.edges {
        linked[e.source] = true;
        linked[e.target] = true;
    }
    let drawn = |i: usize| linked[i] || matches!(graph.nodes[i].node, NodeKind::Output { .. });
    for n in graph.nodes.iter().enumerate().filter(|&(i, _)| drawn(i)).map(|(_, n)| n) {
        *weight_of_pos.entry(pos_of(n.node)).or_default() += n.influence + if matches!(n.node, NodeKind::Output { .. }) { 1e9 } else { 0.0 };
    }
    let mut columns: Vec<(usize, f32)> = weight_of_pos.into_iter().collect();
    columns.sort_by(|a, b| b.1.total_cmp(&a.1));
    let hidden_steps = columns.len().saturating_sub(MAX_COLUMNS);
    columns.truncate(MAX_COLUMNS);
    let mut steps: Vec<usize> = columns.into_iter().map(|(p, _)| p).collect();
    steps.sort_unstable();

    // Nodes per (row, column), most influential first; rows as tall as their fullest cell.
    let rows = graph.layers + 2;
    let mut cells: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (i, n) in graph.nodes.iter().enumerate().filter(|&(i, _)| drawn(i)) {
        if let Ok(c) = steps.binary_search(&pos_of(n.node)) {
            cells.entry((row_of(n.node, graph.layers), c)).or_default().push(i);
        }
    }
    cells.values_mut().for_each(|v| v.sort_by(|&a, &b| graph.nodes[b].influence.total_cmp(&graph.nodes[a].influence)));
    let row_h: Vec<i32> = (0..rows).map(|r| cells.iter().filter(|((row, _), _)| *row == r).map(|(_, v)| v.len() as i32).max().unwrap_or(1) * NODE_H + 30).collect();
    let row_top: Vec<i32> = row_h.iter().scan(TOP, |y, h| { let top = *y; *y += h; Some(top) }).collect();
    let width = (LEFT + steps.len() as i32 * COLUMN_W + 120).max(LEGEND_WIDTH);
    let height = row_top[rows - 1] + row_h[rows - 1] + BOTTOM;
    let mut at: Vec<Option<(i32, i32)>> = vec![None; graph.nodes.len()];
    for (&(r, c), nodes) in &cells {
        for (k, &i) in nodes.iter().enumerate() {
            at[i] = Some((LEFT + c as i32 * COLUMN_W + 14, row_top[r] + 18 + k as i32 * NODE_H));
        }
    }

    crate::io::write_via_temp(png_path, |tmp| {
        let root = BitMapBackend::new(tmp, (width as u32, height as u32)).into_drawing_area();
        let fail = |e: &dyn std::fmt::Display| Error::Other(format!("drawing {}: {e}", png_path.display()));
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let s = &graph.scores;
        let title = format!(
            "Cell {} step {}: predicted V {:.4} V ({} nodes, {} edges kept of {} nodes)",
            graph.cell_id, graph.step(), graph.predicted_voltage(), graph.nodes.len(), graph.edges.len(), graph.total_nodes
        );
        root.draw(&Text::new(title, (10, 8), (FONT, 20).into_font())).map_err(|e| fail(&e))?;
        let subtitle = format!(
            "replacement {:.3} (pruned {:.3}), completeness {:.3} (pruned {:.3}){}",
            s.replacement, s.pruned_replacement, s.completeness, s.pruned_completeness,
            if hidden_steps > 0 { format!("; {hidden_steps} less influential steps not drawn") } else { String::new() }
        );
        root.draw(&Text::new(subtitle, (10, 36), (FONT, 14).into_font())).map_err(|e| fail(&e))?;

        // Row bands and names, column step numbers.
        for r in 0..rows {
            let name = match r {
                0 => "output".to_owned(),
                r if r == rows - 1 => "inputs".to_owned(),
                r => format!("layer {}", graph.layers - r),
            };
            if r % 2 == 1 {
                root.draw(&Rectangle::new([(0, row_top[r]), (width, row_top[r] + row_h[r])], RGBColor(246, 246, 250).filled())).map_err(|e| fail(&e))?;
            }
            root.draw(&Text::new(name, (10, row_top[r] + 10), (FONT, 16).into_font())).map_err(|e| fail(&e))?;
        }
        for (c, &p) in steps.iter().enumerate() {
            let label = format!("step {}", graph.first_step + p);
            root.draw(&Text::new(label, (LEFT + c as i32 * COLUMN_W + 4, height - BOTTOM + 12), (FONT, LABEL_SIZE).into_font())).map_err(|e| fail(&e))?;
        }
        draw_legend(&root, height - 40)?;

        // Edges by influence, weakest first so that strong ones stay visible on top. Raw weights
        // would not do: input → feature weights are pre-activations, larger than any edge into
        // the prediction, so a cut by |weight| kept only those.
        let influence = edge_influence(&graph.nodes, &graph.edges);
        let mut order: Vec<usize> = (0..graph.edges.len()).filter(|&k| at[graph.edges[k].source].is_some() && at[graph.edges[k].target].is_some()).collect();
        order.sort_by(|&a, &b| influence[b].total_cmp(&influence[a]));
        order.truncate(MAX_EDGES);
        let max = order.first().map_or(f64::MIN_POSITIVE, |&k| influence[k].max(f64::MIN_POSITIVE));
        for &k in order.iter().rev() {
            let e = &graph.edges[k];
            let strength = (influence[k] / max).sqrt();
            let colour = if e.weight >= 0.0 { POSITIVE } else { NEGATIVE };
            let style = colour.mix(0.15 + 0.75 * strength).stroke_width(1 + (5.0 * strength) as u32);
            let (a, b) = (at[e.source].expect("drawn"), at[e.target].expect("drawn"));
            // Within one step's column a straight edge would run over the nodes between: bow it left.
            let path = if a.0 == b.0 { vec![a, (a.0 - 10 - (a.1 - b.1).abs() / 12, (a.1 + b.1) / 2), b] } else { vec![a, b] };
            root.draw(&PathElement::new(path, style)).map_err(|e| fail(&e))?;
        }

        // Nodes, sized by influence, with labels.
        let top_influence = graph.nodes.iter().map(|n| n.influence).fold(f32::MIN_POSITIVE, f32::max);
        for (i, n) in graph.nodes.iter().enumerate() {
            let Some((x, y)) = at[i] else { continue };
            let radius = if matches!(n.node, NodeKind::Output { .. }) { 9 } else { 4 + (5.0 * (n.influence / top_influence).sqrt()) as i32 };
            root.draw(&Circle::new((x, y), radius, colour_of(n.node).filled())).map_err(|e| fail(&e))?;
            root.draw(&Circle::new((x, y), radius, BLACK.stroke_width(1))).map_err(|e| fail(&e))?;
            // A feature's label is cut short here: its id leads, so the reader can look it up.
            let label = match n.node {
                NodeKind::Feature { layer, feature, .. } if labels.contains_key(&(layer, feature)) => format!("L{layer}_F{feature} {}", graph.label(n.node, labels)),
                _ => graph.label(n.node, labels),
            };
            // The prediction's label stays whole: it sits alone at the right edge.
            let label = if matches!(n.node, NodeKind::Output { .. }) { label } else { shorten(&label) };
            root.draw(&Text::new(label, (x + radius + 3, y - 9), (FONT, LABEL_SIZE).into_font())).map_err(|e| fail(&e))?;
        }
        root.present().map_err(|e| fail(&e))
    })
}

/// Each edge's share of its target's input (|w| over the target's Σ|w|) times the target's
/// influence on the prediction (the prediction's own: 1), as the graph's pruning ranks edges.
fn edge_influence(nodes: &[GraphNode], edges: &[GraphEdge]) -> Vec<f64> {
    let mut inflow = vec![0f64; nodes.len()];
    edges.iter().for_each(|e| inflow[e.target] += e.weight.abs() as f64);
    let weight = |t: usize| nodes[t].influence as f64 + if matches!(nodes[t].node, NodeKind::Output { .. }) { 1.0 } else { 0.0 };
    edges.iter().map(|e| e.weight.abs() as f64 / inflow[e.target].max(f64::MIN_POSITIVE) * weight(e.target)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_into_the_prediction_outrank_larger_pre_activation_weights() {
        let node = |node, influence| GraphNode { node, value: 1.0, influence, cumulative: 0.0 };
        let nodes = [
            node(NodeKind::Input { pos: 0, channel: 0 }, 0.4),
            node(NodeKind::Feature { layer: 0, pos: 0, feature: 3 }, 0.3),
            node(NodeKind::Output { pos: 0 }, 0.0),
        ];
        let edge = |source, target, weight| GraphEdge { source, target, weight };
        // Input → feature in pre-activation units (50), feature → prediction in scaled ΔV (0.1).
        let edges = [edge(0, 1, 50.0), edge(1, 2, 0.1), edge(0, 2, -0.05)];
        let influence = edge_influence(&nodes, &edges);
        assert!(influence[1] > influence[0] && influence[2] > influence[0], "{influence:?}");
        assert!((influence[1] - 2.0 / 3.0).abs() < 1e-9, "a third of the prediction's input is the other edge's");
    }
}

/// Width of the legend's line: a graph of one or two steps is drawn at least this wide.
const LEGEND_WIDTH: i32 = 1160;

/// Node kinds by colour and edge signs, in one line at `y`.
fn draw_legend(root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>, y: i32) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| Error::Other(format!("drawing the graph's legend: {e}"));
    let mut x = 10;
    let nodes = [
        (NodeKind::Feature { layer: 0, pos: 0, feature: 0 }, "feature"),
        (NodeKind::Error { layer: 0, pos: 0 }, "MLP error"),
        (NodeKind::Input { pos: 0, channel: 0 }, "input channel"),
        (NodeKind::Output { pos: 0 }, "prediction"),
    ];
    for (node, name) in nodes {
        root.draw(&Circle::new((x + 7, y + 9), 7, colour_of(node).filled())).map_err(|e| fail(&e))?;
        root.draw(&Text::new(name, (x + 20, y), (FONT, LABEL_SIZE).into_font())).map_err(|e| fail(&e))?;
        x += 40 + 10 * name.len() as i32;
    }
    for (colour, name) in [(POSITIVE, "edge raises the target"), (NEGATIVE, "edge lowers the target")] {
        root.draw(&PathElement::new(vec![(x, y + 9), (x + 30, y + 9)], colour.stroke_width(4))).map_err(|e| fail(&e))?;
        root.draw(&Text::new(name, (x + 38, y), (FONT, LABEL_SIZE).into_font())).map_err(|e| fail(&e))?;
        x += 60 + 10 * name.len() as i32;
    }
    Ok(())
}
