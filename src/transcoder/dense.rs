//! The one dense product of the trainer, pre = b + x·W_enc, as a register-tiled kernel.
//!
//! Everything after the encoder is sparse, so this product is where the time goes. The kernel keeps
//! a tile of TOKENS × LANES accumulators in registers and streams W_enc rows through them; on CPUs
//! with AVX2+FMA a copy compiled for those features is picked at run time (the crate is built for
//! baseline x86-64, which has neither). Everything else falls back to a portable row loop.

const TOKENS: usize = 4;
const LANES: usize = 16;

/// out[t, f] = b[f] + Σ_k x_rows[t][k] · w[k, f].   x_rows: T rows of d_in; w: [d_in, F]; out: [T, F].
pub(crate) fn affine_rows(x_rows: &[&[f32]], w: &[f32], b: &[f32], out: &mut [f32]) {
    let f = b.len();
    assert!(out.len() == x_rows.len() * f && x_rows.iter().all(|r| r.len() * f == w.len()));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        let full = f / LANES * LANES;
        for (rows, o) in x_rows.chunks(TOKENS).zip(out.chunks_mut(TOKENS * f)) {
            if rows.len() == TOKENS {
                for f0 in (0..full).step_by(LANES) {
                    // SAFETY: AVX2 and FMA were detected above; the shapes were asserted above.
                    unsafe { avx2::tile(rows, w, &b[f0..f0 + LANES], f, f0, o) };
                }
                rows.iter().zip(o.chunks_mut(f)).for_each(|(r, o)| portable_row(r, w, b, f, full, o));
            } else {
                rows.iter().zip(o.chunks_mut(f)).for_each(|(r, o)| portable_row(r, w, b, f, 0, o));
            }
        }
        return;
    }
    x_rows.iter().zip(out.chunks_mut(f)).for_each(|(r, o)| portable_row(r, w, b, f, 0, o));
}

/// Features f0..F of one token, one W_enc row at a time.
fn portable_row(row: &[f32], w: &[f32], b: &[f32], f: usize, f0: usize, out: &mut [f32]) {
    out[f0..].copy_from_slice(&b[f0..]);
    for (&xv, wk) in row.iter().zip(w.chunks_exact(f)) {
        axpy(xv, &wk[f0..], &mut out[f0..]);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{LANES, TOKENS};

    /// One TOKENS × LANES tile at feature f0: the 8 accumulators stay in registers while the
    /// W_enc rows stream past. out holds TOKENS full rows of F.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(rows: &[&[f32]], w: &[f32], bias: &[f32], f: usize, f0: usize, out: &mut [f32]) {
        let b0 = _mm256_loadu_ps(bias.as_ptr());
        let b1 = _mm256_loadu_ps(bias.as_ptr().add(8));
        let mut acc = [[b0, b1]; TOKENS];
        let xs: [*const f32; TOKENS] = std::array::from_fn(|t| rows[t].as_ptr());
        let mut wp = w.as_ptr().add(f0);
        for k in 0..rows[0].len() {
            let w0 = _mm256_loadu_ps(wp);
            let w1 = _mm256_loadu_ps(wp.add(8));
            for t in 0..TOKENS {
                let xv = _mm256_set1_ps(*xs[t].add(k));
                acc[t][0] = _mm256_fmadd_ps(xv, w0, acc[t][0]);
                acc[t][1] = _mm256_fmadd_ps(xv, w1, acc[t][1]);
            }
            wp = wp.add(f);
        }
        for (t, a) in acc.iter().enumerate() {
            let o = out.as_mut_ptr().add(t * f + f0);
            _mm256_storeu_ps(o, a[0]);
            _mm256_storeu_ps(o.add(8), a[1]);
        }
        debug_assert_eq!(LANES, 16);
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
