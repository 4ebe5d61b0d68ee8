//! VoltLens: open up battery foundation models.
//!
//! Stages, one module each, data flowing one way (see DESIGN.md §0):
//! `data` (ingest, derive, synth, windows) → `model` (the LBLM) → transcoders → record → mine →
//! label → report → circuits, all driven by `pipeline`.

pub mod bench;
pub mod circuits;
pub mod cli;
pub mod data;
pub mod error;
pub mod io;
pub mod json;
pub mod label;
pub mod mine;
pub mod model;
pub mod pipeline;
pub mod plot_style;
pub mod progress;
pub mod report;
pub mod stats;
pub mod record;
pub mod transcoder;

pub use error::{Error, Result};
