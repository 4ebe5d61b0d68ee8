//! Bring your own model: `import-model` reads a transformer stored in another layout exactly,
//! names every tensor it cannot place, and `export-model` writes what PyTorch rebuilds.
//!
//! The PyTorch round trips run examples/pytorch/reference.py with $VOLTLENS_PYTHON (else
//! python3); they skip, saying so, when torch cannot be imported, except under CI=true.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::backend::Flex;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use voltlens::data::windows::{NormStats, Split};
use voltlens::io::write_json;
use voltlens::model::checkpoint::{ModelDir, RunConfig};
use voltlens::model::import::ImportSummary;
use voltlens::model::{
    export_model, load_model, HeadTarget, ImportRequest, InputNorm, Lblm, MlpKind, ModelConfig, NormKind, Positional,
    Tolerance, TrainConfig,
};

fn import_model(weights: &Path, arch: &Path, out: &Path, check: Option<&Path>, volts: f64) -> voltlens::Result<ImportSummary> {
    let tolerance = Tolerance { volts, ..Tolerance::default() };
    voltlens::model::import_model(&ImportRequest { weights, arch, out, check, tolerance, dataset: None, seed: 0 })
}

fn small(cfg: ModelConfig) -> ModelConfig {
    ModelConfig { layers: 2, d_model: 16, heads: 2, d_mlp: 40, context: 32, ..cfg }
}

/// A model directory holding a randomly initialised `cfg` (no training needed to test layouts).
fn random_model_dir(dir: &Path, cfg: &ModelConfig, seed: u64) {
    let mut model = Lblm::<Flex>::new(cfg, seed, &Default::default());
    let c = cfg.channels.len();
    let stats = NormStats { mean: (0..c).map(|i| 0.5 * i as f32).collect(), std: (0..c).map(|i| 1.0 + 0.25 * i as f32).collect() };
    let norm = InputNorm { channels: cfg.channels.clone(), stats, target_scale: 0.05 };
    if cfg.head == HeadTarget::NextVoltage {
        // What import-model sets: the head's V_{t+1} minus V_t = x_V·σ_V + mean_V.
        let v = cfg.channels.iter().position(|n| n == "voltage").unwrap();
        let skip: Vec<f32> = (0..c).map(|i| if i == v { -norm.stats.std[v] / norm.target_scale } else { 0.0 }).collect();
        model.input_skip = Some(burn::module::Param::from_tensor(burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(skip, [c]), &Default::default())));
    }
    let md = ModelDir::new(dir);
    md.create().unwrap();
    write_json(&md.split(), &Split { seed: 0, train: vec![], val: vec![], test: vec![] }).unwrap();
    write_json(&md.norm(), &norm).unwrap();
    let run = RunConfig { model: cfg.clone(), train: TrainConfig::default(), dataset: "random".into(), voltlens_version: "test".into() };
    write_json(&md.config(), &run).unwrap();
    md.save_weights(&model).unwrap();
}

/// A random model of `cfg` exported by `export-model`: the temporary directory and the export.
fn exported(cfg: &ModelConfig, seed: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (model, export) = (tmp.path().join("model"), tmp.path().join("export"));
    random_model_dir(&model, cfg, seed);
    export_model(&model, &export).unwrap();
    (tmp, export)
}

type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn read_tensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.shape().to_vec(), v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())))
        .collect()
}

fn write_tensors(path: &Path, tensors: &Tensors) {
    write_tensors_with(path, tensors, &[]);
}

/// f32 `tensors` and `others` of any dtype (name, dtype, shape, raw little-endian bytes).
fn write_tensors_with(path: &Path, tensors: &Tensors, others: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let mut bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(n, (s, d))| (n.clone(), Dtype::F32, s.clone(), d.iter().flat_map(|v| v.to_le_bytes()).collect())).collect();
    bytes.extend(others.iter().map(|(n, t, s, b)| (n.to_string(), *t, s.clone(), b.clone())));
    let views: Vec<(String, TensorView)> = bytes.iter().map(|(n, t, s, b)| (n.clone(), TensorView::new(*t, s.clone(), b).unwrap())).collect();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

/// Export → import with the export's own check file: every architecture choice survives.
#[test]
fn every_architecture_survives_export_and_import() {
    let raw_channels: Vec<String> = ["voltage", "current_a", "dt_next_s", "soc", "charge_ah"].map(String::from).to_vec();
    let configs = [
        small(ModelConfig::default()),
        small(ModelConfig { norm: NormKind::RmsNorm, norm_eps: 1e-6, mlp: MlpKind::SwiGlu, final_norm: false, ..ModelConfig::default() }),
        small(ModelConfig { positional: Positional::Learned, mlp: MlpKind::GeluTanh, channels: raw_channels.clone(), ..ModelConfig::default() }),
        small(ModelConfig { positional: Positional::None, head: HeadTarget::NextVoltage, channels: raw_channels, ..ModelConfig::default() }),
        small(ModelConfig { mlp: MlpKind::Relu, ..ModelConfig::default() }),
    ];
    for (i, cfg) in configs.iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let (model, export, imported) = (tmp.path().join("model"), tmp.path().join("export"), tmp.path().join("imported"));
        random_model_dir(&model, cfg, i as u64);
        export_model(&model, &export).unwrap();
        let summary =
            import_model(&export.join("model.safetensors"), &export.join("arch.toml"), &imported, Some(&export.join("check.safetensors")), 1e-6)
                .unwrap();
        let check = summary.check.unwrap();
        assert!(check.passed && check.max_rel_error < 1e-5, "config {i}: {check:?}");
        let loaded = load_model::<Flex>(&imported, &Default::default()).unwrap();
        assert_eq!(loaded.config.model.channels, cfg.channels);
        assert!(export_model(&imported, &export).unwrap_err().to_string().contains("exists"), "an export never overwrites");
    }
}

/// Splits fused qkv into q/k/v, moves rotary pairs from the half split to interleaved and stores
/// the MLP's up projection [in, out]: the layout of a Meta-style Llama with a Conv1D MLP.
fn to_foreign_layout(canonical: Tensors, cfg: &ModelConfig) -> Tensors {
    let (d, hd) = (cfg.d_model, cfg.head_dim());
    let mut out = Tensors::new();
    for (name, (shape, data)) in canonical {
        if let Some(rest) = name.strip_prefix("blocks.") {
            let (layer, part) = rest.split_once('.').unwrap();
            if let Some(kind) = part.strip_prefix("attn.qkv.") {
                let width = if kind == "weight" { d } else { 1 };
                for (k, p) in ["q", "k", "v"].iter().enumerate() {
                    let mut rows: Vec<f32> = data[k * d * width..(k + 1) * d * width].to_vec();
                    if *p != "v" {
                        // Interleaved row 2i is half-split row i, row 2i+1 is row i + hd/2.
                        let old = rows.clone();
                        for row in 0..d {
                            let (head, j) = (row / hd, row % hd);
                            let from = head * hd + if j % 2 == 0 { j / 2 } else { j / 2 + hd / 2 };
                            rows[row * width..(row + 1) * width].copy_from_slice(&old[from * width..(from + 1) * width]);
                        }
                    }
                    let s = if kind == "weight" { vec![d, d] } else { vec![d] };
                    out.insert(format!("layers.{layer}.w{p}.{kind}"), (s, rows));
                }
                continue;
            }
            if part == "mlp.up.weight" {
                let (o, i) = (shape[0], shape[1]);
                let t = (0..i).flat_map(|c| (0..o).map(move |r| (r, c))).map(|(r, c)| data[r * i + c]).collect();
                out.insert(format!("layers.{layer}.fc_in.kernel"), (vec![i, o], t));
                continue;
            }
            out.insert(format!("layers.{layer}.{part}"), (shape, data));
        } else {
            out.insert(format!("model.{name}"), (shape, data));
        }
    }
    out
}

const FOREIGN_RULES: &str = r#"rope_pairing = "interleaved"
conv1d = ['\.kernel$']
rename = [
  ['^layers\.(\d+)\.w([qkv])\.(weight|bias)$', 'blocks.$1.attn.$2.$3'],
  ['^layers\.(\d+)\.fc_in\.kernel$', 'blocks.$1.mlp.up.weight'],
  ['^layers\.(\d+)\.(.+)$', 'blocks.$1.$2'],
  ['^model\.(.+)$', '$1'],
]
"#;

/// The export's arch.toml with its [weights] table replaced by `rules`.
fn arch_with_rules(export: &Path, rules: &str) -> String {
    let text = std::fs::read_to_string(export.join("arch.toml")).unwrap();
    let start = text.find("[weights]").unwrap();
    let end = text[start + 1..].find("\n[").map_or(text.len(), |e| start + 1 + e);
    format!("{}[weights]\n{rules}{}", &text[..start], &text[end..])
}

#[test]
fn separate_qkv_interleaved_rotary_and_conv1d_weights_import_exactly() {
    let cfg = small(ModelConfig { norm: NormKind::RmsNorm, mlp: MlpKind::SwiGlu, ..ModelConfig::default() });
    let (tmp, export) = exported(&cfg, 3);
    let foreign = to_foreign_layout(read_tensors(&export.join("model.safetensors")), &cfg);
    let weights = tmp.path().join("foreign.safetensors");
    write_tensors(&weights, &foreign);
    let arch = tmp.path().join("foreign.toml");
    std::fs::write(&arch, arch_with_rules(&export, FOREIGN_RULES)).unwrap();
    let summary = import_model(&weights, &arch, &tmp.path().join("imported"), Some(&export.join("check.safetensors")), 1e-6).unwrap();
    let check = summary.check.unwrap();
    assert!(check.max_rel_error < 1e-5, "{check:?}");

    // Read as the half split, the interleaved weights give other predictions: the check notices,
    // and no model directory is left behind.
    std::fs::write(&arch, arch_with_rules(&export, &FOREIGN_RULES.replace("interleaved", "half"))).unwrap();
    let wrong = tmp.path().join("wrong");
    let err = import_model(&weights, &arch, &wrong, Some(&export.join("check.safetensors")), 1e-6).unwrap_err().to_string();
    assert!(err.contains("differ from the source's"), "{err}");
    assert!(!wrong.exists());
    // A ΔV head's outputs are small: the bound relative to them catches what a loose one in volts lets by.
    let err = import_model(&weights, &arch, &wrong, Some(&export.join("check.safetensors")), 1.0).unwrap_err().to_string();
    assert!(err.contains("differ from the source's") && err.contains("rope_pairing"), "{err}");
}

/// What the weights cannot show must be stated: an arch TOML without `positional` or `norm`
/// would otherwise import another model (rotary, LayerNorm) without a word.
#[test]
fn architecture_the_weights_do_not_show_must_be_stated() {
    let cfg = small(ModelConfig { positional: Positional::Learned, ..ModelConfig::default() });
    let (tmp, export) = exported(&cfg, 8);
    let text = std::fs::read_to_string(export.join("arch.toml")).unwrap();
    let arch = tmp.path().join("arch.toml");
    let without = |key: &str| text.lines().filter(|l| !l.starts_with(&format!("{key} ="))).collect::<Vec<_>>().join("\n");
    for key in ["positional", "norm", "norm_eps", "mlp"] {
        std::fs::write(&arch, without(key)).unwrap();
        let err = import_model(&export.join("model.safetensors"), &arch, &tmp.path().join("out"), None, 1e-4).unwrap_err().to_string();
        assert!(err.contains("must state what the weights do not show") && err.contains(&format!("{key} (")), "{key}: {err}");
    }
}

#[test]
fn every_unmatched_missing_or_misshapen_tensor_is_named() {
    let cfg = small(ModelConfig::default());
    let (tmp, export) = exported(&cfg, 5);
    let mut tensors = read_tensors(&export.join("model.safetensors"));
    tensors.remove("blocks.1.mlp.down.weight");
    tensors.get_mut("blocks.0.attn.out.weight").unwrap().0 = vec![8, 32];
    tensors.insert("rotary.inv_freq".into(), (vec![4], vec![1.0; 4]));
    let weights = tmp.path().join("broken.safetensors");
    write_tensors(&weights, &tensors);
    let rules = "rename = [['^(blocks|embed|head|ln_final)(.*)$', '$1$2']]\n";
    let arch = tmp.path().join("arch.toml");
    std::fs::write(&arch, arch_with_rules(&export, rules)).unwrap();
    let err = import_model(&weights, &arch, &tmp.path().join("out"), None, 1e-4).unwrap_err().to_string();
    for name in ["'rotary.inv_freq' matches no rename rule", "'blocks.1.mlp.down.weight' [16, 40] is missing", "'blocks.0.attn.out.weight' has shape [8, 32]"] {
        assert!(err.contains(name), "{name} not in: {err}");
    }
    // A matrix stored [in, out] is pointed to conv1d; torch.compile's prefix is named; Python's
    // group references are refused.
    let (o, i) = (16, 40);
    tensors.insert("blocks.1.mlp.down.weight".into(), (vec![i, o], vec![0.0; i * o]));
    let compiled: Tensors = tensors.into_iter().map(|(n, t)| (format!("_orig_mod.{n}"), t)).collect();
    write_tensors(&weights, &compiled);
    let err = import_model(&weights, &arch, &tmp.path().join("out"), None, 1e-4).unwrap_err().to_string();
    assert!(err.contains("starts with '_orig_mod.'"), "{err}");
    std::fs::write(&arch, arch_with_rules(&export, "rename = [['^_orig_mod\\.(.*)$', '$1']]\n")).unwrap();
    let err = import_model(&weights, &arch, &tmp.path().join("out"), None, 1e-4).unwrap_err().to_string();
    assert!(err.contains("'blocks.1.mlp.down.weight' has shape [40, 16]") && err.contains("[weights] conv1d"), "{err}");
    std::fs::write(&arch, arch_with_rules(&export, "rename = [['^_orig_mod\\.(.*)$', '\\1']]\n")).unwrap();
    let err = import_model(&weights, &arch, &tmp.path().join("out"), None, 1e-4).unwrap_err().to_string();
    assert!(err.contains("write $1"), "{err}");
}

/// What PyTorch code commonly saves imports as it is: a position table as a [1, context, d]
/// parameter, grouped-query attention's q, k and v fused in one [d + 2·kv·hd, d] matrix, and a
/// check file in numpy's float64 with the head's [N, T, 1] unsqueezed.
#[test]
fn pytorch_idioms_import_as_they_are() {
    let cfg = small(ModelConfig { positional: Positional::Learned, ..ModelConfig::default() });
    let (tmp, export) = exported(&cfg, 11);
    let (d, hd) = (cfg.d_model, cfg.head_dim());
    // One key/value head for the two query heads: head 1's k and v rows become head 0's.
    let mut tensors = read_tensors(&export.join("model.safetensors"));
    for l in 0..cfg.layers {
        for kind in ["weight", "bias"] {
            let (_, data) = tensors.get_mut(&format!("blocks.{l}.attn.qkv.{kind}")).unwrap();
            let width = data.len() / (3 * d);
            for part in [1, 2] {
                let head0 = data[(part * d) * width..(part * d + hd) * width].to_vec();
                data[(part * d + hd) * width..(part * d + 2 * hd) * width].copy_from_slice(&head0);
            }
        }
    }
    let shared = tmp.path().join("shared.safetensors");
    write_tensors(&shared, &tensors);
    let same_rules = "rename = [['^(.*)$', '$1']]\n";
    let arch = tmp.path().join("arch.toml");
    std::fs::write(&arch, arch_with_rules(&export, same_rules)).unwrap();
    import_model(&shared, &arch, &tmp.path().join("shared-model"), None, 1e-4).unwrap();
    let reference = tmp.path().join("reference");
    export_model(&tmp.path().join("shared-model"), &reference).unwrap();

    // The same model as PyTorch code saves it.
    for l in 0..cfg.layers {
        for kind in ["weight", "bias"] {
            let (shape, data) = tensors.remove(&format!("blocks.{l}.attn.qkv.{kind}")).unwrap();
            let width = data.len() / shape[0];
            let rows = |from: usize, n: usize| data[from * width..(from + n) * width].to_vec();
            let fused = [rows(0, d), rows(d, hd), rows(2 * d, hd)].concat();
            let shape = if kind == "weight" { vec![d + 2 * hd, d] } else { vec![d + 2 * hd] };
            tensors.insert(format!("blocks.{l}.attn.qkv.{kind}"), (shape, fused));
        }
    }
    tensors.get_mut("positions").unwrap().0.insert(0, 1);
    let foreign = tmp.path().join("foreign.safetensors");
    write_tensors(&foreign, &tensors);
    let mut check = read_tensors(&reference.join("check.safetensors"));
    check.get_mut("outputs").unwrap().0.push(1);
    let views: Vec<(String, Vec<usize>, Vec<u8>)> = check.iter().map(|(n, (s, v))| (n.clone(), s.clone(), v.iter().flat_map(|x| (*x as f64).to_le_bytes()).collect())).collect();
    let check_f64 = tmp.path().join("check64.safetensors");
    let views: Vec<(String, TensorView)> = views.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F64, s.clone(), b).unwrap())).collect();
    safetensors::tensor::serialize_to_file(views, None, &check_f64).unwrap();
    std::fs::write(&arch, arch_with_rules(&export, &format!("kv_heads = 1\n{same_rules}"))).unwrap();
    let summary = import_model(&foreign, &arch, &tmp.path().join("imported"), Some(&check_f64), 1e-6).unwrap();
    assert!(summary.check.unwrap().max_rel_error < 1e-5);
    // Without kv_heads the fused matrix's shape says what it is.
    std::fs::write(&arch, arch_with_rules(&export, same_rules)).unwrap();
    let err = import_model(&foreign, &arch, &tmp.path().join("refused"), None, 1e-4).unwrap_err().to_string();
    assert!(err.contains("kv_heads = 1"), "{err}");
}

/// Grouped-query attention whose key/value heads are tiled over the query heads (`.repeat()`: head
/// j serves query heads j, j + kv, …) imports exactly with `kv_grouping = "tiled"`; read as
/// consecutive groups, the same weights fail the check.
#[test]
fn tiled_key_value_heads_import_exactly() {
    let cfg = ModelConfig { heads: 4, ..small(ModelConfig { norm: NormKind::RmsNorm, mlp: MlpKind::SwiGlu, ..ModelConfig::default() }) };
    let (tmp, export) = exported(&cfg, 5);
    let (d, hd, kv) = (cfg.d_model, cfg.head_dim(), 2);
    let mut tensors = read_tensors(&export.join("model.safetensors"));
    // The source's two key/value heads are the export's heads 0 and 1; tiled, query heads 2 and 3
    // use them again. The model VoltLens should import repeats them so, one head per query head.
    let mut foreign = tensors.clone();
    for l in 0..cfg.layers {
        let name = format!("blocks.{l}.attn.qkv.weight");
        let (_, data) = tensors.get_mut(&name).unwrap();
        for part in [1, 2] {
            let served = data[(part * d) * d..(part * d + kv * hd) * d].to_vec();
            data[(part * d + kv * hd) * d..(part * d + 2 * kv * hd) * d].copy_from_slice(&served);
        }
        let (_, data) = foreign.remove(&name).unwrap();
        let rows = |from: usize, n: usize| data[from * d..(from + n) * d].to_vec();
        foreign.insert(name, (vec![d + 2 * kv * hd, d], [rows(0, d), rows(d, kv * hd), rows(2 * d, kv * hd)].concat()));
        let name = format!("blocks.{l}.attn.qkv.bias");
        let (_, data) = tensors.get_mut(&name).unwrap();
        for part in [1, 2] {
            data.copy_within(part * d..part * d + kv * hd, part * d + kv * hd);
        }
        let (_, data) = foreign.remove(&name).unwrap();
        foreign.insert(name, (vec![d + 2 * kv * hd], [&data[..d + kv * hd], &data[2 * d..2 * d + kv * hd]].concat()));
    }
    let same_rules = "rename = [['^(.*)$', '$1']]\n";
    let arch = tmp.path().join("arch.toml");
    let (expanded, grouped) = (tmp.path().join("expanded.safetensors"), tmp.path().join("grouped.safetensors"));
    write_tensors(&expanded, &tensors);
    write_tensors(&grouped, &foreign);
    std::fs::write(&arch, arch_with_rules(&export, same_rules)).unwrap();
    import_model(&expanded, &arch, &tmp.path().join("expanded-model"), None, 1e-4).unwrap();
    let reference = tmp.path().join("reference");
    export_model(&tmp.path().join("expanded-model"), &reference).unwrap();
    let check = reference.join("check.safetensors");

    std::fs::write(&arch, arch_with_rules(&export, &format!("kv_heads = {kv}\nkv_grouping = \"tiled\"\n{same_rules}"))).unwrap();
    let summary = import_model(&grouped, &arch, &tmp.path().join("tiled"), Some(&check), 1e-6).unwrap();
    assert!(summary.check.unwrap().max_rel_error < 1e-5);
    std::fs::write(&arch, arch_with_rules(&export, &format!("kv_heads = {kv}\n{same_rules}"))).unwrap();
    let err = import_model(&grouped, &arch, &tmp.path().join("consecutive"), Some(&check), 1e-6).unwrap_err().to_string();
    assert!(err.contains("kv_grouping"), "{err}");
}

/// A NaN in the weights, the check inputs or outputs is refused by name: compared as numbers,
/// NaN differs by nothing, and a check once passed a model that predicted NaN everywhere.
#[test]
fn nan_weights_or_check_values_are_refused() {
    let cfg = small(ModelConfig::default());
    let (tmp, export) = exported(&cfg, 12);
    let rules = "rename = [['^(.*)$', '$1']]\n";
    let arch = tmp.path().join("arch.toml");
    std::fs::write(&arch, arch_with_rules(&export, rules)).unwrap();
    let check = export.join("check.safetensors");
    let mut tensors = read_tensors(&export.join("model.safetensors"));
    tensors.get_mut("head.weight").unwrap().1[0] = f32::NAN;
    let nan_weights = tmp.path().join("nan.safetensors");
    write_tensors(&nan_weights, &tensors);
    let err = import_model(&nan_weights, &arch, &tmp.path().join("a"), Some(&check), 1e-4).unwrap_err().to_string();
    assert!(err.contains("'head.weight' holds 1 NaN"), "{err}");
    for (tensor, index) in [("outputs", 5), ("inputs", 0)] {
        let mut values = read_tensors(&check);
        values.get_mut(tensor).unwrap().1[index] = f32::NAN;
        let bad = tmp.path().join(format!("bad-{tensor}.safetensors"));
        write_tensors(&bad, &values);
        let err = import_model(&export.join("model.safetensors"), &arch, &tmp.path().join("b"), Some(&bad), 1e-4).unwrap_err().to_string();
        assert!(err.contains(&format!("'{tensor}' holds NaN")), "{err}");
    }
    assert!(!tmp.path().join("a").exists() && !tmp.path().join("b").exists());
}

/// Buffers saved beside the weights (a causal mask, a rotary table, boolean masks and int64
/// position ids as PyTorch saves them) are left out by `ignore`, whatever their dtype; without it
/// they are named.
#[test]
fn ignored_source_tensors_are_left_out_before_renaming() {
    let cfg = small(ModelConfig::default());
    let (tmp, export) = exported(&cfg, 7);
    let mut tensors = read_tensors(&export.join("model.safetensors"));
    tensors.insert("blocks.0.attn.bias".into(), (vec![1, 1, 4, 4], vec![1.0; 16]));
    tensors.insert("rotary.inv_freq".into(), (vec![4], vec![1.0; 4]));
    let weights = tmp.path().join("buffers.safetensors");
    let others = [
        ("blocks.1.attn.masked_bias", Dtype::BOOL, vec![4, 4], vec![1u8; 16]),
        ("position_ids", Dtype::I64, vec![1, 4], (0i64..4).flat_map(|i| i.to_le_bytes()).collect()),
    ];
    write_tensors_with(&weights, &tensors, &others);
    let arch = tmp.path().join("arch.toml");
    let rules = "rename = [['^(.*)$', '$1']]\n";
    std::fs::write(&arch, arch_with_rules(&export, &format!("ignore = ['masked_bias$', 'position_ids']\n{rules}"))).unwrap();
    let err = import_model(&weights, &arch, &tmp.path().join("refused"), None, 1e-4).unwrap_err().to_string();
    assert!(err.contains("'blocks.0.attn.bias' (renamed from the source) is not a tensor"), "{err}");
    std::fs::write(&arch, arch_with_rules(&export, &format!("ignore = ['\\.attn\\.(masked_)?bias$', 'inv_freq$', '^position_ids$']\n{rules}"))).unwrap();
    let summary = import_model(&weights, &arch, &tmp.path().join("imported"), Some(&export.join("check.safetensors")), 1e-6).unwrap();
    assert!(summary.check.unwrap().passed);
}

#[test]
fn an_unknown_input_channel_lists_the_catalogue() {
    let cfg = small(ModelConfig::default());
    let (tmp, export) = exported(&cfg, 6);
    let arch = tmp.path().join("arch.toml");
    let text = std::fs::read_to_string(export.join("arch.toml")).unwrap().replace("name = \"c_rate\"", "name = \"amps\"");
    std::fs::write(&arch, text.replace("\"c_rate\",", "\"amps\",")).unwrap();
    let err = import_model(&export.join("model.safetensors"), &arch, &tmp.path().join("out"), None, 1e-4).unwrap_err().to_string();
    assert!(err.contains("unknown input channel 'amps'") && err.contains("current_a") && err.contains("cycle_number"), "{err}");
}

/// The interpreter for reference.py, or None (with the reason printed) when it cannot import
/// `modules` (e.g. "torch, safetensors").
fn python_with(modules: &str) -> Option<PathBuf> {
    let python = PathBuf::from(std::env::var("VOLTLENS_PYTHON").unwrap_or_else(|_| "python3".into()));
    let ok = Command::new(&python).args(["-c", &format!("import {modules}")]).output().is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but {} cannot import {modules}", python.display());
    eprintln!("SKIPPED: {} cannot import {modules} (set VOLTLENS_PYTHON to a Python that can)", python.display());
    None
}

fn reference(python: &Path, args: &[&str]) -> String {
    let out = Command::new(python).arg("examples/pytorch/reference.py").args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "reference.py {args:?}: {text}");
    text
}

/// GPT-2 and Llama style PyTorch models import within 1e-4 V on 8 windows of 512 steps, and their
/// exports rebuild in PyTorch within 1e-5 V.
#[test]
fn pytorch_models_import_and_export_exactly() {
    let Some(python) = python_with("torch, safetensors") else { return };
    let tmp = tempfile::tempdir().unwrap();
    for layout in ["gpt2", "llama"] {
        let src = tmp.path().join(layout);
        reference(&python, &["make", "--layout", layout, "--out", src.to_str().unwrap()]);
        let imported = tmp.path().join(format!("{layout}-imported"));
        let summary =
            import_model(&src.join("weights.safetensors"), &src.join("arch.toml"), &imported, Some(&src.join("check.safetensors")), 1e-4).unwrap();
        let check = summary.check.unwrap();
        eprintln!("{layout} import: {check:?}");
        assert!(check.windows == 8 && check.steps == 512 && check.max_abs_error_v <= 1e-4, "{check:?}");

        let export = tmp.path().join(format!("{layout}-export"));
        export_model(&imported, &export).unwrap();
        let e = |f: &str| export.join(f).to_str().unwrap().to_owned();
        let text = reference(&python, &["check", "--layout", "voltlens", "--arch", &e("arch.toml"), "--weights", &e("model.safetensors"), "--check", &e("check.safetensors"), "--tolerance", "1e-5"]);
        eprintln!("{layout} export → PyTorch: {text}");
    }
}

/// A model trained in PyTorch on our Parquet, as a user's own code would (reference.py train:
/// pyarrow, channels computed from the canonical columns), imports within 1e-4 V on windows of
/// real cells.
#[test]
fn a_model_trained_in_pytorch_on_our_parquet_imports_exactly() {
    use voltlens::data::ingest::{ingest, IngestOptions};
    let Some(python) = python_with("torch, safetensors, pyarrow") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (data, trained, imported) = (tmp.path().join("data"), tmp.path().join("trained"), tmp.path().join("imported"));
    ingest(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/pybamm-chen2020")], &data, &IngestOptions::default()).unwrap();
    let text = reference(&python, &["train", "--layout", "llama", "--data", data.to_str().unwrap(), "--out", trained.to_str().unwrap(), "--steps", "60"]);
    let losses: Vec<f64> = text.lines().filter_map(|l| l.split("loss ").nth(1)?.trim().parse().ok()).collect();
    assert!(losses.len() >= 2 && losses.last() < losses.first(), "training did not lower the loss: {text}");
    // The check windows are real cells' rows: the voltage channel of window 0 is a cell's first volts.
    let check = read_tensors(&trained.join("check.safetensors"));
    let (shape, inputs) = &check["inputs"];
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("timeseries")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let volts = voltlens::data::canonical::read_cell(&files[0]).unwrap().1.voltage;
    assert_eq!((0..4).map(|t| inputs[t * shape[2]]).collect::<Vec<_>>(), volts[..4].to_vec());
    let summary = import_model(&trained.join("weights.safetensors"), &trained.join("arch.toml"), &imported, Some(&trained.join("check.safetensors")), 1e-4).unwrap();
    let check = summary.check.unwrap();
    eprintln!("trained llama import: {check:?}");
    assert!(check.steps == 512 && check.max_abs_error_v <= 1e-4, "{check:?}");
}

#[test]
fn a_model_reading_soc_records_and_labels_the_cells_that_have_one_and_leaves_out_the_others() {
    use voltlens::data::ingest::{ingest, IngestOptions};
    use voltlens::record::{record, RecordConfig, TranscoderInput};
    use voltlens::transcoder::{Transcoder, TranscoderConfig};
    let tmp = tempfile::tempdir().unwrap();
    let (data, model, rec) = (tmp.path().join("data"), tmp.path().join("model"), tmp.path().join("record"));
    // The shipped PyBaMM cells: their partial-cycling cell ends up with no trustworthy SOC anchor.
    let cells = ingest(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/pybamm-chen2020")], &data, &IngestOptions::default()).unwrap();
    let unanchored: Vec<&str> = cells.iter().filter(|c| c.anchor_method == voltlens::data::cells::AnchorMethod::Unanchored).map(|c| c.cell_id.as_str()).collect();
    assert!(!unanchored.is_empty() && unanchored.len() < cells.len(), "{unanchored:?}");
    let cfg = small(ModelConfig { channels: ["voltage", "current_next_a", "dt_next_s", "soc"].map(String::from).to_vec(), ..ModelConfig::default() });
    random_model_dir(&model, &cfg, 1);
    let tc = Transcoder::zeros(&TranscoderConfig { features: 8, ..TranscoderConfig::default() }, cfg.layers, cfg.d_model);
    let summary = record(&data, &model, TranscoderInput::Loaded(&tc), &RecordConfig::default(), &rec).unwrap();
    let expected: Vec<&str> = cells.iter().map(|c| c.cell_id.as_str()).filter(|id| !unanchored.contains(id)).collect();
    assert_eq!(summary.cell_ids, expected);
    // The label stage takes the record over those cells only.
    let labels = voltlens::label::stage::run_label_stage(&data, &rec, &voltlens::label::LabelConfig { n_shifts: 10, n_bootstrap: 4, ..Default::default() }, &tmp.path().join("label"));
    assert!(labels.is_ok(), "{labels:?}");
    // Asked for such a cell by name, the model says why it cannot read it.
    let err = voltlens::model::inputs::cell_steps(&data, unanchored[0], &cfg.channels).unwrap_err().to_string();
    assert!(err.contains("reads `soc`") && err.contains("unanchored"), "{err}");
    // Given `soc_present` too, a model reads every cell: soc and the flag are 0 where ingest has no SOC.
    let flagged: Vec<String> = ["voltage", "soc", "soc_present"].map(String::from).to_vec();
    let none = voltlens::model::inputs::cell_steps(&data, unanchored[0], &flagged).unwrap();
    assert!(none.inputs.chunks(3).all(|r| r[1] == 0.0 && r[2] == 0.0));
    let some = voltlens::model::inputs::cell_steps(&data, expected[0], &flagged).unwrap();
    assert!(some.inputs.chunks(3).all(|r| r[2] == 1.0) && some.inputs.chunks(3).any(|r| r[1] > 0.5));
}
