//! Small statistics shared by the stages.

/// Mean and population variance, in f64 whatever the input; (NaN, NaN) for no values.
pub fn mean_var(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let (mut n, mut mean, mut m2) = (0u64, 0.0f64, 0.0f64);
    for v in values {
        // Welford's update: stable where sum-of-squares minus square-of-sum cancels.
        n += 1;
        let delta = v - mean;
        mean += delta / n as f64;
        m2 += delta * (v - mean);
    }
    if n == 0 {
        (f64::NAN, f64::NAN)
    } else {
        (mean, m2 / n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_var_matches_the_two_pass_formula() {
        let xs = [1e9 + 1.0, 1e9 + 2.0, 1e9 + 4.0, 1e9 + 9.0];
        let (m, v) = mean_var(xs);
        let m2 = xs.iter().sum::<f64>() / 4.0;
        let v2 = xs.iter().map(|x| (x - m2).powi(2)).sum::<f64>() / 4.0;
        assert!((m - m2).abs() < 1e-6, "{m} vs {m2}");
        assert!((v - v2).abs() < 1e-6, "{v} vs {v2}");
        assert!(mean_var([]).0.is_nan());
    }
}
