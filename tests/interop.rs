//! The layouts other tools read or write: circuit-tracer's transcoders and graphs, battdat's
//! Parquet, models built on Hugging Face transformers.
//!
//! Fast tests check names, shapes, keys and round trips. The `#[ignore]`d tests run the real
//! clients from PyPI through `scripts/interop_circuit_tracer.sh`, `scripts/interop_transformers.sh`
//! and `scripts/interop_battdat.sh`
//! (network, a few minutes, Python 3.10+; node for circuit-tracer's front-end code):
//! `cargo test --test interop -- --ignored`.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, AsArray, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use voltlens::data::canonical::{read_cell, DatasetPaths, Dataset};
use voltlens::data::formats::{detect, export_battdat, Format};
use voltlens::data::ingest::{ingest, synthesize, IngestOptions};
use voltlens::data::synth::SynthConfig;
use voltlens::transcoder::{export_circuit_tracer, import_circuit_tracer, Activation, Transcoder, TranscoderConfig, Variant};

fn random_transcoder(cfg: &TranscoderConfig, layers: usize, d: usize, seed: u64) -> Transcoder {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fill = |v: &mut Vec<f32>| v.iter_mut().for_each(|x| *x = rng.random::<f32>() * 2.0 - 1.0);
    let mut tc = Transcoder::zeros(cfg, layers, d);
    fill(&mut tc.w_enc);
    fill(&mut tc.b_enc);
    fill(&mut tc.b_dec);
    tc.w_dec.iter_mut().for_each(&mut fill);
    if let Some(w) = &mut tc.w_skip {
        fill(w);
    }
    tc.threshold.iter_mut().enumerate().for_each(|(i, t)| *t = 0.01 * (i % 7) as f32);
    tc
}

/// Every tensor of a safetensors file as (shape, f32 values).
fn tensors_of(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{name} in {}", path.display());
            let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

fn config_yaml(dir: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn clt_export_is_circuit_tracers_layout() {
    let (layers, d, f) = (3, 4, 6);
    let cfg = TranscoderConfig { features: f, activation: Activation::JumpRelu { threshold: 0.05, bandwidth: 0.1 }, skip: true, ..Default::default() };
    let tc = random_transcoder(&cfg, layers, d, 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("circuit-tracer");
    export_circuit_tracer(&tc, &out).unwrap();

    let config = config_yaml(&out);
    assert_eq!(config["model_kind"], "cross_layer_transcoder");
    assert_eq!(config["feature_input_hook"], "hook_resid_mid");
    assert_eq!(config["feature_output_hook"], "hook_mlp_out");
    let mut files: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    let mut expected: Vec<String> = ["W_dec_0", "W_dec_1", "W_dec_2", "W_enc_0", "W_enc_1", "W_enc_2"].map(|n| format!("{n}.safetensors")).into();
    expected.push("config.yaml".to_owned());
    // The ownership mark lets a later export replace this folder (and nothing else).
    expected.insert(0, voltlens::io::OWNED_MARK.to_owned());
    assert_eq!(files, expected);

    for l in 0..layers {
        let enc = tensors_of(&out.join(format!("W_enc_{l}.safetensors")));
        let names: Vec<&str> = enc.keys().map(String::as_str).collect();
        let mut want = [format!("W_enc_{l}"), format!("W_skip_{l}"), format!("b_dec_{l}"), format!("b_enc_{l}"), format!("threshold_{l}")];
        want.sort();
        assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>());
        let (shape, w) = &enc[&format!("W_enc_{l}")];
        assert_eq!(shape, &vec![f, d], "a row per feature");
        // Row f of circuit-tracer's W_enc is feature f's encoder: column f of ours [d, F].
        for (feature, k) in [(0, 0), (5, 3), (2, 1)] {
            assert_eq!(w[feature * d + k], tc.w_enc[l * d * f + k * f + feature]);
        }
        assert_eq!(enc[&format!("b_dec_{l}")].0, vec![d]);
        assert_eq!(enc[&format!("threshold_{l}")], (vec![f], tc.threshold[l * f..(l + 1) * f].to_vec()));
        // circuit-tracer adds x @ W_skip, the orientation we store.
        assert_eq!(enc[&format!("W_skip_{l}")].1, tc.w_skip.as_ref().unwrap()[l * d * d..(l + 1) * d * d]);
        let dec = tensors_of(&out.join(format!("W_dec_{l}.safetensors")));
        assert_eq!(dec[&format!("W_dec_{l}")].0, vec![f, layers - l, d]);
    }
}

#[test]
fn plt_export_is_a_circuit_tracer_transcoder_set() {
    let (layers, d, f) = (2, 3, 5);
    let cfg = TranscoderConfig { variant: Variant::Plt, features: f, skip: true, ..Default::default() };
    let tc = random_transcoder(&cfg, layers, d, 2);
    let dir = tempfile::tempdir().unwrap();
    export_circuit_tracer(&tc, dir.path().join("ct").as_path()).unwrap();
    let out = dir.path().join("ct");
    assert_eq!(config_yaml(&out)["model_kind"], "transcoder_set");
    for l in 0..layers {
        let t = tensors_of(&out.join(format!("layer_{l}.safetensors")));
        assert_eq!(t.keys().map(String::as_str).collect::<Vec<_>>(), ["W_dec", "W_enc", "W_skip", "b_dec", "b_enc"]);
        assert_eq!(t["W_enc"].0, vec![f, d]);
        assert_eq!(t["W_dec"], (vec![f, d], tc.w_dec[l].clone()));
        // A single-layer transcoder adds x @ W_skip.T: stored transposed from ours.
        let ours = &tc.w_skip.as_ref().unwrap()[l * d * d..(l + 1) * d * d];
        assert_eq!(t["W_skip"].1[2 * d], ours[2], "W_skip[2][0] there is ours [0][2]");
    }
}

#[test]
fn every_variant_round_trips_exactly() {
    let x: Vec<f32> = (0..10 * 3 * 4).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
    let jump = Activation::JumpRelu { threshold: 0.03, bandwidth: 0.2 };
    for (i, cfg) in [
        TranscoderConfig { features: 8, skip: true, ..Default::default() },
        TranscoderConfig { features: 8, activation: jump, ..Default::default() },
        TranscoderConfig { features: 8, activation: Activation::BatchTopK { k: 2 }, ..Default::default() },
        TranscoderConfig { variant: Variant::Plt, features: 8, activation: jump, skip: true, ..Default::default() },
        TranscoderConfig { variant: Variant::Mlsae, features: 8, activation: Activation::TopK { k: 3 }, ..Default::default() },
    ]
    .into_iter()
    .enumerate()
    {
        let tc = random_transcoder(&cfg, 3, 4, i as u64);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("circuit-tracer");
        export_circuit_tracer(&tc, &out).unwrap();
        let back = import_circuit_tracer(&out).unwrap();
        assert_eq!(back, tc, "{:?} {:?}", cfg.variant, cfg.activation);
        assert_eq!(back.forward(&x).mlp_out, tc.forward(&x).mlp_out);
    }
}

/// A CLT as another tool writes it: bf16 tensors, circuit-tracer's names, no config.yaml.
#[test]
fn a_foreign_bf16_clt_without_config_imports() {
    let (layers, d, f) = (2, 3, 4);
    let dir = tempfile::tempdir().unwrap();
    let bf16 = |v: f32| (v.to_bits() >> 16) as u16;
    // Values exact in bf16: k/8.
    let value = |i: usize| ((i % 17) as f32 - 8.0) / 8.0;
    let write = |path: &Path, tensors: Vec<(String, Vec<usize>)>| {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .into_iter()
            .map(|(n, s)| {
                let data = (0..s.iter().product()).flat_map(|i| bf16(value(i)).to_le_bytes()).collect();
                (n, s, data)
            })
            .collect();
        let views: Vec<(String, TensorView)> =
            bytes.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::BF16, s.clone(), b).unwrap())).collect();
        safetensors::tensor::serialize_to_file(views, None, path).unwrap();
    };
    for l in 0..layers {
        let enc = vec![(format!("W_enc_{l}"), vec![f, d]), (format!("b_enc_{l}"), vec![f]), (format!("b_dec_{l}"), vec![d]), (format!("threshold_{l}"), vec![f])];
        write(&dir.path().join(format!("W_enc_{l}.safetensors")), enc);
        write(&dir.path().join(format!("W_dec_{l}.safetensors")), vec![(format!("W_dec_{l}"), vec![f, layers - l, d])]);
    }
    let tc = import_circuit_tracer(dir.path()).unwrap();
    assert_eq!((tc.shape.variant, tc.shape.layers, tc.shape.d_model, tc.shape.features), (Variant::Clt, layers, d, f));
    assert!(matches!(tc.activation, Activation::JumpRelu { .. }), "thresholds mean JumpReLU");
    // Ours is [d, F]: element (k, feature) is their (feature, k).
    assert_eq!(tc.w_enc[2 * f + 1], value(d + 2));
    assert_eq!(tc.w_dec[1], (0..f * d).map(value).collect::<Vec<_>>());
    assert_eq!(&tc.threshold[..f], &(0..f).map(value).collect::<Vec<_>>()[..]);
}

#[test]
fn import_refuses_other_hooks_and_the_old_layout() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ct");
    let tc = random_transcoder(&TranscoderConfig { features: 4, ..Default::default() }, 2, 3, 3);
    export_circuit_tracer(&tc, &out).unwrap();
    let yaml = std::fs::read_to_string(out.join("config.yaml")).unwrap().replace("hook_resid_mid", "hook_resid_pre");
    std::fs::write(out.join("config.yaml"), yaml).unwrap();
    let err = import_circuit_tracer(&out).unwrap_err().to_string();
    assert!(err.contains("config.yaml") && err.contains("hook_resid_pre"), "{err}");

    let old = dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(old.join("config.json"), "{\"format\": \"circuit-tracer-clt\"}").unwrap();
    let err = import_circuit_tracer(&old).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("earlier VoltLens"), "{err}");
}

#[test]
fn export_replaces_an_earlier_export_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("circuit-tracer");
    let cfg = TranscoderConfig { features: 4, ..Default::default() };
    export_circuit_tracer(&random_transcoder(&cfg, 3, 2, 4), &out).unwrap();
    let smaller = random_transcoder(&cfg, 2, 2, 5);
    export_circuit_tracer(&smaller, &out).unwrap();
    assert!(!out.join("W_enc_2.safetensors").exists(), "no stale layer left for load_clt's glob to count");
    assert_eq!(import_circuit_tracer(&out).unwrap(), smaller);

    let mine = dir.path().join("notes");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("todo.txt"), "keep").unwrap();
    assert!(export_circuit_tracer(&smaller, &mine).is_err());
    assert_eq!(std::fs::read_to_string(mine.join("todo.txt")).unwrap(), "keep");
}

fn synth_dataset(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    synthesize(&SynthConfig { cells: 3, cycles: 1, ..SynthConfig::default() }, &data).unwrap();
    data
}

fn key_value(path: &Path, key: &str) -> serde_json::Value {
    let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    let kv = builder.metadata().file_metadata().key_value_metadata().unwrap();
    let value = kv.iter().find(|k| k.key == key).and_then(|k| k.value.clone()).unwrap();
    serde_json::from_str(&value).unwrap()
}

#[test]
fn battdat_export_has_battdats_layout_metadata_and_states() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_dataset(dir.path());
    let out = dir.path().join("battdat");
    let files = export_battdat(&data, &out).unwrap();
    let cells = Dataset::load_cells(&data).unwrap();
    assert_eq!(files.len(), cells.len());
    for cell in &cells {
        let file = out.join(&cell.cell_id).join("raw_data.parquet");
        assert!(files.contains(&file));
        assert_eq!(detect(&file).unwrap(), Format::Battdat);
        let battery = key_value(&file, "battery_metadata");
        assert_eq!(battery["name"], cell.cell_id.as_str());
        assert_eq!(battery["is_measurement"], false, "synth cells are simulations");
        let table = key_value(&file, "table_metadata");
        assert_eq!(table["test_time"]["monotonic"], true);
        assert_eq!(table["state"]["type"], "state");
        assert_eq!(table["method"]["type"], "control");
        assert_eq!(table["temperature"]["units"], "C");
        for ours in ["cell_id", "dt", "step_time", "c_rate", "soc", "soh"] {
            assert!(table["extra_columns"].get(ours).is_some(), "{ours} described in extra_columns");
        }
        let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap();
        let (_, canonical) = read_cell(&DatasetPaths::new(&data).cell_file(&cell.cell_id)).unwrap();
        let mut states = Vec::new();
        for batch in builder.build().unwrap() {
            let state = arrow::compute::cast(batch.unwrap().column_by_name("state").unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
            let state: &StringArray = state.as_string::<i32>();
            states.extend((0..state.len()).map(|i| state.value(i).to_owned()));
        }
        let expected: Vec<&str> = canonical.state.iter().map(|s| if s.as_str() == "resting" { "hold" } else { s.as_str() }).collect();
        assert_eq!(states, expected);
        assert!(states.iter().any(|s| s == "hold"), "a synthetic cycle rests");
    }
    // Exported again over itself it is replaced; a folder of the user's is refused, untouched.
    export_battdat(&data, &out).unwrap();
    let theirs = dir.path().join("theirs");
    let cell_dir = theirs.join(&cells[0].cell_id);
    std::fs::create_dir_all(&cell_dir).unwrap();
    std::fs::write(cell_dir.join("raw_data.parquet"), b"their own file").unwrap();
    let err = export_battdat(&data, &theirs).unwrap_err().to_string();
    assert!(err.contains("not written by VoltLens"), "{err}");
    assert_eq!(std::fs::read(cell_dir.join("raw_data.parquet")).unwrap(), b"their own file");
}

#[test]
fn ingest_reads_a_battdat_export_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_dataset(dir.path());
    let out = dir.path().join("battdat");
    export_battdat(&data, &out).unwrap();
    let again = dir.path().join("again");
    let cells = ingest(&[out.clone()], &again, &IngestOptions::default()).unwrap();
    let before = Dataset::load(&data).unwrap();
    let after = Dataset::load(&again).unwrap();
    assert_eq!(cells.len(), before.cells.len());
    for (b, a) in before.cells.iter().zip(&after.cells) {
        assert_eq!((&a.cell_id, a.nominal_capacity_ah, a.rows, a.format.as_str()), (&b.cell_id, b.nominal_capacity_ah, b.rows, "battdat"));
    }
    for (b, a) in before.data.iter().zip(&after.data) {
        assert_eq!((&a.test_time, &a.current, &a.voltage), (&b.test_time, &b.current, &b.voltage));
        assert_eq!((&a.state, &a.method, &a.soc), (&b.state, &b.method, &b.soc));
        assert_eq!(a.gt.iter().map(|(n, _)| n).collect::<Vec<_>>(), b.gt.iter().map(|(n, _)| n).collect::<Vec<_>>());
    }
    // One battery folder given directly reads as that battery.
    let one = before.cells[0].cell_id.clone();
    let single = ingest(&[out.join(&one)], &dir.path().join("one"), &IngestOptions::default()).unwrap();
    assert_eq!(single[0].cell_id, one);
}

/// Runs a script with the voltlens binary cargo built for these tests (a `cargo run` inside would
/// wait forever for the build lock `cargo test` holds).
fn run_script(script: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = std::process::Command::new("bash")
        .arg(root.join("scripts").join(script))
        .env("VOLTLENS", env!("CARGO_BIN_EXE_voltlens"))
        .current_dir(root)
        .status()
        .unwrap();
    assert!(status.success(), "{script} failed");
}

/// circuit-tracer from PyPI loads our CLT export and reconstructs as we do (FVU within 0.01).
#[test]
#[ignore = "installs circuit-tracer from PyPI; run with --ignored"]
fn circuit_tracer_from_pypi_reads_our_transcoders() {
    run_script("interop_circuit_tracer.sh");
}

/// Battery models on transformers' own GPT2Model and LlamaModel import within 1e-4 V.
#[test]
#[ignore = "installs transformers from PyPI; run with --ignored"]
fn transformers_gpt2_and_llama_models_import_exactly() {
    run_script("interop_transformers.sh");
}

/// battdat from PyPI reads our export and its validators report no errors.
#[test]
#[ignore = "installs battery-data-toolkit from PyPI; run with --ignored"]
fn battdat_from_pypi_validates_our_export() {
    run_script("interop_battdat.sh");
}
