//! The one dense product of the trainer, pre = b + x·W_enc, and the small vector helpers the
//! sparse rest is built from.
//!
//! The product goes to the `gemm` crate (already in the tree through burn-flex): on this 2-core
//! AMD EPYC it runs the encoder's shapes at 140–185 GFLOP/s, about 2.5× the register-tiled
//! AVX2 kernel it replaced (66–72 GFLOP/s at d 64, F 1k–16k; measured with 256-row blocks on two
//! threads, torch's matmul on the same shapes: 130–184).

/// out[t, f] = b[f] + Σ_k x[t·stride + offset + k] · w[k, f] for the n = out.len() / F rows t,
/// k < d_in: rows read in place from token-major activations. w: [d_in, F]; out: [n, F].
/// Single-threaded: callers run one block of rows per rayon task.
pub(crate) fn affine_strided(x: &[f32], stride: usize, offset: usize, d_in: usize, w: &[f32], b: &[f32], out: &mut [f32]) {
    let f = b.len();
    let n = out.len() / f;
    assert!(w.len() == d_in * f && out.len() == n * f && (n == 0 || (n - 1) * stride + offset + d_in <= x.len()));
    for row in out.chunks_mut(f) {
        row.copy_from_slice(b);
    }
    if n == 0 || d_in == 0 {
        return;
    }
    // SAFETY: every index gemm reads or writes was bounds-checked by the assert above:
    // dst [n, F] row-major, lhs n rows of d_in at `stride`, rhs [d_in, F] row-major.
    unsafe {
        gemm::gemm(
            n,
            f,
            d_in,
            out.as_mut_ptr(),
            1,
            f as isize,
            true, // out = 1·out + 1·x·w: the bias is already there
            x.as_ptr().add(offset),
            1,
            stride as isize,
            w.as_ptr(),
            1,
            f as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Σ a·b with eight independent partial sums so that the loop vectorises.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

/// y += a·x.
#[inline]
pub(crate) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv += a * xv;
    }
}
