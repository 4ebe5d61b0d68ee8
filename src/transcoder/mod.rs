//! Transcoders on the battery model's MLPs (DESIGN.md §3): CLT, PLT and MLSAE in one model whose
//! variant is configuration, trained on CPU with hand-written gradients, evaluated, and exported in
//! circuit-tracer's layout.
//!
//! Why hand-written: only the encoder product x·W_enc is dense. The decoder forward, every
//! gradient after it, and the encoder's weight gradient run over the active features alone
//! (`grad`), so a step costs the dense encoder plus O(L0), where a dense autograd trainer pays for
//! every feature in both directions (`scripts/bench_clt.sh` measures the difference).
//!
//! - `config`: `TranscoderConfig` (variant, σ, sparsity, λ schedule, optimiser, AuxK).
//! - `clt`: `Transcoder` with `encode`, `decode`, `forward`; `activation`: σ and sparse `Codes`.
//! - `grad`: loss and gradient of one batch; `adam`: the optimiser; `train`: the loop, init,
//!   checkpoints and resume; `autodiff`: the same loss through burn autodiff on any backend
//!   (the GPU trainer), with its Adam on the device; `sparse`: its decoding of the active
//!   features alone, differentiated without burn's row gather (`sparse_kernels` on a GPU).
//! - `cache`: `ActivationSource` (what the trainer reads) and `CacheSource` (sharded safetensors).
//! - `replacement`: the transcoder standing in for the MLPs during a forward pass, encoder by
//!   encoder (`online`'s fidelity, `circuits`' interventions).
//! - `metrics`: FVU, L0, dead/live features, MLSAE banding, replacement fidelity.
//! - `export`: circuit-tracer layouts out and in; `import`: `voltlens import-clt` (a foreign or
//!   exported transcoder made a transcoder folder, scored on cached activations); `bench`: the run
//!   against the PyTorch reference.
//! - `stage`: the pipeline's `transcoder` stage; `sweep`: many runs over a grid, the Pareto table
//!   and figures.

pub mod activation;
pub mod adam;
pub mod autodiff;
pub mod bench;
pub mod cache;
pub mod clt;
pub mod config;
pub(crate) mod dense;
pub mod device_encode;
pub mod export;
pub mod import;
pub mod grad;
pub mod metrics;
pub mod online;
pub mod replacement;
pub mod sparse;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod sparse_kernels;
pub(crate) mod tensors;
pub mod stage;
pub mod sweep;
pub mod train;

pub use activation::Codes;
#[cfg(feature = "cuda")]
pub use sparse_kernels::compile_for_cuda;
pub use bench::bench_vs_reference;
pub use cache::{write_cache, write_cache_shards, ActivationSource, Batch, CacheSource, MemorySource};
pub use clt::{ForwardOutput, Shape, Transcoder};
pub use config::{Activation, LambdaSchedule, Sparsity, Trainer, TranscoderConfig, Variant};
pub use export::{export_circuit_tracer, import_circuit_tracer};
pub use metrics::{evaluate, layer_sq_norms, replacement_fidelity, Band, Fidelity, Metrics, Replacement};
pub use train::{train, train_with, CurvePoint, TrainReport};
