//! The sweep's figures: FVU and replacement fidelity against L0 with each variant's Pareto front,
//! and every run's training path in (L0, FVU).

use std::path::Path;

use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::element::ComposedElement;
use plotters::prelude::*;

use super::pareto::SweepRow;
use crate::plot_style::{self, FONT};
use crate::report::card::tick;
use crate::transcoder::config::Variant;
use crate::transcoder::train::CurvePoint;
use crate::{Error, Result};

/// Every figure a sweep can draw: file, title and how to read it (the report shows them so).
pub const FIGURES: [(&str, &str, &str); 3] = [
    (
        "pareto_fvu.png",
        "Sweep: reconstruction error against sparsity",
        "Each marker is one transcoder of the sweep: mean held-out FVU against mean L0 (active features per token), log–log; filled markers joined by a line are each family's Pareto front.",
    ),
    (
        "pareto_fidelity.png",
        "Sweep: replacement fidelity against sparsity",
        "Share of the model's next-step skill kept with every MLP replaced by the transcoder (1 = as the model, 0 = as mean ablation), against mean L0; the MLSAE cannot replace MLPs and is absent.",
    ),
    (
        "pareto_curves.png",
        "Sweep: training paths",
        "Each thin line is one run's path in (L0, FVU) over training, on its training batches (each point the mean since the previous), ending in a dot; markers are the runs' held-out results, as in the FVU figure.",
    ),
];
const SIZE: (u32, u32) = (1100, 760);
const VARIANTS: [(Variant, &str, RGBColor); 4] = [
    (Variant::Clt, "CLT", plot_style::CLT),
    (Variant::Plt, "PLT", plot_style::PLT),
    (Variant::Mlsae, "MLSAE", plot_style::MLSAE),
    (Variant::Sae, "SAE (mlp_out)", plot_style::SAE),
];
const NOTE: RGBColor = RGBColor(110, 110, 110);
const X_DESC: &str = "Mean L0 (active features per token per encoder, log scale)";

fn err(e: impl std::fmt::Display) -> Error {
    Error::Other(format!("drawing sweep figure: {e}"))
}

/// Draws the figures into `dir`; `curves[i]` is the training path of `rows[i]`. Returns the files
/// written (no fidelity figure when no run has a fidelity: MLSAE-only sweeps).
pub fn draw(rows: &[SweepRow], curves: &[&[CurvePoint]], dir: &Path) -> Result<Vec<String>> {
    plot_style::ensure_fonts();
    let mut files = Vec::new();
    let fvu = |r: &SweepRow| Some(r.fvu);
    let y = log_range(rows.iter().filter_map(fvu));
    let [(fvu_png, ..), (fidelity_png, ..), (curves_png, ..)] = FIGURES;
    scatter(&dir.join(fvu_png), "Reconstruction error against sparsity", "Mean FVU on held-out cells (log scale)", rows, &[], y, fvu, |r| r.front_fvu, SeriesLabelPosition::UpperRight)?;
    files.push(fvu_png.to_owned());
    let fidelity = |r: &SweepRow| r.fidelity;
    if rows.iter().any(|r| r.fidelity.is_some()) {
        let y = linear_range(rows.iter().filter_map(fidelity));
        scatter(&dir.join(fidelity_png), "Replacement fidelity against sparsity", "Replacement fidelity, all MLPs replaced (1 = the model)", rows, &[], y, fidelity, |r| r.front_fidelity, SeriesLabelPosition::LowerRight)?;
        files.push(fidelity_png.to_owned());
    }
    let y = log_range(rows.iter().filter_map(fvu).chain(curves.iter().flat_map(|c| c.iter().map(|p| p.fvu as f64))));
    scatter(&dir.join(curves_png), "Training paths (thin lines, ending in a dot) and held-out results", "Mean FVU (log scale)", rows, curves, y, fvu, |r| r.front_fvu, SeriesLabelPosition::UpperRight)?;
    files.push(curves_png.to_owned());
    Ok(files)
}

/// One figure: optional training paths, each variant's runs (filled: on its front, hollow: not)
/// and its front as a line, a legend.
#[allow(clippy::too_many_arguments)]
fn scatter<Y>(
    path: &Path,
    title: &str,
    y_desc: &str,
    rows: &[SweepRow],
    curves: &[&[CurvePoint]],
    y_range: Y,
    y: impl Fn(&SweepRow) -> Option<f64>,
    front: impl Fn(&SweepRow) -> bool,
    legend_at: SeriesLabelPosition,
) -> Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let xs = rows.iter().map(|r| r.l0).chain(curves.iter().flat_map(|c| c.iter().map(|p| p.l0 as f64)));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 20))
        .margin(16)
        .margin_right(30)
        .margin_bottom(40)
        .x_label_area_size(52)
        .y_label_area_size(76)
        .build_cartesian_2d(log_range(xs), y_range)
        .map_err(err)?;
    chart
        .configure_mesh()
        // Log axes draw a light line at every minor tick: too busy behind thin training paths.
        .light_line_style(TRANSPARENT)
        .bold_line_style(plot_style::GRID)
        .x_labels(12)
        .y_labels(10)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .x_desc(X_DESC)
        .y_desc(y_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(err)?;
    let at = |r: &SweepRow| y(r).filter(|v| v.is_finite() && r.l0 > 0.0).map(|v| (r.l0, v));
    for (row, curve) in rows.iter().zip(curves) {
        let colour = colour_of(row.variant);
        let line: Vec<(f64, f64)> = curve.iter().filter(|p| p.l0 > 0.0 && p.fvu > 0.0).map(|p| (p.l0 as f64, p.fvu as f64)).collect();
        chart.draw_series(LineSeries::new(line.iter().copied(), colour.mix(0.45).stroke_width(1))).map_err(err)?;
        chart.draw_series(line.last().map(|&end| Circle::new(end, 3, colour.mix(0.7).filled()))).map_err(err)?;
    }
    for (variant, name, colour) in VARIANTS {
        let of: Vec<&SweepRow> = rows.iter().filter(|r| r.variant == variant && at(r).is_some()).collect();
        if of.is_empty() {
            continue;
        }
        let mut line: Vec<(f64, f64)> = of.iter().filter(|r| front(r)).filter_map(|r| at(r)).collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart.draw_series(LineSeries::new(line, colour.stroke_width(2))).map_err(err)?;
        let fill = |r: &SweepRow| if front(r) { colour } else { WHITE };
        chart
            .draw_series(of.iter().map(|r| marker(variant, at(r).expect("plotted"), fill(r), colour)))
            .map_err(err)?
            .label(format!("{name} ({} runs)", of.len()))
            .legend(move |(x, y)| marker(variant, (x + 10, y), colour, colour));
    }
    chart
        .configure_series_labels()
        .position(legend_at)
        .background_style(WHITE.mix(0.9))
        .border_style(plot_style::GRID)
        .label_font((FONT, 14))
        .draw()
        .map_err(err)?;
    let mut note = "Filled markers joined by a line: each family's Pareto front on held-out cells; hollow: dominated runs.".to_owned();
    if !curves.is_empty() {
        note += " Paths are measured on training batches.";
    }
    root.draw_text(&note, &TextStyle::from((FONT, 13)).color(&NOTE), (96, SIZE.1 as i32 - 22)).map_err(err)?;
    root.present().map_err(err)
}

fn colour_of(v: Variant) -> RGBColor {
    VARIANTS.iter().find(|(w, ..)| *w == v).map_or(BLACK, |(.., c)| *c)
}

/// Circle (CLT), triangle (PLT), square (MLSAE) or diamond (SAE) centred on `at`: one element type for all three
/// (a filled polygon and its outline), so that one series can hold any of them.
fn marker<C, DB: DrawingBackend>(variant: Variant, at: C, fill: RGBColor, edge: RGBColor) -> Marker<C, DB> {
    let shape: Vec<(i32, i32)> = match variant {
        Variant::Clt => (0..16).map(|k| k as f64 * std::f64::consts::TAU / 16.0).map(|a| ((6.5 * a.cos()).round() as i32, (6.5 * a.sin()).round() as i32)).collect(),
        Variant::Plt => vec![(0, -8), (7, 5), (-7, 5)],
        Variant::Mlsae => vec![(-6, -6), (6, -6), (6, 6), (-6, 6)],
        Variant::Sae => vec![(0, -8), (8, 0), (0, 8), (-8, 0)],
    };
    let outline: Vec<(i32, i32)> = shape.iter().chain(shape.first()).copied().collect();
    EmptyElement::at(at) + Polygon::new(shape, fill.filled()) + PathElement::new(outline, edge.stroke_width(2))
}

type Marker<C, DB> = ComposedElement<C, DB, Polygon<(i32, i32)>, PathElement<(i32, i32)>>;

/// A log axis over the positive values, padded by a factor 1.4 each side, ticked at 1, 2 and 5
/// times powers of ten: plotters' own log ticks start at the first power of ten in range, so an
/// axis from 12 to 116 had a single label (100).
fn log_range(values: impl Iterator<Item = f64>) -> WithKeyPoints<LogCoord<f64>> {
    let (lo, hi) = values.filter(|v| v.is_finite() && *v > 0.0).fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo.is_finite() { (lo / 1.4, hi * 1.4) } else { (0.1, 10.0) };
    let hi = hi.max(lo * 10.0);
    let ticks = (lo.log10().floor() as i32..=hi.log10().ceil() as i32)
        .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
        .filter(|v| (lo..=hi).contains(v))
        .collect();
    (lo..hi).log_scale().with_key_points(ticks)
}

/// A linear axis over the values and 1 (a perfect replacement), padded by 6 %.
fn linear_range(values: impl Iterator<Item = f64>) -> RangedCoordf64 {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::INFINITY, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo = if lo.is_finite() { lo } else { 0.0 };
    let pad = ((hi - lo) * 0.06).max(0.01);
    ((lo - pad)..(hi + pad)).into()
}
