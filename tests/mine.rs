//! The mine stage on small synthetic activations: exact top-k against a brute-force pass, top
//! windows from distinct cells and cycles, statistics that add up, examples from every quantile
//! (each from another cell), the same result for any thread count, and tables on disk.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use voltlens::mine::stats::WindowKind;
use voltlens::mine::tables::write_mined;
use voltlens::mine::topk::{top_k_brute_force, TopK, TopLimits};
use voltlens::mine::{mine, mine_cells, FeatureActivations, InMemory, MineConfig, MinedFeatures, SparseActivations};

/// Sparse random activations with bursts and deliberate ties (values on a coarse grid).
fn random_run(seed: u64, cells: &[usize], density: f64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    cells
        .iter()
        .map(|&n| (0..n).map(|_| if rng.random::<f64>() < density { (rng.random_range(1..40) as f32) / 8.0 } else { 0.0 }).collect())
        .collect()
}

/// Cycle numbers per row: cycles of `len` rows.
fn cycles(cells: &[usize], len: usize) -> Vec<Vec<f32>> {
    cells.iter().map(|&n| (0..n).map(|r| (r / len) as f32).collect()).collect()
}

fn streamed(f: &FeatureActivations, cycles: &[Vec<f32>], lim: TopLimits) -> TopK {
    let mut top = TopK::default();
    for c in 0..cycles.len() {
        let (rows, values) = f.cell(c);
        top.add_cell(c, rows, values, Some(&cycles[c]), lim);
    }
    top
}

#[test]
fn top_k_fed_a_cell_at_a_time_is_exact_against_brute_force() {
    let cells = [500, 1200, 37, 800];
    for seed in 0..40 {
        let density = [0.01, 0.1, 0.6][seed as usize % 3];
        let f = FeatureActivations::from_dense(0, seed as u32, &random_run(seed, &cells, density));
        for cycle_len in [15, 200, 100_000] {
            let cyc = cycles(&cells, cycle_len);
            for (k, radius, per_cell) in [(1, 0, 1), (5, 3, 2), (20, 16, 3), (200, 2, 1000)] {
                let lim = TopLimits { k, radius, per_cell };
                assert_eq!(streamed(&f, &cyc, lim).peaks, top_k_brute_force(&f, &cyc, lim), "seed {seed}, cycles of {cycle_len}, {lim:?}");
            }
        }
    }
}

#[test]
fn top_windows_come_from_distinct_cycles_capped_per_cell_highest_first() {
    let cells = [3000, 2000, 2500];
    let cyc = cycles(&cells, 90);
    let f = FeatureActivations::from_dense(0, 0, &random_run(9, &cells, 0.2));
    let lim = TopLimits { k: 6, radius: 10, per_cell: 2 };
    let peaks = streamed(&f, &cyc, lim).peaks;
    assert_eq!(peaks.len(), 6, "three cells, two windows each");
    let events: BTreeSet<(usize, u32)> = peaks.iter().map(|p| (p.cell, cyc[p.cell][p.row as usize] as u32)).collect();
    assert_eq!(events.len(), 6, "one window per (cell, cycle)");
    for c in 0..3 {
        assert_eq!(peaks.iter().filter(|p| p.cell == c).count(), 2, "cell {c} holds two");
    }
    assert!(peaks.windows(2).all(|w| w[0].value >= w[1].value));
}

/// One event repeated: a cell whose highest activations are a long plateau in one step, then
/// the same pattern in its next cycles, and lower but distinct events in other cells. Without
/// the cycle and cell rules, the four windows a card shows all come from the first cell.
#[test]
fn a_repeated_event_fills_at_most_two_of_the_top_four_windows() {
    let cells = [4000, 1000, 1000, 1000];
    let mut dense: Vec<Vec<f32>> = cells.iter().map(|&n| vec![0.0; n]).collect();
    for cycle in 0..10 {
        // The same step in every cycle of cell 0: 300 rows at 5.0 and slightly above.
        for r in 0..300 {
            dense[0][cycle * 400 + 50 + r] = 5.0 + r as f32 * 1e-4 - cycle as f32 * 1e-3;
        }
    }
    for (c, value) in [(1, 3.0), (2, 2.5), (3, 2.0)] {
        dense[c][500] = value;
    }
    let f = FeatureActivations::from_dense(0, 0, &dense);
    let acts = SparseActivations { cell_ids: (0..4).map(|c| format!("c{c}")).collect(), cell_rows: cells.to_vec(), features: vec![f] };
    let cyc = cycles(&cells, 400);
    let mined = mine_cells(&InMemory { acts: &acts, cycles: Some(&cyc) }, &MineConfig::default()).unwrap();
    let top: Vec<_> = mined.features[0].windows.iter().filter(|w| w.kind == WindowKind::Top).take(4).collect();
    let cells_shown: Vec<usize> = top.iter().map(|w| w.cell).collect();
    assert_eq!(cells_shown, [0, 0, 1, 2], "two of cell 0 (cycles {:?}), then the other cells' events", top.iter().map(|w| w.peak_row / 400).collect::<Vec<_>>());
    assert_ne!(top[0].peak_row / 400, top[1].peak_row / 400, "not the same cycle twice");
}

fn planted(cells: &[usize]) -> SparseActivations {
    let per_feature: Vec<_> = (0..6).map(|i| random_run(100 + i, cells, 0.05 + 0.1 * i as f64)).collect();
    SparseActivations {
        cell_ids: (0..cells.len()).map(|c| format!("cell{c}")).collect(),
        cell_rows: cells.to_vec(),
        features: per_feature.iter().enumerate().map(|(i, d)| FeatureActivations::from_dense(1, i as u32, d)).collect(),
    }
}

#[test]
fn mined_statistics_add_up_and_examples_cover_every_quantile_from_distinct_cells() {
    let cells = vec![700, 1500, 900, 1100, 400];
    let acts = planted(&cells);
    let cyc = cycles(&cells, 120);
    let cfg = MineConfig::default();
    let mined = mine_cells(&InMemory { acts: &acts, cycles: Some(&cyc) }, &cfg).unwrap();
    assert_eq!(mined.features.len(), 6);
    for (m, f) in mined.features.iter().zip(&acts.features) {
        let steps: usize = cells.iter().sum();
        let values: Vec<f32> = f.entries().map(|e| e.2).collect();
        assert!((m.density - values.len() as f64 / steps as f64).abs() < 1e-12);
        assert!((m.mean - values.iter().map(|&v| v as f64).sum::<f64>() / steps as f64).abs() < 1e-6);
        assert_eq!(m.max, values.iter().copied().fold(0.0, f32::max));
        assert_eq!(m.histogram_counts.iter().sum::<u64>(), values.len() as u64, "every firing step lands in one histogram bin");
        let mut sorted = values.clone();
        sorted.sort_by(f32::total_cmp);
        let n = sorted.len();
        let mut by_quantile: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for w in m.windows.iter().filter(|w| w.kind == WindowKind::Quantile) {
            by_quantile.entry(w.rank).or_default().push(w.cell);
            // The decile's value range, widened by one bin of the fine grid (2.3 %).
            let (lo, hi) = (sorted[w.rank * n / 10], sorted[(w.rank + 1) * n / 10 - 1]);
            assert!(w.value >= lo / 1.03 && w.value <= hi * 1.03, "decile {}: {} outside [{lo}, {hi}]", w.rank, w.value);
            assert_eq!(f.cell(w.cell).0.binary_search(&w.peak_row).map(|i| f.cell(w.cell).1[i]), Ok(w.value), "a real firing step");
        }
        assert_eq!(by_quantile.len(), cfg.n_quantiles, "an example from each of the 10 activation quantiles");
        for (q, cells_used) in &by_quantile {
            assert_eq!(cells_used.len(), cfg.examples_per_quantile);
            assert_ne!(cells_used[0], cells_used[1], "decile {q}: two examples from one cell");
        }
        for w in m.windows.iter().filter(|w| w.kind == WindowKind::NonFiring) {
            assert!(f.cell(w.cell).0.binary_search(&w.peak_row).is_err(), "non-firing windows are centred on silent steps");
        }
        assert!(m.windows.iter().all(|w| w.start_row <= w.peak_row && w.peak_row < w.end_row && w.end_row as usize <= cells[w.cell]));
    }

    let dir = tempfile::tempdir().unwrap();
    write_mined(dir.path(), &mined).unwrap();
    for name in ["features.parquet", "features.csv", "examples.parquet", "examples.csv"] {
        assert!(dir.path().join(name).exists(), "{name} written");
    }
}

#[test]
fn mining_gives_the_same_result_for_any_thread_count() {
    let cells = vec![700, 1500, 900, 1100];
    let acts = planted(&cells);
    let run = |threads| -> MinedFeatures {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| mine(&acts, &MineConfig { seed: 3, ..MineConfig::default() }))
    };
    let one = format!("{:?}", run(1).features);
    assert_eq!(format!("{:?}", run(4).features), one);
    let other_seed = mine(&acts, &MineConfig { seed: 4, ..MineConfig::default() });
    assert_ne!(format!("{:?}", other_seed.features), one, "the seed draws the examples");
}
