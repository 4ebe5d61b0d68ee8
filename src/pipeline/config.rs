//! Pipeline files (`pipelines/*.toml`): a name, a seed, and one table per stage.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::data::ingest::IngestOptions;
use crate::data::synth::SynthConfig;
use crate::model::DeviceChoice;
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Names the run: outputs go to `<runs_dir>/<name>/`.
    pub name: String,
    /// Seeds every stage (splits, initialisation, sampling).
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_runs_dir")]
    pub runs_dir: PathBuf,
    /// The device of every stage table that takes one and names none (see `DEVICE_TABLES`), so
    /// that one line puts a pipeline on the GPU; `voltlens run|batch --device` sets it from the
    /// command line. Applied as the file is read: the stages' tables (and fingerprints) carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceChoice>,
    pub data: DataStageConfig,
    /// Train and evaluate the battery model (omit to stop after the data).
    pub model: Option<ModelStageConfig>,
    /// Train a transcoder on the model's MLPs (needs `[model]`).
    pub transcoder: Option<crate::transcoder::stage::TranscoderStageConfig>,
    /// Record feature activations over every step (needs `[transcoder]`).
    pub record: Option<crate::record::RecordConfig>,
    /// Per-feature statistics, example windows and output effects (needs `[record]`; the
    /// pipeline's `seed` overrides `[mine] seed`).
    pub mine: Option<crate::mine::MineConfig>,
    /// Automatic labels against physical covariates (needs `[record]`).
    pub label: Option<crate::label::LabelConfig>,
    /// Train many transcoders over a grid on one activation cache and draw the Pareto front
    /// (needs `[model]`; runs after `[label]`, so that changing it redoes only itself and the report).
    pub sweep: Option<crate::transcoder::sweep::SweepConfig>,
    /// Pullback tables of the most active features and one attribution graph (needs `[label]`,
    /// which needs `[mine]`'s peaks; the report shows them).
    pub circuits: Option<crate::circuits::stage::CircuitsConfig>,
    /// A report folder of PNG cards and an HTML index (needs `[mine]` and `[label]`).
    pub report: Option<ReportStageConfig>,
}

/// The `report` stage: writes `<dir>/<pipeline name>/`; a relative `dir` sits beside the runs
/// folder (so `--runs-dir elsewhere/runs` writes `elsewhere/reports/<name>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportStageConfig {
    pub dir: PathBuf,
    /// Stretches of cells to explain (`[[report.explain]]` with cell, from, to in seconds, top):
    /// each gets an `explain/<cell>_<from>-<to>s/` page in the report.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub explain: Vec<crate::report::explain::ExplainWindow>,
}

impl Default for ReportStageConfig {
    fn default() -> Self {
        ReportStageConfig { dir: PathBuf::from("reports"), explain: Vec::new() }
    }
}

/// The `model` stage: train the LBLM on the data stage's dataset (or import one trained
/// elsewhere, `source = "import"`), then evaluate it on held-out cells (an imported model: on
/// every cell). The pipeline's `seed` seeds training (it overrides `[model.train] seed`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelStageConfig {
    #[serde(skip_serializing_if = "is_train")]
    pub source: ModelSource,
    pub arch: crate::model::ModelConfig,
    pub train: crate::model::TrainConfig,
    pub eval: crate::model::EvalConfig,
    /// What `source = "import"` reads (`voltlens import-model`'s arguments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportSource>,
}

/// Where the `model` stage's model comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    #[default]
    Train,
    Import,
}

fn is_train(source: &ModelSource) -> bool {
    *source == ModelSource::Train
}

/// `[model.import]`: a model trained elsewhere (paths relative to the working directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportSource {
    /// f32 safetensors weights.
    pub weights: PathBuf,
    /// The architecture TOML (see `voltlens import-model --help`).
    pub config: PathBuf,
    /// Inputs and the source's outputs to check the import against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<PathBuf>,
    /// Largest tolerated difference in volts…
    #[serde(default = "default_import_tolerance")]
    pub tolerance: f64,
    /// …and relative to the largest source prediction.
    #[serde(default = "default_import_rel_tolerance")]
    pub rel_tolerance: f64,
}

fn default_import_tolerance() -> f64 {
    crate::model::Tolerance::default().volts
}

fn default_import_rel_tolerance() -> f64 {
    crate::model::Tolerance::default().relative
}

fn default_runs_dir() -> PathBuf {
    PathBuf::from("runs")
}

/// The `data` stage: ingest files, or generate synthetic cells.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", tag = "source")]
pub enum DataStageConfig {
    /// Ingest cycler exports or Parquet files (paths relative to the working directory).
    Ingest {
        inputs: Vec<PathBuf>,
        #[serde(default)]
        options: IngestOptions,
    },
    /// Generate synthetic cells.
    Synth {
        #[serde(default)]
        synth: SynthConfig,
    },
}

/// The stage tables that take a `device` (as TOML key paths): the model's training and evaluation,
/// the transcoder, the sweep, record, mine (output effects) and circuits (MLSAE analyses).
const DEVICE_TABLES: [&[&str]; 7] = [&["model", "train"], &["model", "eval"], &["transcoder"], &["sweep"], &["record"], &["mine"], &["circuits"]];

/// Gives `device` to each stage table of `doc` that names none; a stage the file leaves out stays
/// out (`[model.train]` and `[model.eval]` are made where `[model]` is present).
fn default_device(doc: &mut toml::Table, device: DeviceChoice) {
    'tables: for path in DEVICE_TABLES {
        let Some(toml::Value::Table(stage)) = doc.get_mut(path[0]) else { continue };
        let mut table: &mut toml::Table = stage;
        for key in &path[1..] {
            let toml::Value::Table(inner) = table.entry(*key).or_insert_with(|| toml::Value::Table(toml::Table::new())) else { continue 'tables };
            table = inner;
        }
        table.entry("device").or_insert_with(|| toml::Value::String(device.to_string()));
    }
}

impl PipelineConfig {
    pub fn load(path: &Path) -> Result<PipelineConfig> {
        Self::load_on(path, None)
    }

    /// Reads a pipeline file; `device`, if given, replaces the file's own top-level `device`.
    pub fn load_on(path: &Path, device: Option<DeviceChoice>) -> Result<PipelineConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let error = |e: toml::de::Error| Error::Config(format!("{}: {}", path.display(), e.to_string().trim_end()));
        // Parsed as written first, so that an error names its line.
        let mut config: PipelineConfig = toml::from_str(&text).map_err(error)?;
        if let Some(device) = device.or(config.device) {
            let mut doc: toml::Table = toml::from_str(&text).map_err(error)?;
            doc.insert("device".to_owned(), toml::Value::String(device.to_string()));
            default_device(&mut doc, device);
            config = toml::Value::Table(doc).try_into().map_err(error)?;
        }
        if config.name.is_empty() || !config.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(Error::Config(format!(
                "{}: name '{}' must be non-empty letters, digits, '.', '_' or '-'",
                path.display(),
                config.name
            )));
        }
        // Settings that would fail a late stage fail before the first one runs.
        if let Some(label) = &config.label {
            label.check().map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        }
        Ok(config)
    }
}

/// Every key of a pipeline file at its default, as TOML (`voltlens defaults`): the reference for
/// what a stage table takes, made from the code so it cannot drift from it. The data stage shows
/// `source = "ingest"`; `source = "synth"`'s `[data.synth]` follows, commented out.
pub fn defaults_toml() -> Result<String> {
    let full = PipelineConfig {
        name: "my-run".into(),
        seed: 0,
        runs_dir: default_runs_dir(),
        device: None,
        data: DataStageConfig::Ingest { inputs: vec![PathBuf::from("data")], options: IngestOptions::default() },
        model: Some(ModelStageConfig::default()),
        transcoder: Some(Default::default()),
        record: Some(Default::default()),
        mine: Some(Default::default()),
        label: Some(Default::default()),
        sweep: Some(Default::default()),
        circuits: Some(Default::default()),
        report: Some(ReportStageConfig::default()),
    };
    let synth = settings_toml(&DataStageConfig::Synth { synth: SynthConfig::default() })?;
    let synth: String = synth.lines().filter(|l| !l.is_empty()).map(|l| format!("# {}\n", if l == "[synth]" { "[data.synth]" } else { l })).collect();
    Ok(format!(
        "# Every key of a pipeline file at its default (voltlens defaults), stages in the order they\n\
         # run. Leave a stage table out to stop before it; the pipeline's seed overrides a seed in a\n\
         # stage table. Keys without a default are not shown: [data.options] nominal_capacity_ah,\n\
         # upper_cutoff_v, lower_cutoff_v, format, column_map, skip_unreadable = true (off: one\n\
         # unreadable file stops the ingest) (see voltlens ingest --help), a top-level\n\
         # device, [model] source = \"import\" with [model.import] (see README), [[sweep.grid]] points\n\
         # and [[report.explain]] stretches.\n{}\n\
         # [data] may generate synthetic cells instead of reading `inputs`:\n# [data]\n{synth}",
        settings_toml(&full)?
    ))
}

/// TOML text of a settings value, f32 settings printed as the f32 they are (0.001, not
/// 0.0010000000474974513, which is how toml writes an f32 widened to f64).
fn settings_toml<T: Serialize>(settings: &T) -> Result<String> {
    fn shortest_floats(v: &mut toml::Value) {
        match v {
            toml::Value::Float(x) if f64::from(*x as f32) == *x => *x = (*x as f32).to_string().parse().expect("a float prints as a float"),
            toml::Value::Array(a) => a.iter_mut().for_each(shortest_floats),
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| shortest_floats(v)),
            _ => {}
        }
    }
    let fail = |e: &dyn std::fmt::Display| Error::Other(format!("writing the default settings: {e}"));
    let mut value = toml::Value::try_from(settings).map_err(|e| fail(&e))?;
    shortest_floats(&mut value);
    toml::to_string(&value).map_err(|e| fail(&e))
}
