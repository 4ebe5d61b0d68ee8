//! The LBLM transformer (DESIGN.md §2): linear embedding of the per-step channels → L pre-norm
//! decoder blocks (causal multi-head attention, MLP) → final norm → one number per step, the
//! scaled ΔV. Generic over burn's `Backend`, so the same code trains on CPU and GPU.
//!
//! One model, its parts chosen by `ModelConfig` (the way candle's models take a `Config`): norm
//! LayerNorm | RMSNorm, MLP GELU | tanh-GELU | SwiGLU, positions rotary | learned | none, final
//! norm or not, a head predicting ΔV or V_{t+1}. The default is VoltLens's own architecture;
//! imported models (`import.rs`) pick the rest.
//!
//! Hook points per block, all [batch, seq, d_model]:
//! `resid_pre` → + attention → `resid_mid` → norm → `mlp_in` → MLP → `mlp_out` → + → `resid_post`.
//! The transcoders of DESIGN §3 read `resid_mid` and reconstruct `mlp_out`.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::activation::{gelu, gelu_approximate, relu, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::config::{HeadTarget, MlpKind, ModelConfig, NormKind, Positional};

/// Activations of one block for one forward pass, each [batch, seq, d_model].
#[derive(Debug, Clone)]
pub struct LayerActivations<B: Backend> {
    /// The residual stream entering the block.
    pub resid_pre: Tensor<B, 3>,
    /// After the attention output is added, before the MLP: the transcoders' input x_l.
    pub resid_mid: Tensor<B, 3>,
    /// `resid_mid` after the MLP's norm: what the MLP actually reads.
    pub mlp_in: Tensor<B, 3>,
    /// The MLP output (or its replacement): the transcoders' target y_l.
    pub mlp_out: Tensor<B, 3>,
    /// `resid_mid + mlp_out`: the residual stream leaving the block.
    pub resid_post: Tensor<B, 3>,
}

/// Supplies MLP outputs in place of the model's own (a transcoder, an ablation, a patch).
///
/// Within one forward pass `mlp_out` is called once per layer, in layer order 0, 1, …, L−1, so a
/// cross-layer transcoder can keep the encodings of earlier layers (in a `RefCell`) for later
/// layers' decoders.
pub trait MlpReplacement<B: Backend> {
    /// `resid_mid` [batch, seq, d_model] at `layer` → the MLP output to use [batch, seq, d_model].
    fn mlp_out(&self, layer: usize, resid_mid: Tensor<B, 3>) -> Tensor<B, 3>;

    /// Whether `layer` is replaced; a layer that is not keeps the model's own MLP (one layer
    /// replaced at a time, DESIGN §3 fidelity).
    fn replaces(&self, _layer: usize) -> bool {
        true
    }
}

impl<B: Backend, F: Fn(usize, Tensor<B, 3>) -> Tensor<B, 3>> MlpReplacement<B> for F {
    fn mlp_out(&self, layer: usize, resid_mid: Tensor<B, 3>) -> Tensor<B, 3> {
        self(layer, resid_mid)
    }
}

/// Weights drawn from the model's own seeded stream rather than the backend's global RNG, so a
/// model is the same for a seed on every backend and whatever else runs in the process.
struct Init {
    rng: ChaCha8Rng,
}

impl Init {
    /// Uniform(−a, a) weights of a Linear [d_in, d_out], zero bias.
    fn linear<B: Backend>(&mut self, d_in: usize, d_out: usize, a: f32, device: &B::Device) -> Linear<B> {
        let weight: Vec<f32> = (0..d_in * d_out).map(|_| self.rng.random_range(-a..a)).collect();
        Linear {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(weight, [d_in, d_out]), device)),
            bias: Some(Param::from_tensor(Tensor::zeros([d_out], device))),
        }
    }

    /// PyTorch's default for Linear: U(±1/√d_in).
    fn default_linear<B: Backend>(&mut self, d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
        self.linear(d_in, d_out, 1.0 / (d_in as f32).sqrt(), device)
    }

    fn normal_matrix<B: Backend>(&mut self, rows: usize, cols: usize, std: f32, device: &B::Device) -> Tensor<B, 2> {
        let values: Vec<f32> = (0..rows * cols).map(|_| std * self.rng.sample::<f32, _>(StandardNormal)).collect();
        Tensor::from_data(TensorData::new(values, [rows, cols]), device)
    }
}

/// Rotary position tables, precomputed for the whole context: cos and sin [context, head_dim],
/// in the "rotate half" layout (frequency i sits at columns i and i + head_dim/2).
#[derive(Module, Debug)]
pub struct Rotary<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    /// [head_dim, head_dim] with x·R = (−x₂, x₁) for x = (x₁, x₂): one small matmul instead of
    /// slicing, negating and concatenating (which cost a quarter of a training step).
    rotate_half: Tensor<B, 2>,
}

impl<B: Backend> Rotary<B> {
    pub fn new(context: usize, head_dim: usize, theta: f32, device: &B::Device) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(context * head_dim);
        let mut sin = Vec::with_capacity(context * head_dim);
        for pos in 0..context {
            let angles: Vec<f32> =
                (0..half).map(|i| pos as f32 * theta.powf(-2.0 * i as f32 / head_dim as f32)).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let mut rotate_half = vec![0f32; head_dim * head_dim];
        for i in 0..half {
            rotate_half[(i + half) * head_dim + i] = -1.0; // column i takes −x₂ᵢ
            rotate_half[i * head_dim + i + half] = 1.0; // column i + half takes x₁ᵢ
        }
        let matrix = |v: Vec<f32>, rows: usize| Tensor::from_data(TensorData::new(v, [rows, head_dim]), device);
        Rotary { cos: matrix(cos, context), sin: matrix(sin, context), rotate_half: matrix(rotate_half, head_dim) }
    }

    /// Rotates vectors [batch, seq, n, head_dim] (queries and keys of every head, n of them per
    /// step) by their positions 0 … seq−1.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.apply_from(x, 0)
    }

    /// [`Rotary::apply`] for steps at positions `first` … `first` + seq − 1.
    fn apply_from(&self, x: Tensor<B, 4>, first: usize) -> Tensor<B, 4> {
        let [batch, seq, n, head_dim] = x.dims();
        let cos = self.cos.clone().narrow(0, first, seq).reshape([1, seq, 1, head_dim]);
        let sin = self.sin.clone().narrow(0, first, seq).reshape([1, seq, 1, head_dim]);
        let rotated = x.clone().reshape([batch * seq * n, head_dim]).matmul(self.rotate_half.clone()).reshape([batch, seq, n, head_dim]);
        x * cos + rotated * sin
    }
}

/// Causal multi-head self-attention with one fused query/key/value projection.
#[derive(Module, Debug)]
pub struct CausalSelfAttention<B: Backend> {
    /// d_model → 3·d_model: queries, keys, values side by side.
    pub qkv: Linear<B>,
    /// d_model → d_model: heads back into the residual stream.
    pub out: Linear<B>,
    pub heads: usize,
}

impl<B: Backend> CausalSelfAttention<B> {
    fn new(cfg: &ModelConfig, init: &mut Init, device: &B::Device) -> Self {
        let d = cfg.d_model;
        // GPT-2: residual-branch outputs scaled by 1/√(2L) so the stream's variance does not grow with depth.
        let out_scale = 1.0 / ((d as f32).sqrt() * (2.0 * cfg.layers as f32).sqrt());
        CausalSelfAttention { qkv: init.default_linear(d, 3 * d, device), out: init.linear(d, d, out_scale, device), heads: cfg.heads }
    }

    /// x [batch, seq, d_model] (already normalised) → [batch, seq, d_model].
    pub fn forward(&self, x: Tensor<B, 3>, rotary: Option<&Rotary<B>>) -> Tensor<B, 3> {
        self.forward_keeping(x, rotary).0
    }

    /// [`CausalSelfAttention::forward`], also returning the keys and values it attended to.
    fn forward_keeping(&self, x: Tensor<B, 3>, rotary: Option<&Rotary<B>>) -> (Tensor<B, 3>, Tensor<B, 4>, Tensor<B, 4>) {
        let (q, k, v) = self.project(x, rotary, 0);
        let options = AttentionModuleOptions { is_causal: true, ..Default::default() };
        let heads = attention(q, k.clone(), v.clone(), None, None, options); // [batch, heads, seq, head_dim]
        (self.merge(heads), k, v)
    }

    /// Steps x [batch, seq, d_model] following `cache`'s keys and values (which they join),
    /// without a causal mask: for one step at a time.
    fn step(&self, x: Tensor<B, 3>, rotary: Option<&Rotary<B>>, keys: &mut Tensor<B, 4>, values: &mut Tensor<B, 4>) -> Tensor<B, 3> {
        let (q, k, v) = self.project(x, rotary, keys.dims()[2]);
        *keys = Tensor::cat(vec![keys.clone(), k], 2);
        *values = Tensor::cat(vec![values.clone(), v], 2);
        let head_dim = q.dims()[3];
        let scores = q.matmul(keys.clone().swap_dims(2, 3)) / (head_dim as f64).sqrt(); // [batch, heads, seq, steps]
        self.merge(softmax(scores, 3).matmul(values.clone()))
    }

    /// Queries, keys and values [batch, heads, seq, head_dim] of x [batch, seq, d_model], rotated
    /// for positions `first` … `first` + seq − 1.
    fn project(&self, x: Tensor<B, 3>, rotary: Option<&Rotary<B>>, first: usize) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [batch, seq, d_model] = x.dims();
        let head_dim = d_model / self.heads;
        let h = self.heads;
        // [batch, seq, 3·d_model] → queries and keys [batch, seq, 2·heads, head_dim], values [batch, seq, heads, head_dim]
        let qkv = self.qkv.forward(x);
        let mut qk = qkv.clone().narrow(2, 0, 2 * d_model).reshape([batch, seq, 2 * h, head_dim]);
        let v = qkv.narrow(2, 2 * d_model, d_model).reshape([batch, seq, h, head_dim]);
        if let Some(rotary) = rotary {
            qk = rotary.apply_from(qk, first);
        }
        // → [batch, heads, seq, head_dim] each
        (qk.clone().narrow(2, 0, h).swap_dims(1, 2), qk.narrow(2, h, h).swap_dims(1, 2), v.swap_dims(1, 2))
    }

    /// Heads [batch, heads, seq, head_dim] → the output projection [batch, seq, d_model].
    fn merge(&self, heads: Tensor<B, 4>) -> Tensor<B, 3> {
        let [batch, h, seq, head_dim] = heads.dims();
        self.out.forward(heads.swap_dims(1, 2).reshape([batch, seq, h * head_dim]))
    }
}

/// LayerNorm or RMSNorm over the last dimension (`NormKind`). The fields are named as in burn's
/// `LayerNorm`, so checkpoints written before RMSNorm existed still load.
#[derive(Module, Debug)]
pub struct Norm<B: Backend> {
    pub gamma: Param<Tensor<B, 1>>,
    /// LayerNorm's offset; RMSNorm has none.
    pub beta: Option<Param<Tensor<B, 1>>>,
    pub epsilon: f64,
    /// x / √(mean(x²) + ε) · γ, without centring.
    pub rms: bool,
}

impl<B: Backend> Norm<B> {
    fn new(cfg: &ModelConfig, device: &B::Device) -> Self {
        let rms = cfg.norm == NormKind::RmsNorm;
        Norm {
            gamma: Param::from_tensor(Tensor::ones([cfg.d_model], device)),
            beta: (!rms).then(|| Param::from_tensor(Tensor::zeros([cfg.d_model], device))),
            epsilon: cfg.norm_eps,
            rms,
        }
    }

    /// x [..., d_model] → the same shape, normalised per row.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if self.rms {
            let scale = (x.clone().square().mean_dim(D - 1) + self.epsilon).sqrt();
            return x / scale * self.gamma.val().unsqueeze();
        }
        let gamma = self.gamma.val().into_primitive().tensor();
        let beta = self.beta.as_ref().map(|b| b.val().into_primitive().tensor());
        Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(x.into_primitive().tensor(), gamma, beta, self.epsilon)))
    }
}

/// The MLP of a block: d_model → d_mlp → activation → d_model (`MlpKind`).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub up: Linear<B>,
    /// SwiGLU's gate d_model → d_mlp; None for the GELU MLPs.
    pub gate: Option<Linear<B>>,
    pub down: Linear<B>,
    /// The activation (from the config, so not saved with the weights).
    #[module(skip)]
    pub activation: MlpKind,
}

impl<B: Backend> Mlp<B> {
    fn new(cfg: &ModelConfig, init: &mut Init, device: &B::Device) -> Self {
        let down_scale = 1.0 / ((cfg.d_mlp as f32).sqrt() * (2.0 * cfg.layers as f32).sqrt());
        let up = init.default_linear(cfg.d_model, cfg.d_mlp, device);
        let gate = (cfg.mlp == MlpKind::SwiGlu).then(|| init.default_linear(cfg.d_model, cfg.d_mlp, device));
        let down = init.linear(cfg.d_mlp, cfg.d_model, down_scale, device);
        Mlp { up, gate, down, activation: cfg.mlp }
    }

    /// mlp_in [batch, seq, d_model] → mlp_out [batch, seq, d_model].
    pub fn forward(&self, mlp_in: Tensor<B, 3>) -> Tensor<B, 3> {
        let up = self.up.forward(mlp_in.clone()); // [batch, seq, d_mlp]
        let hidden = match (&self.gate, self.activation) {
            (Some(gate), _) => silu(gate.forward(mlp_in)) * up,
            (None, MlpKind::GeluTanh) => gelu_approximate(up),
            (None, MlpKind::Relu) => relu(up),
            (None, _) => gelu(up),
        };
        self.down.forward(hidden)
    }
}

/// One pre-norm decoder block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub ln_attn: Norm<B>,
    pub attn: CausalSelfAttention<B>,
    pub ln_mlp: Norm<B>,
    pub mlp: Mlp<B>,
    dropout: Dropout,
}

impl<B: Backend> Block<B> {
    fn new(cfg: &ModelConfig, init: &mut Init, device: &B::Device) -> Self {
        Block {
            ln_attn: Norm::new(cfg, device),
            attn: CausalSelfAttention::new(cfg, init, device),
            ln_mlp: Norm::new(cfg, device),
            mlp: Mlp::new(cfg, init, device),
            dropout: DropoutConfig::new(cfg.dropout).init(),
        }
    }

    /// resid_pre [batch, seq, d_model] → the block's activations; `replacement`, when given,
    /// supplies `mlp_out` from `resid_mid` instead of the block's MLP.
    fn forward(
        &self,
        resid_pre: Tensor<B, 3>,
        rotary: Option<&Rotary<B>>,
        layer: usize,
        replacement: Option<&dyn MlpReplacement<B>>,
    ) -> LayerActivations<B> {
        let attn_out = self.attn.forward(self.ln_attn.forward(resid_pre.clone()), rotary);
        let resid_mid = resid_pre.clone() + self.dropout.forward(attn_out);
        let mlp_in = self.ln_mlp.forward(resid_mid.clone());
        let mlp_out = match replacement {
            Some(r) if r.replaces(layer) => r.mlp_out(layer, resid_mid.clone()),
            _ => self.mlp.forward(mlp_in.clone()),
        };
        let resid_post = resid_mid.clone() + self.dropout.forward(mlp_out.clone());
        LayerActivations { resid_pre, resid_mid, mlp_in, mlp_out, resid_post }
    }

    /// resid_pre → resid_post without the hooks or dropout (inference), also returning the
    /// keys and values of its attention (`Lblm::prefill`).
    fn forward_keeping(&self, resid_pre: Tensor<B, 3>, rotary: Option<&Rotary<B>>) -> (Tensor<B, 3>, Tensor<B, 4>, Tensor<B, 4>) {
        let (attn_out, k, v) = self.attn.forward_keeping(self.ln_attn.forward(resid_pre.clone()), rotary);
        let resid_mid = resid_pre + attn_out;
        (resid_mid.clone() + self.mlp.forward(self.ln_mlp.forward(resid_mid)), k, v)
    }

    /// resid_pre of steps that follow the cached ones → resid_post (`Lblm::step`).
    fn step(&self, resid_pre: Tensor<B, 3>, rotary: Option<&Rotary<B>>, keys: &mut Tensor<B, 4>, values: &mut Tensor<B, 4>) -> Tensor<B, 3> {
        let resid_mid = resid_pre.clone() + self.attn.step(self.ln_attn.forward(resid_pre), rotary, keys, values);
        resid_mid.clone() + self.mlp.forward(self.ln_mlp.forward(resid_mid))
    }
}

/// Every block's attention keys and values, [batch, heads, steps, head_dim], for the steps run so
/// far: [`Lblm::step`] adds a step at the cost of one step's attention instead of rerunning the
/// window (a rollout of a model whose context holds the whole cell).
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    keys: Vec<Tensor<B, 4>>,
    values: Vec<Tensor<B, 4>>,
}

/// The battery model.
#[derive(Module, Debug)]
pub struct Lblm<B: Backend> {
    /// channels → d_model: each step's normalised channels into the residual stream.
    pub embed: Linear<B>,
    /// Learned positions [context, d_model] (with `Positional::Learned`).
    pub positions: Option<Param<Tensor<B, 2>>>,
    /// Rotary tables (with `Positional::Rotary`); not trained, rebuilt from the config.
    pub rotary: Option<Rotary<B>>,
    pub blocks: Vec<Block<B>>,
    /// The norm before the head (absent in models built without one).
    pub ln_final: Option<Norm<B>>,
    /// d_model → 1: the scaled ΔV (or V_{t+1}, see `input_skip`).
    pub head: Linear<B>,
    /// With `HeadTarget::NextVoltage`: weights [channels] of a direct path from the normalised
    /// inputs to the output, −σ_V / target_scale on the voltage channel and 0 elsewhere, so that
    /// head(…) + x·w = (V_{t+1} − V_t) / target_scale (the head's bias holds the means).
    pub input_skip: Option<Param<Tensor<B, 1>>>,
    pub context: usize,
}

impl<B: Backend> Lblm<B> {
    /// A freshly initialised model; the same `seed` gives the same weights on every backend.
    pub fn new(cfg: &ModelConfig, seed: u64, device: &B::Device) -> Self {
        let mut init = Init { rng: ChaCha8Rng::seed_from_u64(seed) };
        let d = cfg.d_model;
        let embed = init.default_linear(cfg.channels.len(), d, device);
        let blocks = (0..cfg.layers).map(|_| Block::new(cfg, &mut init, device)).collect();
        let (positions, rotary) = match cfg.positional {
            Positional::Learned => (Some(Param::from_tensor(init.normal_matrix(cfg.context, d, 0.02, device))), None),
            Positional::Rotary => (None, Some(Rotary::new(cfg.context, cfg.head_dim(), cfg.rope_theta, device))),
            Positional::None => (None, None),
        };
        Lblm {
            embed,
            positions,
            rotary,
            blocks,
            ln_final: cfg.final_norm.then(|| Norm::new(cfg, device)),
            // Small head: the untrained model starts near the persistence baseline (ΔV ≈ 0).
            head: init.linear(d, 1, 0.01, device),
            input_skip: (cfg.head == HeadTarget::NextVoltage)
                .then(|| Param::from_tensor(Tensor::zeros([cfg.channels.len()], device))),
            context: cfg.context,
        }
    }

    pub fn layers(&self) -> usize {
        self.blocks.len()
    }

    /// Width of the residual stream.
    pub fn d_model(&self) -> usize {
        self.embed.weight.dims()[1]
    }

    /// Input channels per step.
    pub fn channels(&self) -> usize {
        self.embed.weight.dims()[0]
    }

    /// Inputs [batch, seq, channels] (normalised, seq ≤ context) → scaled ΔV [batch, seq].
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        self.run(x, None, false).0
    }

    /// The prediction [batch, seq] and every block's activations.
    pub fn forward_hooked(&self, x: Tensor<B, 3>) -> (Tensor<B, 2>, Vec<LayerActivations<B>>) {
        self.run(x, None, true)
    }

    /// Runs with the MLP outputs supplied by `replacement` (computed from the replacement
    /// model's own `resid_mid`); returns the prediction [batch, seq] and the activations.
    pub fn forward_with_replacement(
        &self,
        x: Tensor<B, 3>,
        replacement: &dyn MlpReplacement<B>,
    ) -> (Tensor<B, 2>, Vec<LayerActivations<B>>) {
        self.run(x, Some(replacement), true)
    }

    /// Inputs [batch, seq, channels] → resid_pre of block 0 [batch, seq, d_model].
    pub fn embed(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.embed_from(x, 0)
    }

    /// [`Lblm::embed`] for steps at positions `first` … `first` + seq − 1.
    fn embed_from(&self, x: Tensor<B, 3>, first: usize) -> Tensor<B, 3> {
        let [_, seq, channels] = x.dims();
        assert_eq!(channels, self.channels(), "the model reads {} channels per step, got {channels}", self.channels());
        assert!(first + seq <= self.context, "a window of {} steps is longer than the model's context of {}", first + seq, self.context);
        let h = self.embed.forward(x);
        match &self.positions {
            Some(p) => h + p.val().narrow(0, first, seq).unsqueeze::<3>(),
            None => h,
        }
    }

    /// [`Lblm::forward`] (inference), keeping every block's keys and values for [`Lblm::step`].
    pub fn prefill(&self, x: Tensor<B, 3>) -> (Tensor<B, 2>, KvCache<B>) {
        let skip = self.input_skip_of(&x);
        let mut resid = self.embed(x);
        let (mut keys, mut values) = (Vec::with_capacity(self.blocks.len()), Vec::with_capacity(self.blocks.len()));
        for block in &self.blocks {
            let (post, k, v) = block.forward_keeping(resid, self.rotary.as_ref());
            resid = post;
            keys.push(k);
            values.push(v);
        }
        (self.head_out(resid, skip), KvCache { keys, values })
    }

    /// The next steps x [batch, seq, channels] after those in `cache` (which they join): the
    /// predictions [batch, seq] that [`Lblm::forward`] would make there on the whole window. For
    /// one step at a time: the steps attend to each other without a causal mask.
    pub fn step(&self, x: Tensor<B, 3>, cache: &mut KvCache<B>) -> Tensor<B, 2> {
        let skip = self.input_skip_of(&x);
        let mut resid = self.embed_from(x, cache.keys[0].dims()[2]);
        for (block, (keys, values)) in self.blocks.iter().zip(cache.keys.iter_mut().zip(cache.values.iter_mut())) {
            resid = block.step(resid, self.rotary.as_ref(), keys, values);
        }
        self.head_out(resid, skip)
    }

    /// A next-voltage head's direct path from the inputs, [batch, seq].
    fn input_skip_of(&self, x: &Tensor<B, 3>) -> Option<Tensor<B, 2>> {
        // [batch, seq, channels]·[channels, 1] → [batch, seq]
        self.input_skip.as_ref().map(|w| x.clone().matmul(w.val().unsqueeze_dim::<2>(1).unsqueeze::<3>()).squeeze_dim::<2>(2))
    }

    /// The head's output with the direct path added.
    fn head_out(&self, resid: Tensor<B, 3>, skip: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
        let out = self.unembed(resid);
        match skip {
            Some(skip) => out + skip,
            None => out,
        }
    }

    /// The residual stream after the last block [batch, seq, d_model] → the head's output
    /// [batch, seq] (the scaled ΔV, except for `input_skip`'s share).
    pub fn unembed(&self, resid: Tensor<B, 3>) -> Tensor<B, 2> {
        let resid = match &self.ln_final {
            Some(norm) => norm.forward(resid),
            None => resid,
        };
        self.head.forward(resid).squeeze_dim::<2>(2)
    }

    /// `keep`: return the activations (else they are dropped block by block, which lets burn
    /// reuse their buffers).
    fn run(
        &self,
        x: Tensor<B, 3>,
        replacement: Option<&dyn MlpReplacement<B>>,
        keep: bool,
    ) -> (Tensor<B, 2>, Vec<LayerActivations<B>>) {
        let skip = self.input_skip_of(&x);
        let mut resid = self.embed(x);
        let mut acts = Vec::with_capacity(if keep { self.blocks.len() } else { 0 });
        for (layer, block) in self.blocks.iter().enumerate() {
            let a = block.forward(resid, self.rotary.as_ref(), layer, replacement);
            resid = a.resid_post.clone();
            if keep {
                acts.push(a);
            }
        }
        (self.head_out(resid, skip), acts)
    }
}
