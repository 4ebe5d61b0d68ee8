//! The PNG of `eval-model`: predicted against true voltage for one held-out cell, teacher-forced
//! (top), its error in mV (middle: too small to see on a volt scale) and rolled out over one
//! cycle from its own predictions (bottom).

use std::path::Path;

use plotters::prelude::*;

use crate::plot_style::{self, FONT};
use crate::{Error, Result};

/// What one cell's figure shows.
pub struct CellPlot<'a> {
    pub cell_id: &'a str,
    pub protocol: &'a str,
    /// Test time of every row (s).
    pub time_s: &'a [f64],
    /// True voltage of every row.
    pub voltage: &'a [f32],
    /// Teacher-forced predictions of V_{t+1} for t = 0 … len−1.
    pub teacher: &'a [f32],
    /// A rollout: its first row and the voltages from there on (the first one given).
    pub rollout: Option<(usize, &'a [f32])>,
}

pub fn plot_cell(path: &Path, p: &CellPlot) -> Result<()> {
    plot_style::ensure_fonts();
    let fail = |e: &dyn std::fmt::Display| Error::Other(format!("drawing {}: {e}", path.display()));
    crate::io::write_via_temp(path, |tmp| {
        let root = BitMapBackend::new(tmp, (1200, 1100)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let (title, body) = root.split_vertically(40);
        title
            .titled(&format!("{} ({}): predicted vs true voltage", p.cell_id, p.protocol), (FONT, 22).into_font())
            .map_err(|e| fail(&e))?;
        let (top, rest) = body.split_vertically(410);
        let (middle, bottom) = rest.split_vertically(240);
        let panels = [top, middle, bottom];
        let rows = p.teacher.len();
        let hours = |r: usize| (p.time_s[r] - p.time_s[0]) / 3600.0;
        // Prediction of V_{t+1} is drawn at row t+1, where it can be compared with the truth.
        let teacher: Vec<(f64, f32)> = (0..rows).map(|t| (hours(t + 1), p.teacher[t])).collect();
        let truth: Vec<(f64, f32)> = (1..=rows).map(|r| (hours(r), p.voltage[r])).collect();
        panel(&panels[0], "teacher-forced", "Voltage (V)", &[("true", &truth, plot_style::VOLTAGE), ("model", &teacher, plot_style::PREDICTION)])
            .map_err(|e| fail(&e))?;
        let error: Vec<(f64, f32)> = teacher.iter().zip(&truth).map(|(&(x, m), &(_, t))| (x, (m - t) * 1000.0)).collect();
        panel(&panels[1], "teacher-forced error (model − true)", "Error (mV)", &[("error", &error, plot_style::PREDICTION)]).map_err(|e| fail(&e))?;
        if let Some((start, volts)) = p.rollout {
            let truth: Vec<(f64, f32)> = (0..volts.len()).map(|k| (hours(start + k), p.voltage[start + k])).collect();
            let rolled: Vec<(f64, f32)> = (0..volts.len()).map(|k| (hours(start + k), volts[k])).collect();
            let series = [("true", truth.as_slice(), plot_style::VOLTAGE), ("model", rolled.as_slice(), plot_style::PREDICTION)];
            panel(&panels[2], "rollout over one cycle", "Voltage (V)", &series).map_err(|e| fail(&e))?;
        }
        root.present().map_err(|e| fail(&e))
    })
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// One line per labelled series: its points (time in h, value) and colour.
type Series<'a> = (&'a str, &'a [(f64, f32)], RGBColor);

/// One panel of series against time (h); the first is drawn widest so the others stay visible
/// on top of it where they agree.
fn panel(area: &Area, name: &str, y_desc: &str, series: &[Series]) -> std::result::Result<(), String> {
    let first = series.first().map_or(&[][..], |s| s.1);
    let x0 = first.first().map_or(0.0, |p| p.0);
    let x1 = first.last().map_or(1.0, |p| p.0).max(x0 + 1e-6);
    let finite = series.iter().flat_map(|s| s.1).map(|p| p.1).filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo.is_finite() { (lo as f64, hi as f64) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .caption(name, (FONT, 16))
        .x_label_area_size(34)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, lo - pad..hi + pad)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .max_light_lines(1)
        .light_line_style(plot_style::GRID)
        .x_desc("Time (h)")
        .y_desc(y_desc)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, &(label, points, colour)) in series.iter().enumerate() {
        let width = if i == 0 && series.len() > 1 { 4 } else { 1 };
        chart
            .draw_series(LineSeries::new(
                points.iter().filter(|p| p.1.is_finite()).map(|&(x, v)| (x, v as f64)),
                colour.stroke_width(width),
            ))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(width)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())
}
