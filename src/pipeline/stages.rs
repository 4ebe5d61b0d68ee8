//! The stages a pipeline can run, each a thin adapter from its TOML table to a library call.

use std::path::{Path, PathBuf};

use super::config::{DataStageConfig, ModelStageConfig, PipelineConfig};
use super::StageContext;
use crate::Result;

/// One stage of a pipeline.
pub trait Stage {
    fn name(&self) -> &'static str;
    /// The settings that determine its output (part of the fingerprint).
    fn config(&self) -> serde_json::Value;
    /// Files outside the run that it reads (fingerprinted by size and modification time).
    fn external_inputs(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    /// Said after "input X does not exist" to help the user.
    fn missing_input_hint(&self) -> String {
        String::new()
    }
    /// Produces the stage's output in `out` (a fresh or resumed `.partial` directory) and returns a
    /// summary for the manifest.
    fn run(&self, ctx: &StageContext, out: &Path) -> Result<serde_json::Value>;
}

/// The stages of a pipeline, in run order.
pub fn build(config: &PipelineConfig) -> Result<Vec<Box<dyn Stage>>> {
    let mut stages: Vec<Box<dyn Stage>> = vec![Box::new(DataStage(config.data.clone()))];
    if let Some(model) = &config.model {
        let mut model = model.clone();
        model.train.seed = config.seed;
        stages.push(Box::new(ModelStage(model)));
    }
    Ok(stages)
}

/// Where the model stage keeps the trained model and the evaluation, inside its directory.
pub const MODEL_DIR: &str = "model";
pub const EVAL_DIR: &str = "eval";

/// Directory, inside the data stage's output, that holds the canonical dataset.
pub const DATASET_DIR: &str = "dataset";

struct DataStage(DataStageConfig);

impl Stage for DataStage {
    fn name(&self) -> &'static str {
        "data"
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).expect("serialisable")
    }

    fn external_inputs(&self) -> Vec<PathBuf> {
        match &self.0 {
            DataStageConfig::Ingest { inputs, options } => inputs.iter().chain(options.column_map.iter()).cloned().collect(),
            DataStageConfig::Synth { .. } => Vec::new(),
        }
    }

    fn missing_input_hint(&self) -> String {
        " (set [data] inputs in the pipeline file to where the data lives)".to_owned()
    }

    fn run(&self, _ctx: &StageContext, out: &Path) -> Result<serde_json::Value> {
        let dataset = out.join(DATASET_DIR);
        let cells = match &self.0 {
            DataStageConfig::Ingest { inputs, options } => crate::data::ingest::ingest(inputs, &dataset, options)?,
            DataStageConfig::Synth { synth } => crate::data::ingest::synthesize(synth, &dataset)?,
        };
        let rows: u64 = cells.iter().map(|c| c.rows).sum();
        Ok(serde_json::json!({ "cells": cells.len(), "rows": rows }))
    }
}

struct ModelStage(ModelStageConfig);

impl Stage for ModelStage {
    fn name(&self) -> &'static str {
        "model"
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).expect("serialisable")
    }

    fn run(&self, ctx: &StageContext, out: &Path) -> Result<serde_json::Value> {
        let dataset = ctx.stage_dir("data").join(DATASET_DIR);
        let model_dir = out.join(MODEL_DIR);
        let trained = crate::model::train_model(&dataset, &self.0.arch, &self.0.train, &model_dir)?;
        let metrics = crate::model::eval_model(&dataset, &model_dir, &out.join(EVAL_DIR), &self.0.eval)?;
        Ok(serde_json::json!({ "train": trained, "eval": metrics.overall }))
    }
}
