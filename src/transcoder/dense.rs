//! The one dense product of the trainer, pre = x·W_enc + b_enc, and the small vector helpers the
//! sparse rest is built from.
//!
//! The product and the sparse loops built on `dot` and `axpy` are compiled three times by
//! `multiversion`, for AVX-512, for AVX2 + FMA and for baseline x86-64 (SSE2), chosen at run time:
//! our crate is built for baseline x86-64 so that the binary runs on any x86-64 machine, and SSE2
//! alone left them 5–15 % slower. AVX-512 ran the encoder 4–7 % faster than AVX2 (F 1,024–4,096, 2
//! threads, a Xeon with AVX-512). Every copy gives the same results: each does the same
//! operations in the same order, fused multiply-adds only where the code asks for them.

/// Columns per panel of `Panels`: one AVX-512 register, two AVX ones.
const NR: usize = 16;
/// Token rows per tile of `product`: MR × NR sums held in registers beside a row of the panel.
/// Six rows fill twelve of AVX's sixteen registers. On AVX-512 six rows are six of thirty-two,
/// too few independent sums to keep both fused multiply-add units busy; twelve rows ran the
/// product 8–23 % faster there (one thread: 12–48 rows × 4,096 columns, 256 × 1,024), but not at
/// 256 × 4,096, whose 4 MiB of output leave the L2 cache (hence `clt`'s blocks of rows).
const MR_AVX: usize = 6;
const MR_AVX512: usize = 12;
/// Rows per block of `product` that callers should use: a multiple of every tile's height.
pub(crate) const ROW_BLOCK: usize = MR_AVX512;
/// How many panel rows ahead `tile` asks for: callers that run few rows per call stream the panels
/// from the L2 cache, and the tile then waits on each panel row (perf: the samples pile up on the
/// first multiply-add after its load). The encoder ran 3 % faster with it (F 4,096, 24-row blocks).
const PREFETCH_ROWS: usize = 8;

/// A weight matrix [k, cols] and a bias [cols], stored once as panels of NR columns, each panel its
/// bias then its k rows, contiguous, the last panel padded with zeros. Packed once per call of
/// the encoder, every task of rows reads the same panels: `matrixmultiply`, which we used before,
/// takes its operands unpacked and packed W_enc again for every task, 10 % of the encoder's time
/// (perf, F 4,096).
pub(crate) struct Panels {
    k: usize,
    cols: usize,
    /// Per panel: bias, then rows 0..k.
    data: Vec<[f32; NR]>,
}

impl Panels {
    /// Packs w [k, cols] (row-major, rows `w_stride` apart) and bias [cols] (zeros when None).
    pub(crate) fn pack(w: &[f32], w_stride: usize, k: usize, cols: usize, bias: Option<&[f32]>) -> Self {
        assert!(k > 0 && cols <= w_stride && (k - 1) * w_stride + cols <= w.len() && bias.is_none_or(|b| b.len() == cols));
        let mut data = vec![[0.0; NR]; cols.div_ceil(NR) * (k + 1)];
        for (p, panel) in data.chunks_exact_mut(k + 1).enumerate() {
            let (c0, width) = (p * NR, NR.min(cols - p * NR));
            if let Some(bias) = bias {
                panel[0][..width].copy_from_slice(&bias[c0..c0 + width]);
            }
            for (kk, row) in panel[1..].iter_mut().enumerate() {
                row[..width].copy_from_slice(&w[kk * w_stride + c0..][..width]);
            }
        }
        Self { k, cols, data }
    }
}

/// out[t, c - c0] = bias[c] + Σ_kk x[t·stride + offset + kk] · w[kk, c] for rows t < n and columns
/// c0 ≤ c < c1 (c0 a multiple of 16): rows read in place from token-major activations. out is
/// replaced by [n, c1 - c0], in its allocation when that is large enough.
/// Single-threaded: callers run one block of rows per rayon task.
///
/// Hand-written because no crate we found multiplies by an operand packed once for many calls;
/// compiled for AVX2 + FMA too (the module comment says why).
pub(crate) fn product(x: &[f32], stride: usize, offset: usize, n: usize, w: &Panels, c0: usize, c1: usize, out: &mut Vec<f32>) {
    let k = w.k;
    assert!(c0 % NR == 0 && c0 <= c1 && c1 <= w.cols);
    assert!(n == 0 || (n - 1) * stride + offset + k <= x.len());
    // Only new room is zeroed: the product writes every value.
    out.resize(n * (c1 - c0), 0.0);
    if out.is_empty() {
        return;
    }
    let panels = &w.data[c0 / NR * (k + 1)..c1.div_ceil(NR) * (k + 1)];
    product_panels(x, stride, offset, n, k, panels, c1 - c0, out);
}

#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn product_panels(x: &[f32], stride: usize, offset: usize, n: usize, k: usize, panels: &[[f32; NR]], width: usize, out: &mut [f32]) {
    let fma = multiversion::target::target_cfg_f!(target_feature = "fma");
    // A constant in each compiled copy, so each copy builds the one tile it can hold.
    if multiversion::target::target_cfg_f!(target_feature = "avx512f") {
        product_tiles::<MR_AVX512>(x, stride, offset, n, k, panels, width, out, fma, true);
    } else {
        product_tiles::<MR_AVX>(x, stride, offset, n, k, panels, width, out, fma, false);
    }
}

/// `product_panels` with tiles of MR rows; `avx512`: whether the caller's copy has AVX-512F (and
/// with it FMA).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn product_tiles<const MR: usize>(x: &[f32], stride: usize, offset: usize, n: usize, k: usize, panels: &[[f32; NR]], width: usize, out: &mut [f32], fma: bool, avx512: bool) {
    // x by tiles of MR rows, each [k, MR], the last padded with zero rows: a step of the tile then
    // reads its MR inputs from one place.
    let mut xt = vec![[0.0; MR]; n.div_ceil(MR) * k];
    for t in 0..n {
        let (i, r) = (t / MR, t % MR);
        for (kk, &v) in x[t * stride + offset..][..k].iter().enumerate() {
            xt[i * k + kk][r] = v;
        }
    }
    // Panel by panel, so that its k + 1 rows stay in L1 while every row of x passes by; in pairs
    // of full panels in the AVX-512 copy (`tile_pair`).
    let panel = |p: usize| &panels[p * (k + 1)..(p + 1) * (k + 1)];
    let mut p = 0;
    while p * NR < width {
        let c = p * NR;
        if avx512 && c + 2 * NR <= width {
            for (xs, rows) in xt.chunks_exact(k).zip(out.chunks_mut(MR * width)) {
                tile_pair(xs, panel(p), panel(p + 1), |r, sums| put(rows, r * width + c, sums));
            }
            p += 2;
            continue;
        }
        let cw = NR.min(width - c);
        for (xs, rows) in xt.chunks_exact(k).zip(out.chunks_mut(MR * width)) {
            if cw == NR {
                tile(xs, panel(p), fma, |r, sums| put(rows, r * width + c, sums));
            } else {
                tile(xs, panel(p), fma, |r, sums| {
                    if let Some(dst) = rows.get_mut(r * width + c..r * width + c + cw) {
                        dst.copy_from_slice(&sums[..cw]);
                    }
                });
            }
        }
        p += 1;
    }
}

/// rows[at..at + W] = sums, where the tile's row exists (the last tile's padding rows do not).
/// Fixed-size copies, two stores per panel: one code path for full and partial panels became a
/// call to memcpy per row (10 % of the encoder's time).
#[inline(always)]
fn put<const W: usize>(rows: &mut [f32], at: usize, sums: &[f32; W]) {
    if let Some(dst) = rows.get_mut(at..at + W) {
        *<&mut [f32; W]>::try_from(dst).expect("W values") = *sums;
    }
}

/// `tile` over two panels side by side, MR_AVX512 rows, in AVX-512 intrinsics: 24 sums in
/// registers, each input broadcast once for two panels, and half as many tile ends (stores, loop
/// exits) per product: the encoder ran 7 % faster at F 4,096 and 4 % at F 16,384 (TopK k 32, 2
/// threads). Intrinsics, since the portable code for a 6 × 32 tile came out of LLVM with its sums
/// in memory (14 GFLOP/s against 85). Called only where `product_tiles` is told the CPU has
/// AVX-512F, where it inlines; its sums are `tile`'s with `fma`, to the bit.
#[inline(always)]
fn tile_pair<const MR: usize>(xs: &[[f32; MR]], p0: &[[f32; NR]], p1: &[[f32; NR]], mut store: impl FnMut(usize, &[f32; 2 * NR])) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: called only where the CPU has AVX-512F (product_tiles' `avx512`); every load and
    // store is of one whole [f32; NR].
    unsafe {
        use std::arch::x86_64::*;
        let mut lo = [_mm512_loadu_ps(p0[0].as_ptr()); MR];
        let mut hi = [_mm512_loadu_ps(p1[0].as_ptr()); MR];
        for ((a, w0), w1) in xs.iter().zip(&p0[1..]).zip(&p1[1..]) {
            prefetch(std::ptr::from_ref(w0).wrapping_add(PREFETCH_ROWS).cast());
            prefetch(std::ptr::from_ref(w1).wrapping_add(PREFETCH_ROWS).cast());
            let (w0, w1) = (_mm512_loadu_ps(w0.as_ptr()), _mm512_loadu_ps(w1.as_ptr()));
            // Six rows at a time, as in `tile`.
            for r0 in (0..MR).step_by(6) {
                for r in r0..(r0 + 6).min(MR) {
                    let v = _mm512_set1_ps(a[r]);
                    lo[r] = _mm512_fmadd_ps(v, w0, lo[r]);
                    hi[r] = _mm512_fmadd_ps(v, w1, hi[r]);
                }
            }
        }
        for r in 0..MR {
            let mut sums = [0.0; 2 * NR];
            _mm512_storeu_ps(sums.as_mut_ptr(), lo[r]);
            _mm512_storeu_ps(sums.as_mut_ptr().add(NR), hi[r]);
            store(r, &sums);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (xs, p0, p1, &mut store);
        unreachable!("tile_pair is called only on x86-64");
    }
}

/// One MR × NR tile, each row's bias plus its k products in k order, handed row by row to
/// `store`. With `fma` (a constant in each compiled copy) every step is a fused multiply-add;
/// without, a multiply then an add, since mul_add without the instruction is a slow library call.
#[inline(always)]
fn tile<const MR: usize>(xs: &[[f32; MR]], panel: &[[f32; NR]], fma: bool, mut store: impl FnMut(usize, &[f32; NR])) {
    let mut acc = [panel[0]; MR];
    for (a, w) in xs.iter().zip(&panel[1..]) {
        prefetch(std::ptr::from_ref(w).wrapping_add(PREFETCH_ROWS).cast());
        // Six rows at a time: LLVM unrolls a loop over six rows whole and keeps the sums in
        // registers, but left one over twelve rolled, its sums in memory (6.7 GFLOP/s against 100).
        for r0 in (0..MR).step_by(6) {
            for r in r0..(r0 + 6).min(MR) {
                for j in 0..NR {
                    acc[r][j] = if fma { a[r].mul_add(w[j], acc[r][j]) } else { acc[r][j] + a[r] * w[j] };
                }
            }
        }
    }
    for (r, sums) in acc.iter().enumerate() {
        store(r, sums);
    }
}

/// Asks for the cache line at p ahead of its use (x86-64; nothing elsewhere).
#[inline(always)]
fn prefetch(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that reads nothing and cannot fault, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
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

    /// A tile of either height, with and without fused multiply-adds (the copy for machines
    /// without FMA, which this one does not run), agrees with the definition, every row handed
    /// over once.
    #[test]
    fn tile_matches_the_definition_with_and_without_fma() {
        tile_matches::<MR_AVX>();
        tile_matches::<MR_AVX512>();
    }

    fn tile_matches<const MR: usize>() {
        let value = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
        let k = 23;
        let xs: Vec<[f32; MR]> = (0..k).map(|kk| std::array::from_fn(|r| value(kk * MR + r))).collect();
        let panel: Vec<[f32; NR]> = (0..=k).map(|kk| std::array::from_fn(|j| value(1000 + kk * NR + j))).collect();
        for fma in [false, true] {
            let mut seen = Vec::new();
            tile(&xs, &panel, fma, |r, sums| {
                seen.push(r);
                for (j, &got) in sums.iter().enumerate() {
                    let want = panel[0][j] as f64 + (0..k).map(|kk| xs[kk][r] as f64 * panel[kk + 1][j] as f64).sum::<f64>();
                    assert!((got as f64 - want).abs() < 1e-4, "MR {MR} fma {fma}: [{r}, {j}] {got} vs {want}");
                }
            });
            assert_eq!(seen, (0..MR).collect::<Vec<_>>());
        }
    }

    /// The AVX-512 tile over two panels gives each panel's sums of `tile` with FMA to the bit, so
    /// that the AVX-512 and AVX2 copies train alike (checked where the CPU has AVX-512F).
    #[test]
    fn tile_pair_gives_the_sums_of_two_tiles() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            let value = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
            let k = 23;
            let xs: Vec<[f32; MR_AVX512]> = (0..k).map(|kk| std::array::from_fn(|r| value(kk * MR_AVX512 + r))).collect();
            let panel = |p: usize| -> Vec<[f32; NR]> { (0..=k).map(|kk| std::array::from_fn(|j| value(1000 * p + kk * NR + j))).collect() };
            let (p0, p1) = (panel(1), panel(2));
            let mut want = vec![[0.0; 2 * NR]; MR_AVX512];
            tile(&xs, &p0, true, |r, sums| want[r][..NR].copy_from_slice(sums));
            tile(&xs, &p1, true, |r, sums| want[r][NR..].copy_from_slice(sums));
            let mut seen = Vec::new();
            tile_pair(&xs, &p0, &p1, |r, sums| {
                seen.push(r);
                assert_eq!(sums.map(f32::to_bits), want[r].map(f32::to_bits), "row {r}");
            });
            assert_eq!(seen, (0..MR_AVX512).collect::<Vec<_>>());
        }
    }

    /// The product agrees with a plain triple loop plus the bias on shapes with odd rows and columns
    /// (a last tile of fewer rows than a tile, a last panel of fewer than 16 columns, a pair of
    /// panels with a lone panel after it), a slice of a wider weight matrix, rows read at a stride
    /// and offset, a range of panels, no rows and no columns; whatever `out` held is gone.
    #[test]
    fn product_matches_the_definition() {
        let value = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
        for (n, d_in, f, extra_cols, c0) in [(13, 64, 48, 0, 16), (13, 64, 48, 0, 0), (7, 5, 37, 3, 0), (1, 1, 16, 0, 0), (6, 20, 15, 1, 0), (128, 65, 1024, 16, 512), (5, 3, 40, 0, 32), (0, 4, 16, 0, 0), (3, 4, 16, 0, 16)] {
            let (stride, offset, w_stride) = (d_in + 3, 2, f + extra_cols);
            let x: Vec<f32> = (0..n * stride + offset).map(value).collect();
            let w: Vec<f32> = (0..d_in * w_stride).map(|i| value(i + 11)).collect();
            for bias in [None, Some((0..f).map(|i| value(i + 5)).collect::<Vec<f32>>())] {
                let panels = Panels::pack(&w, w_stride, d_in, f, bias.as_deref());
                let mut out = vec![f32::NAN; 3 * n * f]; // whatever out held is gone
                product(&x, stride, offset, n, &panels, c0, f, &mut out);
                assert_eq!(out.len(), n * (f - c0));
                for t in 0..n {
                    for c in c0..f {
                        let b = bias.as_ref().map_or(0.0, |b| b[c] as f64);
                        let want = b + (0..d_in).map(|k| x[t * stride + offset + k] as f64 * w[k * w_stride + c] as f64).sum::<f64>();
                        let got = out[t * (f - c0) + c - c0] as f64;
                        assert!((got - want).abs() < 1e-4, "n {n} d_in {d_in} f {f}: [{t}, {c}] {got} vs {want}");
                    }
                }
            }
        }
    }
}
