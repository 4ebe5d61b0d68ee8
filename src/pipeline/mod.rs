//! The staged pipeline runner (DESIGN.md §8).
//!
//! A pipeline TOML names a dataset and the settings of each stage. `run` executes the stages in
//! order into `runs/<name>/<stage>/`. Each stage writes into `<stage>.partial/` and is renamed
//! into place only when it succeeds, with a manifest whose fingerprint covers its settings, its
//! inputs, the seed and the VoltLens version: a stage whose fingerprint matches is skipped, a
//! killed stage resumes from what it left in `.partial/` (training checkpoints), and nothing
//! half-written ever sits under a stage's final name.

pub mod config;
pub mod manifest;
pub mod stages;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use config::PipelineConfig;
use manifest::{fingerprint, Manifest};
pub use stages::Stage;

use crate::{Error, Result};

/// How to run a pipeline.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Redo this stage and every stage after it.
    pub from: Option<String>,
    /// Redo every stage.
    pub force: bool,
    /// Override the runs directory (default: the pipeline's `runs_dir`, else `runs/`).
    pub runs_dir: Option<PathBuf>,
    /// The device of every stage whose table names none (the pipeline's top-level `device`).
    pub device: Option<crate::model::DeviceChoice>,
}

/// What happened to one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageOutcome {
    Ran { seconds: u64 },
    Skipped,
}

/// Everything a stage can see: its run's directories and the seed.
pub struct StageContext {
    pub run_dir: PathBuf,
    pub seed: u64,
    pub name: String,
    /// The stages of this pipeline: a folder of a stage not among them is stale, never read.
    pub stages: Vec<&'static str>,
}

impl StageContext {
    /// The final output directory of an (earlier) stage.
    pub fn stage_dir(&self, stage: &str) -> PathBuf {
        self.run_dir.join(stage)
    }

    /// The output directory of `stage` if this pipeline has that stage.
    pub fn optional_stage_dir(&self, stage: &str) -> Option<PathBuf> {
        self.stages.contains(&stage).then(|| self.stage_dir(stage))
    }
}

/// Runs a pipeline file. Returns each stage's outcome, in order.
pub fn run_file(path: &Path, opts: &RunOptions) -> Result<Vec<(String, StageOutcome)>> {
    let config = PipelineConfig::load_on(path, opts.device)?;
    run(&config, opts)
}

pub fn run(config: &PipelineConfig, opts: &RunOptions) -> Result<Vec<(String, StageOutcome)>> {
    let stages = stages::build(config)?;
    if let Some(from) = &opts.from {
        if !stages.iter().any(|s| s.name() == from) {
            let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
            return Err(Error::Config(format!("--from {from}: no such stage in this pipeline (stages: {})", names.join(", "))));
        }
    }
    let runs_dir = opts.runs_dir.clone().unwrap_or_else(|| config.runs_dir.clone());
    let ctx = StageContext {
        run_dir: runs_dir.join(&config.name),
        seed: config.seed,
        name: config.name.clone(),
        stages: stages.iter().map(|s| s.name()).collect(),
    };
    std::fs::create_dir_all(&ctx.run_dir).map_err(|e| Error::io(&ctx.run_dir, e))?;
    let mut upstream = String::new();
    let mut redo = opts.force;
    let mut outcomes = Vec::new();
    for stage in &stages {
        redo |= opts.from.as_deref() == Some(stage.name());
        let config_json = stage.config();
        let mut inputs: Vec<(String, String)> = vec![("upstream".to_owned(), upstream.clone())];
        for input in stage.external_inputs() {
            if !input.exists() {
                return Err(Error::Config(format!(
                    "stage '{}': input {} does not exist{}",
                    stage.name(),
                    input.display(),
                    stage.missing_input_hint()
                )));
            }
            inputs.push((input.display().to_string(), manifest::file_fingerprint(&input)?));
        }
        let version = env!("CARGO_PKG_VERSION");
        let inputs_text = serde_json::to_string(&inputs).expect("serialisable");
        let fp = fingerprint(&[
            ("stage", stage.name()),
            ("config", &config_json.to_string()),
            ("inputs", &inputs_text),
            ("seed", &ctx.seed.to_string()),
            ("version", version),
        ]);
        let out = ctx.stage_dir(stage.name());
        let up_to_date = Manifest::read(&out).is_some_and(|m| m.fingerprint == fp);
        if up_to_date && !redo {
            tracing::info!("stage {}: up to date, skipped", stage.name());
            outcomes.push((stage.name().to_owned(), StageOutcome::Skipped));
            upstream = fp;
            continue;
        }
        // A stage redone on request (or after an upstream rerun) starts clean; only a killed run
        // resumes from its `.partial`.
        let partial = prepare_partial(&out, &fp, redo)?;
        // Everything after a stage that runs again must run again too.
        redo = true;
        let started_at = chrono_now();
        let t0 = Instant::now();
        tracing::info!("stage {}: running", stage.name());
        let summary = stage.run(&ctx, &partial).map_err(|e| Error::Other(format!("stage '{}': {e}", stage.name())))?;
        // Stages name their files by where they wrote them; point those names at the final place.
        let summary = retarget(summary, &partial, &out);
        let manifest = Manifest {
            stage: stage.name().to_owned(),
            fingerprint: fp.clone(),
            voltlens_version: version.to_owned(),
            seed: ctx.seed,
            config: config_json,
            inputs,
            started_at,
            seconds: t0.elapsed().as_secs_f64(),
            summary,
        };
        manifest.write(&partial)?;
        std::fs::remove_file(partial.join(PARTIAL_MARK)).map_err(|e| Error::io(&partial, e))?;
        if Manifest::read(&out).is_some() {
            crate::io::mark_owned(&out)?; // a stage folder from before outputs were marked
        }
        crate::io::replace_dir(&partial, &out)?;
        outcomes.push((stage.name().to_owned(), StageOutcome::Ran { seconds: t0.elapsed().as_secs() }));
        upstream = fp;
    }
    Ok(outcomes)
}

fn retarget(summary: serde_json::Value, partial: &Path, out: &Path) -> serde_json::Value {
    let text = summary.to_string().replace(&*partial.to_string_lossy(), &out.to_string_lossy());
    serde_json::from_str(&text).expect("replacing a path inside JSON strings keeps it valid")
}

/// Marks a `.partial` directory with the fingerprint it was started for.
const PARTIAL_MARK: &str = "partial.fingerprint";

/// The `.partial` directory for a stage: kept when it belongs to the same fingerprint (so a killed
/// training resumes from its checkpoints), emptied otherwise or when `fresh`.
fn prepare_partial(out: &Path, fp: &str, fresh: bool) -> Result<PathBuf> {
    let partial = out.with_file_name(format!("{}.partial", out.file_name().expect("stage dir").to_string_lossy()));
    let mark = partial.join(PARTIAL_MARK);
    let same = std::fs::read_to_string(&mark).is_ok_and(|m| m == fp);
    if (fresh || !same) && partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    } else if partial.exists() {
        crate::io::remove_temp_leftovers(&partial)?; // resume from finished files only
    }
    std::fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    crate::io::write_atomic(&mark, fp.as_bytes())?;
    Ok(partial)
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Runs several pipelines one after another (one device, one at a time), carrying on past
/// failures. Returns (file, result) per pipeline.
pub fn batch(files: &[PathBuf], opts: &RunOptions) -> Vec<(PathBuf, Result<Vec<(String, StageOutcome)>>, f64)> {
    files
        .iter()
        .map(|f| {
            let t0 = Instant::now();
            let result = run_file(f, opts);
            if let Err(e) = &result {
                tracing::error!("{}: {e}", f.display());
            }
            (f.clone(), result, t0.elapsed().as_secs_f64())
        })
        .collect()
}
