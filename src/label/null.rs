//! Null by circular time-shift (DESIGN §5 step 4): each cell's activations are rotated by a
//! random offset, which keeps their autocorrelation and firing rate but breaks their alignment
//! with the covariates.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::label::scoring::Firing;

/// Firing steps with every cell rotated by its own random offset (at least 5 % of the cell's
/// length each way, so a shift is never a near-identity).
pub fn shifted_steps(firing: &Firing, cell_offsets: &[usize], rng: &mut ChaCha8Rng) -> Vec<u32> {
    let n_cells = cell_offsets.len() - 1;
    let shifts: Vec<usize> = (0..n_cells)
        .map(|c| {
            let n = cell_offsets[c + 1] - cell_offsets[c];
            let margin = (n / 20).max(1);
            if n <= 2 * margin { 0 } else { rng.random_range(margin..n - margin) }
        })
        .collect();
    firing
        .cells
        .iter()
        .zip(&firing.rows)
        .map(|(&c, &row)| {
            let c = c as usize;
            let n = cell_offsets[c + 1] - cell_offsets[c];
            (cell_offsets[c] + (row as usize + shifts[c]) % n) as u32
        })
        .collect()
}

/// One-sided p-value of `observed` against null draws.
///
/// With a few hundred shifts the empirical p cannot go below 1/(n+1), too coarse for
/// Benjamini–Hochberg across thousands of tests, so the tail comes from a normal fitted to the
/// null draws; the empirical p is kept as a floor-free cross-check in the output.
pub fn p_values(observed: f64, null: &[f64]) -> (f64, f64) {
    let n = null.len() as f64;
    let exceed = null.iter().filter(|&&x| x >= observed).count() as f64;
    let empirical = (1.0 + exceed) / (1.0 + n);
    let mean = null.iter().sum::<f64>() / n;
    let sd = (null.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    let normal = if sd > 1e-12 { 0.5 * erfc((observed - mean) / (sd * std::f64::consts::SQRT_2)) } else { empirical };
    (normal, empirical)
}

/// Complementary error function (Numerical Recipes `erfcc`, relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        assert!((erfc(0.0) - 1.0).abs() < 1e-6);
        assert!((erfc(1.0) - 0.157_299_207).abs() < 1e-6);
        assert!((erfc(-1.0) - 1.842_700_793).abs() < 1e-6);
    }
}
