//! The sweep's table: one row per run, its Pareto flags, and `pareto.json` / `pareto.csv`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::grid::{activation_name, variant_name};
use super::RunMetrics;
use crate::Result;
use crate::io::write_json;
use crate::mine::tables::{Table, TableColumn};
use crate::transcoder::config::Variant;

/// One run as the Pareto figures and tables show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// The run's folder under `runs/`.
    pub id: String,
    pub variant: Variant,
    pub activation: String,
    pub features: usize,
    /// 0 for TopK/BatchTopK, which are not penalised.
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub lambda: f64,
    /// Active features per token, mean over encoders (the MLSAE's one encoder spans all layers).
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub l0: f64,
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub l0_pct: f64,
    /// Mean over layers of the held-out FVU.
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub fvu: f64,
    /// Replacement fidelity with every MLP replaced; None for the MLSAE.
    pub fidelity: Option<f64>,
    /// Share of features never firing on the held-out tokens, in %.
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub dead_pct: f64,
    #[serde(deserialize_with = "crate::json::or_nan")]
    pub train_seconds: f64,
    /// On its variant's front of (L0 ↓, FVU ↓).
    pub front_fvu: bool,
    /// On its variant's front of (L0 ↓, fidelity ↑); false without a fidelity.
    pub front_fidelity: bool,
}

fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64
}

impl SweepRow {
    /// The row of a finished run; Pareto flags are set by `mark_fronts`.
    pub fn of(run: &RunMetrics) -> SweepRow {
        let c = &run.config;
        let l0 = mean(&run.heldout.l0_per_layer);
        SweepRow {
            id: run.id.clone(),
            variant: c.variant,
            activation: activation_name(&c.activation),
            features: c.features,
            // Through its decimal form, so that tables say 0.0003 rather than 0.000300000014.
            lambda: c.lambda.to_string().parse().expect("a float's own decimal form"),
            l0,
            l0_pct: 100.0 * l0 / c.features as f64,
            fvu: mean(&run.heldout.fvu_per_layer),
            fidelity: run.fidelity.as_ref().map(|f| f.fidelity.all_layers as f64),
            dead_pct: 100.0 * run.heldout.dead_fraction as f64,
            train_seconds: run.train_seconds,
            front_fvu: false,
            front_fidelity: false,
        }
    }
}

/// Which points are on the Pareto front when both coordinates are to be minimised: no other point
/// is at least as good in both and better in one. Non-finite points are never on it and never
/// push others off.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<bool> {
    let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
    points
        .iter()
        .map(|p| finite(p) && !points.iter().any(|q| finite(q) && q.0 <= p.0 && q.1 <= p.1 && (q.0 < p.0 || q.1 < p.1)))
        .collect()
}

/// Sets each row's flags against the other runs of its variant.
pub fn mark_fronts(rows: &mut [SweepRow]) {
    for variant in [Variant::Clt, Variant::Plt, Variant::Mlsae, Variant::Sae] {
        let idx: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].variant == variant).collect();
        let fvu: Vec<(f64, f64)> = idx.iter().map(|&i| (rows[i].l0, rows[i].fvu)).collect();
        let fid: Vec<(f64, f64)> = idx.iter().map(|&i| (rows[i].l0, rows[i].fidelity.map_or(f64::NAN, |f| -f))).collect();
        for ((&i, a), b) in idx.iter().zip(pareto_front(&fvu)).zip(pareto_front(&fid)) {
            rows[i].front_fvu = a;
            rows[i].front_fidelity = b;
        }
    }
}

/// `pareto.json`, and `pareto.csv` (with a Parquet twin; a missing fidelity is NaN there).
pub fn write_tables(rows: &[SweepRow], dir: &Path) -> Result<()> {
    write_json(&dir.join("pareto.json"), &rows)?;
    let col = |f: &dyn Fn(&SweepRow) -> f64| TableColumn::F64(rows.iter().map(f).collect());
    let mut t = Table::default();
    t.push("id", TableColumn::Str(rows.iter().map(|r| r.id.clone()).collect()));
    t.push("variant", TableColumn::Str(rows.iter().map(|r| variant_name(r.variant).to_owned()).collect()));
    t.push("activation", TableColumn::Str(rows.iter().map(|r| r.activation.clone()).collect()));
    t.push("features", TableColumn::U32(rows.iter().map(|r| r.features as u32).collect()));
    t.push("lambda", col(&|r| r.lambda));
    t.push("l0", col(&|r| r.l0));
    t.push("l0_pct", col(&|r| r.l0_pct));
    t.push("fvu", col(&|r| r.fvu));
    t.push("fidelity", col(&|r| r.fidelity.unwrap_or(f64::NAN)));
    t.push("dead_pct", col(&|r| r.dead_pct));
    t.push("train_seconds", col(&|r| r.train_seconds));
    t.push("front_fvu", TableColumn::Bool(rows.iter().map(|r| r.front_fvu).collect()));
    t.push("front_fidelity", TableColumn::Bool(rows.iter().map(|r| r.front_fidelity).collect()));
    t.write(&dir.join("pareto.parquet"))
}

/// The table as the command line prints it.
pub fn format_table(rows: &[SweepRow]) -> String {
    let mut out = format!(
        "{:<28} {:>9} {:>7} {:>8} {:>9} {:>7} {:>8}  front\n",
        "run", "L0", "L0 %", "FVU", "fidelity", "dead %", "train s"
    );
    for r in rows {
        let fidelity = r.fidelity.map_or("–".to_owned(), |f| format!("{f:.4}"));
        let front = match (r.front_fvu, r.front_fidelity) {
            (true, true) => "FVU, fidelity",
            (true, false) => "FVU",
            (false, true) => "fidelity",
            (false, false) => "",
        };
        out += &format!(
            "{:<28} {:>9.2} {:>7.2} {:>8.4} {:>9} {:>7.1} {:>8.0}  {front}\n",
            r.id, r.l0, r.l0_pct, r.fvu, fidelity, r.dead_pct, r.train_seconds
        );
    }
    out
}
