//! Benjamini–Hochberg false discovery rate across features × tested candidates (DESIGN §5 step 4).

/// BH q-values, same order as `p`: q_(i) = min_{j ≥ i} p_(j)·m/j, capped at 1.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut q = vec![1.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(p[i] * m as f64 / (rank + 1) as f64);
        q[i] = running.min(1.0);
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_values_match_hand_computation() {
        let q = benjamini_hochberg(&[0.01, 0.04, 0.03, 0.5]);
        // Sorted p: 0.01, 0.03, 0.04, 0.5 → raw 0.04, 0.06, 0.0533, 0.5 → monotone 0.04, 0.0533, 0.0533, 0.5.
        assert!((q[0] - 0.04).abs() < 1e-12);
        assert!((q[2] - 0.16 / 3.0).abs() < 1e-12);
        assert!((q[1] - 0.16 / 3.0).abs() < 1e-12);
        assert!((q[3] - 0.5).abs() < 1e-12);
    }
}
