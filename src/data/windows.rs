//! Windows and splits (DESIGN.md §1.5): windows of `context` steps within a cell, splits by cell
//! (never by window), normalisation statistics from the train split only.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Which cells train, validate and test a run; stored with the run so later stages agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub seed: u64,
    pub train: Vec<String>,
    pub val: Vec<String>,
    pub test: Vec<String>,
}

impl Split {
    /// Deterministic split of cells: ids are sorted first so the input order does not matter.
    /// Each non-zero fraction gets at least one cell when there are enough cells.
    pub fn by_cell(cell_ids: &[String], val_fraction: f64, test_fraction: f64, seed: u64) -> Split {
        let mut ids: Vec<String> = cell_ids.to_vec();
        ids.sort();
        ids.dedup();
        ids.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let n = ids.len();
        let count = |fraction: f64| -> usize {
            if fraction <= 0.0 || n < 3 {
                return 0;
            }
            ((fraction * n as f64).round() as usize).max(1)
        };
        let n_test = count(test_fraction);
        let n_val = count(val_fraction).min(n.saturating_sub(n_test + 1));
        let test = ids[..n_test].to_vec();
        let val = ids[n_test..n_test + n_val].to_vec();
        let mut train = ids[n_test + n_val..].to_vec();
        let sorted = |v: Vec<String>| {
            let mut v = v;
            v.sort();
            v
        };
        train.sort();
        Split { seed, train, val: sorted(val), test: sorted(test) }
    }
}

/// A window: `context` consecutive steps of one cell starting at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Index of the cell in the dataset's cell list.
    pub cell: usize,
    pub start: usize,
}

/// All windows of `context` steps every `stride` steps, within each cell. A cell shorter than
/// `context` yields no window; the last window is aligned to the cell's end so no tail is lost.
pub fn windows(cell_lengths: &[usize], context: usize, stride: usize) -> Vec<Window> {
    assert!(context > 0 && stride > 0, "context and stride must be positive");
    let mut out = Vec::new();
    for (cell, &len) in cell_lengths.iter().enumerate() {
        if len < context {
            continue;
        }
        let last = len - context;
        let mut start = 0;
        while start < last {
            out.push(Window { cell, start });
            start += stride;
        }
        out.push(Window { cell, start: last });
    }
    out
}

/// Per-channel mean and standard deviation, fitted on training rows only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormStats {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl NormStats {
    /// Fits on rows of `channels` values each (f64 accumulation; a constant channel gets std 1).
    pub fn fit<'a>(rows: impl IntoIterator<Item = &'a [f32]>, channels: usize) -> NormStats {
        let mut n = 0f64;
        let mut sum = vec![0f64; channels];
        let mut sum_sq = vec![0f64; channels];
        for row in rows {
            debug_assert_eq!(row.len(), channels);
            n += 1.0;
            for (c, &v) in row.iter().enumerate() {
                sum[c] += v as f64;
                sum_sq[c] += (v as f64) * (v as f64);
            }
        }
        let n = n.max(1.0);
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std = sum_sq
            .iter()
            .zip(&sum)
            .map(|(sq, s)| {
                let var = (sq / n - (s / n) * (s / n)).max(0.0);
                if var > 1e-12 { var.sqrt() as f32 } else { 1.0 }
            })
            .collect();
        NormStats { mean, std }
    }

    /// Normalises one row in place.
    pub fn apply(&self, row: &mut [f32]) {
        for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
            *v = (*v - m) / s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("cell-{i:02}")).collect()
    }

    #[test]
    fn split_is_by_cell_deterministic_and_disjoint() {
        let a = Split::by_cell(&ids(20), 0.1, 0.2, 7);
        let mut shuffled = ids(20);
        shuffled.reverse();
        assert_eq!(a, Split::by_cell(&shuffled, 0.1, 0.2, 7), "input order must not matter");
        assert_ne!(a, Split::by_cell(&ids(20), 0.1, 0.2, 8), "seed must matter");
        assert_eq!((a.train.len(), a.val.len(), a.test.len()), (14, 2, 4));
        let mut all: Vec<_> = a.train.iter().chain(&a.val).chain(&a.test).cloned().collect();
        all.sort();
        assert_eq!(all, ids(20));
    }

    #[test]
    fn small_datasets_keep_a_training_cell() {
        let s = Split::by_cell(&ids(3), 0.3, 0.3, 1);
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (1, 1, 1));
        let s = Split::by_cell(&ids(1), 0.3, 0.3, 1);
        assert_eq!(s.train.len(), 1);
    }

    #[test]
    fn windows_cover_every_step_and_stay_inside_cells() {
        let w = windows(&[10, 3, 7], 4, 3);
        assert!(w.iter().all(|w| w.cell != 1), "a cell shorter than the context has no window");
        let cell0: Vec<usize> = w.iter().filter(|w| w.cell == 0).map(|w| w.start).collect();
        assert_eq!(cell0, vec![0, 3, 6]);
        let cell2: Vec<usize> = w.iter().filter(|w| w.cell == 2).map(|w| w.start).collect();
        assert_eq!(cell2, vec![0, 3]);
    }

    #[test]
    fn norm_stats_standardise() {
        let rows = [[1.0f32, 5.0], [3.0, 5.0]];
        let stats = NormStats::fit(rows.iter().map(|r| &r[..]), 2);
        assert_eq!(stats.mean, vec![2.0, 5.0]);
        assert_eq!(stats.std, vec![1.0, 1.0]);
        let mut r = [3.0f32, 5.0];
        stats.apply(&mut r);
        assert_eq!(r, [1.0, 0.0]);
    }
}
