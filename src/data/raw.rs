//! The columns a cycler file gives, in canonical units and sign, before derivation.
//!
//! Every vendor reader streams `RawChunk`s; ingest cleans them (time order), derives the
//! remaining canonical columns and writes Parquet row groups, so memory stays bounded by
//! the chunk size, not the file length.

use arrow::array::ArrayRef;

/// Rows read per chunk by the streaming readers.
pub const CHUNK_ROWS: usize = 65_536;

/// A run of consecutive rows from one cell, canonical units (s, A, V, °C), + current = charge.
#[derive(Debug, Default, Clone)]
pub struct RawChunk {
    /// Seconds since the start of the test.
    pub test_time: Vec<f64>,
    /// Amperes, positive while charging.
    pub current: Vec<f32>,
    /// Volts.
    pub voltage: Vec<f32>,
    /// °C; `None` where the file has no temperature for that row.
    pub temperature: Vec<Option<f32>>,
    /// As the cycler numbered it; `None` when the file has no cycle column (derived later).
    pub cycle_number: Vec<Option<i32>>,
    /// As the cycler numbered it; `None` when the file has no step column (derived later).
    pub step_index: Vec<Option<i32>>,
    /// The 1-based line (or record) number in the source file of each row, for error messages.
    pub source_row: Vec<u64>,
    /// Simulation ground truth (`gt_*`) and other pass-through columns, same length as the rows.
    pub passthrough: Vec<(String, ArrayRef)>,
}

impl RawChunk {
    pub fn len(&self) -> usize {
        self.test_time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.test_time.is_empty()
    }

    /// Appends one row (pass-through columns are handled by the readers that have them).
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        test_time: f64,
        current: f32,
        voltage: f32,
        temperature: Option<f32>,
        cycle_number: Option<i32>,
        step_index: Option<i32>,
        source_row: u64,
    ) {
        self.test_time.push(test_time);
        self.current.push(current);
        self.voltage.push(voltage);
        self.temperature.push(temperature);
        self.cycle_number.push(cycle_number);
        self.step_index.push(step_index);
        self.source_row.push(source_row);
    }
}

/// What a file says about its cell, besides the rows.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct SourceMetadata {
    /// Ampere-hours, when the file or its metadata states it.
    pub nominal_capacity_ah: Option<f64>,
    pub chemistry: Option<String>,
    pub protocol: Option<String>,
    pub ambient_temperature_c: Option<f64>,
    /// Anything else worth keeping (free-form JSON object), e.g. the PyBaMM settings.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Notes the reader wants the user to see (e.g. "current sign flipped to + = charge").
    pub warnings: Vec<String>,
}
