//! Null by circular time-shift (DESIGN §5 step 4): each cell's activations are rotated by a
//! random offset, which keeps their autocorrelation and firing rate but breaks their alignment
//! with the covariates.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::label::scoring::Firing;

/// Tries per cell at drawing a shift that does not lay the feature back onto its own firing.
const MAX_TRIES: usize = 50;

/// A feature's firing rows, grouped by cell: what a shift is checked against. Memory follows
/// the firing, not the record's length (a bitset over every step would grow with the data).
struct OwnFiring {
    /// Per cell, its firing rows (0-based within the cell), ascending.
    rows: Vec<Vec<u32>>,
}

impl OwnFiring {
    fn of(firing: &Firing, cell_offsets: &[usize]) -> OwnFiring {
        let mut rows = vec![Vec::new(); cell_offsets.len() - 1];
        for (&c, &step) in firing.cells.iter().zip(&firing.steps) {
            rows[c as usize].push(step - cell_offsets[c as usize] as u32);
        }
        rows.iter_mut().for_each(|r| r.sort_unstable());
        OwnFiring { rows }
    }

    /// How many of `own` (ascending rows of a cell of n rows) land on `own` again when rotated by
    /// `shift`. The rotated rows are two ascending runs, each merged against `own`.
    fn overlap(own: &[u32], n: usize, shift: usize) -> usize {
        let split = own.partition_point(|&r| (r as usize) + shift < n);
        let shifted = |r: &u32| (*r as usize + shift) % n;
        count_common(own[..split].iter().map(shifted), own) + count_common(own[split..].iter().map(shifted), own)
    }

    /// A random rotation of cell c (at least 5 % of its length each way, so that it is never a
    /// near-identity) that also does not carry the feature back onto its own firing.
    ///
    /// Cycling data repeat: rotating a feature that fires in every 2C discharge by about a cycle
    /// lines it up with the next cycle's discharges, and the null then measures the feature
    /// against itself, not against chance. A rotation is redrawn when the share of the firing
    /// it lands on firing rows is more than halfway from chance (the cell's firing density) to a
    /// full overlap; after `MAX_TRIES` the least overlapping one is kept. The choice looks at the
    /// feature alone, never at a covariate, so under the null (firing independent of the
    /// covariates) every kept rotation still scores like the unshifted one.
    fn shift(&self, c: usize, cell_offsets: &[usize], rng: &mut ChaCha8Rng) -> usize {
        let n = cell_offsets[c + 1] - cell_offsets[c];
        let margin = (n / 20).max(1);
        if n <= 2 * margin {
            return 0;
        }
        let own = &self.rows[c];
        if own.is_empty() {
            return rng.random_range(margin..n - margin);
        }
        let chance = own.len() as f64 / n as f64;
        let limit = chance + 0.5 * (1.0 - chance);
        let mut best = (f64::INFINITY, 0);
        for _ in 0..MAX_TRIES {
            let shift = rng.random_range(margin..n - margin);
            let overlap = Self::overlap(own, n, shift) as f64 / own.len() as f64;
            if overlap <= limit {
                return shift;
            }
            if overlap < best.0 {
                best = (overlap, shift);
            }
        }
        best.1
    }
}

/// How many values of the ascending `a` appear in the ascending `b` (both without repeats).
fn count_common(a: impl Iterator<Item = usize>, b: &[u32]) -> usize {
    let mut j = 0;
    a.filter(|&x| {
        while j < b.len() && (b[j] as usize) < x {
            j += 1;
        }
        j < b.len() && b[j] as usize == x
    })
    .count()
}

/// Firing steps with every cell rotated by its own random offset ([`OwnFiring::shift`]).
fn shifted_steps(firing: &Firing, own: &OwnFiring, cell_offsets: &[usize], rng: &mut ChaCha8Rng) -> Vec<u32> {
    let shifts: Vec<usize> = (0..cell_offsets.len() - 1).map(|c| own.shift(c, cell_offsets, rng)).collect();
    firing
        .cells
        .iter()
        .zip(&firing.steps)
        .map(|(&c, &step)| {
            let c = c as usize;
            let (n, row) = (cell_offsets[c + 1] - cell_offsets[c], step as usize - cell_offsets[c]);
            (cell_offsets[c] + (row + shifts[c]) % n) as u32
        })
        .collect()
}

/// A feature's circular-shift null: `n` draws from `seed`, regenerated for each candidate
/// (every candidate of a feature meets the same draws) instead of stored, so memory does not
/// grow with the number of shifts.
#[derive(Debug, Clone, Copy)]
pub struct ShiftNull {
    pub seed: u64,
    pub n: usize,
}

impl ShiftNull {
    pub fn draws<'a>(&self, firing: &'a Firing, cell_offsets: &'a [usize]) -> impl Iterator<Item = Vec<u32>> + 'a {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let own = OwnFiring::of(firing, cell_offsets);
        (0..self.n).map(move |_| shifted_steps(firing, &own, cell_offsets, &mut rng))
    }
}

/// Exceedances (null draws at or above `observed`) from which the empirical p is already
/// resolved well enough (Knijnenburg et al. 2009 use 10).
const MIN_EXCEEDANCES: usize = 10;
/// Share of the null draws, the largest, that the generalized Pareto tail is fitted to.
const TAIL_SHARE: f64 = 0.25;
/// The fitted tail is trusted this far below the empirical p and no further: fitted to a few
/// dozen draws, it extrapolated to p of 1e-43 (q printed as such), a precision no shift test has.
const MAX_TAIL_EXTRAPOLATION: f64 = 100.0;

/// One-sided p-values of `observed` against null draws: (reported, empirical).
///
/// The empirical p, (1 + #null ≥ observed) / (1 + n), cannot go below 1/(n+1), too coarse for
/// Benjamini–Hochberg across thousands of tests. Where fewer than `MIN_EXCEEDANCES` draws
/// reach the observed value, the reported p comes from a generalized Pareto distribution fitted
/// to the largest quarter of the draws (Knijnenburg et al. 2009, "Fewer permutations, more
/// accurate P-values"); it follows a heavy-tailed null where a normal fit would not. When the
/// tail cannot be fitted (a constant null) or the fit lies above the empirical p, the empirical
/// p is reported; the fit is not followed more than `MAX_TAIL_EXTRAPOLATION` below it.
pub fn p_values(observed: f64, null: &[f64]) -> (f64, f64) {
    let n = null.len();
    let exceed = null.iter().filter(|&&x| x >= observed).count();
    let empirical = (1.0 + exceed as f64) / (1.0 + n as f64);
    if exceed >= MIN_EXCEEDANCES {
        return (empirical, empirical);
    }
    let mut sorted = null.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let n_tail = ((TAIL_SHARE * n as f64) as usize).clamp(1, n.saturating_sub(1).max(1));
    if n_tail >= n || n_tail < 5 {
        return (empirical, empirical);
    }
    // Threshold halfway between the smallest tail draw and the largest draw below the tail.
    let threshold = 0.5 * (sorted[n_tail - 1] + sorted[n_tail]);
    let excess: Vec<f64> = sorted[..n_tail].iter().map(|x| x - threshold).collect();
    match GeneralizedPareto::fit(&excess) {
        // A fitted tail above the empirical p is heavier than the draws themselves show: a poor
        // fit, and the empirical p (a valid, conservative p-value) stands.
        Some(tail) => {
            let fitted = n_tail as f64 / n as f64 * tail.survival(observed - threshold);
            (fitted.clamp(empirical / MAX_TAIL_EXTRAPOLATION, empirical), empirical)
        }
        None => (empirical, empirical),
    }
}

/// Generalized Pareto distribution in Hosking's parametrisation: F(z) = 1 − (1 − k·z/σ)^(1/k),
/// z ≥ 0 (k > 0: bounded tail, k = 0: exponential, k < 0: heavy tail).
#[derive(Debug, Clone, Copy)]
struct GeneralizedPareto {
    k: f64,
    sigma: f64,
}

impl GeneralizedPareto {
    /// Probability-weighted-moment estimates (Hosking & Wallis 1987), valid for k > −0.5;
    /// None when the excesses are all zero.
    fn fit(excess: &[f64]) -> Option<GeneralizedPareto> {
        let mut z = excess.to_vec();
        z.sort_by(f64::total_cmp);
        let n = z.len() as f64;
        let a0 = z.iter().sum::<f64>() / n;
        let a1 = z.iter().enumerate().map(|(i, x)| (1.0 - (i as f64 + 0.65) / n) * x).sum::<f64>() / n;
        let denominator = a0 - 2.0 * a1;
        if a0 <= 1e-12 || denominator <= 1e-12 {
            return None;
        }
        Some(GeneralizedPareto { k: (a0 / denominator - 2.0).max(-0.5), sigma: 2.0 * a0 * a1 / denominator })
    }

    /// P(Z > z). Beyond the upper end of a bounded tail (k > 0) the fit would say 0, which no
    /// finite set of draws can show; there the exponential tail of the same scale (k = 0),
    /// heavier than any bounded one, gives a small p that is not zero.
    fn survival(&self, z: f64) -> f64 {
        let z = z.max(0.0);
        let base = 1.0 - self.k * z / self.sigma;
        if self.k.abs() < 1e-9 || base <= 0.0 {
            return (-z / self.sigma).exp();
        }
        base.powf(1.0 / self.k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::Pareto;

    /// Draws of a Pareto(scale 1, shape α) variable: P(X > x) = x^(−α), x ≥ 1.
    fn pareto_draws(alpha: f64, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let pareto = Pareto::new(1.0, alpha).expect("valid");
        (0..n).map(|_| rng.sample(pareto)).collect()
    }

    #[test]
    fn overlap_counts_the_rotated_rows_that_land_on_firing() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for _ in 0..200 {
            let n = rng.random_range(2..60usize);
            let own: Vec<u32> = (0..n as u32).filter(|_| rng.random_bool(0.4)).collect();
            let shift = rng.random_range(0..n);
            let brute = own.iter().filter(|&&r| own.contains(&(((r as usize + shift) % n) as u32))).count();
            assert_eq!(OwnFiring::overlap(&own, n, shift), brute, "{own:?} n {n} shift {shift}");
        }
    }

    #[test]
    fn shifts_do_not_lay_a_repeating_feature_back_onto_itself() {
        // Two cells of 20 cycles, 100 rows each; the feature fires in the first 30 rows of every
        // cycle. A rotation within 10 rows of a whole number of cycles, one in five, puts over
        // 65 % of its firing back on firing.
        let cell_offsets = [0, 2000, 4000];
        let entries: Vec<(u32, u32, f32)> = (0..2u32).flat_map(|c| (0..2000u32).filter(|r| r % 100 < 30).map(move |r| (c, r, 1.0))).collect();
        let firing = Firing::new(entries, &cell_offsets);
        let fires: std::collections::BTreeSet<u32> = firing.steps.iter().copied().collect();
        let overlap = |steps: &[u32]| steps.iter().filter(|s| fires.contains(s)).count() as f64 / steps.len() as f64;
        let draws: Vec<Vec<u32>> = ShiftNull { seed: 5, n: 300 }.draws(&firing, &cell_offsets).collect();
        // Chance is 0.3, so no draw may exceed halfway to 1, 0.65.
        assert!(draws.iter().all(|d| overlap(d) <= 0.65 + 1e-9));
        let distinct: std::collections::BTreeSet<u32> = draws.iter().map(|d| d[0]).collect();
        assert!(distinct.len() > 100, "the rotations still vary: {}", distinct.len());
    }

    #[test]
    fn a_heavy_tailed_null_gets_a_tail_p_near_the_true_one() {
        // 200 draws of Pareto(α = 2); the true P(X > 30) = 30^-2 ≈ 1.1e-3, beyond every draw's
        // empirical resolution. A normal fit to such draws puts it below 1e-10.
        let null = pareto_draws(2.0, 200, 3);
        let (p, empirical) = p_values(30.0, &null);
        assert!(empirical >= 1.0 / 201.0);
        assert!((2e-4..6e-3).contains(&p), "GPD tail p {p:e} for a true 1.1e-3");
    }

    #[test]
    fn a_resolved_p_is_the_empirical_one() {
        let null: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
        let (p, empirical) = p_values(0.5, &null);
        assert_eq!(p, empirical);
        assert!((empirical - 51.0 / 101.0).abs() < 1e-12);
    }

    #[test]
    fn a_value_beyond_a_bounded_null_gets_a_small_p_and_a_constant_null_the_empirical_one() {
        let null: Vec<f64> = (0..100).map(|i| 0.5 + 0.1 * (i as f64 / 100.0)).collect();
        let (p, empirical) = p_values(0.9, &null);
        assert!(p > 0.0 && p < 1e-3, "beyond the fitted tail's end: small but not zero, {p:e}");
        assert_eq!(p, empirical / MAX_TAIL_EXTRAPOLATION, "but no smaller than the draws can vouch for");
        let (p, empirical) = p_values(0.9, &[0.5; 100]);
        assert_eq!(p, empirical);
    }
}
