//! Protocol metadata (DESIGN §5 step 7): each feature's firing rate per cell joined with the
//! cells table (polars), effect sizes of protocol, ambient temperature and C-rate on that rate,
//! and flags for features that fire in only one cell or one dataset.
//!
//! Effect size is η² (between-group share of the variance of per-cell firing rates), one
//! number on [0, 1] for every grouping, so a card can say "fires by protocol (η² = 0.9)".

use std::path::Path;

use polars::prelude::*;

use crate::data::cells::CellInfo;
use crate::label::covariates::{Covariate, Covariates};
use crate::mine::FiringCounts;
use crate::{Error, Result};

fn polars_err(e: PolarsError) -> Error {
    Error::Other(format!("protocol metadata: {e}"))
}

/// One row per (feature, cell): the share of the cell's steps where the feature fires.
fn firing_rates(counts: &[FiringCounts], cells: &[CellInfo], cell_rows: &[usize]) -> Result<DataFrame> {
    let (mut layer, mut feature, mut cell_id, mut rate) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for f in counts {
        for (c, &n) in f.per_cell.iter().enumerate() {
            layer.push(f.layer);
            feature.push(f.feature);
            cell_id.push(cells[c].cell_id.as_str());
            rate.push(n as f64 / cell_rows[c].max(1) as f64);
        }
    }
    df!("layer" => layer, "feature" => feature, "cell_id" => cell_id, "firing_rate" => rate).map_err(polars_err)
}

/// The cells table's grouping columns: protocol, ambient temperature, the cell's typical C-rate
/// (median |c_rate| while not resting, to 0.1C) and dataset (the source file's directory).
fn cell_groups(cells: &[CellInfo], covariates: &[Covariates]) -> Result<DataFrame> {
    let c_rate: Vec<f64> = covariates.iter().map(typical_c_rate).collect();
    let dataset: Vec<String> = cells
        .iter()
        .map(|c| Path::new(&c.source_file).parent().map(|p| p.display().to_string()).unwrap_or_default())
        .collect();
    df!(
        "cell_id" => cells.iter().map(|c| c.cell_id.as_str()).collect::<Vec<_>>(),
        "protocol" => cells.iter().map(|c| c.protocol.clone().unwrap_or_else(|| "unknown".into())).collect::<Vec<_>>(),
        "ambient_temperature_c" => cells.iter().map(|c| c.ambient_temperature_c.unwrap_or(f64::NAN)).collect::<Vec<_>>(),
        "cell_c_rate" => c_rate,
        "dataset" => dataset,
    )
    .map_err(polars_err)
}

fn typical_c_rate(cov: &Covariates) -> f64 {
    let mut moving: Vec<f32> = cov.column(Covariate::AbsCRate).iter().copied().filter(|r| *r > 0.01).collect();
    if moving.is_empty() {
        return 0.0;
    }
    let mid = moving.len() / 2;
    let (_, median, _) = moving.select_nth_unstable_by(mid, f32::total_cmp);
    (*median as f64 * 10.0).round() / 10.0
}

fn keys() -> [Expr; 2] {
    [col("layer"), col("feature")]
}

/// A left join that keeps the left rows' order. Order matters: η² sums over groups, and polars'
/// hash group-bys and joins otherwise return rows in a thread-dependent order, which changes the
/// sums' last bits from run to run (hence the stable group-bys too).
fn left_join() -> JoinArgs {
    JoinArgs { maintain_order: MaintainOrderJoin::Left, ..JoinArgs::new(JoinType::Left) }
}

/// η² of the firing rate grouped by `group`, per feature.
fn eta_squared(joined: &LazyFrame, overall: &LazyFrame, group: &str, name: &str) -> LazyFrame {
    let between = col("group_n").cast(DataType::Float64) * (col("group_mean") - col("mean_rate")) * (col("group_mean") - col("mean_rate"));
    joined
        .clone()
        .group_by_stable([col("layer"), col("feature"), col(group)])
        .agg([col("firing_rate").mean().alias("group_mean"), len().alias("group_n")])
        .join(overall.clone(), keys(), keys(), left_join())
        .group_by_stable(keys())
        .agg([between.sum().alias("ss_between"), col("ss_total").first().alias("ss_total")])
        .select([
            col("layer"),
            col("feature"),
            when(col("ss_total").gt(lit(1e-15))).then(col("ss_between") / col("ss_total")).otherwise(lit(0.0)).alias(name),
        ])
}

/// Per feature: cells and datasets it fires in, the one-cell / one-dataset flags, and η² of
/// its per-cell firing rate across protocol, ambient temperature and C-rate.
pub fn protocol_effects(counts: &[FiringCounts], covariates: &[Covariates], cells: &[CellInfo]) -> Result<DataFrame> {
    let cell_rows: Vec<usize> = covariates.iter().map(|c| c.len()).collect();
    let rates = firing_rates(counts, cells, &cell_rows)?.lazy();
    let groups = cell_groups(cells, covariates)?.lazy();
    let joined = rates.join(groups, [col("cell_id")], [col("cell_id")], left_join());
    let fires = col("firing_rate").gt(lit(0.0));
    let deviation = col("firing_rate") - col("firing_rate").mean();
    let overall = joined.clone().group_by_stable(keys()).agg([
        col("firing_rate").mean().alias("mean_rate"),
        (deviation.clone() * deviation).sum().alias("ss_total"),
        fires.clone().cast(DataType::UInt32).sum().alias("cells_firing"),
        col("dataset").filter(fires).n_unique().alias("datasets_firing"),
    ]);
    let mut out = overall.clone();
    for (group, name) in [("protocol", "eta2_protocol"), ("ambient_temperature_c", "eta2_ambient_temperature"), ("cell_c_rate", "eta2_c_rate")] {
        out = out.join(eta_squared(&joined, &overall, group, name), keys(), keys(), left_join());
    }
    out.with_columns([
        col("cells_firing").eq(lit(1u32)).alias("fires_in_one_cell"),
        col("datasets_firing").eq(lit(1u32)).alias("fires_in_one_dataset"),
    ])
    .drop(cols(["ss_total"]))
    .sort(["layer", "feature"], SortMultipleOptions::default())
    .collect()
    .map_err(polars_err)
}
