//! Circuits on a tiny model and a hand-made CLT: pullbacks and de-embeddings match the direct-path
//! calculations they stand for, and interventions change predictions only through features that fire.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use voltlens::circuits::{ablate_or_steer, deembed, draw_intervention, format_pullback, pullback, Intervention, InterventionReport, SteeredMlps};
use voltlens::transcoder::online::TranscoderMlps;
use voltlens::data::ingest::synthesize;
use voltlens::data::synth::{Chemistry, Protocol, SynthConfig};
use voltlens::model::{load_model, train_model, DeviceChoice, LoadedModel, ModelConfig, TrainConfig, N_CHANNELS};
use voltlens::circuits::stage::{run_circuits_stage, CircuitsConfig, CircuitsInputs};
use voltlens::circuits::{GraphFile, GraphSources};
use voltlens::transcoder::{export_circuit_tracer, Codes, Transcoder, TranscoderConfig, Variant};

type B = Flex;

const LAYERS: usize = 3;
const D_MODEL: usize = 16;
const FEATURES: usize = 24;
/// Layer-0 feature whose bias keeps it off on every token.
const SILENT: usize = 0;
/// Layer-0 feature whose bias keeps it on on every token.
const ALWAYS: usize = 1;

struct Fixture {
    data: PathBuf,
    model: PathBuf,
    transcoder_dir: PathBuf,
    transcoder: Transcoder,
}

/// A deterministic value in (−1, 1) for index i and a salt: weights without a random generator.
fn noise(i: usize, salt: usize) -> f32 {
    ((i * 7919 + salt * 104_729) as f32 * 0.618_034).sin()
}

/// A CLT with weights of ordinary size, one feature that never fires and one that always does.
fn hand_made_clt() -> Transcoder {
    let cfg = TranscoderConfig { variant: Variant::Clt, features: FEATURES, ..TranscoderConfig::default() };
    let mut tc = Transcoder::zeros(&cfg, LAYERS, D_MODEL);
    let enc_scale = 1.0 / (D_MODEL as f32).sqrt();
    tc.w_enc.iter_mut().enumerate().for_each(|(i, w)| *w = enc_scale * noise(i, 1));
    for (e, dec) in tc.w_dec.iter_mut().enumerate() {
        dec.iter_mut().enumerate().for_each(|(i, w)| *w = 0.1 * noise(i, 2 + e));
    }
    tc.b_enc[SILENT] = -1e6;
    tc.b_enc[ALWAYS] = 5.0;
    tc
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("circuits");
        if root.exists() {
            std::fs::remove_dir_all(&root).unwrap();
        }
        let (data, model, transcoder_dir) = (root.join("data"), root.join("model"), root.join("clt"));
        let cells = SynthConfig {
            cells: 5,
            cycles: 1,
            chemistries: vec![Chemistry::Nmc],
            protocols: vec![Protocol::Cccv],
            ambient_temperatures_c: vec![25.0],
            ..SynthConfig::default()
        };
        synthesize(&cells, &data).unwrap();
        let shape = ModelConfig { layers: LAYERS, d_model: D_MODEL, heads: 2, d_mlp: 32, context: 24, ..ModelConfig::default() };
        let training = TrainConfig { steps: 20, batch: 8, warmup: 2, val_every: 10, val_windows: 4, stride: 8, ..TrainConfig::default() };
        train_model(&data, &shape, &training, &model).unwrap();
        let transcoder = hand_made_clt();
        export_circuit_tracer(&transcoder, &transcoder_dir).unwrap();
        Fixture { data, model, transcoder_dir, transcoder }
    })
}

fn loaded(f: &Fixture) -> LoadedModel<B> {
    load_model::<B>(&f.model, &Default::default()).unwrap()
}

/// Column g of W_enc[m]: what feature g of layer m reads from resid_mid.
fn encoder_column(tc: &Transcoder, m: usize, g: usize) -> Vec<f32> {
    (0..D_MODEL).map(|k| tc.w_enc_of(m)[k * FEATURES + g]).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn close(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn nothing_pulls_back_onto_a_layer_0_feature() {
    let tc = &fixture().transcoder;
    assert!(pullback(tc, 0, 5, 100).unwrap().is_empty());
    assert!(pullback(tc, LAYERS, 0, 100).is_err(), "no such layer");
}

/// Codes of one token in which only feature f of encoder l is active, at value z.
fn one_feature(l: usize, f: usize, z: f32) -> Codes {
    let mut offsets = vec![0; l + 1];
    offsets.extend(std::iter::repeat_n(1, LAYERS - l));
    Codes { offsets, index: vec![f as u32], value: vec![z], pre: vec![z] }
}

#[test]
fn pullback_is_the_change_of_a_later_pre_activation_per_unit_of_an_earlier_feature() {
    let tc = &fixture().transcoder;
    let (m, g, eps) = (2, 7, 0.5);
    let rows = pullback(tc, m, g, usize::MAX).unwrap();
    assert_eq!(rows.len(), m * FEATURES, "every feature of layers 0 and 1");
    assert!(rows.windows(2).all(|w| w[0].weight.abs() >= w[1].weight.abs()), "largest first");
    let quiet = tc.decode(&Codes { offsets: vec![0; LAYERS + 1], ..Codes::default() }, None); // b_dec [L, d]
    let read = encoder_column(tc, m, g);
    for row in &rows {
        // f's writes to mlp_out of layers k < m all reach resid_mid_m through the residual stream.
        let written = tc.decode(&one_feature(row.layer, row.feature, eps), None);
        let resid_mid: Vec<f32> = (0..D_MODEL)
            .map(|j| (0..m).map(|k| written[k * D_MODEL + j] - quiet[k * D_MODEL + j]).sum())
            .collect();
        let expected = dot(&resid_mid, &read) / eps;
        assert!(close(row.weight, expected, 1e-4), "{row:?}: brute force gives {expected}");
    }
    assert_eq!(pullback(tc, m, g, 5).unwrap(), rows[..5], "top keeps the largest");
    assert_eq!(format_pullback(&rows[..5]).lines().count(), 6, "a header and a line per row");
}

/// The embedding's output at one step for one input row [N_CHANNELS] (positions cancel in differences).
fn embed_row(loaded: &LoadedModel<B>, row: &[f32]) -> Vec<f32> {
    let x = Tensor::<B, 3>::from_data(TensorData::new(row.to_vec(), [1, 1, N_CHANNELS]), &Default::default());
    loaded.model.embed(x).into_data().convert::<f32>().into_vec().unwrap()
}

#[test]
fn deembedding_is_the_derivative_of_a_pre_activation_through_the_embedding() {
    let f = fixture();
    let loaded = loaded(f);
    let (m, g) = (1, 3);
    let rows = deembed(&f.model, &f.transcoder, m, g).unwrap();
    assert_eq!(rows.len(), N_CHANNELS);
    let read = encoder_column(&f.transcoder, m, g);
    let slope = |from: &[f32], to: &[f32], step: f32| {
        let (a, b) = (embed_row(&loaded, from), embed_row(&loaded, to));
        let diff: Vec<f32> = b.iter().zip(&a).map(|(b, a)| b - a).collect();
        dot(&diff, &read) / step
    };
    let stats = &loaded.norm.stats;
    for (c, row) in rows.iter().enumerate() {
        assert_eq!(row.channel, voltlens::model::CHANNELS[c]);
        let mut moved = vec![0.0; N_CHANNELS];
        moved[c] = 1.0;
        assert!(close(row.weight, slope(&[0.0; N_CHANNELS], &moved, 1.0), 1e-3), "{row:?} per normalised unit");
        // In raw units: one tenth of a standard deviation away from the mean, normalised as the model does.
        let (mut raw, step) = (stats.mean.clone(), 0.1 * stats.std[c]);
        let mut raw_moved = raw.clone();
        raw_moved[c] += step;
        loaded.norm.apply_row(&mut raw);
        loaded.norm.apply_row(&mut raw_moved);
        assert!(close(row.weight_per_unit, slope(&raw, &raw_moved, step), 1e-2), "{row:?} per raw unit");
    }
}

fn test_cell(f: &Fixture) -> String {
    loaded(f).split.test[0].clone()
}

/// `voltlens circuits steer` on the test cell, on the CPU.
fn steer(f: &Fixture, layer: usize, feature: usize, scale: f32) -> InterventionReport {
    let cell = test_cell(f);
    let what = Intervention { dataset_dir: &f.data, model_dir: &f.model, transcoder_dir: &f.transcoder_dir, layer, feature, cell_id: &cell, scale };
    ablate_or_steer(what, DeviceChoice::Cpu).unwrap()
}

#[test]
fn scaling_a_feature_by_one_changes_nothing() {
    let f = fixture();
    let r = steer(f, 1, 4, 1.0);
    assert!(!r.steps.is_empty());
    assert_eq!(r.baseline_v, r.intervened_v);
    assert_eq!(r.max_abs_delta_mv, 0.0);
}

#[test]
fn ablating_a_feature_that_never_fires_changes_nothing() {
    let f = fixture();
    let r = steer(f, 0, SILENT, 0.0);
    assert_eq!(r.firing_steps[SILENT], 0);
    assert!(r.activation.iter().all(|&a| a == 0.0));
    assert!(r.delta_mv.iter().all(|&d| d == 0.0), "max |Δ| {} mV", r.max_abs_delta_mv);
}

#[test]
fn ablating_a_feature_that_always_fires_changes_the_predicted_voltage() {
    let f = fixture();
    let r = steer(f, 0, ALWAYS, 0.0);
    assert_eq!(r.firing_steps[ALWAYS], r.steps.len(), "fires on every step");
    assert!(r.activation.iter().all(|&a| a > 0.0));
    assert!(r.max_abs_delta_mv > 0.0, "ablating it moved no prediction");
    assert!(r.baseline_v.iter().chain(&r.intervened_v).all(|v| v.is_finite()));
    let png = tempfile::tempdir().unwrap();
    let path = png.path().join("intervention.png");
    draw_intervention(&r, &path).unwrap();
    common::assert_drawn(&path, Some((1200, 800)), 8);
}

/// A transcoder made for another model is refused before any work, naming both folders and
/// both shapes (the same check guards record, graphs and the MLSAE analyses).
#[test]
fn a_transcoder_of_another_model_is_refused_by_name() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("wide-clt");
    let cfg = TranscoderConfig { variant: Variant::Clt, features: 4, ..TranscoderConfig::default() };
    export_circuit_tracer(&Transcoder::zeros(&cfg, LAYERS, 2 * D_MODEL), &other).unwrap();
    let cell = test_cell(f);
    let what = Intervention { dataset_dir: &f.data, model_dir: &f.model, transcoder_dir: &other, layer: 0, feature: 0, cell_id: &cell, scale: 0.0 };
    let err = ablate_or_steer(what, DeviceChoice::Cpu).unwrap_err().to_string();
    let want = format!("{LAYERS} layers of width {}, the model in {} has {LAYERS} of width {D_MODEL}", 2 * D_MODEL, f.model.display());
    assert!(err.contains(&other.display().to_string()) && err.contains(&want), "{err}");
}

/// The replacement runs encode each layer once, when first needed (`ReplacementPass`); they give
/// what the definition gives: at every layer l, encode the whole pass's resid_mid [tokens, L, d]
/// seen so far (later layers 0), scale the steered feature, decode, and take layer l's slice.
#[test]
fn steered_and_replaced_runs_match_encoding_every_layer_at_every_layer() {
    let f = fixture();
    let loaded = loaded(f);
    let tc = &f.transcoder;
    let (windows, seq) = (3, 24);
    let x: Vec<f32> = (0..windows * seq * N_CHANNELS).map(|i| noise(i, 9)).collect();
    let x = || Tensor::<B, 3>::from_data(TensorData::new(x.clone(), [windows, seq, N_CHANNELS]), &Default::default());
    let values = |t: Tensor<B, 2>| t.into_data().convert::<f32>().into_vec::<f32>().unwrap();
    let definition = |layer: usize, feature: usize, scale: f32| {
        let seen = std::cell::RefCell::new(vec![0.0f32; windows * seq * LAYERS * D_MODEL]);
        let replace = |l: usize, resid_mid: Tensor<B, 3>| {
            let mut seen = seen.borrow_mut();
            let rows = resid_mid.clone().into_data().convert::<f32>().into_vec::<f32>().unwrap();
            for (t, row) in rows.chunks(D_MODEL).enumerate() {
                seen[(t * LAYERS + l) * D_MODEL..][..D_MODEL].copy_from_slice(row);
            }
            let mut codes = tc.encode(&seen);
            for r in (layer..codes.rows()).step_by(LAYERS) {
                for i in codes.row(r).filter(|&i| codes.index[i] as usize == feature) {
                    codes.value[i] *= scale;
                }
            }
            let y = tc.decode(&codes, Some(&seen));
            let y: Vec<f32> = y.chunks(LAYERS * D_MODEL).flat_map(|t| &t[l * D_MODEL..(l + 1) * D_MODEL]).copied().collect();
            Tensor::from_data(TensorData::new(y, resid_mid.dims()), &resid_mid.device())
        };
        values(loaded.model.forward_with_replacement(x(), &replace).0)
    };
    let assert_close = |got: Vec<f32>, want: Vec<f32>, what: &str| {
        assert!(got.iter().zip(&want).all(|(g, w)| close(*g, *w, 1e-5)), "{what}: {:?} vs {:?}", &got[..4], &want[..4]);
    };
    for (layer, feature, scale) in [(0, ALWAYS, 0.0), (1, 5, 3.0), (2, 7, 0.0)] {
        let steered = SteeredMlps::new(tc, tc, layer, feature, scale).unwrap();
        let got = values(loaded.model.forward_with_replacement(x(), &steered).0);
        assert_close(got, definition(layer, feature, scale), &format!("feature {feature} of layer {layer} × {scale}"));
    }
    let replaced = TranscoderMlps::new(&loaded.model, tc, tc, None).unwrap();
    assert_close(values(loaded.model.forward_with_replacement(x(), &replaced).0), definition(0, ALWAYS, 1.0), "every MLP replaced");
    assert_ne!(definition(0, ALWAYS, 0.0), definition(0, ALWAYS, 1.0), "ablating the always-on feature changes the run");
}

#[test]
fn the_circuits_stage_writes_pullbacks_and_a_graph_of_the_most_active_features_peak() {
    use voltlens::circuits::stage::{GRAPH_DIR, PULLBACKS_FILE};
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cfg = CircuitsConfig { top_features: 3, window: 16, ..CircuitsConfig::default() };
    let (inputs, summary, out) = run_stage(&f.model, &f.transcoder, &cfg, dir.path());

    // The always-on feature has by far the largest mean activation; the silent one never shows.
    let features: Vec<&str> = summary["features"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(features.len(), 3);
    assert_eq!(features[0], format!("L0_F{ALWAYS}"));
    let tables = std::fs::read_to_string(out.join(PULLBACKS_FILE)).unwrap();
    assert!(features.iter().all(|f| tables.contains(&format!("## {f} "))), "{tables}");
    assert!(!tables.contains(&format!("## L0_F{SILENT} ")));

    // The graph explains the peak of that feature's strongest window.
    let mined: voltlens::mine::MinedFeatures = serde_json::from_str(&std::fs::read_to_string(&inputs.mined).unwrap()).unwrap();
    let top = mined.features.iter().find(|m| (m.layer, m.feature as usize) == (0, ALWAYS)).unwrap();
    let peak = top.windows.iter().find(|w| w.kind == voltlens::mine::stats::WindowKind::Top).unwrap();
    assert_eq!(summary["graph"]["cell_id"], mined.cell_ids[peak.cell]);
    assert_eq!(summary["graph"]["step"], peak.peak_row as u64);
    for key in ["png", "json"] {
        assert!(out.join(GRAPH_DIR).join(summary["graph"][key].as_str().unwrap()).is_file(), "graph {key} missing");
    }

    let half = CircuitsConfig { cell: Some("x".into()), ..cfg };
    let err = run_circuits_stage(&inputs, &half, &dir.path().join("again")).unwrap_err().to_string();
    assert!(err.contains("set both cell and step"), "{err}");
}

/// Record, mine and the circuits stage with `cfg`, for `model` and `tc` on the fixture's cells;
/// returns the stage's inputs, its summary and its output folder (inside `dir`).
fn run_stage(model: &Path, tc: &Transcoder, cfg: &CircuitsConfig, dir: &Path) -> (CircuitsInputs, serde_json::Value, PathBuf) {
    let f = fixture();
    let (record_dir, mine_dir, out) = (dir.join("record"), dir.join("mine"), dir.join("circuits"));
    // Laid out as the transcoder stage leaves it: the export inside circuit-tracer/.
    let stage_dir = dir.join("transcoder");
    export_circuit_tracer(tc, &stage_dir.join("circuit-tracer")).unwrap();
    let transcoder = voltlens::record::TranscoderInput::Dir(&stage_dir);
    voltlens::record::record(&f.data, model, transcoder, &voltlens::record::RecordConfig::default(), &record_dir).unwrap();
    voltlens::mine::stage::run_mine_stage(&record_dir, &voltlens::mine::MineConfig::default(), None, &mine_dir).unwrap();
    let inputs = CircuitsInputs {
        sources: GraphSources { dataset: f.data.clone(), model: model.to_path_buf(), transcoder: stage_dir },
        mined: mine_dir.join(voltlens::mine::stage::MINED_FILE),
        labels: None,
        sweep: None,
    };
    let summary = run_circuits_stage(&inputs, cfg, &out).unwrap();
    (inputs, summary, out)
}

#[test]
fn the_circuits_stage_reads_a_model_of_other_channels_with_a_next_voltage_head() {
    use voltlens::circuits::stage::{GRAPH_DIR, PULLBACKS_FILE};
    use voltlens::model::HeadTarget;
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    // As a model trained elsewhere might read its inputs: raw current and time step, voltage, SOC.
    let channels: Vec<String> = ["current_next_a", "dt_next_s", "voltage", "soc"].map(String::from).to_vec();
    let shape = ModelConfig { layers: LAYERS, d_model: D_MODEL, heads: 2, d_mlp: 32, context: 24, head: HeadTarget::NextVoltage, channels: channels.clone(), ..ModelConfig::default() };
    let training = TrainConfig { steps: 20, batch: 8, warmup: 2, val_every: 10, val_windows: 4, stride: 8, ..TrainConfig::default() };
    let model = dir.path().join("model");
    train_model(&f.data, &shape, &training, &model).unwrap();
    let (_, summary, out) = run_stage(&model, &f.transcoder, &CircuitsConfig { top_features: 3, window: 16, ..CircuitsConfig::default() }, dir.path());
    // De-embedding rows name the model's own channels.
    let tables = std::fs::read_to_string(out.join(PULLBACKS_FILE)).unwrap();
    assert!(channels.iter().all(|c| tables.contains(c.as_str())), "{tables}");
    assert!(!tables.contains("log1p_dt_next"), "{tables}");
    let graph: GraphFile = serde_json::from_str(&std::fs::read_to_string(out.join(GRAPH_DIR).join(summary["graph"]["json"].as_str().unwrap())).unwrap()).unwrap();
    // circuit-tracer numbers the four channels E_0…E_3 and nothing beyond.
    let inputs: Vec<&str> = graph.nodes.iter().filter(|n| n.feature_type == "embedding").map(|n| n.node_id.as_str()).collect();
    assert!(!inputs.is_empty() && inputs.iter().all(|id| ["E_0_", "E_1_", "E_2_", "E_3_"].iter().any(|p| id.starts_with(p))), "{inputs:?}");
}

#[test]
fn the_circuits_stage_analyses_an_mlsae_instead_of_drawing_a_graph() {
    use voltlens::circuits::stage::{MLSAE_DIR, MLSAE_FIGURES};
    use voltlens::transcoder::Activation;
    let f = fixture();
    let cfg = TranscoderConfig { variant: Variant::Mlsae, features: FEATURES, activation: Activation::TopK { k: 3 }, ..TranscoderConfig::default() };
    let mut mlsae = Transcoder::zeros(&cfg, LAYERS, D_MODEL);
    mlsae.w_enc.iter_mut().enumerate().for_each(|(i, w)| *w = noise(i, 5) / (D_MODEL as f32).sqrt());
    mlsae.w_dec[0].iter_mut().enumerate().for_each(|(i, w)| *w = 0.1 * noise(i, 6));
    let dir = tempfile::tempdir().unwrap();
    let stage_dir = dir.path().join("transcoder");
    export_circuit_tracer(&mlsae, &stage_dir.join("circuit-tracer")).unwrap();
    let inputs = CircuitsInputs {
        sources: GraphSources { dataset: f.data.clone(), model: f.model.clone(), transcoder: stage_dir },
        // An MLSAE needs no mined peaks: nothing is read from here.
        mined: dir.path().join("absent.json"),
        labels: None,
        sweep: None,
    };
    let out = dir.path().join("circuits");
    let summary = run_circuits_stage(&inputs, &CircuitsConfig { top_features: 4, ..CircuitsConfig::default() }, &out).unwrap();
    // TopK 3 fires three features on every token, so some are live.
    assert!(summary["mlsae"]["live"].as_u64().unwrap() >= 3, "{summary}");
    assert_eq!(summary["mlsae"]["features"], FEATURES as u64);
    for file in MLSAE_FIGURES {
        common::assert_drawn(&out.join(MLSAE_DIR).join(file), None, 8);
    }

    // Beside a CLT, the stage analyses the lowest-FVU MLSAE of a sweep and still draws the graph.
    let sweep = dir.path().join("sweep");
    let row = |id: &str, variant, fvu| voltlens::transcoder::sweep::pareto::SweepRow {
        id: id.into(), variant, activation: "topk".into(), features: FEATURES, lambda: 0.0, l0: 3.0, l0_pct: 12.5,
        fvu, fidelity: None, dead_pct: 0.0, train_seconds: 1.0, front_fvu: true, front_fidelity: false,
    };
    let rows = vec![row("clt-a", Variant::Clt, 0.01), row("mlsae-worse", Variant::Mlsae, 0.5), row("mlsae-best", Variant::Mlsae, 0.2)];
    std::fs::create_dir_all(&sweep).unwrap();
    std::fs::write(sweep.join("pareto.json"), serde_json::to_string(&rows).unwrap()).unwrap();
    export_circuit_tracer(&mlsae, &sweep.join("runs/mlsae-best/circuit-tracer")).unwrap();
    let clt_dir = dir.path().join("clt");
    export_circuit_tracer(&f.transcoder, &clt_dir.join("circuit-tracer")).unwrap();
    let record_dir = dir.path().join("record");
    voltlens::record::record(&f.data, &f.model, voltlens::record::TranscoderInput::Dir(&clt_dir), &Default::default(), &record_dir).unwrap();
    let mined = dir.path().join("mine");
    voltlens::mine::stage::run_mine_stage(&record_dir, &voltlens::mine::MineConfig::default(), None, &mined).unwrap();
    let inputs = CircuitsInputs {
        sources: GraphSources { dataset: f.data.clone(), model: f.model.clone(), transcoder: clt_dir },
        mined: mined.join(voltlens::mine::stage::MINED_FILE),
        labels: None,
        sweep: Some(sweep),
    };
    let both = dir.path().join("both");
    let summary = run_circuits_stage(&inputs, &CircuitsConfig { top_features: 2, window: 16, ..CircuitsConfig::default() }, &both).unwrap();
    assert_eq!(summary["mlsae"]["source"], "sweep run mlsae-best");
    assert!(summary["graph"]["png"].is_string(), "{summary}");
    assert!(both.join(MLSAE_DIR).join(MLSAE_FIGURES[0]).is_file());
}
