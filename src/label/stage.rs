//! The `label` stage: labels for the recorded features, and their firing across protocols.
//!
//! ```text
//! out_dir/
//!   labels.parquet (+ csv)   `tables::write_labels`
//!   protocol_effects.csv     `metadata::protocol_effects`
//!   labels.json              every label with all its candidates, for the report stage
//!   codings.json             the bins and categories the labels' bounds refer to (`label --check`)
//!   split.csv                each cell's part of the split: explain (fit), explain (check), test
//! ```

use std::path::Path;

use polars::prelude::{CsvWriter, SerWriter};

use super::covariates::{Covariate, Covariates};
use super::metadata::protocol_effects;
use super::source::{ActivationSource, RecordSource};
use super::tables::write_labels;
use super::{label_features_with_codings, split_halves, FeatureLabel, LabelConfig};
use crate::data::canonical::{read_cell, Dataset, DatasetPaths};
use crate::data::cells::CellInfo;
use crate::{Error, Result};

/// The label stage's full result, reloaded by the report stage.
pub const LABELS_FILE: &str = "labels.json";
/// The codings (bin edges, category names) the labels were searched on.
pub const CODINGS_FILE: &str = "codings.json";

/// Labels the features recorded in `record_dir` over the dataset at `dataset_dir` into
/// `out_dir`; returns live features, the accepted share and the held-out scores of accepted
/// labels (median and quartiles).
pub fn run_label_stage(dataset_dir: &Path, record_dir: &Path, cfg: &LabelConfig, out_dir: &Path) -> Result<serde_json::Value> {
    cfg.check()?;
    let (cells, acts, covariates) = load_inputs(dataset_dir, record_dir, cfg)?;
    let counts = acts.counts()?;
    let mut effects = protocol_effects(&counts, &covariates, &cells)?;
    let (labels, codings) = label_features_with_codings(&acts, covariates, &cells, cfg)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    write_labels(out_dir, &labels)?;
    crate::io::write_json(&out_dir.join(LABELS_FILE), &labels)?;
    crate::io::write_json(&out_dir.join(CODINGS_FILE), &codings)?;
    write_csv(&out_dir.join("protocol_effects.csv"), &mut effects)?;
    write_split(&out_dir.join("split.csv"), &cells, cfg)?;
    Ok(summary(&labels, counts.len(), out_dir))
}

/// The dataset's cells, the record over them (checked to be over the same cells; its
/// activations are read a chunk of features at a time) and the covariates, with SOC from
/// `cfg.soc_column` when set. Each cell's time series is read, turned into covariates and
/// dropped, so at most one series per thread is in memory.
pub(crate) fn load_inputs(dataset_dir: &Path, record_dir: &Path, cfg: &LabelConfig) -> Result<(Vec<CellInfo>, RecordSource, Vec<Covariates>)> {
    use rayon::prelude::*;
    let acts = RecordSource::open(record_dir)?;
    let cells = Dataset::load_cells_of(dataset_dir, acts.cell_ids())
        .map_err(|e| Error::Config(format!("label: the record in {} was made over other cells ({e})", record_dir.display())))?;
    let paths = DatasetPaths::new(dataset_dir);
    let covariates = cells
        .par_iter()
        .map(|info| {
            let (_, data) = read_cell(&paths.cell_file(&info.cell_id))?;
            let mut cov = Covariates::from_cell(info, &data);
            if let Some(column) = &cfg.soc_column {
                cov.columns[Covariate::Soc.index()] = data.gt_f32(column).ok_or_else(|| {
                    Error::Config(format!("label: soc_column {column:?} is not a column of cell {} in {}", data.cell_id, dataset_dir.display()))
                })?;
            }
            Ok(cov)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((cells, acts, covariates))
}

/// Which cells the labels were chosen on and which scored them, so a user can rerun the
/// held-out scores on the same cells with other tools.
fn write_split(path: &Path, cells: &[CellInfo], cfg: &LabelConfig) -> Result<()> {
    let halves = split_halves(cells, cfg);
    let mut df = polars::df!(
        "cell_id" => cells.iter().map(|c| c.cell_id.as_str()).collect::<Vec<_>>(),
        "protocol" => cells.iter().map(|c| c.protocol.as_deref()).collect::<Vec<_>>(),
        "half" => halves.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
    )
    .map_err(|e| Error::in_file(path, e.to_string()))?;
    write_csv(path, &mut df)
}

pub(crate) fn write_csv(path: &Path, df: &mut polars::prelude::DataFrame) -> Result<()> {
    crate::io::write_via_temp(path, |tmp| {
        let mut file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        CsvWriter::new(&mut file).finish(df).map_err(|e| Error::in_file(path, e.to_string()))
    })
}

/// The stage's figures; shares are of the features labelled, all `live` ones or a sample.
fn summary(labels: &[FeatureLabel], live: usize, out_dir: &Path) -> serde_json::Value {
    let accepted: Vec<&FeatureLabel> = labels.iter().filter(|l| l.accepted).collect();
    let testable = labels.iter().filter(|l| l.testable()).count();
    // Held-out scores of each accepted label: AUROC for detectors (yes/no and graded), Spearman
    // for trackers.
    let held_out = |get: &dyn Fn(&FeatureLabel) -> f64| {
        let values: Vec<f64> = accepted.iter().map(|l| get(l)).filter(|v| v.is_finite()).collect();
        quartiles(values)
    };
    let mut summary = serde_json::json!({
        "out_dir": out_dir,
        "live_features": live,
        "accepted": accepted.len(),
        "accepted_share": accepted.len() as f64 / labels.len().max(1) as f64,
        // Features that fire on some held-out cell: the ones a label could be tested on.
        "testable_features": testable,
        "accepted_share_of_testable": accepted.len() as f64 / testable.max(1) as f64,
        "test_auroc": held_out(&|l| l.candidates.first().map_or(f64::NAN, |c| c.test.auroc)),
        "test_spearman": held_out(&|l| l.candidates.first().map_or(f64::NAN, |c| c.test.spearman)),
        "shared_sentences": shared_sentences(&accepted),
        "labels": out_dir.join("labels.parquet"),
        "protocol_effects": out_dir.join("protocol_effects.csv"),
    });
    if labels.len() < live {
        summary["labelled_features"] = labels.len().into();
    }
    // Per layer, as a sample is drawn: features labelled and the share accepted.
    let mut by_layer: std::collections::BTreeMap<u32, (usize, usize)> = Default::default();
    for l in labels {
        let entry = by_layer.entry(l.layer).or_default();
        *entry = (entry.0 + 1, entry.1 + l.accepted as usize);
    }
    summary["by_layer"] = by_layer
        .into_iter()
        .map(|(layer, (n, accepted))| serde_json::json!({ "layer": layer, "labelled": n, "accepted_share": accepted as f64 / n as f64 }))
        .collect();
    summary
}

/// Sentences that more than three accepted features share, largest group first, with the
/// quartiles of their sibling AUROC: near 0.5, the features fire on the same steps and no label
/// can tell them apart (near-duplicate features); well above, a better label could.
fn shared_sentences(accepted: &[&FeatureLabel]) -> serde_json::Value {
    let mut groups: std::collections::BTreeMap<&str, Vec<f64>> = std::collections::BTreeMap::new();
    for l in accepted {
        groups.entry(l.label.as_str()).or_default().push(l.sibling_auroc);
    }
    let mut shared: Vec<(&str, Vec<f64>)> = groups.into_iter().filter(|(_, g)| g.len() > 3).collect();
    shared.sort_by_key(|(_, g)| std::cmp::Reverse(g.len()));
    shared
        .into_iter()
        .map(|(sentence, g)| serde_json::json!({ "sentence": sentence, "features": g.len(), "sibling_auroc": quartiles(g.into_iter().filter(|v| v.is_finite()).collect()) }))
        .collect()
}

/// Count, first quartile, median and third quartile (linear interpolation); null when empty.
pub(crate) fn quartiles(mut values: Vec<f64>) -> serde_json::Value {
    if values.is_empty() {
        return serde_json::json!({ "n": 0, "q25": null, "median": null, "q75": null });
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = q * (values.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
    };
    serde_json::json!({ "n": values.len(), "q25": at(0.25), "median": at(0.5), "q75": at(0.75) })
}
