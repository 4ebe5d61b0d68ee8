//! Nothing a user has is ever lost: checkpoints commit whole, NaN metrics read back, no command
//! replaces a folder it did not write, the pipeline seed reaches every stage, duplicate ids and
//! nulls are refused before anything is written.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, Float32Array, RecordBatch};
use arrow::datatypes::{Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use voltlens::data::canonical::{read_cell, DatasetPaths};
use voltlens::data::ingest::{ingest, IngestOptions};
use voltlens::pipeline::{run_file, PipelineConfig, RunOptions};
use voltlens::transcoder::sweep::SweepRow;
use voltlens::transcoder::{train, Activation, Batch, Fidelity, MemorySource, Metrics, TranscoderConfig, Variant};

fn sample_csv() -> PathBuf {
    common::repo().join("data/cyclers/FastCharge_000025_CH8.csv")
}

/// Everything in `dir`, by name.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    n.sort();
    n
}

/// 512 tokens of a small planted problem, 2 layers of width 8.
fn memory_source() -> MemorySource {
    let (layers, d, tokens) = (2, 8, 512);
    let value = |i: usize, salt: usize| (((i * 7919 + salt * 104_729) as f32) * 0.618_034).sin();
    let resid_mid: Vec<f32> = (0..tokens * layers * d).map(|i| value(i, 1)).collect();
    let mlp_out: Vec<f32> = resid_mid.iter().enumerate().map(|(i, x)| x.max(0.0) + 0.1 * value(i, 2)).collect();
    MemorySource::new(Batch { tokens, resid_mid, mlp_out }, (layers, d))
}

fn small_config(steps: u64) -> TranscoderConfig {
    TranscoderConfig { features: 16, batch: 64, steps, checkpoint_every: 5, activation: Activation::TopK { k: 3 }, ..TranscoderConfig::default() }
}

#[test]
fn transcoder_checkpoint_is_one_folder_and_a_torn_commit_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let whole = train(&small_config(20), &mut memory_source(), &dir.path().join("whole")).unwrap();

    let split = dir.path().join("split");
    train(&small_config(12), &mut memory_source(), &split).unwrap();
    // The state and its description sit in one folder, renamed into place together; no temporary
    // file or folder is left beside it.
    assert_eq!(names(&split), ["checkpoint"]);
    assert_eq!(names(&split.join("checkpoint")), [".voltlens-output", "meta.json", "state.safetensors"]);
    // A kill in the middle of the next commit leaves only its build folder, half written.
    let torn = split.join(".checkpoint.partial");
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::write(torn.join("meta.json"), "{\"step\": 99").unwrap();
    let resumed = train(&small_config(20), &mut memory_source(), &split).unwrap();
    assert_eq!(resumed.transcoder, whole.transcoder, "the resume reads the last whole checkpoint");
    assert_eq!(names(&split), ["checkpoint"]);
}

#[test]
fn a_diverging_transcoder_stops_and_keeps_no_nan_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TranscoderConfig { lr: 1e30, ..small_config(20) };
    let report = train(&cfg, &mut memory_source(), dir.path()).unwrap();
    let step = report.diverged_at.expect("a learning rate of 1e30 diverges");
    assert!(step < 20);
    // Training stopped at the first non-finite step; whatever checkpoint exists predates it.
    if let Ok(text) = std::fs::read_to_string(dir.path().join("checkpoint/meta.json")) {
        let meta: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(meta["step"].as_u64().unwrap() <= step, "{meta}");
    }
}

#[test]
fn nan_metrics_written_as_null_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics { tokens: 10, fvu_per_layer: vec![f32::NAN, 0.5], l0_per_layer: vec![f32::INFINITY], dead_fraction: f32::NAN, live_fraction: 0.25 };
    let path = dir.path().join("m.json");
    voltlens::io::write_json(&path, &metrics).unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().contains("null"));
    let back: Metrics = voltlens::io::read_json(&path).unwrap();
    assert!(back.fvu_per_layer[0].is_nan() && back.l0_per_layer[0].is_nan() && back.dead_fraction.is_nan());
    assert_eq!((back.fvu_per_layer[1], back.live_fraction), (0.5, 0.25));

    let fidelity = Fidelity { all_layers: f32::NAN, per_layer: vec![f32::NAN, 0.9] };
    voltlens::io::write_json(&path, &fidelity).unwrap();
    let back: Fidelity = voltlens::io::read_json(&path).unwrap();
    assert!(back.all_layers.is_nan() && back.per_layer[0].is_nan() && back.per_layer[1] == 0.9);

    let row = SweepRow {
        id: "clt-relu-f24-l0.1".into(),
        variant: Variant::Clt,
        activation: "relu".into(),
        features: 24,
        lambda: 0.1,
        l0: f64::NAN,
        l0_pct: f64::NAN,
        fvu: f64::NAN,
        fidelity: None,
        dead_pct: f64::NAN,
        train_seconds: 1.5,
        front_fvu: false,
        front_fidelity: false,
    };
    voltlens::io::write_json(&path, &vec![row]).unwrap();
    let back: Vec<SweepRow> = voltlens::io::read_json(&path).unwrap();
    assert!(back[0].fvu.is_nan() && back[0].l0.is_nan() && back[0].train_seconds == 1.5);
}

/// A pipeline ingesting the sample file into `dir/runs`.
fn data_pipeline(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("p.toml");
    let text = format!(
        "name = \"p\"\nseed = 3\nruns_dir = \"{}\"\n\n[data]\nsource = \"ingest\"\ninputs = [\"{}\"]\n{extra}",
        dir.join("runs").display(),
        sample_csv().display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn force_starts_a_stage_clean_instead_of_resuming_its_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let file = data_pipeline(tmp.path(), "");
    run_file(&file, &RunOptions::default()).unwrap();
    let stage = tmp.path().join("runs/p/data");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(stage.join("manifest.json")).unwrap()).unwrap();
    // What a run killed after writing a broken file leaves: a `.partial` with the same fingerprint.
    let partial = tmp.path().join("runs/p/data.partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("partial.fingerprint"), manifest["fingerprint"].as_str().unwrap()).unwrap();
    std::fs::write(partial.join("broken.json"), "{\"trunc").unwrap();
    run_file(&file, &RunOptions { force: true, ..Default::default() }).unwrap();
    assert!(!stage.join("broken.json").exists(), "--force carried a stale .partial into the stage");
    assert!(!partial.exists());
}

#[test]
fn pipeline_stage_folders_of_a_user_are_refused_and_old_ones_adopted() {
    let tmp = tempfile::tempdir().unwrap();
    let file = data_pipeline(tmp.path(), "");
    run_file(&file, &RunOptions::default()).unwrap();
    let stage = tmp.path().join("runs/p/data");
    // A stage folder from before outputs were marked (it has a manifest) is still replaced.
    std::fs::remove_file(stage.join(voltlens::io::OWNED_MARK)).unwrap();
    run_file(&file, &RunOptions { force: true, ..Default::default() }).unwrap();
    assert!(stage.join(voltlens::io::OWNED_MARK).exists());
}

#[test]
fn the_pipeline_seed_seeds_every_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s.toml");
    let text = "name = \"s\"\nseed = 11\n[data]\nsource = \"synth\"\n[data.synth]\nseed = 5\n[model.train]\nseed = 4\n\
                [transcoder.config]\nseed = 2\n[record]\n[mine]\nseed = 1\n[label]\nseed = 9\n[sweep.base]\nseed = 8\n";
    std::fs::write(&path, text).unwrap();
    let config = PipelineConfig::load(&path).unwrap();
    let stages = voltlens::pipeline::stages::build(&config).unwrap();
    let seed_of = |name: &str, pointer: &str| {
        let stage = stages.iter().find(|s| s.name() == name).unwrap_or_else(|| panic!("no stage {name}"));
        stage.config().pointer(pointer).unwrap_or_else(|| panic!("{name}: no {pointer}")).as_u64().unwrap()
    };
    for (stage, pointer) in [
        ("data", "/synth/seed"),
        ("model", "/train/seed"),
        ("transcoder", "/config/seed"),
        ("mine", "/seed"),
        ("label", "/seed"),
        ("sweep", "/base/seed"),
    ] {
        assert_eq!(seed_of(stage, pointer), 11, "stage {stage} does not take the pipeline seed");
    }
}

#[test]
fn duplicate_cell_ids_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for dir in [&a, &b] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(sample_csv(), dir.join("cell.csv")).unwrap();
    }
    let out = tmp.path().join("out");
    let err = ingest(&[a.join("cell.csv"), b.join("cell.csv")], &out, &IngestOptions::default()).unwrap_err().to_string();
    assert!(err.contains("same cell id") && err.contains("a/cell.csv") && err.contains("b/cell.csv"), "{err}");
    assert_eq!(names(tmp.path()), ["a", "b"], "nothing was written");
}

#[test]
fn an_ingest_into_a_folder_of_the_user_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mine");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("thesis.tex"), "years of work").unwrap();
    let err = ingest(&[sample_csv()], &out, &IngestOptions::default()).unwrap_err().to_string();
    assert!(err.contains("not written by VoltLens"), "{err}");
    assert_eq!(names(&out), ["thesis.tex"]);
    assert_eq!(names(tmp.path()), ["mine"]);
    // Its own output it replaces.
    let ours = tmp.path().join("ours");
    ingest(&[sample_csv()], &ours, &IngestOptions::default()).unwrap();
    ingest(&[sample_csv()], &ours, &IngestOptions::default()).unwrap();
    assert!(ours.join("cells.parquet").exists());
}

#[test]
fn bench_data_never_removes_a_folder_it_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    let user = tmp.path().join("work");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(user.join("notes.txt"), "keep me").unwrap();
    let err = voltlens::bench::bench_data(None, 1000, &user).unwrap_err().to_string();
    assert!(err.contains("not written by VoltLens"), "{err}");
    assert_eq!(std::fs::read_to_string(user.join("notes.txt")).unwrap(), "keep me");
}

#[test]
fn a_null_in_a_required_column_is_an_error_naming_row_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let cells = ingest(&[sample_csv()], &out, &IngestOptions::default()).unwrap();
    let file = DatasetPaths::new(&out).cell_file(&cells[0].cell_id);
    // Rewrite the file with voltage null at row 4, keeping its metadata.
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap();
    let kv = reader.metadata().file_metadata().key_value_metadata().cloned().unwrap();
    let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
    let first = &batches[0];
    let i = first.schema().index_of("voltage").unwrap();
    let volts = first.column(i).as_any().downcast_ref::<Float32Array>().unwrap();
    let holed: Float32Array = (0..volts.len()).map(|r| (r != 3).then(|| volts.value(r))).collect();
    let mut columns = first.columns().to_vec();
    columns[i] = Arc::new(holed);
    let mut fields: Vec<Field> = first.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[i] = fields[i].clone().with_nullable(true);
    let broken = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let mut writer = ArrowWriter::try_new(std::fs::File::create(&file).unwrap(), broken.schema(), None).unwrap();
    writer.write(&broken).unwrap();
    kv.into_iter().filter(|k| k.key != "ARROW:schema").for_each(|k| writer.append_key_value_metadata(k));
    writer.close().unwrap();
    assert_eq!(broken.column(i).null_count(), 1);

    let err = read_cell(&file).unwrap_err().to_string();
    assert!(err.contains(&*file.to_string_lossy()) && err.contains("row 4") && err.contains("'voltage'"), "{err}");
}

#[test]
fn reports_follow_the_runs_folder() {
    use voltlens::report::stage::report_dir;
    assert_eq!(report_dir(Path::new("reports"), Path::new("runs/quickstart")), Path::new("reports/quickstart"));
    assert_eq!(report_dir(Path::new("reports"), Path::new("/tmp/x/runs/q")), Path::new("/tmp/x/reports/q"));
    assert_eq!(report_dir(Path::new("/abs/reports"), Path::new("/tmp/x/runs/q")), Path::new("/abs/reports/q"));
}
