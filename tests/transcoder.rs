//! Transcoders: gradients, training, causality, export and resume (DESIGN.md §3).

use std::path::Path;

use voltlens::transcoder::bench::{bench_vs_reference, synthetic_cache};
use voltlens::transcoder::{Activation, TranscoderConfig};

/// `scripts/bench_clt.sh` runs this: VOLTLENS_BENCH_CACHE, _STEPS, _FEATURES, _THREADS, _LAM, _ACT, _K.
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
        ..Default::default()
    };
    let threads = var("THREADS", "2").parse().unwrap();
    let work = Path::new("/tmp/voltlens-bench");
    let r = bench_vs_reference(&cache, &cfg, threads, work).unwrap();
    println!("VOLTLENS_BENCH {}", serde_json::to_string(&r).unwrap());
}
