//! The LBLM battery model (DESIGN.md §2): a small decoder-only transformer over per-step cycler
//! channels that predicts the next voltage, with hooks for the transcoder stages.
//!
//! - `config`: model, training and evaluation settings;
//! - `inputs`: the per-step input channels and the scaled-ΔV target;
//! - `transformer`: the model, its hook points and MLP replacement;
//! - `train` / `eval`: the `train-model` and `eval-model` stages;
//! - `checkpoint`: the model directory, checkpoints and `load_model`;
//! - `import` / `export`: models trained elsewhere in, VoltLens models out (safetensors + TOML);
//! - `ridge`, `plot`: the linear baseline and the figures of `eval-model`;
//! - `bench`: training and inference throughput;
//! - `backend`: the one place a burn backend (CPU or CUDA) is chosen.

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod export;
pub mod import;
pub mod inputs;
pub mod plot;
pub mod ridge;
pub mod train;
pub mod transformer;

pub use bench::{bench, ModelBench};
pub use checkpoint::{load_model, LoadedModel};
pub use eval::{eval_model, EvalMetrics};
pub use config::{DeviceChoice, EvalCells, EvalConfig, HeadTarget, Loss, MlpKind, ModelConfig, NormKind, Positional, TrainConfig};
pub use export::export_model;
pub use import::{import_model, ImportRequest, Tolerance};
pub use inputs::{InputNorm, CHANNELS, N_CHANNELS};
pub use train::{train_model, TrainSummary};
pub use transformer::{LayerActivations, Lblm, MlpReplacement};
