//! `voltlens bench graph`: time and peak memory of an attribution graph on a model of the dev
//! size (or deeper) with random weights and a random CLT of realistic sparsity, over window
//! lengths, feature counts and depths, carried back by paths or sweeps. Prints figures, asserts
//! nothing.

use std::time::Instant;

use burn::backend::Flex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::attribution::{Backward, FrozenReplacement};
use super::graph::{graph_of, GraphOptions, GraphWindow};
use crate::model::{Lblm, ModelConfig, N_CHANNELS};
use crate::transcoder::{Transcoder, TranscoderConfig, Variant};
use crate::Result;

/// One timed graph.
#[derive(Debug, Clone, Serialize)]
pub struct GraphBench {
    pub layers: usize,
    pub backward: Backward,
    pub window: usize,
    pub features: usize,
    /// Mean active features per layer and step.
    pub l0: f64,
    pub nodes: usize,
    pub kept_nodes: usize,
    pub kept_edges: usize,
    pub seconds: f64,
    /// Peak resident memory of the process so far (VmHWM), MB.
    pub peak_rss_mb: f64,
}

/// The dev model's shape with `layers` blocks and a context of `context` steps.
pub fn bench_model_config(layers: usize, context: usize) -> ModelConfig {
    ModelConfig { layers, context, ..ModelConfig::dev() }
}

/// A random CLT for `model` with `features` per layer whose encoder biases are set so that about
/// `l0` features fire per layer and step on `inputs` (a quantile of the pre-activations there).
pub fn random_clt(model: &Lblm<Flex>, inputs: &[f32], features: usize, l0: usize, seed: u64) -> Transcoder {
    let layers = model.layers();
    let d = model.d_model();
    let cfg = TranscoderConfig { variant: Variant::Clt, features, ..TranscoderConfig::default() };
    let mut tc = Transcoder::zeros(&cfg, layers, d);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let scale = 1.0 / (d as f32).sqrt();
    tc.w_enc.iter_mut().for_each(|w| *w = scale * rng.random_range(-1.7f32..1.7));
    for dec in &mut tc.w_dec {
        dec.iter_mut().for_each(|w| *w = 0.1 * scale * rng.random_range(-1.7f32..1.7));
    }
    let seq = inputs.len() / N_CHANNELS;
    let x = burn::tensor::Tensor::<Flex, 3>::from_data(burn::tensor::TensorData::new(inputs.to_vec(), [1, seq, N_CHANNELS]), &Default::default());
    let (_, acts) = model.forward_hooked(x);
    for (l, a) in acts.iter().enumerate() {
        let resid: Vec<f32> = a.resid_mid.clone().into_data().convert::<f32>().into_vec().expect("f32");
        let w = tc.w_enc_of(l).to_vec(); // [d, F]
        let mut pre = Vec::with_capacity(seq * features);
        for row in resid.chunks(d) {
            pre.extend((0..features).map(|f| (0..d).map(|k| row[k] * w[k * features + f]).sum::<f32>()));
        }
        // One bias for the layer: the pre-activation exceeded by l0 of the F features on average.
        let keep = (seq * l0).min(pre.len() - 1);
        pre.select_nth_unstable_by(keep, |a, b| b.total_cmp(a));
        let cut = pre[keep];
        tc.b_enc[l * features..(l + 1) * features].iter_mut().for_each(|b| *b = -cut);
    }
    tc
}

/// Times one graph over a window of `window` random steps of a model of `layers` blocks with a
/// random CLT of `features`, carried back as `backward` says (by depth when `None`).
pub fn bench_graph(layers: usize, window: usize, features: usize, l0: usize, backward: Option<Backward>) -> Result<GraphBench> {
    if layers == 0 || window == 0 || features == 0 {
        return Err(crate::Error::Config(format!("bench graph: layers ({layers}), window ({window}) and features ({features}) must be at least 1")));
    }
    let cfg = bench_model_config(layers, window.max(2));
    let model = Lblm::<Flex>::new(&cfg, 0, &Default::default());
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let inputs: Vec<f32> = (0..window * N_CHANNELS).map(|_| rng.random_range(-1.7f32..1.7)).collect();
    let tc = random_clt(&model, &inputs, features, l0, 2);
    let column = |c: usize| inputs.iter().skip(c).step_by(N_CHANNELS).copied().collect();
    let graph_window = GraphWindow {
        cell_id: "bench".into(),
        first_step: 0,
        channels: cfg.channels.clone(),
        voltage: column(0),
        c_rate: column(1),
        raw: inputs.clone(),
        inputs,
        target_scale: 1.0,
    };
    let t0 = Instant::now();
    let mut frozen = FrozenReplacement::new(&model, &tc, &graph_window.inputs)?;
    if let Some(b) = backward {
        frozen = frozen.with_backward(b);
    }
    let graph = graph_of(&frozen, &graph_window, &GraphOptions::default())?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(GraphBench {
        layers,
        backward: frozen.backward(),
        window,
        features,
        l0: graph.active_features as f64 / (window * cfg.layers) as f64,
        nodes: graph.total_nodes,
        kept_nodes: graph.nodes.len(),
        kept_edges: graph.edges.len(),
        seconds,
        peak_rss_mb: crate::bench::peak_rss_mb().unwrap_or(f64::NAN),
    })
}

/// The rows as a text table.
pub fn format_graph_bench(rows: &[GraphBench]) -> String {
    let mut out = format!(
        "{:>6} {:>8} {:>6} {:>8} {:>6} {:>7} {:>6} {:>7} {:>8} {:>9}\n",
        "layers", "backward", "window", "features", "L0", "nodes", "kept", "edges", "seconds", "peak MB"
    );
    for r in rows {
        out.push_str(&format!(
            "{:>6} {:>8} {:>6} {:>8} {:>6.1} {:>7} {:>6} {:>7} {:>8.2} {:>9.0}\n",
            r.layers, format!("{:?}", r.backward).to_lowercase(), r.window, r.features, r.l0, r.nodes, r.kept_nodes, r.kept_edges, r.seconds, r.peak_rss_mb
        ));
    }
    out
}
