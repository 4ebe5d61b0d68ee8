//! `labels.parquet` (+ CSV): one row per feature with the chosen label, every score of it, the
//! two runners-up and the raw-V/I baseline; the full candidate records as JSON for reports.

use std::path::Path;

use crate::label::{CandidateResult, FeatureLabel};
use crate::mine::tables::{Table, TableColumn};
use crate::Result;

/// Columns for the candidate at `slot` of each feature (NaN / empty where there is none, and NaN
/// for a score that could not be taken: the search ranks those at −∞, which labels.json, being
/// JSON, writes as null and the report reads back as NaN).
fn push_candidate(t: &mut Table, prefix: &str, picks: &[Option<&CandidateResult>]) {
    let finite = |v: f64| if v.is_finite() { v } else { f64::NAN };
    let f = |get: &dyn Fn(&CandidateResult) -> f64| TableColumn::F64(picks.iter().map(|c| c.map_or(f64::NAN, |c| finite(get(c)))).collect());
    t.push(&format!("{prefix}_sentence"), TableColumn::Str(picks.iter().map(|c| c.map_or(String::new(), |c| c.sentence.clone())).collect()));
    t.push(
        &format!("{prefix}_covariates"),
        TableColumn::Str(picks.iter().map(|c| c.map_or(String::new(), |c| c.candidate.covariates().iter().map(|v| v.name()).collect::<Vec<_>>().join("+"))).collect()),
    );
    t.push(&format!("{prefix}_strength"), f(&|c| c.strength));
    t.push(&format!("{prefix}_test_firing"), f(&|c| c.test_firing.map_or(f64::NAN, |n| n as f64)));
    t.push(&format!("{prefix}_test_auroc"), f(&|c| c.test.auroc));
    t.push(&format!("{prefix}_test_f1"), f(&|c| c.test.f1));
    t.push(&format!("{prefix}_test_precision"), f(&|c| c.test.precision));
    t.push(&format!("{prefix}_test_spearman"), f(&|c| c.test.spearman));
    t.push(&format!("{prefix}_test_r2"), f(&|c| c.test.r2));
    t.push(&format!("{prefix}_explain_auroc"), f(&|c| c.explain.auroc));
    t.push(&format!("{prefix}_explain_f1"), f(&|c| c.explain.f1));
    t.push(&format!("{prefix}_explain_spearman"), f(&|c| c.explain.spearman));
    t.push(&format!("{prefix}_explain_r2"), f(&|c| c.explain.r2));
    t.push(&format!("{prefix}_gap"), f(&|c| c.gap));
    t.push(&format!("{prefix}_p_value"), f(&|c| c.p_value));
    t.push(&format!("{prefix}_p_empirical"), f(&|c| c.p_empirical));
    t.push(&format!("{prefix}_q_value"), f(&|c| c.q_value));
}

/// The labels table.
pub fn labels_table(labels: &[FeatureLabel]) -> Table {
    let mut t = Table::default();
    t.push("layer", TableColumn::U32(labels.iter().map(|l| l.layer).collect()));
    t.push("feature", TableColumn::U32(labels.iter().map(|l| l.feature).collect()));
    t.push("density", TableColumn::F64(labels.iter().map(|l| l.density).collect()));
    t.push("accepted", TableColumn::Bool(labels.iter().map(|l| l.accepted).collect()));
    t.push("label", TableColumn::Str(labels.iter().map(|l| l.label.clone()).collect()));
    t.push("stability", TableColumn::F64(labels.iter().map(|l| l.stability).collect()));
    t.push("beats_baseline", TableColumn::Bool(labels.iter().map(|l| l.beats_baseline).collect()));
    t.push("sibling_auroc", TableColumn::F64(labels.iter().map(|l| l.sibling_auroc).collect()));
    t.push("siblings", TableColumn::U32(labels.iter().map(|l| l.siblings).collect()));
    for slot in 0..3 {
        let picks: Vec<Option<&CandidateResult>> = labels.iter().map(|l| l.candidates.get(slot)).collect();
        let prefix = if slot == 0 { "best".to_owned() } else { format!("runner_up_{slot}") };
        push_candidate(&mut t, &prefix, &picks);
    }
    let baselines: Vec<Option<&CandidateResult>> = labels.iter().map(|l| l.baseline.as_ref()).collect();
    push_candidate(&mut t, "baseline", &baselines);
    t.push("candidates_json", TableColumn::Str(labels.iter().map(|l| serde_json::to_string(&l.candidates).expect("serialisable")).collect()));
    t
}

/// Writes `DIR/labels.parquet` and `DIR/labels.csv`.
pub fn write_labels(dir: &Path, labels: &[FeatureLabel]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    labels_table(labels).write(&dir.join("labels.parquet"))
}
