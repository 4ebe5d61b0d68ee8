//! Figures of the MLSAE analyses: the banding strips (layers × features) with the feature count
//! per band, and the causal alignment per pair of layers.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::mlsae::{AlignmentRow, FeatureBanding};
use crate::plot_style::{self, FONT};
use crate::report::card::{bold, colour_bar, draw_err, empty_panel, num, percent_tick, text, tick, viridis, Area, FEATURE, MUTED};
use crate::report::charts::{draw_png, strip_plot, Strips};
use crate::Result;

/// Pairs of layers where either holds less than this share of a feature's ‖W_dec‖² are left out
/// of the alignment figure (they stay in the table).
pub const MIN_DECODER_SHARE: f32 = 0.05;
/// The strength axis stops at 10^±this: beyond, a decoder is too small for a ratio to mean much.
const STRENGTH_DECADES: f64 = 3.0;
/// Decoder bands are drawn in this colour beside the encoder bands' `FEATURE`.
const DECODER: RGBColor = RGBColor(33, 145, 140);

/// `mlsae_banding.png`: per live feature (columns, most active first) the share of its encoder and
/// decoder squared norm in each layer (rows), and how many features each layer is the band of.
/// `note` says where the activity comes from.
pub fn draw_banding(rows: &[FeatureBanding], layers: usize, note: &str, path: &Path) -> Result<()> {
    let live: Vec<&FeatureBanding> = rows.iter().filter(|r| r.activity > 0.0).collect();
    let strip_h = (34 * layers as u32).max(90) + 70;
    draw_png(path, (1500, 110 + 2 * strip_h + 40), |root| {
        let (header, body) = root.split_vertically(80);
        text(&header, "MLSAE banding: which layer each feature reads from and writes to", (20, 12), bold(20))?;
        let counts = format!("{} live of {} features · {note}", live.len(), rows.len());
        text(&header, &counts, (20, 44), (FONT, 15).into_font().color(&RGBColor(90, 90, 90)))?;
        if live.is_empty() {
            return empty_panel(&body, "", "no feature fires");
        }
        let (strips, right) = body.split_horizontally(1060);
        let (strips, bar) = strips.split_horizontally(900);
        let (enc, dec) = strips.split_vertically(strip_h);
        let enc_share: Vec<&[f32]> = live.iter().map(|r| r.encoder_share.as_slice()).collect();
        let dec_share: Vec<&[f32]> = live.iter().map(|r| r.decoder_share.as_slice()).collect();
        draw_strip(&enc, "Encoder: share of its squared norm reading each layer's resid_mid", &enc_share, layers, false)?;
        draw_strip(&dec, "Decoder: share of its squared norm writing each layer's mlp_out", &dec_share, layers, true)?;
        colour_bar(&bar, (0.0, 1.0), "Share of the feature's squared norm", viridis, percent_tick)?;
        draw_band_counts(&right, &live, layers)
    })
}

/// One heat-map strip: layers top to bottom, features left to right.
fn draw_strip(area: &Area, caption: &str, share: &[&[f32]], layers: usize, x_axis: bool) -> Result<()> {
    let n = share.len();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin(8)
        .margin_right(16)
        .x_label_area_size(if x_axis { 44 } else { 26 })
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n as f64, (0..layers.max(2) - 1).into_segmented())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(8)
        .y_labels(layers)
        .x_label_formatter(&|v| format!("{}", *v as usize + 1))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(r) if *r < layers => format!("layer {}", layers - 1 - r),
            _ => String::new(),
        })
        .x_desc(if x_axis { "Live features, most active first (rank)" } else { "" })
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    let cells = share.iter().enumerate().flat_map(|(f, s)| {
        (0..layers).map(move |l| {
            let y = layers - 1 - l; // layer 0 on top, as the model reads
            Rectangle::new([(f as f64, SegmentValue::Exact(y)), (f as f64 + 1.0, SegmentValue::Exact(y + 1))], viridis(s[l] as f64).filled())
        })
    });
    chart.draw_series(cells).map_err(draw_err)?;
    Ok(())
}

/// Grouped bars: live features whose encoder (purple) or decoder (teal) band is each layer.
fn draw_band_counts(area: &Area, live: &[&FeatureBanding], layers: usize) -> Result<()> {
    let count = |pick: fn(&FeatureBanding) -> usize, l: usize| live.iter().filter(|r| pick(r) == l).count();
    let enc: Vec<usize> = (0..layers).map(|l| count(|r| r.band.encoder_layer, l)).collect();
    let dec: Vec<usize> = (0..layers).map(|l| count(|r| r.band.decoder_layer, l)).collect();
    let top = enc.iter().chain(&dec).copied().max().unwrap_or(1).max(1) as f64 * 1.4;
    // Layer l is centred on x = l, so integer ticks name the layers.
    let mut chart = ChartBuilder::on(area)
        .caption("Features per band", (FONT, 16))
        .margin(10)
        .margin_right(20)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5..layers as f64 - 0.5, 0.0..top)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(1)
        .light_line_style(plot_style::GRID)
        .x_labels(layers + 1)
        .y_labels(6)
        .x_label_formatter(&|v| if (v - v.round()).abs() < 1e-6 { format!("layer {}", v.round()) } else { String::new() })
        .y_label_formatter(&|v| if v.fract() == 0.0 { format!("{v:.0}") } else { String::new() })
        .x_desc("Band: the layer with the largest share")
        .y_desc("Live features")
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    for (k, (values, colour, name)) in [(&enc, FEATURE, "encoder band (reads)"), (&dec, DECODER, "decoder band (writes)")].into_iter().enumerate() {
        let left = |l: usize| l as f64 - 0.38 + 0.38 * k as f64;
        chart
            .draw_series(values.iter().enumerate().map(|(l, &c)| Rectangle::new([(left(l), 0.0), (left(l) + 0.36, c as f64)], colour.mix(0.85).filled())))
            .map_err(draw_err)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
        let number = |(l, &c): (usize, &usize)| {
            let style = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
            Text::new(format!("{c}"), (left(l) + 0.18, c as f64 + top * 0.01), style)
        };
        chart.draw_series(values.iter().enumerate().map(number)).map_err(draw_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(MUTED)
        .label_font((FONT, 13))
        .draw()
        .map_err(draw_err)
}

/// `mlsae_alignment.png`: for each pair of layers l → m > l, the cosine and strength of the
/// model's propagation of each feature's layer-l decoder against its layer-m decoder.
pub fn draw_alignment(rows: &[AlignmentRow], layers: usize, path: &Path) -> Result<()> {
    let pairs: Vec<(usize, usize)> = (0..layers).flat_map(|l| (l + 1..layers).map(move |m| (l, m))).collect();
    let shown: Vec<&AlignmentRow> = rows.iter().filter(|r| r.target_layer > r.trigger_layer && r.trigger_share.min(r.target_share) >= MIN_DECODER_SHARE).collect();
    let features = {
        let mut f: Vec<usize> = shown.iter().map(|r| r.feature).collect();
        f.sort_unstable();
        f.dedup();
        f.len()
    };
    // Two panels of at least 100 px per pair of layers, so the pair names never overlap.
    let width = (2 * 100 * pairs.len() as u32).max(1500);
    draw_png(path, (width, 560), |root| {
        let (header, body) = root.split_vertically(80);
        text(&header, "MLSAE causal alignment: does the model carry a feature's write forward to its later decoder?", (20, 12), bold(20))?;
        let note = format!(
            "ε·W_dec[f, l] pushed into the residual stream after layer l at tokens where f fires; the change at layer m compared with W_dec[f, m] · {features} features, pairs where both layers hold ≥ {:.0}% of its decoder",
            100.0 * MIN_DECODER_SHARE
        );
        text(&header, &note, (20, 44), (FONT, 14).into_font().color(&RGBColor(90, 90, 90)))?;
        let panels = body.split_evenly((1, 2));
        if pairs.is_empty() || shown.is_empty() {
            let why = if pairs.is_empty() { "one layer: nothing to propagate to" } else { "no feature writes enough to two layers" };
            empty_panel(&panels[0], "Cosine", why)?;
            return empty_panel(&panels[1], "Strength", why);
        }
        let category = |r: &AlignmentRow| pairs.iter().position(|&p| p == (r.trigger_layer, r.target_layer)).expect("pairs cover every l < m");
        let cosine: Vec<(usize, usize, f64)> = shown.iter().map(|r| (category(r), r.feature, r.cosine as f64)).collect();
        let strength: Vec<(usize, usize, f64)> = shown.iter().map(|r| (category(r), r.feature, (r.strength as f64).log10().clamp(-STRENGTH_DECADES, STRENGTH_DECADES))).collect();
        let hi = strength.iter().map(|s| s.2).fold(0.5f64, f64::max).ceil();
        let lo = strength.iter().map(|s| s.2).fold(-0.5f64, f64::min).floor();
        let categories: Vec<String> = pairs.iter().map(|(l, m)| format!("L{l} → L{m}")).collect();
        let x_desc = "Pushed at layer l → read at layer m";
        let cos_spec = Strips {
            caption: "Direction: cosine of the carried write J·d_l with the decoder d_m",
            categories: &categories,
            x_desc,
            y_desc: "cos(J·d_l, d_m)",
            range: (-1.05, 1.05),
            fmt: tick,
            ticks: tick,
            guides: &[0.0, 1.0],
        };
        strip_plot(&panels[0], &cos_spec, &cosine)?;
        let strength_spec = Strips {
            caption: "Strength: ‖J·d_l‖ / ‖d_m‖ (1 = carried at the decoder's full norm)",
            categories: &categories,
            x_desc,
            y_desc: "Norm ratio (log scale)",
            range: (lo, hi),
            fmt: |v| num(10f64.powf(v)),
            // Powers of ten only: a log axis reads by decades.
            ticks: |v| if (v - v.round()).abs() < 1e-9 { tick(10f64.powf(v.round())) } else { String::new() },
            guides: &[0.0],
        };
        strip_plot(&panels[1], &strength_spec, &strength)
    })
}
