//! Label stage (DESIGN §5): explain each transcoder feature by a statistic of the covariates,
//! scored on held-out cells, tested against a circular-shift null, corrected for multiple
//! testing, and checked for stability; otherwise call it "unexplained".
//!
//! Flow: [`covariates`] per step → coded into bins fitted on the explain cells
//! ([`candidates::CodedSteps`]) → per feature, in parallel: search on explain cells, score the
//! top three and the raw-V/I baseline on test cells, null by shifting, bootstrap stability →
//! Benjamini–Hochberg across all features × tested candidates → acceptance and sentence.

pub mod candidates;
pub mod check;
pub mod covariates;
pub mod fdr;
pub mod metadata;
pub mod null;
pub mod present;
pub mod scoring;
pub mod sentence;
pub mod siblings;
pub mod source;
pub mod stage;
pub mod stability;
pub mod tables;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::cells::CellInfo;
use crate::mine::FeatureActivations;
use source::ActivationSource;
use crate::{Error, Result};
use candidates::{search, Candidate, CodedSteps, Score, Scored, SearchSettings, Testable, Validation, Weighting};
use covariates::{Covariate, Covariates};
use scoring::{bin_stats_one, graded_auroc, r_squared, rank, score_detector, within_cell_spearman, Firing, Ranked, TrackerScale};

/// Settings of the label stage; defaults are DESIGN §5's thresholds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelConfig {
    pub seed: u64,
    /// Share of cells (per protocol) used to search candidates; the rest score them (step 1).
    pub explain_fraction: f64,
    /// Circular shifts per tested candidate (step 4).
    pub n_shifts: usize,
    /// Shifts drawn for a label whose q lands within a factor of ten of `max_q` while it
    /// passes every other test: `n_shifts` cannot resolve p below 1/(n+1), and the tail fit
    /// alone decides those labels; more draws decide them on evidence.
    pub max_shifts: usize,
    /// Bootstrap resamples of the explain cells for stability (step 4).
    pub n_bootstrap: usize,
    /// Acceptance (step 5): held-out AUROC of a detector…
    pub min_auroc: f64,
    /// …or held-out |Spearman| of a tracker…
    pub min_spearman: f64,
    /// …with BH q below this…
    pub max_q: f64,
    /// …stability at least this…
    pub min_stability: f64,
    /// …on at least this many firing steps of the test cells it is scored on: an AUROC over a
    /// handful of steps (one window of one cell) tests nothing.
    pub min_test_firing: u64,
    /// A resample still backs the label when its strength there is within this of the resample's
    /// winner (strength units: 1 = the acceptance threshold); near-equivalent wordings
    /// (c_rate vs current, soc vs voltage) otherwise swap the win at random.
    pub stability_tie: f64,
    /// Take the soc covariate from this ground-truth column (e.g. `gt_soc` of simulated cells)
    /// instead of the SOC derived by coulomb counting: labelling twice shows how far labels
    /// built on derived SOC hold up.
    pub soc_column: Option<String>,
    /// Candidates reported per feature (the label and its runners-up).
    pub n_candidates: usize,
    /// Seed atoms of the conjunction search: this many by F1 and this many by AUROC.
    pub conjunction_seeds: usize,
    /// F1 gain a conjunction needs over its seed atom.
    pub min_conjunction_gain: f64,
    /// Label this many of the live features, drawn by the seed from each layer in proportion to
    /// its live features, instead of every one: a dictionary of 24 layers × 8,192 features
    /// takes days to label whole (seconds a feature), while a sample of a thousand estimates
    /// its coverage per layer in minutes. A sampled feature's candidates are searched and scored
    /// with the seed it has in a whole run; what weighs features together (BH's q, the
    /// refinement of a sentence several features share) weighs the sample's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<usize>,
}

impl Default for LabelConfig {
    fn default() -> Self {
        LabelConfig {
            seed: 0,
            explain_fraction: 0.6,
            n_shifts: 100,
            max_shifts: 2000,
            n_bootstrap: 20,
            min_auroc: 0.85,
            min_spearman: 0.6,
            max_q: 0.01,
            min_stability: 0.8,
            min_test_firing: 20,
            stability_tie: 0.05,
            soc_column: None,
            n_candidates: 3,
            conjunction_seeds: 3,
            min_conjunction_gain: 0.02,
            sample: None,
        }
    }
}

impl LabelConfig {
    /// Refuses settings that cannot label anything, before any input is read.
    pub fn check(&self) -> Result<()> {
        if self.sample == Some(0) {
            return Err(Error::Config("label: sample = 0 labels no feature; leave it out to label every live feature".into()));
        }
        Ok(())
    }

    fn search_settings(&self) -> SearchSettings {
        SearchSettings {
            min_auroc: self.min_auroc,
            min_spearman: self.min_spearman,
            conjunction_seeds: self.conjunction_seeds,
            min_conjunction_gain: self.min_conjunction_gain,
            keep: self.n_candidates,
        }
    }
}

/// One candidate of a feature with every score.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CandidateResult {
    pub candidate: Candidate,
    pub sentence: String,
    /// Scores on the explain cells, where it was found.
    pub explain: Score,
    /// Scores on the held-out test cells.
    pub test: Score,
    /// Where some test cells lack covariates of the candidate (`present`): those covariates and
    /// the scores on the test cells that have them. The strength is the lower of the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_present: Option<(Vec<Covariate>, Score)>,
    /// Firing steps on the test cells it is scored on (those that have its covariates where
    /// `within_present` is set); `None` in a labels file older than the count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_firing: Option<u64>,
    /// Explain minus test strength (large = overfitted to the explain cells).
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub gap: f64,
    /// Held-out strength: AUROC or Spearman over its acceptance threshold (≥ 1 passes).
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub strength: f64,
    /// p of the held-out score against the circular-shift null: empirical where ten or more
    /// shifts reach it, else from a generalized Pareto tail fit (`null::p_values`).
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub p_value: f64,
    /// Empirical p, (1 + #null ≥ observed) / (1 + shifts).
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub p_empirical: f64,
    /// Benjamini–Hochberg q across all features × tested candidates.
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub q_value: f64,
    /// A tracker's fitted activation per code of its covariate (empty for detectors), so
    /// `label --check` can score its R² on other cells.
    #[serde(default)]
    pub g: Vec<f64>,
}

/// The outcome for one feature.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureLabel {
    pub layer: u32,
    pub feature: u32,
    /// Share of steps where the feature fires.
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub density: f64,
    /// Share of the held-out test cells' steps where it fires; 0 = no label can be tested.
    #[serde(default = "crate::json::nan", deserialize_with = "crate::json::f64_or_nan")]
    pub test_density: f64,
    pub accepted: bool,
    /// The sentence when accepted, else "unexplained: <reason> (closest: …)".
    pub label: String,
    /// Best candidates on the explain cells, best first (the first is the label when accepted).
    pub candidates: Vec<CandidateResult>,
    /// Best candidate built only on raw voltage and current, scored the same way.
    pub baseline: Option<CandidateResult>,
    /// Share of bootstrap resamples whose winner is the same label as the first candidate.
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub stability: f64,
    pub beats_baseline: bool,
    /// How well the label ranks this feature's firing above that of the other accepted features
    /// that ended with the same sentence, on the test cells (NaN without such siblings).
    #[serde(default = "crate::json::nan", deserialize_with = "crate::json::f64_or_nan")]
    pub sibling_auroc: f64,
    /// Other accepted features with the same sentence.
    #[serde(default)]
    pub siblings: u32,
}

impl FeatureLabel {
    /// Whether it fires on the held-out cells at all (a labels file older than `test_density`
    /// says nothing, and counts as testable).
    pub fn testable(&self) -> bool {
        self.test_density != 0.0
    }
}

/// Labels every feature. `covariates` and `cells` follow the cells of `acts` in order.
pub fn label_features(acts: &dyn ActivationSource, covariates: &[Covariates], cells: &[CellInfo], cfg: &LabelConfig) -> Result<Vec<FeatureLabel>> {
    label_features_with_codings(acts, covariates.to_vec(), cells, cfg).map(|(labels, _)| labels)
}

/// [`label_features`], also returning the codings (bins, categories) the labels' bounds refer
/// to. The covariates are dropped once coded (a byte per covariate and step instead of four).
/// Features are labelled a chunk at a time ([`ActivationSource::chunk_entries`]); each keeps
/// the seed of its place among all features, so chunking changes no label.
pub fn label_features_with_codings(acts: &dyn ActivationSource, covariates: Vec<Covariates>, cells: &[CellInfo], cfg: &LabelConfig) -> Result<(Vec<FeatureLabel>, Vec<candidates::Coding>)> {
    check_inputs(acts.cell_rows(), &covariates, cells)?;
    cfg.check()?;
    let split = split_halves(cells, cfg);
    let explain: Vec<bool> = split.iter().map(|&h| h != Half::Test).collect();
    let coded = CodedSteps::new(&covariates, &explain);
    drop(covariates);
    let halves = Halves::new(&coded, &split, cfg);
    let counts = acts.counts()?;
    // Each feature keeps the seed of its place among all live ones, sampled or not.
    let picked: Vec<usize> = match cfg.sample {
        Some(n) => sample_by_layer(&counts.iter().map(|c| c.layer).collect::<Vec<_>>(), n, cfg.seed),
        None => (0..counts.len()).collect(),
    };
    let keys: Vec<(u32, u32)> = picked.iter().map(|&i| (counts[i].layer, counts[i].feature)).collect();
    let bar = crate::progress::bar(keys.len() as u64, "label", "features");
    let mut labels: Vec<FeatureLabel> = Vec::with_capacity(keys.len());
    for chunk in source::chunks(picked.iter().map(|&i| counts[i].total()), acts.chunk_entries()) {
        let features = acts.load(&keys[chunk.clone()])?;
        labels.par_extend(features.par_iter().zip(&picked[chunk]).map(|(f, &i)| {
            let label = label_one(f, &coded, &halves, cfg, cfg.seed.wrapping_add(i as u64));
            bar.inc(1);
            label
        }));
    }
    bar.finish_and_clear();
    apply_fdr(&mut labels);
    resolve_borderline(&mut labels, acts, &coded, &halves, cfg)?;
    apply_fdr(&mut labels);
    for l in &mut labels {
        decide(l, cfg);
    }
    // Refined labels are new tests: BH and the acceptance rule run again over every candidate.
    // A group split by one term can leave smaller groups that another term splits (up to
    // `siblings::MAX_TERMS` terms a label).
    for _ in 0..siblings::MAX_TERMS - 1 {
        let refined = separate_siblings(&mut labels, acts, &coded, &halves, cfg)?;
        apply_fdr(&mut labels);
        // A refinement whose q fails where the label it refines passed would cost the feature its
        // label: it is taken back (dropping a test only lowers the others' q).
        let failed: Vec<(usize, f64)> = refined.into_iter().filter(|&(i, _)| !(labels[i].candidates[0].q_value < cfg.max_q) && labels[i].candidates[1].q_value < cfg.max_q).collect();
        for &(i, sibling_auroc) in &failed {
            labels[i].candidates.remove(0);
            labels[i].sibling_auroc = sibling_auroc;
        }
        if !failed.is_empty() {
            apply_fdr(&mut labels);
        }
        for l in &mut labels {
            decide(l, cfg);
        }
    }
    count_siblings(&mut labels);
    Ok((labels, coded.codings))
}

/// Indices (ascending) of `n` of the live features whose layers are `feature_layers` (in
/// (layer, feature) order), drawn by `seed`: each layer gets its share of `n` by its live
/// features (largest remainders round), so that every layer's coverage can be read off the
/// sample. The label stage's sample, which mine's output effects follow.
pub(crate) fn sample_by_layer(feature_layers: &[u32], n: usize, seed: u64) -> Vec<usize> {
    let live = feature_layers.len();
    if n >= live {
        return (0..live).collect();
    }
    let mut layers: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, &layer) in feature_layers.iter().enumerate() {
        match layers.last_mut() {
            Some(r) if feature_layers[r.start] == layer => r.end = i + 1,
            _ => layers.push(i..i + 1),
        }
    }
    let exact: Vec<f64> = layers.iter().map(|r| n as f64 * r.len() as f64 / live as f64).collect();
    let mut quota: Vec<usize> = exact.iter().map(|q| q.floor() as usize).collect();
    let mut by_remainder: Vec<usize> = (0..layers.len()).collect();
    by_remainder.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    for &l in by_remainder.iter().take(n - quota.iter().sum::<usize>()) {
        quota[l] += 1;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut picked = Vec::with_capacity(n);
    for (layer, q) in layers.into_iter().zip(quota) {
        let mut members: Vec<usize> = layer.collect();
        members.shuffle(&mut rng);
        picked.extend_from_slice(&members[..q]);
    }
    picked.sort_unstable();
    picked
}

/// The activations of the features of `labels` at `indices` (ascending), in that order: labels
/// are in (layer, feature) order, so their keys ascend as the source wants them.
fn load_labelled(acts: &dyn ActivationSource, labels: &[FeatureLabel], indices: &[usize]) -> Result<Vec<FeatureActivations>> {
    let keys: Vec<(u32, u32)> = indices.iter().map(|&i| (labels[i].layer, labels[i].feature)).collect();
    acts.load(&keys)
}

fn check_inputs(cell_rows: &[usize], covariates: &[Covariates], cells: &[CellInfo]) -> Result<()> {
    if covariates.len() != cell_rows.len() || cells.len() != cell_rows.len() {
        return Err(Error::Config(format!(
            "label: {} cells of activations but {} of covariates and {} in the cells table",
            cell_rows.len(),
            covariates.len(),
            cells.len()
        )));
    }
    for (c, cov) in covariates.iter().enumerate() {
        if cov.len() != cell_rows[c] {
            return Err(Error::Config(format!("label: cell {} has {} steps of covariates but {} of activations", cov.cell_id, cov.len(), cell_rows[c])));
        }
    }
    Ok(())
}

/// Explain/test split by cell (step 1), stratified by protocol so each protocol with two or
/// more cells lands in both halves; the cells of one-cell protocols are split as one group
/// (real cycler files name a program per file: kept on one side, they left the test cells to
/// the few protocols that had two). When that leaves a half empty, a plain split of all
/// cells. Of `SPLIT_DRAWS` such splits the one whose halves share the cells' ambient
/// temperatures most evenly is kept: a feature of cold cells cannot be found on explain cells
/// that hold none, nor tested on test cells that hold none (one draw put every 10 °C cell of a
/// set's explain part into its check cells). Deterministic from the seed.
pub fn split_cells(cells: &[CellInfo], explain_fraction: f64, seed: u64) -> Vec<bool> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let draws = (0..SPLIT_DRAWS).map(|_| split_by_protocol(cells, explain_fraction, &mut rng));
    // Of equally even draws, the first (`min_by_key` keeps the first minimum).
    draws.min_by_key(|explain| temperature_imbalance(cells, explain, explain_fraction)).expect("draws")
}

/// How many protocol-stratified splits `split_cells` chooses among.
const SPLIT_DRAWS: usize = 64;

fn split_by_protocol(cells: &[CellInfo], explain_fraction: f64, rng: &mut ChaCha8Rng) -> Vec<bool> {
    let mut protocols: Vec<Option<String>> = cells.iter().map(|c| c.protocol.clone()).collect();
    protocols.sort();
    protocols.dedup();
    let mut explain = vec![false; cells.len()];
    let mut singletons = Vec::new();
    for p in protocols {
        let members: Vec<usize> = (0..cells.len()).filter(|&c| cells[c].protocol == p).collect();
        if members.len() == 1 {
            singletons.extend(members);
        } else {
            assign_explain(&mut explain, members, explain_fraction, rng);
        }
    }
    assign_explain(&mut explain, singletons, explain_fraction, rng);
    if explain.iter().all(|&e| e) || explain.iter().all(|&e| !e) {
        explain.fill(false);
        assign_explain(&mut explain, (0..cells.len()).collect(), explain_fraction, rng);
    }
    explain
}

/// Over the ambient temperatures (to 0.1 °C; unknown is one value), how far each one's explain
/// cells are from its `explain_fraction`, in cells, summed (in tenths: an integer to compare).
fn temperature_imbalance(cells: &[CellInfo], explain: &[bool], explain_fraction: f64) -> u64 {
    let key = |c: &CellInfo| c.ambient_temperature_c.map(|t| (t * 10.0).round() as i64);
    let mut counts: std::collections::BTreeMap<Option<i64>, (f64, f64)> = Default::default();
    for (c, &e) in cells.iter().zip(explain) {
        let n = counts.entry(key(c)).or_default();
        n.0 += 1.0;
        n.1 += e as u8 as f64;
    }
    counts.values().map(|&(n, e)| (10.0 * (e - explain_fraction * n).abs()).round() as u64).sum()
}

/// Marks a shuffled `explain_fraction` of `members` (at least one, and one left out of two or more).
fn assign_explain(explain: &mut [bool], mut members: Vec<usize>, explain_fraction: f64, rng: &mut ChaCha8Rng) {
    members.shuffle(rng);
    let n = members.len();
    let n_explain = if n < 2 { n } else { ((explain_fraction * n as f64).round() as usize).clamp(1, n - 1) };
    for &c in &members[..n_explain] {
        explain[c] = true;
    }
}

/// Share of the explain cells a conjunction's terms are chosen on; the rest confirm them.
const FIT_FRACTION: f64 = 2.0 / 3.0;

/// Which part of the labeller's split a cell is in: the explain cells are split once more into
/// `Fit` (terms chosen) and `Check` (terms confirmed); `Test` cells score the labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Fit,
    Check,
    Test,
}

impl Half {
    pub fn as_str(self) -> &'static str {
        match self {
            Half::Fit => "explain (fit)",
            Half::Check => "explain (check)",
            Half::Test => "test",
        }
    }
}

/// Every cell's part of the split (steps 1 and 2), deterministic from the seed.
pub fn split_halves(cells: &[CellInfo], cfg: &LabelConfig) -> Vec<Half> {
    let explain = split_cells(cells, cfg.explain_fraction, cfg.seed);
    let members: Vec<usize> = (0..cells.len()).filter(|&c| explain[c]).collect();
    let member_cells: Vec<CellInfo> = members.iter().map(|&c| cells[c].clone()).collect();
    // Check cells confirm the terms fit cells chose, split the same way.
    let fit_members = split_cells(&member_cells, FIT_FRACTION, cfg.seed ^ 0xF17);
    let mut halves = vec![Half::Test; cells.len()];
    for (&c, &f) in members.iter().zip(&fit_members) {
        halves[c] = if f { Half::Fit } else { Half::Check };
    }
    halves
}

/// Weighted code totals shared by every feature.
struct Halves {
    explain: Weighting,
    test: Weighting,
    /// The test cells that have a candidate's covariates, for `held_out`.
    present: present::PresentTest,
    /// The explain cells split into `fit` and `check` for the conjunction search.
    fit: Weighting,
    check: Weighting,
    bootstrap: Vec<Resample>,
}

/// One bootstrap resample of the explain cells, with its fit and check parts, so that a
/// resample's search confirms its terms as the labeller's own search does (confirmed on the
/// cells they were chosen on, resamples would crown terms the labeller never keeps).
struct Resample {
    explain: Weighting,
    fit: Weighting,
    check: Weighting,
}

impl Halves {
    fn new(coded: &CodedSteps, split: &[Half], cfg: &LabelConfig) -> Halves {
        let weights = |pick: &dyn Fn(Half) -> bool| -> Vec<f64> { split.iter().map(|&h| if pick(h) { 1.0 } else { 0.0 }).collect() };
        let explain: Vec<bool> = split.iter().map(|&h| h != Half::Test).collect();
        let test = coded.weighting(weights(&|h| h == Half::Test));
        Halves {
            explain: coded.weighting(weights(&|h| h != Half::Test)),
            present: present::PresentTest::new(coded, &test),
            test,
            fit: coded.weighting(weights(&|h| h == Half::Fit)),
            check: coded.weighting(weights(&|h| h == Half::Check)),
            bootstrap: stability::bootstrap_weights(&explain, cfg.n_bootstrap, cfg.seed)
                .into_iter()
                .map(|w| {
                    let part = |half: Half| w.iter().zip(split).map(|(&x, &h)| if h == half { x } else { 0.0 }).collect();
                    Resample { fit: coded.weighting(part(Half::Fit)), check: coded.weighting(part(Half::Check)), explain: coded.weighting(w) }
                })
                .collect(),
        }
    }
}

/// A feature's firing steps in global numbering, sorted by activation.
pub(crate) fn firing_of(f: &FeatureActivations, coded: &CodedSteps) -> Firing {
    Firing::new(f.entries().map(|(c, r, v)| (c as u32, r, v)).collect(), &coded.cell_offsets)
}

fn label_one(f: &FeatureActivations, coded: &CodedSteps, halves: &Halves, cfg: &LabelConfig, seed: u64) -> FeatureLabel {
    let set = cfg.search_settings();
    let firing = firing_of(f, coded);
    let total_steps = *coded.cell_offsets.last().expect("offsets") as f64;
    let test_fire_weight: f64 = firing.cells.iter().map(|&c| halves.test.cell_weight[c as usize]).sum();
    let testable = Testable { held_out: &halves.test, quiet: test_fire_weight < halves.test.total };
    // Each ranking holds 12 bytes per firing step; the explain ones go before the stability
    // search ranks its resamples, the test one comes after, so that few are alive at once.
    let (mut top, baselines) = {
        let explain_ranked = rank(&firing, &halves.explain);
        let (fit_ranked, check_ranked) = (rank(&firing, &halves.fit), rank(&firing, &halves.check));
        let validation = Validation { fit: &halves.fit, fit_ranked: &fit_ranked, check: &halves.check, check_ranked: &check_ranked };
        search(&firing, &explain_ranked, coded, &halves.explain, &set, Some(&validation), Some(&testable))
    };
    // The label is the strongest candidate on the explain cells that is also stable there; the
    // choice sees no test cell, so the held-out scores stay honest.
    let resampled = Resampled::new(&firing, coded, halves, &testable, &set);
    let mut stabilities = stability_of(&top, &resampled, &firing, coded, halves, &set, cfg.stability_tie);
    if let Some(first_stable) = stabilities.iter().position(|&s| s >= cfg.min_stability) {
        top[..=first_stable].rotate_right(1);
        stabilities[..=first_stable].rotate_right(1);
    } else if let Some((stable, stability)) = stable_winner(&top, &resampled, &firing, coded, halves, &set, cfg) {
        top.insert(0, stable);
        stabilities.insert(0, stability);
        top.truncate(set.keep);
        stabilities.truncate(set.keep);
    }
    let test_ranked = rank(&firing, &halves.test);
    let null_shifts = null::ShiftNull { seed, n: cfg.n_shifts };
    let held_out = |s: &Scored| held_out(s, &firing, &test_ranked, coded, halves, &null_shifts, &set);
    let candidates: Vec<CandidateResult> = top.iter().map(held_out).collect();
    // The baseline is the raw-V/I candidate of the label's kind: a graded score ranks steps more
    // finely than a yes/no predicate and a Spearman is no AUROC, so each kind meets its own.
    // It is a yardstick, not a tested hypothesis: it stays out of BH (q = NaN).
    let same_kind = |b: &&Scored| top.first().is_some_and(|t| t.candidate.baseline_kind() == b.candidate.baseline_kind());
    let baseline = baselines.iter().find(same_kind).map(|b| CandidateResult { q_value: f64::NAN, ..held_out(b) });
    FeatureLabel {
        layer: f.layer,
        feature: f.feature,
        density: f.nnz() as f64 / total_steps.max(1.0),
        test_density: test_ranked.fire_weight / halves.test.total.max(1.0),
        accepted: false,
        label: String::new(),
        candidates,
        baseline,
        stability: stabilities.first().copied().unwrap_or(0.0),
        beats_baseline: false,
        sibling_auroc: f64::NAN,
        siblings: 0,
    }
}

/// Redraws the null with `cfg.max_shifts` shifts (the first `n_shifts` are the same draws) for
/// each label that passes strength, stability and the baseline but whose q lies within a factor
/// of ten of `max_q`, where the coarse null decides acceptance.
fn resolve_borderline(labels: &mut [FeatureLabel], acts: &dyn ActivationSource, coded: &CodedSteps, halves: &Halves, cfg: &LabelConfig) -> Result<()> {
    let borderline = |l: &FeatureLabel| passes_all_but_q(l, cfg) && (0.1 * cfg.max_q..10.0 * cfg.max_q).contains(&l.candidates[0].q_value);
    let indices: Vec<usize> = (0..labels.len()).filter(|&i| !labels[i].candidates.is_empty() && borderline(&labels[i])).collect();
    let total_steps = coded.cell_offsets.last().copied().unwrap_or(0) as f64;
    let entries = indices.iter().map(|&i| (labels[i].density * total_steps).round() as usize);
    for run in source::chunks(entries, acts.chunk_entries()) {
        let chunk = &indices[run];
        let features = load_labelled(acts, labels, chunk)?;
        let redrawn: Vec<(f64, f64)> = chunk
            .par_iter()
            .zip(&features)
            .map(|(&i, f)| {
                let firing = firing_of(f, coded);
                let ranked = rank(&firing, &halves.test);
                let best = &labels[i].candidates[0];
                let null_shifts = null::ShiftNull { seed: cfg.seed.wrapping_add(i as u64), n: cfg.max_shifts.max(cfg.n_shifts) };
                shift_p_values(&best.candidate, &best.g, &best.test, &firing, &null_shifts, &ranked, coded, &halves.test)
            })
            .collect();
        for (&i, p) in chunk.iter().zip(redrawn) {
            (labels[i].candidates[0].p_value, labels[i].candidates[0].p_empirical) = p;
        }
    }
    Ok(())
}


/// Test-half scores, explain→test gap and null p-values of one candidate (step 3–4); its
/// strength the lower of that on every test cell and on those that have its covariates.
fn held_out(s: &Scored, firing: &Firing, ranked: &Ranked, coded: &CodedSteps, halves: &Halves, null_shifts: &null::ShiftNull, set: &SearchSettings) -> CandidateResult {
    let test = &halves.test;
    let test_score = score_on(s, firing, &firing.steps, ranked, coded, test);
    let (p_value, p_empirical) = shift_p_values(&s.candidate, &s.g, &test_score, firing, null_shifts, ranked, coded, test);
    // The cells that have the candidate's covariates are some of the test cells: where they are
    // scored, their firing is the count to judge.
    let present = halves.present.weighting(&s.candidate, coded).map(|(lacked, w)| (lacked, rank(firing, &w), w));
    let test_firing = present.as_ref().map_or(ranked.fire_weight, |(_, r, _)| r.fire_weight);
    let within_present = present.map(|(lacked, r, w)| (lacked, score_on(s, firing, &firing.steps, &r, coded, &w)));
    let strength = set.strength(&s.candidate, &test_score).min(within_present.as_ref().map_or(f64::INFINITY, |(_, w)| set.strength(&s.candidate, w)));
    CandidateResult {
        sentence: sentence::sentence(&s.candidate, &coded.codings),
        candidate: s.candidate.clone(),
        explain: s.score,
        test: test_score,
        within_present,
        test_firing: Some(test_firing.round() as u64),
        gap: set.strength(&s.candidate, &s.score) - strength,
        strength,
        p_value,
        p_empirical,
        q_value: 1.0,
        g: s.g.clone(),
    }
}

/// p-values (fitted tail, empirical) of a candidate's score — AUROC for a detector, Spearman
/// for a tracker — against the same candidate scored with the firing circularly shifted.
#[allow(clippy::too_many_arguments)]
pub(crate) fn shift_p_values(
    candidate: &Candidate,
    g: &[f64],
    observed: &Score,
    firing: &Firing,
    null_shifts: &null::ShiftNull,
    ranked: &Ranked,
    coded: &CodedSteps,
    w: &Weighting,
) -> (f64, f64) {
    let statistic = |score: &Score| match candidate {
        Candidate::Detector(_) | Candidate::Graded { .. } => score.auroc,
        Candidate::Tracker { .. } => score.spearman,
    };
    let observed = statistic(observed);
    let null: Vec<f64> = null_shifts.draws(firing, &coded.cell_offsets).map(|steps| statistic(&score_candidate(candidate, g, firing, &steps, ranked, coded, w))).filter(|x| x.is_finite()).collect();
    if observed.is_finite() && null.len() > 1 { null::p_values(observed, &null) } else { (1.0, 1.0) }
}

/// Scores a fixed candidate (tracker g from the explain fit) with firing placed at `steps`.
fn score_on(s: &Scored, firing: &Firing, steps: &[u32], ranked: &Ranked, coded: &CodedSteps, w: &Weighting) -> Score {
    score_candidate(&s.candidate, &s.g, firing, steps, ranked, coded, w)
}

/// Held-out scores of a candidate; `g` is a tracker's fitted value per code (unused by detectors).
pub(crate) fn score_candidate(candidate: &Candidate, g: &[f64], firing: &Firing, steps: &[u32], ranked: &Ranked, coded: &CodedSteps, w: &Weighting) -> Score {
    match candidate {
        Candidate::Detector(p) => score_detector(p, firing, steps, ranked, coded, w).map_or(Score::NONE, Score::detector),
        Candidate::Graded { .. } => {
            let scale = TrackerScale::of(candidate).expect("a scale");
            let s = bin_stats_one(firing, steps, ranked, coded, w, &scale);
            Score::graded(graded_auroc(&s.weight, &s.fire_weight, TrackerScale::rises(candidate)))
        }
        Candidate::Tracker { .. } => {
            let scale = TrackerScale::of(candidate).expect("a tracker");
            let n = scale.n_codes(coded);
            let stats = bin_stats_one(firing, steps, ranked, coded, w, &scale);
            let sign = if TrackerScale::rises(candidate) { 1.0 } else { -1.0 };
            let rho = within_cell_spearman(firing, steps, coded, w, &scale);
            let r2 = if g.len() >= n { r_squared(&stats, n, g) } else { f64::NAN };
            Score::tracker(sign * rho, r2)
        }
    }
}

/// The search run again on each bootstrap resample of the explain cells: per resample that
/// draws firing cells and finds a label, its best few distinct labels (never empty).
struct Resampled {
    tops: Vec<Option<Vec<Scored>>>,
}

impl Resampled {
    fn new(firing: &Firing, coded: &CodedSteps, halves: &Halves, testable: &Testable, set: &SearchSettings) -> Resampled {
        let tops = halves
            .bootstrap
            .iter()
            .map(|resample| {
                let ranked = rank(firing, &resample.explain);
                if ranked.fire_weight == 0.0 {
                    return None;
                }
                let (fit_ranked, check_ranked) = (rank(firing, &resample.fit), rank(firing, &resample.check));
                let validation = Validation { fit: &resample.fit, fit_ranked: &fit_ranked, check: &resample.check, check_ranked: &check_ranked };
                let (top, _) = search(firing, &ranked, coded, &resample.explain, set, Some(&validation), Some(testable));
                (!top.is_empty()).then_some(top)
            })
            .collect();
        Resampled { tops }
    }

    /// The resamples' winners, distinct, in resample order, leaving out those alike to one of
    /// `known`.
    fn winners(&self, known: &[Scored], coded: &CodedSteps, w: &Weighting) -> Vec<Scored> {
        let mut distinct: Vec<Scored> = Vec::new();
        for top in self.tops.iter().flatten() {
            let winner = &top[0];
            if !known.iter().chain(&distinct).any(|k| alike(k, winner, coded, w)) {
                distinct.push(winner.clone());
            }
        }
        distinct
    }
}

/// One label in other words: the same sentence, or the same steps or ranking on these cells.
fn alike(a: &Scored, b: &Scored, coded: &CodedSteps, w: &Weighting) -> bool {
    candidates::same_label(&a.candidate, &b.candidate) || coded.same_steps(&a.candidate, &b.candidate, w) || coded.same_ranking(&a.candidate, &b.candidate, w)
}

/// Per candidate, the share of bootstrap resamples of the explain cells where it is still among
/// the resample's best few distinct labels (`set.keep`, the runners-up a card shows), or scores
/// no more than `tie` (strength) below the winner there. Near-synonyms ("in CV holds", "the
/// current tapers next", "above 4.19 V") trade the top place from resample to resample; a label
/// that is a fluke of the drawn cells drops out of the top few. Resamples that carry no
/// evidence about a candidate are left out of its share: those that drew none of the cells
/// where the feature fires (a feature of one drive cycle is silent in a third of them), and
/// those where the candidate cannot be scored (its predicate holds on none of the drawn steps,
/// as "discharge above 2C" without a drive cycle).
fn stability_of(chosen: &[Scored], resampled: &Resampled, firing: &Firing, coded: &CodedSteps, halves: &Halves, set: &SearchSettings, tie: f64) -> Vec<f64> {
    let (mut informative, mut agree) = (vec![0usize; chosen.len()], vec![0usize; chosen.len()]);
    for (resample, drawn) in halves.bootstrap.iter().zip(&resampled.tops) {
        let Some(top) = drawn else { continue };
        let winner_strength = set.strength(&top[0].candidate, &top[0].score);
        let w = &resample.explain;
        // Ranked again rather than kept from the search: twenty rankings alive at once would hold
        // 12 bytes per firing step each.
        let ranked = rank(firing, w);
        for (i, c) in chosen.iter().enumerate() {
            let strength = set.strength(&c.candidate, &score_on(c, firing, &firing.steps, &ranked, coded, w));
            if strength == f64::NEG_INFINITY {
                continue;
            }
            informative[i] += 1;
            agree[i] += (top.iter().any(|t| alike(t, c, coded, w)) || strength >= winner_strength - tie) as usize;
        }
    }
    informative.iter().zip(&agree).map(|(&n, &a)| if n == 0 { 0.0 } else { a as f64 / n as f64 }).collect()
}

/// When none of the search's best few is stable, the label the resamples themselves keep
/// choosing may be: of their distinct winners, the one strongest on the explain cells among
/// those stable there, with its explain scores and its stability. Near-equivalent wordings split
/// the full search's vote; the resamples can still agree on one. Chosen on the explain cells
/// alone, like every label.
fn stable_winner(top: &[Scored], resampled: &Resampled, firing: &Firing, coded: &CodedSteps, halves: &Halves, set: &SearchSettings, cfg: &LabelConfig) -> Option<(Scored, f64)> {
    let winners = resampled.winners(top, coded, &halves.explain);
    let stabilities = stability_of(&winners, resampled, firing, coded, halves, set, cfg.stability_tie);
    let ranked = rank(firing, &halves.explain);
    let stable = winners.into_iter().zip(stabilities).filter(|&(_, s)| s >= cfg.min_stability);
    let scored = stable.map(|(mut winner, stability)| {
        winner.score = score_on(&winner, firing, &firing.steps, &ranked, coded, &halves.explain);
        (set.strength(&winner.candidate, &winner.score), winner, stability)
    });
    let (_, winner, stability) = scored.filter(|(x, _, _)| x.is_finite()).max_by(|a, b| a.0.total_cmp(&b.0))?;
    Some((winner, stability))
}

/// Indices of accepted labels grouped by sentence (groups of two or more).
fn sibling_groups(labels: &[FeatureLabel]) -> Vec<Vec<usize>> {
    let accepted = labels.iter().enumerate().filter(|(_, l)| l.accepted);
    siblings::groups(accepted.map(|(i, l)| (i, l.candidates[0].sentence.as_str())))
}

/// The contrastive search (DESIGN §5 step 2): each sibling's label gets the extra term that best
/// separates its firing from its siblings' on the explain cells (a detector's further atom, a
/// graded detector's regime), kept when it adds `MIN_SIBLING_GAIN` sibling AUROC there and on
/// the test cells and the label still passes its held-out strength and the raw-V/I floor; the
/// refined label goes first among the candidates. The label's stability stays that of the
/// label it refines. Returns the refined labels, each with its sibling AUROC before.
fn separate_siblings(labels: &mut [FeatureLabel], acts: &dyn ActivationSource, coded: &CodedSteps, halves: &Halves, cfg: &LabelConfig) -> Result<Vec<(usize, f64)>> {
    let set = cfg.search_settings();
    let groups = sibling_groups(labels);
    // Siblings' activations a run of groups at a time, within the chunk budget (a group larger
    // than that alone): with graded labels a sentence can be shared by dozens of dense features.
    let total_steps = coded.cell_offsets.last().copied().unwrap_or(0) as f64;
    let group_entries = groups.iter().map(|g| g.iter().map(|&i| (labels[i].density * total_steps).round() as usize).sum());
    let mut refined = Vec::new();
    for run in source::chunks(group_entries, acts.chunk_entries()) {
        let mut members: Vec<usize> = groups[run.clone()].iter().flatten().copied().collect();
        members.sort_unstable();
        let features = load_labelled(acts, labels, &members)?;
        for group in &groups[run] {
            let of_group: Vec<&FeatureActivations> = group.iter().map(|i| &features[members.binary_search(i).expect("a member")]).collect();
            refined.extend(separate_group(labels, group, &of_group, coded, halves, cfg, &set));
        }
    }
    Ok(refined)
}

/// The contrastive search within one group of siblings, given their activations: each
/// member's firing steps, and its sorted firing only when a refined label is scored. Returns
/// the refined labels, each with its sibling AUROC before.
fn separate_group(labels: &mut [FeatureLabel], group: &[usize], features: &[&FeatureActivations], coded: &CodedSteps, halves: &Halves, cfg: &LabelConfig, set: &SearchSettings) -> Vec<(usize, f64)> {
    let mut refined_labels = Vec::new();
    let steps: Vec<Vec<u32>> = features.iter().map(|f| f.entries().map(|(c, r, _)| (coded.cell_offsets[c] + r as usize) as u32).collect()).collect();
    let steps: Vec<&[u32]> = steps.iter().map(Vec::as_slice).collect();
    for (m, &i) in group.iter().enumerate() {
        let contrast = siblings::Contrast::new(&steps, m);
        let label = labels[i].candidates[0].candidate.clone();
        let before = contrast.label_auroc(&label, coded, &halves.test);
        labels[i].sibling_auroc = before;
        // A tracker, and a graded detector already inside a regime, get no contrastive term.
        let refined = match &label {
            Candidate::Detector(p) => contrast.refine(p, coded, &halves.explain).map(|(p, auroc)| (Candidate::Detector(p), auroc)),
            Candidate::Graded { .. } => contrast.best_regime(&label, coded, &halves.explain),
            Candidate::Tracker { .. } => None,
        };
        let Some((refined, explain_after)) = refined else { continue };
        let after = contrast.label_auroc(&refined, coded, &halves.test);
        if explain_after < contrast.label_auroc(&label, coded, &halves.explain) + siblings::MIN_SIBLING_GAIN || !(after >= before + siblings::MIN_SIBLING_GAIN) {
            continue;
        }
        let firing = &firing_of(features[m], coded);
        let explain_ranked = rank(firing, &halves.explain);
        let score = score_candidate(&refined, &[], firing, &firing.steps, &explain_ranked, coded, &halves.explain);
        let scored = Scored { candidate: refined, score, g: Vec::new() };
        // The borderline redraw has run by now, so a refined label gets the fine null at once:
        // with `n_shifts` draws its p would floor at 1/(n+1), whose BH q (~0.012 over a few
        // hundred features) fails `max_q` and loses a label the coarser sentence had won.
        let null_shifts = null::ShiftNull { seed: cfg.seed ^ (i as u64).wrapping_mul(0x9E37_79B9), n: cfg.max_shifts.max(cfg.n_shifts) };
        let result = held_out(&scored, firing, &rank(firing, &halves.test), coded, halves, &null_shifts, set);
        // A refinement must pass what the label passed, or it would cost the feature its label.
        if result.strength >= 1.0 && clears_floor(&result, labels[i].baseline.as_ref()) {
            labels[i].candidates.insert(0, result);
            labels[i].sibling_auroc = after;
            refined_labels.push((i, before));
        }
    }
    refined_labels
}

/// Sets each accepted label's count of other accepted labels with the same sentence.
fn count_siblings(labels: &mut [FeatureLabel]) {
    let mut counts: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    for l in labels.iter().filter(|l| l.accepted) {
        *counts.entry(l.label.clone()).or_default() += 1;
    }
    for l in labels.iter_mut().filter(|l| l.accepted) {
        l.siblings = counts[&l.label] - 1;
    }
}

/// Benjamini–Hochberg across every feature's tested candidates (not the baselines).
fn apply_fdr(labels: &mut [FeatureLabel]) {
    let p: Vec<f64> = labels.iter().flat_map(|l| l.candidates.iter().map(|c| c.p_value)).collect();
    let q = fdr::benjamini_hochberg(&p);
    let mut q = q.into_iter();
    for l in labels.iter_mut() {
        for c in &mut l.candidates {
            c.q_value = q.next().expect("one q per p");
        }
    }
}

/// Raw V/I is the floor: a label on derived covariates must do at least as well held out as
/// the best raw-V/I candidate. A label on raw V/I itself has nothing to beat ("current below
/// -8 A" is not refuted by "tracks current" scoring higher: both say it follows the current).
fn beats_baseline(l: &FeatureLabel) -> bool {
    clears_floor(&l.candidates[0], l.baseline.as_ref())
}

fn clears_floor(candidate: &CandidateResult, baseline: Option<&CandidateResult>) -> bool {
    candidate.candidate.is_raw_signal() || baseline.is_none_or(|b| candidate.strength >= b.strength)
}

/// Whether the best candidate was scored on enough held-out firing to mean anything.
fn enough_test_firing(c: &CandidateResult, cfg: &LabelConfig) -> bool {
    c.test_firing.is_none_or(|n| n >= cfg.min_test_firing)
}

/// The acceptance rule (step 5) short of significance: held-out firing and strength, stability,
/// baseline.
fn passes_all_but_q(l: &FeatureLabel, cfg: &LabelConfig) -> bool {
    let best = &l.candidates[0];
    enough_test_firing(best, cfg) && best.strength >= 1.0 && l.stability >= cfg.min_stability && beats_baseline(l)
}

/// The acceptance rule (step 5) and the label text (step 6).
fn decide(l: &mut FeatureLabel, cfg: &LabelConfig) {
    let Some(best) = l.candidates.first() else {
        l.label = "unexplained (never fires)".into();
        return;
    };
    l.beats_baseline = beats_baseline(l);
    l.accepted = passes_all_but_q(l, cfg) && best.q_value < cfg.max_q;
    l.label = if l.accepted {
        sentence::label(best)
    } else {
        let closest: Vec<&str> = l.candidates.iter().map(|c| c.sentence.as_str()).collect();
        format!("unexplained: {} (closest: {})", unexplained_reason(l, cfg), closest.join("; "))
    };
}

/// Why the label was not accepted, in the order a reader checks: testable at all, held-out
/// strength, significance, stability, the raw-V/I floor.
pub fn unexplained_reason(l: &FeatureLabel, cfg: &LabelConfig) -> String {
    if !l.testable() {
        return "fires on no held-out cell, so no label can be tested".into();
    }
    let best = &l.candidates[0];
    let mut failed = Vec::new();
    let within = best.within_present.as_ref().map(|(lacked, w)| {
        let names: Vec<&str> = lacked.iter().map(|&c| sentence::noun(c)).collect();
        (*w, format!(" on the test cells that have {}", names.join(" and ")))
    });
    if !enough_test_firing(best, cfg) {
        let n = best.test_firing.unwrap_or_default();
        let on = within.as_ref().map_or("", |(_, on)| on.as_str());
        failed.push(format!("fires on only {n} held-out step{}{on} (fewer than {}, too few to test)", if n == 1 { "" } else { "s" }, cfg.min_test_firing));
    }
    if !(best.strength >= 1.0) {
        // Where the cells that have the label's covariates score lower, that score failed.
        let (name, metric, threshold) = match best.candidate {
            Candidate::Detector(_) | Candidate::Graded { .. } => ("AUROC", (|s: &Score| s.auroc) as fn(&Score) -> f64, cfg.min_auroc),
            Candidate::Tracker { .. } => ("Spearman", (|s: &Score| s.spearman) as fn(&Score) -> f64, cfg.min_spearman),
        };
        let (value, on) = match within {
            Some((w, on)) if !(metric(&w) >= metric(&best.test)) => (metric(&w), on),
            _ => (metric(&best.test), String::new()),
        };
        failed.push(if value.is_nan() {
            let on = if on.is_empty() { " on the test cells".to_owned() } else { on };
            format!("held-out {name} undefined{on} (it fires on all their steps or none)")
        } else {
            format!("held-out {name} {value:.2}{on} < {threshold}")
        });
    }
    if !(best.q_value < cfg.max_q) {
        // Two significant digits: "q 0.011 ≥ 0.01", never "q 0.01 ≥ 0.01".
        let digits = if best.q_value < 0.1 { 3 } else { 2 };
        failed.push(format!("q {:.*} ≥ {}", digits, best.q_value, cfg.max_q));
    }
    if !(l.stability >= cfg.min_stability) {
        failed.push(format!("stability {:.2} < {}", l.stability, cfg.min_stability));
    }
    if !l.beats_baseline {
        failed.push("raw V/I does as well".into());
    }
    failed.join(", ")
}
