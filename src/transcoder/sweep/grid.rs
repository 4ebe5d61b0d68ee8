//! Sweep settings (the `[sweep]` table of a pipeline, or `voltlens sweep --config`) and their
//! expansion into one transcoder configuration per run.

use serde::{Deserialize, Serialize};

use crate::model::DeviceChoice;
use crate::transcoder::config::{Activation, TranscoderConfig, Variant};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepConfig {
    /// What every run shares (`[sweep.base]`, the keys of `[transcoder.config]`); a grid sets
    /// variant, activation, features and λ.
    pub base: TranscoderConfig,
    /// Groups of runs (`[[sweep.grid]]`), each the cross product of its lists; groups let CLT/PLT
    /// ReLU runs and MLSAE TopK runs share one sweep.
    pub grid: Vec<Grid>,
    /// Training tokens cached once and read by every run, in the same order (a run needing more
    /// cycles through them).
    pub tokens: usize,
    /// Held-out tokens for FVU, L0 and dead features; also the most steps a fidelity run scores.
    pub eval_tokens: usize,
    /// Where the model runs to make activations and score fidelity, and where transcoders train
    /// (the autodiff trainer on `cuda`, the hand-written one on `cpu`, unless `base.trainer` says).
    pub device: DeviceChoice,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig { base: TranscoderConfig::default(), grid: Vec::new(), tokens: 1 << 18, eval_tokens: 1 << 16, device: DeviceChoice::Cpu }
    }
}

/// One group of runs. A list left out takes the base setting; an empty list is an error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grid {
    pub variants: Option<Vec<Variant>>,
    /// σ as in `[transcoder.config]`, e.g. `[{ kind = "relu" }, { kind = "topk", k = 16 }]`.
    pub activations: Option<Vec<Activation>>,
    pub features: Option<Vec<usize>>,
    /// λ values; TopK and BatchTopK runs take their sparsity from k, so they run once, at λ = 0.
    pub lambdas: Option<Vec<f32>>,
}

/// One run of a sweep: its folder name and its complete configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPoint {
    pub id: String,
    pub config: TranscoderConfig,
}

impl SweepConfig {
    /// Every run, in grid order, checked. Errors name the grid (1-based, as in the file) and field.
    pub fn runs(&self) -> Result<Vec<RunPoint>> {
        if self.grid.is_empty() {
            return Err(Error::Config("sweep: no grid; add at least one [[sweep.grid]] table".to_owned()));
        }
        if self.tokens == 0 || self.eval_tokens == 0 {
            return Err(Error::Config("sweep: tokens and eval_tokens must be positive".to_owned()));
        }
        let mut runs: Vec<RunPoint> = Vec::new();
        for (g, grid) in self.grid.iter().enumerate() {
            for point in grid.points(&self.base, g + 1)? {
                match runs.iter().find(|r| r.id == point.id) {
                    // TopK at several λ, or a point listed twice: one run.
                    Some(r) if r.config == point.config => {}
                    Some(_) => {
                        return Err(Error::Config(format!("sweep grid {}: two different runs would be named '{}'", g + 1, point.id)));
                    }
                    None => runs.push(point),
                }
            }
        }
        Ok(runs)
    }
}

impl Grid {
    fn points(&self, base: &TranscoderConfig, g: usize) -> Result<Vec<RunPoint>> {
        let bad = |m: String| Error::Config(format!("sweep grid {g}: {m}"));
        fn list<T: Clone>(v: &Option<Vec<T>>, default: T, name: &str, g: usize) -> Result<Vec<T>> {
            match v {
                Some(v) if v.is_empty() => Err(Error::Config(format!("sweep grid {g}: `{name}` is empty; list at least one value or leave it out"))),
                Some(v) => Ok(v.clone()),
                None => Ok(vec![default]),
            }
        }
        let variants = list(&self.variants, base.variant, "variants", g)?;
        let activations = list(&self.activations, base.activation, "activations", g)?;
        let features = list(&self.features, base.features, "features", g)?;
        let lambdas = list(&self.lambdas, base.lambda, "lambdas", g)?;
        if let Some(l) = lambdas.iter().find(|l| l.is_nan() || **l < 0.0) {
            return Err(bad(format!("`lambdas` has {l}; λ must be ≥ 0")));
        }
        if let Some(f) = features.iter().find(|f| **f == 0) {
            return Err(bad(format!("`features` has {f}; must be positive")));
        }
        let mut points = Vec::new();
        for &variant in &variants {
            for &activation in &activations {
                for &features in &features {
                    for &lambda in &lambdas {
                        let lambda = if activation.penalised() { lambda } else { 0.0 };
                        let config = TranscoderConfig { variant, activation, features, lambda, ..base.clone() };
                        let id = run_id(&config);
                        config.validate().map_err(|e| bad(format!("run {id}: {e}")))?;
                        points.push(RunPoint { id, config });
                    }
                }
            }
        }
        Ok(points)
    }
}

/// `clt-relu-f256-l0.001`, `mlsae-topk16-f512`: what differs between runs, as a folder name.
pub fn run_id(c: &TranscoderConfig) -> String {
    let lambda = if c.activation.penalised() { format!("-l{}", c.lambda) } else { String::new() };
    format!("{}-{}-f{}{lambda}", variant_name(c.variant), activation_name(&c.activation), c.features)
}

pub fn variant_name(v: Variant) -> &'static str {
    match v {
        Variant::Clt => "clt",
        Variant::Plt => "plt",
        Variant::Mlsae => "mlsae",
        Variant::Sae => "sae",
    }
}

/// σ in a few characters, with what distinguishes two of the same kind.
pub fn activation_name(a: &Activation) -> String {
    match a {
        Activation::Relu => "relu".to_owned(),
        Activation::JumpRelu { threshold, .. } => format!("jumprelu{threshold}"),
        Activation::TopK { k } => format!("topk{k}"),
        Activation::BatchTopK { k } => format!("batchtopk{k}"),
    }
}
