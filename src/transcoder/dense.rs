//! The one dense product of the trainer, pre = b + x·W_enc, as a register-tiled kernel.
//!
//! Everything after the encoder is sparse, so this product is where the time goes. The kernel keeps
//! a tile of TOKENS × LANES accumulators in registers and streams W_enc rows through them; on CPUs
//! with AVX2+FMA a copy compiled for those features is picked at run time (the crate is built for
//! baseline x86-64, which has neither).

const TOKENS: usize = 4;
const LANES: usize = 16;

/// out[t, f] = b[f] + Σ_k x_rows[t][k] · w[k, f].   x_rows: T rows of d_in; w: [d_in, F]; out: [T, F].
pub(crate) fn affine_rows(x_rows: &[&[f32]], w: &[f32], b: &[f32], out: &mut [f32]) {
    let f = b.len();
    debug_assert_eq!(out.len(), x_rows.len() * f);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features this copy is compiled for were detected just above.
        unsafe { affine_rows_avx2(x_rows, w, b, out) };
        return;
    }
    affine_rows_body::<false>(x_rows, w, b, out, f);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn affine_rows_avx2(x_rows: &[&[f32]], w: &[f32], b: &[f32], out: &mut [f32]) {
    affine_rows_body::<true>(x_rows, w, b, out, b.len());
}

#[inline(always)]
fn madd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    // mul_add is one instruction with FMA and a slow libm call without it.
    if FUSED { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn affine_rows_body<const FUSED: bool>(x_rows: &[&[f32]], w: &[f32], b: &[f32], out: &mut [f32], f: usize) {
    let full = f / LANES * LANES;
    let mut t0 = 0;
    while t0 + TOKENS <= x_rows.len() {
        let rows: [&[f32]; TOKENS] = std::array::from_fn(|i| x_rows[t0 + i]);
        for f0 in (0..full).step_by(LANES) {
            tile::<FUSED>(&rows, w, b, f, f0, &mut out[t0 * f..(t0 + TOKENS) * f]);
        }
        for (i, row) in rows.iter().enumerate() {
            tail::<FUSED>(row, w, b, f, full, &mut out[(t0 + i) * f..(t0 + i + 1) * f]);
        }
        t0 += TOKENS;
    }
    for t in t0..x_rows.len() {
        tail::<FUSED>(x_rows[t], w, b, f, 0, &mut out[t * f..(t + 1) * f]);
    }
}

/// One TOKENS × LANES tile starting at feature f0; out holds TOKENS full rows of F.
#[inline(always)]
fn tile<const FUSED: bool>(rows: &[&[f32]; TOKENS], w: &[f32], b: &[f32], f: usize, f0: usize, out: &mut [f32]) {
    let bias: &[f32; LANES] = b[f0..f0 + LANES].try_into().unwrap();
    let mut acc = [*bias; TOKENS];
    for k in 0..rows[0].len() {
        let wk: &[f32; LANES] = w[k * f + f0..k * f + f0 + LANES].try_into().unwrap();
        for t in 0..TOKENS {
            let xv = rows[t][k];
            for j in 0..LANES {
                acc[t][j] = madd::<FUSED>(xv, wk[j], acc[t][j]);
            }
        }
    }
    for t in 0..TOKENS {
        out[t * f + f0..t * f + f0 + LANES].copy_from_slice(&acc[t]);
    }
}

/// Features from f0 to F of one token, row by row (the part that does not fill a tile).
#[inline(always)]
fn tail<const FUSED: bool>(row: &[f32], w: &[f32], b: &[f32], f: usize, f0: usize, out: &mut [f32]) {
    out[f0..].copy_from_slice(&b[f0..]);
    for (k, &xv) in row.iter().enumerate() {
        for (o, &wv) in out[f0..].iter_mut().zip(&w[k * f + f0..(k + 1) * f]) {
            *o = madd::<FUSED>(xv, wv, *o);
        }
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
