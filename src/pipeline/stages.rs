//! The stages a pipeline can run, each a thin adapter from its TOML table to a library call.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::config::{DataStageConfig, ModelStageConfig, PipelineConfig, ReportStageConfig};
use super::StageContext;
use crate::circuits::stage::CircuitsConfig;
use crate::label::LabelConfig;
use crate::mine::MineConfig;
use crate::record::RecordConfig;
use crate::transcoder::stage::TranscoderStageConfig;
use crate::transcoder::sweep::SweepConfig;
use crate::{Error, Result};

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

/// The stages of a pipeline, in run order. Each later stage needs the one before it.
pub fn build(config: &PipelineConfig) -> Result<Vec<Box<dyn Stage>>> {
    let config = &seeded(config);
    let mut stages: Vec<Box<dyn Stage>> = vec![Box::new(DataStage(config.data.clone()))];
    push(&mut stages, "model", config.model.clone(), run_model)?;
    push(&mut stages, "transcoder", config.transcoder.clone(), run_transcoder)?;
    push(&mut stages, "record", config.record.clone(), run_record)?;
    let mine = config.mine.clone().map(|m| MineConfig { seed: config.seed, ..m });
    push(&mut stages, "mine", mine, run_mine)?;
    if config.label.is_some() && config.record.is_none() {
        return Err(Error::Config("[label] needs a [record] stage in the pipeline".to_owned()));
    }
    push(&mut stages, "label", config.label.clone(), run_label)?;
    push(&mut stages, "sweep", config.sweep.clone(), run_sweep)?;
    if config.circuits.is_some() && config.mine.is_none() {
        return Err(Error::Config("[circuits] needs a [mine] stage in the pipeline".to_owned()));
    }
    push(&mut stages, "circuits", config.circuits.clone(), run_circuits)?;
    if config.report.is_some() && (config.mine.is_none() || config.label.is_none()) {
        return Err(Error::Config("[report] needs [mine] and [label] stages in the pipeline".to_owned()));
    }
    push(&mut stages, "report", config.report.clone(), run_report)?;
    Ok(stages)
}

/// `config` with the pipeline's seed in every stage that draws random numbers (synthetic cells,
/// model weights and batches, transcoder initialisation and shuffles, mining samples, label
/// splits); it overrides a seed a stage table sets.
fn seeded(config: &PipelineConfig) -> PipelineConfig {
    let mut c = config.clone();
    let seed = c.seed;
    if let DataStageConfig::Synth { synth } = &mut c.data {
        synth.seed = seed;
    }
    c.model.iter_mut().for_each(|m| m.train.seed = seed);
    c.transcoder.iter_mut().for_each(|t| t.config.seed = seed);
    c.sweep.iter_mut().for_each(|s| s.base.seed = seed);
    c.mine.iter_mut().for_each(|m| m.seed = seed);
    c.label.iter_mut().for_each(|l| l.seed = seed);
    // Output effects for the features the label stage will sample (its draw, by the same seed).
    if let Some(sample) = c.label.as_ref().and_then(|l| l.sample) {
        c.mine.iter_mut().for_each(|m| m.effect_sample = Some(sample));
    }
    c
}

/// The upstream stage each stage reads from.
fn needs(name: &str) -> &'static str {
    match name {
        "model" => "data",
        "transcoder" | "sweep" => "model",
        "record" => "transcoder",
        "report" | "circuits" => "label",
        _ => "record",
    }
}

fn push<C: Serialize + 'static>(
    stages: &mut Vec<Box<dyn Stage>>,
    name: &'static str,
    config: Option<C>,
    run: RunFn<C>,
) -> Result<()> {
    let Some(config) = config else { return Ok(()) };
    let upstream = needs(name);
    if !stages.iter().any(|s| s.name() == upstream) {
        return Err(Error::Config(format!("[{name}] needs a [{upstream}] stage in the pipeline")));
    }
    stages.push(Box::new(ConfiguredStage { name, config, run }));
    Ok(())
}

type RunFn<C> = fn(&C, &StageContext, &Path) -> Result<serde_json::Value>;

/// A stage defined by its settings and the library call that runs it.
struct ConfiguredStage<C> {
    name: &'static str,
    config: C,
    run: RunFn<C>,
}

impl<C: Serialize> Stage for ConfiguredStage<C> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).expect("serialisable")
    }

    fn run(&self, ctx: &StageContext, out: &Path) -> Result<serde_json::Value> {
        (self.run)(&self.config, ctx, out)
    }
}

fn dataset_dir(ctx: &StageContext) -> PathBuf {
    ctx.stage_dir("data").join(DATASET_DIR)
}

fn model_dir(ctx: &StageContext) -> PathBuf {
    ctx.stage_dir("model").join(MODEL_DIR)
}

fn run_model(cfg: &ModelStageConfig, ctx: &StageContext, out: &Path) -> Result<serde_json::Value> {
    let dataset = dataset_dir(ctx);
    let model_dir = out.join(MODEL_DIR);
    let model = match (cfg.source, &cfg.import) {
        (super::config::ModelSource::Train, _) => serde_json::json!({ "train": crate::model::train_model(&dataset, &cfg.arch, &cfg.train, &model_dir)? }),
        // A resumed stage keeps a finished import (import-model writes its directory atomically).
        (super::config::ModelSource::Import, Some(_)) if model_dir.exists() => {
            serde_json::json!({ "import": crate::io::read_json::<serde_json::Value>(&crate::model::checkpoint::ModelDir::new(&model_dir).import_record())? })
        }
        (super::config::ModelSource::Import, Some(i)) => {
            let request = crate::model::ImportRequest {
                weights: &i.weights,
                arch: &i.config,
                out: &model_dir,
                check: i.check.as_deref(),
                tolerance: crate::model::Tolerance { volts: i.tolerance, relative: i.rel_tolerance },
                dataset: Some(&dataset),
                seed: cfg.train.seed,
            };
            serde_json::json!({ "import": crate::model::import_model(&request)? })
        }
        (super::config::ModelSource::Import, None) => {
            return Err(Error::Config("[model] source = \"import\" needs a [model.import] table (weights, config)".into()))
        }
    };
    let metrics = crate::model::eval_model(&dataset, &model_dir, &out.join(EVAL_DIR), &cfg.eval)?;
    let mut summary = model;
    summary["eval"] = serde_json::to_value(&metrics.overall).expect("serialisable");
    Ok(summary)
}

fn run_transcoder(cfg: &TranscoderStageConfig, ctx: &StageContext, out: &Path) -> Result<serde_json::Value> {
    crate::transcoder::stage::run_transcoder_stage(&dataset_dir(ctx), &model_dir(ctx), cfg, ctx.seed, out)
}

fn run_sweep(cfg: &SweepConfig, ctx: &StageContext, out: &Path) -> Result<serde_json::Value> {
    use crate::transcoder::sweep;
    let summary = sweep::run_sweep(&dataset_dir(ctx), &model_dir(ctx), cfg, ctx.seed, out)?;
    // A finished stage is never extended (changed settings start a fresh one), so its cache,
    // the largest thing in it, has served its purpose.
    let cache = out.join(sweep::CACHE_DIR);
    std::fs::remove_dir_all(&cache).map_err(|e| Error::io(&cache, e))?;
    Ok(summary.to_json(out))
}

fn run_record(cfg: &RecordConfig, ctx: &StageContext, out: &Path) -> Result<serde_json::Value> {
    let transcoder_dir = ctx.stage_dir("transcoder");
    let transcoder = crate::record::TranscoderInput::Dir(&transcoder_dir);
    let summary = crate::record::record(&dataset_dir(ctx), &model_dir(ctx), transcoder, cfg, out)?;
    Ok(serde_json::to_value(summary).expect("serialisable"))
}

fn run_mine(cfg: &MineConfig, ctx: &StageContext, out: &Path) -> Result<serde_json::Value> {
    let effect = crate::mine::effect::EffectSources { dataset: dataset_dir(ctx), model: model_dir(ctx), transcoder: ctx.stage_dir("transcoder") };
    crate::mine::stage::run_mine_stage(&ctx.stage_dir("record"), cfg, Some(&effect), out)
}

fn run_label(cfg: &LabelConfig, ctx: &StageContext, out: &Path) -> Result<serde_json::Value> {
    crate::label::stage::run_label_stage(&dataset_dir(ctx), &ctx.stage_dir("record"), cfg, out)
}

fn run_circuits(cfg: &CircuitsConfig, ctx: &StageContext, out: &Path) -> Result<serde_json::Value> {
    let inputs = crate::circuits::stage::CircuitsInputs {
        sources: crate::circuits::GraphSources {
            dataset: dataset_dir(ctx),
            model: model_dir(ctx),
            transcoder: ctx.stage_dir("transcoder"),
        },
        mined: ctx.stage_dir("mine").join(crate::mine::stage::MINED_FILE),
        labels: Some(ctx.stage_dir("label").join(crate::label::stage::LABELS_FILE)),
        sweep: ctx.optional_stage_dir("sweep"),
    };
    crate::circuits::stage::run_circuits_stage(&inputs, cfg, out)
}

fn run_report(cfg: &ReportStageConfig, ctx: &StageContext, _out: &Path) -> Result<serde_json::Value> {
    let out = crate::report::stage::report_dir(&cfg.dir, &ctx.run_dir);
    let extras: Vec<&str> = ["sweep", "circuits"].into_iter().filter(|s| ctx.stages.contains(s)).collect();
    let summary = report_from_run(&ctx.run_dir, &out, ReportScope::All, &extras, &cfg.explain)?;
    Ok(serde_json::json!({ "dir": summary.dir, "cards": summary.cards.len(), "card_ms_mean": summary.card_ms_mean, "explained": cfg.explain.len() }))
}

pub use crate::report::stage::Scope as ReportScope;

/// Draws the report of a finished run from its stage outputs, recomputing nothing upstream
/// (`voltlens report`). `extras`: which of the optional stages "sweep" and "circuits" to show
/// (a pipeline passes those it has, so a stale folder of a removed stage is never read).
/// `explain`: stretches to explain into `out/explain/<slug>/`, linked from the index.
pub fn report_from_run(
    run_dir: &Path,
    out: &Path,
    scope: ReportScope,
    extras: &[&str],
    explain: &[crate::report::explain::ExplainWindow],
) -> Result<crate::report::ReportSummary> {
    use crate::io::read_json;
    let stage = |name: &str| run_dir.join(name);
    for needed in ["data", "record", "mine", "label"] {
        if crate::pipeline::manifest::Manifest::read(&stage(needed)).is_none() {
            return Err(Error::Config(format!(
                "{}: stage '{needed}' has not finished; run the pipeline first",
                run_dir.display()
            )));
        }
    }
    let acts = crate::record::read_sparse(&stage("record"))?;
    let dataset = crate::data::canonical::Dataset::load_of(&stage("data").join(DATASET_DIR), &acts.cell_ids)?;
    let mined: crate::mine::MinedFeatures = read_json(&stage("mine").join(crate::mine::stage::MINED_FILE))?;
    let labels: Vec<crate::label::FeatureLabel> = read_json(&stage("label").join(crate::label::stage::LABELS_FILE))?;
    let covariates = crate::label::covariates::Covariates::for_dataset(&dataset);
    let export = stage("transcoder").join("circuit-tracer");
    let transcoder = if export.exists() { Some(crate::transcoder::import_circuit_tracer(&export)?) } else { None };
    let model_dir = stage("model").join(MODEL_DIR);
    let embedding = if model_dir.exists() { Some(crate::circuits::Embedding::load(&model_dir)?) } else { None };
    let metrics = |path: PathBuf| read_json::<serde_json::Value>(&path).ok();
    let mut run_config = serde_json::Map::new();
    for name in ["data", "model", "transcoder", "record", "mine", "label"] {
        if let Some(m) = crate::pipeline::manifest::Manifest::read(&stage(name)) {
            run_config.insert(name.to_owned(), m.config);
        }
    }
    // Where the sweep's figures and the circuits stage's graph are, for the report to show them.
    for &name in extras {
        if let Some(m) = crate::pipeline::manifest::Manifest::read(&stage(name)) {
            run_config.insert(name.to_owned(), serde_json::json!({ "dir": stage(name), "config": m.config }));
        }
    }
    let paths = report_paths(run_dir, &mined)?;
    let inputs = crate::report::ReportInputs {
        run_name: std::fs::canonicalize(run_dir).ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "run".into()),
        dataset: &dataset,
        acts: &acts,
        mined: &mined,
        labels: &labels,
        covariates: &covariates,
        transcoder: transcoder.as_ref(),
        embedding: embedding.as_ref(),
        model_metrics: model_metrics(&stage("model")),
        transcoder_metrics: metrics(stage("transcoder").join("metrics.json")),
        run_config: serde_json::Value::Object(run_config),
        paths: &paths,
        explained: explain,
    };
    let summary = crate::report::stage::run(&inputs, out, scope)?;
    for window in explain {
        crate::report::explain::explain_run(run_dir, window, &out.join("explain").join(window.slug()))?;
    }
    Ok(summary)
}

/// The model stage's overall figures for the report, with any flags its evaluation raised about
/// them, and for a model trained elsewhere how closely the import reproduced its source.
fn model_metrics(stage_dir: &Path) -> Option<serde_json::Value> {
    let m: serde_json::Value = crate::io::read_json(&stage_dir.join(EVAL_DIR).join("metrics.json")).ok()?;
    let mut overall = m.get("overall").cloned()?;
    let o = overall.as_object_mut()?;
    if let Some(flags) = m.get("flags") {
        o.insert("flags".into(), flags.clone());
    }
    // Beside the pooled figure, the rollouts of the cells whose conditions training spanned.
    if let (Some(cells), Some(serde_json::Value::Object(r))) = (m.pointer("/in_range/cells"), m.pointer("/in_range/discharge_rollout")) {
        let mut shown = r.clone();
        shown.insert("cells".into(), cells.clone());
        o.insert("in_range_discharge_rollout".into(), serde_json::Value::Object(shown));
    }
    let manifest = crate::pipeline::manifest::Manifest::read(stage_dir);
    if let Some(check) = manifest.as_ref().and_then(|m| m.summary.pointer("/import/check")?.as_object().cloned()) {
        // "steps" there counts each window's steps, not predictions as elsewhere in the box.
        let shown = check.into_iter().map(|(k, v)| (if k == "steps" { "steps_per_window".into() } else { k }, v));
        o.insert("import_check".into(), serde_json::Value::Object(shown.collect()));
    }
    Some(overall)
}

/// Computational paths into the features the circuits stage analysed (its `features` list) and
/// the graph's features past layer 0 (into which paths can run through other features), at each
/// one's strongest peak; none when the run has no circuits stage.
fn report_paths(run_dir: &Path, mined: &crate::mine::MinedFeatures) -> Result<Vec<crate::circuits::paths::FeaturePaths>> {
    use crate::io::read_json;
    let circuits = run_dir.join("circuits");
    let Some(manifest) = crate::pipeline::manifest::Manifest::read(&circuits) else { return Ok(Vec::new()) };
    let summary: serde_json::Value = crate::io::read_json(&circuits.join(crate::circuits::stage::SUMMARY_FILE))?;
    let ids: Vec<String> = summary.get("features").and_then(|f| serde_json::from_value(f.clone()).ok()).unwrap_or_default();
    let mut features = crate::report::stage::parse_feature_ids(&ids.join(","))?;
    if let Some(json) = summary.pointer("/graph/json").and_then(serde_json::Value::as_str) {
        let graph: crate::circuits::GraphFile = read_json(&circuits.join(crate::circuits::stage::GRAPH_DIR).join(json))?;
        for node in graph.nodes.iter().filter(|n| n.feature_type == "cross layer transcoder" && n.layer != "0") {
            let mut parts = node.node_id.split('_').map(str::parse::<u32>);
            if let (Some(Ok(l)), Some(Ok(f))) = (parts.next(), parts.next()) {
                if !features.contains(&(l, f)) {
                    features.push((l, f));
                }
            }
        }
    }
    let window = manifest.config.get("window").and_then(serde_json::Value::as_u64).map_or(crate::circuits::stage::CircuitsConfig::default().window, |w| w as usize);
    let sources = crate::circuits::GraphSources { dataset: run_dir.join("data").join(DATASET_DIR), model: run_dir.join("model").join(MODEL_DIR), transcoder: run_dir.join("transcoder") };
    crate::circuits::paths::paths_at_peaks(&sources, mined, &features, window)
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
        let mut summary = serde_json::json!({ "cells": cells.len(), "rows": rows });
        let skipped = crate::data::canonical::DatasetPaths::new(&dataset).skipped_list();
        if skipped.exists() {
            summary["skipped"] = crate::io::read_json(&skipped)?;
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::manifest::Manifest;

    /// The report's model box carries the evaluation's flags and, for an imported model, its check.
    #[test]
    fn model_metrics_carry_flags_and_the_import_check() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(EVAL_DIR)).unwrap();
        let metrics = serde_json::json!({ "overall": { "cells": 3 }, "flags": ["cycle rollouts are worse"] });
        crate::io::write_atomic(&dir.path().join(EVAL_DIR).join("metrics.json"), metrics.to_string().as_bytes()).unwrap();
        assert_eq!(model_metrics(dir.path()).unwrap(), serde_json::json!({ "cells": 3, "flags": ["cycle rollouts are worse"] }));
        // With a cell flagged as extrapolation, the others' discharge rollouts are shown apart.
        let rollout = serde_json::json!({ "rollouts": 4, "rmse_mv": 17.5 });
        let metrics = serde_json::json!({ "overall": { "cells": 3 }, "in_range": { "cells": 2, "discharge_rollout": rollout }, "flags": ["c: extrapolation"] });
        crate::io::write_atomic(&dir.path().join(EVAL_DIR).join("metrics.json"), metrics.to_string().as_bytes()).unwrap();
        let shown = model_metrics(dir.path()).unwrap();
        assert_eq!(shown["in_range_discharge_rollout"], serde_json::json!({ "cells": 2, "rollouts": 4, "rmse_mv": 17.5 }));
        let check = serde_json::json!({ "windows": 8, "steps": 512, "max_abs_error_v": 2e-7, "passed": true });
        let manifest = Manifest {
            stage: "model".into(),
            fingerprint: String::new(),
            voltlens_version: String::new(),
            seed: 0,
            config: serde_json::Value::Null,
            inputs: Vec::new(),
            started_at: String::new(),
            seconds: 0.0,
            summary: serde_json::json!({ "import": { "check": check } }),
        };
        manifest.write(dir.path()).unwrap();
        let shown = model_metrics(dir.path()).unwrap();
        assert_eq!(shown["import_check"], serde_json::json!({ "windows": 8, "steps_per_window": 512, "max_abs_error_v": 2e-7, "passed": true }));
    }
}
