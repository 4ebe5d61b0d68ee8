//! MLSAE analyses on a tiny random model and a hand-made MLSAE: a feature that reads only layer 1
//! is banded there, a decoder direction is perfectly aligned with itself at k = 0, and the
//! finite-difference JVP agrees with burn's reverse-mode autodiff.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use voltlens::circuits::mlsae::{align_feature, banding_table, check_mlsae, jvp};
use voltlens::model::{Lblm, ModelConfig, N_CHANNELS};
use voltlens::transcoder::{Activation, Transcoder, TranscoderConfig, Variant};

const LAYERS: usize = 3;
const D_MODEL: usize = 16;
const FEATURES: usize = 8;
const SEQ: usize = 6;
/// The feature whose encoder reads layer 1 only.
const LAYER1_READER: usize = 3;

/// A deterministic value in (−1, 1) for index i and a salt: weights without a random generator.
fn noise(i: usize, salt: usize) -> f32 {
    ((i * 7919 + salt * 104_729) as f32 * 0.618_034).sin()
}

fn config() -> ModelConfig {
    ModelConfig { layers: LAYERS, d_model: D_MODEL, heads: 2, d_mlp: 32, context: SEQ, dropout: 0.0, ..ModelConfig::default() }
}

fn model<B: Backend>() -> Lblm<B> {
    Lblm::new(&config(), 11, &Default::default())
}

fn inputs<B: Backend>(n: usize) -> Tensor<B, 3> {
    let x: Vec<f32> = (0..n * SEQ * N_CHANNELS).map(|i| noise(i, 5)).collect();
    Tensor::from_data(TensorData::new(x, [n, SEQ, N_CHANNELS]), &Default::default())
}

/// An MLSAE whose every feature reads and writes every layer a little, except LAYER1_READER,
/// whose encoder column is zero outside layer 1's slice of the concatenated resid_mid.
fn hand_made_mlsae() -> Transcoder {
    let cfg = TranscoderConfig { variant: Variant::Mlsae, features: FEATURES, activation: Activation::TopK { k: 2 }, ..TranscoderConfig::default() };
    let mut tc = Transcoder::zeros(&cfg, LAYERS, D_MODEL);
    tc.w_enc.iter_mut().enumerate().for_each(|(i, w)| *w = 0.2 * noise(i, 1));
    for k in 0..LAYERS * D_MODEL {
        let in_layer1 = k / D_MODEL == 1;
        tc.w_enc[k * FEATURES + LAYER1_READER] = if in_layer1 { noise(k, 3) } else { 0.0 };
    }
    tc.w_dec[0].iter_mut().enumerate().for_each(|(i, w)| *w = 0.3 * noise(i, 2));
    tc
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn a_feature_reading_only_layer_1_is_banded_at_layer_1() {
    let tc = hand_made_mlsae();
    let activity: Vec<f64> = (0..FEATURES).map(|f| f as f64).collect();
    let rows = banding_table(&tc, &activity, None).unwrap();
    assert_eq!(rows.len(), FEATURES);
    assert!(rows.windows(2).all(|w| w[0].activity >= w[1].activity), "most active first");
    let reader = rows.iter().find(|r| r.feature == LAYER1_READER).unwrap();
    assert_eq!(reader.band.encoder_layer, 1);
    assert!((reader.encoder_share[1] - 1.0).abs() < 1e-6, "{:?}", reader.encoder_share);
    // The exported W_enc carries the trainer's per-layer input scale; weighing by each layer's
    // resid_mid norm moves every feature that reads all layers alike to the loudest layer.
    let loud = banding_table(&tc, &activity, Some(&[1.0, 1.0, 10.0])).unwrap();
    assert!(loud.iter().filter(|r| r.feature != LAYER1_READER).all(|r| r.band.encoder_layer == 2), "{loud:?}");
    for r in &rows {
        let total: f32 = r.decoder_share.iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "decoder shares sum to 1: {:?}", r.decoder_share);
    }
}

#[test]
fn causal_transcoders_are_refused_with_a_reason() {
    let clt = Transcoder::zeros(&TranscoderConfig { features: FEATURES, ..TranscoderConfig::default() }, LAYERS, D_MODEL);
    let err = check_mlsae(&clt).unwrap_err().to_string();
    assert!(err.contains("mlsae") && err.contains("Clt"), "{err}");
    assert!(banding_table(&clt, &[0.0; FEATURES], None).is_err());
}

#[test]
fn a_decoder_direction_is_aligned_with_itself_at_k_0() {
    let (model, tc) = (model::<Flex>(), hand_made_mlsae());
    let at = [2, 5, 0];
    let rows = align_feature(&model, &tc, 4, inputs::<Flex>(at.len()), &at, &[1.0; LAYERS]).unwrap();
    // Every trigger layer l, every target l..L.
    assert_eq!(rows.len(), LAYERS * (LAYERS + 1) / 2);
    for r in rows.iter().filter(|r| r.target_layer == r.trigger_layer) {
        assert!((r.cosine - 1.0).abs() < 1e-3, "{r:?}");
        assert!((r.strength - 1.0).abs() < 1e-2, "{r:?}");
    }
    // Later layers are a real propagation: not the identity.
    assert!(rows.iter().any(|r| r.target_layer > r.trigger_layer && r.cosine < 0.999), "{rows:?}");
}

/// (uᵀJ)·v by burn's autodiff: the gradient of uᵀ resid_post_m at each window's position with
/// respect to a zero push added to mlp_out_l, read at that position.
fn vjp_dot(layer: usize, target: usize, at: &[usize], u: &[f32], v: &[f32]) -> Vec<f32> {
    type A = Autodiff<Flex>;
    let model = model::<A>();
    let n = at.len();
    let device = Default::default();
    let push = Tensor::<A, 3>::zeros([n, SEQ, D_MODEL], &device).require_grad();
    let add = |l: usize, resid_mid: Tensor<A, 3>| {
        let block = &model.blocks[l];
        let out = block.mlp.forward(block.ln_mlp.forward(resid_mid));
        if l == layer { out + push.clone() } else { out }
    };
    let (_, acts) = model.forward_with_replacement(inputs::<A>(n), &add);
    let mut mask = vec![0.0f32; n * SEQ * D_MODEL];
    for (b, &p) in at.iter().enumerate() {
        mask[(b * SEQ + p) * D_MODEL..(b * SEQ + p + 1) * D_MODEL].copy_from_slice(&u[b * D_MODEL..(b + 1) * D_MODEL]);
    }
    let mask = Tensor::<A, 3>::from_data(TensorData::new(mask, [n, SEQ, D_MODEL]), &device);
    let grads = (acts[target].resid_post.clone() * mask).sum().backward();
    let g: Vec<f32> = push.grad(&grads).unwrap().into_data().convert::<f32>().into_vec().unwrap();
    at.iter().enumerate().map(|(b, &p)| dot(&g[(b * SEQ + p) * D_MODEL..(b * SEQ + p + 1) * D_MODEL], &v[b * D_MODEL..(b + 1) * D_MODEL])).collect()
}

#[test]
fn the_finite_difference_jvp_agrees_with_autodiff() {
    let model = model::<Flex>();
    let at = [1, 4, 5];
    let n = at.len();
    let v: Vec<f32> = (0..n * D_MODEL).map(|i| noise(i, 7)).collect();
    let u: Vec<f32> = (0..n * D_MODEL).map(|i| noise(i, 9)).collect();
    let layer = 0;
    let moved = jvp(&model, inputs::<Flex>(n), &at, layer, &v, 1e-2); // [n, L − layer, d]
    for target in layer..LAYERS {
        let k = target - layer;
        let by_autodiff = vjp_dot(layer, target, &at, &u, &v);
        assert!(by_autodiff.iter().all(|g| g.abs() > 1e-2), "a push that moves nothing proves nothing: {by_autodiff:?}");
        for b in 0..n {
            let jv = &moved[(b * (LAYERS - layer) + k) * D_MODEL..(b * (LAYERS - layer) + k + 1) * D_MODEL];
            let by_fd = dot(&u[b * D_MODEL..(b + 1) * D_MODEL], jv);
            let scale = by_autodiff[b].abs().max(1.0);
            assert!((by_fd - by_autodiff[b]).abs() < 2e-3 * scale, "layer {layer}→{target}, window {b}: FD {by_fd} vs autodiff {}", by_autodiff[b]);
        }
    }
}

#[test]
fn an_mlsae_feature_is_de_embedded_through_every_layer_slice_of_its_encoder() {
    use voltlens::circuits::Embedding;
    let tc = hand_made_mlsae();
    // Channel c writes unit vector e_c into the residual stream; std 2 halves the per-raw-unit weight.
    let mut w_embed = vec![0.0f32; N_CHANNELS * D_MODEL];
    (0..N_CHANNELS).for_each(|c| w_embed[c * D_MODEL + c] = 1.0);
    let rows = Embedding { w_embed, channels: voltlens::model::CHANNELS.iter().map(|c| c.to_string()).collect(), std: vec![2.0; N_CHANNELS] }.deembed(&tc, 0, LAYER1_READER).unwrap();
    for (c, row) in rows.iter().enumerate() {
        let summed: f32 = (0..LAYERS).map(|l| tc.w_enc[(l * D_MODEL + c) * FEATURES + LAYER1_READER]).sum();
        assert!((row.weight - summed).abs() < 1e-6 && (row.weight_per_unit - summed / 2.0).abs() < 1e-6, "{row:?}");
    }
}
