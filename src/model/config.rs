//! Settings of the LBLM stages: the model's shape, its training and its evaluation. Plain data
//! with defaults, read from pipeline TOML or the command line and stored beside the model.

use serde::{Deserialize, Serialize};

use super::inputs::CHANNELS;
use crate::{Error, Result};

/// How the model knows where a step sits in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positional {
    /// Rotary embeddings on queries and keys (relative positions; RoFormer, Su et al. 2021).
    Rotary,
    /// A learned vector per window position, added to the input embedding.
    Learned,
    /// No position signal besides the causal mask (some imported models).
    None,
}

/// The normalisation before attention, before the MLP and (optionally) before the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// (x − mean) / √(var + ε) · γ + β (GPT-2).
    #[default]
    LayerNorm,
    /// x / √(mean(x²) + ε) · γ, no offset (Llama; Zhang & Sennrich 2019).
    RmsNorm,
}

/// The MLP of each block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlpKind {
    /// down(GELU(up(x))), GELU with the exact erf.
    #[default]
    Gelu,
    /// down(GELU(up(x))), GELU with the tanh approximation (GPT-2's `gelu_new`).
    GeluTanh,
    /// down(SiLU(gate(x)) ⊙ up(x)) (Llama; Shazeer 2020).
    #[serde(rename = "swiglu")]
    SwiGlu,
    /// down(ReLU(up(x))): PyTorch's `nn.TransformerEncoderLayer` by default.
    Relu,
}

/// What the head's one output per step means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadTarget {
    /// The scaled voltage change ΔV_t / target_scale (VoltLens's own models).
    #[default]
    DeltaV,
    /// The next voltage V_{t+1}, turned into scaled ΔV inside the model by subtracting the
    /// normalised voltage input (`Lblm::input_skip`): everything downstream reads ΔV.
    NextVoltage,
}

/// Where tensors live: burn's Flex CPU backend, one NVIDIA GPU through burn's CUDA backend (builds
/// with the `cuda` feature), or any GPU through burn's wgpu backend (Vulkan, Metal, DirectX 12;
/// builds with the `wgpu` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda,
    Wgpu,
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
            DeviceChoice::Wgpu => "wgpu",
        })
    }
}

impl DeviceChoice {
    /// For `skip_serializing_if`: a stage table that gained `device` keeps its fingerprint on the CPU.
    pub fn is_cpu(&self) -> bool {
        *self == DeviceChoice::Cpu
    }

    /// Whether this build has the device's backend: an error naming the cargo feature if not.
    pub fn check(self) -> Result<Self> {
        match self {
            DeviceChoice::Cuda if !cfg!(feature = "cuda") => {}
            DeviceChoice::Wgpu if !cfg!(feature = "wgpu") => {}
            _ => return Ok(self),
        }
        Err(Error::Config(format!("--device {self}: this build has no {self} support; rebuild with --features {self}")))
    }
}

/// Parses a `--device` flag; a device this build lacks is refused here, before any work.
impl std::str::FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => DeviceChoice::Cuda.check(),
            "wgpu" => DeviceChoice::Wgpu.check(),
            other => Err(Error::Config(format!("unknown device '{other}' (expected cpu, cuda or wgpu)"))),
        }
    }
}

/// The transformer's shape (DESIGN.md §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Decoder blocks.
    pub layers: usize,
    /// Residual stream width.
    pub d_model: usize,
    /// Attention heads; `d_model / heads` must be even for rotary positions.
    pub heads: usize,
    /// Hidden width of each MLP (4·d_model in DESIGN §2).
    pub d_mlp: usize,
    /// Steps per window: the longest history the model sees.
    pub context: usize,
    pub positional: Positional,
    /// Dropout on the attention and MLP outputs during training (0 = off).
    pub dropout: f64,
    /// Base of the rotary frequencies.
    pub rope_theta: f32,
    // The fields below are written only where they differ from VoltLens's own architecture, so
    // that the settings (and pipeline fingerprints) of models made before they existed still match.
    #[serde(skip_serializing_if = "is_default")]
    pub norm: NormKind,
    /// The ε of every norm (burn's and PyTorch's LayerNorm default: 1e-5).
    #[serde(skip_serializing_if = "is_default_eps")]
    pub norm_eps: f64,
    #[serde(skip_serializing_if = "is_default")]
    pub mlp: MlpKind,
    /// Whether a norm sits between the last block and the head.
    #[serde(skip_serializing_if = "is_true")]
    pub final_norm: bool,
    #[serde(skip_serializing_if = "is_default")]
    pub head: HeadTarget,
    /// The per-step input channels by name, in order (`inputs::CATALOGUE`).
    pub channels: Vec<String>,
}

pub(super) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn is_default_eps(eps: &f64) -> bool {
    *eps == ModelConfig::default().norm_eps
}

fn is_true(value: &bool) -> bool {
    *value
}

impl Default for ModelConfig {
    /// The quickstart size: trains in minutes on two CPU cores.
    fn default() -> Self {
        ModelConfig {
            layers: 2,
            d_model: 64,
            // Two heads train a third faster than four on CPU (attention scores scale with heads)
            // at the same loss on the PyBaMM dev set.
            heads: 2,
            d_mlp: 256,
            context: 128,
            positional: Positional::Rotary,
            dropout: 0.0,
            rope_theta: 10_000.0,
            norm: NormKind::LayerNorm,
            norm_eps: 1e-5,
            mlp: MlpKind::Gelu,
            final_norm: true,
            head: HeadTarget::DeltaV,
            channels: CHANNELS.iter().map(|c| c.to_string()).collect(),
        }
    }
}

impl ModelConfig {
    /// The size trained on the PyBaMM dev set: one block more than the quickstart.
    pub fn dev() -> Self {
        ModelConfig { layers: 3, ..ModelConfig::default() }
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads.max(1)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("model config: {m}")));
        if self.layers == 0 || self.d_model == 0 || self.heads == 0 || self.d_mlp == 0 || self.context < 2 {
            return bad("layers, d_model, heads and d_mlp must be positive and context at least 2".into());
        }
        if self.d_model % self.heads != 0 {
            return bad(format!("d_model {} is not divisible by heads {}", self.d_model, self.heads));
        }
        if self.positional == Positional::Rotary && self.head_dim() % 2 != 0 {
            return bad(format!("rotary positions need an even head size, got d_model/heads = {}", self.head_dim()));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return bad(format!("norm_eps {} must be a positive number", self.norm_eps));
        }
        super::inputs::channel_indices(&self.channels)?;
        if self.head == HeadTarget::NextVoltage && !self.channels.iter().any(|c| c == "voltage") {
            return bad("a head predicting the next voltage needs the `voltage` input channel".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        Ok(())
    }
}

/// The training loss on scaled ΔV.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    Mse,
    /// Quadratic within `delta` (scaled units), linear beyond: softens the pull of the few large
    /// jumps at step changes.
    Huber { delta: f32 },
}

/// How to train (DESIGN.md §2, Training).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimiser steps in all.
    pub steps: usize,
    /// Windows per step.
    pub batch: usize,
    /// Peak learning rate (after warm-up).
    pub lr: f64,
    /// The cosine decay ends at `lr · min_lr_fraction`.
    pub min_lr_fraction: f64,
    /// Steps of linear warm-up from 0 to `lr`.
    pub warmup: usize,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Largest global L2 norm of the gradient (0 = no clipping).
    pub grad_clip: f64,
    pub loss: Loss,
    /// Validate every this many steps (0 = only at the end).
    pub val_every: usize,
    /// Validation windows (a fixed, evenly spaced subset of the validation cells' windows).
    pub val_windows: usize,
    /// Write a resumable checkpoint every this many steps (and always at the end).
    pub checkpoint_every: usize,
    pub seed: u64,
    pub device: DeviceChoice,
    /// Steps between the starts of consecutive training windows.
    pub stride: usize,
    /// Shares of cells held out for validation and testing (split by cell, DESIGN §1.5).
    pub val_fraction: f64,
    pub test_fraction: f64,
    /// Share of each batch's windows trained on their own drift (pushforward, `train::pushforward`):
    /// the voltage input moved by the model's summed teacher-forced errors, the target the cell's
    /// true step. 0 trains on true voltages only; each such step costs one more forward pass.
    pub pushforward: f64,
    /// Multiplies the drift those windows read: above 1 the model also trains on the larger drift
    /// a rollout meets where its own teacher-forced errors are small but compound (a knee).
    pub pushforward_drift: f64,
    /// Each drifted window draws its multiplier uniformly from `pushforward_drift` ± this, so
    /// that training meets small and large drifts both (0: every window the same multiplier).
    pub pushforward_drift_spread: f64,
    /// Share of each batch's windows that read `soc` and `soc_present` as a cell without an SOC
    /// anchor does (`train::blank_soc`), so that the model also reads unanchored cells. Only
    /// where the model reads both channels.
    pub soc_dropout: f64,
    /// Stop after this step as if killed (no final model is written): for tests and time-boxed
    /// runs. Not part of the run's identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_after: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            // Held-out warm discharge-step rollouts at 1,500 → 3,000 steps (2 × 64, seed 1, one run
            // a set): NCA_Kim2011 44.7 → 13.7 mV (its 3C knee), Ai2020 8.8 → 6.6, Mohtat2020
            // 48.1 → 48.0 (a 3C knee it misses even on its own training cell); skill rose on all
            // three. The dev recipe (pipelines/pybamm-dev.toml) already trained 3,000.
            steps: 3000,
            batch: 32,
            lr: 2e-3,
            min_lr_fraction: 0.05,
            warmup: 100,
            weight_decay: 0.01,
            grad_clip: 1.0,
            loss: Loss::Mse,
            val_every: 250,
            val_windows: 256,
            checkpoint_every: 250,
            seed: 0,
            device: DeviceChoice::Cpu,
            stride: 16,
            val_fraction: 0.1,
            test_fraction: 0.2,
            stop_after: None,
            // Held-out discharge-step rollouts (warm and cold starts together) against 0, both
            // reading `soc`, one seed a set: 63.0 → 46.4 mV on the dev set, 37.3 → 28.1 on
            // NCA_Kim2011, 25.8 → 16.2 on Mohtat2020, 32.7 → 31.4 on Ai2020; teacher-forced
            // skill within 0.01.
            pushforward: 0.5,
            // Held-out warm discharge-step rollouts, drift × 1 → × 3 (2 × 64, 3,000 steps, seed 1,
            // one run a set): Mohtat2020 48.0 → 8.7 mV (a 3C knee that × 1 missed even on its own
            // training cell: its teacher-forced errors there are small, a rollout's drift is not),
            // NCA_Kim2011 13.7 → 29.6, Ai2020 6.6 → 19.9 (its × 3 split, drawn by the newer rule,
            // has another validation cell); skill 0.9947–0.9964 against 0.9965–0.9988. Dev (3 × 64,
            // seed 11, same split): 64.9 → 35.5 mV; a Marquis2019 set generated with seed 57: 4.9
            // mV at × 3. × 3 is the one setting tried that keeps the 16-cell sets within 30 mV;
            // cold starts and full cycles moved either way (a cycle: Mohtat 80.2 → 29.4 mV, NCA
            // 20.1 → 47.0, Ai 13.4 → 48.3, dev 61.9 → 61.6).
            pushforward_drift: 3.0,
            // Multipliers drawn from 1–5 instead of 3 for every window, held-out warm discharge
            // rollouts (same recipes, seeds and splits as above, one run each): dev 35.5 → 22.7 mV
            // (skill 0.9902, ridge 0.796; full cycles 61.6 → 39.4), NCA_Kim2011 29.6 → 18.0
            // (cycles 47.0 → 23.0), Mohtat2020 8.7 → 14.7 (39.3), Ai2020 19.9 → 17.0 (59.1);
            // skill 0.9943–0.9963, every set above ridge. The one setting tried that keeps all
            // four within 30 mV. Second seeds (other splits): dev seed 12 25.1 mV (skill 0.9915,
            // ridge 0.876); NCA_Kim2011 seed 2 37.3 mV, skill 0.766, from one test cell (1C at
            // 40 °C) the model misses teacher-forced too: the set's only CC-CV cell at 40 °C, which
            // the split now keeps in training (protocol × temperature); with it, 12.3 mV (skill
            // 0.9930). Mohtat2020 seed 2: 15.3 mV (skill 0.9925, ridge 0.634).
            pushforward_drift_spread: 2.0,
            // Held-out warm discharge rollouts against 0 (dev set: 3 layers × d 64, 3,000 steps):
            // dev seed 12 199.7 → 33.7 mV (anchor hidden 779.7 → 62.4; 0.5 gave 39.7 and 55.6), dev
            // seed 11 44.1 → 56.1 (406.5 → 56.9); the four 16-cell sets within 5 mV, 10.9–18.6, at
            // seed 31. NCA_Kim2011 at seed 1: 42.2 → 45.6 mV, but skill 0.931 → 0.854; rerun on
            // another machine 42.3 → 86.6 mV, skill 0.923 → 0.908 (its test split paired 3C with
            // 25 °C, which no training cell ran; with the split keeping each pairing in training,
            // 0.25 gives skill 0.992 and 44.7 mV). All figures here predate that split rule.
            soc_dropout: 0.25,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("train config: {m}")));
        if self.steps == 0 || self.batch == 0 || self.stride == 0 {
            return bad("steps, batch and stride must be positive".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr {} must be a positive number", self.lr));
        }
        if !(0.0..=1.0).contains(&self.min_lr_fraction) {
            return bad(format!("min_lr_fraction {} is not in [0, 1]", self.min_lr_fraction));
        }
        for (name, share) in [("pushforward", self.pushforward), ("soc_dropout", self.soc_dropout)] {
            if !(0.0..=1.0).contains(&share) {
                return bad(format!("{name} {share} is not a share in [0, 1]"));
            }
        }
        if !(self.pushforward_drift.is_finite() && self.pushforward_drift >= 0.0) {
            return bad(format!("pushforward_drift {} must be a number ≥ 0", self.pushforward_drift));
        }
        if !(0.0..=self.pushforward_drift).contains(&self.pushforward_drift_spread) {
            return bad(format!(
                "pushforward_drift_spread {} must be in [0, pushforward_drift = {}] (a multiplier below 0 would turn the drift around)",
                self.pushforward_drift_spread, self.pushforward_drift
            ));
        }
        if self.val_fraction < 0.0 || self.test_fraction < 0.0 || self.val_fraction + self.test_fraction >= 1.0 {
            return bad("val_fraction and test_fraction must be ≥ 0 and sum to less than 1".into());
        }
        Ok(())
    }

    /// The settings that make a run what it is: two configs with the same identity produce the
    /// same weights, so a checkpoint of one may be resumed by the other.
    pub fn identity(&self) -> TrainConfig {
        TrainConfig { device: DeviceChoice::Cpu, stop_after: None, ..self.clone() }
    }
}

/// Which cells an evaluation scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalCells {
    /// The run's test split.
    #[default]
    Test,
    /// The run's validation split.
    Val,
    /// Validation and test cells together.
    Heldout,
}

/// How to evaluate (DESIGN.md §2, Metrics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    pub cells: EvalCells,
    /// Cells to score instead of the split's (`eval-model --cells`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cell_ids: Vec<String>,
    pub device: DeviceChoice,
    /// Windows per forward pass.
    pub batch: usize,
    /// Ridge penalty, relative to the number of training rows.
    pub ridge_lambda: f64,
    /// Steps of history (the current one included) the ridge baseline sees.
    pub ridge_lags: usize,
    /// Discharge steps rolled out per cell (evenly spaced through the cell).
    pub rollouts_per_cell: usize,
    /// Shortest discharge step worth a rollout, in rows.
    pub min_rollout_rows: usize,
    /// A cycle rollout stops after this many rows.
    pub max_cycle_rows: usize,
    /// Cells drawn per protocol in the PNGs.
    pub plot_cells_per_protocol: usize,
    /// Rows shown in the teacher-forced panel.
    pub plot_rows: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            cells: EvalCells::Test,
            cell_ids: Vec::new(),
            device: DeviceChoice::Cpu,
            batch: 64,
            ridge_lambda: 1e-4,
            ridge_lags: 8,
            rollouts_per_cell: 3,
            min_rollout_rows: 10,
            max_cycle_rows: 2000,
            plot_cells_per_protocol: 1,
            plot_rows: 1500,
        }
    }
}
