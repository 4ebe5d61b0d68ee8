//! The cells table (`cells.parquet`): one row per cell, DESIGN.md §1.1.

use serde::{Deserialize, Serialize};

/// How a cell's SOC was anchored (DESIGN §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorMethod {
    /// SOC = 1 at the end of a CV hold at the upper cut-off.
    CvHold,
    /// SOC = 0 after a low-rate discharge to the lower cut-off.
    LowRateDischarge,
    /// No anchor: starts at 1 because the first step discharges from rest near the top voltage.
    StartFull,
    /// No anchor found: SOC starts at 0.5 and is only relative (flagged).
    Unanchored,
}

impl AnchorMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AnchorMethod::CvHold => "cv_hold",
            AnchorMethod::LowRateDischarge => "low_rate_discharge",
            AnchorMethod::StartFull => "start_full",
            AnchorMethod::Unanchored => "unanchored",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::CvHold, Self::LowRateDischarge, Self::StartFull, Self::Unanchored].into_iter().find(|m| m.as_str() == s)
    }
}

/// One row of the cells table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellInfo {
    pub cell_id: String,
    /// The file the cell was read from (or `synth` for generated cells).
    pub source_file: String,
    /// The detected or given input format.
    pub format: String,
    pub nominal_capacity_ah: f64,
    /// True when the capacity was estimated from the data rather than given.
    pub capacity_estimated: bool,
    pub chemistry: Option<String>,
    pub protocol: Option<String>,
    pub ambient_temperature_c: Option<f64>,
    pub rows: u64,
    pub anchor_method: AnchorMethod,
    /// Free-form metadata (JSON object as a string), including reader warnings.
    pub metadata: String,
}
