//! `voltlens inspect`: a per-cell summary of a canonical dataset, and an overview PNG of one cell.

use std::path::Path;

use plotters::prelude::*;

use crate::data::canonical::{read_cell, read_cells_table, CellData, DatasetPaths};
use crate::data::cells::CellInfo;
use crate::plot_style::{self, FONT};
use crate::{Error, Result};

/// One line of the summary table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CellSummary {
    pub cell_id: String,
    pub rows: u64,
    pub duration_h: f64,
    pub cycles: i32,
    pub capacity_ah: f64,
    pub capacity_estimated: bool,
    pub protocol: String,
    pub voltage_range: (f32, f32),
    pub current_range: (f32, f32),
    pub anchor_method: String,
    /// The anchor's stated SOC error (1 σ); `None` when unanchored.
    pub anchor_uncertainty: Option<f64>,
    pub cutoffs_v: (Option<f64>, Option<f64>),
    pub warnings: Vec<String>,
}

fn range(v: &[f32]) -> (f32, f32) {
    v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

pub fn summarise(info: &CellInfo, data: &CellData) -> CellSummary {
    let warnings = serde_json::from_str::<serde_json::Value>(&info.metadata)
        .ok()
        .and_then(|m| m.get("warnings").cloned())
        .and_then(|w| serde_json::from_value::<Vec<String>>(w).ok())
        .unwrap_or_default();
    CellSummary {
        cell_id: info.cell_id.clone(),
        rows: data.len() as u64,
        duration_h: (data.test_time.last().copied().unwrap_or(0.0) - data.test_time.first().copied().unwrap_or(0.0)) / 3600.0,
        cycles: data.cycle_number.iter().max().map_or(0, |c| c + 1),
        capacity_ah: info.nominal_capacity_ah,
        capacity_estimated: info.capacity_estimated,
        protocol: info.protocol.clone().unwrap_or_else(|| "-".to_owned()),
        voltage_range: range(&data.voltage),
        current_range: range(&data.current),
        anchor_method: info.anchor_method.as_str().to_owned(),
        anchor_uncertainty: info.anchor_uncertainty,
        cutoffs_v: (info.lower_cutoff_v, info.upper_cutoff_v),
        warnings,
    }
}

/// Summaries of every cell of a dataset directory.
pub fn inspect(dir: &Path) -> Result<Vec<CellSummary>> {
    let paths = DatasetPaths::new(dir);
    let cells = read_cells_table(&paths.cells_table()).map_err(|e| match e {
        Error::Io { .. } => Error::Config(format!("{}: not a canonical dataset (no cells.parquet)", dir.display())),
        other => other,
    })?;
    cells
        .iter()
        .map(|info| {
            let (_, data) = read_cell(&paths.cell_file(&info.cell_id))?;
            Ok(summarise(info, &data))
        })
        .collect()
}

/// The summary as an aligned text table.
pub fn format_table(rows: &[CellSummary]) -> String {
    let header = ["cell", "rows", "hours", "cycles", "capacity Ah", "protocol", "V range", "I range A", "cut-offs V", "soc anchor", "warnings"];
    let volts = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.2}"));
    let body: Vec<[String; 11]> = rows
        .iter()
        .map(|r| {
            [
                r.cell_id.clone(),
                r.rows.to_string(),
                format!("{:.1}", r.duration_h),
                r.cycles.to_string(),
                format!("{}{}", small_or_decimals(r.capacity_ah, r.capacity_ah, 3), if r.capacity_estimated { " (est.)" } else { "" }),
                r.protocol.clone(),
                format!("{:.2}–{:.2}", r.voltage_range.0, r.voltage_range.1),
                {
                    let (lo, hi) = (r.current_range.0 as f64, r.current_range.1 as f64);
                    let size = lo.abs().max(hi.abs());
                    format!("{}–{}", small_or_decimals(lo, size, 2), small_or_decimals(hi, size, 2))
                },
                format!("{}–{}", volts(r.cutoffs_v.0), volts(r.cutoffs_v.1)),
                match r.anchor_uncertainty {
                    Some(u) => format!("{} ±{:.1} %", r.anchor_method, 100.0 * u),
                    None => r.anchor_method.clone(),
                },
                r.warnings.len().to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> =
        (0..header.len()).map(|c| body.iter().map(|r| r[c].chars().count()).chain([header[c].len()]).max().unwrap_or(0)).collect();
    let line = |cells: Vec<&str>| -> String {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(body.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    for r in rows.iter().filter(|r| !r.warnings.is_empty()) {
        for w in &r.warnings {
            out.push(format!("warning: {}: {w}", r.cell_id));
        }
    }
    out.join("\n")
}

/// Draws voltage, current, SOC and temperature against time for one cell.
pub fn plot_cell(data: &CellData, path: &Path) -> Result<()> {
    plot_style::ensure_fonts();
    let hours: Vec<f64> = data.test_time.iter().map(|t| (t - data.test_time[0]) / 3600.0).collect();
    let temperature = data.temperature_or_nan();
    // The text shown when a panel has no values.
    let panels: [(&str, &[f32], RGBColor, &str); 4] = [
        ("Voltage (V)", &data.voltage, plot_style::VOLTAGE, "not logged"),
        ("Current (A)", &data.current, plot_style::CURRENT, "not logged"),
        ("SOC (–)", &data.soc, plot_style::SOC, "no trustworthy SOC anchor"),
        ("Temperature (°C)", &temperature, plot_style::TEMPERATURE, "not logged"),
    ];
    crate::io::write_via_temp(path, |tmp| {
        let root = BitMapBackend::new(tmp, (1200, 1000)).into_drawing_area();
        let fail = |e: &dyn std::fmt::Display| Error::Other(format!("drawing {}: {e}", path.display()));
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let (title, body) = root.split_vertically(40);
        title
            .titled(&format!("Cell {}: {} rows", data.cell_id, data.len()), (FONT, 22).into_font())
            .map_err(|e| fail(&e))?;
        let x_max = hours.last().copied().unwrap_or(1.0).max(1e-6);
        let areas = body.split_evenly((4, 1));
        for (k, (area, (label, values, colour, missing))) in areas.iter().zip(panels).enumerate() {
            let finite: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
            let (lo, hi) = if finite.is_empty() { (0.0, 1.0) } else { range(&finite) };
            let pad = ((hi - lo) * 0.05).max(1e-3);
            let mut chart = ChartBuilder::on(area)
                .margin(8)
                .x_label_area_size(32)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..x_max, (lo - pad) as f64..(hi + pad) as f64)
                .map_err(|e| fail(&e))?;
            chart
                .configure_mesh()
                .max_light_lines(1)
                .light_line_style(plot_style::GRID)
                .y_desc(label)
                .x_desc(if k == 3 { "Time (h)" } else { "" })
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 15))
                .draw()
                .map_err(|e| fail(&e))?;
            if finite.is_empty() {
                chart
                    .draw_series(std::iter::once(Text::new(missing, (x_max * 0.4, 0.5), (FONT, 16))))
                    .map_err(|e| fail(&e))?;
                continue;
            }
            chart
                .draw_series(LineSeries::new(
                    hours.iter().zip(values.iter()).filter(|(_, v)| v.is_finite()).map(|(&h, &v)| (h, v as f64)),
                    colour.stroke_width(1),
                ))
                .map_err(|e| fail(&e))?;
        }
        root.present().map_err(|e| fail(&e))
    })
}

/// `value` to `decimals`, or to three significant digits where the quantity's `size` is below a
/// tenth: a coin cell's 0.000068 Ah and ±137 µA, not 0.000 and −0.00–0.00.
pub(crate) fn small_or_decimals(value: f64, size: f64, decimals: usize) -> String {
    if size >= 0.1 {
        format!("{value:.decimals$}")
    } else {
        format!("{value:.2e}")
    }
}

/// A capacity in messages: 4.7628 Ah, 6.80e-5 Ah.
pub(crate) fn amp_hours(ah: f64) -> String {
    format!("{} Ah", small_or_decimals(ah, ah, 4))
}
