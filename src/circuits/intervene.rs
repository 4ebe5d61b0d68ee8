//! Interventions (DESIGN.md §7): run the replacement model (every MLP replaced by the transcoder)
//! over one cell with one feature's activation multiplied by a scale (0 ablates it, 2 doubles it),
//! and compare the predicted next voltages with the unmodified replacement run (scale 1).

use std::cell::RefCell;
use std::fmt::Write;
use std::path::Path;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use plotters::prelude::*;

use super::check_feature;
use crate::model::inputs::{cell_steps, ModelSteps};
use crate::model::backend::{run_on, BackendTask};
use crate::model::{load_model, DeviceChoice, LoadedModel, Lblm, MlpReplacement};
use crate::plot_style::{self, FONT};
use crate::transcoder::device_encode::Encoder;
use crate::transcoder::replacement::{LayerEncoder, ReplacementPass};
use crate::transcoder::sparse::SparseOps;
use crate::transcoder::{import_circuit_tracer, Codes, Transcoder};
use crate::{Error, Result};

/// Windows per forward pass: keeps the matmuls busy without holding a long cell's activations.
const WINDOWS_PER_PASS: usize = 16;

/// Every MLP replaced by a causal transcoder (CLT or PLT) whose feature (`layer`, `feature`) is
/// multiplied by `scale` before decoding; it also records what fired.
///
/// As in `transcoder::online::TranscoderMlps`, the codes of layer l come from the replacement
/// run's own resid_mid_l (a `ReplacementPass`), so the scaled feature changes every later layer's
/// input. With scale 1 it replaces the MLPs exactly as `TranscoderMlps` with every layer replaced
/// does.
pub struct SteeredMlps<'a> {
    layer: usize,
    feature: usize,
    scale: f32,
    /// Features per layer.
    features: usize,
    pass: RefCell<ReplacementPass<'a>>,
    /// The steered feature's activation before scaling, one per token of the last pass.
    activation: RefCell<Vec<f32>>,
    /// Tokens on which each feature fired, over every pass, [L, F].
    firing: RefCell<Vec<usize>>,
}

impl<'a> SteeredMlps<'a> {
    pub fn new(transcoder: &'a Transcoder, encoder: &'a dyn LayerEncoder, layer: usize, feature: usize, scale: f32) -> Result<Self> {
        check_feature(transcoder, layer, feature)?;
        let s = transcoder.shape;
        Ok(SteeredMlps {
            layer,
            feature,
            scale,
            features: s.features,
            pass: RefCell::new(ReplacementPass::new(transcoder, encoder)?),
            activation: RefCell::new(Vec::new()),
            firing: RefCell::new(vec![0; s.layers * s.features]),
        })
    }

    /// Counts the features of encoder `layer` that fire on each token (a row of `codes`), keeps
    /// the steered feature's activations, and scales it.
    fn record_and_steer(&self, codes: &mut Codes, layer: usize) {
        let mut firing = self.firing.borrow_mut();
        let mut activation = self.activation.borrow_mut();
        if layer == self.layer {
            *activation = vec![0.0; codes.rows()];
        }
        for t in 0..codes.rows() {
            for i in codes.row(t) {
                let g = codes.index[i] as usize;
                if codes.value[i] > 0.0 {
                    firing[layer * self.features + g] += 1;
                }
                if layer == self.layer && g == self.feature {
                    activation[t] = codes.value[i];
                    codes.value[i] *= self.scale;
                }
            }
        }
    }
}

impl<B: Backend> MlpReplacement<B> for SteeredMlps<'_> {
    fn mlp_out(&self, layer: usize, resid_mid: Tensor<B, 3>) -> Tensor<B, 3> {
        let mut pass = self.pass.borrow_mut();
        pass.input(layer, to_vec(resid_mid.clone()));
        let y = pass.mlp_out(layer, |e, codes| self.record_and_steer(codes, e));
        Tensor::from_data(TensorData::new(y, resid_mid.dims()), &resid_mid.device())
    }
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().expect("f32 activations")
}

/// One replacement run over a cell.
struct CellRun {
    /// Scaled ΔV per step.
    prediction: Vec<f32>,
    /// The steered feature's activation before scaling, per step.
    activation: Vec<f32>,
    /// Steps on which each feature fired, [L, F].
    firing: Vec<usize>,
}

/// Runs `model` with `mlps` over every step of `cell`, in consecutive windows of the model's
/// context (the last one shorter) so that each step is predicted exactly once.
fn run_cell<B: Backend>(model: &Lblm<B>, cell: &ModelSteps, mlps: &SteeredMlps, device: &B::Device) -> CellRun {
    let (len, steps) = (model.context, cell.steps());
    let full = steps / len;
    // (first window, windows, steps each): the full windows a pass at a time, then the tail.
    let mut passes: Vec<(usize, usize, usize)> =
        (0..full).step_by(WINDOWS_PER_PASS).map(|w| (w, WINDOWS_PER_PASS.min(full - w), len)).collect();
    if steps % len > 0 {
        passes.push((full, 1, steps % len));
    }
    let (mut prediction, mut activation) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    for (first, windows, seq) in passes {
        let start = first * len * cell.width;
        let x = cell.inputs[start..start + windows * seq * cell.width].to_vec();
        let x = Tensor::<B, 3>::from_data(TensorData::new(x, [windows, seq, cell.width]), device);
        prediction.extend(to_vec(model.forward_with_replacement(x, mlps).0));
        activation.extend(mlps.activation.borrow().iter().copied());
    }
    CellRun { prediction, activation, firing: mlps.firing.borrow().clone() }
}

/// What scaling one feature did to one cell's predictions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InterventionReport {
    pub cell_id: String,
    pub layer: usize,
    pub feature: usize,
    /// The factor the feature's activation was multiplied by (0: ablated).
    pub scale: f32,
    /// Step t predicts V_{t+1}.
    pub steps: Vec<usize>,
    /// The feature's activation at each step in the unmodified replacement run.
    pub activation: Vec<f32>,
    /// Predicted V_{t+1} (V) of the replacement run with the feature unmodified (scale 1).
    pub baseline_v: Vec<f32>,
    /// Predicted V_{t+1} (V) with the feature scaled.
    pub intervened_v: Vec<f32>,
    /// intervened − baseline, in mV.
    pub delta_mv: Vec<f32>,
    pub max_abs_delta_mv: f32,
    /// Steps on which each feature fires in the unmodified run, [L, F]: where to look for
    /// features worth intervening on.
    pub firing_steps: Vec<usize>,
}

/// `voltlens circuits steer|ablate`: scale feature `feature` of `layer` of the transcoder in
/// `transcoder_dir` (circuit-tracer layout) by `scale` while the model in `model_dir` predicts
/// every step of cell `cell_id` of the dataset in `dataset_dir`, all MLPs replaced by the
/// transcoder.
pub struct Intervention<'a> {
    pub dataset_dir: &'a Path,
    pub model_dir: &'a Path,
    pub transcoder_dir: &'a Path,
    pub layer: usize,
    pub feature: usize,
    pub cell_id: &'a str,
    pub scale: f32,
}

/// Runs `what` with the model and the transcoder's encoder on `device` (the sparse decoding on the
/// CPU, as replacement fidelity runs), and compares it with the unmodified replacement run.
pub fn ablate_or_steer(what: Intervention, device: DeviceChoice) -> Result<InterventionReport> {
    run_on(device, what)
}

impl BackendTask for Intervention<'_> {
    type Output = InterventionReport;
    fn describe(&self) -> String {
        format!("the replacement model over cell {} (batches of {WINDOWS_PER_PASS} windows of the model's context, fixed); run it on the CPU", self.cell_id)
    }
    fn run<B: AutodiffBackend + SparseOps>(self, device: B::Device) -> Result<InterventionReport> {
        intervene::<B>(&self, &device)
    }
}

fn intervene<A: AutodiffBackend + SparseOps>(what: &Intervention, device: &A::Device) -> Result<InterventionReport> {
    let (loaded, tc) = load_replacement::<A::InnerBackend>(what.model_dir, what.transcoder_dir, device)?;
    let encoder = Encoder::<A>::new(&tc, device);
    let raw = cell_steps(what.dataset_dir, what.cell_id, &loaded.norm.channels)?;
    if raw.steps() == 0 {
        return Err(Error::Config(format!("cell {} has fewer than two rows: nothing to predict", what.cell_id)));
    }
    let cell = loaded.norm.apply(&raw);
    let (layer, feature) = (what.layer, what.feature);
    let run = |scale| Ok::<_, Error>(run_cell(&loaded.model, &cell, &SteeredMlps::new(&tc, &encoder, layer, feature, scale)?, device));
    let (baseline, intervened) = (run(1.0)?, run(what.scale)?);
    // V_{t+1} = V_t + scaled ΔV · target_scale, as eval-model scores next-step predictions.
    let volts = |r: &CellRun| -> Vec<f32> {
        r.prediction.iter().zip(&raw.voltage).map(|(p, v)| v + p * loaded.norm.target_scale).collect()
    };
    let (baseline_v, intervened_v) = (volts(&baseline), volts(&intervened));
    let delta_mv: Vec<f32> = intervened_v.iter().zip(&baseline_v).map(|(i, b)| (i - b) * 1000.0).collect();
    Ok(InterventionReport {
        cell_id: what.cell_id.to_owned(),
        layer,
        feature,
        scale: what.scale,
        steps: (0..raw.steps()).collect(),
        activation: baseline.activation,
        max_abs_delta_mv: delta_mv.iter().fold(0.0, |m, d| m.max(d.abs())),
        baseline_v,
        intervened_v,
        delta_mv,
        firing_steps: baseline.firing,
    })
}

/// The model in `model_dir` (on `device`) and the transcoder in `transcoder_dir` (circuit-tracer
/// layout), checked to fit each other.
pub fn load_replacement<B: Backend>(model_dir: &Path, transcoder_dir: &Path, device: &B::Device) -> Result<(LoadedModel<B>, Transcoder)> {
    let loaded = load_model::<B>(model_dir, device)?;
    let tc = import_circuit_tracer(transcoder_dir)?;
    tc.shape.check_fits(loaded.model.layers(), loaded.model.d_model(), Some((transcoder_dir, model_dir)))?;
    Ok((loaded, tc))
}

/// Normalised model inputs of consecutive steps of one cell, [len, width] row-major, and
/// the position in them whose prediction is read.
#[derive(Debug, Clone)]
pub struct ProbeWindow {
    pub inputs: Vec<f32>,
    /// Channels per step (the model's input width).
    pub width: usize,
    pub position: usize,
}

impl ProbeWindow {
    /// The `len` steps of `cell` (or all, if fewer) that hold `step` with the most context
    /// before it: the model is causal, so the steps after it change nothing.
    pub fn around(cell: &ModelSteps, step: usize, len: usize) -> ProbeWindow {
        let len = len.min(cell.steps());
        let start = (step + 1).saturating_sub(len);
        let width = cell.width;
        ProbeWindow { inputs: cell.inputs[start * width..(start + len) * width].to_vec(), width, position: step - start }
    }
}

/// The change in predicted V_{t+1} (mV, ablated − replacement run) at each window's position when
/// feature (`layer`, `feature`) is ablated on every step of the window, all MLPs replaced by `tc`
/// (encoded by `encoder`). Windows of one length run as one batch.
#[allow(clippy::too_many_arguments)]
pub fn ablation_effect_mv<B: Backend>(
    model: &Lblm<B>,
    target_scale: f32,
    tc: &Transcoder,
    encoder: &dyn LayerEncoder,
    (layer, feature): (usize, usize),
    windows: &[ProbeWindow],
    device: &B::Device,
) -> Result<Vec<f32>> {
    let mut out = vec![0.0; windows.len()];
    let mut shapes: Vec<(usize, usize)> = windows.iter().map(|w| (w.inputs.len() / w.width, w.width)).collect();
    shapes.sort_unstable();
    shapes.dedup();
    for (len, width) in shapes {
        let batch: Vec<usize> =
            (0..windows.len()).filter(|&i| (windows[i].inputs.len() / windows[i].width, windows[i].width) == (len, width)).collect();
        let x: Vec<f32> = batch.iter().flat_map(|&i| windows[i].inputs.iter().copied()).collect();
        let predict = |scale| -> Result<Vec<f32>> {
            let x = Tensor::<B, 3>::from_data(TensorData::new(x.clone(), [batch.len(), len, width]), device);
            Ok(to_vec(model.forward_with_replacement(x, &SteeredMlps::new(tc, encoder, layer, feature, scale)?).0))
        };
        let (intact, ablated) = (predict(1.0)?, predict(0.0)?);
        for (b, &i) in batch.iter().enumerate() {
            let at = b * len + windows[i].position;
            // Scaled ΔV back to volts, as `ablate_or_steer` does, then mV.
            out[i] = (ablated[at] - intact[at]) * target_scale * 1000.0;
        }
    }
    Ok(out)
}

/// A few lines on what the intervention did.
pub fn format_intervention(r: &InterventionReport) -> String {
    let fired = r.activation.iter().filter(|&&a| a > 0.0).count();
    let n = r.steps.len().max(1) as f32;
    let mean_abs = r.delta_mv.iter().map(|d| d.abs()).sum::<f32>() / n;
    let mut out = String::new();
    let _ = writeln!(out, "cell {}: feature {} of layer {} scaled by {}", r.cell_id, r.feature, r.layer, r.scale);
    let _ = writeln!(out, "fires on {fired} of {} steps (max activation {:.4})", r.steps.len(), r.activation.iter().fold(0f32, |m, &a| m.max(a)));
    let _ = writeln!(out, "predicted V change: max |Δ| {:.4} mV, mean |Δ| {mean_abs:.4} mV", r.max_abs_delta_mv);
    out
}

/// Two panels against step: the baseline and intervened voltage predictions, and their
/// difference in mV.
pub fn draw_intervention(r: &InterventionReport, png_path: &Path) -> Result<()> {
    plot_style::ensure_fonts();
    crate::io::write_via_temp(png_path, |tmp| {
        let root = BitMapBackend::new(tmp, (1200, 800)).into_drawing_area();
        let fail = |e: &dyn std::fmt::Display| Error::Other(format!("drawing {}: {e}", png_path.display()));
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let (title, body) = root.split_vertically(40);
        let heading = format!("Cell {}: layer {} feature {} × {}", r.cell_id, r.layer, r.feature, r.scale);
        title.titled(&heading, (FONT, 22).into_font()).map_err(|e| fail(&e))?;
        let (top, bottom) = body.split_vertically(body.dim_in_pixel().1 / 2);
        let voltages: [Series; 2] =
            [("replacement", &r.baseline_v, plot_style::VOLTAGE), ("intervened", &r.intervened_v, plot_style::PREDICTION)];
        draw_panel(&top, "Predicted V (V)", "", &voltages).map_err(|e| fail(&e))?;
        draw_panel(&bottom, "Δ (mV)", "Step", &[("intervened − replacement", &r.delta_mv, plot_style::CURRENT)])
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))
    })
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
/// (legend label, value per step, colour)
type Series<'s> = (&'s str, &'s [f32], RGBColor);
type DrawResult<'a> = std::result::Result<(), DrawingAreaErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>>;

/// One panel: lines of (label, values per step, colour) over the steps, on a y range spanning them all.
fn draw_panel<'a>(area: &Area<'a>, y_label: &str, x_label: &str, series: &[Series]) -> DrawResult<'a> {
    let all = series.iter().flat_map(|s| s.1.iter());
    let (lo, hi) = all.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let x_max = series[0].1.len().max(2) as f64;
    let mut chart = ChartBuilder::on(area)
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (lo - pad) as f64..(hi + pad) as f64)?;
    chart
        .configure_mesh()
        .max_light_lines(1)
        .light_line_style(plot_style::GRID)
        .y_desc(y_label)
        .x_desc(x_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for &(label, values, colour) in series {
        chart
            .draw_series(LineSeries::new(values.iter().enumerate().map(|(t, &v)| (t as f64, v as f64)), colour.stroke_width(1)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).label_font((FONT, 14)).draw()
}
