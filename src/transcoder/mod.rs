//! Transcoders on the battery model's MLPs (DESIGN.md §3): CLT, PLT and MLSAE, trained with
//! hand-written sparse gradients on CPU, evaluated, and exported in circuit-tracer's layout.

pub mod activation;
pub mod adam;
pub mod bench;
pub mod cache;
pub mod clt;
pub mod config;
mod dense;
pub mod export;
pub mod grad;
pub mod metrics;
pub mod train;
mod tensors;

pub use activation::Codes;
pub use clt::{ForwardOutput, Shape, Transcoder};
pub use config::{Activation, LambdaSchedule, Sparsity, TranscoderConfig, Variant};
pub use train::{train, TrainReport};
pub use cache::{ActivationSource, Batch, CacheSource};
pub use metrics::{evaluate, replacement_fidelity, Metrics};
pub use bench::bench_vs_reference;
pub use export::{export_circuit_tracer, import_circuit_tracer};
