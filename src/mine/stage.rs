//! The `mine` stage: the recorded activations → per-feature statistics and example windows.
//!
//! ```text
//! out_dir/
//!   features.parquet (+ csv)   one row per firing feature: density, mean, max, histogram
//!   examples.parquet (+ csv)   top-k, per-quantile and non-firing windows
//!   mined.json                 all of it, for the report stage to reload without recomputing
//! ```

use std::path::Path;

use super::{mine, tables::write_mined, MineConfig};
use crate::Result;
use crate::io::{read_json, write_json};
use crate::record::{read_sparse, RecordSummary, SUMMARY_FILE};

/// The mine stage's full result, reloaded by the report stage.
pub const MINED_FILE: &str = "mined.json";

/// Mines the record in `record_dir` into `out_dir`; returns a summary for the pipeline log.
pub fn run_mine_stage(record_dir: &Path, cfg: &MineConfig, out_dir: &Path) -> Result<serde_json::Value> {
    let summary: RecordSummary = read_json(&record_dir.join(SUMMARY_FILE))?;
    let acts = read_sparse(record_dir)?;
    let mined = mine(&acts, cfg);
    write_mined(out_dir, &mined)?;
    write_json(&out_dir.join(MINED_FILE), &mined)?;
    // read_sparse keeps only features that fire, so the rest of the dictionary is dead.
    let total = summary.encoders * summary.features_per_layer;
    let live = acts.features.len();
    Ok(serde_json::json!({
        "out_dir": out_dir,
        "features": total,
        "live_features": live,
        "dead_features": total - live,
        "firing_steps": summary.activation_rows,
        "features_table": out_dir.join("features.parquet"),
        "examples_table": out_dir.join("examples.parquet"),
    }))
}
