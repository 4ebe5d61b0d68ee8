//! Stability over bootstrap resamples of cells (DESIGN §5 step 4): how often the label chosen on
//! the explain cells still wins when those cells are resampled with replacement.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Cell weights (multiplicities) of `n` bootstrap resamples of the explain cells; test cells
/// get weight 0. Shared by every feature so their weighted code totals are computed once.
pub fn bootstrap_weights(explain: &[bool], n: usize, seed: u64) -> Vec<Vec<f64>> {
    let members: Vec<usize> = (0..explain.len()).filter(|&c| explain[c]).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xB007_5742);
    (0..n)
        .map(|_| {
            let mut w = vec![0.0; explain.len()];
            for _ in 0..members.len() {
                w[members[rng.random_range(0..members.len())]] += 1.0;
            }
            w
        })
        .collect()
}
