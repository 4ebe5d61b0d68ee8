//! `label --check` (DESIGN §5 step 5): the accepted labels of one label run re-scored on another
//! dataset recorded with the same model and transcoder. Each label keeps its exact bounds (the
//! codings it was found with); every cell of the new dataset is held out; the null, the
//! Benjamini–Hochberg correction and the acceptance thresholds are the label stage's. A label
//! "still holds" when they pass there too.
//!
//! ```text
//! out_dir/
//!   check.parquet (+ csv)   one row per accepted label of the checked run
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::candidates::{Candidate, CodedSteps, Coding, Score};
use super::covariates::{Covariate, Covariates};
use super::scoring::{rank, Firing};
use super::source::ActivationSource;
use super::stage::{load_inputs, quartiles, CODINGS_FILE, LABELS_FILE};
use super::{fdr, firing_of, null, score_candidate, shift_p_values, FeatureLabel, LabelConfig};
use crate::mine::tables::{Table, TableColumn};
use crate::io::read_json;
use crate::mine::SparseActivations;
use crate::{Error, Result};

/// The check table's file name in `out_dir`.
pub const CHECK_FILE: &str = "check.parquet";

/// One accepted label scored on the other dataset.
#[derive(Debug, Clone)]
pub struct LabelCheck {
    pub layer: u32,
    pub feature: u32,
    pub sentence: String,
    pub candidate: Candidate,
    /// Held-out strength on the dataset it was found on (≥ 1 passed there).
    pub original_strength: f64,
    /// Share of the other dataset's steps where the feature fires.
    pub density: f64,
    /// Steps of the other dataset where it fires: a label holds on at least `min_test_firing`.
    pub firing_steps: u64,
    pub score: Score,
    pub strength: f64,
    pub p_value: f64,
    pub p_empirical: f64,
    pub q_value: f64,
    pub still_holds: bool,
}

/// `labels` may be a label stage's folder or its labels.json; codings.json must sit beside it.
fn read_labels(labels: &Path) -> Result<(Vec<FeatureLabel>, Vec<Coding>)> {
    let dir: PathBuf = if labels.is_dir() { labels.to_path_buf() } else { labels.parent().map(Path::to_path_buf).unwrap_or_default() };
    let labels_file = if labels.is_dir() { dir.join(LABELS_FILE) } else { labels.to_path_buf() };
    let codings_file = dir.join(CODINGS_FILE);
    if !codings_file.exists() {
        return Err(Error::Config(format!(
            "label --check: {} is missing; it is written by the label stage beside {} (relabel to make it)",
            codings_file.display(),
            labels_file.display()
        )));
    }
    let labels: Vec<FeatureLabel> = read_json(&labels_file)?;
    let written: Vec<Coding> = read_json(&codings_file)?;
    // Labels written before a covariate was added lack its coding, and none of them names it:
    // it gets an empty one, so that older label runs can still be checked.
    let codings = Covariate::ALL
        .iter()
        .map(|&c| written.iter().find(|k| k.covariate == c).cloned().unwrap_or(Coding { covariate: c, edges: Vec::new(), categories: Vec::new(), range: None }))
        .collect();
    Ok((labels, codings))
}

/// Re-scores the accepted labels of `labels` on the dataset at `dataset_dir` (activations in
/// `record_dir`), writes `out_dir/check.parquet` and returns a summary: labels checked, how
/// many still hold, and the held-out AUROC / Spearman there (median and quartiles).
pub fn check_labels(labels: &Path, dataset_dir: &Path, record_dir: &Path, cfg: &LabelConfig, out_dir: &Path) -> Result<serde_json::Value> {
    let (labels, codings) = read_labels(labels)?;
    let (_, source, covariates) = load_inputs(dataset_dir, record_dir, cfg)?;
    let mut accepted: Vec<(u32, u32)> = labels.iter().filter(|l| l.accepted).map(|l| (l.layer, l.feature)).collect();
    accepted.sort_unstable();
    let acts = SparseActivations { cell_ids: source.cell_ids().to_vec(), cell_rows: source.cell_rows().to_vec(), features: source.load(&accepted)? };
    let checks = check(&labels, codings, &acts, &covariates, cfg);
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    check_table(&checks).write(&out_dir.join(CHECK_FILE))?;
    let hold = checks.iter().filter(|c| c.still_holds).count();
    let scores = |get: &dyn Fn(&LabelCheck) -> f64| quartiles(checks.iter().map(get).filter(|v| v.is_finite()).collect());
    Ok(serde_json::json!({
        "out_dir": out_dir,
        "checked": checks.len(),
        "still_hold": hold,
        "still_hold_share": hold as f64 / checks.len().max(1) as f64,
        "never_fire": checks.iter().filter(|c| c.density == 0.0).count(),
        "auroc": scores(&|c| c.score.auroc),
        "spearman": scores(&|c| c.score.spearman),
        "table": out_dir.join(CHECK_FILE),
    }))
}

/// The accepted `labels` (bounds as `codings` define them) scored on other cells: `acts` and
/// `covariates` of the same cells, every cell held out. A feature absent from `acts` never fires.
pub fn check(labels: &[FeatureLabel], codings: Vec<Coding>, acts: &SparseActivations, covariates: &[Covariates], cfg: &LabelConfig) -> Vec<LabelCheck> {
    let coded = CodedSteps::with_codings(&covariates, codings);
    let every_cell = coded.weighting(vec![1.0; coded.n_cells()]);
    let by_id: HashMap<(u32, u32), usize> = acts.features.iter().enumerate().map(|(i, f)| ((f.layer, f.feature), i)).collect();
    let total_steps = *coded.cell_offsets.last().expect("offsets") as f64;
    let set = cfg.search_settings();
    let accepted: Vec<&FeatureLabel> = labels.iter().filter(|l| l.accepted).collect();
    let mut checks: Vec<LabelCheck> = accepted
        .par_iter()
        .enumerate()
        .map(|(i, l)| {
            let best = &l.candidates[0];
            let firing = by_id.get(&(l.layer, l.feature)).map_or_else(|| Firing::new(Vec::new(), &coded.cell_offsets), |&f| firing_of(&acts.features[f], &coded));
            let ranked = rank(&firing, &every_cell);
            let score = score_candidate(&best.candidate, &best.g, &firing, &firing.steps, &ranked, &coded, &every_cell);
            let shifts = null::ShiftNull { seed: cfg.seed.wrapping_add(i as u64), n: cfg.n_shifts };
            let (p_value, p_empirical) = shift_p_values(&best.candidate, &best.g, &score, &firing, &shifts, &ranked, &coded, &every_cell);
            LabelCheck {
                layer: l.layer,
                feature: l.feature,
                sentence: best.sentence.clone(),
                candidate: best.candidate.clone(),
                original_strength: best.strength,
                density: firing.steps.len() as f64 / total_steps.max(1.0),
                firing_steps: firing.steps.len() as u64,
                strength: set.strength(&best.candidate, &score),
                score,
                p_value,
                p_empirical,
                q_value: 1.0,
                still_holds: false,
            }
        })
        .collect();
    let q = fdr::benjamini_hochberg(&checks.iter().map(|c| c.p_value).collect::<Vec<_>>());
    for (c, q) in checks.iter_mut().zip(q) {
        c.q_value = q;
        c.still_holds = c.firing_steps >= cfg.min_test_firing && c.strength >= 1.0 && q < cfg.max_q;
    }
    checks
}

fn check_table(checks: &[LabelCheck]) -> Table {
    let mut t = Table::default();
    let f = |get: &dyn Fn(&LabelCheck) -> f64| TableColumn::F64(checks.iter().map(get).collect());
    t.push("layer", TableColumn::U32(checks.iter().map(|c| c.layer).collect()));
    t.push("feature", TableColumn::U32(checks.iter().map(|c| c.feature).collect()));
    t.push("sentence", TableColumn::Str(checks.iter().map(|c| c.sentence.clone()).collect()));
    let covariates = |c: &LabelCheck| c.candidate.covariates().iter().map(|v| v.name()).collect::<Vec<_>>().join("+");
    t.push("covariates", TableColumn::Str(checks.iter().map(covariates).collect()));
    t.push("original_strength", f(&|c| c.original_strength));
    t.push("density", f(&|c| c.density));
    t.push("firing_steps", f(&|c| c.firing_steps as f64));
    t.push("auroc", f(&|c| c.score.auroc));
    t.push("f1", f(&|c| c.score.f1));
    t.push("spearman", f(&|c| c.score.spearman));
    t.push("r2", f(&|c| c.score.r2));
    t.push("strength", f(&|c| c.strength));
    t.push("p_value", f(&|c| c.p_value));
    t.push("p_empirical", f(&|c| c.p_empirical));
    t.push("q_value", f(&|c| c.q_value));
    t.push("still_holds", TableColumn::Bool(checks.iter().map(|c| c.still_holds).collect()));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_written_before_a_covariate_was_added_can_be_checked() {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<Coding> = Covariate::ALL.iter().map(|&c| Coding { covariate: c, edges: vec![1.0], categories: Vec::new(), range: None }).collect();
        let older: Vec<&Coding> = all.iter().filter(|c| c.covariate != Covariate::AbsDvDt).collect();
        std::fs::write(dir.path().join(CODINGS_FILE), serde_json::to_string(&older).unwrap()).unwrap();
        std::fs::write(dir.path().join(LABELS_FILE), "[]").unwrap();
        let (_, codings) = read_labels(dir.path()).unwrap();
        assert_eq!(codings.iter().map(|c| c.covariate).collect::<Vec<_>>(), Covariate::ALL.to_vec(), "every covariate, in order");
        assert_eq!(codings[Covariate::Soc.index()].edges, vec![1.0], "written codings are kept");
        assert!(codings[Covariate::AbsDvDt.index()].edges.is_empty(), "the missing one is empty");
    }
}
