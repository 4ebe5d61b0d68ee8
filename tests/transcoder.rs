//! Transcoders: gradients, training, causality, export and resume (DESIGN.md §3).

use std::path::Path;

use voltlens::transcoder::bench::{bench_vs_reference, synthetic_cache};
use voltlens::transcoder::{Activation, TranscoderConfig};

/// `scripts/bench_clt.sh` runs this: VOLTLENS_BENCH_CACHE, _STEPS, _FEATURES, _THREADS, _LAM, _ACT, _K
/// (and _SEED, to see how far FVU moves between initialisations).
#[test]
#[ignore = "benchmark, run by scripts/bench_clt.sh"]
fn bench_against_reference() {
    let var = |k: &str, default: &str| std::env::var(format!("VOLTLENS_BENCH_{k}")).unwrap_or_else(|_| default.into());
    let cache = std::path::PathBuf::from(var("CACHE", "/tmp/voltlens-bench/acts.safetensors"));
    let features: usize = var("FEATURES", "1024").parse().unwrap();
    if !cache.exists() {
        std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
        let tokens: usize = var("TOKENS", "100000").parse().unwrap();
        synthetic_cache(&cache, tokens, var("LAYERS", "4").parse().unwrap(), var("D", "64").parse().unwrap(), features, 1).unwrap();
    }
    let k: usize = var("K", "32").parse().unwrap();
    let cfg = TranscoderConfig {
        features,
        activation: if var("ACT", "relu") == "topk" { Activation::TopK { k } } else { Activation::Relu },
        lambda: var("LAM", "1e-3").parse().unwrap(),
        batch: var("BATCH", "1024").parse().unwrap(),
        steps: var("STEPS", "300").parse().unwrap(),
        target_firing_rate: var("RATE", "0.02").parse().unwrap(),
        seed: var("SEED", "0").parse().unwrap(),
        ..Default::default()
    };
    let threads = var("THREADS", "2").parse().unwrap();
    let work = Path::new("/tmp/voltlens-bench");
    let r = bench_vs_reference(&cache, &cfg, threads, work).unwrap();
    println!("VOLTLENS_BENCH {}", serde_json::to_string(&r).unwrap());
}

/// `scripts/bench_clt.sh` runs this too: the encoder alone (product and TopK selection) on 1,024
/// tokens of the cache, on VOLTLENS_BENCH_THREADS threads; prints its rate in GFLOP/s of the product.
#[test]
#[ignore = "benchmark, run by scripts/bench_clt.sh"]
fn bench_encoder() {
    let var = |k: &str| std::env::var(format!("VOLTLENS_BENCH_{k}")).unwrap();
    let mut source = CacheSource::open(Path::new(&var("CACHE")), 0, 0).unwrap();
    let (layers, d) = source.dims();
    let x = source.next_batch(1024).unwrap().resid_mid;
    let features: usize = var("FEATURES").parse().unwrap();
    let cfg = TranscoderConfig { features, activation: Activation::TopK { k: 32 }, ..Default::default() };
    let model = random_model(&cfg, layers, d, 1);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(var("THREADS").parse().unwrap()).build().unwrap();
    let seconds = pool.install(|| {
        model.encode(&x); // warm-up
        let t = std::time::Instant::now();
        let mut reps = 0;
        while t.elapsed().as_secs_f64() < 2.0 {
            std::hint::black_box(model.encode(&x));
            reps += 1;
        }
        t.elapsed().as_secs_f64() / reps as f64
    });
    let flops = 2.0 * (1024 * layers * d * features) as f64;
    println!("VOLTLENS_ENCODER {{\"features\": {features}, \"gflops\": {:.1}}}", flops / seconds / 1e9);
}

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use voltlens::transcoder::cache::write_cache;
use voltlens::transcoder::grad::{loss_and_grad, LossTerms};
use voltlens::transcoder::{
    evaluate, export_circuit_tracer, import_circuit_tracer, train, ActivationSource, CacheSource, Sparsity, Transcoder, Variant,
};

fn uniform(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| scale * (rng.random::<f32>() * 2.0 - 1.0)).collect()
}

/// A transcoder with every parameter drawn at random, decoders large enough to matter.
fn random_model(cfg: &TranscoderConfig, layers: usize, d: usize, seed: u64) -> Transcoder {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tc = Transcoder::zeros(cfg, layers, d);
    tc.w_enc = uniform(&mut rng, tc.w_enc.len(), 0.8);
    tc.b_enc = uniform(&mut rng, tc.b_enc.len(), 0.3);
    for w in &mut tc.w_dec {
        *w = uniform(&mut rng, w.len(), 0.5);
    }
    tc.b_dec = uniform(&mut rng, tc.b_dec.len(), 0.2);
    if let Some(w) = &mut tc.w_skip {
        *w = uniform(&mut rng, w.len(), 0.3);
    }
    tc
}

/// A random model (seed) and a random batch x, y of b tokens (seed + 1).
fn random_problem(cfg: &TranscoderConfig, layers: usize, d: usize, b: usize, seed: u64) -> (Transcoder, Vec<f32>, Vec<f32>) {
    let model = random_model(cfg, layers, d, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    let x = uniform(&mut rng, b * layers * d, 1.0);
    let y = uniform(&mut rng, b * layers * d, 1.0);
    (model, x, y)
}

/// Every parameter of the model, mutable, in a fixed order.
fn params(tc: &mut Transcoder) -> Vec<(&'static str, &mut Vec<f32>)> {
    let mut p: Vec<(&'static str, &mut Vec<f32>)> = vec![("w_enc", &mut tc.w_enc), ("b_enc", &mut tc.b_enc), ("b_dec", &mut tc.b_dec)];
    p.extend(tc.w_dec.iter_mut().map(|w| ("w_dec", w)));
    if let Some(w) = &mut tc.w_skip {
        p.push(("w_skip", w));
    }
    p
}

/// Loss and gradient of a fixed batch.
fn loss(tc: &Transcoder, x: &[f32], y: &[f32], var: &[f32], sparsity: Sparsity, grad: &mut Transcoder) -> f64 {
    let norms = tc.decoder_norms();
    let terms = LossTerms { var, lambda: 0.1, sparsity, norms: &norms, aux: None };
    let stats = loss_and_grad(tc, x, y, &terms, grad);
    stats.fvu.iter().map(|&v| v as f64).sum::<f64>() / stats.fvu.len() as f64 + stats.sparsity_loss as f64
}

fn check_gradients(cfg: TranscoderConfig, sparsity: Sparsity) {
    let (layers, d, b) = (3, 4, 6);
    let (model, x, y) = random_problem(&cfg, layers, d, b, 7);
    let var = vec![0.7, 1.1, 0.9];
    let mut grad = model.clone();
    loss(&model, &x, &y, &var, sparsity, &mut grad);
    let mut analytic = grad.clone();
    let mut scratch = model.clone();
    let eps = 1e-3f32;
    let mut checked = 0;
    let n_tensors = params(&mut model.clone()).len();
    for ti in 0..n_tensors {
        let len = params(&mut model.clone())[ti].1.len();
        for i in 0..len {
            let mut plus = model.clone();
            params(&mut plus)[ti].1[i] += eps;
            let mut minus = model.clone();
            params(&mut minus)[ti].1[i] -= eps;
            let fd = (loss(&plus, &x, &y, &var, sparsity, &mut scratch) - loss(&minus, &x, &y, &var, sparsity, &mut scratch)) / (2.0 * eps as f64);
            let (name, g) = { let p = params(&mut analytic); (p[ti].0, p[ti].1[i] as f64) };
            assert!((fd - g).abs() <= 2e-3 + 2e-2 * g.abs(), "{:?}: d loss/d {name}[{i}]: finite difference {fd}, analytic {g}", cfg.activation);
            checked += 1;
        }
    }
    assert!(checked > 150);
}

#[test]
fn relu_gradients_match_finite_differences() {
    let cfg = TranscoderConfig { features: 6, skip: true, ..Default::default() };
    check_gradients(cfg, Sparsity::Tanh { c: 2.0 });
}

#[test]
fn jumprelu_gradients_match_finite_differences_away_from_the_threshold() {
    let cfg = TranscoderConfig { features: 6, activation: Activation::JumpRelu { threshold: 0.2, bandwidth: 0.1 }, ..Default::default() };
    check_gradients(cfg, Sparsity::L1);
}

/// The straight-through threshold gradient is, per token and feature, ∂L/∂z · (−θ/ε) inside the
/// window |pre − θ| < ε/2 and 0 outside it. With one token, ∂L/∂ŷ is the finite-difference
/// gradient with respect to b_dec, so ∂L/∂z = W_dec,f · ∂L/∂ŷ is measured, not taken from the code.
#[test]
fn jumprelu_threshold_gradient_is_the_kernel_times_the_measured_dl_dz() {
    let (theta, bandwidth) = (0.2f32, 0.6f32);
    let cfg = TranscoderConfig { features: 6, activation: Activation::JumpRelu { threshold: theta, bandwidth }, ..Default::default() };
    let (layers, d) = (3, 4);
    let var = vec![0.7, 1.1, 0.9];
    let loss_of = |tc: &Transcoder, x: &[f32], y: &[f32], grad: &mut Transcoder| {
        let norms = tc.decoder_norms();
        let terms = LossTerms { var: &var, lambda: 0.0, sparsity: Sparsity::L1, norms: &norms, aux: None };
        let stats = loss_and_grad(tc, x, y, &terms, grad);
        stats.fvu.iter().map(|&v| v as f64).sum::<f64>() / layers as f64
    };
    let (mut inside, mut outside) = (0, 0);
    for seed in 0..12 {
        let model = random_model(&cfg, layers, d, 30 + seed);
        let mut rng = ChaCha8Rng::seed_from_u64(60 + seed);
        let x = uniform(&mut rng, layers * d, 1.0);
        let y = uniform(&mut rng, layers * d, 1.0);
        let mut grad = model.clone();
        loss_of(&model, &x, &y, &mut grad);
        // ∂L/∂ŷ by central differences on b_dec (ŷ = … + b_dec for the one token).
        let eps = 1e-3f32;
        let mut scratch = model.clone();
        let dy: Vec<f64> = (0..layers * d)
            .map(|i| {
                let (mut plus, mut minus) = (model.clone(), model.clone());
                plus.b_dec[i] += eps;
                minus.b_dec[i] -= eps;
                (loss_of(&plus, &x, &y, &mut scratch) - loss_of(&minus, &x, &y, &mut scratch)) / (2.0 * eps as f64)
            })
            .collect();
        let s = model.shape;
        for e in 0..s.encoders() {
            let w = model.w_enc_of(e);
            for f in 0..s.features {
                let pre: f32 = (0..s.d_in()).map(|i| x[s.input_offset(e) + i] * w[i * s.features + f]).sum::<f32>() + model.b_enc[e * s.features + f];
                let row = &model.w_dec[e][f * s.dec_row(e)..(f + 1) * s.dec_row(e)];
                let first = s.out_layers(e).start * d;
                let dl_dz: f64 = row.iter().enumerate().map(|(k, &w)| w as f64 * dy[first + k]).sum();
                let window = (pre - theta).abs() < 0.5 * bandwidth;
                let expected = if window { dl_dz * (-theta / bandwidth) as f64 } else { 0.0 };
                let got = grad.threshold[e * s.features + f] as f64;
                assert!((got - expected).abs() <= 1e-3 + 1e-2 * expected.abs(), "seed {seed} L{e} F{f} pre {pre}: ∂L/∂θ {got}, expected {expected}");
                if window { inside += 1 } else { outside += 1 }
            }
        }
    }
    assert!(inside >= 20 && outside >= 20, "{inside} entries inside the window, {outside} outside");
}

#[test]
fn mlsae_and_batchtopk_gradients_match_finite_differences() {
    let mlsae = TranscoderConfig { variant: Variant::Mlsae, features: 8, activation: Activation::TopK { k: 3 }, ..Default::default() };
    check_gradients(mlsae, Sparsity::L1);
    let plt = TranscoderConfig { variant: Variant::Plt, features: 6, activation: Activation::BatchTopK { k: 2 }, ..Default::default() };
    check_gradients(plt, Sparsity::L1);
}

#[test]
fn topk_gradients_match_finite_differences() {
    let cfg = TranscoderConfig { features: 6, activation: Activation::TopK { k: 2 }, ..Default::default() };
    check_gradients(cfg, Sparsity::L1);
}

/// A planted problem a CLT can solve: 32 true features, ~3 active per token, each writing a fixed
/// direction into resid_mid and (linearly) into mlp_out of its own and later layers.
/// Returns the planted mlp_out directions, [L, 32, d].
fn planted_cache(path: &Path, tokens: usize, layers: usize, d: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let nf = 32;
    let dx = uniform(&mut rng, layers * nf * d, 1.0);
    let dy = uniform(&mut rng, layers * nf * d, 1.0);
    let w = layers * d;
    let (mut x, mut y) = (vec![0.0; tokens * w], vec![0.0; tokens * w]);
    for t in 0..tokens {
        for f in 0..nf {
            if rng.random::<f32>() < 3.0 / nf as f32 {
                let c = 0.5 + rng.random::<f32>();
                for i in 0..w {
                    let (l, k) = (i / d, i % d);
                    x[t * w + i] += c * dx[(l * nf + f) * d + k];
                    y[t * w + i] += c * dy[(l * nf + f) * d + k];
                }
            }
        }
    }
    write_cache(path, &x, &y, [tokens, layers, d]).unwrap();
    dy
}

#[test]
fn training_on_a_planted_dictionary_lowers_fvu_with_sane_l0() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("acts.safetensors");
    let dy = planted_cache(&cache, 8192, 2, 16);
    let cfg = TranscoderConfig { features: 64, batch: 256, steps: 600, lr: 3e-3, lambda: 2e-2, target_firing_rate: 0.05, shuffle_buffer: 4096, ..Default::default() };
    let mut source = CacheSource::open(&cache, cfg.shuffle_buffer, 1).unwrap();
    let report = train(&cfg, &mut source, &dir.path().join("run")).unwrap();
    let m = evaluate(&report.transcoder, &mut CacheSource::open(&cache, 0, 0).unwrap(), 4096, 1024).unwrap();
    voltlens::io::write_json(&dir.path().join("metrics.json"), &m).unwrap();
    // The decoders of the layer-0 encoder find the planted writes (into layers 0 and 1).
    let (d, nf, tc) = (16, 32, &report.transcoder);
    let row = tc.shape.dec_row(0);
    let cosines: Vec<f32> = (0..nf)
        .map(|f| {
            let truth: Vec<f32> = (0..2).flat_map(|l| dy[(l * nf + f) * d..(l * nf + f + 1) * d].to_vec()).collect();
            (0..tc.shape.features)
                .map(|j| {
                    let dec = &tc.w_dec[0][j * row..(j + 1) * row];
                    let dot: f32 = dec.iter().zip(&truth).map(|(a, b)| a * b).sum();
                    dot / (dec.iter().map(|a| a * a).sum::<f32>().sqrt() * truth.iter().map(|b| b * b).sum::<f32>().sqrt()).max(1e-12)
                })
                .fold(f32::MIN, f32::max)
        })
        .collect();
    let found = cosines.iter().filter(|&&c| c > 0.9).count();
    println!("planted: {m:?}; {found} of {nf} planted writes found (cosine > 0.9)");
    assert!(found >= 28, "only {found} of {nf} planted writes found: best cosines {cosines:?}");
    assert!(m.fvu_per_layer.iter().all(|&f| f < 0.3), "FVU per layer {:?} L0 {:?}", m.fvu_per_layer, m.l0_per_layer);
    assert!(m.l0_per_layer.iter().all(|&l| l > 1.0 && l < 12.0), "L0 per layer {:?}", m.l0_per_layer);
}

/// ŷ of tokens x with resid_mid of layer `layer` changed.
fn perturbed(tc: &Transcoder, x: &[f32], layer: usize) -> Vec<f32> {
    let (l, d) = (tc.shape.layers, tc.shape.d_model);
    let mut x2 = x.to_vec();
    for t in 0..x.len() / (l * d) {
        x2[(t * l + layer) * d..(t * l + layer + 1) * d].iter_mut().for_each(|v| *v += 3.0);
    }
    tc.forward(&x2).mlp_out
}

/// Which layers of ŷ differ between two reconstructions [n, L, d].
fn changed_layers(a: &[f32], b: &[f32], layers: usize, d: usize) -> Vec<usize> {
    (0..layers).filter(|&m| a.chunks(d).skip(m).step_by(layers).zip(b.chunks(d).skip(m).step_by(layers)).any(|(p, q)| p != q)).collect()
}

#[test]
fn clt_reconstruction_of_layer_m_reads_only_layers_up_to_m() {
    let (layers, d) = (4, 8);
    let cfg = TranscoderConfig { features: 16, skip: true, ..Default::default() };
    let tc = random_model(&cfg, layers, d, 5);
    let x = uniform(&mut ChaCha8Rng::seed_from_u64(6), 10 * layers * d, 1.0);
    let base = tc.forward(&x).mlp_out;
    for j in 0..layers {
        assert_eq!(changed_layers(&base, &perturbed(&tc, &x, j), layers, d), (j..layers).collect::<Vec<_>>(), "perturbing layer {j}");
    }
}

#[test]
fn plt_has_no_cross_layer_decoders() {
    let (layers, d) = (3, 8);
    let cfg = TranscoderConfig { variant: Variant::Plt, features: 16, ..Default::default() };
    let tc = random_model(&cfg, layers, d, 5);
    assert!(tc.w_dec.iter().all(|w| w.len() == 16 * d), "each PLT decoder writes one layer");
    let x = uniform(&mut ChaCha8Rng::seed_from_u64(6), 10 * layers * d, 1.0);
    let base = tc.forward(&x).mlp_out;
    for j in 0..layers {
        assert_eq!(changed_layers(&base, &perturbed(&tc, &x, j), layers, d), vec![j]);
    }
}

#[test]
fn export_then_import_gives_the_same_transcoder() {
    let dir = tempfile::tempdir().unwrap();
    let x = uniform(&mut ChaCha8Rng::seed_from_u64(2), 20 * 3 * 8, 1.0);
    for cfg in [
        TranscoderConfig { features: 16, activation: Activation::JumpRelu { threshold: 0.1, bandwidth: 0.05 }, skip: true, ..Default::default() },
        TranscoderConfig { variant: Variant::Mlsae, features: 16, activation: Activation::TopK { k: 4 }, ..Default::default() },
        TranscoderConfig { variant: Variant::Sae, features: 16, ..Default::default() },
    ] {
        let tc = random_model(&cfg, 3, 8, 1);
        let out = dir.path().join(format!("{:?}", cfg.variant));
        export_circuit_tracer(&tc, &out).unwrap();
        let file = if cfg.variant == Variant::Sae { "layer_0.safetensors" } else { "W_enc_0.safetensors" };
        assert!(out.join(file).exists(), "{:?}: no {file}", cfg.variant);
        let back = import_circuit_tracer(&out).unwrap();
        assert_eq!(back, tc);
        assert_eq!(back.forward(&x).mlp_out, tc.forward(&x).mlp_out);
    }
}

#[test]
fn resuming_from_a_checkpoint_matches_uninterrupted_training() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("acts.safetensors");
    planted_cache(&cache, 2048, 2, 16);
    let cfg = TranscoderConfig { features: 32, batch: 128, steps: 20, shuffle_buffer: 1024, activation: Activation::BatchTopK { k: 4 }, ..Default::default() };
    let whole = train(&cfg, &mut CacheSource::open(&cache, 1024, 3).unwrap(), &dir.path().join("whole")).unwrap();
    let split = dir.path().join("split");
    train(&TranscoderConfig { steps: 9, ..cfg.clone() }, &mut CacheSource::open(&cache, 1024, 3).unwrap(), &split).unwrap();
    let resumed = train(&cfg, &mut CacheSource::open(&cache, 1024, 3).unwrap(), &split).unwrap();
    assert_eq!(resumed.transcoder, whole.transcoder);
}

#[test]
fn auxk_gradients_of_dead_features_match_finite_differences() {
    let (layers, d, b, f_n) = (3, 4, 6, 8);
    let cfg = TranscoderConfig { features: f_n, activation: Activation::TopK { k: 2 }, ..Default::default() };
    let (model, x, y) = random_problem(&cfg, layers, d, b, 9);
    let var = vec![0.7, 1.1, 0.9];
    // Dead = never in the main codes of this batch, so that the main error does not move with them.
    let codes = model.encode(&x);
    let dead: Vec<Vec<u32>> = (0..layers)
        .map(|e| (0..f_n as u32).filter(|&f| (0..b).all(|t| !codes.row(t * layers + e).any(|j| codes.index[j] == f))).collect())
        .collect();
    assert!(dead.iter().map(Vec::len).sum::<usize>() >= 4, "the test needs dead features: {dead:?}");
    let total = |tc: &Transcoder, grad: &mut Transcoder| {
        let norms = tc.decoder_norms();
        let aux = Some(voltlens::transcoder::grad::AuxK { dead: &dead, k: 2, coef: 0.5 });
        let s = loss_and_grad(tc, &x, &y, &LossTerms { var: &var, lambda: 0.0, sparsity: Sparsity::L1, norms: &norms, aux }, grad);
        s.fvu.iter().map(|&v| v as f64).sum::<f64>() / layers as f64 + s.aux_loss as f64
    };
    let mut grad = model.clone();
    total(&model, &mut grad);
    assert!(grad.w_dec.iter().flatten().any(|&g| g != 0.0));
    let mut scratch = model.clone();
    let eps = 1e-3f32;
    for (e, feats) in dead.iter().enumerate() {
        let row = d * (layers - e);
        for &f in feats {
            for i in 0..row {
                let idx = f as usize * row + i;
                let (mut plus, mut minus) = (model.clone(), model.clone());
                plus.w_dec[e][idx] += eps;
                minus.w_dec[e][idx] -= eps;
                let fd = (total(&plus, &mut scratch) - total(&minus, &mut scratch)) / (2.0 * eps as f64);
                let g = grad.w_dec[e][idx] as f64;
                assert!((fd - g).abs() <= 2e-3 + 2e-2 * g.abs(), "AuxK d loss/d W_dec[{e}][{f}][{i}]: {fd} vs {g}");
            }
            let (mut plus, mut minus) = (model.clone(), model.clone());
            plus.b_enc[e * f_n + f as usize] += eps;
            minus.b_enc[e * f_n + f as usize] -= eps;
            let fd = (total(&plus, &mut scratch) - total(&minus, &mut scratch)) / (2.0 * eps as f64);
            let g = grad.b_enc[e * f_n + f as usize] as f64;
            assert!((fd - g).abs() <= 2e-3 + 2e-2 * g.abs(), "AuxK d loss/d b_enc[{e}][{f}]: {fd} vs {g}");
        }
    }
}

#[test]
fn cache_source_streams_shards_in_order_and_shuffles_every_token() {
    use voltlens::transcoder::ActivationSource;
    let dir = tempfile::tempdir().unwrap();
    // Two shards of tokens numbered 0..5 and 5..8 (L = 1, d = 2; value = token number).
    let shard = |range: std::ops::Range<usize>| range.flat_map(|t| [t as f32; 2]).collect::<Vec<f32>>();
    write_cache(&dir.path().join("a.safetensors"), &shard(0..5), &shard(0..5), [5, 1, 2]).unwrap();
    write_cache(&dir.path().join("b.safetensors"), &shard(5..8), &shard(5..8), [3, 1, 2]).unwrap();
    let mut ordered = CacheSource::open(dir.path(), 0, 0).unwrap();
    assert_eq!(ordered.dims(), (1, 2));
    let b = ordered.next_batch(10).unwrap();
    let tokens: Vec<f32> = b.resid_mid.chunks(2).map(|c| c[0]).collect();
    assert_eq!(tokens, vec![0., 1., 2., 3., 4., 5., 6., 7., 0., 1.], "in order, wrapping around");
    let mut shuffled = CacheSource::open(dir.path(), 4, 1).unwrap();
    let mut seen: Vec<f32> = shuffled.next_batch(64).unwrap().mlp_out.chunks(2).map(|c| c[0]).collect();
    seen.sort_by(f32::total_cmp);
    seen.dedup();
    assert_eq!(seen, (0..8).map(|t| t as f32).collect::<Vec<_>>(), "every token comes out of the buffer");
}

#[test]
fn lambda_schedules_ramp_as_configured() {
    use voltlens::transcoder::LambdaSchedule;
    let cfg = |schedule| TranscoderConfig { lambda: 2.0, schedule, ..Default::default() };
    assert_eq!(cfg(LambdaSchedule::Constant).lambda_at(0), 2.0);
    let linear = cfg(LambdaSchedule::LinearRamp { ramp_steps: 10 });
    assert_eq!((linear.lambda_at(0), linear.lambda_at(5), linear.lambda_at(50)), (0.0, 1.0, 2.0));
    let delayed = cfg(LambdaSchedule::DelayedRamp { delay_steps: 10, ramp_steps: 10 });
    assert_eq!((delayed.lambda_at(5), delayed.lambda_at(15), delayed.lambda_at(25)), (0.0, 1.0, 2.0));
}

/// One batch through both trainers from the same weights (issue 13): losses, firing counts and
/// every gradient agree to 1e-4. The hand-written gradients are checked against finite
/// differences above, so this checks the autodiff trainer's loss.
///
/// The cases: every variant and activation, the skip path, both sparsity penalties and AuxK.
fn agreement_cases() -> Vec<(TranscoderConfig, Sparsity, bool)> {
    let base = TranscoderConfig { features: 12, ..Default::default() };
    vec![
        (base.clone(), Sparsity::L1, false),
        (TranscoderConfig { skip: true, activation: Activation::JumpRelu { threshold: 0.2, bandwidth: 0.3 }, ..base.clone() }, Sparsity::Tanh { c: 2.0 }, false),
        (TranscoderConfig { variant: Variant::Plt, activation: Activation::BatchTopK { k: 2 }, ..base.clone() }, Sparsity::L1, true),
        // 4k candidates per token are all 12 features (burn's argtopk refuses k = F).
        (TranscoderConfig { activation: Activation::BatchTopK { k: 3 }, ..base.clone() }, Sparsity::L1, false),
        (TranscoderConfig { variant: Variant::Mlsae, activation: Activation::TopK { k: 3 }, ..base.clone() }, Sparsity::L1, true),
        (TranscoderConfig { variant: Variant::Sae, ..base.clone() }, Sparsity::L1, false),
        (TranscoderConfig { activation: Activation::TopK { k: 2 }, ..base }, Sparsity::L1, true),
    ]
}

fn check_autodiff_agrees_with<B: burn::tensor::backend::AutodiffBackend + voltlens::transcoder::sparse::SparseOps>(
    cfg: &TranscoderConfig,
    sparsity: Sparsity,
    with_aux: bool,
    decoding: voltlens::transcoder::autodiff::Decoding,
) {
    use voltlens::transcoder::adam::Adam;
    use voltlens::transcoder::autodiff::{self, DeviceTrainer, Terms};
    let (layers, d, b) = (3, 5, 48);
    let (model, x, y) = random_problem(cfg, layers, d, b, 21);
    let var = vec![0.7, 1.1, 0.9];
    let (lambda, aux_k, aux_coef) = (0.05, 3, 0.5);
    let dead: Vec<Vec<u32>> = (0..model.shape.encoders()).map(|e| (0..cfg.features as u32).filter(|f| (f + e as u32) % 2 == 0).collect()).collect();

    let norms = model.decoder_norms();
    let aux = with_aux.then(|| voltlens::transcoder::grad::AuxK { dead: &dead, k: aux_k, coef: aux_coef });
    let mut hand = model.clone();
    let want = loss_and_grad(&model, &x, &y, &LossTerms { var: &var, lambda, sparsity, norms: &norms, aux }, &mut hand);

    let dev = DeviceTrainer::<B>::new(&model, &Adam::new(&model, 1e-3), &var, Default::default());
    let width = layers * d;
    let terms = Terms {
        var: dev.target_var.clone(),
        lambda,
        sparsity,
        preact_coef: 0.0,
        aux: with_aux.then(|| (dev.dead_mask(&dead), aux_k, aux_coef)),
        decoding,
    };
    let (grad, stats) = autodiff::loss_and_grad::<B>(&dev.params, dev.upload(&x, width), dev.upload(&y, width), &terms);
    let got = stats.to_host(&var, b, model.shape.encoders());
    let mut auto = model.clone();
    grad.to_host(&mut auto);

    let what = format!("{:?} {:?} {sparsity:?} aux {with_aux} {decoding:?}", cfg.variant, cfg.activation);
    assert_eq!(got.fired, want.fired, "{what}: firing counts");
    assert!(want.fired.iter().sum::<u32>() > 0, "{what}: nothing fired, so nothing was compared");
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-4;
    for (g, w) in got.fvu.iter().zip(&want.fvu) {
        assert!(close(*g, *w), "{what}: FVU {g} vs {w}");
    }
    assert!(close(got.sparsity_loss, want.sparsity_loss), "{what}: sparsity loss {} vs {}", got.sparsity_loss, want.sparsity_loss);
    assert!(close(got.aux_loss, want.aux_loss), "{what}: aux loss {} vs {}", got.aux_loss, want.aux_loss);
    if with_aux {
        assert!(want.aux_loss > 0.0, "{what}: AuxK had nothing to do");
    }
    let names: Vec<String> = hand.tensors().into_iter().map(|(n, _)| n).collect();
    for ((name, (_, h)), (_, a)) in names.iter().zip(hand.tensors()).zip(auto.tensors()) {
        let worst = h.iter().zip(a).map(|(h, a)| (h - a).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-4, "{what}: d loss/d {name} differs by up to {worst}");
        if !h.is_empty() && name != "threshold" {
            assert!(h.iter().any(|&v| v != 0.0), "{what}: d loss/d {name} is all zero, so the comparison proves little");
        }
    }
}

#[test]
fn autodiff_trainer_agrees_with_the_hand_written_one_for_every_variant_and_activation() {
    use voltlens::transcoder::autodiff::Decoding;
    // A step decodes either way (gathered rows; dense when many fire, and on a GPU): both.
    for (cfg, sparsity, aux) in agreement_cases() {
        for decoding in [Decoding::Gather, Decoding::Dense] {
            check_autodiff_agrees_with::<voltlens::model::backend::CpuTrain>(&cfg, sparsity, aux, decoding);
        }
    }
}

/// The encoder on a burn device (record's and the replacement runs' on a GPU) keeps what the
/// hand-written one keeps, at the same values, for every variant and activation (BatchTopK's cut
/// included): all encoders at once, and one encoder from its own input.
fn check_device_encoder_matches<B: burn::tensor::backend::AutodiffBackend + voltlens::transcoder::sparse::SparseOps>() {
    use voltlens::transcoder::activation::Codes;
    use voltlens::transcoder::device_encode::{DeviceEncoder, Encoder};
    use voltlens::transcoder::replacement::LayerEncoder;
    let same = |got: &Codes, want: &Codes, what: &str| {
        assert!(want.index.len() >= 8, "{what}: only {} entries to compare", want.index.len());
        assert_eq!((&got.offsets, &got.index), (&want.offsets, &want.index), "{what}: other features kept");
        for (a, b) in got.value.iter().zip(&want.value).chain(got.pre.iter().zip(&want.pre)) {
            assert!((a - b).abs() <= 1e-5, "{what}: value {a} vs {b}");
        }
    };
    for (cfg, _, _) in agreement_cases() {
        let (layers, d, n) = (3, 5, 48);
        let (tc, x, _) = random_problem(&cfg, layers, d, n, 21);
        let device = Default::default();
        let upload = burn::tensor::Tensor::<B::InnerBackend, 2>::from_data(burn::tensor::TensorData::new(x.clone(), [n, layers * d]), &device);
        let encoder = Encoder::<B>::Device(DeviceEncoder::new(&tc, &device));
        let what = format!("{:?} {:?}", cfg.variant, cfg.activation);
        same(&encoder.encode(upload), &tc.encode(&x), &what);
        let (s, stride) = (tc.shape, layers * d);
        for e in 0..s.encoders() {
            let x_e: Vec<f32> = x.chunks(stride).flat_map(|t| &t[s.input_offset(e)..s.input_offset(e) + s.d_in()]).copied().collect();
            same(&encoder.encode_layer(e, &x_e), &tc.encode_layer(e, &x_e), &format!("{what}, encoder {e} alone"));
        }
    }
}

#[test]
fn the_device_encoder_keeps_what_the_hand_written_one_keeps() {
    check_device_encoder_matches::<voltlens::model::backend::CpuTrain>();
}

#[cfg(feature = "wgpu")]
#[test]
fn the_device_encoder_keeps_what_the_hand_written_one_keeps_on_the_gpu_backend() {
    check_device_encoder_matches::<burn::backend::Autodiff<burn::backend::Wgpu>>();
}

/// The same agreement on burn's wgpu backend, whose kernels (burn-cubecl's and the sparse
/// decoding's in `sparse_kernels`, compiled as for CUDA) and `argtopk` are the GPU path's: run on
/// any Vulkan device, Mesa's software lavapipe included, so that the GPU path is tested without a
/// GPU. Both decodings (a ReLU step decodes densely while many features fire).
#[cfg(feature = "wgpu")]
#[test]
fn autodiff_trainer_agrees_with_the_hand_written_one_on_the_gpu_backend() {
    use burn::backend::{Autodiff, Wgpu};
    use voltlens::transcoder::autodiff::Decoding;
    type Gpu = Autodiff<Wgpu>;
    for (cfg, sparsity, aux) in agreement_cases() {
        for decoding in [Decoding::Gather, Decoding::Dense] {
            check_autodiff_agrees_with::<Gpu>(&cfg, sparsity, aux, decoding);
        }
    }
}

/// The GPU's sparse decoding kernels compute what burn's row gather and scatter compute on the
/// CPU, on tokens whose active features repeat across the batch (the scatter sums each feature's
/// entries), and list the same positive scores.
#[cfg(feature = "wgpu")]
#[test]
fn sparse_decoding_kernels_on_the_gpu_backend_match_the_cpu_operations() {
    use burn::tensor::{backend::Backend, Int, Tensor, TensorData, TensorPrimitive};
    use voltlens::transcoder::sparse::SparseOps;
    fn run<B: Backend + SparseOps>(z: &[f32], idx: &[i32], w: &[f32], g: &[f32], [n, k, f, c]: [usize; 4]) -> [Vec<f32>; 3] {
        let dev = Default::default();
        let float = |v: &[f32], shape: [usize; 2]| Tensor::<B, 2>::from_data(TensorData::new(v.to_vec(), shape), &dev).into_primitive().tensor();
        let a = B::active(Tensor::<B, 3, Int>::from_data(TensorData::new(idx.to_vec(), [1, n, k]), &dev).into_primitive(), f).remove(0);
        let read = |t| Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(t)).into_data().convert::<f32>().into_vec::<f32>().unwrap();
        [
            read(B::rows_weighted_sum(float(z, [n, k]), &a, float(w, [f, c]))),
            read(B::rows_dot(float(g, [n, c]), &a, float(w, [f, c]))),
            read(B::rows_scatter(float(z, [n, k]), &a, float(g, [n, c]))),
        ]
    }
    let (n, k, f, c) = (37, 5, 11, 19);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut draw = |len: usize| (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>();
    let (z, w, g) = (draw(n * k), draw(f * c), draw(n * c));
    // Distinct features within a token, as top-k gives; 11 features over 37 tokens repeat.
    let idx: Vec<i32> = (0..n).flat_map(|t| (0..k).map(move |j| ((t * 3 + j * 2) % f) as i32)).collect();
    let cpu = run::<burn::backend::Flex>(&z, &idx, &w, &g, [n, k, f, c]);
    let gpu = run::<burn::backend::Wgpu>(&z, &idx, &w, &g, [n, k, f, c]);
    for (name, (a, b)) in ["rows_weighted_sum", "rows_dot", "rows_scatter"].iter().zip(cpu.iter().zip(&gpu)) {
        assert_eq!(a.len(), b.len(), "{name}");
        assert!(a.iter().any(|&v| v.abs() > 0.1), "{name}: nothing to compare");
        let worst = a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "{name}: the GPU kernel differs from the CPU by up to {worst}");
    }

    // ReLU's active features: each row's positive scores in feature order, then the row's first
    // other feature as padding; rows with none, some and all but one positive (k = 10).
    fn positive<B: Backend + SparseOps>(score: &[f32], rows: usize) -> Vec<i64> {
        let t = Tensor::<B, 2>::from_data(TensorData::new(score.to_vec(), [rows, score.len() / rows]), &Default::default());
        let idx = B::positive_indices(t.into_primitive().tensor(), 10);
        Tensor::<B, 2, Int>::from_primitive(idx).into_data().convert::<i64>().into_vec::<i64>().unwrap()
    }
    let rows = 7;
    let mut score = draw(rows * f);
    score[..f].iter_mut().for_each(|v| *v = -v.abs());
    score[f..2 * f].iter_mut().enumerate().for_each(|(i, v)| *v = if i == 0 { -1.0 } else { v.abs() + 0.1 });
    let (cpu, gpu) = (positive::<burn::backend::Flex>(&score, rows), positive::<burn::backend::Wgpu>(&score, rows));
    assert_eq!(&cpu[..20], &[[0; 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]].concat()[..], "none positive, then all but the first");
    for (r, row) in cpu.chunks(10).enumerate() {
        let want: Vec<i64> = (0..f as i64).filter(|&i| score[r * f + i as usize] > 0.0).collect();
        assert_eq!(&row[..want.len()], &want[..], "row {r}");
    }
    assert_eq!(cpu, gpu, "the GPU kernel lists other features than the CPU");
}

/// The sparse decoding kernels compile for CUDA (sm_90a, as on an H100) with NVRTC, which CI takes
/// from PyPI's `nvidia-cuda-nvrtc` (`.ci/run`: its library on `LD_LIBRARY_PATH`, its headers in
/// `CUDA_PATH`): no CI machine has a GPU, and wgpu's run above checks their arithmetic, not
/// CubeCL's CUDA C++. Skips with a note where NVRTC is missing, and fails so under `CI=true`.
#[cfg(all(feature = "cuda", feature = "wgpu"))]
#[test]
fn sparse_decoding_kernels_compile_for_cuda_as_on_the_gpu_backend() {
    use burn::backend::wgpu::{WgpuDevice, WgpuRuntime};
    use cubecl::Runtime;
    // SAFETY: it only tries to open libnvrtc under its usual names.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        assert!(std::env::var("CI").is_err(), "NVRTC's library (libnvrtc) is not on LD_LIBRARY_PATH");
        eprintln!("skipped: NVRTC's library (libnvrtc) is not on LD_LIBRARY_PATH");
        return;
    }
    let ptx = voltlens::transcoder::compile_for_cuda(&WgpuRuntime::client(&WgpuDevice::default())).unwrap_or_else(|e| panic!("{e:#}"));
    let names: Vec<_> = ptx.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["rows_weighted_sum", "rows_dot", "feature_sums", "positive_indices"]);
    for (name, ptx) in &ptx {
        // An entry point for Hopper, with the f32 multiply-adds of the sums (`positive_indices` has none).
        assert!(ptx.contains(".target sm_90a") && ptx.contains(".entry"), "{name}: not a kernel for sm_90a:\n{ptx}");
        assert_eq!(ptx.contains("fma.rn.f32"), *name != "positive_indices", "{name}:\n{ptx}");
    }
}

/// The autodiff trainer follows the hand-written one step for step on the planted problem (their
/// weights differ in the last bits after 300 steps), and a run moves between them through its
/// checkpoint (the GPU-then-CPU path of issue 13).
#[test]
fn autodiff_training_matches_the_sparse_trainer_and_shares_its_checkpoints() {
    use voltlens::transcoder::Trainer;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("acts.safetensors");
    planted_cache(&cache, 4096, 2, 16);
    let cfg = TranscoderConfig { features: 64, batch: 256, steps: 300, lr: 3e-3, lambda: 2e-2, target_firing_rate: 0.05, shuffle_buffer: 2048, ..Default::default() };
    let run = |trainer, steps, out: &str| {
        let cfg = TranscoderConfig { trainer: Some(trainer), steps, ..cfg.clone() };
        let report = train(&cfg, &mut CacheSource::open(&cache, cfg.shuffle_buffer, 1).unwrap(), &dir.path().join(out)).unwrap();
        evaluate(&report.transcoder, &mut CacheSource::open(&cache, 0, 0).unwrap(), 4096, 1024).unwrap()
    };
    let sparse = run(Trainer::Sparse, 300, "sparse");
    let auto = run(Trainer::Autodiff, 300, "autodiff");
    run(Trainer::Autodiff, 150, "moved");
    let moved = run(Trainer::Sparse, 300, "moved");
    println!("FVU sparse {:?} autodiff {:?} moved {:?}", sparse.fvu_per_layer, auto.fvu_per_layer, moved.fvu_per_layer);
    for m in [&sparse, &auto, &moved] {
        assert!(m.fvu_per_layer.iter().all(|&f| f < 0.3), "FVU {:?}", m.fvu_per_layer);
        for (a, b) in m.fvu_per_layer.iter().zip(&sparse.fvu_per_layer) {
            assert!((a - b).abs() <= 0.01, "FVU {:?} vs the sparse trainer's {:?}", m.fvu_per_layer, sparse.fvu_per_layer);
        }
        for (a, b) in m.l0_per_layer.iter().zip(&sparse.l0_per_layer) {
            assert!((a - b).abs() <= 0.1, "L0 {:?} vs the sparse trainer's {:?}", m.l0_per_layer, sparse.l0_per_layer);
        }
    }
}

/// The SAE on mlp_out (issue 13's baseline) reads and rebuilds mlp_out: trained on the planted
/// problem it reconstructs well, and resid_mid does not enter it at all.
#[test]
fn an_sae_reads_and_rebuilds_mlp_out_only() {
    use voltlens::transcoder::{Batch, MemorySource};
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("acts.safetensors");
    planted_cache(&cache, 4096, 2, 16);
    let cfg = TranscoderConfig { variant: Variant::Sae, features: 64, batch: 256, steps: 300, lr: 3e-3, lambda: 2e-2, target_firing_rate: 0.05, shuffle_buffer: 2048, ..Default::default() };
    let report = train(&cfg, &mut CacheSource::open(&cache, cfg.shuffle_buffer, 1).unwrap(), &dir.path().join("sae")).unwrap();
    let sae = report.transcoder;
    let mut held = CacheSource::open(&cache, 0, 0).unwrap();
    let batch = voltlens::transcoder::ActivationSource::next_batch(&mut held, 2048).unwrap();
    let noise = uniform(&mut ChaCha8Rng::seed_from_u64(5), batch.resid_mid.len(), 3.0);
    let scramble = Batch { resid_mid: noise, ..batch.clone() };
    let m = evaluate(&sae, &mut MemorySource::new(batch, (2, 16)), 2048, 512).unwrap();
    let scrambled = evaluate(&sae, &mut MemorySource::new(scramble, (2, 16)), 2048, 512).unwrap();
    println!("SAE FVU {:?} L0 {:?}", m.fvu_per_layer, m.l0_per_layer);
    assert!(m.fvu_per_layer.iter().all(|&f| f < 0.2), "FVU {:?}", m.fvu_per_layer);
    assert_eq!(m.fvu_per_layer, scrambled.fvu_per_layer, "resid_mid changed the SAE's reconstruction");
    // The skip path would copy the input: refused.
    let err = TranscoderConfig { skip: true, ..cfg }.validate().unwrap_err().to_string();
    assert!(err.contains("skip"), "{err}");
}

/// The pre-activation loss coef·mean_t Σ_f relu(θ_f − pre_tf)·‖W_dec,f‖ (autodiff trainer only)
/// adds exactly −coef/n · #{t: pre_tf < θ_f} · ‖W_dec,f‖ to each b_enc gradient, and the sparse
/// trainer refuses it.
#[test]
fn the_pre_activation_loss_pulls_every_feature_below_threshold_up() {
    use voltlens::transcoder::adam::Adam;
    use voltlens::transcoder::autodiff::{self, Decoding, DeviceTrainer, Terms};
    use voltlens::transcoder::Trainer;
    type Cpu = voltlens::model::backend::CpuTrain;
    let cfg = TranscoderConfig { features: 10, activation: Activation::JumpRelu { threshold: 0.2, bandwidth: 0.1 }, ..Default::default() };
    let (layers, d, n) = (2, 4, 32);
    let (model, x, y) = random_problem(&cfg, layers, d, n, 31);
    let var = vec![1.0, 1.0];
    let dev = DeviceTrainer::<Cpu>::new(&model, &Adam::new(&model, 1e-3), &var, Default::default());
    let b_enc_grad = |coef: f32| {
        let terms = Terms { var: dev.target_var.clone(), lambda: 0.0, sparsity: Sparsity::L1, preact_coef: coef, aux: None, decoding: Decoding::Auto };
        let (grad, _) = autodiff::loss_and_grad::<Cpu>(&dev.params, dev.upload(&x, layers * d), dev.upload(&y, layers * d), &terms);
        let mut host = model.clone();
        grad.to_host(&mut host);
        host.b_enc
    };
    let coef = 0.3;
    let (with, without) = (b_enc_grad(coef), b_enc_grad(0.0));
    let norms = model.decoder_norms();
    let f_n = cfg.features;
    let mut below_somewhere = 0;
    for e in 0..layers {
        for f in 0..f_n {
            let below = (0..n)
                .filter(|&t| {
                    let pre: f32 = (0..d).map(|k| x[t * layers * d + e * d + k] * model.w_enc[(e * d + k) * f_n + f]).sum::<f32>() + model.b_enc[e * f_n + f];
                    pre < model.threshold[e * f_n + f]
                })
                .count();
            below_somewhere += usize::from(below > 0);
            let want = -coef / n as f32 * below as f32 * norms[e * f_n + f];
            let got = with[e * f_n + f] - without[e * f_n + f];
            assert!((got - want).abs() <= 1e-4, "b_enc[{e}][{f}]: the pre-activation loss adds {got}, expected {want}");
        }
    }
    assert!(below_somewhere > 5, "too few features below threshold for the check to mean much");
    let err = TranscoderConfig { preact_coef: 0.1, trainer: Some(Trainer::Sparse), ..cfg }.validate().unwrap_err().to_string();
    assert!(err.contains("preact_coef") && err.contains("autodiff"), "{err}");
}

/// `decoding` belongs to the autodiff trainer: set, it picks that trainer on the CPU and is refused
/// beside `trainer = "sparse"`; left at `auto` it is not written, so configurations (and the
/// pipeline fingerprints made from them) read as they did before it existed.
#[test]
fn the_decoding_setting_selects_the_autodiff_trainer_and_is_written_only_when_set() {
    use voltlens::model::DeviceChoice;
    use voltlens::transcoder::{autodiff::Decoding, Trainer};
    let dense = TranscoderConfig { decoding: Decoding::Dense, ..Default::default() };
    assert_eq!(dense.trainer_on(DeviceChoice::Cpu), Trainer::Autodiff);
    assert_eq!(TranscoderConfig::default().trainer_on(DeviceChoice::Cpu), Trainer::Sparse);
    let err = TranscoderConfig { trainer: Some(Trainer::Sparse), ..dense.clone() }.validate().unwrap_err().to_string();
    assert!(err.contains("decoding") && err.contains("autodiff"), "{err}");
    assert!(!toml::to_string(&TranscoderConfig::default()).unwrap().contains("decoding"));
    let written = toml::to_string(&dense).unwrap();
    assert!(written.contains("decoding = \"dense\""), "{written}");
    assert_eq!(toml::from_str::<TranscoderConfig>(&written).unwrap(), dense);
}
