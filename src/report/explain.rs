//! `voltlens explain`: which features are most active on a chosen stretch of one cell, and what
//! are they (the question the LBLM study started from). Reads a finished run's recorded
//! activations and labels; writes a table (Parquet and CSV), an HTML page and a PNG of the
//! stretch with the top features' activations stacked under voltage and current.
//!
//! "Most active" ranks by the mean activation over the stretch as a share of the feature's
//! largest activation anywhere in the run, so a feature with large raw values does not crowd
//! out one that fires at its full strength here.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::canonical::{CellData, Dataset};
use crate::label::FeatureLabel;
use crate::mine::tables::{Table, TableColumn};
use crate::mine::SparseActivations;
use crate::plot_style::{self, FONT};
use crate::report::assets::head;
use crate::report::card::{draw_err, num, percent, tick, wrap, FEATURE};
use crate::report::html::escape;
use crate::{Error, Result};

/// Features drawn under V and I in the PNG (the table lists `top`).
const DRAWN: usize = 12;

/// A stretch of one cell to explain (also a `[[report.explain]]` entry of a pipeline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainWindow {
    pub cell: String,
    /// Start and end, in seconds of the cell's test time.
    pub from: f64,
    pub to: f64,
    /// Rows of the table.
    #[serde(default = "default_top")]
    pub top: usize,
}

fn default_top() -> usize {
    100
}

impl ExplainWindow {
    /// `CELL:FROM:TO` (the cell id may hold colons; times as [`parse_seconds`] reads them).
    pub fn parse(text: &str) -> Result<ExplainWindow> {
        let mut parts = text.rsplitn(3, ':');
        let (Some(to), Some(from), Some(cell)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::Config(format!("'{text}': expected CELL:FROM:TO, e.g. chen2020-11-05-drive:1800:1h")));
        };
        Ok(ExplainWindow { cell: cell.to_owned(), from: parse_seconds(from)?, to: parse_seconds(to)?, top: default_top() })
    }

    /// Folder name of this stretch's outputs: `<cell>_<from>-<to>s`.
    pub fn slug(&self) -> String {
        let safe: String = self.cell.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        format!("{safe}_{}-{}s", self.from, self.to)
    }
}

/// One feature's activity on the stretch.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveOnStretch {
    pub layer: u32,
    pub feature: u32,
    /// Share of the stretch's steps where it fires.
    pub firing: f64,
    /// Mean activation over the stretch (silent steps count as 0).
    pub mean: f64,
    pub max: f64,
    /// `mean` over the feature's largest activation in the whole run: the ranking key.
    pub relative: f64,
    pub label: String,
    pub accepted: bool,
}

/// The answer for one stretch.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub window: ExplainWindow,
    /// Index of the cell in the dataset, and its rows inside the stretch.
    pub cell: usize,
    pub rows: std::ops::Range<usize>,
    /// Most active first.
    pub features: Vec<ActiveOnStretch>,
}

/// Ranks the features active on `window`.
pub fn explain(dataset: &Dataset, acts: &SparseActivations, labels: &[FeatureLabel], window: &ExplainWindow) -> Result<Explanation> {
    let cell = dataset
        .data
        .iter()
        .position(|c| c.cell_id == window.cell)
        .ok_or_else(|| crate::data::canonical::no_such_cell(std::path::Path::new("explain"), &window.cell, &dataset.cells))?;
    let time = &dataset.data[cell].test_time;
    if window.from.is_nan() || window.to.is_nan() || window.from >= window.to {
        return Err(Error::Config(format!("explain: --from {} must be before --to {}", window.from, window.to)));
    }
    let start = time.partition_point(|&t| t < window.from);
    let end = time.partition_point(|&t| t <= window.to);
    if start >= end {
        let span = (time.first().copied().unwrap_or(0.0), time.last().copied().unwrap_or(0.0));
        return Err(Error::Config(format!("explain: cell {} has no steps between {} s and {} s (its test time runs {} – {} s)", window.cell, window.from, window.to, span.0, span.1)));
    }
    let acts_cell = acts.cell_ids.iter().position(|c| *c == window.cell).ok_or_else(|| Error::Config(format!("explain: cell '{}' has no recorded activations", window.cell)))?;
    let n = (end - start) as f64;
    let mut features: Vec<ActiveOnStretch> = acts
        .features
        .iter()
        .filter_map(|f| {
            let overall = f.values.iter().copied().fold(0.0f32, f32::max) as f64;
            let (rows, values) = f.cell(acts_cell);
            let lo = rows.partition_point(|&r| (r as usize) < start);
            let hi = rows.partition_point(|&r| (r as usize) < end);
            let here = &values[lo..hi];
            if here.is_empty() || overall <= 0.0 {
                return None;
            }
            let mean = here.iter().map(|&v| v as f64).sum::<f64>() / n;
            let label = labels.iter().find(|l| (l.layer, l.feature) == (f.layer, f.feature));
            Some(ActiveOnStretch {
                layer: f.layer,
                feature: f.feature,
                firing: here.len() as f64 / n,
                mean,
                max: here.iter().copied().fold(0.0f32, f32::max) as f64,
                relative: mean / overall,
                label: match label {
                    Some(l) if l.accepted => l.label.clone(),
                    Some(l) => l.candidates.first().map_or("unexplained (never fires)".into(), |c| format!("unexplained; closest: {}", c.sentence)),
                    None => "not labelled".into(),
                },
                accepted: label.is_some_and(|l| l.accepted),
            })
        })
        .collect();
    features.sort_by(|a, b| b.relative.total_cmp(&a.relative).then((a.layer, a.feature).cmp(&(b.layer, b.feature))));
    features.truncate(window.top);
    Ok(Explanation { window: window.clone(), cell, rows: start..end, features })
}

/// What [`write_explanation`] wrote.
#[derive(Debug, Clone)]
pub struct ExplainFiles {
    pub table: PathBuf,
    pub page: PathBuf,
    pub png: PathBuf,
}

/// Writes `explain.parquet` (+ CSV), `explain.png` and `index.html` into `out_dir`. Feature ids
/// link to the report's feature pages when `out_dir` sits in a report's `explain/` folder.
pub fn write_explanation(e: &Explanation, dataset: &Dataset, acts: &SparseActivations, out_dir: &Path) -> Result<ExplainFiles> {
    std::fs::create_dir_all(out_dir).map_err(|err| Error::io(out_dir, err))?;
    let files = ExplainFiles { table: out_dir.join("explain.parquet"), page: out_dir.join("index.html"), png: out_dir.join("explain.png") };
    let mut table = Table::default();
    table.push("rank", TableColumn::U32((1..=e.features.len() as u32).collect()));
    table.push("layer", TableColumn::U32(e.features.iter().map(|f| f.layer).collect()));
    table.push("feature", TableColumn::U32(e.features.iter().map(|f| f.feature).collect()));
    table.push("share_of_steps_firing", TableColumn::F64(e.features.iter().map(|f| f.firing).collect()));
    table.push("mean_activation", TableColumn::F64(e.features.iter().map(|f| f.mean).collect()));
    table.push("max_activation", TableColumn::F64(e.features.iter().map(|f| f.max).collect()));
    table.push("mean_over_run_max", TableColumn::F64(e.features.iter().map(|f| f.relative).collect()));
    table.push("accepted", TableColumn::Bool(e.features.iter().map(|f| f.accepted).collect()));
    table.push("label", TableColumn::Str(e.features.iter().map(|f| f.label.clone()).collect()));
    table.write(&files.table)?;
    draw_stretch(e, &dataset.data[e.cell], acts, &files.png)?;
    write_page(e, instant_switches(e, &dataset.data[e.cell]), out_dir, &files.page)?;
    Ok(files)
}

/// Current switches in the stretch logged as two rows at one instant (the old step's end, the new
/// step's start; ingest keeps the second `SAME_TIME_S` on): a feature firing there draws as a
/// vertical line.
fn instant_switches(e: &Explanation, data: &CellData) -> usize {
    let instant = 2.0 * crate::data::ingest::SAME_TIME_S;
    e.rows.clone().skip(1).filter(|&i| data.test_time[i] - data.test_time[i - 1] < instant).count()
}

fn write_page(e: &Explanation, instant_switches: usize, out_dir: &Path, path: &Path) -> Result<()> {
    let w = &e.window;
    // Inside a report (explain/<slug>/) the report's assets serve; alone, the folder gets its own.
    let in_report = out_dir.join("../../features").is_dir();
    if !in_report {
        crate::report::assets::write_assets(out_dir)?;
    }
    let mut html = head(&format!("Explain {} {}–{} s · VoltLens", w.cell, w.from, w.to), if in_report { 2 } else { 0 });
    if in_report {
        html.push_str("<div class=\"nav\"><a href=\"../../index.html\">← all features</a></div>\n");
    }
    let _ = writeln!(html, "<h1>Most active features: cell {}, {} – {} s</h1>", escape(&w.cell), w.from, w.to);
    let _ = writeln!(html, "<div class=\"sub\">{} steps · ranked by mean activation over the stretch as a share of the feature's largest activation in the run · table: <a href=\"explain.parquet\">Parquet</a>, <a href=\"explain.csv\">CSV</a></div>", e.rows.len());
    if instant_switches > 0 {
        let (what, are) = if instant_switches == 1 { ("One current switch".to_owned(), "is") } else { (format!("{instant_switches} current switches"), "are") };
        let _ = writeln!(
            html,
            "<div class=\"sub\">{what} here {are} logged as two rows a microsecond apart (the old step's end, the new step's start): a feature firing at a switch draws as a thin vertical line.</div>"
        );
    }
    html.push_str("<a href=\"explain.png\"><img src=\"explain.png\" alt=\"the stretch with the top features' activations\" style=\"max-width:100%\"></a>\n");
    html.push_str("<table class=\"data\" id=\"explain\"><tr><th>rank</th><th>feature</th><th>firing</th><th>mean</th><th>max</th><th>mean / run max</th><th>label</th></tr>\n");
    for (k, f) in e.features.iter().enumerate() {
        let id = format!("L{}_F{}", f.layer, f.feature);
        let page = format!("../../features/{id}.html");
        let link = if in_report && out_dir.join(&page).exists() { format!("<a href=\"{page}\">{id}</a>") } else { id };
        let _ = writeln!(
            html,
            "<tr><td class=\"num\">{}</td><td>{link}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><span class=\"{}\">{}</span> {}</td></tr>",
            k + 1,
            percent(f.firing),
            num(f.mean),
            num(f.max),
            percent(f.relative),
            if f.accepted { "yes" } else { "no" },
            if f.accepted { "✓" } else { "✗" },
            escape(&f.label)
        );
    }
    html.push_str("</table>\n</body>\n</html>\n");
    crate::io::write_atomic(path, html.as_bytes())
}

/// Voltage and current over the stretch, then one activation row per top feature.
fn draw_stretch(e: &Explanation, data: &CellData, acts: &SparseActivations, path: &Path) -> Result<()> {
    let shown = &e.features[..e.features.len().min(DRAWN)];
    let (trace_h, feature_h) = (210u32, 74u32);
    let size = (1600, 2 * trace_h + shown.len() as u32 * feature_h + 90);
    let t0 = data.test_time[e.rows.start];
    let span = data.test_time[e.rows.end - 1] - t0;
    let (scale, unit) = if span > 7200.0 { (3600.0, "h") } else if span > 600.0 { (60.0, "min") } else { (1.0, "s") };
    let xs: Vec<f64> = e.rows.clone().map(|i| (data.test_time[i] - t0) / scale).collect();
    let x_range = 0.0..xs.last().copied().unwrap_or(1.0).max(1e-9);
    let acts_cell = acts.cell_ids.iter().position(|c| *c == data.cell_id).expect("checked by explain");
    crate::report::charts::draw_png(path, size, |root| {
        let (title, rest) = root.split_vertically(40);
        crate::report::card::text(&title, &format!("Cell {} from {} s: the {} most active features", data.cell_id, e.window.from, shown.len()), (20, 10), crate::report::card::bold(20))?;
        let (v_area, rest) = rest.split_vertically(trace_h);
        let (i_area, rest) = rest.split_vertically(trace_h);
        let v: Vec<f64> = e.rows.clone().map(|i| data.voltage[i] as f64).collect();
        let i: Vec<f64> = e.rows.clone().map(|i| data.current[i] as f64).collect();
        trace(&v_area, &xs, &v, x_range.clone(), "Voltage (V)", plot_style::VOLTAGE, None)?;
        trace(&i_area, &xs, &i, x_range.clone(), "Current (A)", plot_style::CURRENT, None)?;
        let rows = crate::report::card::split_rows(&rest, shown.len().max(1), 40);
        for (k, (area, f)) in rows.iter().zip(shown).enumerate() {
            let feature = acts.features.iter().find(|g| (g.layer, g.feature) == (f.layer, f.feature)).expect("ranked from these");
            let (r, vals) = feature.cell(acts_cell);
            let a: Vec<f64> = e.rows.clone().map(|row| r.binary_search(&(row as u32)).map_or(0.0, |j| vals[j] as f64)).collect();
            let name = format!("L{}_F{} {}", f.layer, f.feature, f.label);
            let x_desc = (k + 1 == shown.len()).then(|| format!("Time from {} s ({unit})", e.window.from));
            trace(area, &xs, &a, x_range.clone(), &name, FEATURE, x_desc.as_deref())?;
        }
        Ok(())
    })
}

/// One row of the stretch figure: a line against time, its name on the left.
fn trace(area: &crate::report::card::Area, xs: &[f64], ys: &[f64], x: std::ops::Range<f64>, name: &str, colour: RGBColor, x_desc: Option<&str>) -> Result<()> {
    let (lo, hi) = ys.iter().filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)) } else { (lo.min(0.0) - 0.5, hi.max(0.0) + 0.5) };
    let (label, plot) = area.split_horizontally(420);
    let lines = wrap(name, 44);
    for (k, line) in lines.iter().take(3).enumerate() {
        let more = if k == 2 && lines.len() > 3 { " …" } else { "" };
        crate::report::card::text(&label, &format!("{line}{more}"), (16, 8 + 20 * k as i32), (FONT, 16))?;
    }
    let mut chart = ChartBuilder::on(&plot)
        .margin(4)
        .margin_right(20)
        .x_label_area_size(if x_desc.is_some() { 44 } else { 6 })
        .y_label_area_size(64)
        .build_cartesian_2d(x, lo..hi)
        .map_err(draw_err)?;
    let mut mesh = chart.configure_mesh();
    // No light lines: panels this short drew one every few pixels, a hatching.
    mesh.light_line_style(TRANSPARENT).bold_line_style(plot_style::GRID).y_labels(3).y_label_formatter(&|v| tick(*v)).x_label_formatter(&|v| tick(*v)).label_style((FONT, 14));
    // Every row keeps the bottom row's time grid (so a firing lines up with the step above it);
    // only the bottom row writes the times.
    match x_desc {
        Some(desc) => mesh.x_desc(desc).axis_desc_style((FONT, 16)),
        None => mesh.x_label_formatter(&|_| String::new()),
    };
    mesh.draw().map_err(draw_err)?;
    // Segment by segment: a 2 px polyline's mitred joins shot spikes far past the panel where
    // the trace turns back within a microsecond (a switch logged as two rows).
    let points: Vec<(f64, f64)> = xs.iter().zip(ys).filter(|(_, y)| y.is_finite()).map(|(&x, &y)| (x, y)).collect();
    let segments = points.windows(2).map(|p| PathElement::new(vec![p[0], p[1]], colour.stroke_width(2)));
    chart.draw_series(segments).map_err(draw_err)?;
    Ok(())
}

/// Explains `window` for the finished run in `run_dir` into `out_dir`.
pub fn explain_run(run_dir: &Path, window: &ExplainWindow, out_dir: &Path) -> Result<(Explanation, ExplainFiles)> {
    let acts = crate::record::read_sparse(&run_dir.join("record"))?;
    let dataset = Dataset::load_of(&run_dir.join("data").join(crate::pipeline::stages::DATASET_DIR), &acts.cell_ids)?;
    let labels: Vec<FeatureLabel> = crate::io::read_json(&run_dir.join("label").join(crate::label::stage::LABELS_FILE))?;
    let explanation = explain(&dataset, &acts, &labels, window)?;
    let files = write_explanation(&explanation, &dataset, &acts, out_dir)?;
    Ok((explanation, files))
}

/// Parses a time like `3600`, `90s`, `45min` or `1.5h` into seconds.
pub fn parse_seconds(text: &str) -> Result<f64> {
    let t = text.trim();
    let (number, scale) = [("min", 60.0), ("h", 3600.0), ("s", 1.0)].iter().find_map(|(suffix, k)| t.strip_suffix(suffix).map(|n| (n, *k))).unwrap_or((t, 1.0));
    number.trim().parse::<f64>().map(|x| x * scale).map_err(|_| Error::Config(format!("explain: '{text}' is not a time like 3600, 90s, 45min or 1.5h")))
}

#[cfg(test)]
mod tests {
    use super::{parse_seconds, ExplainWindow};

    #[test]
    fn times_parse_with_units_and_bad_ones_are_named() {
        assert_eq!(parse_seconds("3600").unwrap(), 3600.0);
        assert_eq!(parse_seconds("45min").unwrap(), 2700.0);
        assert_eq!(parse_seconds("1.5h").unwrap(), 5400.0);
        assert_eq!(parse_seconds("90s").unwrap(), 90.0);
        assert!(parse_seconds("soon").unwrap_err().to_string().contains("'soon'"));
    }

    #[test]
    fn a_stretch_reads_as_cell_from_to() {
        let w = ExplainWindow::parse("lab:cell-7:1800:1h").unwrap();
        assert_eq!((w.cell.as_str(), w.from, w.to), ("lab:cell-7", 1800.0, 3600.0));
        assert!(ExplainWindow::parse("cell-7:1800").unwrap_err().to_string().contains("CELL:FROM:TO"));
    }
}
