//! Per-feature statistics and example windows (DESIGN §4): density, mean, max, log-binned
//! histogram, top-k windows, examples from each activation decile, random non-firing windows.
//!
//! Out of core: two passes over the record, one cell at a time.
//! 1. count, sum, min, max, a fine log histogram on a fixed grid, and the top-k windows;
//! 2. the card's histogram (between min and max), decile examples (decile boundaries read off
//!    pass 1's fine histogram) and non-firing windows.
//!
//! Memory is one cell's activations plus O(k + bins) per feature, whatever the number of cells;
//! time is linear in the firing steps.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::mine::topk::{Peak, TopK, TopLimits};
use crate::mine::SparseActivations;
use crate::record::{CellActivations, Firing, RecordDir};
use crate::label::covariates::Covariate;
use crate::model::DeviceChoice;
use crate::{Error, Result};

/// Settings of the mine stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MineConfig {
    pub seed: u64,
    /// Top windows per feature.
    pub top_k: usize,
    /// Top windows from one cell at most (and never two from one cycle), so the examples show
    /// distinct events rather than one step seen again.
    pub max_windows_per_cell: usize,
    /// Steps of context each side of a window's peak.
    pub radius: u32,
    /// Activation quantile ranges examples are drawn from (DESIGN: 10).
    pub n_quantiles: usize,
    /// Examples per quantile range, each from a different cell.
    pub examples_per_quantile: usize,
    pub n_non_firing: usize,
    /// Histogram bins, evenly spaced in log10(activation).
    pub histogram_bins: usize,
    /// Top windows whose ablation gives the feature's output effect (`mine::effect`); 0 skips it.
    pub effect_windows: usize,
    /// Output effects only for this many live features, the ones `[label] sample` draws with
    /// the same seed (a pipeline sets it from there): the effects are the pages' and cost the
    /// model twice per window, hours over a large dictionary's every feature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect_sample: Option<usize>,
    /// Where the model and the transcoder's encoder run for the output effects (the sparse
    /// decoding stays on the CPU).
    #[serde(skip_serializing_if = "DeviceChoice::is_cpu")]
    pub device: DeviceChoice,
}

impl Default for MineConfig {
    fn default() -> Self {
        MineConfig {
            seed: 0,
            top_k: 20,
            max_windows_per_cell: 2,
            radius: 32,
            n_quantiles: 10,
            examples_per_quantile: 2,
            n_non_firing: 5,
            histogram_bins: 32,
            effect_windows: 4,
            effect_sample: None,
            device: DeviceChoice::Cpu,
        }
    }
}

impl MineConfig {
    fn check(&self) -> Result<()> {
        if self.max_windows_per_cell == 0 || !(1..=u16::MAX as usize).contains(&self.n_quantiles) {
            return Err(Error::Config("mine: max_windows_per_cell and n_quantiles must be positive".to_owned()));
        }
        Ok(())
    }

    fn limits(&self) -> TopLimits {
        TopLimits { k: self.top_k, radius: self.radius, per_cell: self.max_windows_per_cell }
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
    /// Change in the predicted next voltage (mV, ablated − intact), mean over the top windows'
    /// peak steps (`mine::effect`); None where it was not computed.
    #[serde(default)]
    pub output_effect_mv: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinedFeatures {
    pub cell_ids: Vec<String>,
    pub features: Vec<MinedFeature>,
}

/// Recorded activations read a cell at a time, as often as needed (mining reads them twice).
pub trait CellSource {
    fn cell_ids(&self) -> &[String];
    /// Rows per cell.
    fn cell_rows(&self) -> &[usize];
    /// Calls `visit` with each cell's activations and cycle number per row (None: unknown), in
    /// record order.
    fn for_each_cell(&self, visit: &mut dyn FnMut(&CellActivations, Option<&[f32]>) -> Result<()>) -> Result<()>;
}

impl CellSource for RecordDir {
    fn cell_ids(&self) -> &[String] {
        &self.summary.cell_ids
    }

    fn cell_rows(&self) -> &[usize] {
        &self.summary.cell_rows
    }

    fn for_each_cell(&self, visit: &mut dyn FnMut(&CellActivations, Option<&[f32]>) -> Result<()>) -> Result<()> {
        for cell in self.cells(&[Covariate::CycleNumber])? {
            let cell = cell?;
            visit(&cell.activations, cell.covariates.column(Covariate::CycleNumber))?;
        }
        Ok(())
    }
}

/// Activations held in memory, with each cell's cycle number per row where known.
pub struct InMemory<'a> {
    pub acts: &'a SparseActivations,
    pub cycles: Option<&'a [Vec<f32>]>,
}

impl CellSource for InMemory<'_> {
    fn cell_ids(&self) -> &[String] {
        &self.acts.cell_ids
    }

    fn cell_rows(&self) -> &[usize] {
        &self.acts.cell_rows
    }

    fn for_each_cell(&self, visit: &mut dyn FnMut(&CellActivations, Option<&[f32]>) -> Result<()>) -> Result<()> {
        let acts = self.acts;
        for c in 0..acts.cell_ids.len() {
            let mut cell = CellActivations { cell: c, cell_id: acts.cell_ids[c].clone(), rows: acts.cell_rows[c], firing: Vec::new() };
            for f in &acts.features {
                let (rows, values) = f.cell(c);
                cell.firing.extend(rows.iter().zip(values).map(|(&row, &value)| Firing { layer: f.layer, feature: f.feature, row, value }));
            }
            cell.firing.sort_unstable_by_key(|f| (f.layer, f.feature, f.row));
            visit(&cell, self.cycles.map(|cycles| cycles[c].as_slice()))?;
        }
        Ok(())
    }
}

/// Mines activations held in memory (no cycle numbers: top windows are then only kept apart
/// by cell and overlap).
pub fn mine(acts: &SparseActivations, cfg: &MineConfig) -> MinedFeatures {
    mine_cells(&InMemory { acts, cycles: None }, cfg).expect("in-memory activations read without error")
}

/// Mines every feature of `source`, deterministically from the seed whatever the thread count.
pub fn mine_cells(source: &dyn CellSource, cfg: &MineConfig) -> Result<MinedFeatures> {
    cfg.check()?;
    let cells = source.cell_ids().len() as u64;
    let bar = crate::progress::bar(2 * cells, "mine", "cells");
    let mut first: BTreeMap<(u32, u32), FirstPass> = BTreeMap::new();
    source.for_each_cell(&mut |cell, cycles| {
        let groups: Vec<_> = cell.features().collect();
        for (key, _) in &groups {
            first.entry(*key).or_insert_with(FirstPass::new);
        }
        pair(&mut first, &groups).into_par_iter().for_each(|(state, firing)| state.add(cell.cell, firing, cycles, cfg.limits()));
        bar.inc(1);
        Ok(())
    })?;
    let total_steps: usize = source.cell_rows().iter().sum();
    let mut second: BTreeMap<(u32, u32), SecondPass> = first
        .iter()
        .enumerate()
        .map(|(i, (&key, f))| (key, SecondPass::new(i as u64, key, f, source.cell_rows(), total_steps, cfg)))
        .collect();
    source.for_each_cell(&mut |cell, _| {
        let groups: Vec<_> = cell.features().collect();
        pair(&mut second, &groups).into_par_iter().for_each(|(state, firing)| state.add(cell.cell, firing, cfg.seed));
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();
    let features = first
        .into_iter()
        .zip(second.into_values())
        .map(|(((layer, feature), f), s)| finish(layer, feature, f, s, source.cell_rows(), total_steps, cfg))
        .collect();
    Ok(MinedFeatures { cell_ids: source.cell_ids().to_vec(), features })
}

/// Each feature state with its firing steps in this cell; `groups` is in key order.
fn pair<'s, 'g, S>(states: &'s mut BTreeMap<(u32, u32), S>, groups: &[((u32, u32), &'g [Firing])]) -> Vec<(&'s mut S, &'g [Firing])> {
    let mut groups = groups.iter().peekable();
    states.iter_mut().filter_map(|(key, state)| groups.next_if(|(k, _)| k == key).map(|&(_, firing)| (state, firing))).collect()
}

/// Bins evenly spaced in log10 between two positive values.
#[derive(Debug, Clone, Copy)]
struct LogBins {
    log_lo: f32,
    log_hi: f32,
    bins: usize,
}

impl LogBins {
    fn new(lo: f32, hi: f32, bins: usize) -> LogBins {
        let log_lo = lo.log10();
        LogBins { log_lo, log_hi: hi.log10().max(log_lo + 1e-6), bins }
    }

    /// The bin of `v`; values outside the range fall in the end bins.
    fn bin(&self, v: f32) -> usize {
        // `as usize` saturates, so values below the range land in bin 0.
        (((v.log10() - self.log_lo) / (self.log_hi - self.log_lo) * self.bins as f32) as usize).min(self.bins - 1)
    }

    fn edges(&self) -> Vec<f32> {
        (0..=self.bins).map(|i| 10f32.powf(self.log_lo + (self.log_hi - self.log_lo) * i as f32 / self.bins as f32)).collect()
    }
}

/// The fixed grid the decile boundaries are read from: 100 bins a decade (2.3 % wide) from 1e-6
/// to 1e6, so it needs no first look at the data.
const FINE: LogBins = LogBins { log_lo: -6.0, log_hi: 6.0, bins: 1200 };

/// What the first pass keeps of one feature.
struct FirstPass {
    count: u64,
    sum: f64,
    min: f32,
    max: f32,
    fine: Vec<u64>,
    top: TopK,
}

impl FirstPass {
    fn new() -> FirstPass {
        FirstPass { count: 0, sum: 0.0, min: f32::INFINITY, max: 0.0, fine: vec![0; FINE.bins], top: TopK::default() }
    }

    fn add(&mut self, cell: usize, firing: &[Firing], cycles: Option<&[f32]>, lim: TopLimits) {
        for f in firing {
            self.count += 1;
            self.sum += f.value as f64;
            self.min = self.min.min(f.value);
            self.max = self.max.max(f.value);
            self.fine[FINE.bin(f.value)] += 1;
        }
        let rows: Vec<u32> = firing.iter().map(|f| f.row).collect();
        let values: Vec<f32> = firing.iter().map(|f| f.value).collect();
        self.top.add_cell(cell, &rows, &values, cycles, lim);
    }
}

/// What the second pass keeps of one feature.
struct SecondPass {
    layer: u32,
    feature: u32,
    histogram: LogBins,
    counts: Vec<u64>,
    /// Decile of each fine bin.
    decile_of: Vec<u16>,
    /// Per decile, the lowest-priority example of each of at most `examples_per_quantile` cells.
    samples: Vec<Vec<(u64, Peak)>>,
    examples_per_quantile: usize,
    /// Random steps to try as non-firing examples, in draw order, and whether each is silent.
    tries: Vec<(usize, u32)>,
    silent: Vec<bool>,
}

impl SecondPass {
    fn new(ordinal: u64, (layer, feature): (u32, u32), f: &FirstPass, cell_rows: &[usize], total_steps: usize, cfg: &MineConfig) -> SecondPass {
        let histogram = LogBins::new(f.min, f.max, cfg.histogram_bins.max(1));
        // A fine bin belongs to the decile its first entry's rank falls in; a bin holding more
        // than a tenth of the entries (ties) leaves a decile without examples.
        let mut below = 0;
        let decile_of = f
            .fine
            .iter()
            .map(|&n| {
                let d = ((below as u128 * cfg.n_quantiles as u128) / f.count as u128) as u16;
                below += n;
                d
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(ordinal));
        // Rejection sampling with bounded tries keeps a dense feature from looping for long.
        let tries: Vec<(usize, u32)> = if total_steps as u64 > f.count {
            (0..cfg.n_non_firing * 50).map(|_| locate(rng.random_range(0..total_steps), cell_rows)).collect()
        } else {
            Vec::new()
        };
        SecondPass {
            layer,
            feature,
            histogram,
            counts: vec![0; histogram.bins],
            decile_of,
            samples: vec![Vec::new(); cfg.n_quantiles],
            examples_per_quantile: cfg.examples_per_quantile,
            silent: vec![true; tries.len()],
            tries,
        }
    }

    fn add(&mut self, cell: usize, firing: &[Firing], seed: u64) {
        // This cell's lowest-priority firing step in each decile: one example per cell at most.
        let mut best: Vec<Option<(u64, Peak)>> = vec![None; self.samples.len()];
        for f in firing {
            self.counts[self.histogram.bin(f.value)] += 1;
            let d = self.decile_of[FINE.bin(f.value)] as usize;
            let p = priority(seed, self.layer, self.feature, cell, f.row);
            if best[d].is_none_or(|(q, _)| p < q) {
                best[d] = Some((p, Peak { cell, row: f.row, value: f.value }));
            }
        }
        for (samples, best) in self.samples.iter_mut().zip(best) {
            if let Some(b) = best {
                let at = samples.partition_point(|s| s.0 < b.0);
                samples.insert(at, b);
                samples.truncate(self.examples_per_quantile);
            }
        }
        for (t, &(c, row)) in self.tries.iter().enumerate() {
            if c == cell && firing.binary_search_by_key(&row, |f| f.row).is_ok() {
                self.silent[t] = false;
            }
        }
    }
}

/// The cell and row of the `step`-th step of the dataset.
fn locate(mut step: usize, cell_rows: &[usize]) -> (usize, u32) {
    for (cell, &rows) in cell_rows.iter().enumerate() {
        if step < rows {
            return (cell, step as u32);
        }
        step -= rows;
    }
    unreachable!("step < total steps")
}

/// A random priority per firing step, fixed by the seed and the step alone (splitmix64), so the
/// sample does not depend on the order cells are read in.
fn priority(seed: u64, layer: u32, feature: u32, cell: usize, row: u32) -> u64 {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    [layer as u64, feature as u64, cell as u64, row as u64].into_iter().fold(mix(seed), |h, w| mix(h ^ w))
}

fn finish(layer: u32, feature: u32, f: FirstPass, s: SecondPass, cell_rows: &[usize], total_steps: usize, cfg: &MineConfig) -> MinedFeature {
    let window = |kind, rank, p: Peak| make_window(kind, rank, p, cell_rows[p.cell], cfg.radius);
    let mut windows: Vec<Window> = f.top.peaks.iter().enumerate().map(|(r, &p)| window(WindowKind::Top, r, p)).collect();
    for (q, samples) in s.samples.iter().enumerate() {
        windows.extend(samples.iter().map(|&(_, p)| window(WindowKind::Quantile, q, p)));
    }
    let silent = s.tries.iter().zip(&s.silent).filter(|(_, &silent)| silent).take(cfg.n_non_firing);
    windows.extend(silent.enumerate().map(|(r, (&(cell, row), _))| window(WindowKind::NonFiring, r, Peak { cell, row, value: 0.0 })));
    let steps = total_steps.max(1) as f64;
    MinedFeature {
        layer,
        feature,
        density: f.count as f64 / steps,
        mean: f.sum / steps,
        mean_firing: if f.count > 0 { f.sum / f.count as f64 } else { 0.0 },
        max: f.max,
        histogram_edges: if cfg.histogram_bins > 0 { s.histogram.edges() } else { Vec::new() },
        histogram_counts: if cfg.histogram_bins > 0 { s.counts } else { Vec::new() },
        windows,
        output_effect_mv: None,
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
