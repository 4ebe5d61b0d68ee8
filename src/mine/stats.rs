//! Per-feature statistics and example windows (DESIGN §4): density, mean, max, log-binned
//! histogram, top-k windows, examples from each activation quantile, random non-firing windows.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::mine::topk::{top_k, Peak};
use crate::mine::{FeatureActivations, SparseActivations};

/// Settings of the mine stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MineConfig {
    pub seed: u64,
    /// Top windows per feature.
    pub top_k: usize,
    /// Steps of context each side of a window's peak.
    pub radius: u32,
    /// Activation quantile ranges examples are drawn from (DESIGN: 10).
    pub n_quantiles: usize,
    pub examples_per_quantile: usize,
    pub n_non_firing: usize,
    /// Histogram bins, evenly spaced in log10(activation).
    pub histogram_bins: usize,
}

impl Default for MineConfig {
    fn default() -> Self {
        MineConfig { seed: 0, top_k: 20, radius: 32, n_quantiles: 10, examples_per_quantile: 2, n_non_firing: 5, histogram_bins: 32 }
    }
}

/// Why a window was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// Among the top k; `rank` 0 is the highest.
    Top,
    /// Drawn from activation quantile range `rank` (0 = lowest tenth of firing values).
    Quantile,
    /// A random step where the feature does not fire.
    NonFiring,
}

/// A window of `radius` steps each side of a peak step, clipped to the cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    pub kind: WindowKind,
    pub rank: usize,
    pub cell: usize,
    pub peak_row: u32,
    pub start_row: u32,
    /// Exclusive.
    pub end_row: u32,
    pub value: f32,
}

/// Statistics of one feature.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinedFeature {
    pub layer: u32,
    pub feature: u32,
    /// Share of steps where it fires.
    pub density: f64,
    /// Mean activation over all steps (zeros included).
    pub mean: f64,
    /// Mean activation over firing steps.
    pub mean_firing: f64,
    pub max: f32,
    /// Edges of the log-spaced histogram of firing activations (bins + 1).
    pub histogram_edges: Vec<f32>,
    pub histogram_counts: Vec<u64>,
    pub windows: Vec<Window>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinedFeatures {
    pub cell_ids: Vec<String>,
    pub features: Vec<MinedFeature>,
}

/// Mines every feature, in parallel, deterministically from the seed.
pub fn mine(acts: &SparseActivations, cfg: &MineConfig) -> MinedFeatures {
    let bar = crate::progress::bar(acts.features.len() as u64, "mine", "features");
    let features = acts
        .features
        .par_iter()
        .enumerate()
        .map(|(i, f)| {
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(i as u64));
            let mined = mine_one(f, &acts.cell_rows, cfg, &mut rng);
            bar.inc(1);
            mined
        })
        .collect();
    bar.finish_and_clear();
    MinedFeatures { cell_ids: acts.cell_ids.clone(), features }
}

fn mine_one(f: &FeatureActivations, cell_rows: &[usize], cfg: &MineConfig, rng: &mut ChaCha8Rng) -> MinedFeature {
    let steps: usize = cell_rows.iter().sum();
    let sum: f64 = f.values.iter().map(|&v| v as f64).sum();
    let max = f.values.iter().copied().fold(0.0f32, f32::max);
    let (histogram_edges, histogram_counts) = log_histogram(&f.values, cfg.histogram_bins);
    let window = |kind, rank, p: Peak| make_window(kind, rank, p, cell_rows[p.cell], cfg.radius);
    let mut windows: Vec<Window> = top_k(f, cfg.top_k, cfg.radius).into_iter().enumerate().map(|(r, p)| window(WindowKind::Top, r, p)).collect();
    windows.extend(quantile_examples(f, cfg, rng).into_iter().map(|(q, p)| window(WindowKind::Quantile, q, p)));
    windows.extend(non_firing(f, cell_rows, cfg.n_non_firing, rng).into_iter().enumerate().map(|(r, p)| window(WindowKind::NonFiring, r, p)));
    MinedFeature {
        layer: f.layer,
        feature: f.feature,
        density: f.nnz() as f64 / steps.max(1) as f64,
        mean: sum / steps.max(1) as f64,
        mean_firing: if f.nnz() > 0 { sum / f.nnz() as f64 } else { 0.0 },
        max,
        histogram_edges,
        histogram_counts,
        windows,
    }
}

fn make_window(kind: WindowKind, rank: usize, p: Peak, cell_len: usize, radius: u32) -> Window {
    Window {
        kind,
        rank,
        cell: p.cell,
        peak_row: p.row,
        start_row: p.row.saturating_sub(radius),
        end_row: (p.row + radius + 1).min(cell_len as u32),
        value: p.value,
    }
}

/// Histogram with bins evenly spaced in log10 between the smallest and largest firing value:
/// activations span decades, and a linear histogram would put nearly all in the first bin.
pub fn log_histogram(values: &[f32], bins: usize) -> (Vec<f32>, Vec<u64>) {
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = values.iter().copied().fold(0.0f32, f32::max);
    if values.is_empty() || bins == 0 {
        return (Vec::new(), Vec::new());
    }
    let (llo, lhi) = (lo.log10(), hi.log10().max(lo.log10() + 1e-6));
    let edges: Vec<f32> = (0..=bins).map(|i| 10f32.powf(llo + (lhi - llo) * i as f32 / bins as f32)).collect();
    let mut counts = vec![0u64; bins];
    for &v in values {
        let b = (((v.log10() - llo) / (lhi - llo)) * bins as f32) as usize;
        counts[b.min(bins - 1)] += 1;
    }
    (edges, counts)
}

/// `examples_per_quantile` random firing steps from each of `n_quantiles` equal-count ranges of
/// the sorted firing activations.
fn quantile_examples(f: &FeatureActivations, cfg: &MineConfig, rng: &mut ChaCha8Rng) -> Vec<(usize, Peak)> {
    let mut peaks: Vec<Peak> = f.entries().map(|(cell, row, value)| Peak { cell, row, value }).collect();
    if peaks.is_empty() {
        return Vec::new();
    }
    peaks.sort_by(|a, b| a.value.total_cmp(&b.value).then(a.cell.cmp(&b.cell)).then(a.row.cmp(&b.row)));
    let n = peaks.len();
    let mut out = Vec::new();
    for q in 0..cfg.n_quantiles {
        let (lo, hi) = (q * n / cfg.n_quantiles, (q + 1) * n / cfg.n_quantiles);
        if hi > lo {
            out.extend((0..cfg.examples_per_quantile).map(|_| (q, peaks[rng.random_range(lo..hi)])));
        }
    }
    out
}

/// Random steps where the feature is silent (activation 0), as contrast examples.
fn non_firing(f: &FeatureActivations, cell_rows: &[usize], n: usize, rng: &mut ChaCha8Rng) -> Vec<Peak> {
    let total: usize = cell_rows.iter().sum();
    if total == f.nnz() {
        return Vec::new();
    }
    let mut out = Vec::new();
    // Rejection sampling; bounded tries keep dense features from looping for long.
    for _ in 0..n * 50 {
        if out.len() == n {
            break;
        }
        let mut step = rng.random_range(0..total);
        let cell = cell_rows.iter().position(|&len| if step < len { true } else { step -= len; false }).expect("step < total");
        let row = step as u32;
        if f.cell(cell).0.binary_search(&row).is_err() {
            out.push(Peak { cell, row, value: 0.0 });
        }
    }
    out
}
