//! The mine stage on small synthetic activations: exact top-k against a brute-force pass,
//! statistics that add up, examples from every quantile, and tables on disk.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use voltlens::mine::stats::WindowKind;
use voltlens::mine::tables::write_mined;
use voltlens::mine::topk::{top_k, top_k_brute_force};
use voltlens::mine::{mine, FeatureActivations, MineConfig, SparseActivations};

/// Sparse random activations with bursts and deliberate ties (values on a coarse grid).
fn random_run(seed: u64, cells: &[usize], density: f64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    cells
        .iter()
        .map(|&n| (0..n).map(|_| if rng.random::<f64>() < density { (rng.random_range(1..40) as f32) / 8.0 } else { 0.0 }).collect())
        .collect()
}

#[test]
fn top_k_is_exact_against_brute_force() {
    let cells = [500, 1200, 37, 800];
    for seed in 0..40 {
        let density = [0.01, 0.1, 0.6][seed as usize % 3];
        let f = FeatureActivations::from_dense(0, seed as u32, &random_run(seed, &cells, density));
        for (k, radius) in [(1, 0), (5, 3), (20, 16), (200, 2)] {
            assert_eq!(top_k(&f, k, radius), top_k_brute_force(&f, k, radius), "seed {seed}, k {k}, radius {radius}");
        }
    }
}

#[test]
fn top_windows_do_not_overlap_and_are_highest_first() {
    let f = FeatureActivations::from_dense(0, 0, &random_run(9, &[3000], 0.2));
    let peaks = top_k(&f, 30, 10);
    assert_eq!(peaks.len(), 30);
    for (i, a) in peaks.iter().enumerate() {
        for b in &peaks[i + 1..] {
            assert!(a.value >= b.value);
            assert!(a.cell != b.cell || a.row.abs_diff(b.row) > 20, "windows of ±10 steps overlap");
        }
    }
}

#[test]
fn mined_statistics_add_up_and_examples_cover_every_quantile() {
    let cells = vec![700, 1500, 900];
    let per_feature: Vec<_> = (0..6).map(|i| random_run(100 + i, &cells, 0.05 + 0.1 * i as f64)).collect();
    let acts = SparseActivations {
        cell_ids: vec!["a".into(), "b".into(), "c".into()],
        cell_rows: cells.clone(),
        features: per_feature.iter().enumerate().map(|(i, d)| FeatureActivations::from_dense(1, i as u32, d)).collect(),
    };
    let cfg = MineConfig::default();
    let mined = mine(&acts, &cfg);
    for (m, dense) in mined.features.iter().zip(&per_feature) {
        let all: Vec<f32> = dense.iter().flatten().copied().collect();
        let firing = all.iter().filter(|v| **v > 0.0).count();
        assert!((m.density - firing as f64 / all.len() as f64).abs() < 1e-12);
        assert!((m.mean - all.iter().map(|&v| v as f64).sum::<f64>() / all.len() as f64).abs() < 1e-6);
        assert_eq!(m.max, all.iter().copied().fold(0.0, f32::max));
        assert_eq!(m.histogram_counts.iter().sum::<u64>(), firing as u64, "every firing step lands in one histogram bin");
        let quantiles: std::collections::BTreeSet<usize> = m.windows.iter().filter(|w| w.kind == WindowKind::Quantile).map(|w| w.rank).collect();
        assert_eq!(quantiles.len(), cfg.n_quantiles, "an example from each of the 10 activation quantiles");
        for w in m.windows.iter().filter(|w| w.kind == WindowKind::NonFiring) {
            assert_eq!(dense[w.cell][w.peak_row as usize], 0.0, "non-firing windows are centred on silent steps");
        }
        assert!(m.windows.iter().all(|w| w.start_row <= w.peak_row && w.peak_row < w.end_row && w.end_row as usize <= cells[w.cell]));
    }
    let again = mine(&acts, &cfg);
    assert_eq!(format!("{:?}", again.features), format!("{:?}", mined.features), "deterministic by seed");

    let dir = tempfile::tempdir().unwrap();
    write_mined(dir.path(), &mined).unwrap();
    for name in ["features.parquet", "features.csv", "examples.parquet", "examples.csv"] {
        assert!(dir.path().join(name).exists(), "{name} written");
    }
}
