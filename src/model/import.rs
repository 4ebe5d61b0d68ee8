//! `import-model`: a decoder-only battery transformer trained elsewhere (PyTorch, saved as f32
//! safetensors) into an ordinary VoltLens model directory, so that nothing downstream knows it
//! was imported. Its blocks must be pre-norm (x + f(norm(x))), as VoltLens's are.
//!
//! An architecture TOML describes the model:
//!
//! ```toml
//! [model]                 # ModelConfig: layers, d_model, heads, d_mlp, context, positional,
//! layers = 2              # rope_theta, norm, norm_eps, mlp, final_norm (channels come from [[inputs]]);
//!                         # positional, norm, norm_eps, mlp (rope_theta if rotary) must be stated
//! # …
//! [head]
//! target = "delta_v"      # or "next_voltage"; volts = output · scale + offset
//! scale = 0.001
//! offset = 0.0
//! [[inputs]]              # in the model's order, names from `inputs::CATALOGUE`
//! name = "voltage"
//! mean = 3.7              # x_model = (x − mean) / std, or x·scale + offset, or as is
//! std = 0.3
//! [weights]
//! rope_pairing = "half"   # or "interleaved": rotary pairs (2i, 2i+1) instead of (i, i + hd/2)
//! kv_heads = 2           # grouped-query attention: key/value heads (default: one per query head)
//! kv_grouping = "tiled"   # head j serves query heads j, j + kv_heads, … (.repeat()); default "consecutive" (repeat_kv)
//! conv1d = ['^h\.\d+\.(attn|mlp)\.c_\w+\.weight$']   # stored [in, out] (HF Conv1D)
//! ignore = ['\.attn\.(masked_)?bias$']   # source tensors that are not weights (buffers: causal masks, rotary tables)
//! rename = [              # ordered: the first rule that matches a source name wins
//!   ['^h\.(\d+)\.attn\.c_attn\.(weight|bias)$', 'blocks.$1.attn.qkv.$2'],
//! ]
//! ```
//!
//! Rules rename source tensors to VoltLens's names (`expected`), in `nn.Linear` orientation
//! [out, in]: `embed`, `positions`, `blocks.N.{ln_attn, attn.qkv | attn.q/k/v, attn.out, ln_mlp,
//! mlp.up, mlp.gate, mlp.down}`, `ln_final`, `head`, each `.weight` / `.bias` (norms too).
//! Biases may be absent (they import as zero); separate q/k/v are fused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::checkpoint::{ModelDir, RunConfig};
use crate::io::write_json;
use super::config::{HeadTarget, MlpKind, ModelConfig, NormKind, Positional, TrainConfig};
use super::inputs::InputNorm;
use super::transformer::Lblm;
use crate::data::windows::{NormStats, Split};
use burn::backend::Flex;
use crate::transcoder::tensors::{self, TensorMap};
use crate::{Error, Result};


/// The architecture TOML of `import-model` (and what `export-model` writes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arch {
    pub model: ModelConfig,
    pub head: HeadSpec,
    pub inputs: Vec<InputSpec>,
    pub weights: WeightSpec,
}

/// What the head's output means: volts = output · scale + offset, of ΔV or of V_{t+1}.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSpec {
    pub target: HeadTarget,
    #[serde(default = "one")]
    pub scale: f32,
    #[serde(default)]
    pub offset: f32,
}

fn one() -> f32 {
    1.0
}

/// One input channel and the normalisation the model was trained with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<f32>,
}

impl InputSpec {
    /// (mean, std) with x_model = (x − mean) / std.
    fn mean_std(&self) -> Result<(f32, f32)> {
        let (mean, std) = match (self.mean, self.std, self.scale, self.offset) {
            (m, s, None, None) => (m.unwrap_or(0.0), s.unwrap_or(1.0)),
            (None, None, s, o) => {
                let s = s.unwrap_or(1.0);
                (-o.unwrap_or(0.0) / s, 1.0 / s)
            }
            _ => return Err(Error::Config(format!("input '{}': give mean/std or scale/offset, not both", self.name))),
        };
        if !(std.is_finite() && std != 0.0 && mean.is_finite()) {
            return Err(Error::Config(format!("input '{}': normalisation mean {mean}, std {std} is unusable", self.name)));
        }
        Ok((mean, std))
    }
}

/// Rotary pairing of the source: which head dimensions rotate together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopePairing {
    /// (i, i + head_dim/2): GPT-NeoX and Hugging Face Llama; VoltLens's own.
    #[default]
    Half,
    /// (2i, 2i + 1): Meta's original Llama and RoFormer.
    Interleaved,
}

/// Which query heads a grouped-query source's key/value head serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvGrouping {
    /// Head j serves query heads j·g … j·g + g − 1 (g = heads / kv_heads): Hugging Face's
    /// `repeat_kv`, `repeat_interleave` on the head axis.
    #[default]
    Consecutive,
    /// Head j serves query heads j, j + kv_heads, j + 2·kv_heads …: code that tiles the heads
    /// with `.repeat(1, g, 1, 1)`.
    Tiled,
}

/// How the source names and stores its tensors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightSpec {
    #[serde(default)]
    pub rope_pairing: RopePairing,
    /// Regexes of source tensors stored [in, out] (Hugging Face `Conv1D`) rather than [out, in].
    #[serde(default)]
    pub conv1d: Vec<String>,
    /// Regexes of source tensors to leave out: buffers saved beside the weights (Hugging Face
    /// GPT-2's causal mask `h.N.attn.bias`, a rotary `inv_freq`), which no rule should rename.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    /// Ordered (regex, replacement) pairs; `$1` … refer to the regex's groups.
    #[serde(default)]
    pub rename: Vec<(String, String)>,
    /// Key/value heads of a source with grouped-query attention (fewer than `heads`; each serves
    /// `heads / kv_heads` query heads, grouped as `kv_grouping` says). Separate k and v are
    /// repeated to one head per query head on import, which computes the same attention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "super::config::is_default")]
    pub kv_grouping: KvGrouping,
}


impl WeightSpec {
    /// The `ignore` regexes as one set.
    fn ignored(&self, path: &Path) -> Result<regex::RegexSet> {
        regex::RegexSet::new(&self.ignore).map_err(|e| Error::in_file(path, format!("bad regex in [weights] ignore: {e}")))
    }
}

/// `[model]` fields an imported model must state, as its weights do not show them (a default
/// would import another model without a word): each with the values it takes.
const STATED: [(&str, &str); 4] = [
    ("positional", "\"learned\", \"rotary\" or \"none\""),
    ("norm", "\"layer_norm\" or \"rms_norm\""),
    ("norm_eps", "the ε of its norms, e.g. 1e-5"),
    ("mlp", "\"gelu\" (exact erf), \"gelu_tanh\", \"relu\" or \"swiglu\""),
];

impl Arch {
    pub fn read(path: &Path) -> Result<Arch> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut arch: Arch = toml::from_str(&text).map_err(|e| Error::in_file(path, e.to_string()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| Error::in_file(path, e.to_string()))?;
        let model = table.get("model").and_then(toml::Value::as_table);
        let mut unstated: Vec<String> = STATED
            .iter()
            .filter(|(key, _)| model.is_none_or(|m| !m.contains_key(*key)))
            .map(|(key, values)| format!("{key} ({values})"))
            .collect();
        let rotary = model.and_then(|m| m.get("positional")).and_then(toml::Value::as_str) == Some("rotary");
        if rotary && model.is_none_or(|m| !m.contains_key("rope_theta")) {
            unstated.push("rope_theta (the rotary base, 10000 in RoFormer and Llama 2)".to_owned());
        }
        if !unstated.is_empty() {
            let msg = format!("[model] must state what the weights do not show: {}", unstated.join("; "));
            return Err(Error::in_file(path, msg));
        }
        let names: Vec<String> = arch.inputs.iter().map(|i| i.name.clone()).collect();
        if arch.model.channels != ModelConfig::default().channels && arch.model.channels != names {
            return Err(Error::in_file(path, "[model] channels differ from the [[inputs]] names: name the inputs with [[inputs]] only"));
        }
        arch.model.channels = names;
        if arch.model.head != HeadTarget::default() && arch.model.head != arch.head.target {
            return Err(Error::in_file(path, "[model] head differs from [head] target: give the target in [head] only"));
        }
        arch.model.head = arch.head.target;
        arch.model.validate().map_err(|e| Error::in_file(path, e.to_string()))?;
        if !(arch.head.scale.is_finite() && arch.head.scale != 0.0 && arch.head.offset.is_finite()) {
            return Err(Error::in_file(path, format!("[head] scale {} / offset {} is unusable", arch.head.scale, arch.head.offset)));
        }
        Ok(arch)
    }

    /// The TOML `import-model` reads, every `STATED` field written although VoltLens's own
    /// settings leave its defaults out.
    pub fn to_toml(&self) -> Result<String> {
        let wrong = |e: &dyn std::fmt::Display| Error::Other(format!("writing the architecture TOML: {e}"));
        let mut table = toml::Table::try_from(self).map_err(|e| wrong(&e))?;
        let model = table.get_mut("model").and_then(toml::Value::as_table_mut).expect("[model] is serialised");
        let m = &self.model;
        let stated = [("norm", toml::Value::try_from(m.norm)), ("norm_eps", Ok(m.norm_eps.into())), ("mlp", toml::Value::try_from(m.mlp))];
        for (key, value) in stated {
            model.entry(key).or_insert(value.map_err(|e| wrong(&e))?);
        }
        toml::to_string(&table).map_err(|e| wrong(&e))
    }

    /// The normalisation VoltLens feeds the model with, its target scale the head's.
    fn norm(&self) -> Result<InputNorm> {
        let (mean, std) = self.inputs.iter().map(InputSpec::mean_std).collect::<Result<(Vec<_>, Vec<_>)>>()?;
        Ok(InputNorm { channels: self.model.channels.clone(), stats: NormStats { mean, std }, target_scale: self.head.scale.abs() })
    }
}

/// A VoltLens tensor the model needs: its name, shape [out, in] and whether it may be absent.
struct Expected {
    name: String,
    shape: Vec<usize>,
    /// Biases: absent imports as zero.
    optional: bool,
}

/// Every tensor a model of `cfg` reads, in VoltLens's names.
fn expected(cfg: &ModelConfig) -> Vec<Expected> {
    let (d, f) = (cfg.d_model, cfg.d_mlp);
    let mut linears = vec![("embed".to_owned(), d, cfg.channels.len())];
    let mut norms = Vec::new();
    for l in 0..cfg.layers {
        norms.extend([format!("blocks.{l}.ln_attn"), format!("blocks.{l}.ln_mlp")]);
        linears.extend([(format!("blocks.{l}.attn.qkv"), 3 * d, d), (format!("blocks.{l}.attn.out"), d, d), (format!("blocks.{l}.mlp.up"), f, d)]);
        if cfg.mlp == MlpKind::SwiGlu {
            linears.push((format!("blocks.{l}.mlp.gate"), f, d));
        }
        linears.push((format!("blocks.{l}.mlp.down"), d, f));
    }
    if cfg.final_norm {
        norms.push("ln_final".to_owned());
    }
    linears.push(("head".to_owned(), 1, d));

    let tensor = |name: String, shape: Vec<usize>, optional: bool| Expected { name, shape, optional };
    let mut out = Vec::new();
    if cfg.positional == Positional::Learned {
        out.push(tensor("positions".into(), vec![cfg.context, d], false));
    }
    for (name, d_out, d_in) in linears {
        out.push(tensor(format!("{name}.weight"), vec![d_out, d_in], false));
        out.push(tensor(format!("{name}.bias"), vec![d_out], true));
    }
    for name in norms {
        out.push(tensor(format!("{name}.weight"), vec![d], false));
        if cfg.norm == NormKind::LayerNorm {
            out.push(tensor(format!("{name}.bias"), vec![d], true));
        }
    }
    out
}

/// Renames the source tensors by `spec`'s rules (after leaving out those `ignore` matches) and
/// turns Conv1D weights to [out, in]. Source tensors no rule matches are returned by name.
fn rename(spec: &WeightSpec, source: TensorMap, path: &Path) -> Result<(TensorMap, Vec<String>)> {
    let compile = |r: &str| Regex::new(r).map_err(|e| Error::in_file(path, format!("bad regex '{r}': {e}")));
    let rules = spec.rename.iter().map(|(from, to)| Ok((compile(from)?, to.as_str()))).collect::<Result<Vec<_>>>()?;
    if let Some((_, to)) = rules.iter().find(|(_, to)| Regex::new(r"\\\d").expect("valid").is_match(to)) {
        return Err(Error::in_file(path, format!("rename target '{to}' refers to a group as Python does (\\1): write $1")));
    }
    let conv1d = spec.conv1d.iter().map(|r| compile(r)).collect::<Result<Vec<_>>>()?;
    let ignore = spec.ignored(path)?;
    let mut renamed = TensorMap::new();
    let mut unmatched = Vec::new();
    for (name, (shape, data)) in source {
        if ignore.is_match(&name) {
            continue;
        }
        let Some((rule, to)) = rules.iter().find(|(r, _)| r.is_match(&name)) else {
            unmatched.push(name);
            continue;
        };
        let target = rule.replace(&name, *to).into_owned();
        let (shape, data) = if shape.len() == 2 && conv1d.iter().any(|r| r.is_match(&name)) {
            (vec![shape[1], shape[0]], transpose(&data, shape[0], shape[1]))
        } else {
            (shape, data)
        };
        if renamed.insert(target.clone(), (shape, data)).is_some() {
            return Err(Error::in_file(path, format!("two source tensors are renamed to '{target}' (the second: '{name}')")));
        }
    }
    Ok((renamed, unmatched))
}

/// [rows, cols] row-major → [cols, rows].
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| data[r * cols + c])).collect()
}

/// Fuses separate `attn.q/k/v` [d, d] into `attn.qkv` (rows q, then k, then v); a bias missing
/// from some of them is zero. Returns the parts of the wrong shape (grouped-query attention's
/// narrower k and v, say).
fn fuse_qkv(tensors: &mut TensorMap, cfg: &ModelConfig) -> Vec<String> {
    let (layers, d, hd) = (cfg.layers, cfg.d_model, cfg.head_dim());
    let mut problems = Vec::new();
    for l in 0..layers {
        let part = |p: &str, kind: &str| format!("blocks.{l}.attn.{p}.{kind}");
        if !["q", "k", "v"].iter().all(|p| tensors.contains_key(&part(p, "weight"))) {
            continue;
        }
        let wrong: Vec<String> = ["q", "k", "v"]
            .iter()
            .map(|p| part(p, "weight"))
            .filter(|n| tensors[n].0 != [d, d])
            .map(|n| {
                let shape = &tensors[&n].0;
                let heads = match shape.first() {
                    Some(&rows) if rows % hd == 0 && shape.get(1) == Some(&d) => {
                        format!(" (its {rows} rows are {} heads of {hd}: grouped-query attention, [weights] kv_heads = {})", rows / hd, rows / hd)
                    }
                    _ => String::new(),
                };
                format!("'{n}' has shape {shape:?}, expected [{d}, {d}]{heads}")
            })
            .collect();
        if !wrong.is_empty() {
            problems.extend(wrong);
            ["q", "k", "v"].iter().for_each(|p| drop(tensors.remove(&part(p, "weight"))));
            continue;
        }
        let weight: Vec<f32> = ["q", "k", "v"].iter().flat_map(|p| tensors.remove(&part(p, "weight")).expect("checked").1).collect();
        tensors.insert(part("qkv", "weight"), (vec![3 * d, d], weight));
        if ["q", "k", "v"].iter().any(|p| tensors.contains_key(&part(p, "bias"))) {
            let bias: Vec<f32> =
                ["q", "k", "v"].iter().flat_map(|p| tensors.remove(&part(p, "bias")).map_or(vec![0.0; d], |(_, b)| b)).collect();
            tensors.insert(part("qkv", "bias"), (vec![bias.len()], bias));
        }
    }
    problems
}

/// Grouped-query attention's separate k and v ([kv·hd, d] weights, [kv·hd] biases) → one head per
/// query head, each the key/value head `grouping` gives it: the attention the source computes.
/// Tensors of another width are left for the shape check to report.
fn repeat_kv_heads(tensors: &mut TensorMap, cfg: &ModelConfig, kv: usize, grouping: KvGrouping, path: &Path) -> Result<()> {
    if kv == 0 || cfg.heads % kv != 0 {
        return Err(Error::in_file(path, format!("[weights] kv_heads = {kv} does not divide the {} query heads", cfg.heads)));
    }
    let (hd, group) = (cfg.head_dim(), cfg.heads / kv);
    for l in 0..cfg.layers {
        // A fused qkv of grouped-query attention ([d + 2·kv·hd] rows) is split into q, k and v.
        for kind in ["weight", "bias"] {
            let fused = format!("blocks.{l}.attn.qkv.{kind}");
            if tensors.get(&fused).is_none_or(|(shape, _)| shape[0] != cfg.d_model + 2 * kv * hd) {
                continue;
            }
            let (shape, data) = tensors.remove(&fused).expect("checked");
            let width = data.len() / shape[0];
            let mut rows = data.chunks_exact(width);
            for (p, n) in [("q", cfg.d_model), ("k", kv * hd), ("v", kv * hd)] {
                let part: Vec<f32> = rows.by_ref().take(n).flatten().copied().collect();
                let shape = if kind == "weight" { vec![n, width] } else { vec![n] };
                tensors.insert(format!("blocks.{l}.attn.{p}.{kind}"), (shape, part));
            }
        }
        for (p, kind) in ["k", "v"].into_iter().flat_map(|p| ["weight", "bias"].map(|k| (p, k))) {
            let Some((shape, data)) = tensors.get_mut(&format!("blocks.{l}.attn.{p}.{kind}")) else { continue };
            if shape[0] != kv * hd {
                continue;
            }
            let width = data.len() / shape[0];
            let served_by = |h: usize| match grouping {
                KvGrouping::Consecutive => h / group,
                KvGrouping::Tiled => h % kv,
            };
            *data = (0..cfg.heads).flat_map(|h| data[served_by(h) * hd * width..(served_by(h) + 1) * hd * width].to_vec()).collect();
            shape[0] = cfg.d_model;
        }
    }
    Ok(())
}

/// Reorders the query and key rows of each head from interleaved rotary pairs (2i, 2i+1) to
/// VoltLens's half split (i, i + hd/2); attention scores are unchanged, as q and k move alike.
fn interleaved_to_half(tensors: &mut TensorMap, cfg: &ModelConfig) {
    let (d, hd) = (cfg.d_model, cfg.head_dim());
    // Half-split row j of a head comes from interleaved row 2j (first half) or 2(j − hd/2) + 1.
    let source_row = |j: usize| if j < hd / 2 { 2 * j } else { 2 * (j - hd / 2) + 1 };
    for l in 0..cfg.layers {
        for kind in ["weight", "bias"] {
            let Some((shape, data)) = tensors.get_mut(&format!("blocks.{l}.attn.qkv.{kind}")) else { continue };
            let width = if kind == "weight" { d } else { 1 };
            if shape[0] != 3 * d || data.len() != 3 * d * width {
                continue; // reported as a wrong shape
            }
            let old = data.clone();
            for row in 0..2 * d {
                let (head, j) = (row / hd, row % hd);
                let from = head * hd + source_row(j);
                data[row * width..(row + 1) * width].copy_from_slice(&old[from * width..(from + 1) * width]);
            }
        }
    }
}

/// Sets one VoltLens tensor of `model` from [out, in] data (burn's Linear stores [in, out]).
fn assign<B: Backend>(model: &mut Lblm<B>, name: &str, shape: &[usize], data: Vec<f32>, device: &B::Device) {
    let vector = || Param::from_tensor(Tensor::<B, 1>::from_data(TensorData::new(data.clone(), [shape[0]]), device));
    let linear_weight = || {
        let t = transpose(&data, shape[0], shape[1]);
        Param::from_tensor(Tensor::<B, 2>::from_data(TensorData::new(t, [shape[1], shape[0]]), device))
    };
    let parts: Vec<&str> = name.split('.').collect();
    let (module, kind) = (&parts[..parts.len() - 1], parts[parts.len() - 1]);
    match module {
        [] => {
            model.positions = Some(Param::from_tensor(Tensor::from_data(TensorData::new(data, [shape[0], shape[1]]), device)))
        }
        _ => {
            let linear = match module {
                ["embed"] => Some(&mut model.embed),
                ["head"] => Some(&mut model.head),
                ["blocks", l, "attn", "qkv"] => Some(&mut model.blocks[l.parse::<usize>().expect("expected name")].attn.qkv),
                ["blocks", l, "attn", "out"] => Some(&mut model.blocks[l.parse::<usize>().expect("expected name")].attn.out),
                ["blocks", l, "mlp", "up"] => Some(&mut model.blocks[l.parse::<usize>().expect("expected name")].mlp.up),
                ["blocks", l, "mlp", "down"] => Some(&mut model.blocks[l.parse::<usize>().expect("expected name")].mlp.down),
                ["blocks", l, "mlp", "gate"] => model.blocks[l.parse::<usize>().expect("expected name")].mlp.gate.as_mut(),
                _ => None,
            };
            if let Some(linear) = linear {
                match kind {
                    "weight" => linear.weight = linear_weight(),
                    _ => linear.bias = Some(vector()),
                }
                return;
            }
            let norm = match module {
                ["ln_final"] => model.ln_final.as_mut().expect("expected name"),
                ["blocks", l, which] => {
                    let block = &mut model.blocks[l.parse::<usize>().expect("expected name")];
                    if *which == "ln_attn" { &mut block.ln_attn } else { &mut block.ln_mlp }
                }
                _ => unreachable!("{name} is not an expected name"),
            };
            match kind {
                "weight" => norm.gamma = vector(),
                _ => norm.beta = Some(vector()),
            }
        }
    }
}

/// Builds the model of `arch` from the source tensors; every tensor unmatched, missing or of the
/// wrong shape is listed by name in one error.
pub fn build<B: Backend>(arch: &Arch, source: TensorMap, path: &Path, device: &B::Device) -> Result<Lblm<B>> {
    let cfg = &arch.model;
    let (mut tensors, unmatched) = rename(&arch.weights, source, path)?;
    let mut problems: Vec<String> = unmatched.iter().map(|n| format!("source tensor '{n}' matches no rename rule")).collect();
    if let Some(kv) = arch.weights.kv_heads {
        repeat_kv_heads(&mut tensors, cfg, kv, arch.weights.kv_grouping, path)?;
    }
    problems.extend(fuse_qkv(&mut tensors, cfg));
    if arch.weights.rope_pairing == RopePairing::Interleaved && cfg.positional == Positional::Rotary {
        interleaved_to_half(&mut tensors, cfg);
    }
    let mut model = Lblm::<B>::new(cfg, 0, device);
    let expected = expected(cfg);
    // Dimensions of one are left out before shapes are compared: a position table saved as a
    // [1, context, d] parameter or a [max_len, 1, d] buffer is the [context, d] matrix.
    let squeeze = |shape: &[usize]| -> Vec<usize> { shape.iter().copied().filter(|&n| n != 1).collect() };
    for e in &expected {
        match tensors.remove(&e.name) {
            Some((_, data)) if data.iter().any(|v| !v.is_finite()) => {
                problems.push(format!("'{}' holds {} NaN or infinite values", e.name, data.iter().filter(|v| !v.is_finite()).count()));
            }
            Some((shape, data)) if squeeze(&shape) == squeeze(&e.shape) => assign(&mut model, &e.name, &e.shape, data, device),
            // Learned positions may cover a longer context than is imported.
            Some((shape, data)) if e.name == "positions" && matches!(squeeze(&shape)[..], [rows, d] if d == e.shape[1] && rows >= e.shape[0]) => {
                let rows = e.shape[0] * e.shape[1];
                assign(&mut model, &e.name, &e.shape, data[..rows].to_vec(), device);
            }
            Some((shape, _)) => problems.push(format!("'{}' has shape {shape:?}, expected {:?}{}", e.name, e.shape, shape_hint(&e.name, &shape, &e.shape, cfg))),
            None if e.optional => {
                let zeros = vec![0.0; e.shape.iter().product()];
                assign(&mut model, &e.name, &e.shape, zeros, device);
            }
            None if e.name == "ln_final.weight" => {
                problems.push(format!("'{}' {:?} is missing (a model without a final norm: [model] final_norm = false)", e.name, e.shape))
            }
            None => problems.push(format!("'{}' {:?} is missing (no source tensor is renamed to it)", e.name, e.shape)),
        }
    }
    problems.extend(tensors.keys().map(|n| format!("'{n}' (renamed from the source) is not a tensor of this architecture")));
    problems.extend(shared_prefix(&unmatched));
    if !problems.is_empty() {
        return Err(Error::in_file(path, format!("{} problem(s):\n  {}", problems.len(), problems.join("\n  "))));
    }
    fold_head(&mut model, arch, device)?;
    Ok(model)
}

/// Why a source tensor may have the wrong shape, where the shape says.
fn shape_hint(name: &str, shape: &[usize], expected: &[usize], cfg: &ModelConfig) -> String {
    let hd = cfg.head_dim();
    match shape {
        [a, b] if [*b, *a] == expected => " (stored [in, out], as Hugging Face's Conv1D stores it: list it in [weights] conv1d)".into(),
        [rows, d] if name.ends_with("attn.qkv.weight") && *d == cfg.d_model && rows > d && (rows - d) % (2 * hd) == 0 => {
            format!(" (its rows are {} query heads and {} key/value heads of {hd}: grouped-query attention, [weights] kv_heads = {})", cfg.heads, (rows - d) / (2 * hd), (rows - d) / (2 * hd))
        }
        _ => String::new(),
    }
}

/// A prefix every unmatched source name shares (`_orig_mod.` from `torch.compile`, `module.` from
/// `DataParallel`, `model.`), which the rename rules must take in.
fn shared_prefix(unmatched: &[String]) -> Option<String> {
    let (first, rest) = unmatched.split_first()?;
    let prefix = first.split_inclusive('.').next().filter(|p| p.ends_with('.'))?;
    (rest.len() >= 2 && rest.iter().all(|n| n.starts_with(prefix))).then(|| {
        let escaped = regex::escape(prefix);
        format!("every unmatched source name starts with '{prefix}': let the rename regexes take it in, e.g. '^{escaped}h\\.(\\d+)…' or '^(?:{escaped})?…'")
    })
}

/// Folds the head's offset (and, for a V_{t+1} head, the voltage input) into VoltLens's scaled ΔV:
/// ΔV = out·s + o gives y = out + o/s; V_{t+1} = out·s + o gives
/// y = out + (o − mean_V)/s − x_V·std_V/s with x_V the normalised voltage.
fn fold_head<B: Backend>(model: &mut Lblm<B>, arch: &Arch, device: &B::Device) -> Result<()> {
    let (s, o) = (arch.head.scale, arch.head.offset);
    // A negative scale flips the head so that target_scale stays positive.
    let sign = s.signum();
    let mut shift = o / s.abs();
    if arch.head.target == HeadTarget::NextVoltage {
        let v = arch.model.channels.iter().position(|c| c == "voltage").expect("validated");
        let (mean, std) = arch.inputs[v].mean_std()?;
        shift -= mean / s.abs();
        let mut skip = vec![0.0; arch.model.channels.len()];
        skip[v] = -std / s.abs();
        model.input_skip = Some(Param::from_tensor(Tensor::from_data(TensorData::new(skip, [arch.model.channels.len()]), device)));
    }
    let head = &mut model.head;
    head.weight = Param::from_tensor(head.weight.val() * sign);
    let bias = head.bias.as_ref().map(|b| b.val()).unwrap_or_else(|| Tensor::zeros([1], device));
    head.bias = Some(Param::from_tensor(bias * sign + shift));
    Ok(())
}

/// What `--check` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    pub windows: usize,
    pub steps: usize,
    /// Largest |VoltLens − source| over all predictions, in volts.
    pub max_abs_error_v: f64,
    /// `max_abs_error_v` over the largest |source prediction|.
    pub max_rel_error: f64,
    pub tolerance_v: f64,
    pub rel_tolerance: f64,
    pub passed: bool,
}

/// How close `--check` wants the imported model's predictions to the source's; both bounds hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Largest |VoltLens − source| in volts…
    pub volts: f64,
    /// …and that over the largest |source prediction|: a ΔV head's outputs are about a millivolt,
    /// so a wrong rotary base, 20 % off, stays within 1e-4 V (float32 rounding is ~1e-5 of it).
    pub relative: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance { volts: 1e-4, relative: 1e-3 }
    }
}

/// Runs `model` on the check file's inputs [N, T, C] (raw channel values) and compares its
/// predictions, in the head's units (volts of ΔV or of V_{t+1}), with the file's `outputs` [N, T].
pub fn check<B: Backend>(model: &Lblm<B>, arch: &Arch, norm: &InputNorm, file: &Path, tolerance: Tolerance, device: &B::Device) -> Result<CheckReport> {
    let mut map = tensors::read(file)?;
    let (shape, _) = map.get("inputs").ok_or_else(|| Error::in_file(file, "no tensor 'inputs' [N, T, C]"))?.clone();
    let c = arch.model.channels.len();
    if shape.len() != 3 || shape[2] != c || shape[1] > arch.model.context || shape[1] == 0 {
        return Err(Error::in_file(file, format!("'inputs' has shape {shape:?}, expected [N, T ≤ {}, {c}]", arch.model.context)));
    }
    let (n, t) = (shape[0], shape[1]);
    let raw = tensors::take(&mut map, file, "inputs", &shape)?;
    // A model without `.squeeze(-1)` on its head writes [N, T, 1].
    if map.get("outputs").is_some_and(|(s, _)| *s == [n, t, 1]) {
        map.get_mut("outputs").expect("checked").0 = vec![n, t];
    }
    let reference = tensors::take(&mut map, file, "outputs", &[n, t])?;
    let not_finite = |values: &[f32], per: usize| values.iter().position(|v| !v.is_finite()).map(|i| (i / per / t, i / per % t));
    if let Some((window, step)) = not_finite(&raw, c) {
        return Err(Error::in_file(file, format!("'inputs' holds NaN or infinite values (first at window {window}, step {step}); check windows must be measured ones")));
    }
    if let Some((window, step)) = not_finite(&reference, 1) {
        return Err(Error::in_file(file, format!("'outputs' holds NaN or infinite values (first at window {window}, step {step})")));
    }
    let ours = predict_volts(model, arch.head.target, norm, &raw, [n, t, c], device);
    if let Some(i) = ours.iter().position(|v| !v.is_finite()) {
        return Err(Error::Config(format!("the imported model predicts NaN or infinite values on the check inputs (first at window {}, step {}): its weights or [[inputs]] normalisation", i / t, i % t)));
    }
    let max_abs = ours.iter().zip(&reference).fold(0f64, |m, (a, r)| m.max((a - *r as f64).abs()));
    let largest = reference.iter().fold(0f64, |m, r| m.max(r.abs() as f64));
    let max_rel = if largest > 0.0 { max_abs / largest } else { max_abs };
    Ok(CheckReport {
        windows: n,
        steps: t,
        max_abs_error_v: max_abs,
        max_rel_error: max_rel,
        tolerance_v: tolerance.volts,
        rel_tolerance: tolerance.relative,
        passed: max_abs <= tolerance.volts && max_rel <= tolerance.relative,
    })
}

/// The model's predictions on raw inputs [n, t, c] in the head's units: volts of ΔV, or of
/// V_{t+1} for a `NextVoltage` head.
pub fn predict_volts<B: Backend>(model: &Lblm<B>, target: HeadTarget, norm: &InputNorm, raw: &[f32], [n, t, c]: [usize; 3], device: &B::Device) -> Vec<f64> {
    let mut x = raw.to_vec();
    x.chunks_exact_mut(c).for_each(|row| norm.apply_row(row));
    let y = model.forward(Tensor::<B, 3>::from_data(TensorData::new(x, [n, t, c]), device));
    let y: Vec<f32> = y.into_data().convert::<f32>().into_vec().expect("f32 output");
    let voltage = norm.channels.iter().position(|ch| ch == "voltage");
    y.iter()
        .enumerate()
        .map(|(i, &y)| {
            let dv = y as f64 * norm.target_scale as f64;
            match (target, voltage) {
                (HeadTarget::NextVoltage, Some(v)) => raw[i * c + v] as f64 + dv,
                _ => dv,
            }
        })
        .collect()
}

/// What `import-model` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportSummary {
    pub weights: PathBuf,
    pub parameters: usize,
    pub check: Option<CheckReport>,
}

/// What to import and where.
#[derive(Debug, Clone)]
pub struct ImportRequest<'a> {
    /// safetensors of f32, f16 or bf16 tensors (widened to f32).
    pub weights: &'a Path,
    /// The architecture TOML.
    pub arch: &'a Path,
    /// The new model directory.
    pub out: &'a Path,
    /// Inputs and the source's outputs: the directory is only kept when the imported model
    /// reproduces them within `tolerance`.
    pub check: Option<&'a Path>,
    pub tolerance: Tolerance,
    /// A dataset whose cells are split (train / val / test, by `seed`) for the stages after the
    /// model (transcoder training reads the train cells); without it the split is empty.
    pub dataset: Option<&'a Path>,
    pub seed: u64,
}

/// Imports a model trained elsewhere into a new, ordinary model directory.
pub fn import_model(req: &ImportRequest) -> Result<ImportSummary> {
    let (weights, out) = (req.weights, req.out);
    if out.exists() {
        return Err(Error::Config(format!("{} exists; import into a new directory", out.display())));
    }
    let arch = Arch::read(req.arch)?;
    let split = match req.dataset {
        Some(dir) => {
            let t = TrainConfig::default();
            Split::by_cell(&crate::data::canonical::Dataset::load(dir)?.conditions(), t.val_fraction, t.test_fraction, req.seed)
        }
        None => Split { seed: req.seed, train: vec![], val: vec![], test: vec![] },
    };
    let (device, tolerance) = (Default::default(), req.tolerance);
    // Ignored tensors are never read, so buffers of any dtype (boolean masks) may be left out.
    let ignore = arch.weights.ignored(req.arch)?;
    let model = build::<Flex>(&arch, tensors::read_where(weights, |name| !ignore.is_match(name))?, weights, &device)?;
    let norm = arch.norm()?;
    let check = req.check.map(|f| check(&model, &arch, &norm, f, tolerance, &device)).transpose()?;
    if check.is_none() {
        tracing::warn!(
            "{}: imported without a check file, so nothing compared its predictions with the source's; a post-norm model or a \
             missed conv1d rule imports without an error: give --check (a pipeline's [model.import] check)",
            weights.display()
        );
    }
    if let Some(report) = check.as_ref().filter(|r| !r.passed) {
        return Err(Error::Config(format!(
            "the imported model's predictions differ from the source's by up to {:.3e} V, {:.2} % of its largest (tolerances {:.1e} V and {} %). \
             Check the architecture TOML: [model] norm and norm_eps, positional, rope_theta and [weights] rope_pairing (\"half\" for \
             Hugging Face's Llama, \"interleaved\" for Meta's original code), heads, kv_heads and kv_grouping (\"consecutive\": \
             each key/value head serves consecutive query heads, as Hugging Face's repeat_kv; \"tiled\" for code that tiles them \
             with .repeat()), \
             [weights] conv1d (a square matrix stored [in, out] imports without a shape error), mlp, [head] and [[inputs]]. \
             VoltLens blocks are pre-norm (x + f(norm(x))); a post-norm model (PyTorch's nn.TransformerEncoderLayer with \
             norm_first=False) cannot be imported. A reference run in half precision differs by its rounding: loosen \
             --tolerance and --rel-tolerance (a pipeline's [model.import] tolerance and rel_tolerance), e.g. 1e-2 and 0.05 for \
             bfloat16, whose steps near 4 V are 16 mV",
            report.max_abs_error_v,
            100.0 * report.max_rel_error,
            tolerance.volts,
            100.0 * tolerance.relative,
        )));
    }
    let summary = ImportSummary { weights: weights.to_path_buf(), parameters: burn::module::Module::num_params(&model), check };
    let source = format!("imported from {}", weights.display());
    write_model_dir(out, &model, &norm, &arch.model, &split, &source, &summary)?;
    Ok(summary)
}

/// Writes an ordinary model directory into a temporary sibling, then renames it into place.
fn write_model_dir<B: Backend>(
    out: &Path,
    model: &Lblm<B>,
    norm: &InputNorm,
    cfg: &ModelConfig,
    split: &Split,
    dataset: &str,
    summary: &ImportSummary,
) -> Result<()> {
    crate::io::check_replaceable(out)?;
    let tmp = crate::io::fresh_temp_dir(out)?;
    let dir = ModelDir::new(&tmp);
    dir.create()?;
    let run = RunConfig { model: cfg.clone(), train: TrainConfig::default(), dataset: dataset.to_owned(), voltlens_version: env!("CARGO_PKG_VERSION").to_owned() };
    write_json(&dir.split(), split)?;
    write_json(&dir.norm(), norm)?;
    write_json(&dir.config(), &run)?;
    write_json(&dir.import_record(), summary)?;
    dir.save_weights(model)?;
    crate::io::replace_dir(&tmp, out)
}

/// Reads tensors by VoltLens name from `model` in [out, in] orientation: what `export-model` writes.
pub fn named_tensors<B: Backend>(model: &Lblm<B>, cfg: &ModelConfig) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let vec = |t: Tensor<B, 1>| t.into_data().convert::<f32>().into_vec::<f32>().expect("f32");
    let mut out = BTreeMap::new();
    let mut linear = |name: &str, l: &burn::nn::Linear<B>| {
        let [d_in, d_out] = l.weight.dims();
        let w: Vec<f32> = l.weight.val().into_data().convert::<f32>().into_vec().expect("f32");
        out.insert(format!("{name}.weight"), (vec![d_out, d_in], transpose(&w, d_in, d_out)));
        let b = l.bias.as_ref().map(|b| vec(b.val())).unwrap_or_else(|| vec![0.0; d_out]);
        out.insert(format!("{name}.bias"), (vec![d_out], b));
    };
    linear("embed", &model.embed);
    linear("head", &model.head);
    for (l, block) in model.blocks.iter().enumerate() {
        linear(&format!("blocks.{l}.attn.qkv"), &block.attn.qkv);
        linear(&format!("blocks.{l}.attn.out"), &block.attn.out);
        linear(&format!("blocks.{l}.mlp.up"), &block.mlp.up);
        linear(&format!("blocks.{l}.mlp.down"), &block.mlp.down);
        if let Some(gate) = &block.mlp.gate {
            linear(&format!("blocks.{l}.mlp.gate"), gate);
        }
    }
    let mut norm = |name: String, n: &super::transformer::Norm<B>| {
        let d = n.gamma.dims()[0];
        out.insert(format!("{name}.weight"), (vec![d], vec(n.gamma.val())));
        if let Some(b) = &n.beta {
            out.insert(format!("{name}.bias"), (vec![d], vec(b.val())));
        }
    };
    for (l, block) in model.blocks.iter().enumerate() {
        norm(format!("blocks.{l}.ln_attn"), &block.ln_attn);
        norm(format!("blocks.{l}.ln_mlp"), &block.ln_mlp);
    }
    if let Some(n) = &model.ln_final {
        norm("ln_final".into(), n);
    }
    if let Some(p) = &model.positions {
        out.insert("positions".into(), (vec![cfg.context, cfg.d_model], p.val().into_data().convert::<f32>().into_vec().expect("f32")));
    }
    out
}
