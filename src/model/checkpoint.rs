//! A model directory and its checkpoints. Save and load live side by side.
//!
//! ```text
//! model_dir/
//!   config.json        ModelConfig + TrainConfig (what the run is)
//!   norm.json          input normalisation and target scale (train cells only)
//!   split.json         which cells train, validate and test
//!   model.mpk          final weights (burn record, full precision), written last
//!   summary.json       TrainSummary of the finished run
//!   checkpoints/
//!     latest           name of the newest complete checkpoint
//!     step-00000500/   model.mpk, optim.mpk (AdamW moments), state.json
//! ```
//! Every file is written to a temporary name and renamed into place, and a checkpoint directory
//! is complete before `latest` points at it, so a kill at any moment leaves a resumable run.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::config::{ModelConfig, TrainConfig};
use super::inputs::InputNorm;
use super::transformer::Lblm;
use crate::data::windows::Split;
use crate::io::{read_json, write_atomic, write_json};
use crate::{Error, Result};

/// What `config.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// The dataset the model was trained on, as given.
    pub dataset: String,
    pub voltlens_version: String,
}

/// Progress a checkpoint carries besides the weights.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps done.
    pub step: usize,
    /// Mean training loss over each logging interval: (step, loss).
    pub train_loss: Vec<(usize, f32)>,
    /// Validation loss and skill: (step, loss, skill).
    pub val: Vec<(usize, f32, f32)>,
    /// Seconds of training so far, over all resumptions.
    pub seconds: f64,
}

fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::default()
}

/// The files of a model directory.
pub struct ModelDir {
    pub root: PathBuf,
}

impl ModelDir {
    pub fn new(root: &Path) -> Self {
        ModelDir { root: root.to_path_buf() }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// The run's settings. A config.json saved before a default changed reads as it was trained:
    /// one that names no channels as `CHANNELS_BEFORE_SOC` (the default channels were then left
    /// out), one without `pushforward` or `soc_dropout` as 0, one without `pushforward_drift` as 1,
    /// one without `pushforward_drift_spread` as 0.
    pub fn read_config(&self) -> Result<RunConfig> {
        let mut value: serde_json::Value = read_json(&self.config())?;
        if let Some(model) = value.get_mut("model").and_then(|m| m.as_object_mut()) {
            model.entry("channels").or_insert_with(|| serde_json::json!(super::inputs::CHANNELS_BEFORE_SOC));
        }
        if let Some(train) = value.get_mut("train").and_then(|t| t.as_object_mut()) {
            for added in ["pushforward", "soc_dropout"] {
                train.entry(added).or_insert(serde_json::json!(0.0));
            }
            train.entry("pushforward_drift").or_insert(serde_json::json!(1.0));
            train.entry("pushforward_drift_spread").or_insert(serde_json::json!(0.0));
        }
        serde_json::from_value(value).map_err(|e| Error::in_file(&self.config(), format!("bad model config: {e}")))
    }
    pub fn norm(&self) -> PathBuf {
        self.root.join("norm.json")
    }
    pub fn split(&self) -> PathBuf {
        self.root.join("split.json")
    }
    pub fn weights(&self) -> PathBuf {
        self.root.join("model.mpk")
    }
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    /// Present when the model was trained elsewhere and imported (`import-model`).
    pub fn import_record(&self) -> PathBuf {
        self.root.join("import.json")
    }
    fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    pub fn create(&self) -> Result<()> {
        let dir = self.checkpoints();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))
    }

    /// Saves a checkpoint of `model`, the optimiser record (of the training backend `BO`) and
    /// the state, then points `latest` at it and removes older checkpoints.
    pub fn save_checkpoint<B: Backend, BO: Backend, R: Record<BO>>(
        &self,
        model: &Lblm<B>,
        optim: R,
        state: &TrainState,
    ) -> Result<()> {
        let name = format!("step-{:08}", state.step);
        let dir = self.checkpoints().join(&name);
        let partial = crate::io::fresh_temp_dir(&dir)?;
        write_record::<B, _>(&partial.join("model.mpk"), model.clone().into_record())?;
        write_record::<BO, _>(&partial.join("optim.mpk"), optim)?;
        write_json(&partial.join("state.json"), state)?;
        crate::io::replace_dir(&partial, &dir)?;
        write_atomic(&self.checkpoints().join("latest"), name.as_bytes())?;
        self.remove_checkpoints_except(&name)
    }

    fn remove_checkpoints_except(&self, keep: &str) -> Result<()> {
        let dir = self.checkpoints();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("step-") && name != keep {
                std::fs::remove_dir_all(entry.path()).map_err(|e| Error::io(&entry.path(), e))?;
            }
        }
        Ok(())
    }

    /// The newest complete checkpoint, if any: (model, optimiser record, state).
    pub fn load_checkpoint<B: Backend, R: Record<B>>(
        &self,
        cfg: &ModelConfig,
        device: &B::Device,
    ) -> Result<Option<(Lblm<B>, R, TrainState)>> {
        let latest = self.checkpoints().join("latest");
        let Ok(name) = std::fs::read_to_string(&latest) else {
            return Ok(None);
        };
        let dir = self.checkpoints().join(name.trim());
        let model = Lblm::new(cfg, 0, device).load_record(read_record(&dir.join("model.mpk"), device)?);
        let optim = read_record(&dir.join("optim.mpk"), device)?;
        let state = read_json(&dir.join("state.json"))?;
        Ok(Some((model, optim, state)))
    }

    /// Writes the final weights.
    pub fn save_weights<B: Backend>(&self, model: &Lblm<B>) -> Result<()> {
        write_record::<B, _>(&self.weights(), model.clone().into_record())
    }
}

fn write_record<B: Backend, R: Record<B>>(path: &Path, record: R) -> Result<()> {
    let bytes = Recorder::<B>::record(&recorder(), record, ())
        .map_err(|e| Error::Other(format!("{}: encoding the record: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

fn read_record<B: Backend, R: Record<B>>(path: &Path, device: &B::Device) -> Result<R> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Recorder::<B>::load(&recorder(), bytes, device)
        .map_err(|e| Error::in_file(path, format!("not a VoltLens checkpoint of this model: {e}")))
}

/// A trained model with everything needed to feed it.
pub struct LoadedModel<B: Backend> {
    pub model: Lblm<B>,
    pub norm: InputNorm,
    pub split: Split,
    pub config: RunConfig,
}

/// Loads a finished model directory (`model.mpk` + config, norm, split) onto `device`.
pub fn load_model<B: Backend>(model_dir: &Path, device: &B::Device) -> Result<LoadedModel<B>> {
    let dir = ModelDir::new(model_dir);
    if !dir.weights().exists() {
        let hint = if dir.checkpoints().join("latest").exists() { " (training has not finished: run train-model again to resume)" } else { "" };
        return Err(Error::Config(format!("{}: no trained model here{hint}", model_dir.display())));
    }
    let config = dir.read_config()?;
    let norm: InputNorm = read_json(&dir.norm())?;
    norm.check_channels(&config.model.channels)?;
    let split = read_json(&dir.split())?;
    let model = Lblm::new(&config.model, 0, device).load_record(read_record(&dir.weights(), device)?);
    Ok(LoadedModel { model, norm, split, config })
}
