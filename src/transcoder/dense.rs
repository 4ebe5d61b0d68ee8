//! The one dense product of the trainer, pre = [x, 1]·[W_enc; b_enc], and the small vector
//! helpers the sparse rest is built from.
//!
//! The product goes to the `matrixmultiply` crate (already in the tree through ndarray). On a
//! 2.25 GHz AMD EPYC (Zen 2), one thread, it ran the encoder's shapes (128 rows, d 64, F 1k–16k)
//! at 46–50 GFLOP/s, where the `gemm` crate ran them at 32–36; torch's matmul reaches 72 there at
//! 2,048³.
//!
//! The sparse loops built on `dot` and `axpy` are compiled twice by `multiversion`, once for
//! AVX2 + FMA, chosen at run time: our crate is built for baseline x86-64 (SSE2), so that the
//! binary runs on any x86-64 machine, and SSE2 alone left them 5–15 % slower.

/// out[t, f] = Σ_k x[t·stride + offset + k] · w[k·w_stride + f] for rows t < n, k < d_in,
/// f < cols: rows read in place from token-major activations, and any cols columns of a wider
/// weight matrix (w_stride apart). out is replaced by [n, cols], in its allocation when that is
/// large enough, and is not zeroed first: the product writes every value without reading it
/// (zeroing took 2 % of the encoder's time at F 4,096, by perf).
/// Single-threaded: callers run one block of rows per rayon task.
#[allow(clippy::too_many_arguments)]
pub(crate) fn product_strided(x: &[f32], stride: usize, offset: usize, d_in: usize, w: &[f32], w_stride: usize, cols: usize, n: usize, out: &mut Vec<f32>) {
    assert!(cols <= w_stride && (d_in == 0 || cols == 0 || (d_in - 1) * w_stride + cols <= w.len()));
    assert!(n == 0 || (n - 1) * stride + offset + d_in <= x.len());
    out.clear();
    if n == 0 || d_in == 0 || cols == 0 {
        out.resize(n * cols, 0.0);
        return;
    }
    out.reserve(n * cols);
    // SAFETY: every index sgemm reads or writes was bounds-checked by the asserts above and the
    // reserve: c [n, cols] row-major in out's capacity, a: n rows of d_in at `stride`, b: d_in rows
    // of cols at `w_stride`. With β = 0, sgemm writes every element of c and reads none
    // (matrixmultiply's documented contract), so all n·cols values are initialised.
    unsafe {
        matrixmultiply::sgemm(
            n,
            d_in,
            cols,
            1.0,
            x.as_ptr().add(offset),
            stride as isize,
            1,
            w.as_ptr(),
            w_stride as isize,
            1,
            0.0,
            out.as_mut_ptr(),
            cols as isize,
            1,
        );
        out.set_len(n * cols);
    }
}

/// Σ a·b with eight independent partial sums so that the loop vectorises (over fixed-size
/// chunks: over `chunks_exact` slices LLVM left it scalar).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let ((ca, ra), (cb, rb)) = (a[..n].as_chunks::<8>(), b[..n].as_chunks::<8>());
    let mut acc = [0f32; 8];
    for (x, y) in ca.iter().zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

/// out += Σ a·x over the (a, x) pairs, each element summed in the pairs' order (as repeated `axpy`s
/// would), but over a tile of out held in registers at a time: repeated `axpy`s into one out were
/// bound by storing it and loading it back for the next pair. Every x must be as long as out.
#[inline(always)]
pub(crate) fn add_weighted<'a>(terms: impl Iterator<Item = (f32, &'a [f32])> + Clone, out: &mut [f32]) {
    const TILE: usize = 64;
    let len = out.len();
    let (tiles, tail) = out.as_chunks_mut::<TILE>();
    for (c, tile) in tiles.iter_mut().enumerate() {
        let mut acc = *tile;
        for (a, x) in terms.clone() {
            let x: &[f32; TILE] = x[c * TILE..(c + 1) * TILE].try_into().expect("a tile");
            for j in 0..TILE {
                acc[j] += a * x[j];
            }
        }
        *tile = acc;
    }
    if !tail.is_empty() {
        let done = len - tail.len();
        for (a, x) in terms {
            axpy(a, &x[done..], tail);
        }
    }
}

/// y += a·x.
#[inline]
pub(crate) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv += a * xv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product agrees with a plain triple loop on shapes with odd rows and columns, a slice of
    /// a wider weight matrix, and rows read at a stride and offset; whatever `out` held is gone.
    #[test]
    fn product_strided_matches_the_definition() {
        let value = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
        for (n, d_in, f, extra_cols) in [(13, 64, 48, 0), (7, 5, 37, 3), (1, 1, 16, 0), (6, 20, 15, 1), (128, 65, 1024, 16)] {
            let (stride, offset, w_stride) = (d_in + 3, 2, f + extra_cols);
            let x: Vec<f32> = (0..n * stride + offset).map(value).collect();
            let w: Vec<f32> = (0..d_in * w_stride).map(|i| value(i + 11)).collect();
            let mut out = vec![f32::NAN; 3 * n * f]; // whatever out held is gone
            product_strided(&x, stride, offset, d_in, &w, w_stride, f, n, &mut out);
            assert_eq!(out.len(), n * f);
            for t in 0..n {
                for c in 0..f {
                    let want = (0..d_in).map(|k| x[t * stride + offset + k] as f64 * w[k * w_stride + c] as f64).sum::<f64>();
                    assert!((out[t * f + c] as f64 - want).abs() < 1e-4, "n {n} d_in {d_in} f {f}: [{t}, {c}] {} vs {want}", out[t * f + c]);
                }
            }
        }
    }
}
