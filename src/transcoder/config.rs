//! Transcoder configuration: plain serde data, one field per knob of DESIGN.md §3.

use serde::{Deserialize, Serialize};

use super::autodiff::Decoding;
use crate::{Error, Result};

/// Which family of transcoder: how encoders read and where decoders write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Cross-layer: an encoder per layer l, decoders from l to every layer m ≥ l.
    Clt,
    /// Per-layer: an encoder per layer l, decoding to layer l only.
    Plt,
    /// Multi-layer SAE: one encoder over all layers' concatenated resid_mid, decoding to all layers.
    Mlsae,
    /// A plain SAE on each layer's MLP output: reads mlp_out of layer l and rebuilds it, the
    /// baseline transcoders are compared against (Dunefsky et al. 2024).
    Sae,
}

impl Variant {
    /// Whether the encoders read mlp_out (the SAE, which rebuilds its own input) rather than resid_mid.
    pub fn reads_mlp_out(self) -> bool {
        self == Variant::Sae
    }
}

/// The nonlinearity σ that turns pre-activations into sparse codes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Activation {
    Relu,
    /// z = pre · H(pre − θ_f); θ is learned per feature through a straight-through estimator with a
    /// rectangle kernel of width `bandwidth` (Rajamanoharan et al. 2024, "Jumping ahead").
    JumpRelu { threshold: f32, bandwidth: f32 },
    /// Keep the k largest positive pre-activations of each token and encoder.
    TopK { k: usize },
    /// Keep the batch·k largest positive pre-activations of each encoder across the batch.
    BatchTopK { k: usize },
}

impl Activation {
    /// Whether training adds the sparsity penalty (TopK variants get their sparsity from k).
    pub fn penalised(&self) -> bool {
        matches!(self, Activation::Relu | Activation::JumpRelu { .. })
    }
}

/// The sparsity penalty S(z); both weight a feature by the norm of its concatenated decoder rows so
/// that shrinking decoders cannot buy sparsity (Anthropic, "Circuit tracing" 2025).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Sparsity {
    /// Σ_f z_f · ‖W_dec,f‖ (what the PyTorch reference trains with).
    L1,
    /// Σ_f tanh(c · z_f · ‖W_dec,f‖).
    Tanh { c: f32 },
}

/// How λ moves over training; `t` is the step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LambdaSchedule {
    Constant,
    /// λ rises linearly from 0 to its final value over the first `ramp_steps`.
    LinearRamp { ramp_steps: u64 },
    /// λ is 0 for `delay_steps`, then ramps linearly over `ramp_steps`.
    DelayedRamp { delay_steps: u64, ramp_steps: u64 },
}

/// Which trainer computes the gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trainer {
    /// Hand-written gradients over the active features only (`grad`); CPU.
    Sparse,
    /// burn autodiff (`autodiff`) on the stage's device: the GPU trainer, also runs on the CPU.
    Autodiff,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscoderConfig {
    pub variant: Variant,
    /// Features per encoder (per layer for CLT/PLT, in total for the MLSAE).
    pub features: usize,
    pub activation: Activation,
    pub sparsity: Sparsity,
    /// Final sparsity coefficient λ.
    pub lambda: f32,
    pub schedule: LambdaSchedule,
    pub lr: f32,
    pub batch: usize,
    pub steps: u64,
    pub seed: u64,
    /// Add a dense linear skip path x_m·W_skip[m] to each reconstruction.
    pub skip: bool,
    /// Encoder biases start so that about this share of features fires on the first batch.
    pub target_firing_rate: f32,
    /// Dead features used by the AuxK loss (TopK/BatchTopK only); 0 turns AuxK off.
    pub aux_k: usize,
    /// Weight of the AuxK loss (Gao et al. 2024 use 1/32).
    pub aux_coef: f32,
    /// A feature is dead when it has not fired for this many tokens.
    pub dead_tokens: u64,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Tokens held by the shuffle buffer between the source and the batches.
    pub shuffle_buffer: usize,
    /// Weight of the pre-activation loss Σ relu(θ − pre)·‖W_dec‖ (0: off; autodiff trainer only).
    pub preact_coef: f32,
    /// The trainer; unset: `sparse` on the CPU, `autodiff` on a GPU. Not part of what a checkpoint
    /// must match, so a run can move between trainers and devices.
    pub trainer: Option<Trainer>,
    /// How the autodiff trainer decodes: `auto` (only the active features' decoder rows; ReLU and
    /// JumpReLU densely while a row is F/16 full), `gather` or `dense` (to compare them). Not part
    /// of what a checkpoint must match.
    #[serde(skip_serializing_if = "Decoding::is_auto")]
    pub decoding: Decoding,
}

impl Default for TranscoderConfig {
    fn default() -> Self {
        Self {
            variant: Variant::Clt,
            features: 1024,
            activation: Activation::Relu,
            sparsity: Sparsity::L1,
            lambda: 1e-3,
            schedule: LambdaSchedule::Constant,
            lr: 1e-3,
            batch: 1024,
            steps: 1000,
            seed: 0,
            skip: false,
            target_firing_rate: 0.02,
            aux_k: 0,
            aux_coef: 1.0 / 32.0,
            dead_tokens: 10_000_000,
            checkpoint_every: 0,
            shuffle_buffer: 1 << 16,
            preact_coef: 0.0,
            trainer: None,
            decoding: Decoding::Auto,
        }
    }
}

impl TranscoderConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(format!("transcoder config: {m}")));
        if self.features == 0 || self.batch == 0 {
            return bad("features and batch must be positive");
        }
        // Written so that NaN fails too.
        if self.lr.is_nan() || self.lr <= 0.0 || self.lambda.is_nan() || self.lambda < 0.0 || self.preact_coef.is_nan() || self.preact_coef < 0.0 {
            return bad("lr must be positive, lambda and preact_coef non-negative");
        }
        if !self.decoding.is_auto() && self.trainer == Some(Trainer::Sparse) {
            return bad("decoding is the autodiff trainer's setting; the sparse trainer always decodes only the active features");
        }
        if self.preact_coef > 0.0 && self.trainer == Some(Trainer::Sparse) {
            return bad("preact_coef needs trainer = \"autodiff\": the pre-activation loss reaches every feature, and the sparse trainer computes gradients for active features only");
        }
        if self.variant == Variant::Sae && self.skip {
            return bad("an SAE on mlp_out has no skip path (it would copy its own input)");
        }
        if self.variant == Variant::Mlsae && !matches!(self.activation, Activation::TopK { .. } | Activation::BatchTopK { .. }) {
            return bad("the MLSAE is trained with TopK or BatchTopK");
        }
        match self.activation {
            Activation::TopK { k } | Activation::BatchTopK { k } if k == 0 || k > self.features => bad("k must be in 1..=features"),
            Activation::JumpRelu { threshold, bandwidth } if !(threshold > 0.0 && bandwidth > 0.0) => bad("jumprelu threshold and bandwidth must be positive"),
            _ => Ok(()),
        }
    }

    /// The trainer to use on `device` when none is set (autodiff on the CPU too when a setting
    /// only it has is used).
    pub fn trainer_on(&self, device: crate::model::DeviceChoice) -> Trainer {
        self.trainer.unwrap_or(match device {
            crate::model::DeviceChoice::Cpu if self.preact_coef == 0.0 && self.decoding.is_auto() => Trainer::Sparse,
            _ => Trainer::Autodiff,
        })
    }

    /// λ(t).
    pub fn lambda_at(&self, step: u64) -> f32 {
        let ramp = |t: u64, len: u64| if len == 0 { 1.0 } else { (t as f32 / len as f32).min(1.0) };
        self.lambda
            * match self.schedule {
                LambdaSchedule::Constant => 1.0,
                LambdaSchedule::LinearRamp { ramp_steps } => ramp(step, ramp_steps),
                LambdaSchedule::DelayedRamp { delay_steps, ramp_steps } => ramp(step.saturating_sub(delay_steps), ramp_steps),
            }
    }
}
