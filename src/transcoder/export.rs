//! circuit-tracer's transcoder layouts, out and in: the only file that knows them (DESIGN.md §3,
//! checked against circuit-tracer 0.5.0's `load_clt` and `load_transcoder_set`).
//!
//! - CLT, `model_kind: cross_layer_transcoder` (`load_clt`): per layer l a `W_enc_{l}.safetensors`
//!   holding `W_enc_{l}` [F, d] (a row per feature), `b_enc_{l}` [F], `b_dec_{l}` [d],
//!   `threshold_{l}` [F] (JumpReLU) and `W_skip_{l}` [d, d] (y += x·W_skip), and a
//!   `W_dec_{l}.safetensors` holding `W_dec_{l}` [F, L−l, d]. (circuit-tracer 0.5.0's `load_clt`
//!   does not read `W_skip_{l}`.)
//! - PLT, `model_kind: transcoder_set` (`load_transcoder_set`): per layer l a `layer_{l}.safetensors`
//!   holding `W_enc` [F, d], `W_dec` [F, d], `b_enc` [F], `b_dec` [d],
//!   `activation_function.threshold` [F] (JumpReLU) and `W_skip` [d, d] (y += x·W_skipᵀ there).
//! - MLSAE: circuit-tracer has no such model; the CLT files with one encoder `W_enc_0` [F, L·d]
//!   decoding to every layer (`W_dec_0` [F, L, d]), all `b_dec_{m}` beside it, `model_kind: voltlens_mlsae`.
//!
//! `config.yaml` holds the keys circuit-tracer reads (model_kind, feature_input_hook,
//! feature_output_hook) and `voltlens_*` keys for what its layout cannot say (TopK's k, JumpReLU's
//! bandwidth). Input scaling is folded into the weights (`Transcoder` never holds it), so importing
//! our export gives back exactly the same model. A folder with no `config.yaml` (circuit-tracer's
//! own `to_safetensors` writes none) is read as a CLT; f16 and bf16 tensors are widened to f32.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::clt::{Shape, Transcoder};
use super::config::{Activation, TranscoderConfig, Variant};
use super::tensors::{self, Named, TensorMap};
use crate::{Error, Result};

const CONFIG: &str = "config.yaml";
const INPUT_HOOK: &str = "hook_resid_mid";
const OUTPUT_HOOK: &str = "hook_mlp_out";
/// JumpReLU bandwidth assumed for a transcoder that does not state one (circuit-tracer's
/// single-layer loader uses the same); it only matters if the transcoder is trained further.
const FOREIGN_BANDWIDTH: f32 = 0.1;

fn model_kind(variant: Variant) -> &'static str {
    match variant {
        Variant::Clt => "cross_layer_transcoder",
        Variant::Plt => "transcoder_set",
        Variant::Mlsae => "voltlens_mlsae",
        Variant::Sae => "voltlens_sae",
    }
}

/// What a variant's encoders read: resid_mid, or for an SAE the mlp_out it rebuilds.
fn input_hook(variant: Variant) -> &'static str {
    if variant.reads_mlp_out() { OUTPUT_HOOK } else { INPUT_HOOK }
}

/// The encoder file that carries layer m's b_dec and W_skip: its own for the CLT, the only one for the MLSAE.
fn home(shape: &Shape, m: usize) -> usize {
    m.min(shape.encoders() - 1)
}

/// `a` [rows, cols] row-major as [cols, rows].
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols * rows).map(|i| a[(i % rows) * cols + i / rows]).collect()
}

/// Writes `tc` into `dir` in circuit-tracer's layout. The files are written to a sibling folder
/// that replaces `dir` only when complete; an existing `dir` must be empty or VoltLens's own.
pub fn export_circuit_tracer(tc: &Transcoder, dir: &Path) -> Result<()> {
    crate::io::check_replaceable(dir)?;
    let tmp = crate::io::fresh_temp_dir(dir)?;
    match tc.shape.variant {
        // An SAE on mlp_out has the shape of a per-layer transcoder (its hooks say what it reads).
        Variant::Plt | Variant::Sae => write_transcoder_set(tc, &tmp)?,
        Variant::Clt | Variant::Mlsae => write_clt(tc, &tmp)?,
    }
    let path = tmp.join(CONFIG);
    std::fs::write(&path, config_yaml(tc)).map_err(|e| Error::io(&path, e))?;
    crate::io::replace_dir(&tmp, dir)
}

fn write_clt(tc: &Transcoder, dir: &Path) -> Result<()> {
    let s = tc.shape;
    let (d, f) = (s.d_model, s.features);
    for e in 0..s.encoders() {
        let w_enc = transpose(tc.w_enc_of(e), s.d_in(), f);
        let mut named: Vec<Named> =
            vec![(format!("W_enc_{e}"), vec![f, s.d_in()], &w_enc[..]), (format!("b_enc_{e}"), vec![f], &tc.b_enc[e * f..(e + 1) * f])];
        if !tc.threshold.is_empty() {
            named.push((format!("threshold_{e}"), vec![f], &tc.threshold[e * f..(e + 1) * f]));
        }
        for m in (0..s.layers).filter(|&m| home(&s, m) == e) {
            named.push((format!("b_dec_{m}"), vec![d], &tc.b_dec[m * d..(m + 1) * d]));
            if let Some(w) = &tc.w_skip {
                named.push((format!("W_skip_{m}"), vec![d, d], &w[m * d * d..(m + 1) * d * d]));
            }
        }
        tensors::write(&dir.join(format!("W_enc_{e}.safetensors")), &named, None)?;
        let dec = [(format!("W_dec_{e}"), vec![f, s.out_layers(e).len(), d], tc.w_dec[e].as_slice())];
        tensors::write(&dir.join(format!("W_dec_{e}.safetensors")), &dec, None)?;
    }
    Ok(())
}

fn write_transcoder_set(tc: &Transcoder, dir: &Path) -> Result<()> {
    let s = tc.shape;
    let (d, f) = (s.d_model, s.features);
    for l in 0..s.layers {
        let w_enc = transpose(tc.w_enc_of(l), d, f);
        let w_skip = tc.w_skip.as_ref().map(|w| transpose(&w[l * d * d..(l + 1) * d * d], d, d));
        let mut named: Vec<Named> = vec![
            ("W_enc".into(), vec![f, d], &w_enc[..]),
            ("W_dec".into(), vec![f, d], &tc.w_dec[l][..]),
            ("b_enc".into(), vec![f], &tc.b_enc[l * f..(l + 1) * f]),
            ("b_dec".into(), vec![d], &tc.b_dec[l * d..(l + 1) * d]),
        ];
        if !tc.threshold.is_empty() {
            named.push(("activation_function.threshold".into(), vec![f], &tc.threshold[l * f..(l + 1) * f]));
        }
        if let Some(w) = &w_skip {
            named.push(("W_skip".into(), vec![d, d], &w[..]));
        }
        tensors::write(&dir.join(format!("layer_{l}.safetensors")), &named, None)?;
    }
    Ok(())
}

fn config_yaml(tc: &Transcoder) -> String {
    let activation = match tc.activation {
        Activation::Relu => "voltlens_activation: relu\n".to_owned(),
        Activation::JumpRelu { threshold, bandwidth } => format!(
            "voltlens_activation: jump_relu\nvoltlens_bandwidth: {bandwidth:?}\nvoltlens_initial_threshold: {threshold:?}\n"
        ),
        Activation::TopK { k } => format!("voltlens_activation: topk\nvoltlens_k: {k}\n"),
        Activation::BatchTopK { k } => format!("voltlens_activation: batch_topk\nvoltlens_k: {k}\n"),
    };
    format!(
        "# A transcoder of a VoltLens battery model, in circuit-tracer's layout.\n\
         model_kind: {}\nfeature_input_hook: {}\nfeature_output_hook: {OUTPUT_HOOK}\n\
         # What circuit-tracer's files cannot say; circuit-tracer encodes with ReLU or, given thresholds, JumpReLU.\n{activation}",
        model_kind(tc.shape.variant),
        input_hook(tc.shape.variant)
    )
}

/// Reads a transcoder in circuit-tracer's layout: VoltLens's export, or a CLT or transcoder set
/// written by another tool.
pub fn import_circuit_tracer(dir: &Path) -> Result<Transcoder> {
    let config = read_config(dir)?;
    let variant = match config.get("model_kind").map_or(model_kind(Variant::Clt), String::as_str) {
        "cross_layer_transcoder" => Variant::Clt,
        "voltlens_mlsae" => Variant::Mlsae,
        "transcoder_set" => Variant::Plt,
        "voltlens_sae" => Variant::Sae,
        other => {
            let message = format!("model_kind '{other}'; expected cross_layer_transcoder, transcoder_set, voltlens_mlsae or voltlens_sae");
            return Err(Error::in_file(&dir.join(CONFIG), message));
        }
    };
    for (key, ours) in [("feature_input_hook", input_hook(variant)), ("feature_output_hook", OUTPUT_HOOK)] {
        if let Some(hook) = config.get(key).filter(|h| h.as_str() != ours) {
            let message = format!("{key} is '{hook}'; a VoltLens {variant:?} reads {} and writes mlp_out ({ours} expected)", input_hook(variant));
            return Err(Error::in_file(&dir.join(CONFIG), message));
        }
    }
    match variant {
        Variant::Clt | Variant::Mlsae => read_clt(dir, variant, &config),
        Variant::Plt | Variant::Sae => read_transcoder_set(dir, variant, &config),
    }
}

/// The top-level `key: value` scalars of `config.yaml` (all circuit-tracer's configs hold);
/// none when the folder has no config.
fn read_config(dir: &Path) -> Result<BTreeMap<String, String>> {
    let path = dir.join(CONFIG);
    if !path.is_file() {
        if dir.join("config.json").is_file() {
            let message = "an export of an earlier VoltLens (W_enc stored [d, F]); train the transcoder again \
                           (`voltlens run FILE --from transcoder`) to write circuit-tracer's layout";
            return Err(Error::in_file(&dir.join("config.json"), message));
        }
        if !dir.is_dir() {
            return Err(Error::in_file(dir, "no such transcoder folder"));
        }
        return Ok(BTreeMap::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    Ok(text
        .lines()
        .filter(|line| !line.starts_with([' ', '\t', '-', '#']))
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| {
            let value = value.split(" #").next().unwrap_or_default().trim().trim_matches(['"', '\'']);
            (key.trim().to_owned(), value.to_owned())
        })
        .collect())
}

/// A tensor file of the export and its tensors.
fn open(dir: &Path, name: &str) -> Result<(PathBuf, TensorMap)> {
    let path = dir.join(name);
    let map = tensors::read(&path)?;
    Ok((path, map))
}

/// How many of `name(0)`, `name(1)`, … exist in `dir`.
fn count_files(dir: &Path, name: impl Fn(usize) -> String) -> usize {
    (0..).take_while(|&i| dir.join(name(i)).is_file()).count()
}

fn dims(map: &TensorMap, path: &Path, name: &str, rank: usize) -> Result<Vec<usize>> {
    match map.get(name) {
        Some((shape, _)) if shape.len() == rank => Ok(shape.clone()),
        Some((shape, _)) => Err(Error::in_file(path, format!("tensor '{name}' has shape {shape:?}, expected {rank} dimensions"))),
        None => Err(Error::in_file(path, format!("no tensor '{name}'"))),
    }
}

fn read_clt(dir: &Path, variant: Variant, config: &BTreeMap<String, String>) -> Result<Transcoder> {
    let encoders = count_files(dir, |e| format!("W_enc_{e}.safetensors"));
    if encoders == 0 {
        return Err(Error::in_file(dir, "no W_enc_0.safetensors: not a circuit-tracer CLT folder"));
    }
    let (enc_path, enc) = open(dir, "W_enc_0.safetensors")?;
    let (dec_path, dec) = open(dir, "W_dec_0.safetensors")?;
    let features = dims(&enc, &enc_path, "W_enc_0", 2)?[0];
    let [_, n_out, d] = dims(&dec, &dec_path, "W_dec_0", 3)?[..] else { unreachable!("rank checked") };
    let layers = if variant == Variant::Mlsae { n_out } else { encoders };
    let cfg = TranscoderConfig {
        variant,
        features,
        activation: activation(config, &enc, "threshold_0", dir)?,
        skip: enc.contains_key("W_skip_0"),
        ..Default::default()
    };
    let mut tc = Transcoder::zeros(&cfg, layers, d);
    let s = tc.shape;
    if s.encoders() != encoders {
        return Err(Error::in_file(dir, format!("{encoders} W_enc_*.safetensors files for a {variant:?} of {layers} layers")));
    }
    let f = features;
    for e in 0..encoders {
        let (enc_path, mut enc) = open(dir, &format!("W_enc_{e}.safetensors"))?;
        let mut take = |name: &str, shape: &[usize]| tensors::take(&mut enc, &enc_path, name, shape);
        let n = s.d_in() * f;
        tc.w_enc[e * n..(e + 1) * n].copy_from_slice(&transpose(&take(&format!("W_enc_{e}"), &[f, s.d_in()])?, f, s.d_in()));
        tc.b_enc[e * f..(e + 1) * f].copy_from_slice(&take(&format!("b_enc_{e}"), &[f])?);
        if !tc.threshold.is_empty() {
            tc.threshold[e * f..(e + 1) * f].copy_from_slice(&take(&format!("threshold_{e}"), &[f])?);
        }
        for m in (0..s.layers).filter(|&m| home(&s, m) == e) {
            tc.b_dec[m * d..(m + 1) * d].copy_from_slice(&take(&format!("b_dec_{m}"), &[d])?);
            if let Some(w) = &mut tc.w_skip {
                w[m * d * d..(m + 1) * d * d].copy_from_slice(&take(&format!("W_skip_{m}"), &[d, d])?);
            }
        }
        let (dec_path, mut dec) = open(dir, &format!("W_dec_{e}.safetensors"))?;
        tc.w_dec[e] = tensors::take(&mut dec, &dec_path, &format!("W_dec_{e}"), &[f, s.out_layers(e).len(), d])?;
    }
    Ok(tc)
}

fn read_transcoder_set(dir: &Path, variant: Variant, config: &BTreeMap<String, String>) -> Result<Transcoder> {
    let layers = count_files(dir, |l| format!("layer_{l}.safetensors"));
    if layers == 0 {
        return Err(Error::in_file(dir, "no layer_0.safetensors: not a circuit-tracer transcoder set"));
    }
    let (path, first) = open(dir, "layer_0.safetensors")?;
    let [f, d] = dims(&first, &path, "W_enc", 2)?[..] else { unreachable!("rank checked") };
    let cfg = TranscoderConfig {
        variant,
        features: f,
        activation: activation(config, &first, "activation_function.threshold", dir)?,
        skip: first.contains_key("W_skip"),
        ..Default::default()
    };
    let mut tc = Transcoder::zeros(&cfg, layers, d);
    for l in 0..layers {
        let (path, mut map) = open(dir, &format!("layer_{l}.safetensors"))?;
        let mut take = |name: &str, shape: &[usize]| tensors::take(&mut map, &path, name, shape);
        tc.w_enc[l * d * f..(l + 1) * d * f].copy_from_slice(&transpose(&take("W_enc", &[f, d])?, f, d));
        tc.w_dec[l] = take("W_dec", &[f, d])?;
        tc.b_enc[l * f..(l + 1) * f].copy_from_slice(&take("b_enc", &[f])?);
        tc.b_dec[l * d..(l + 1) * d].copy_from_slice(&take("b_dec", &[d])?);
        if !tc.threshold.is_empty() {
            tc.threshold[l * f..(l + 1) * f].copy_from_slice(&take("activation_function.threshold", &[f])?);
        }
        if let Some(w) = &mut tc.w_skip {
            w[l * d * d..(l + 1) * d * d].copy_from_slice(&transpose(&take("W_skip", &[d, d])?, d, d));
        }
    }
    Ok(tc)
}

/// σ from the `voltlens_*` keys, or for a foreign transcoder from whether it stores thresholds.
fn activation(config: &BTreeMap<String, String>, first: &TensorMap, threshold: &str, dir: &Path) -> Result<Activation> {
    Ok(match config.get("voltlens_activation").map(String::as_str) {
        None if first.contains_key(threshold) => {
            // The initial threshold only matters to further training: take the stored mean.
            let values = &first[threshold].1;
            let mean = values.iter().sum::<f32>() / values.len().max(1) as f32;
            Activation::JumpRelu { threshold: mean, bandwidth: FOREIGN_BANDWIDTH }
        }
        None | Some("relu") => Activation::Relu,
        Some("jump_relu") => {
            Activation::JumpRelu { threshold: parse(config, dir, "voltlens_initial_threshold")?, bandwidth: parse(config, dir, "voltlens_bandwidth")? }
        }
        Some("topk") => Activation::TopK { k: parse(config, dir, "voltlens_k")? },
        Some("batch_topk") => Activation::BatchTopK { k: parse(config, dir, "voltlens_k")? },
        Some(other) => return Err(Error::in_file(&dir.join(CONFIG), format!("voltlens_activation '{other}'; expected relu, jump_relu, topk or batch_topk"))),
    })
}

/// The config value `key` as a `T` (floats are written in Rust's shortest round-trip form).
fn parse<T: std::str::FromStr>(config: &BTreeMap<String, String>, dir: &Path, key: &str) -> Result<T> {
    let path = dir.join(CONFIG);
    let value = config.get(key).ok_or_else(|| Error::in_file(&path, format!("no '{key}'")))?;
    value.parse().map_err(|_| Error::in_file(&path, format!("'{key}' is '{value}', not a number")))
}
