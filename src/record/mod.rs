//! Record stage (DESIGN §4): run the model and a transcoder over a whole dataset once, streaming,
//! and store the sparse codes every step gets, with the step's covariates beside them.
//!
//! ```text
//! out_dir/
//!   activations.parquet   (cell_id, row, layer, feature, value), value > 0, one row per firing
//!   covariates.parquet    (cell_id, row, soc, c_rate, …): `label::covariates` per step
//!   record.json           RecordSummary: cells in order, steps per cell, features per layer
//! ```
//!
//! Both Parquet files are written a row group at a time from a buffer of at most
//! `RecordConfig::max_buffer_rows` rows, so memory depends on that setting and on one cell's
//! steps, not on the dataset. [`RecordDir::cells`] reads them back a cell at a time (memory: one
//! cell); [`read_sparse`] reads every feature's activations into memory at once.

pub mod run;
pub mod stream;
pub mod tables;

pub use run::{record, step_windows, RecordConfig, RecordSummary, StepWindow, TranscoderInput};
pub use stream::{CellActivations, CellCovariates, Firing, RecordCell, RecordDir};
pub use tables::{firing_counts, read_sparse, read_sparse_where};

/// File names inside a record directory.
pub const ACTIVATIONS_FILE: &str = "activations.parquet";
pub const COVARIATES_FILE: &str = "covariates.parquet";
pub const SUMMARY_FILE: &str = "record.json";
