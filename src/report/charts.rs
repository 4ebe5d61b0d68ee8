//! Chart kinds shared by the report's overview figures and the circuits' figures: a PNG written
//! atomically, values per category as jittered points with a box, and a small matrix heat map
//! with its numbers in the cells.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::plot_style::{self, FONT};
use crate::report::card::{colour_bar, draw_err, viridis, Area, FEATURE, MUTED};
use crate::Result;

/// Draws in memory, then writes the PNG through a temporary file, so no reader sees half a figure.
pub(crate) fn draw_png(path: &Path, size: (u32, u32), draw: impl FnOnce(&Area) -> Result<()>) -> Result<()> {
    plot_style::ensure_fonts();
    let mut pixels = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    crate::report::png::write_png(path, size, &pixels)
}

fn centred(size: u32, colour: &'static RGBColor) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).color(colour).pos(Pos::new(HPos::Center, VPos::Center))
}

/// Axes and labels of a strip plot.
pub(crate) struct Strips<'s> {
    pub caption: &'s str,
    /// One name per category, left to right.
    pub categories: &'s [String],
    pub x_desc: &'s str,
    pub y_desc: &'s str,
    pub range: (f64, f64),
    /// Median labels.
    pub fmt: fn(f64) -> String,
    /// Tick labels (blank to skip a tick).
    pub ticks: fn(f64) -> String,
    /// Values marked by a grey horizontal line (0, 1, …).
    pub guides: &'s [f64],
}

/// Points (category, key, value), jittered within their category by `key` (the same key sits
/// at the same offset in every panel), over each category's interquartile box and median bar.
pub(crate) fn strip_plot(area: &Area, spec: &Strips, points: &[(usize, usize, f64)]) -> Result<()> {
    let n = spec.categories.len();
    let (lo, hi) = spec.range;
    let mut chart = ChartBuilder::on(area)
        .caption(spec.caption, (FONT, 16))
        .margin(10)
        .margin_right(24)
        .x_label_area_size(48)
        .y_label_area_size(64)
        // Category c is centred on x = c, so integer ticks name the categories.
        .build_cartesian_2d(-0.5..n as f64 - 0.5, lo..hi)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(1)
        .light_line_style(plot_style::GRID)
        .x_labels(n + 1)
        .y_labels(7)
        .x_label_formatter(&|v| match ((v - v.round()).abs() < 1e-6, spec.categories.get(v.round().max(0.0) as usize)) {
            (true, Some(name)) => name.clone(),
            _ => String::new(),
        })
        .y_label_formatter(&|v| (spec.ticks)(*v))
        .x_desc(spec.x_desc)
        .y_desc(spec.y_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    for &g in spec.guides {
        chart.draw_series(std::iter::once(PathElement::new(vec![(-0.5, g), (n as f64 - 0.5, g)], MUTED.stroke_width(1)))).map_err(draw_err)?;
    }
    let jitter = |key: usize| ((key as f64 * 0.618_034).fract() - 0.5) * 0.5;
    for c in 0..n {
        let mut of: Vec<f64> = points.iter().filter(|p| p.0 == c).map(|p| p.2.clamp(lo, hi)).collect();
        if of.is_empty() {
            continue;
        }
        of.sort_by(f64::total_cmp);
        let q = |p: f64| of[((of.len() - 1) as f64 * p).round() as usize];
        let x = c as f64;
        chart.draw_series(std::iter::once(Rectangle::new([(x - 0.3, q(0.25)), (x + 0.3, q(0.75))], FEATURE.mix(0.12).filled()))).map_err(draw_err)?;
        chart
            .draw_series(points.iter().filter(|p| p.0 == c).map(|&(_, key, v)| Circle::new((x + jitter(key), v.clamp(lo, hi)), 3, FEATURE.mix(0.55).filled())))
            .map_err(draw_err)?;
        chart.draw_series(std::iter::once(PathElement::new(vec![(x - 0.32, q(0.5)), (x + 0.32, q(0.5))], BLACK.stroke_width(3)))).map_err(draw_err)?;
        // Above the box's top left corner, on white so the points under it do not hide it.
        let label = format!("median {} · n = {}", (spec.fmt)(q(0.5)), of.len());
        let width = 7 * label.chars().count() as i32 + 8;
        let tag = EmptyElement::at((x - 0.3, q(0.75)))
            + Rectangle::new([(0, -24), (width, -2)], WHITE.filled())
            + Rectangle::new([(0, -24), (width, -2)], MUTED.stroke_width(1))
            + Text::new(label, (4, -20), (FONT, 14).into_font());
        chart.draw_series(std::iter::once(tag)).map_err(draw_err)?;
    }
    Ok(())
}

/// A small matrix heat map: rows top to bottom, columns left to right, each cell coloured on a
/// viridis scale from 0 to the largest value and carrying its number; `None` cells are grey.
pub(crate) struct Matrix<'s> {
    pub caption: &'s str,
    pub row_names: &'s [String],
    pub col_names: &'s [String],
    pub row_desc: &'s str,
    pub col_desc: &'s str,
    /// [rows][cols]
    pub values: &'s [Vec<Option<f64>>],
    /// The number written in a cell.
    pub fmt: fn(f64) -> String,
    /// Title of the colour bar.
    pub scale: &'s str,
}

pub(crate) fn matrix(area: &Area, spec: &Matrix) -> Result<()> {
    let (rows, cols) = (spec.row_names.len(), spec.col_names.len());
    let max = spec.values.iter().flatten().flatten().copied().fold(0.0f64, f64::max).max(1e-12);
    let (w, _) = area.dim_in_pixel();
    let (plot, bar) = area.split_horizontally(w - 120);
    let mut chart = ChartBuilder::on(&plot)
        .caption(spec.caption, (FONT, 16))
        .margin(10)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d((0..cols.max(2) - 1).into_segmented(), (0..rows.max(2) - 1).into_segmented())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(cols)
        .y_labels(rows)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(c) if *c < cols => spec.col_names[*c].clone(),
            _ => String::new(),
        })
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(r) if *r < rows => spec.row_names[rows - 1 - r].clone(),
            _ => String::new(),
        })
        .x_desc(spec.col_desc)
        .y_desc(spec.row_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    for (r, row) in spec.values.iter().enumerate() {
        let y = rows - 1 - r; // first row on top
        for (c, v) in row.iter().enumerate() {
            let corners = [(SegmentValue::Exact(c), SegmentValue::Exact(y)), (SegmentValue::Exact(c + 1), SegmentValue::Exact(y + 1))];
            let centre = (SegmentValue::CenterOf(c), SegmentValue::CenterOf(y));
            let (fill, label, ink) = match v {
                Some(v) => {
                    let t = v / max;
                    (viridis(t), (spec.fmt)(*v), if t < 0.6 { &WHITE } else { &BLACK })
                }
                None => (RGBColor(238, 238, 238), "–".to_owned(), &MUTED),
            };
            chart.draw_series(std::iter::once(Rectangle::new(corners.clone(), fill.filled()))).map_err(draw_err)?;
            chart.draw_series(std::iter::once(Rectangle::new(corners, WHITE.stroke_width(2)))).map_err(draw_err)?;
            chart.draw_series(std::iter::once(Text::new(label, centre, centred(16, ink)))).map_err(draw_err)?;
        }
    }
    colour_bar(&bar, (0.0, max), spec.scale, viridis, crate::report::card::tick)
}
