//! Attribution through the frozen replacement model and attribution graphs, on a tiny random model
//! and transcoder: the frozen model reproduces the real one, contributions add up to each node's
//! value, the direct part is activation × pullback, and the graph prunes and exports as
//! circuit-tracer's front end reads it; also for an imported-style model that reads other input
//! channels and predicts the next voltage. Contributions are carried back by paths of head choices
//! or by sweeps, which agree; a deep model is swept.

mod common;

use std::collections::BTreeMap;

use burn::backend::Flex;
use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use voltlens::circuits::{attribute, attribution_graph, graph_of, pullback, Backward, write_graph, FrozenReplacement, GraphFile, GraphOptions, GraphWindow, NodeKind, Target};
use voltlens::model::{HeadTarget, Lblm, ModelConfig, Positional, CHANNELS, N_CHANNELS};
use voltlens::transcoder::{Transcoder, TranscoderConfig, Variant};

type B = Flex;

const LAYERS: usize = 3;
const D: usize = 16;
const SEQ: usize = 12;
const FEATURES: usize = 32;

/// A deterministic value in (−1, 1) for index i and a salt.
fn noise(i: usize, salt: usize) -> f32 {
    ((i * 7919 + salt * 104_729) as f32 * 0.618_034).sin()
}

fn param<const N: usize>(values: Vec<f32>, shape: [usize; N]) -> Param<Tensor<B, N>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), &Default::default()))
}

/// A random model whose biases, norm gains and norm offsets are all non-zero, so that the
/// constants the attribution leaves out are exercised too.
fn model(positional: Positional) -> Lblm<B> {
    model_reading(positional, &CHANNELS, HeadTarget::DeltaV)
}

/// [`model`] with other input channels and head; a next-voltage head gets a non-zero direct
/// path from the inputs to the output.
fn model_reading(positional: Positional, channels: &[&str], head: HeadTarget) -> Lblm<B> {
    model_of(LAYERS, 2, positional, channels, head)
}

/// [`model_reading`] of any depth and number of heads.
fn model_of(layers: usize, heads: usize, positional: Positional, channels: &[&str], head: HeadTarget) -> Lblm<B> {
    let channels = channels.iter().map(|c| c.to_string()).collect();
    let cfg = ModelConfig { layers, d_model: D, heads, d_mlp: 32, context: 16, positional, head, channels, ..ModelConfig::default() };
    let mut m = Lblm::<B>::new(&cfg, 3, &Default::default());
    let vec = |n: usize, salt: usize, base: f32, scale: f32| (0..n).map(|i| base + scale * noise(i, salt)).collect::<Vec<_>>();
    m.embed.bias = Some(param(vec(D, 1, 0.0, 0.3), [D]));
    for (l, block) in m.blocks.iter_mut().enumerate() {
        block.attn.qkv.bias = Some(param(vec(3 * D, 10 + l, 0.0, 0.2), [3 * D]));
        block.attn.out.bias = Some(param(vec(D, 20 + l, 0.0, 0.1), [D]));
        block.ln_attn.gamma = param(vec(D, 30 + l, 1.0, 0.3), [D]);
        block.ln_attn.beta = Some(param(vec(D, 40 + l, 0.0, 0.2), [D]));
    }
    let ln_final = m.ln_final.as_mut().expect("a final norm");
    ln_final.gamma = param(vec(D, 50, 1.0, 0.3), [D]);
    ln_final.beta = Some(param(vec(D, 51, 0.0, 0.2), [D]));
    m.head.weight = param(vec(D, 52, 0.0, 0.5), [D, 1]);
    m.head.bias = Some(param(vec![0.05], [1]));
    if let Some(skip) = &mut m.input_skip {
        let width = m.embed.weight.dims()[0];
        *skip = param(vec(width, 53, 0.0, 0.4), [width]);
    }
    m
}

/// Channels of a model trained elsewhere: raw current and time step, voltage, SOC.
const OTHER_CHANNELS: [&str; 4] = ["current_a", "dt_next_s", "voltage", "soc"];

fn transcoder(variant: Variant, skip: bool) -> Transcoder {
    transcoder_of(LAYERS, variant, skip)
}

fn transcoder_of(layers: usize, variant: Variant, skip: bool) -> Transcoder {
    let cfg = TranscoderConfig { variant, features: FEATURES, skip, ..TranscoderConfig::default() };
    let mut tc = Transcoder::zeros(&cfg, layers, D);
    tc.w_enc.iter_mut().enumerate().for_each(|(i, w)| *w = 0.6 * noise(i, 60));
    tc.b_enc.iter_mut().enumerate().for_each(|(i, b)| *b = -0.4 + 0.3 * noise(i, 61));
    for (e, dec) in tc.w_dec.iter_mut().enumerate() {
        dec.iter_mut().enumerate().for_each(|(i, w)| *w = 0.2 * noise(i, 62 + e));
    }
    tc.b_dec.iter_mut().enumerate().for_each(|(i, b)| *b = 0.05 * noise(i, 70));
    if let Some(w) = &mut tc.w_skip {
        w.iter_mut().enumerate().for_each(|(i, v)| *v = 0.05 * noise(i, 71));
    }
    tc
}

fn inputs() -> Vec<f32> {
    inputs_of(N_CHANNELS)
}

fn inputs_of(width: usize) -> Vec<f32> {
    (0..SEQ * width).map(|i| 1.5 * noise(i, 80)).collect()
}

fn close(a: f32, b: f32, scale: f32) -> bool {
    (a - b).abs() <= 1e-4 * (1.0 + scale)
}

/// The set-ups, each with its inputs: CLT with learned positions and a skip path, PLT and CLT
/// with rotary, and a CLT on a model reading four other channels with a next-voltage head.
fn setups() -> Vec<(Lblm<B>, Transcoder, Vec<f32>)> {
    vec![
        (model(Positional::Learned), transcoder(Variant::Clt, true), inputs()),
        (model(Positional::Rotary), transcoder(Variant::Plt, false), inputs()),
        (model(Positional::Rotary), transcoder(Variant::Clt, false), inputs()),
        (model_reading(Positional::Rotary, &OTHER_CHANNELS, HeadTarget::NextVoltage), transcoder(Variant::Clt, false), inputs_of(OTHER_CHANNELS.len())),
    ]
}

#[test]
fn frozen_model_reproduces_the_real_one() {
    for (m, tc, x) in setups() {
        let frozen = FrozenReplacement::new(&m, &tc, &x).unwrap();
        let run = frozen.run(false);
        for l in 0..LAYERS {
            for t in 0..SEQ {
                for k in 0..D {
                    let real = frozen.resid_mid[(t * LAYERS + l) * D + k];
                    assert!(close(run.resid_mid[l][t * D + k], real, real.abs()), "resid_mid L{l} t{t}: {} vs {real}", run.resid_mid[l][t * D + k]);
                }
            }
        }
        for (a, b) in run.output.iter().zip(&frozen.prediction) {
            assert!(close(*a, *b, b.abs()), "output {a} vs {b}");
        }
    }
}

#[test]
fn contributions_add_up_to_every_node_value() {
    for ((m, tc, x), backward) in setups().into_iter().flat_map(|s| [(s.clone(), Backward::Paths), (s, Backward::Sweep)]) {
        let frozen = FrozenReplacement::new(&m, &tc, &x).unwrap().with_backward(backward);
        assert!(frozen.features.len() > 3 * SEQ, "too few active features to test: {}", frozen.features.len());
        let mut targets: Vec<Target> = (0..frozen.features.len()).map(|i| frozen.feature_target(i)).collect();
        targets.push(Target::Output { pos: SEQ - 1 });
        // An inactive feature's pre-activation adds up just as well.
        targets.push(Target::Feature { layer: 2, pos: 5, feature: 0 });
        for target in targets {
            let a = attribute(&frozen, target).unwrap();
            let scale: f32 = a.contributions.iter().map(|c| c.weight.abs()).sum::<f32>() + a.constant.abs();
            assert!(close(a.total(), a.value, scale), "{}: constant + contributions = {} but the value is {}", a.target, a.total(), a.value);
            // Nothing from later steps, nor from the target's own or later layers.
            for c in &a.contributions {
                match (c.node, target) {
                    (NodeKind::Feature { layer, pos, .. }, Target::Feature { layer: m, pos: t, .. }) => assert!(layer < m && pos <= t),
                    (NodeKind::Error { layer, pos }, Target::Feature { layer: m, pos: t, .. }) => assert!(layer < m && pos <= t),
                    (NodeKind::Input { pos, .. }, _) => assert!(pos <= target.pos()),
                    _ => {}
                }
            }
            // The errors matter: without them the sum is off.
            let errors: f32 = a.contributions.iter().filter(|c| matches!(c.node, NodeKind::Error { .. })).map(|c| c.weight).sum();
            if let Target::Output { .. } = target {
                assert!(errors.abs() > 1e-3, "error nodes carry nothing into the output");
            }
        }
    }
}

#[test]
fn paths_and_sweeps_carry_the_same_contributions_into_the_same_graph() {
    for (m, tc, x) in setups() {
        let frozen = FrozenReplacement::new(&m, &tc, &x).unwrap();
        assert_eq!(frozen.backward(), Backward::Paths, "three blocks of two heads: 27 paths");
        let swept = FrozenReplacement::new(&m, &tc, &x).unwrap().with_backward(Backward::Sweep);
        let mut targets: Vec<Target> = (0..frozen.features.len()).step_by(7).map(|i| frozen.feature_target(i)).collect();
        targets.push(Target::Output { pos: SEQ - 1 });
        for target in targets {
            let (a, b) = (attribute(&frozen, target).unwrap(), attribute(&swept, target).unwrap());
            assert_eq!(a.contributions.len(), b.contributions.len());
            let scale: f32 = a.contributions.iter().map(|c| c.weight.abs()).sum();
            for c in &a.contributions {
                let other = b.contributions.iter().find(|o| o.node == c.node).expect("the same nodes");
                assert!(close(c.weight, other.weight, scale) && c.direct == other.direct, "{}, {:?}: {c:?} vs {other:?}", a.target, c.node);
            }
        }
        let window = GraphWindow { inputs: x.clone(), raw: x, ..window() };
        let options = GraphOptions { node_threshold: 0.9, edge_threshold: 0.95 };
        let (a, b) = (graph_of(&frozen, &window, &options).unwrap(), graph_of(&swept, &window, &options).unwrap());
        let nodes = |g: &voltlens::circuits::Graph| g.nodes.iter().map(|n| n.node).collect::<Vec<_>>();
        assert_eq!(nodes(&a), nodes(&b), "kept nodes");
        assert_eq!(a.edges.len(), b.edges.len(), "kept edges");
        for (e, f) in a.edges.iter().zip(&b.edges) {
            assert!((e.source, e.target) == (f.source, f.target) && close(e.weight, f.weight, e.weight.abs()), "{e:?} vs {f:?}");
        }
    }
}

#[test]
fn a_deep_model_is_swept_and_its_contributions_add_up() {
    // Twelve blocks of four heads: 5^12 paths of head choices, which the expansion cannot hold.
    let m = model_of(12, 4, Positional::Rotary, &CHANNELS, HeadTarget::DeltaV);
    let tc = transcoder_of(12, Variant::Clt, true);
    let frozen = FrozenReplacement::new(&m, &tc, &inputs()).unwrap();
    assert_eq!(frozen.backward(), Backward::Sweep);
    let run = frozen.run(false);
    for (a, b) in run.output.iter().zip(&frozen.prediction) {
        assert!(close(*a, *b, b.abs()), "output {a} vs {b}");
    }
    let deep: Vec<usize> = (0..frozen.features.len()).filter(|&i| frozen.features[i].layer >= 9).step_by(5).collect();
    assert!(deep.len() >= 3, "too few deep features fire: {}", deep.len());
    let targets = deep.iter().map(|&i| frozen.feature_target(i)).chain([Target::Output { pos: SEQ - 1 }]);
    for target in targets {
        let a = attribute(&frozen, target).unwrap();
        let scale: f32 = a.contributions.iter().map(|c| c.weight.abs()).sum::<f32>() + a.constant.abs();
        assert!(close(a.total(), a.value, scale), "{}: constant + contributions = {} but the value is {}", a.target, a.total(), a.value);
        assert!(a.contributions.iter().any(|c| matches!(c.node, NodeKind::Feature { layer: 0, .. }) && c.weight != 0.0), "{}: nothing from layer 0", a.target);
    }
    let graph = attribution_graph(&m, &tc, &window(), &GraphOptions::default()).unwrap();
    assert!(graph.nodes.iter().any(|n| matches!(n.node, NodeKind::Output { .. })) && !graph.edges.is_empty());
}

#[test]
fn direct_part_is_activation_times_pullback() {
    let m = model(Positional::Rotary);
    let tc = transcoder(Variant::Clt, false);
    let frozen = FrozenReplacement::new(&m, &tc, &inputs()).unwrap();
    let target_node = (0..frozen.features.len()).rev().find(|&i| frozen.features[i].layer == 2).expect("a layer-2 feature fires");
    let target = frozen.feature_target(target_node);
    let Target::Feature { layer, pos, feature } = target else { unreachable!() };
    let weights: BTreeMap<(usize, usize), f32> =
        pullback(&tc, layer, feature, usize::MAX).unwrap().into_iter().map(|r| ((r.layer, r.feature), r.weight)).collect();
    let a = attribute(&frozen, target).unwrap();
    let mut checked = 0;
    for c in &a.contributions {
        if let NodeKind::Feature { layer: l, pos: p, feature: f } = c.node {
            if p == pos {
                let expected = c.value * weights[&(l, f)];
                assert!(close(c.direct, expected, expected.abs()), "L{l}_F{f}: direct {} vs z·pullback {expected}", c.direct);
                checked += 1;
            } else {
                assert_eq!(c.direct, 0.0);
            }
        }
    }
    assert!(checked > 0, "no earlier feature fires at the target's step");
}

#[test]
fn mlsae_is_refused() {
    let m = model(Positional::Rotary);
    let cfg = TranscoderConfig {
        variant: Variant::Mlsae,
        features: FEATURES,
        activation: voltlens::transcoder::Activation::TopK { k: 4 },
        ..TranscoderConfig::default()
    };
    let tc = Transcoder::zeros(&cfg, LAYERS, D);
    let err = FrozenReplacement::new(&m, &tc, &inputs()).err().expect("refused").to_string();
    assert!(err.contains("MLSAE") && err.contains("CLT or PLT"), "{err}");
}

fn window() -> GraphWindow {
    window_of(&CHANNELS)
}

fn window_of(channels: &[&str]) -> GraphWindow {
    let x = inputs_of(channels.len());
    GraphWindow {
        cell_id: "cell/1".into(),
        first_step: 100,
        channels: channels.iter().map(|c| c.to_string()).collect(),
        inputs: x.clone(),
        raw: x,
        voltage: (0..SEQ).map(|t| 3.6 + 0.01 * t as f32).collect(),
        c_rate: vec![-0.5; SEQ],
        target_scale: 0.01,
    }
}

#[test]
fn unpruned_graph_keeps_the_scores_and_pruning_keeps_the_output() {
    let m = model(Positional::Rotary);
    let tc = transcoder(Variant::Clt, false);
    let everything = attribution_graph(&m, &tc, &window(), &GraphOptions { node_threshold: 1.0, edge_threshold: 1.0 }).unwrap();
    let s = everything.scores;
    // Influence, recomputed from the kept edges: each target passes its influence (1 for the
    // output) to its sources in proportion to |weight| over its row; then the replacement score is
    // the inputs' share of what reaches inputs and errors.
    let n = everything.nodes.len();
    let output = everything.nodes.iter().position(|n| matches!(n.node, NodeKind::Output { .. })).unwrap();
    let mut row_sum = vec![0.0f64; n];
    everything.edges.iter().for_each(|e| row_sum[e.target] += e.weight.abs() as f64);
    let mut influence = vec![0.0f64; n];
    for _ in 0..=2 * LAYERS + 2 {
        let mut next = vec![0.0f64; n];
        for e in &everything.edges {
            let carried = influence[e.target] + if e.target == output { 1.0 } else { 0.0 };
            next[e.source] += e.weight.abs() as f64 / row_sum[e.target] * carried;
        }
        influence = next;
    }
    for (node, &expected) in everything.nodes.iter().zip(&influence) {
        assert!((node.influence as f64 - expected).abs() < 1e-4 * (1.0 + expected), "{:?}: influence {} vs {expected}", node.node, node.influence);
    }
    let share = |kind: fn(&NodeKind) -> bool| everything.nodes.iter().zip(&influence).filter(|(n, _)| kind(&n.node)).map(|(_, i)| i).sum::<f64>();
    let (from_inputs, from_errors) = (share(|k| matches!(k, NodeKind::Input { .. })), share(|k| matches!(k, NodeKind::Error { .. })));
    assert!(from_inputs > 0.0 && from_errors > 0.0, "{from_inputs} {from_errors}");
    let expected = from_inputs / (from_inputs + from_errors);
    assert!((s.replacement as f64 - expected).abs() < 1e-4, "{s:?} vs {expected}");
    assert!((0.0..=1.0).contains(&s.completeness), "{s:?}");
    assert!((s.replacement - s.pruned_replacement).abs() < 1e-4 && (s.completeness - s.pruned_completeness).abs() < 1e-4, "{s:?}");

    let pruned = attribution_graph(&m, &tc, &window(), &GraphOptions { node_threshold: 0.5, edge_threshold: 0.8 }).unwrap();
    assert!(pruned.nodes.len() < everything.nodes.len(), "{} vs {}", pruned.nodes.len(), everything.nodes.len());
    assert!(pruned.nodes.iter().any(|n| n.node == NodeKind::Output { pos: SEQ - 1 }), "the output was pruned");
    let output = pruned.nodes.iter().position(|n| matches!(n.node, NodeKind::Output { .. })).unwrap();
    assert!(pruned.edges.iter().any(|e| e.target == output), "no edge into the output");
    // Every kept feature has an edge in and out, every kept edge joins kept nodes.
    for (i, n) in pruned.nodes.iter().enumerate() {
        if let NodeKind::Feature { .. } = n.node {
            assert!(pruned.edges.iter().any(|e| e.source == i) && pruned.edges.iter().any(|e| e.target == i));
        }
    }
    // The edges into the output are the output's attributions.
    let frozen = FrozenReplacement::new(&m, &tc, &inputs()).unwrap();
    let row = attribute(&frozen, Target::Output { pos: SEQ - 1 }).unwrap();
    for e in pruned.edges.iter().filter(|e| e.target == output) {
        let source = pruned.nodes[e.source].node;
        let expected = row.contributions.iter().find(|c| c.node == source).unwrap().weight;
        assert_eq!(e.weight, expected);
    }
}

#[test]
fn graph_json_round_trips_with_circuit_tracer_field_names() {
    let m = model(Positional::Learned);
    let tc = transcoder(Variant::Clt, true);
    let graph = attribution_graph(&m, &tc, &window(), &GraphOptions::default()).unwrap();
    let feature = graph.nodes.iter().find_map(|n| match n.node {
        NodeKind::Feature { layer, feature, .. } => Some((layer, feature)),
        _ => None,
    });
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("circuits_graph");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let labels = dir.join("labels.json");
    let (layer, index) = feature.expect("a feature survives pruning");
    let entry = serde_json::json!([{ "layer": layer, "feature": index, "accepted": true, "label": "fires in CV holds", "density": 0.1 }]);
    std::fs::write(&labels, entry.to_string()).unwrap();

    let files = write_graph(&graph, &dir, Some(&labels)).unwrap();
    common::assert_drawn(&files.png, None, 8);
    let text = std::fs::read_to_string(&files.json).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in ["metadata", "qParams", "nodes", "links"] {
        assert!(value.get(key).is_some(), "no {key}");
    }
    for key in ["slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold", "schema_version"] {
        assert!(value["metadata"].get(key).is_some(), "no metadata.{key}");
    }
    for key in ["pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"] {
        assert!(value["qParams"].get(key).is_some(), "no qParams.{key}");
    }
    let node = &value["nodes"][0];
    for key in ["node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp", "influence", "activation", "is_target_logit", "token_prob"] {
        assert!(node.get(key).is_some(), "no node.{key}");
    }
    assert!(node["layer"].is_string(), "circuit-tracer layers are strings");
    for key in ["source", "target", "weight"] {
        assert!(value["links"][0].get(key).is_some(), "no link.{key}");
    }
    let file: GraphFile = serde_json::from_str(&text).unwrap();
    let again: serde_json::Value = serde_json::from_str(&serde_json::to_string(&file).unwrap()).unwrap();
    assert!(again == value, "not the same after a round trip");
    assert_eq!(file.metadata.prompt_tokens.len(), SEQ);
    assert_eq!(file.nodes.len(), graph.nodes.len());
    assert_eq!(file.links.len(), graph.edges.len());
    let ids: std::collections::BTreeSet<&str> = file.nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert!(file.links.iter().all(|l| ids.contains(l.source.as_str()) && ids.contains(l.target.as_str())));
    let output: Vec<_> = file.nodes.iter().filter(|n| n.is_target_logit).collect();
    assert_eq!(output.len(), 1);
    assert_eq!((output[0].feature_type.as_str(), output[0].layer.as_str()), ("logit", "4"));
    // circuit-tracer's front end (util-cg.js formatData) reads the output's label as
    // `Output "TOKEN" (p=P)` and throws without the `(p=`; scripts/interop_graph_frontend.js runs it.
    let p: f64 = output[0].clerp.split("(p=").nth(1).and_then(|r| r.split(')').next()).unwrap().parse().unwrap();
    assert_eq!(p, 1.0);
    assert!(output[0].shown_label().starts_with("V next ") && !output[0].shown_label().contains('"'), "{}", output[0].clerp);
    // It also merges nodes that share "{layer}_{feature}_{ctx_idx}" into one row: no two may.
    let rows: std::collections::BTreeSet<String> = file.nodes.iter().map(|n| format!("{}_{}_{}", n.layer, n.feature, n.ctx_idx)).collect();
    assert_eq!(rows.len(), file.nodes.len(), "two nodes share a front-end feature row");
    let labelled = file.nodes.iter().find(|n| n.node_id.starts_with(&format!("{layer}_{index}_"))).unwrap();
    assert_eq!(labelled.clerp, "fires in CV holds");
    let index_file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&files.metadata).unwrap()).unwrap();
    assert_eq!(index_file["graphs"][0]["slug"], file.metadata.slug);
}

#[test]
fn graphs_are_the_same_for_any_thread_count() {
    for backward in [Backward::Paths, Backward::Sweep] {
        let graph_json = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let (m, tc) = (model(Positional::Learned), transcoder(Variant::Clt, true));
                let frozen = FrozenReplacement::new(&m, &tc, &inputs()).unwrap().with_backward(backward);
                let graph = graph_of(&frozen, &window(), &GraphOptions { node_threshold: 0.9, edge_threshold: 0.95 }).unwrap();
                serde_json::to_string(&graph.to_file(&BTreeMap::new())).unwrap()
            })
        };
        let one = graph_json(1);
        for threads in [2, 3, 8] {
            assert!(graph_json(threads) == one, "the graph changes with {threads} threads ({backward:?})");
        }
    }
}

#[test]
fn a_model_reading_other_channels_gets_a_graph_with_its_channel_names() {
    let m = model_reading(Positional::Rotary, &OTHER_CHANNELS, HeadTarget::NextVoltage);
    let tc = transcoder(Variant::Clt, false);
    let graph = attribution_graph(&m, &tc, &window_of(&OTHER_CHANNELS), &GraphOptions { node_threshold: 1.0, edge_threshold: 1.0 }).unwrap();
    let output = graph.nodes.iter().position(|n| matches!(n.node, NodeKind::Output { .. })).unwrap();
    // The next-voltage head reads the last step's inputs directly: the voltage input there has an
    // edge into the output, named and labelled by the model's own channel list.
    let voltage_now = NodeKind::Input { pos: SEQ - 1, channel: 2 };
    let v = graph.nodes.iter().position(|n| n.node == voltage_now).expect("the last voltage input is kept");
    assert!(graph.edges.iter().any(|e| (e.source, e.target) == (v, output)), "no edge from the last voltage input into the output");
    assert_eq!(voltlens::circuits::node_name(voltage_now, graph.first_step, &graph.channels), format!("voltage @{}", 100 + SEQ - 1));
    let file = graph.to_file(&BTreeMap::new());
    let soc = file.nodes.iter().find(|n| n.node_id.starts_with("E_3_")).expect("a SOC input node");
    assert!(soc.clerp.starts_with("SOC = "), "{}", soc.clerp);
    assert_eq!(file.metadata.prompt_tokens[0], "3.600V -0.50C");
}
