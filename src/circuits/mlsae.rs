//! MLSAE analyses (DESIGN.md §7): where a multi-layer SAE's features live, and whether the model
//! itself carries a feature's write at one layer onto its decoder at later layers.
//!
//! - **Banding.** The MLSAE's one encoder reads every layer's resid_mid [L·d] and its decoder writes
//!   every layer's mlp_out; a feature's band is the layer holding the largest share of ‖W_enc,f‖²
//!   (where it reads) and of ‖W_dec,f‖² (where it writes).
//! - **Causal alignment.** Feature f writes d_l = W_dec[f, l, :] into mlp_out_l, which joins the
//!   residual stream at resid_post_l. Push ε·d_l there at one token t where f fires and follow the
//!   change through the model (attention, norms and MLPs all live): J_{l→l+k}·d_l is the change of
//!   resid_post_{l+k} at t per unit ε. Were the feature's decoder at l+k nothing but the model
//!   carrying its layer-l write forward, J·d_l would equal d_{l+k}: cosine 1 and strength
//!   ‖J·d_l‖ / ‖d_{l+k}‖ = 1. Both are averaged over the tokens where f fires; k = 0 is the identity.
//!
//! The JVP is a central finite difference (F(x + εv) − F(x − εv)) / 2ε with ε a hundredth of the
//! residual stream's RMS norm: burn differentiates in reverse mode only, where a JVP would take one
//! backward pass per output coordinate. `tests/circuits_mlsae.rs` checks uᵀ(J·v) against burn's
//! autodiff (uᵀJ)·v on a tiny model.

use std::fmt::Write;
use std::path::Path;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use crate::data::canonical::Dataset;
use crate::io::write_atomic;
use crate::model::inputs::dataset_steps;
use crate::model::backend::{run_on, BackendTask};
use crate::model::{load_model, DeviceChoice, Lblm};
use crate::transcoder::sparse::SparseOps;
use crate::transcoder::{import_circuit_tracer, layer_sq_norms, Band, Transcoder, Variant};
use crate::{Error, Result};

/// Windows sampled from the dataset, evenly over every cell's non-overlapping windows.
const MAX_WINDOWS: usize = 256;
/// Windows per forward pass of the sweep over the data.
const WINDOWS_PER_PASS: usize = 16;
/// Firing tokens per feature that the alignment averages over.
const TOKENS_PER_FEATURE: usize = 32;
/// ε as a share of resid_post's RMS norm at the trigger layer: small enough for the curvature
/// (O(ε²) in a central difference), large enough for f32 rounding (O(1e-7/ε)).
const FD_STEP: f32 = 1e-2;

/// Refuses anything but an MLSAE, naming what it got.
pub fn check_mlsae(tc: &Transcoder) -> Result<()> {
    match tc.shape.variant {
        Variant::Mlsae => Ok(()),
        other => Err(Error::Config(format!(
            "the MLSAE analyses need a multi-layer SAE (variant mlsae); this transcoder is a {other:?} — \
             use `circuits pullback` or the report's banding figure for CLTs and PLTs"
        ))),
    }
}

/// Where one MLSAE feature reads and writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureBanding {
    pub feature: usize,
    /// How often it fires (tokens, or a share of steps): the figures sort by it.
    pub activity: f64,
    /// Share of ‖W_enc,f‖² in each layer's slice of the input, [L] (sums to 1 unless all zero).
    pub encoder_share: Vec<f32>,
    /// Share of ‖W_dec,f‖² written to each layer, [L].
    pub decoder_share: Vec<f32>,
    /// The layers with the largest shares.
    pub band: Band,
}

/// Every feature's banding, most active first (ties by feature id); `activity` is per feature.
///
/// The trainer scales each layer's resid_mid to a common norm and folds that scale into the
/// exported W_enc, so raw encoder norms favour the layers with the smallest residual stream.
/// `input_norm`, the mean ‖resid_mid_l‖ per layer, undoes that: the encoder's layer-l part is
/// weighed by ‖W_enc,f[l]‖·‖x_l‖, its typical contribution to the pre-activation. Without it the
/// exported weights are taken as they are.
pub fn banding_table(tc: &Transcoder, activity: &[f64], input_norm: Option<&[f32]>) -> Result<Vec<FeatureBanding>> {
    check_mlsae(tc)?;
    assert_eq!(activity.len(), tc.shape.features, "one activity per feature");
    let share = |v: &[f32]| {
        let total: f32 = v.iter().sum();
        v.iter().map(|x| if total > 0.0 { x / total } else { 0.0 }).collect::<Vec<f32>>()
    };
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
    let mut rows: Vec<FeatureBanding> = layer_sq_norms(tc)
        .into_iter()
        .enumerate()
        .map(|(f, (mut enc, dec))| {
            if let Some(norm) = input_norm {
                enc.iter_mut().zip(norm).for_each(|(e, n)| *e *= n * n);
            }
            let band = Band { encoder_layer: argmax(&enc), decoder_layer: argmax(&dec) };
            FeatureBanding { feature: f, activity: activity[f], encoder_share: share(&enc), decoder_share: share(&dec), band }
        })
        .collect();
    rows.sort_by(|a, b| b.activity.total_cmp(&a.activity).then(a.feature.cmp(&b.feature)));
    Ok(rows)
}

/// How closely the model's own propagation of a feature's write matches its later decoder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlignmentRow {
    pub feature: usize,
    /// Layer l whose decoder direction is pushed.
    pub trigger_layer: usize,
    /// Layer l + k where the change is read and compared with the decoder.
    pub target_layer: usize,
    /// Firing tokens averaged over.
    pub tokens: usize,
    /// Mean over tokens of cos(J·d_l, d_{l+k}).
    pub cosine: f32,
    /// Mean over tokens of ‖J·d_l‖ / ‖d_{l+k}‖ (1: the model carries the write at full strength).
    pub strength: f32,
    /// Share of the feature's ‖W_dec‖² written at the trigger layer: pushes from a layer the
    /// feature barely writes to say little about it.
    pub trigger_share: f32,
    /// The same at the target layer: a decoder that is almost nothing is no direction to match.
    pub target_share: f32,
}

/// Change of resid_post at layers `layer`..L, read at one position per window, per unit push along
/// that window's tangent added to resid_post_layer (through mlp_out_layer) at the same position:
/// [n, L − layer, d]. x: inputs [n, seq, C]; `at`: the position in each window;
/// `tangent`: [n, d]; `eps`: the finite-difference step (see the module notes).
pub fn jvp<B: Backend>(model: &Lblm<B>, x: Tensor<B, 3>, at: &[usize], layer: usize, tangent: &[f32], eps: f32) -> Vec<f32> {
    let [n, seq, _] = x.dims();
    let layers = model.layers();
    let d = tangent.len() / n;
    let run = |sign: f32| {
        let mut delta = vec![0.0f32; n * seq * d];
        for (b, &p) in at.iter().enumerate() {
            let row = &mut delta[(b * seq + p) * d..(b * seq + p + 1) * d];
            row.iter_mut().zip(&tangent[b * d..(b + 1) * d]).for_each(|(r, v)| *r = sign * eps * v);
        }
        let delta = Tensor::<B, 3>::from_data(TensorData::new(delta, [n, seq, d]), &x.device());
        // Every MLP is the model's own; layer `layer`'s output carries the push.
        let push = |l: usize, resid_mid: Tensor<B, 3>| {
            let block = &model.blocks[l];
            let out = block.mlp.forward(block.ln_mlp.forward(resid_mid));
            if l == layer { out + delta.clone() } else { out }
        };
        let (_, acts) = model.forward_with_replacement(x.clone(), &push);
        let mut read = Vec::with_capacity(n * (layers - layer) * d);
        let post: Vec<Vec<f32>> = acts[layer..].iter().map(|a| to_vec(a.resid_post.clone())).collect();
        for (b, &p) in at.iter().enumerate() {
            for m in &post {
                read.extend_from_slice(&m[(b * seq + p) * d..(b * seq + p + 1) * d]);
            }
        }
        read
    };
    let (plus, minus) = (run(1.0), run(-1.0));
    plus.iter().zip(&minus).map(|(p, m)| (p - m) / (2.0 * eps)).collect()
}

/// Alignment of `feature`'s decoder at every trigger layer with its decoders at the layers after
/// it, over firing tokens given as windows x [n, seq, C] and the position `at` of the
/// token in each. `rms`: resid_post's RMS norm per layer, which sets ε.
pub fn align_feature<B: Backend>(model: &Lblm<B>, tc: &Transcoder, feature: usize, x: Tensor<B, 3>, at: &[usize], rms: &[f32]) -> Result<Vec<AlignmentRow>> {
    check_mlsae(tc)?;
    let (layers, d) = (tc.shape.layers, tc.shape.d_model);
    let n = at.len();
    let dec = &tc.w_dec[0][feature * layers * d..(feature + 1) * layers * d]; // [L, d]
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let total: f32 = dec.chunks(d).map(|r| norm(r).powi(2)).sum();
    let mut rows = Vec::new();
    for l in 0..layers {
        let d_l = &dec[l * d..(l + 1) * d];
        if norm(d_l) == 0.0 || n == 0 {
            continue;
        }
        let tangent: Vec<f32> = (0..n).flat_map(|_| d_l.iter().copied()).collect();
        let eps = FD_STEP * rms[l].max(1e-6) / norm(d_l);
        let moved = jvp(model, x.clone(), at, l, &tangent, eps); // [n, L − l, d]
        for k in 0..layers - l {
            let d_m = &dec[(l + k) * d..(l + k + 1) * d];
            let (mut cosine, mut strength) = (0.0f32, 0.0f32);
            for b in 0..n {
                let j = &moved[(b * (layers - l) + k) * d..(b * (layers - l) + k + 1) * d];
                let dot: f32 = j.iter().zip(d_m).map(|(a, b)| a * b).sum();
                cosine += dot / (norm(j) * norm(d_m)).max(1e-12);
                strength += norm(j) / norm(d_m).max(1e-12);
            }
            rows.push(AlignmentRow {
                feature,
                trigger_layer: l,
                target_layer: l + k,
                tokens: n,
                cosine: cosine / n as f32,
                strength: strength / n as f32,
                trigger_share: norm(d_l).powi(2) / total,
                target_share: norm(d_m).powi(2) / total,
            });
        }
    }
    Ok(rows)
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().expect("f32 activations")
}

/// Windows of the dataset run through the model and the MLSAE once.
struct Sweep {
    /// Normalised inputs of each window, [windows, seq, C].
    inputs: Vec<f32>,
    seq: usize,
    /// The model's input channels per step (C).
    width: usize,
    /// Tokens on which each feature fired, as (window, position), in sweep order.
    firing: Vec<Vec<(u32, u32)>>,
    /// RMS of ‖resid_post_l‖ over every token, per layer: sets ε.
    rms: Vec<f32>,
    /// Mean ‖resid_mid_l‖ over every token, per layer: the banding's input scale.
    resid_mid_norm: Vec<f32>,
}

impl Sweep {
    fn windows(&self) -> usize {
        self.inputs.len() / (self.seq * self.width)
    }

    /// The windows of `tokens` stacked as a batch [n, seq, C], and each token's position.
    fn batch<B: Backend>(&self, tokens: &[(u32, u32)], device: &B::Device) -> (Tensor<B, 3>, Vec<usize>) {
        let w = self.seq * self.width;
        let x: Vec<f32> = tokens.iter().flat_map(|&(b, _)| &self.inputs[b as usize * w..(b as usize + 1) * w]).copied().collect();
        let x = Tensor::from_data(TensorData::new(x, [tokens.len(), self.seq, self.width]), device);
        (x, tokens.iter().map(|&(_, p)| p as usize).collect())
    }
}

/// Up to MAX_WINDOWS non-overlapping windows of the model's context, spread evenly over every
/// cell of the dataset, run through the model and the MLSAE.
fn sweep<B: Backend>(dataset_dir: &Path, model: &Lblm<B>, norm: &crate::model::InputNorm, tc: &Transcoder, device: &B::Device) -> Result<Sweep> {
    let dataset = Dataset::load(dataset_dir)?;
    let ids: Vec<String> = dataset.cells.iter().map(|c| c.cell_id.clone()).collect();
    let cells: Vec<_> = dataset_steps(&dataset, dataset_dir, &ids, &norm.channels)?.iter().map(|c| norm.apply(c)).collect();
    let (seq, width) = (model.context, model.channels());
    let all: Vec<(usize, usize)> = cells.iter().enumerate().flat_map(|(c, cell)| (0..cell.steps() / seq).map(move |w| (c, w * seq))).collect();
    if all.is_empty() {
        return Err(Error::Config(format!("{}: no cell has {seq} steps, the model's context", dataset_dir.display())));
    }
    let take = all.len().min(MAX_WINDOWS);
    let chosen: Vec<(usize, usize)> = (0..take).map(|i| all[i * all.len() / take]).collect();
    let inputs: Vec<f32> =
        chosen.iter().flat_map(|&(c, start)| &cells[c].inputs[start * width..(start + seq) * width]).copied().collect();
    let layers = tc.shape.layers;
    let mut firing = vec![Vec::new(); tc.shape.features];
    let (mut sq, mut mid_norm) = (vec![0.0f64; layers], vec![0.0f64; layers]);
    for (pass, chunk) in inputs.chunks(WINDOWS_PER_PASS * seq * width).enumerate() {
        let windows = chunk.len() / (seq * width);
        let x = Tensor::<B, 3>::from_data(TensorData::new(chunk.to_vec(), [windows, seq, width]), device);
        let (_, acts) = model.forward_hooked(x);
        for (l, a) in acts.iter().enumerate() {
            sq[l] += to_vec(a.resid_post.clone()).iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
        }
        let resid_mid = to_vec(Tensor::stack::<4>(acts.into_iter().map(|a| a.resid_mid).collect(), 2)); // [windows, seq, L, d]
        for (k, row) in resid_mid.chunks(tc.shape.d_model).enumerate() {
            mid_norm[k % layers] += row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        }
        let codes = tc.encode(&resid_mid);
        for t in 0..windows * seq {
            for i in codes.row(t).filter(|&i| codes.value[i] > 0.0) {
                let window = (pass * WINDOWS_PER_PASS + t / seq) as u32;
                firing[codes.index[i] as usize].push((window, (t % seq) as u32));
            }
        }
    }
    let tokens = (chosen.len() * seq) as f64;
    let rms = sq.iter().map(|s| (s / tokens).sqrt() as f32).collect();
    let resid_mid_norm = mid_norm.iter().map(|s| (s / tokens) as f32).collect();
    Ok(Sweep { inputs, seq, width, firing, rms, resid_mid_norm })
}

/// Up to `k` of `items`, evenly spaced, in order.
fn spread<T: Copy>(items: &[T], k: usize) -> Vec<T> {
    let take = items.len().min(k);
    (0..take).map(|i| items[i * items.len() / take]).collect()
}

/// Everything `voltlens circuits mlsae` computes.
#[derive(Debug, Clone, Serialize)]
pub struct MlsaeAnalysis {
    pub layers: usize,
    pub windows: usize,
    pub tokens: usize,
    pub features: usize,
    /// Features firing at least once in the sweep.
    pub live: usize,
    /// Every feature, most active first; `activity` counts firing tokens in the sweep.
    pub banding: Vec<FeatureBanding>,
    /// The `top` most active features at every trigger and target layer (k = 0 included: the
    /// identity, cosine and strength 1).
    pub alignment: Vec<AlignmentRow>,
}

/// Banding of every feature of the MLSAE in `transcoder_dir` (circuit-tracer layout) and the
/// causal alignment of its `top` most active features on windows of the dataset, written to
/// `out_dir` as `mlsae.json` and `mlsae_{banding,alignment}.csv` (the figures are drawn by the
/// caller, with `mlsae_plot`). The model runs on `device` (its forward passes are the work: two
/// per feature and trigger layer), the MLSAE's encoder on the CPU.
pub fn analyse_mlsae(sources: &MlsaeSources, top: usize, out_dir: &Path, device: DeviceChoice) -> Result<MlsaeAnalysis> {
    let tc = import_circuit_tracer(sources.transcoder)?;
    check_mlsae(&tc)?;
    let analysis = run_on(device, AnalysisTask { sources, tc: &tc, top })?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    write_atomic(&out_dir.join("mlsae.json"), serde_json::to_string_pretty(&analysis).expect("plain data").as_bytes())?;
    write_atomic(&out_dir.join("mlsae_banding.csv"), banding_csv(&analysis.banding).as_bytes())?;
    write_atomic(&out_dir.join("mlsae_alignment.csv"), alignment_csv(&analysis.alignment).as_bytes())?;
    Ok(analysis)
}

/// Where an MLSAE analysis reads from.
pub struct MlsaeSources<'a> {
    pub dataset: &'a Path,
    pub model: &'a Path,
    /// The MLSAE in circuit-tracer's layout.
    pub transcoder: &'a Path,
}

struct AnalysisTask<'a> {
    sources: &'a MlsaeSources<'a>,
    tc: &'a Transcoder,
    top: usize,
}

impl BackendTask for AnalysisTask<'_> {
    type Output = MlsaeAnalysis;
    fn describe(&self) -> String {
        format!("the MLSAE analysis (batches of {WINDOWS_PER_PASS} and {TOKENS_PER_FEATURE} windows of the model's context, fixed); run it on the CPU")
    }
    fn run<B: AutodiffBackend + SparseOps>(self, device: B::Device) -> Result<MlsaeAnalysis> {
        analyse::<B::InnerBackend>(self.sources, self.tc, self.top, &device)
    }
}

fn analyse<B: Backend>(sources: &MlsaeSources, tc: &Transcoder, top: usize, device: &B::Device) -> Result<MlsaeAnalysis> {
    let loaded = load_model::<B>(sources.model, device)?;
    tc.shape.check_fits(loaded.model.layers(), loaded.model.d_model(), Some((sources.transcoder, sources.model)))?;
    let sweep = sweep(sources.dataset, &loaded.model, &loaded.norm, tc, device)?;
    let activity: Vec<f64> = sweep.firing.iter().map(|f| f.len() as f64).collect();
    let banding = banding_table(tc, &activity, Some(&sweep.resid_mid_norm))?;
    let mut alignment = Vec::new();
    for row in banding.iter().filter(|r| r.activity > 0.0).take(top) {
        let tokens = spread(&sweep.firing[row.feature], TOKENS_PER_FEATURE);
        let (x, at) = sweep.batch(&tokens, device);
        alignment.extend(align_feature(&loaded.model, tc, row.feature, x, &at, &sweep.rms)?);
    }
    Ok(MlsaeAnalysis {
        layers: tc.shape.layers,
        windows: sweep.windows(),
        tokens: sweep.windows() * sweep.seq,
        features: tc.shape.features,
        live: activity.iter().filter(|&&a| a > 0.0).count(),
        banding,
        alignment,
    })
}

fn banding_csv(rows: &[FeatureBanding]) -> String {
    let layers = rows.first().map_or(0, |r| r.encoder_share.len());
    let mut out = "feature,activity,encoder_band,decoder_band".to_owned();
    (0..layers).for_each(|l| write!(out, ",encoder_share_L{l}").expect("string"));
    (0..layers).for_each(|l| write!(out, ",decoder_share_L{l}").expect("string"));
    out.push('\n');
    for r in rows {
        write!(out, "{},{},{},{}", r.feature, r.activity, r.band.encoder_layer, r.band.decoder_layer).expect("string");
        r.encoder_share.iter().chain(&r.decoder_share).for_each(|s| write!(out, ",{s:.6}").expect("string"));
        out.push('\n');
    }
    out
}

fn alignment_csv(rows: &[AlignmentRow]) -> String {
    let mut out = "feature,trigger_layer,target_layer,tokens,cosine,strength,trigger_share,target_share\n".to_owned();
    for r in rows {
        let (f, l, m, n) = (r.feature, r.trigger_layer, r.target_layer, r.tokens);
        writeln!(out, "{f},{l},{m},{n},{:.6},{:.6},{:.6},{:.6}", r.cosine, r.strength, r.trigger_share, r.target_share).expect("string");
    }
    out
}

/// A few lines for the terminal: bands and the alignment across layers (k ≥ 1).
pub fn format_mlsae(a: &MlsaeAnalysis) -> String {
    let layers = a.banding.first().map_or(0, |r| r.encoder_share.len());
    let mut out = format!("{} of {} features fire on {} tokens ({} windows)\n", a.live, a.features, a.tokens, a.windows);
    let live = || a.banding.iter().filter(|r| r.activity > 0.0);
    for l in 0..layers {
        let (enc, dec) = (live().filter(|r| r.band.encoder_layer == l).count(), live().filter(|r| r.band.decoder_layer == l).count());
        let _ = writeln!(out, "band L{l}: {enc} live features read mostly here, {dec} write mostly here");
    }
    let _ = writeln!(out, "{:>7}  {:>9}  {:>6}  {:>6}  {:>8}  {:>15}", "feature", "layers", "tokens", "cosine", "strength", "decoder shares");
    for r in a.alignment.iter().filter(|r| r.target_layer > r.trigger_layer) {
        let pair = format!("L{}→L{}", r.trigger_layer, r.target_layer);
        let shares = format!("{:.0}% → {:.0}%", 100.0 * r.trigger_share, 100.0 * r.target_share);
        let _ = writeln!(out, "{:>7}  {pair:>9}  {:>6}  {:>6.3}  {:>8.3}  {shares:>15}", r.feature, r.tokens, r.cosine, r.strength);
    }
    out
}
