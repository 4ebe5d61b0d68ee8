//! The record stage on a tiny model and transcoder of three synthetic cells: every step recorded
//! once, memory bounded by the buffer without changing what is read back, agreement with a
//! direct forward pass, the cell-at-a-time reader, streamed mining with output effects, and
//! record → mine → label end to end.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::backend::Flex;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use voltlens::data::canonical::{Dataset, DatasetPaths};
use voltlens::data::ingest::synthesize;
use voltlens::data::synth::SynthConfig;
use voltlens::data::windows::Window;
use voltlens::label::stage::run_label_stage;
use voltlens::label::LabelConfig;
use voltlens::mine::stage::run_mine_stage;
use voltlens::circuits::intervene::{ablate_or_steer, ablation_effect_mv, load_replacement, Intervention, ProbeWindow};
use voltlens::label::covariates::{Covariate, Covariates};
use voltlens::mine::effect::EffectSources;
use voltlens::mine::stats::WindowKind;
use voltlens::mine::{mine_cells, InMemory, MineConfig, SparseActivations};
use voltlens::model::inputs::{self, CellSteps};
use voltlens::model::{load_model, train_model, DeviceChoice, ModelConfig, TrainConfig};
use voltlens::record::run::encoder_inputs;
use voltlens::record::tables::ActivationWriter;
use voltlens::record::{read_sparse, record, step_windows, RecordConfig, RecordDir, RecordSummary, TranscoderInput};
use voltlens::transcoder::export_circuit_tracer;
use voltlens::transcoder::online::{Cells, ModelActivations};
use voltlens::transcoder::{train, Transcoder, TranscoderConfig};

type B = Flex;

const CONTEXT: usize = 24;

/// Three synthetic cells, a model and a transcoder trained briefly on them, and one record with
/// the default settings, shared by every test.
struct Fixture {
    tmp: tempfile::TempDir,
    data: PathBuf,
    model: PathBuf,
    transcoder: Transcoder,
    record: PathBuf,
    summary: RecordSummary,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let (data, model) = (tmp.path().join("data"), tmp.path().join("model"));
        synthesize(&SynthConfig { cells: 3, cycles: 1, ..SynthConfig::default() }, &data).unwrap();
        let shape = ModelConfig { layers: 2, d_model: 16, heads: 2, d_mlp: 32, context: CONTEXT, ..ModelConfig::default() };
        let training = TrainConfig { steps: 20, batch: 8, warmup: 2, val_every: 0, val_windows: 4, stride: 8, ..TrainConfig::default() };
        train_model(&data, &shape, &training, &model).unwrap();
        let transcoder = train_transcoder(&data, &model, &tmp.path().join("transcoder"));
        let record_dir = tmp.path().join("record");
        let summary = record(&data, &model, TranscoderInput::Loaded(&transcoder), &RecordConfig::default(), &record_dir).unwrap();
        Fixture { tmp, data, model, transcoder, record: record_dir, summary }
    })
}

/// A small CLT trained on the model's own activations, generated online.
fn train_transcoder(data: &Path, model: &Path, out: &Path) -> Transcoder {
    let dataset = Dataset::load(data).unwrap();
    let loaded = load_model::<B>(model, &Default::default()).unwrap();
    let mut source = ModelActivations::open(&dataset, data, &loaded, Cells::Train, 256, 0, Default::default()).unwrap();
    let cfg = TranscoderConfig { features: 32, batch: 64, steps: 30, target_firing_rate: 0.1, shuffle_buffer: 256, ..TranscoderConfig::default() };
    train(&cfg, &mut source, out).unwrap().transcoder
}

/// (layer, feature) → (cell, row, value) entries, for comparing two reads.
type Entries = BTreeMap<(u32, u32), Vec<(usize, u32, f32)>>;

fn entries(acts: &SparseActivations) -> Entries {
    acts.features.iter().map(|f| ((f.layer, f.feature), f.entries().collect())).collect()
}

fn row_groups(path: &Path) -> usize {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().metadata().num_row_groups()
}

#[test]
fn every_step_lies_in_exactly_one_window_the_earliest_that_holds_it() {
    for (steps, context) in [(0, 8), (5, 8), (8, 8), (9, 8), (50, 8), (51, 8), (100, 24), (7, 1)] {
        let plan = step_windows(steps, context);
        let kept: Vec<usize> = plan.iter().flat_map(|w| (w.first..w.len).map(move |p| w.start + p)).collect();
        assert_eq!(kept, (0..steps).collect::<Vec<_>>(), "{steps} steps, context {context}");
        for w in &plan {
            assert!(w.start + w.len <= steps);
            // No earlier window holds a kept step: it has the most left context available.
            let earliest = plan.iter().find(|v| v.start + v.len > w.start + w.first).unwrap();
            assert_eq!(earliest, w);
        }
        assert_eq!(plan.first().map(|w| w.first), (steps > 0).then_some(0), "the first window keeps every position");
    }
}

#[test]
fn record_covers_every_step_of_every_cell_once_per_firing_feature() {
    let f = fixture();
    let dataset = Dataset::load(&f.data).unwrap();
    let rows: Vec<usize> = dataset.data.iter().map(|d| d.len()).collect();
    assert_eq!(f.summary.cell_rows, rows);
    assert_eq!(f.summary.steps, rows.iter().map(|&r| r as u64 - 1).sum::<u64>());
    assert_eq!((f.summary.encoders, f.summary.features_per_layer), (2, 32));
    let acts = read_sparse(&f.record).unwrap();
    assert_eq!(acts.cell_ids, dataset.cells.iter().map(|c| c.cell_id.clone()).collect::<Vec<_>>());
    assert!(!acts.features.is_empty(), "some feature fires");
    let mut fired_steps: Vec<Vec<bool>> = rows.iter().map(|&r| vec![false; r]).collect();
    let mut nnz = 0;
    for feature in &acts.features {
        for c in 0..rows.len() {
            let (steps, values) = feature.cell(c);
            // Ascending without repeats: each step at most once per feature.
            assert!(steps.windows(2).all(|w| w[0] < w[1]));
            assert!(steps.iter().all(|&s| (s as usize) < rows[c] - 1), "the last row has no model step");
            assert!(values.iter().all(|&v| v > 0.0));
            steps.iter().for_each(|&s| fired_steps[c][s as usize] = true);
        }
        nnz += feature.nnz();
    }
    assert_eq!(nnz as u64, f.summary.activation_rows);
    let fired: usize = fired_steps.iter().flatten().filter(|&&b| b).count();
    assert!(fired as u64 * 10 >= f.summary.steps * 9, "most steps fire some feature ({fired} of {})", f.summary.steps);
    assert_eq!(row_groups(&f.record.join("covariates.parquet")), 1);
}

#[test]
fn a_small_buffer_writes_many_row_groups_and_reads_back_the_same() {
    let f = fixture();
    let dir = f.tmp.path().join("record-small-buffer");
    let cfg = RecordConfig { max_buffer_rows: 97, windows_per_batch: 3, ..RecordConfig::default() };
    let small = record(&f.data, &f.model, TranscoderInput::Loaded(&f.transcoder), &cfg, &dir).unwrap();
    assert!(small.activation_row_groups > 3, "{} row groups", small.activation_row_groups);
    assert_eq!(row_groups(&dir.join("activations.parquet")), small.activation_row_groups);
    assert_eq!(row_groups(&dir.join("covariates.parquet")), small.covariate_row_groups);
    assert!(small.covariate_row_groups > 3);
    assert_eq!((small.activation_rows, small.steps), (f.summary.activation_rows, f.summary.steps));
    let (a, b) = (read_sparse(&dir).unwrap(), read_sparse(&f.record).unwrap());
    assert_eq!((&a.cell_ids, &a.cell_rows), (&b.cell_ids, &b.cell_rows));
    assert_eq!(entries(&a), entries(&b), "same activations whatever the buffer and batch");
}

#[test]
fn a_recorded_step_matches_the_model_and_transcoder_on_its_window() {
    let f = fixture();
    let dataset = Dataset::load(&f.data).unwrap();
    let loaded = load_model::<B>(&f.model, &Default::default()).unwrap();
    let acts = entries(&read_sparse(&f.record).unwrap());
    let paths = DatasetPaths::new(&f.data);
    let mut compared = 0;
    for c in 0..dataset.cells.len() {
        let (info, data) = (&dataset.cells[c], &dataset.data[c]);
        let cell = loaded.norm.apply(&CellSteps::from_cell(info, data, &paths.cell_file(&info.cell_id), &loaded.norm.channels).unwrap());
        let n = cell.steps();
        for step in [0, CONTEXT / 2, CONTEXT + 3, n / 2, n - 1] {
            let w = *step_windows(n, CONTEXT).iter().find(|w| w.start + w.first <= step && step < w.start + w.len).unwrap();
            let (x, _) = inputs::batch::<B>(std::slice::from_ref(&cell), &[Window { cell: 0, start: w.start }], w.len, &Default::default());
            let all = encoder_inputs(&loaded.model, f.transcoder.shape.variant, x);
            let width = all.len() / w.len;
            let p = step - w.start;
            let codes = f.transcoder.encode(&all[p * width..(p + 1) * width]);
            let mut direct = BTreeMap::new();
            for e in 0..2 {
                for i in codes.row(e) {
                    direct.insert((e as u32, codes.index[i]), codes.value[i]);
                }
            }
            let recorded: BTreeMap<(u32, u32), f32> = acts
                .iter()
                .filter_map(|(&k, v)| v.iter().find(|&&(cc, r, _)| cc == c && r as usize == step).map(|&(_, _, v)| (k, v)))
                .collect();
            compared += direct.len();
            // Batching may move a value by float rounding; compare all but those at the edge of 0.
            for key in direct.keys().chain(recorded.keys()) {
                let (d, r) = (direct.get(key).copied().unwrap_or(0.0), recorded.get(key).copied().unwrap_or(0.0));
                assert!((d - r).abs() <= 1e-4 * (1.0 + d.abs()), "cell {c} step {step} feature {key:?}: direct {d}, recorded {r}");
            }
        }
    }
    assert!(compared > 0, "the spot checks saw firing features");
}

#[test]
fn recorded_features_are_mined_and_labelled_end_to_end() {
    let f = fixture();
    // Record again through a transcoder directory, as the pipeline does.
    let tc_dir = f.tmp.path().join("tc-stage");
    export_circuit_tracer(&f.transcoder, &tc_dir.join("circuit-tracer")).unwrap();
    let record_dir = f.tmp.path().join("record-from-dir");
    let summary = record(&f.data, &f.model, TranscoderInput::Dir(&tc_dir), &RecordConfig::default(), &record_dir).unwrap();
    assert_eq!(summary.steps, f.summary.steps);

    let mine_dir = f.tmp.path().join("mine");
    let mined = run_mine_stage(&record_dir, &MineConfig::default(), None, &mine_dir).unwrap();
    let live = mined["live_features"].as_u64().unwrap();
    assert_eq!(live + mined["dead_features"].as_u64().unwrap(), 64);
    assert!(live > 0);
    assert!(mine_dir.join("features.parquet").exists() && mine_dir.join("examples.parquet").exists());

    let label_dir = f.tmp.path().join("label");
    let cfg = LabelConfig { n_shifts: 10, n_bootstrap: 3, ..LabelConfig::default() };
    let labelled = run_label_stage(&f.data, &record_dir, &cfg, &label_dir).unwrap();
    assert_eq!(labelled["live_features"].as_u64().unwrap(), live);
    // The share is accepted labels over live features, counted in the labels the stage wrote.
    let labels: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(label_dir.join("labels.json")).unwrap()).unwrap();
    assert_eq!(labels.len() as u64, live);
    let accepted = labels.iter().filter(|l| l["accepted"] == true).count();
    assert_eq!(labelled["accepted"].as_u64().unwrap(), accepted as u64);
    assert_eq!(labelled["accepted_share"].as_f64().unwrap(), accepted as f64 / live as f64);
    assert!(label_dir.join("labels.parquet").exists());
    let effects = std::fs::read_to_string(label_dir.join("protocol_effects.csv")).unwrap();
    assert!(effects.starts_with("layer,feature"), "{}", &effects[..effects.len().min(200)]);
    assert_eq!(effects.lines().count() as u64, live + 1, "one row per live feature");
}

#[test]
fn the_cell_at_a_time_reader_gives_what_read_sparse_and_the_dataset_give() {
    let f = fixture();
    let dataset = Dataset::load(&f.data).unwrap();
    let all = entries(&read_sparse(&f.record).unwrap());
    let record = RecordDir::open(&f.record).unwrap();
    let mut streamed = Entries::new();
    let mut cells = 0;
    for cell in record.cells(&[Covariate::Soc, Covariate::CycleNumber]).unwrap() {
        let cell = cell.unwrap();
        let c = cell.activations.cell;
        assert_eq!(cell.activations.cell_id, dataset.cells[c].cell_id);
        assert_eq!(cell.activations.firing.len() as u64, f.summary.cell_activation_rows[c], "record.json counts each cell's firing steps");
        let expected = Covariates::from_cell(&dataset.cells[c], &dataset.data[c]);
        for cov in [Covariate::Soc, Covariate::CycleNumber] {
            assert_eq!(cell.covariates.column(cov).unwrap(), expected.column(cov), "cell {c} {}", cov.name());
        }
        assert!(cell.covariates.column(Covariate::Voltage).is_none(), "only the columns asked for");
        for ((layer, feature), firing) in cell.activations.features() {
            streamed.entry((layer, feature)).or_default().extend(firing.iter().map(|e| (c, e.row, e.value)));
        }
        cells += 1;
    }
    assert_eq!(cells, dataset.cells.len());
    assert_eq!(streamed, all);
}

#[test]
fn a_record_whose_rows_are_not_grouped_by_cell_is_refused_naming_the_row() {
    let f = fixture();
    let dir = f.tmp.path().join("record-shuffled");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["record.json", "covariates.parquet"] {
        std::fs::copy(f.record.join(name), dir.join(name)).unwrap();
    }
    let mut writer = ActivationWriter::create(&dir.join("activations.parquet"), &f.summary.cell_ids, 1000).unwrap();
    for (cell, row) in [(0, 3), (1, 0), (0, 4)] {
        writer.push(cell, row, 0, 1, 0.5).unwrap();
    }
    writer.finish().unwrap();
    let record = RecordDir::open(&dir).unwrap();
    let err = record.cells(&[]).unwrap().map(|c| c.map(|_| ())).collect::<Result<Vec<_>, _>>().unwrap_err().to_string();
    assert!(err.contains("activations.parquet, row 3, field 'cell_id'") && err.contains("not grouped by cell"), "{err}");
}

#[test]
fn streamed_mining_matches_mining_in_memory_and_ablation_effects_match_the_intervention() {
    let f = fixture();
    let dataset = Dataset::load(&f.data).unwrap();
    let cycles: Vec<Vec<f32>> = Covariates::for_dataset(&dataset).iter().map(|c| c.column(Covariate::CycleNumber).to_vec()).collect();
    let acts = read_sparse(&f.record).unwrap();
    let cfg = MineConfig::default();
    let in_memory = mine_cells(&InMemory { acts: &acts, cycles: Some(&cycles) }, &cfg).unwrap();
    let streamed = mine_cells(&RecordDir::open(&f.record).unwrap(), &cfg).unwrap();
    assert_eq!(format!("{:?}", streamed.features), format!("{:?}", in_memory.features));

    // The stage with effects: every feature with top windows gets one, and some are not zero.
    let tc_dir = f.tmp.path().join("tc-effect");
    export_circuit_tracer(&f.transcoder, &tc_dir.join("circuit-tracer")).unwrap();
    let sources = EffectSources { dataset: f.data.clone(), model: f.model.clone(), transcoder: tc_dir.clone() };
    let out = f.tmp.path().join("mine-effect");
    run_mine_stage(&f.record, &cfg, Some(&sources), &out).unwrap();
    let mined: voltlens::mine::MinedFeatures = serde_json::from_str(&std::fs::read_to_string(out.join("mined.json")).unwrap()).unwrap();
    assert!(mined.features.iter().all(|m| m.output_effect_mv.is_some_and(f64::is_finite)));
    assert!(mined.features.iter().any(|m| m.output_effect_mv.unwrap().abs() > 1e-3), "ablating some feature moves the prediction");

    // A window that starts at step 0 sees what `intervene` sees on the cell's first window, so the
    // two agree at every step of it.
    let (loaded, tc) = load_replacement::<Flex>(&f.model, &tc_dir.join("circuit-tracer"), &Default::default()).unwrap();
    let m = mined.features.iter().max_by(|a, b| a.output_effect_mv.unwrap().abs().total_cmp(&b.output_effect_mv.unwrap().abs())).unwrap();
    let cell_id = &dataset.cells[0].cell_id;
    let what = Intervention {
        dataset_dir: &f.data,
        model_dir: &f.model,
        transcoder_dir: &tc_dir.join("circuit-tracer"),
        layer: m.layer as usize,
        feature: m.feature as usize,
        cell_id,
        scale: 0.0,
    };
    let whole = ablate_or_steer(what, DeviceChoice::Cpu).unwrap();
    let steps = loaded.norm.apply(&voltlens::model::inputs::cell_steps(&f.data, cell_id, &loaded.norm.channels).unwrap());
    let probes: Vec<ProbeWindow> = (0..CONTEXT).map(|s| ProbeWindow::around(&steps, s, CONTEXT)).collect();
    let feature = (m.layer as usize, m.feature as usize);
    let deltas = ablation_effect_mv(&loaded.model, loaded.norm.target_scale, &tc, &tc, feature, &probes, &Default::default()).unwrap();
    for (s, d) in deltas.iter().enumerate() {
        assert!((d - whole.delta_mv[s]).abs() <= 1e-3 * (1.0 + d.abs()), "step {s}: {d} mV against {} mV", whole.delta_mv[s]);
    }
    assert!(m.windows.iter().any(|w| w.kind == WindowKind::Top));
}

#[test]
fn labelling_a_record_a_few_features_at_a_time_gives_the_labels_of_labelling_it_in_memory() {
    use voltlens::label::source::{ActivationSource, RecordSource};
    use voltlens::label::label_features;
    let f = fixture();
    let dataset = Dataset::load(&f.data).unwrap();
    let covariates = Covariates::for_dataset(&dataset);
    let cfg = LabelConfig { n_shifts: 20, n_bootstrap: 4, ..LabelConfig::default() };
    let in_memory = read_sparse(&f.record).unwrap();
    let counts = RecordSource::open(&f.record).unwrap().counts().unwrap();
    assert_eq!(counts, in_memory.features.iter().map(|f| f.counts()).collect::<Vec<_>>(), "the counting pass sees every firing step");
    // A budget of a third of the largest feature: every feature is a chunk of its own.
    let budget = counts.iter().map(|c| c.total()).max().unwrap() / 3;
    let chunked = RecordSource::open(&f.record).unwrap().with_chunk_entries(budget);
    let json = |acts: &dyn ActivationSource| serde_json::to_string(&label_features(acts, &covariates, &dataset.cells, &cfg).unwrap()).unwrap();
    assert_eq!(json(&chunked), json(&in_memory));
}
