//! Overview figures read from the transcoder's weights (DESIGN §6): for a CLT, its banding (which
//! target layer each feature writes to most, and the decoder norm per pair of layers) and the
//! cosine of each feature's decoders at consecutive target layers; for an MLSAE, the banding
//! strips of `circuits mlsae`. A PLT writes only its own layer and has neither.

use std::collections::HashMap;
use std::path::Path;

use crate::circuits::mlsae::banding_table;
use crate::circuits::mlsae_plot::draw_banding;
use crate::report::card::{bold, num, text, tick};
use crate::report::charts::{draw_png, matrix, strip_plot, Matrix, Strips};
use crate::report::overview::Figure;
use crate::report::Context;
use crate::transcoder::{Transcoder, Variant};
use crate::Result;

/// The weight figures of the report's transcoder, drawn into `dir`; none without a transcoder.
pub(crate) fn draw_weight_figures(ctx: &Context, dir: &Path) -> Result<Vec<Figure>> {
    let Some(tc) = ctx.inputs.transcoder else { return Ok(Vec::new()) };
    let density: HashMap<(u32, u32), f64> = ctx.inputs.mined.features.iter().map(|f| ((f.layer, f.feature), f.density)).collect();
    let live = |l: usize, f: usize| density.get(&(l as u32, f as u32)).is_some_and(|&d| d > 0.0);
    match tc.shape.variant {
        Variant::Mlsae => {
            let activity: Vec<f64> = (0..tc.shape.features).map(|f| density.get(&(0, f as u32)).copied().unwrap_or(0.0)).collect();
            let figure = Figure {
                file: "overview_mlsae_banding.png".into(),
                title: "MLSAE banding".into(),
                caption: "Each column is a live feature (most active first), each row a layer: the share of the feature's encoder (top) and decoder (bottom) squared norm in that layer. Right: how many features have their largest share in each layer.".into(),
            };
            // No activations here to undo the trainer's per-layer input scale: see banding_table.
            let rows = banding_table(tc, &activity, None)?;
            let note = "activity = share of steps firing · encoder shares of the exported weights (input scale folded in; `voltlens circuits mlsae` corrects for it)";
            draw_banding(&rows, tc.shape.layers, note, &dir.join(&figure.file))?;
            Ok(vec![figure])
        }
        Variant::Clt if tc.shape.layers > 1 => {
            let decoders = CltDecoders::new(tc, live);
            let banding = Figure {
                file: "overview_clt_banding.png".into(),
                title: "CLT banding: where features write".into(),
                caption: "Rows are the layer a feature reads (source), columns the layer its decoder writes to (target). Left: live features by the target layer they write to most. Right: their mean decoder norm ‖W_dec[l→m]‖ in residual-stream units. A CLT writes only forward, so cells below the diagonal are empty.".into(),
            };
            let cosine = Figure {
                file: "overview_decoder_cosine.png".into(),
                title: "Decoder cosine across layers".into(),
                caption: "For each live CLT feature, the cosine between its decoder vectors at two consecutive target layers: near 1, it writes one direction spread over both layers; near 0, unrelated directions. Dots are features, the box their middle half, the bar the median.".into(),
            };
            draw_clt_banding(&decoders, &dir.join(&banding.file))?;
            draw_decoder_cosine(&decoders, &dir.join(&cosine.file))?;
            Ok(vec![banding, cosine])
        }
        Variant::Clt | Variant::Plt | Variant::Sae => Ok(Vec::new()),
    }
}

/// Norms and consecutive cosines of the live CLT features' decoders.
struct CltDecoders {
    layers: usize,
    /// Per source layer l, per live feature: (feature, ‖W_dec[l→m]‖ for m = l..L).
    norms: Vec<Vec<(usize, Vec<f64>)>>,
    /// (source l, target m, feature, cos(W_dec[l→m], W_dec[l→m+1])) where both are non-zero.
    cosines: Vec<(usize, usize, usize, f64)>,
}

impl CltDecoders {
    fn new(tc: &Transcoder, live: impl Fn(usize, usize) -> bool) -> CltDecoders {
        let (layers, d) = (tc.shape.layers, tc.shape.d_model);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>();
        let mut norms = vec![Vec::new(); layers];
        let mut cosines = Vec::new();
        for (l, of_layer) in norms.iter_mut().enumerate() {
            let row = tc.shape.dec_row(l);
            for (f, dec) in tc.w_dec[l].chunks(row).enumerate().filter(|(f, _)| live(l, *f)) {
                let targets: Vec<&[f32]> = dec.chunks(d).collect(); // target m = l + index
                let n: Vec<f64> = targets.iter().map(|t| dot(t, t).sqrt()).collect();
                for k in 0..targets.len().saturating_sub(1) {
                    if n[k] > 0.0 && n[k + 1] > 0.0 {
                        cosines.push((l, l + k, f, dot(targets[k], targets[k + 1]) / (n[k] * n[k + 1])));
                    }
                }
                of_layer.push((f, n));
            }
        }
        CltDecoders { layers, norms, cosines }
    }
}

fn draw_clt_banding(dec: &CltDecoders, path: &Path) -> Result<()> {
    let n = dec.layers;
    let names: Vec<String> = (0..n).map(|l| format!("layer {l}")).collect();
    let argmax = |v: &[f64]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
    let counts = upper(n, |l, m| dec.norms[l].iter().filter(|(_, v)| l + argmax(v) == m).count() as f64);
    let mean_norm = upper(n, |l, m| {
        let of_layer = &dec.norms[l];
        of_layer.iter().map(|(_, v)| v[m - l]).sum::<f64>() / of_layer.len().max(1) as f64
    });
    let live: usize = dec.norms.iter().map(Vec::len).sum();
    let side = (70 * n as u32).max(300);
    draw_png(path, (1500, side + 190), |root| {
        let (header, body) = root.split_vertically(60);
        text(&header, &format!("CLT banding: where the {live} live features write (rows: source layer, columns: target layer)"), (20, 18), bold(20))?;
        let panels = body.split_evenly((1, 2));
        let common = |caption, values, fmt, scale| Matrix { caption, row_names: &names, col_names: &names, row_desc: "Source layer (reads)", col_desc: "Target layer (writes)", values, fmt, scale };
        matrix(&panels[0], &common("Live features by the target they write to most", &counts, |v| format!("{v:.0}"), "Live features"))?;
        matrix(&panels[1], &common("Mean decoder norm ‖W_dec[l→m]‖", &mean_norm, num, "Mean ‖W_dec‖ (residual units)"))
    })
}

/// An n×n matrix of `value(l, m)` on and above the diagonal, empty below (a CLT writes only forward).
fn upper(n: usize, value: impl Fn(usize, usize) -> f64) -> Vec<Vec<Option<f64>>> {
    (0..n).map(|l| (0..n).map(|m| (m >= l).then(|| value(l, m))).collect()).collect()
}

fn draw_decoder_cosine(dec: &CltDecoders, path: &Path) -> Result<()> {
    let pairs: Vec<(usize, usize)> = (0..dec.layers).flat_map(|l| (l..dec.layers - 1).map(move |m| (l, m))).collect();
    let categories: Vec<String> = pairs.iter().map(|(l, m)| format!("L{l}→{m} vs L{l}→{}", m + 1)).collect();
    let points: Vec<(usize, usize, f64)> =
        dec.cosines.iter().map(|&(l, m, f, c)| (pairs.iter().position(|&p| p == (l, m)).expect("every consecutive pair"), f, c)).collect();
    let width = (130 * pairs.len() as u32 + 200).max(900);
    draw_png(path, (width, 560), |root| {
        let spec = Strips {
            caption: "Cosine between a CLT feature's decoders at consecutive target layers",
            categories: &categories,
            x_desc: "Decoders compared (source layer → target layer)",
            y_desc: "cos(W_dec[l→m], W_dec[l→m+1])",
            range: (-1.05, 1.05),
            fmt: tick,
            ticks: tick,
            guides: &[0.0],
        };
        strip_plot(root, &spec, &points)
    })
}
