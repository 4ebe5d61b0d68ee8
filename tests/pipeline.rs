//! The pipeline runner: stages run once, are skipped when up to date, rerun when asked or when
//! their inputs change, and never leave a half-written stage directory.

use std::path::{Path, PathBuf};

use voltlens::pipeline::{batch, run_file, RunOptions, StageOutcome};

fn write_pipeline(dir: &Path, name: &str, inputs: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\nseed = 3\nruns_dir = \"{}\"\n\n[data]\nsource = \"ingest\"\ninputs = [{inputs}]\n",
        dir.join("runs").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn sample_data() -> String {
    format!("\"{}\"", Path::new(env!("CARGO_MANIFEST_DIR")).join("data/cyclers/FastCharge_000025_CH8.csv").display())
}

#[test]
fn data_stage_runs_then_is_skipped_then_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_pipeline(tmp.path(), "p", &sample_data());
    let first = run_file(&file, &RunOptions::default()).unwrap();
    assert!(matches!(first[0], (ref s, StageOutcome::Ran { .. }) if s == "data"));
    let stage = tmp.path().join("runs/p/data");
    assert!(stage.join("manifest.json").exists());
    assert!(stage.join("dataset/cells.parquet").exists());
    assert!(!tmp.path().join("runs/p/data.partial").exists(), "no partial directory is left");

    let second = run_file(&file, &RunOptions::default()).unwrap();
    assert_eq!(second[0].1, StageOutcome::Skipped);

    let forced = run_file(&file, &RunOptions { force: true, ..Default::default() }).unwrap();
    assert!(matches!(forced[0].1, StageOutcome::Ran { .. }));
    let from = run_file(&file, &RunOptions { from: Some("data".into()), ..Default::default() }).unwrap();
    assert!(matches!(from[0].1, StageOutcome::Ran { .. }));
}

#[test]
fn a_changed_setting_reruns_the_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_pipeline(tmp.path(), "q", &sample_data());
    run_file(&file, &RunOptions::default()).unwrap();
    let text = std::fs::read_to_string(&file).unwrap() + "\n[data.options]\nnominal_capacity_ah = 1.1\n";
    std::fs::write(&file, text).unwrap();
    let again = run_file(&file, &RunOptions::default()).unwrap();
    assert!(matches!(again[0].1, StageOutcome::Ran { .. }));
}

#[test]
fn missing_data_is_named_and_batch_carries_on() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = write_pipeline(tmp.path(), "missing", "\"/nonexistent/battery-data\"");
    let err = run_file(&missing, &RunOptions::default()).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/battery-data") && err.contains("does not exist"), "{err}");
    let good = write_pipeline(tmp.path(), "good", &sample_data());
    let results = batch(&[missing, good], &RunOptions::default());
    assert!(results[0].1.is_err());
    assert!(results[1].1.is_ok(), "the batch goes on after a failed pipeline");
}

#[test]
fn unknown_keys_and_stages_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_pipeline(tmp.path(), "typo", &sample_data());
    let text = std::fs::read_to_string(&file).unwrap().replace("seed = 3", "seeed = 3");
    std::fs::write(&file, text).unwrap();
    let err = run_file(&file, &RunOptions::default()).unwrap_err().to_string();
    assert!(err.contains("seeed"), "{err}");
    let file = write_pipeline(tmp.path(), "from", &sample_data());
    let err = run_file(&file, &RunOptions { from: Some("modle".into()), ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("modle") && err.contains("data"), "{err}");
    // Nested tables too: a transcoder's settings and a sweep's base ones.
    for (table, typo) in [("transcoder.config", "lamda = 1e-3"), ("sweep.base", "lrr = 1e-3")] {
        let file = tmp.path().join(format!("{table}.toml"));
        std::fs::write(&file, format!("name = \"typo\"\n[{table}]\n{typo}\n")).unwrap();
        let err = voltlens::pipeline::PipelineConfig::load(&file).unwrap_err().to_string();
        assert!(err.contains(typo.split(' ').next().unwrap()), "[{table}]: {err}");
    }
}

#[test]
fn shipped_pipelines_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        voltlens::pipeline::PipelineConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// One top-level `device` line (or `voltlens run --device`, which replaces it) reaches every stage
/// table that takes a device and names none; a table that names its own keeps it, and a stage the
/// file leaves out stays out.
#[test]
fn a_pipeline_device_reaches_every_stage_that_names_none() {
    use voltlens::model::DeviceChoice::{Cpu, Cuda, Wgpu};
    use voltlens::pipeline::PipelineConfig;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p.toml");
    let stages = "[data]\nsource = \"synth\"\n[model.arch]\nlayers = 2\n[transcoder]\n[record]\n[mine]\ndevice = \"cpu\"\n[circuits]\n";
    std::fs::write(&path, format!("name = \"p\"\ndevice = \"cuda\"\n{stages}")).unwrap();
    let devices = |c: PipelineConfig| {
        let model = c.model.unwrap();
        assert!(c.sweep.is_none() && c.label.is_none(), "a stage left out stays out");
        [model.train.device, model.eval.device, c.transcoder.unwrap().device, c.record.unwrap().device, c.mine.unwrap().device, c.circuits.unwrap().device]
    };
    assert_eq!(devices(PipelineConfig::load(&path).unwrap()), [Cuda, Cuda, Cuda, Cuda, Cpu, Cuda]);
    assert_eq!(devices(PipelineConfig::load_on(&path, Some(Wgpu)).unwrap()), [Wgpu, Wgpu, Wgpu, Wgpu, Cpu, Wgpu]);
    std::fs::write(&path, format!("name = \"p\"\n{stages}")).unwrap();
    assert_eq!(devices(PipelineConfig::load(&path).unwrap()), [Cpu; 6]);
    assert_eq!(devices(PipelineConfig::load_on(&path, Some(Cuda)).unwrap()), [Cuda, Cuda, Cuda, Cuda, Cpu, Cuda]);
    // A [sweep] gets it too.
    std::fs::write(&path, format!("name = \"p\"\ndevice = \"cuda\"\n{stages}[sweep]\n")).unwrap();
    assert_eq!(PipelineConfig::load(&path).unwrap().sweep.unwrap().device, Cuda);
}

/// `voltlens defaults` prints a pipeline file that reads back with every stage, and its commented
/// synthetic-data block reads back as a synth data stage.
#[test]
fn the_defaults_read_back_as_a_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let text = voltlens::pipeline::config::defaults_toml().unwrap();
    let file = tmp.path().join("defaults.toml");
    std::fs::write(&file, &text).unwrap();
    let cfg = voltlens::pipeline::PipelineConfig::load(&file).unwrap();
    assert!(cfg.model.is_some() && cfg.transcoder.is_some() && cfg.sweep.is_some() && cfg.circuits.is_some() && cfg.report.is_some());
    assert!(text.contains("lambda = 0.001\n"), "f32 settings as written: {text}");
    let synth: String = text.split("instead of reading `inputs`:\n").nth(1).unwrap().lines().map(|l| format!("{}\n", l.strip_prefix("# ").unwrap())).collect();
    std::fs::write(&file, format!("name = \"synth\"\n{synth}")).unwrap();
    let cfg = voltlens::pipeline::PipelineConfig::load(&file).unwrap();
    assert!(matches!(cfg.data, voltlens::pipeline::config::DataStageConfig::Synth { .. }));
}
