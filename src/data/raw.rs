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
    /// Whether the file itself showed the current's sign (capacity or state columns); else
    /// ingest reads it from how the voltage answers current steps (`data::current_sign`).
    #[serde(default)]
    pub sign_from_data: bool,
}

impl RawChunk {
    /// The rows as an Arrow batch (for spilling between the two ingest passes); consumes the
    /// chunk so its columns move into the batch instead of being copied.
    pub fn into_record_batch(self) -> arrow::array::RecordBatch {
        use arrow::array::{Float32Array, Float64Array, Int32Array, UInt64Array};
        use arrow::datatypes::{DataType, Field};
        use std::sync::Arc;
        let fields = vec![
            Field::new("test_time", DataType::Float64, false),
            Field::new("current", DataType::Float32, false),
            Field::new("voltage", DataType::Float32, false),
            Field::new("temperature", DataType::Float32, true),
            Field::new("cycle_number", DataType::Int32, true),
            Field::new("step_index", DataType::Int32, true),
            Field::new("source_row", DataType::UInt64, false),
        ];
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(self.test_time)),
            Arc::new(Float32Array::from(self.current)),
            Arc::new(Float32Array::from(self.voltage)),
            Arc::new(Float32Array::from(self.temperature)),
            Arc::new(Int32Array::from(self.cycle_number)),
            Arc::new(Int32Array::from(self.step_index)),
            Arc::new(UInt64Array::from(self.source_row)),
        ];
        batch_with_extra(fields, columns, self.passthrough)
    }

    /// Inverse of `to_record_batch`.
    pub fn from_record_batch(batch: &arrow::array::RecordBatch) -> RawChunk {
        use arrow::array::{Array, Float32Array, Float64Array, Int32Array, UInt64Array};
        fn get<'b, T: 'static>(batch: &'b arrow::array::RecordBatch, name: &str) -> &'b T {
            batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<T>()).expect("spilled by to_record_batch")
        }
        let schema = batch.schema();
        RawChunk {
            test_time: get::<Float64Array>(batch, "test_time").values().to_vec(),
            current: get::<Float32Array>(batch, "current").values().to_vec(),
            voltage: get::<Float32Array>(batch, "voltage").values().to_vec(),
            temperature: get::<Float32Array>(batch, "temperature").iter().collect(),
            cycle_number: get::<Int32Array>(batch, "cycle_number").iter().collect(),
            step_index: get::<Int32Array>(batch, "step_index").iter().collect(),
            source_row: get::<UInt64Array>(batch, "source_row").values().to_vec(),
            passthrough: schema
                .fields()
                .iter()
                .zip(batch.columns())
                .skip(7)
                .map(|(f, c)| (f.name().clone(), c.clone()))
                .collect(),
        }
    }

    /// Keeps the rows whose `keep` flag is set (pass-through columns included).
    pub fn filter(&self, keep: &[bool]) -> RawChunk {
        fn pick<T: Clone>(v: &[T], keep: &[bool]) -> Vec<T> {
            v.iter().zip(keep).filter(|(_, k)| **k).map(|(x, _)| x.clone()).collect()
        }
        let mask = arrow::array::BooleanArray::from(keep.to_vec());
        RawChunk {
            test_time: pick(&self.test_time, keep),
            current: pick(&self.current, keep),
            voltage: pick(&self.voltage, keep),
            temperature: pick(&self.temperature, keep),
            cycle_number: pick(&self.cycle_number, keep),
            step_index: pick(&self.step_index, keep),
            source_row: pick(&self.source_row, keep),
            passthrough: self
                .passthrough
                .iter()
                .map(|(n, a)| (n.clone(), arrow::compute::filter(a, &mask).expect("mask has the chunk's length")))
                .collect(),
        }
    }
}

/// A batch of `fields`/`columns` followed by named extra columns (gt_* and other pass-through
/// columns, nullable, typed as they come).
pub fn batch_with_extra(
    mut fields: Vec<arrow::datatypes::Field>,
    mut columns: Vec<ArrayRef>,
    extra: Vec<(String, ArrayRef)>,
) -> arrow::array::RecordBatch {
    for (name, array) in extra {
        fields.push(arrow::datatypes::Field::new(name, array.data_type().clone(), true));
        columns.push(array);
    }
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
    arrow::array::RecordBatch::try_new(schema, columns).expect("columns have the rows' length")
}
