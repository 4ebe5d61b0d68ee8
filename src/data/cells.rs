//! The cells table (`cells.parquet`): one row per cell, DESIGN.md §1.1.

use serde::{Deserialize, Serialize};

/// How a cell's SOC was anchored (DESIGN §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorMethod {
    /// SOC = 1 at the end of a charge that tapered at the upper cut-off (a CV hold).
    CvHold,
    /// SOC = 0 after a low-rate discharge to the lower cut-off, or a discharge that tapers there
    /// to C/10 (a CV hold on discharge; less what the taper would still give).
    LowRateDischarge,
    /// SOC from the relaxed voltage at long rests, through the OCV–SOC relation learned from the
    /// dataset's anchored cells of the same type.
    OcvRest,
    /// No trustworthy anchor: the cell has no absolute SOC (`soc` is null).
    Unanchored,
}

impl AnchorMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AnchorMethod::CvHold => "cv_hold",
            AnchorMethod::LowRateDischarge => "low_rate_discharge",
            AnchorMethod::OcvRest => "ocv_rest",
            AnchorMethod::Unanchored => "unanchored",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::CvHold, Self::LowRateDischarge, Self::OcvRest, Self::Unanchored].into_iter().find(|m| m.as_str() == s)
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
    /// The anchor's stated confidence: its estimated SOC error (1 σ, as a fraction of nominal
    /// capacity); `None` for an unanchored cell.
    #[serde(default)]
    pub anchor_uncertainty: Option<f64>,
    /// Cut-off voltages used to anchor SOC (given, or inferred: `metadata` says which).
    #[serde(default)]
    pub upper_cutoff_v: Option<f64>,
    #[serde(default)]
    pub lower_cutoff_v: Option<f64>,
    /// Free-form metadata (JSON object as a string), including reader warnings.
    pub metadata: String,
}
