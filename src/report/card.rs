//! One feature card (DESIGN §6): header with the label and its scores, then panels from "how
//! strongly and how often" (histogram, covariates) through "where" (top windows, one example per
//! quantile) to "what it connects to" (ROC, decoder norms, inputs, co-firing, protocols).

use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::data::canonical::CellData;
use crate::label::covariates::Covariate;
use crate::label::FeatureLabel;
use crate::mine::stats::{Window, WindowKind};
use crate::mine::FeatureActivations;
use crate::plot_style::{self, FONT};
use crate::report::png::write_png;
use crate::report::{Context, FeatureFacts, CARD_SIZE, THUMB_SIZE};
use crate::{Error, Result};

pub(crate) type Area<'b> = DrawingArea<BitMapBackend<'b>, Shift>;

/// Top windows drawn as small multiples (columns).
const TOP_WINDOWS: usize = 4;
/// Firing steps drawn per activation-vs-covariate scatter.
const SCATTER_POINTS: usize = 1500;
/// Bins of the mean-activation line of those scatters.
const COVARIATE_BINS: usize = 24;
/// Colour of everything that is the feature itself (bars, points, the ROC curve).
pub(crate) const FEATURE: RGBColor = RGBColor(94, 60, 153);
pub(crate) const MUTED: RGBColor = RGBColor(150, 150, 150);
/// Signed effects (input shifts, the heat map): red above average, blue below.
pub(crate) const POSITIVE: RGBColor = RGBColor(178, 24, 43);
pub(crate) const NEGATIVE: RGBColor = RGBColor(33, 102, 172);

pub(crate) fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::Other(format!("drawing report figure: {e}"))
}

pub(crate) fn bold(size: u32) -> FontDesc<'static> {
    FontDesc::new(FontFamily::Name(FONT), size as f64, FontStyle::Bold)
}

/// Viridis, by linear interpolation between five of its stops; silent steps are light grey.
pub(crate) fn viridis(x: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
    let x = x.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let (i, t) = ((x.floor() as usize).min(STOPS.len() - 2), x - x.floor().min((STOPS.len() - 2) as f64));
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * t).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn activation_colour(v: f32, max: f32) -> RGBColor {
    if v > 0.0 { viridis((v / max.max(1e-12)) as f64) } else { RGBColor(200, 200, 200) }
}

/// Short number: about 3 significant figures, scientific below 1e-3 and from 1e5.
pub(crate) fn num(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    if x == 0.0 {
        return "0".into();
    }
    if x.abs() < 1e-3 || x.abs() >= 1e5 {
        return format!("{x:.1e}");
    }
    let decimals = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.decimals$}")
}

/// Axis tick: at most three decimals, trailing zeros dropped ("0", "0.25", "20", "1e-4").
pub(crate) fn tick(x: f64) -> String {
    // Ticks computed as lo + k·step land a rounding error off zero (-3e-17).
    if x.abs() < 1e-12 {
        return "0".into();
    }
    if x.abs() < 1e-3 {
        return format!("{x:.0e}");
    }
    // Three significant digits below 1: at three decimals a coin cell's 0.0015 A read "0.002",
    // as its neighbour 0.002 A did.
    let decimals = if x.abs() < 1.0 { (2 - x.abs().log10().floor() as i32).max(3) as usize } else { 3 };
    let s = format!("{x:.decimals$}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_owned() }
}

pub(crate) fn percent_tick(x: f64) -> String {
    let v = 100.0 * x;
    // Written out, as the decades above it are: "1e-4%" beside "0.001%" reads as another unit.
    if v > 0.0 && v < 1e-3 {
        return format!("{v:.*}%", (-v.log10()).ceil() as usize);
    }
    format!("{}%", tick(v))
}

pub(crate) fn percent(x: f64) -> String {
    if x > 0.0 && x < 0.001 { format!("{:.3}%", 100.0 * x) } else { format!("{:.1}%", 100.0 * x) }
}

/// `text` cut to `max` characters with "…" in the middle, so both ends stay readable.
pub(crate) fn middle_ellipsis(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        return text.to_owned();
    }
    let head = (max - 1) / 2;
    let tail = max - 1 - head;
    format!("{}…{}", chars[..head].iter().collect::<String>(), chars[chars.len() - tail..].iter().collect::<String>())
}

/// Greedy word wrap at `width` characters.
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

pub(crate) fn text<'s>(area: &Area, s: &str, at: (i32, i32), style: impl Into<TextStyle<'s>>) -> Result<()> {
    area.draw(&Text::new(s.to_owned(), at, style.into())).map_err(draw_err)
}

/// A centred note in an empty panel ("not logged", "no transcoder given").
pub(crate) fn empty_panel(area: &Area, caption: &str, note: &str) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    text(area, caption, (12, 8), (FONT, 18))?;
    text(area, note, (w as i32 / 2 - 4 * note.len() as i32, h as i32 / 2), (FONT, 16).into_font().color(&MUTED))
}

/// Horizontal bars, first row on top; negative values grow left of a zero line.
pub(crate) fn hbars(area: &Area, caption: &str, rows: &[(String, f64)], x_desc: &str, fmt: fn(f64) -> String) -> Result<()> {
    let rows: Vec<&(String, f64)> = rows.iter().filter(|r| r.1.is_finite()).collect();
    if rows.is_empty() {
        return empty_panel(area, caption, "nothing to show");
    }
    let n = rows.len();
    let lo = rows.iter().map(|r| r.1).fold(0.0f64, f64::min);
    let hi = rows.iter().map(|r| r.1).fold(0.0f64, f64::max);
    let pad = ((hi - lo) * 0.06).max(1e-9);
    // All-zero bars get a unit axis rather than a microscopic one.
    let (lo, hi) = (if lo < 0.0 { lo - pad } else { 0.0 }, if hi > 0.0 { hi + pad } else if lo < 0.0 { pad } else { 1.0 });
    // Long names (protocols of real cycler files) keep their start and end around an ellipsis.
    let names: Vec<String> = rows.iter().map(|r| middle_ellipsis(&r.0, 28)).collect();
    let label_width = names.iter().map(|s| s.chars().count()).max().unwrap_or(4) as u32 * 8 + 16;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(10)
        .margin_right(24)
        .x_label_area_size(44)
        .y_label_area_size(label_width)
        // A usize range is inclusive in plotters (0..n has n + 1 segments); 0..0 would be empty.
        .build_cartesian_2d(lo..hi, (0..n.max(2) - 1).into_segmented())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .max_light_lines(1)
        .light_line_style(plot_style::GRID)
        .x_labels(5)
        .y_labels(n)
        .x_label_formatter(&|v| fmt(*v))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(j) if *j < n => names[n - 1 - j].clone(),
            _ => String::new(),
        })
        .x_desc(x_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    let signed = lo < 0.0;
    let bar = |j: usize, v: f64| {
        let colour = if !signed { FEATURE } else if v < 0.0 { NEGATIVE } else { POSITIVE };
        let y = n - 1 - j;
        Rectangle::new([(0.0, SegmentValue::Exact(y)), (v, SegmentValue::Exact(y + 1))], colour.mix(0.85).filled())
    };
    chart.draw_series(rows.iter().enumerate().map(|(j, r)| bar(j, r.1))).map_err(draw_err)?;
    // Thin white gaps between bars read better than touching blocks.
    chart
        .draw_series((1..n).map(|y| PathElement::new(vec![(lo, SegmentValue::Exact(y)), (hi, SegmentValue::Exact(y))], WHITE.stroke_width(4))))
        .map_err(draw_err)?;
    if lo < 0.0 {
        chart.draw_series(std::iter::once(PathElement::new(vec![(0.0, SegmentValue::Exact(0)), (0.0, SegmentValue::Exact(n))], BLACK.stroke_width(1)))).map_err(draw_err)?;
    }
    Ok(())
}

/// Windows the thumbnail shows side by side.
const THUMB_WINDOWS: usize = 2;

/// Thumbnail of a card, beside it in `thumbs/`.
pub fn thumb_path(card: &Path) -> std::path::PathBuf {
    let dir = card.parent().unwrap_or(Path::new("."));
    dir.join("thumbs").join(card.file_name().unwrap_or_default())
}

/// Draws one card to `path` and its thumbnail to [`thumb_path`]. Drawn in memory, then each PNG
/// is written through a temporary file, so a reader never sees half a PNG.
pub fn draw_card(ctx: &Context, facts: &FeatureFacts, path: &Path) -> Result<()> {
    plot_style::ensure_fonts();
    let acts = ctx.acts(facts.index);
    let pixels = draw_in_memory(CARD_SIZE, |root| {
        let (header, rest) = root.split_vertically(130);
        let (row_a, rest) = rest.split_vertically(340);
        let (windows, rest) = rest.split_vertically(820);
        let (quantiles, rest) = rest.split_vertically(330);
        let (row_b, row_c) = rest.split_vertically(320);
        draw_header(&header, ctx, facts)?;
        draw_row_a(&row_a, ctx, facts, acts)?;
        draw_top_windows(&windows, ctx, facts, acts)?;
        draw_quantiles(&quantiles, ctx, facts, acts)?;
        draw_row_b(&row_b, facts)?;
        draw_row_c(&row_c, ctx, facts)
    })?;
    write_png(path, CARD_SIZE, &pixels)?;
    let thumb = draw_in_memory(THUMB_SIZE, |root| draw_thumb(root, ctx, facts, acts))?;
    write_png(&thumb_path(path), THUMB_SIZE, &thumb)
}

/// RGB pixels of a white figure of `size` that `draw` fills.
fn draw_in_memory(size: (u32, u32), draw: impl FnOnce(&Area) -> Result<()>) -> Result<Vec<u8>> {
    let mut pixels = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    Ok(pixels)
}

/// The thumbnail's panels: a row per channel (voltage, current) on one scale across the windows,
/// a column per window, framed in light grey; the card's colours and peak ring.
fn draw_thumb(root: &Area, ctx: &Context, facts: &FeatureFacts, acts: &FeatureActivations) -> Result<()> {
    let shown = shown_windows(ctx, ctx.mined(facts.index));
    let windows: Vec<&Window> = shown.iter().copied().filter(|w| w.kind == WindowKind::Top).take(THUMB_WINDOWS).collect();
    for (row, ch) in root.split_evenly((2, 1)).iter().zip(&CHANNELS[..2]) {
        let y = channel_range(ctx, &windows, ch);
        for (panel, w) in row.split_evenly((1, THUMB_WINDOWS)).iter().zip(&windows) {
            let (xs, ys, a) = trace_points(ctx, acts, w, ch, 1.0);
            let x = finite_range(xs.iter().copied()).unwrap_or(-1.0..1.0);
            let mut chart = ChartBuilder::on(&panel.margin(4, 4, 4, 4)).build_cartesian_2d(x.clone(), y.clone()).map_err(draw_err)?;
            let frame = vec![(x.start, y.start), (x.end, y.start), (x.end, y.end), (x.start, y.end), (x.start, y.start)];
            chart.draw_series(std::iter::once(PathElement::new(frame, RGBColor(210, 210, 210).stroke_width(2)))).map_err(draw_err)?;
            draw_segments(&mut chart, (&xs, &ys, &a), w, facts.max)?;
        }
    }
    Ok(())
}

/// The scores line of a label's best candidate, held out.
pub(crate) fn scores_line(label: &FeatureLabel) -> String {
    let Some(c) = label.candidates.first() else { return "no candidate".into() };
    format!(
        "held out: AUROC {} · F1 {} · Spearman {} · R² {} · q {} · stability {} · explain→test gap {} · beats raw V/I baseline: {}",
        num(c.test.auroc),
        num(c.test.f1),
        num(c.test.spearman),
        num(c.test.r2),
        num(c.q_value),
        num(label.stability),
        num(c.gap),
        baseline_verdict(label)
    )
}

/// How a label fares against the raw-V/I floor, in words: a label on raw V/I has nothing to
/// beat, and one whose kind has no raw-V/I candidate passes for want of one, not by beating it.
pub(crate) fn baseline_verdict(label: &FeatureLabel) -> &'static str {
    match (label.candidates.first(), &label.baseline) {
        (Some(c), _) if c.candidate.is_raw_signal() => "is raw V/I itself",
        (_, None) => "no raw V/I candidate of its kind",
        _ if label.beats_baseline => "yes",
        _ => "no",
    }
}

fn draw_header(area: &Area, ctx: &Context, facts: &FeatureFacts) -> Result<()> {
    let m = ctx.mined(facts.index);
    text(area, &format!("Layer {} · feature {}", facts.layer, facts.feature), (24, 14), bold(30))?;
    let effect = m.output_effect_mv.map_or(String::new(), |e| format!(" · ablated: ΔV {} mV", num(e)));
    let stats = format!("density {} · mean when firing {} · max {}{effect}", percent(facts.density), num(m.mean_firing), num(m.max as f64));
    text(area, &stats, (760, 22), (FONT, 20).into_font().color(&RGBColor(60, 60, 60)))?;
    let (verdict, sentence, colour) = match ctx.label(facts.index) {
        Some(l) if l.accepted => ("Label:", l.label.clone(), RGBColor(20, 110, 40)),
        // "unexplained: <reason> (closest: …)" reads on as "Unexplained: <reason> (closest: …)".
        Some(l) => ("Unexplained:", l.label.trim_start_matches("unexplained").trim_start_matches([':', ' ']).to_owned(), RGBColor(150, 60, 30)),
        None => ("Unlabelled:", "no label was computed for this feature".into(), MUTED),
    };
    let verdict_style = TextStyle::from(bold(20)).color(&colour);
    text(area, verdict, (24, 60), verdict_style.clone())?;
    let indent = 24 + 10 + area.estimate_text_size(verdict, &verdict_style).map_err(draw_err)?.0 as i32;
    let lines = wrap(&sentence, (CARD_SIZE.0 as usize - indent as usize) / 10);
    text(area, &lines[0], (indent, 60), (FONT, 20))?;
    if let Some(more) = lines.get(1) {
        text(area, &format!("{more}{}", if lines.len() > 2 { " …" } else { "" }), (indent, 84), (FONT, 20))?;
    }
    if let Some(l) = ctx.label(facts.index) {
        text(area, &scores_line(l), (24, 108), (FONT, 16).into_font().color(&RGBColor(70, 70, 70)))?;
    }
    area.draw(&PathElement::new(vec![(0, 129), (CARD_SIZE.0 as i32, 129)], plot_style::GRID.stroke_width(2))).map_err(draw_err)
}

fn draw_row_a(area: &Area, ctx: &Context, facts: &FeatureFacts, acts: &FeatureActivations) -> Result<()> {
    let panels = area.split_evenly((1, 4));
    draw_histogram(&panels[0], ctx, facts)?;
    let specs = [(Covariate::Soc, "SOC (%)", 100.0), (Covariate::CRate, "C-rate (1/h, + = charge)", 1.0), (Covariate::Temperature, "Temperature (°C)", 1.0)];
    for (k, (panel, (cov, desc, scale))) in panels[1..].iter().zip(specs).enumerate() {
        draw_covariate(panel, ctx, facts, acts, cov, desc, scale, k == 0)?;
    }
    Ok(())
}

fn draw_histogram(area: &Area, ctx: &Context, facts: &FeatureFacts) -> Result<()> {
    let m = ctx.mined(facts.index);
    let (edges, counts) = (&m.histogram_edges, &m.histogram_counts);
    if counts.is_empty() {
        return empty_panel(area, "Activation histogram", "never fires");
    }
    let (lo, hi) = (edges[0] as f64 * 0.9, *edges.last().expect("edges") as f64 * 1.1);
    let ymax = counts.iter().copied().max().unwrap_or(1) as f64 * 2.0;
    let mut chart = ChartBuilder::on(area)
        .caption("Activation histogram (firing steps)", (FONT, 18))
        .margin(10)
        .x_label_area_size(44)
        .y_label_area_size(62)
        .build_cartesian_2d((lo..hi).log_scale(), (0.7f64..ymax.max(2.0)).log_scale())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .max_light_lines(1)
        .light_line_style(plot_style::GRID)
        .x_labels(5)
        .y_labels(5)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .x_desc("Activation (log)")
        .y_desc("Steps (log)")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(b, &c)| {
            Rectangle::new([(edges[b] as f64, 0.7), (edges[b + 1] as f64, c as f64)], FEATURE.mix(0.8).filled())
        }))
        .map_err(draw_err)?;
    Ok(())
}

/// Activation of firing steps against one covariate, with the mean over all steps (zeros
/// included) per covariate bin: the dots show how strongly, the line how often × how strongly.
#[allow(clippy::too_many_arguments)]
fn draw_covariate(area: &Area, ctx: &Context, facts: &FeatureFacts, acts: &FeatureActivations, cov: Covariate, desc: &str, scale: f64, legend: bool) -> Result<()> {
    let caption = format!("Activation vs {}", desc.split(" (").next().unwrap_or(desc));
    let covs = ctx.inputs.covariates;
    let (lo, hi) = covs.iter().flat_map(|c| c.column(cov)).filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v as f64 * scale), hi.max(v as f64 * scale)));
    if !lo.is_finite() {
        return empty_panel(area, &caption, "not logged in this dataset");
    }
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let bin = |x: f64| (((x - lo) / (hi - lo) * COVARIATE_BINS as f64) as usize).min(COVARIATE_BINS - 1);
    let (mut steps, mut sum) = (vec![0u64; COVARIATE_BINS], vec![0.0f64; COVARIATE_BINS]);
    for x in covs.iter().flat_map(|c| c.column(cov)).filter(|v| v.is_finite()) {
        steps[bin(*x as f64 * scale)] += 1;
    }
    let stride = (acts.nnz() / SCATTER_POINTS).max(1);
    let mut points = Vec::new();
    for (j, (cell, row, v)) in acts.entries().enumerate() {
        let x = covs[cell].column(cov)[row as usize] as f64 * scale;
        if x.is_finite() {
            sum[bin(x)] += v as f64;
            if j % stride == 0 {
                points.push((x, v as f64));
            }
        }
    }
    let ymax = (facts.max as f64 * 1.08).max(1e-6);
    let pad = (hi - lo) * 0.03;
    let mut chart = ChartBuilder::on(area)
        .caption(&caption, (FONT, 18))
        .margin(10)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(lo - pad..hi + pad, 0.0..ymax)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .max_light_lines(1)
        .light_line_style(plot_style::GRID)
        .x_labels(6)
        .y_labels(5)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .x_desc(desc)
        .y_desc("Activation")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 2, FEATURE.mix(0.25).filled())))
        .map_err(draw_err)?
        .label("firing step")
        .legend(|(x, y)| Circle::new((x + 8, y), 4, FEATURE.filled()));
    let width = (hi - lo) / COVARIATE_BINS as f64;
    let line: Vec<(f64, f64)> = (0..COVARIATE_BINS).filter(|&b| steps[b] > 0).map(|b| (lo + (b as f64 + 0.5) * width, sum[b] / steps[b] as f64)).collect();
    chart
        .draw_series(LineSeries::new(line, BLACK.stroke_width(2)))
        .map_err(draw_err)?
        .label("mean, all steps")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(2)));
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(plot_style::GRID)
            .label_font((FONT, 14))
            .draw()
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Activation at each row of a window (0 where silent).
pub(crate) fn window_activation(acts: &FeatureActivations, w: &Window) -> Vec<f32> {
    let (rows, values) = acts.cell(w.cell);
    (w.start_row..w.end_row).map(|r| rows.binary_search(&r).map_or(0.0, |j| values[j])).collect()
}

/// One physical channel of the small multiples.
struct Channel {
    name: &'static str,
    unit: &'static str,
    values: fn(&CellData, usize) -> f64,
}

const CHANNELS: [Channel; 4] = [
    Channel { name: "Voltage", unit: "V", values: |d, i| d.voltage[i] as f64 },
    Channel { name: "Current", unit: "A", values: |d, i| d.current[i] as f64 },
    Channel { name: "Temperature", unit: "°C", values: |d, i| d.temperature[i].map_or(f64::NAN, |t| t as f64) },
    Channel { name: "SOC", unit: "%", values: |d, i| 100.0 * d.soc[i] as f64 },
];

/// The windows a card and a feature page show: `TOP_WINDOWS` of the mined top windows, then the
/// first example of each activation decile, weakest first. The top windows are the strongest of
/// a protocol not shown yet, then of a cell not shown yet, then any: replicate cells and the
/// next cycle of one cell give near-identical windows, and four of them show one event.
pub(crate) fn shown_windows<'a>(ctx: &Context, m: &'a crate::mine::MinedFeature) -> Vec<&'a Window> {
    let tops: Vec<&Window> = m.windows.iter().filter(|w| w.kind == WindowKind::Top).collect();
    let cells = &ctx.inputs.dataset.cells;
    let protocol = |w: &Window| cells[w.cell].protocol.as_deref().unwrap_or(&cells[w.cell].cell_id);
    let mut picked: Vec<usize> = Vec::new();
    for pass in 0..3 {
        for (i, w) in tops.iter().enumerate() {
            let new = |same: &dyn Fn(&Window) -> bool| picked.iter().all(|&j| !same(tops[j]));
            let fresh = match pass {
                0 => new(&|o| protocol(o) == protocol(w)),
                1 => new(&|o| o.cell == w.cell),
                _ => true,
            };
            if picked.len() < TOP_WINDOWS && fresh && !picked.contains(&i) {
                picked.push(i);
            }
        }
    }
    picked.sort_unstable();
    let mut shown: Vec<&Window> = picked.into_iter().map(|i| tops[i]).collect();
    for w in m.windows.iter().filter(|w| w.kind == WindowKind::Quantile) {
        if shown.last().is_none_or(|last| last.kind != WindowKind::Quantile || last.rank != w.rank) {
            shown.push(w);
        }
    }
    shown
}

/// One time unit for every window of a feature (card and page alike): seconds from the peak, or
/// minutes when the longest window spans more than half an hour. Returns (seconds per unit, unit).
pub(crate) fn feature_time_scale(ctx: &Context, windows: &[&Window]) -> (f64, &'static str) {
    let span = windows
        .iter()
        .map(|w| {
            let t = &ctx.inputs.dataset.data[w.cell].test_time;
            t[w.end_row as usize - 1] - t[w.start_row as usize]
        })
        .fold(0.0f64, f64::max);
    if span > 1800.0 { (60.0, "min") } else { (1.0, "s") }
}

/// One y range for a channel across windows, so that their panels compare.
fn channel_range(ctx: &Context, windows: &[&Window], ch: &Channel) -> Range<f64> {
    let values = windows.iter().flat_map(|w| {
        let data = &ctx.inputs.dataset.data[w.cell];
        (w.start_row as usize..w.end_row as usize).map(move |i| (ch.values)(data, i))
    });
    finite_range(values).unwrap_or(0.0..1.0)
}

fn finite_range(values: impl Iterator<Item = f64>) -> Option<Range<f64>> {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return None;
    }
    let pad = ((hi - lo) * 0.08).max(1e-3 * hi.abs().max(1.0));
    Some(lo - pad..hi + pad)
}

struct Trace<'w> {
    window: &'w Window,
    x_scale: f64,
    x_desc: &'w str,
    max: f32,
}

/// One small panel: a channel against time, each segment coloured by the activation at its
/// end, the peak marked by a ring and a faint vertical line.
#[allow(clippy::too_many_arguments)]
fn draw_trace(area: &Area, ctx: &Context, acts: &FeatureActivations, tr: &Trace, ch: &Channel, y: Range<f64>, caption: Option<&str>, x_desc: bool, y_desc: bool) -> Result<()> {
    let (xs, ys, a) = trace_points(ctx, acts, tr.window, ch, tr.x_scale);
    let x = finite_range(xs.iter().copied()).unwrap_or(-1.0..1.0);
    let mut builder = ChartBuilder::on(area);
    builder.margin(4).margin_right(10).x_label_area_size(if x_desc { 40 } else { 22 }).y_label_area_size(if y_desc { 70 } else { 50 });
    if let Some(c) = caption {
        builder.caption(c, (FONT, 14));
    }
    let mut chart = builder.build_cartesian_2d(x, y.clone()).map_err(draw_err)?;
    let y_name = format!("{} ({})", ch.name, ch.unit);
    // A tick label per 60 px: the deciles' narrow panels ran five together ("0 100200300").
    let x_labels = (area.dim_in_pixel().0 as usize / 60).clamp(2, 5);
    chart
        .configure_mesh()
        .max_light_lines(1)
        .light_line_style(plot_style::GRID)
        .x_labels(x_labels)
        .y_labels(4)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .x_desc(if x_desc { tr.x_desc } else { "" })
        .y_desc(if y_desc { y_name.as_str() } else { "" })
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    if ys.iter().all(|v| !v.is_finite()) {
        let mid = (y.start + y.end) / 2.0;
        return chart.draw_series(std::iter::once(Text::new("not logged", (0.0, mid), (FONT, 14).into_font().color(&MUTED)))).map(|_| ()).map_err(draw_err);
    }
    chart.draw_series(std::iter::once(PathElement::new(vec![(0.0, y.start), (0.0, y.end)], BLACK.mix(0.25).stroke_width(1)))).map_err(draw_err)?;
    draw_segments(&mut chart, (&xs, &ys, &a), tr.window, tr.max)
}

/// A window's times from its peak (in units of `x_scale` seconds), the channel's values and the
/// feature's activations, row by row.
fn trace_points(ctx: &Context, acts: &FeatureActivations, w: &Window, ch: &Channel, x_scale: f64) -> (Vec<f64>, Vec<f64>, Vec<f32>) {
    let data = &ctx.inputs.dataset.data[w.cell];
    let t0 = data.test_time[w.peak_row as usize];
    let rows = w.start_row as usize..w.end_row as usize;
    let xs = rows.clone().map(|i| (data.test_time[i] - t0) / x_scale).collect();
    let ys = rows.map(|i| (ch.values)(data, i)).collect();
    (xs, ys, window_activation(acts, w))
}

type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>;

/// The trace's segments, each coloured by the activation at its end, and a ring at the peak.
fn draw_segments(chart: &mut Chart, (xs, ys, a): (&[f64], &[f64], &[f32]), w: &Window, max: f32) -> Result<()> {
    let drawn = || (1..xs.len()).filter(|&i| ys[i].is_finite() && ys[i - 1].is_finite());
    // Firing segments over a dark edge, so that the strongest (viridis yellow) shows on white.
    let edges = drawn().filter(|&i| a[i] > 0.0).map(|i| PathElement::new(vec![(xs[i - 1], ys[i - 1]), (xs[i], ys[i])], RGBColor(58, 58, 58).stroke_width(5)));
    chart.draw_series(edges).map_err(draw_err)?;
    let segments = drawn().map(|i| PathElement::new(vec![(xs[i - 1], ys[i - 1]), (xs[i], ys[i])], activation_colour(a[i], max).stroke_width(3)));
    chart.draw_series(segments).map_err(draw_err)?;
    let peak = w.peak_row as usize - w.start_row as usize;
    if ys[peak].is_finite() {
        chart.draw_series(std::iter::once(Circle::new((0.0, ys[peak]), 6, BLACK.stroke_width(2)))).map_err(draw_err)?;
    }
    Ok(())
}

fn draw_top_windows(area: &Area, ctx: &Context, facts: &FeatureFacts, acts: &FeatureActivations) -> Result<()> {
    let (title, body) = area.split_vertically(36);
    text(&title, "Top activating windows", (24, 8), bold(20))?;
    text(&title, "strongest of each protocol, then cell · trace colour = activation (grey = silent) · ring = peak step", (290, 11), (FONT, 16).into_font().color(&RGBColor(90, 90, 90)))?;
    let (grid, bar) = body.split_horizontally(CARD_SIZE.0 - 110);
    let shown = shown_windows(ctx, ctx.mined(facts.index));
    let windows: Vec<&Window> = shown.iter().copied().filter(|w| w.kind == WindowKind::Top).collect();
    if windows.is_empty() {
        return empty_panel(&grid, "", "never fires");
    }
    let (x_scale, unit) = feature_time_scale(ctx, &shown);
    let x_desc = format!("Time from peak ({unit})");
    let x_desc = x_desc.as_str();
    let rows = split_rows(&grid, CHANNELS.len(), 40);
    for (r, (row, ch)) in rows.iter().zip(&CHANNELS).enumerate() {
        let y = channel_range(ctx, &windows, ch);
        let cols = row.split_evenly((1, TOP_WINDOWS));
        for (c, (panel, w)) in cols.iter().zip(&windows).enumerate() {
            let cell_id = &ctx.inputs.dataset.cells[w.cell].cell_id;
            let caption = format!("#{} · {} · peak {}", w.rank + 1, cell_id, num(w.value as f64));
            let tr = Trace { window: w, x_scale, x_desc, max: facts.max };
            draw_trace(panel, ctx, acts, &tr, ch, y.clone(), (r == 0).then_some(caption.as_str()), r + 1 == CHANNELS.len(), c == 0)?;
        }
    }
    colour_bar(&bar, (0.0, (facts.max as f64).max(1e-9)), "Activation", viridis, tick)
}

/// Splits an area into `n` rows, the last `extra` pixels taller (it carries the x-axis title).
pub(crate) fn split_rows<'b>(area: &Area<'b>, n: usize, extra: u32) -> Vec<Area<'b>> {
    let (_, h) = area.dim_in_pixel();
    let base = (h - extra) / n as u32;
    let mut rest = area.clone();
    let mut out = Vec::new();
    for _ in 0..n - 1 {
        let (top, bottom) = rest.split_vertically(base);
        out.push(top);
        rest = bottom;
    }
    out.push(rest);
    out
}

/// A vertical colour bar from `lo` (bottom) to `hi`, labelled on its right.
pub(crate) fn colour_bar(area: &Area, (lo, hi): (f64, f64), label: &str, colour: impl Fn(f64) -> RGBColor, fmt: fn(f64) -> String) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .margin_top(30)
        .margin_bottom(60)
        .margin_right(50)
        .y_label_area_size(0)
        .right_y_label_area_size(50)
        .build_cartesian_2d(0.0..1.0, lo..hi)
        .map_err(draw_err)?
        .set_secondary_coord(0.0..1.0, lo..hi);
    chart.configure_mesh().disable_mesh().disable_axes().draw().map_err(draw_err)?;
    chart
        .configure_secondary_axes()
        .y_labels(6)
        .y_label_formatter(&|v| fmt(*v))
        .y_desc(label)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(draw_err)?;
    let steps = 100;
    chart
        .draw_series((0..steps).map(|k| {
            let (a, b) = (lo + (hi - lo) * k as f64 / steps as f64, lo + (hi - lo) * (k + 1) as f64 / steps as f64);
            Rectangle::new([(0.0, a), (1.0, b)], colour(k as f64 / (steps - 1) as f64).filled())
        }))
        .map_err(draw_err)?;
    Ok(())
}

fn draw_quantiles(area: &Area, ctx: &Context, facts: &FeatureFacts, acts: &FeatureActivations) -> Result<()> {
    let (title, body) = area.split_vertically(36);
    text(&title, "One example per activation decile", (24, 8), bold(20))?;
    text(&title, "voltage and current around a random firing step from each tenth of the firing activations, weakest first", (380, 11), (FONT, 16).into_font().color(&RGBColor(90, 90, 90)))?;
    let shown = shown_windows(ctx, ctx.mined(facts.index));
    let examples: Vec<&Window> = shown.iter().copied().filter(|w| w.kind == WindowKind::Quantile).collect();
    if examples.is_empty() {
        return empty_panel(&body, "", "never fires");
    }
    let (body, _) = body.split_horizontally(CARD_SIZE.0 - 110);
    let (x_scale, unit) = feature_time_scale(ctx, &shown);
    let x_desc = format!("Time from peak ({unit})");
    let rows = split_rows(&body, 2, 40);
    for (r, (row, ch)) in rows.iter().zip(&CHANNELS[..2]).enumerate() {
        let y = channel_range(ctx, &examples, ch);
        for (c, (panel, w)) in row.split_evenly((1, examples.len())).iter().zip(&examples).enumerate() {
            let caption = format!("d{} · a = {}", w.rank + 1, num(w.value as f64));
            let tr = Trace { window: w, x_scale, x_desc: &x_desc, max: facts.max };
            draw_trace(panel, ctx, acts, &tr, ch, y.clone(), (r == 0).then_some(caption.as_str()), r == 1, c == 0)?;
        }
    }
    Ok(())
}

fn draw_row_b(area: &Area, facts: &FeatureFacts) -> Result<()> {
    let panels = area.split_evenly((1, 4));
    let step_types: Vec<(String, f64)> = facts.step_types.iter().map(|(n, rate, _)| (n.clone(), *rate)).collect();
    hbars(&panels[0], "Firing rate by step type", &step_types, "Share of steps firing", percent_tick)?;
    draw_roc(&panels[1], facts)?;
    if facts.decoder_norms.is_empty() {
        empty_panel(&panels[2], "Decoder norm per target layer", "no transcoder given")?;
    } else {
        hbars(&panels[2], "Decoder norm per target layer", &facts.decoder_norms, "‖W_dec‖ (model units)", tick)?;
    }
    let caption = "Input-channel sensitivity (de-embedding)";
    if facts.deembedding.is_empty() {
        return empty_panel(&panels[3], caption, "no model given");
    }
    let rows: Vec<(String, f64)> = facts.deembedding.iter().map(|(c, w)| (channel_name(c).to_owned(), *w)).collect();
    hbars(&panels[3], caption, &rows, "Pre-activation change per input SD", tick)
}

/// A model input channel (`model::inputs::CATALOGUE`) as a battery engineer reads it; "next" is the step
/// being predicted.
pub(crate) fn channel_name(channel: &str) -> &str {
    match channel {
        "voltage" => "voltage V_t",
        "c_rate" => "C-rate now",
        "log1p_dt" => "log(1+Δt) now",
        "c_rate_next" => "C-rate next",
        "log1p_dt_next" => "log(1+Δt) next",
        "charge_next" => "charge moved next",
        "temperature" => "temperature now (°C)",
        "temperature_present" => "T measured (flag)",
        "current_sign_next" => "current sign next",
        "step_change_next" => "new step next (flag)",
        "log1p_step_time" => "log(1+time in step)",
        "current_a" => "current now (A)",
        "current_next_a" => "current next (A)",
        "dt_s" => "Δt now (s)",
        "dt_next_s" => "Δt next (s)",
        "step_time_s" => "time in step (s)",
        "soc" => "SOC now",
        "soc_present" => "SOC known (flag)",
        "charge_ah" => "charge moved (Ah)",
        "cycle_number" => "cycle number",
        other => other,
    }
}

fn draw_roc(area: &Area, facts: &FeatureFacts) -> Result<()> {
    let Some(roc) = &facts.roc else { return empty_panel(area, "ROC of the label", "no candidate label") };
    let mut chart = ChartBuilder::on(area)
        .caption("ROC on held-out cells vs shifted null", (FONT, 18))
        .margin(10)
        .margin_right(20)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .max_light_lines(1)
        .light_line_style(plot_style::GRID)
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .x_desc("False-positive rate")
        .y_desc("True-positive rate")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], MUTED.stroke_width(1))).map_err(draw_err)?;
    for null in &roc.null_curves {
        chart.draw_series(LineSeries::new(null.iter().copied(), MUTED.mix(0.5).stroke_width(1))).map_err(draw_err)?;
    }
    chart.draw_series(LineSeries::new(roc.curve.iter().copied(), FEATURE.stroke_width(3))).map_err(draw_err)?;
    // A detector's curve is one operating point (FPR, TPR) joined to the corners: mark it.
    if let [_, point, _] = roc.curve[..] {
        chart.draw_series(std::iter::once(Circle::new(point, 5, FEATURE.filled()))).map_err(draw_err)?;
    }
    let (null_mean, null_var) = crate::stats::mean_var(roc.null_auroc.iter().copied().filter(|a| a.is_finite()));
    let null_sd = null_var.sqrt();
    let lines = [format!("AUROC {} (purple)", num(roc.auroc)), format!("null {} ± {} (grey)", num(null_mean), num(null_sd)), format!("positive: {}", roc.positive)];
    for (k, line) in lines.iter().enumerate() {
        chart.draw_series(std::iter::once(Text::new(line.clone(), (0.4, 0.3 - 0.09 * k as f64), (FONT, 14)))).map_err(draw_err)?;
    }
    Ok(())
}

fn draw_row_c(area: &Area, ctx: &Context, facts: &FeatureFacts) -> Result<()> {
    let panels = area.split_evenly((1, 3));
    let lift: Vec<(String, f64)> = facts.co_firing.iter().map(|c| (c.id.clone(), c.lift)).collect();
    hbars(&panels[0], "Co-firing features by lift", &lift, "Lift: P(other | this) / P(other)", tick)?;
    hbars(&panels[1], "Firing rate by protocol", &facts.protocols, "Share of steps firing", percent_tick)?;
    draw_candidates(&panels[2], ctx, facts)
}

/// The label's runners-up and the raw-V/I baseline, as text.
fn draw_candidates(area: &Area, ctx: &Context, facts: &FeatureFacts) -> Result<()> {
    text(area, "Candidate labels (held-out scores)", (12, 8), (FONT, 18))?;
    let Some(label) = ctx.label(facts.index) else { return text(area, "no label computed", (12, 40), (FONT, 14)) };
    let mut y = 40;
    if !label.accepted && !label.candidates.is_empty() {
        for line in wrap(&format!("Rejected: {}", crate::label::unexplained_reason(label, &ctx.label_cfg)), 62) {
            text(area, &line, (12, y), (FONT, 14).into_font().color(&RGBColor(150, 60, 30)))?;
            y += 18;
        }
        y += 8;
    }
    let baseline = label.baseline.iter().map(|b| ("baseline (raw V/I)".to_owned(), b));
    let entries = label.candidates.iter().enumerate().map(|(k, c)| (format!("{}.", k + 1), c)).chain(baseline);
    for (tag, c) in entries {
        let (_, h) = area.dim_in_pixel();
        if y > h as i32 - 40 {
            break;
        }
        // Three lines hold a two-scale graded label; a longer one ends in "…" (its page has it whole).
        let mut lines = wrap(&format!("{tag} {}", c.sentence), 62);
        if lines.len() > 3 {
            lines.truncate(3);
            lines[2].push_str(" …");
        }
        for line in &lines {
            text(area, line, (12, y), (FONT, 14))?;
            y += 18;
        }
        let scores = format!("AUROC {} · F1 {} · ρ {} · q {} · gap {}", num(c.test.auroc), num(c.test.f1), num(c.test.spearman), num(c.q_value), num(c.gap));
        text(area, &scores, (28, y), (FONT, 14).into_font().color(&RGBColor(90, 90, 90)))?;
        y += 26;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_ticks_are_written_out_on_every_decade() {
        let ticks: Vec<String> = (-6..=0).map(|e| super::percent_tick(10f64.powi(e))).collect();
        assert_eq!(ticks, ["0.0001%", "0.001%", "0.01%", "0.1%", "1%", "10%", "100%"]);
    }

    #[test]
    fn ticks_keep_three_significant_digits_below_one() {
        let ticks: Vec<String> = [0.0005, 0.001, 0.0015, 0.002, 0.0025].into_iter().map(super::tick).collect();
        assert_eq!(ticks, ["5e-4", "0.001", "0.0015", "0.002", "0.0025"]);
        let others: Vec<String> = [-0.0123456, 0.1 + 0.2, 0.5, 3.7449, 1250.0, -3e-17].into_iter().map(super::tick).collect();
        assert_eq!(others, ["-0.0123", "0.3", "0.5", "3.745", "1250", "0"]);
    }

    #[test]
    fn every_input_channel_has_a_readable_name() {
        for channel in crate::model::inputs::CATALOGUE {
            assert_ne!(super::channel_name(channel.name), channel.name, "no reader's name for input channel {}", channel.name);
        }
    }
}
