//! Overview figures of a report (DESIGN §6): transcoder quality and dead features per layer,
//! feature density, label coverage by covariate family, and a feature × covariate heat map.

use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

use crate::label::covariates::Covariate;
use crate::plot_style::{self, FONT};
use crate::report::card::{bold, draw_err, empty_panel, hbars, percent_tick, text, tick, FEATURE, MUTED, NEGATIVE, POSITIVE};
use crate::report::{Context, FeatureFacts};
use crate::Result;

/// One overview PNG, as the index and the summary show it.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File name inside the report folder.
    pub file: String,
    pub title: String,
    /// How to read it, one sentence.
    pub caption: String,
}

/// Features shown in the heat map (labelled first, then by density).
const HEATMAP_ROWS: usize = 60;
/// The heat map's colour scale saturates at this many SDs.
const HEATMAP_CLIP: f64 = 2.0;

/// Draws every overview figure into `dir` and says what each shows.
pub fn draw_overview(ctx: &Context, facts: &[FeatureFacts], dir: &Path) -> Result<Vec<Figure>> {
    crate::plot_style::ensure_fonts();
    let mut figures = vec![
        Figure {
            file: "overview_layers.png".into(),
            title: "Transcoder quality per layer".into(),
            caption: "FVU (unexplained variance of the reconstruction) and L0 (active features per step) from the transcoder's metrics, and the share of features that never fire on this dataset.".into(),
        },
        Figure {
            file: "overview_features.png".into(),
            title: "Feature density and label coverage".into(),
            caption: format!("How often live features fire, and which covariate family their accepted label talks about (share of {}).", ctx.coverage_base(facts).1),
        },
        Figure {
            file: "overview_heatmap.png".into(),
            title: "Feature × covariate heat map".into(),
            caption: format!("Where each feature fires: the activation-weighted mean of each covariate while it fires, in SDs from that covariate's mean over all steps (red = higher, blue = lower; a crossed grey cell = the covariate is constant or not logged). Rows: the {HEATMAP_ROWS} densest features with an accepted label (then the densest others, where fewer are accepted), by id."),
        },
    ];
    draw_layers(ctx, &dir.join(&figures[0].file))?;
    draw_features(ctx, facts, &dir.join(&figures[1].file))?;
    draw_heatmap(ctx, facts, &dir.join(&figures[2].file))?;
    figures.extend(super::overview_weights::draw_weight_figures(ctx, dir)?);
    figures.extend(sweep_figures(ctx, dir)?);
    figures.extend(circuits_figures(ctx, dir)?);
    Ok(figures)
}

/// The first array of numbers under a key containing `name` (case-insensitive), anywhere in `v`:
/// metrics files differ in nesting, the per-layer arrays are what the figure needs.
pub(crate) fn find_series(v: &Value, name: &str) -> Option<Vec<f64>> {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                if k.to_lowercase().contains(name) {
                    if let Some(a) = x.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect::<Vec<_>>()).filter(|a| !a.is_empty()) {
                        return Some(a);
                    }
                }
            }
            map.values().find_map(|x| find_series(x, name))
        }
        Value::Array(a) => a.iter().find_map(|x| find_series(x, name)),
        _ => None,
    }
}

fn per_layer(values: &[f64]) -> Vec<(String, f64)> {
    values.iter().enumerate().map(|(l, &v)| (format!("layer {l}"), v)).collect()
}

/// Dead share per layer: features of that layer that never fire on the dataset. The mined
/// table holds only features that fired, so the dictionary size comes from the transcoder.
pub(crate) fn dead_by_layer(ctx: &Context) -> Vec<(String, f64)> {
    let features = &ctx.inputs.mined.features;
    let layers = features.iter().map(|f| f.layer).max().map_or(0, |l| l + 1);
    (0..layers)
        .map(|l| {
            let of_layer: Vec<_> = features.iter().filter(|f| f.layer == l).collect();
            let live = of_layer.iter().filter(|f| f.density > 0.0).count();
            let size = ctx.inputs.transcoder.map_or(of_layer.len(), |tc| tc.shape.features);
            (format!("layer {l}"), 1.0 - live as f64 / size.max(1) as f64)
        })
        .collect()
}

fn draw_layers(ctx: &Context, path: &Path) -> Result<()> {
    let root = BitMapBackend::new(path, (1500, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let panels = root.split_evenly((1, 3));
    let metrics = ctx.inputs.transcoder_metrics.as_ref();
    for (panel, key, caption, desc) in [(&panels[0], "fvu", "FVU per layer", "FVU (lower is better)"), (&panels[1], "l0", "L0 per layer", "Active features per step")] {
        match metrics.and_then(|m| find_series(m, key)) {
            Some(v) => hbars(panel, caption, &per_layer(&v), desc, tick)?,
            None => empty_panel(panel, caption, "no transcoder metrics given")?,
        }
    }
    hbars(&panels[2], "Dead features per layer", &dead_by_layer(ctx), "Share never firing", percent_tick)?;
    root.present().map_err(draw_err)
}

/// The covariate families a label can talk about, as a reader groups them.
pub(crate) fn family(c: Covariate) -> &'static str {
    match c {
        Covariate::Soc => "SOC",
        Covariate::CRate | Covariate::AbsCRate | Covariate::CRateChangeNext | Covariate::AbsCRateChangeNext | Covariate::LastCurrentStep | Covariate::Current => "current / C-rate",
        Covariate::State | Covariate::StepKind => "step type",
        Covariate::StepTime | Covariate::TimeSinceCurrentChange => "time in step",
        Covariate::DvDt | Covariate::AbsDvDt | Covariate::DvNext | Covariate::Voltage | Covariate::AboveLowestVoltage | Covariate::BelowHighestVoltage => "voltage / dV/dt",
        Covariate::Temperature | Covariate::AmbientTemperature => "temperature",
        Covariate::CycleNumber | Covariate::Soh => "ageing",
        Covariate::Protocol => "protocol",
    }
}

/// Share of live features whose accepted label uses each family (a conjunction counts for
/// both of its families), and the unexplained share.
pub(crate) fn coverage(ctx: &Context, facts: &[FeatureFacts]) -> Vec<(String, f64)> {
    let mut families: Vec<&'static str> = Vec::new();
    for c in Covariate::ALL {
        if !families.contains(&family(c)) {
            families.push(family(c));
        }
    }
    let n = ctx.coverage_base(facts).0.max(1) as f64;
    let accepted: Vec<Vec<&'static str>> = facts
        .iter()
        .filter_map(|f| ctx.label(f.index).filter(|l| l.accepted))
        .map(|l| l.candidates[0].candidate.covariates().into_iter().map(family).collect())
        .collect();
    let mut rows: Vec<(String, f64)> = families.iter().map(|fam| (fam.to_string(), accepted.iter().filter(|a| a.contains(fam)).count() as f64 / n)).collect();
    rows.retain(|r| r.1 > 0.0);
    rows.push(("unexplained".into(), 1.0 - accepted.len() as f64 / n));
    rows
}

fn draw_features(ctx: &Context, facts: &[FeatureFacts], path: &Path) -> Result<()> {
    let root = BitMapBackend::new(path, (1500, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let (left, right) = root.split_horizontally(750);
    draw_density_histogram(&left, facts)?;
    let axis = ctx.label_sample(facts).map_or("Share of live features".to_owned(), |n| format!("Share of the {n} labelled (a sample)"));
    hbars(&right, "Label coverage by covariate family", &coverage(ctx, facts), &axis, percent_tick)?;
    root.present().map_err(draw_err)
}

fn draw_density_histogram(area: &DrawingArea<BitMapBackend, plotters::coord::Shift>, facts: &[FeatureFacts]) -> Result<()> {
    let logs: Vec<f64> = facts.iter().filter(|f| f.density > 0.0).map(|f| f.density.log10()).collect();
    if logs.is_empty() {
        return empty_panel(area, "Feature density", "no live features");
    }
    let lo = logs.iter().copied().fold(f64::INFINITY, f64::min).floor();
    let hi = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max).ceil().max(lo + 1.0);
    let bins = 30;
    let mut counts = vec![0usize; bins];
    for x in &logs {
        counts[(((x - lo) / (hi - lo) * bins as f64) as usize).min(bins - 1)] += 1;
    }
    let ymax = *counts.iter().max().expect("bins") as f64 * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("Feature density (live features)", (FONT, 18))
        .margin(10)
        .margin_right(24)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(lo..hi, 0.0..ymax)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .max_light_lines(1)
        .light_line_style(plot_style::GRID)
        .x_labels((hi - lo) as usize + 1)
        .x_label_formatter(&|v| percent_tick(10f64.powf(*v)))
        .y_label_formatter(&|v| if v.fract() == 0.0 { format!("{v:.0}") } else { String::new() })
        .x_desc("Share of steps firing (log scale)")
        .y_desc("Features")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    let w = (hi - lo) / bins as f64;
    chart
        .draw_series(counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(b, &c)| {
            Rectangle::new([(lo + b as f64 * w, 0.0), (lo + (b + 1) as f64 * w, c as f64)], FEATURE.mix(0.8).filled())
        }))
        .map_err(draw_err)?;
    Ok(())
}

/// Blue–white–red for a value in SDs, saturating at ±`HEATMAP_CLIP`.
fn diverging(z: f64) -> RGBColor {
    if !z.is_finite() {
        return RGBColor(235, 235, 235);
    }
    let t = (z / HEATMAP_CLIP).clamp(-1.0, 1.0);
    let (far, w) = if t < 0.0 { (NEGATIVE, -t) } else { (POSITIVE, t) };
    let mix = |a: u8| (255.0 + (a as f64 - 255.0) * w).round() as u8;
    RGBColor(mix(far.0), mix(far.1), mix(far.2))
}

const HEATMAP_COVARIATES: [(Covariate, &str); 14] = [
    (Covariate::Soc, "SOC"),
    (Covariate::CRate, "C-rate"),
    (Covariate::AbsCRate, "|C-rate|"),
    (Covariate::StepTime, "step time"),
    (Covariate::TimeSinceCurrentChange, "t since ΔI"),
    (Covariate::DvDt, "dV/dt"),
    (Covariate::DvNext, "ΔV next"),
    (Covariate::CRateChangeNext, "ΔC-rate next"),
    (Covariate::Temperature, "temp."),
    (Covariate::AmbientTemperature, "ambient T"),
    (Covariate::CycleNumber, "cycle"),
    (Covariate::Soh, "SOH"),
    (Covariate::Voltage, "voltage"),
    (Covariate::Current, "current"),
];

fn draw_heatmap(ctx: &Context, facts: &[FeatureFacts], path: &Path) -> Result<()> {
    let mut rows: Vec<&FeatureFacts> = facts.iter().collect();
    let accepted = |f: &FeatureFacts| ctx.label(f.index).is_some_and(|l| l.accepted);
    rows.sort_by(|a, b| accepted(b).cmp(&accepted(a)).then(b.density.total_cmp(&a.density)));
    rows.truncate(HEATMAP_ROWS);
    rows.sort_by_key(|f| (f.layer, f.feature));
    let (n, m) = (rows.len(), HEATMAP_COVARIATES.len());
    let size = (1500u32, 190 + 22 * n.max(1) as u32);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    if n == 0 {
        empty_panel(&root, "Feature × covariate", "no live features")?;
        return root.present().map_err(draw_err);
    }
    let (top, body) = root.split_vertically(60);
    text(&top, "Where each feature fires (SDs from the covariate's mean)", (20, 12), bold(18))?;
    draw_scale(&top)?;
    let names: Vec<String> = rows.iter().map(|f| format!("{}{}", f.id(), if accepted(f) { " ✓" } else { "" })).collect();
    let mut chart = ChartBuilder::on(&body)
        .margin(10)
        .margin_right(30)
        .x_label_area_size(60)
        .y_label_area_size(110)
        .build_cartesian_2d((0..m - 1).into_segmented(), (0..n.max(2) - 1).into_segmented())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(m)
        .y_labels(n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(k) if *k < m => HEATMAP_COVARIATES[*k].1.to_owned(),
            _ => String::new(),
        })
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(r) if *r < n => names[n - 1 - r].clone(),
            _ => String::new(),
        })
        .x_desc("Covariate")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    let cells = rows.iter().enumerate().flat_map(|(r, f)| {
        HEATMAP_COVARIATES.iter().enumerate().map(move |(k, (c, _))| {
            let y = n - 1 - r;
            Rectangle::new([(SegmentValue::Exact(k), SegmentValue::Exact(y)), (SegmentValue::Exact(k + 1), SegmentValue::Exact(y + 1))], diverging(f.covariate_z[c.index()]).filled())
        })
    });
    chart.draw_series(cells).map_err(draw_err)?;
    // Missing cells (a constant or unlogged covariate) are crossed out, so none reads as 0 SD.
    let missing = rows.iter().enumerate().flat_map(|(r, f)| {
        HEATMAP_COVARIATES.iter().enumerate().filter(move |(_, (c, _))| !f.covariate_z[c.index()].is_finite()).flat_map(move |(k, _)| {
            let y = n - 1 - r;
            let (x0, x1, y0, y1) = (SegmentValue::Exact(k), SegmentValue::Exact(k + 1), SegmentValue::Exact(y), SegmentValue::Exact(y + 1));
            [PathElement::new(vec![(x0.clone(), y0.clone()), (x1.clone(), y1.clone())], MUTED.stroke_width(1)), PathElement::new(vec![(x0, y1), (x1, y0)], MUTED.stroke_width(1))]
        })
    });
    chart.draw_series(missing).map_err(draw_err)?;
    root.present().map_err(draw_err)
}

/// The heat map's colour bar, drawn across the top right.
fn draw_scale(area: &DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()> {
    let (x0, y0, width, height) = (1000i32, 12i32, 360i32, 16i32);
    for px in 0..width {
        let z = (px as f64 / (width - 1) as f64 * 2.0 - 1.0) * HEATMAP_CLIP;
        area.draw(&Rectangle::new([(x0 + px, y0), (x0 + px + 1, y0 + height)], diverging(z).filled())).map_err(draw_err)?;
    }
    area.draw(&Rectangle::new([(x0, y0), (x0 + width, y0 + height)], MUTED.stroke_width(1))).map_err(draw_err)?;
    for (k, label) in [(0, format!("≤ −{HEATMAP_CLIP}")), (1, "0".into()), (2, format!("≥ +{HEATMAP_CLIP} SD"))] {
        let x = x0 + k * width / 2 - if k == 2 { 30 } else { 12 };
        text(area, &label, (x, y0 + height + 4), (FONT, 16))?;
    }
    Ok(())
}

/// The Pareto figures of a sweep in the same run (`[sweep]`; `run_config.sweep.dir` says where),
/// copied into the report as they are.
fn sweep_figures(ctx: &Context, dir: &Path) -> Result<Vec<Figure>> {
    let Some(sweep) = ctx.inputs.run_config.pointer("/sweep/dir").and_then(Value::as_str).map(Path::new) else { return Ok(Vec::new()) };
    if !sweep.join("pareto.json").exists() {
        return Ok(Vec::new());
    }
    let mut figures = Vec::new();
    for (file, title, caption) in crate::transcoder::sweep::FIGURES {
        if sweep.join(file).exists() {
            std::fs::copy(sweep.join(file), dir.join(file)).map_err(|e| crate::Error::io(&sweep.join(file), e))?;
            figures.push(Figure { file: file.into(), title: title.into(), caption: caption.into() });
        }
    }
    Ok(figures)
}

/// The attribution graph in circuit-tracer's JSON format, as the report keeps it.
pub(crate) const CIRCUITS_GRAPH_JSON: &str = "circuits_graph.json";

/// The circuits stage's attribution graph (its pullback tables copied beside it) and its MLSAE
/// banding and alignment figures, whichever the run has.
fn circuits_figures(ctx: &Context, dir: &Path) -> Result<Vec<Figure>> {
    use crate::circuits::stage::{GRAPH_DIR, MLSAE_DIR, MLSAE_FIGURES, PULLBACKS_FILE, SUMMARY_FILE};
    let Some(stage) = ctx.inputs.run_config.pointer("/circuits/dir").and_then(Value::as_str).map(Path::new) else { return Ok(Vec::new()) };
    let summary: Value = crate::io::read_json(&stage.join(SUMMARY_FILE))?;
    let copy = |from: &Path, to: &str| std::fs::copy(from, dir.join(to)).map(|_| ()).map_err(|e| crate::Error::io(from, e));
    let mut figures = Vec::new();
    if let Some(png) = summary.pointer("/graph/png").and_then(Value::as_str) {
        copy(&stage.join(GRAPH_DIR).join(png), "circuits_graph.png")?;
        if let Some(json) = summary.pointer("/graph/json").and_then(Value::as_str) {
            copy(&stage.join(GRAPH_DIR).join(json), CIRCUITS_GRAPH_JSON)?;
        }
        copy(&stage.join(PULLBACKS_FILE), PULLBACKS_FILE)?;
        let graph = &summary["graph"];
        let score = |key: &str| graph.pointer(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
        figures.push(Figure {
            file: "circuits_graph.png".into(),
            title: format!("Attribution graph: cell {}, step {}", graph["cell_id"].as_str().unwrap_or("?"), graph["step"]),
            caption: format!(
                "What drives this one prediction of the next voltage: features (rows = layers, columns = steps), input channels and error nodes, with edges from backward passes through the replacement model (attention patterns and norms frozen), pruned by influence. Replacement score {:.3}, completeness {:.3}. The graph in circuit-tracer's file format is {CIRCUITS_GRAPH_JSON}; pullback tables of the most active features are in {PULLBACKS_FILE}.",
                score("/scores/pruned_replacement"),
                score("/scores/pruned_completeness"),
            ),
        });
    }
    if let Some(mlsae) = summary.get("mlsae") {
        for file in MLSAE_FIGURES {
            copy(&stage.join(MLSAE_DIR).join(file), file)?;
        }
        let source = mlsae["source"].as_str().unwrap_or("MLSAE");
        let [banding, alignment] = MLSAE_FIGURES.map(String::from);
        figures.push(Figure {
            file: banding,
            title: format!("MLSAE banding ({source})"),
            caption: "Which layer each multi-layer SAE feature reads (encoder) and writes (decoder) most, features sorted by activity; the band is the layer holding the largest share.".into(),
        });
        figures.push(Figure {
            file: alignment,
            title: format!("MLSAE causal alignment ({source})"),
            caption: "A feature's decoder pushed into the residual stream at its trigger layer and carried forward by the model, compared with the feature's own decoder at each later layer (cosine and norm ratio), averaged over tokens where it fires.".into(),
        });
    }
    Ok(figures)
}
