//! The linear baseline of `eval-model`: ridge regression of the scaled ΔV on the same normalised
//! channels the transformer reads, over the last `lags` steps (the current one included).

use super::inputs::ModelSteps;

/// Rows used to fit at most; beyond that the training steps are thinned evenly.
const MAX_FIT_ROWS: usize = 400_000;

pub struct Ridge {
    lags: usize,
    /// lags·channels weights, then the bias.
    weights: Vec<f64>,
}

impl Ridge {
    /// Fits on every step of `cells` (of `width` channels; none: the baseline is persistence);
    /// `lambda` is the penalty per training row (the bias is not penalised).
    pub fn fit(cells: &[ModelSteps], width: usize, lags: usize, lambda: f64) -> Ridge {
        let lags = lags.max(1);
        let p = lags * width + 1;
        let total: usize = cells.iter().map(ModelSteps::steps).sum();
        let every = total.div_ceil(MAX_FIT_ROWS).max(1);
        let mut xtx = vec![0f64; p * p];
        let mut xty = vec![0f64; p];
        let mut features = vec![0f64; p];
        let mut n = 0usize;
        for cell in cells {
            for t in (0..cell.steps()).step_by(every) {
                fill_features(cell, t, lags, &mut features);
                let y = cell.target[t] as f64;
                for i in 0..p {
                    xty[i] += features[i] * y;
                    // Upper triangle only; mirrored below.
                    for j in i..p {
                        xtx[i * p + j] += features[i] * features[j];
                    }
                }
                n += 1;
            }
        }
        for i in 0..p {
            for j in 0..i {
                xtx[i * p + j] = xtx[j * p + i];
            }
        }
        for i in 0..p - 1 {
            xtx[i * p + i] += lambda * n as f64;
        }
        // A tiny ridge on the bias too keeps an empty or constant training set solvable.
        xtx[p * p - 1] += 1e-9;
        Ridge { lags, weights: solve_spd(xtx, xty, p) }
    }

    /// Scaled ΔV predictions for every step of `cell`.
    pub fn predict(&self, cell: &ModelSteps) -> Vec<f32> {
        let mut features = vec![0f64; self.weights.len()];
        (0..cell.steps())
            .map(|t| {
                fill_features(cell, t, self.lags, &mut features);
                features.iter().zip(&self.weights).map(|(f, w)| f * w).sum::<f64>() as f32
            })
            .collect()
    }
}

/// Channels of steps t, t−1, …, t−lags+1 (the first step repeated before a cell starts), then 1.
fn fill_features(cell: &ModelSteps, t: usize, lags: usize, out: &mut [f64]) {
    for lag in 0..lags {
        let s = t.saturating_sub(lag);
        let w = cell.width;
        let row = &cell.inputs[s * w..(s + 1) * w];
        for (o, &v) in out[lag * w..(lag + 1) * w].iter_mut().zip(row) {
            *o = v as f64;
        }
    }
    out[lags * cell.width] = 1.0;
}

/// Solves A x = b for a symmetric positive-definite A [p, p] by Cholesky decomposition.
fn solve_spd(mut a: Vec<f64>, mut b: Vec<f64>, p: usize) -> Vec<f64> {
    for j in 0..p {
        let mut d = a[j * p + j];
        for k in 0..j {
            d -= a[j * p + k] * a[j * p + k];
        }
        let d = d.max(1e-12).sqrt();
        a[j * p + j] = d;
        for i in j + 1..p {
            let mut s = a[i * p + j];
            for k in 0..j {
                s -= a[i * p + k] * a[j * p + k];
            }
            a[i * p + j] = s / d;
        }
    }
    // L y = b, then Lᵀ x = y.
    for i in 0..p {
        for k in 0..i {
            b[i] -= a[i * p + k] * b[k];
        }
        b[i] /= a[i * p + i];
    }
    for i in (0..p).rev() {
        for k in i + 1..p {
            b[i] -= a[k * p + i] * b[k];
        }
        b[i] /= a[i * p + i];
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::N_CHANNELS;

    #[test]
    fn ridge_recovers_a_linear_rule() {
        // target = 2·channel0 − channel3 + 0.5, no noise: a tiny penalty finds it.
        let steps = 500;
        let inputs: Vec<f32> = (0..steps * N_CHANNELS).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        let target = (0..steps).map(|t| 2.0 * inputs[t * N_CHANNELS] - inputs[t * N_CHANNELS + 3] + 0.5).collect();
        let cell = ModelSteps { cell_id: "c".into(), inputs, width: N_CHANNELS, target };
        let ridge = Ridge::fit(std::slice::from_ref(&cell), N_CHANNELS, 1, 1e-9);
        let pred = ridge.predict(&cell);
        let max_err = pred.iter().zip(&cell.target).map(|(p, t)| (p - t).abs()).fold(0f32, f32::max);
        assert!(max_err < 1e-3, "max error {max_err}");
    }
}
