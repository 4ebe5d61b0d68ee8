//! The `mine` stage: the recorded activations → per-feature statistics and example windows.
//!
//! ```text
//! out_dir/
//!   features.parquet (+ csv)   one row per firing feature: density, mean, max, output effect, histogram
//!   examples.parquet (+ csv)   top-k, per-quantile and non-firing windows
//!   mined.json                 all of it, for the report stage to reload without recomputing
//! ```

use std::path::Path;

use super::effect::{output_effects, EffectSources};
use super::{mine_cells, tables::write_mined, MineConfig};
use crate::record::RecordDir;
use crate::Result;
use crate::io::write_json;

/// The mine stage's full result, reloaded by the report stage.
pub const MINED_FILE: &str = "mined.json";

/// Mines the record in `record_dir` into `out_dir`, streaming it a cell at a time; with
/// `effect`, also each feature's output effect. Returns a summary for the pipeline log.
pub fn run_mine_stage(record_dir: &Path, cfg: &MineConfig, effect: Option<&EffectSources>, out_dir: &Path) -> Result<serde_json::Value> {
    let record = RecordDir::open(record_dir)?;
    let mut mined = mine_cells(&record, cfg)?;
    if let Some(sources) = effect {
        output_effects(&mut mined, sources, cfg)?;
    }
    write_mined(out_dir, &mined)?;
    write_json(&out_dir.join(MINED_FILE), &mined)?;
    // Only features that fire are mined, so the rest of the dictionary is dead.
    let summary = &record.summary;
    let total = summary.encoders * summary.features_per_layer;
    let live = mined.features.len();
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
