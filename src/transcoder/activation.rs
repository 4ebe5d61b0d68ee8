//! σ: from a row of pre-activations to the sparse codes of one token and encoder.

use super::config::Activation;

/// Sparse codes in CSR form: one row per (token, encoder), rows in token-major order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Codes {
    /// Row r spans index/value/pre[offsets[r]..offsets[r + 1]]; r = token · encoders + encoder.
    pub offsets: Vec<usize>,
    /// Feature number within its encoder.
    pub index: Vec<u32>,
    /// Activation z_f (0 only for JumpReLU entries kept for the threshold's gradient).
    pub value: Vec<f32>,
    /// Pre-activation, which the backward pass needs for the JumpReLU window.
    pub pre: Vec<f32>,
}

impl Codes {
    pub fn new() -> Self {
        Self::with_capacity(0, 0)
    }
    /// Empty, with room for `rows` rows of `entries` entries in all (so that appending moves
    /// nothing).
    pub fn with_capacity(rows: usize, entries: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self { offsets, index: Vec::with_capacity(entries), value: Vec::with_capacity(entries), pre: Vec::with_capacity(entries) }
    }
    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }
    pub fn row(&self, r: usize) -> std::ops::Range<usize> {
        self.offsets[r]..self.offsets[r + 1]
    }
    pub(super) fn push(&mut self, f: usize, value: f32, pre: f32) {
        self.index.push(f as u32);
        self.value.push(value);
        self.pre.push(pre);
    }
    pub(super) fn end_row(&mut self) {
        self.offsets.push(self.index.len());
    }
    /// The rows of `parts` one after another, allocated once at their joint size (per-thread
    /// chunks joined in order).
    pub fn concat<'a>(parts: impl Iterator<Item = &'a Codes> + Clone) -> Codes {
        let rows = parts.clone().map(Codes::rows).sum();
        let mut out = Codes::with_capacity(rows, parts.clone().map(|c| c.index.len()).sum());
        parts.for_each(|c| out.extend(c));
        out
    }
    /// Appends all rows of `other`.
    pub fn extend(&mut self, other: &Codes) {
        let base = self.index.len();
        self.offsets.extend(other.offsets[1..].iter().map(|o| o + base));
        self.index.extend_from_slice(&other.index);
        self.value.extend_from_slice(&other.value);
        self.pre.extend_from_slice(&other.pre);
    }
}

/// How many candidates per token BatchTopK keeps before the batch-wide cut: a token may take more
/// than k of the batch's slots, but rarely more than this (Bussmann et al. 2024 report long tails
/// of a few times k).
pub const BATCH_TOPK_CANDIDATES: usize = 4;

/// One row's selection (token, encoder), offered the pre-activations block by block in feature
/// order, so that the encoder's product can be made in column blocks whose buffer does not grow
/// with F; `finish` appends the row to `Codes`. TopK keeps a pool of candidates above a floor
/// that rises to the k-th largest value whenever the pool fills, so most values cost one
/// comparison.
pub struct RowSelect {
    /// Entries kept so far, in feature order: (feature, value, pre).
    kept: Vec<(u32, f32, f32)>,
    /// Scratch for the selections of the cut and of the bound (`descending_key`s).
    values: Vec<u32>,
    /// How many the row keeps (TopK, BatchTopK's candidates, AuxK); None keeps all that pass.
    k: Option<usize>,
    /// A top-k candidate must exceed this: 0 (only positive values are kept), then the k-th
    /// largest value after each cut.
    floor: f32,
}

impl RowSelect {
    /// The selection `act` makes from a row of `features` pre-activations.
    pub fn for_activation(act: &Activation, features: usize) -> Self {
        let mut sel = Self::top(match *act {
            Activation::Relu | Activation::JumpRelu { .. } => None,
            Activation::TopK { k } => Some(k),
            Activation::BatchTopK { k } => Some((k * BATCH_TOPK_CANDIDATES).min(features)),
        });
        // A top-k pool fills to 2k before each cut (`keep`), and both selections sort up to 2k
        // keys: room for them up front, not grown by doubling in every row (encoder +4–6 % at
        // F 4,096–16,384). Not for AuxK's rows, which see only the dead features.
        let room = sel.k.map_or(0, |k| 2 * k + 8);
        sel.kept.reserve(room);
        sel.values.reserve(room);
        sel
    }

    /// The k largest positive values (all positive ones with None).
    pub fn top(k: Option<usize>) -> Self {
        Self { kept: Vec::new(), values: Vec::new(), k, floor: 0.0 }
    }

    /// Offers pre[i], the pre-activation of feature f0 + i; threshold holds the same features'
    /// JumpReLU thresholds. `window` also keeps JumpReLU entries whose pre-activation lies within
    /// half a bandwidth of the threshold, at value 0, which only training needs.
    pub fn offer(&mut self, act: &Activation, f0: usize, pre: &[f32], threshold: &[f32], window: bool) {
        match *act {
            Activation::JumpRelu { bandwidth, .. } => {
                for (i, (&p, &t)) in pre.iter().zip(threshold).enumerate() {
                    if p > t {
                        self.kept.push(((f0 + i) as u32, p, p));
                    } else if window && (p - t).abs() < 0.5 * bandwidth {
                        self.kept.push(((f0 + i) as u32, 0.0, p));
                    }
                }
            }
            _ => offer_top(self, f0, pre),
        }
    }

    /// Offers only the listed features (ascending, within f0..f0 + pre.len()): AuxK's dead ones.
    pub fn offer_among(&mut self, f0: usize, pre: &[f32], candidates: &[u32]) {
        for &f in candidates {
            let p = pre[f as usize - f0];
            if p > self.floor {
                self.keep(f, p);
            }
        }
    }

    fn keep(&mut self, f: u32, p: f32) {
        match self.k {
            Some(0) => {}
            Some(k) => {
                self.kept.push((f, p, p));
                // A pool of 2k, cut often, keeps the floor near the k-th largest so far: the
                // encoder ran 5 % faster at F 4,096 than with pools of 3k or 4k + 64.
                if self.kept.len() >= 2 * k {
                    self.cut(k);
                }
            }
            None => self.kept.push((f, p, p)),
        }
    }

    /// Keeps the k largest, ties to the lower feature number, as an exact top-k over the row
    /// would (later offers have higher numbers, so they must beat the floor strictly). `kept`
    /// stays in feature order.
    fn cut(&mut self, k: usize) {
        if let Some(mut keep) = self.keeper(k) {
            self.kept.retain(|e| keep(e.1));
        }
    }

    /// Raises the floor to the k-th largest kept value and gives back the test, to be asked of
    /// the kept entries in feature order, that keeps the k largest; None when at most k are kept.
    fn keeper(&mut self, k: usize) -> Option<impl FnMut(f32) -> bool + use<>> {
        if self.kept.len() <= k {
            return None;
        }
        // Selected as integer keys in descending `total_cmp` order (deterministic even with NaNs):
        // callgrind counted 21 % fewer instructions in the partitioning than with `total_cmp`.
        self.values.clear();
        self.values.extend(self.kept.iter().map(|e| descending_key(e.1)));
        let (_, &mut key, _) = self.values.select_nth_unstable(k - 1);
        let kth = from_descending_key(key);
        let mut ties = k - self.kept.iter().filter(|e| e.1 > kth).count();
        self.floor = kth;
        Some(move |v: f32| {
            let tie = v == kth && ties > 0;
            ties -= tie as usize;
            v > kth || tie
        })
    }

    /// Appends the row, in feature order (so results do not depend on the selection), and starts
    /// the next one.
    pub fn finish(&mut self, out: &mut Codes) {
        let mut keep = self.k.filter(|&k| k > 0).and_then(|k| self.keeper(k));
        for &(f, value, pre) in &self.kept {
            if keep.as_mut().is_none_or(|keep| keep(value)) {
                out.push(f as usize, value, pre);
            }
        }
        out.end_row();
        self.kept.clear();
        self.floor = 0.0;
    }

    /// The rows finished in order into new codes, allocated once (what is kept so far bounds what
    /// each row keeps).
    pub fn finish_all(rows: &mut [RowSelect]) -> Codes {
        let mut out = Codes::with_capacity(rows.len(), rows.iter().map(|r| r.kept.len()).sum());
        rows.iter_mut().for_each(|r| r.finish(&mut out));
        out
    }
}

/// `RowSelect::offer` for ReLU and the top-k selections, compiled for AVX2 and AVX-512 too (`dense`'s comment
/// says why).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn offer_top(sel: &mut RowSelect, f0: usize, pre: &[f32]) {
    if let Some(k) = sel.k.filter(|&k| k > 0) {
        // No value below a lower bound on the row's k-th largest can be kept, so the floor starts
        // there instead of waiting for the first cut.
        if let Some(bound) = kth_largest_bound(pre, k, sel.floor, &mut sel.values) {
            sel.floor = bound.next_down();
        }
    }
    // Blocks of 64 with one mask: the loop over a block's hits mispredicts once, on leaving it, so
    // the fewer blocks with hits, the better: blocks of 16 ran the encoder 2–6 % slower.
    let avx512 = multiversion::target::target_cfg_f!(target_feature = "avx512f");
    let (blocks, tail) = pre.as_chunks::<64>();
    for (b, block) in blocks.iter().enumerate() {
        let mut hits = above(block, sel.floor, avx512);
        while hits != 0 {
            let i = hits.trailing_zeros() as usize;
            hits &= hits - 1;
            // The floor may have risen with this block's earlier hits.
            if block[i] > sel.floor {
                sel.keep((f0 + 64 * b + i) as u32, block[i]);
            }
        }
    }
    let base = f0 + 64 * blocks.len();
    for (i, &p) in tail.iter().enumerate() {
        if p > sel.floor {
            sel.keep((base + i) as u32, p);
        }
    }
}

/// Bit i set where block[i] > floor (false for NaN). On x86-64 in SSE2, which every x86-64 CPU
/// has: LLVM left the portable fold of comparisons into a mask scalar, and `offer_top` spent a
/// fifth of its time there. With `avx512` (a constant in each compiled copy of the caller), four
/// AVX-512 comparisons give the mask directly, where SSE2 takes sixteen comparisons and sixteen
/// mask moves.
#[inline(always)]
fn above(block: &[f32; 64], floor: f32, avx512: bool) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        if avx512 {
            // SAFETY: avx512 is true only where the CPU has AVX-512F (in the caller's AVX-512 copy,
            // or a test that asked); each load reads 16 of block's 64 floats.
            return unsafe {
                let f = _mm512_set1_ps(floor);
                (0..4).fold(0u64, |m, i| m | (_mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_loadu_ps(block.as_ptr().add(16 * i)), f) as u64) << (16 * i))
            };
        }
        // SAFETY: SSE2 is part of x86-64, and each load reads 4 of block's 64 floats.
        unsafe {
            let f = _mm_set1_ps(floor);
            (0..16).fold(0u64, |m, i| m | (_mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(block.as_ptr().add(4 * i)), f)) as u64) << (4 * i))
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = avx512;
        block.iter().enumerate().fold(0u64, |m, (i, &p)| m | (((p > floor) as u64) << i))
    }
}

/// An integer whose ascending order is `f32::total_cmp`'s descending order.
fn descending_key(v: f32) -> u32 {
    let bits = v.to_bits();
    // total_cmp's order: negative values have their magnitude bits flipped, positives sort above.
    !(if bits >> 31 == 1 { !bits } else { bits | 1 << 31 })
}

fn from_descending_key(key: u32) -> f32 {
    let key = !key;
    f32::from_bits(if key >> 31 == 1 { key & !(1 << 31) } else { !key })
}

/// A lower bound on the k-th largest value of x (NaNs left out) when it beats `floor`, else None.
/// x's vectors of sixteen (one AVX-512 register; eight ran the encoder 3 % slower at F 4,096) fall
/// into at least 2k/16 sets of consecutive vectors, and lane j of a set is one group: 2k or more
/// disjoint groups whose maxima are vertical maxima alone, with no reduction across lanes. The k
/// largest group maxima are k distinct values of x, so the k-th largest of them is a bound. On
/// rows of 1,024 Gaussian values and k = 32, 43 values pass it on average, where 122 pass the
/// minimum of k groups' maxima.
#[inline(always)]
fn kth_largest_bound(x: &[f32], k: usize, floor: f32, keys: &mut Vec<u32>) -> Option<f32> {
    const LANES: usize = 16;
    let sets = (2 * k).div_ceil(LANES);
    let (vectors, _) = x.as_chunks::<LANES>();
    let per_set = vectors.len() / sets;
    if per_set == 0 {
        return None;
    }
    keys.clear();
    let mut above = 0;
    for set in vectors.chunks_exact(per_set).take(sets) {
        let mut max = [f32::NEG_INFINITY; LANES];
        for v in set {
            for j in 0..LANES {
                max[j] = if v[j] > max[j] { v[j] } else { max[j] };
            }
        }
        above += max.iter().filter(|&&m| m > floor).count();
        keys.extend(max.map(descending_key));
    }
    // Fewer than k maxima above the floor: the bound cannot raise it.
    if above < k {
        return None;
    }
    let (_, &mut key, _) = keys.select_nth_unstable(k - 1);
    Some(from_descending_key(key))
}

/// The k-th largest of `values` (1-based) in `total_cmp` order; reorders them.
pub(crate) fn kth_largest(values: &mut [f32], k: usize) -> f32 {
    *values.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a)).1
}

/// BatchTopK's cut: keep, for each encoder, the batch·k largest candidates across all tokens.
pub fn batch_top_k(codes: &Codes, encoders: usize, k: usize) -> Codes {
    let tokens = codes.rows() / encoders;
    let cut: Vec<f32> = (0..encoders)
        .map(|e| {
            let mut vals: Vec<f32> = (0..tokens).flat_map(|t| codes.value[codes.row(t * encoders + e)].iter().copied()).collect();
            let keep = tokens * k;
            if vals.len() <= keep {
                return f32::NEG_INFINITY;
            }
            kth_largest(&mut vals, keep)
        })
        .collect();
    let mut out = Codes::new();
    for r in 0..codes.rows() {
        for i in codes.row(r) {
            if codes.value[i] >= cut[r % encoders] {
                out.push(codes.index[i] as usize, codes.value[i], codes.pre[i]);
            }
        }
        out.end_row();
    }
    out
}

/// ∂z/∂pre and the straight-through ∂z/∂θ of one entry.
pub fn derivatives(act: &Activation, value: f32, pre: f32, threshold: f32) -> (f32, f32) {
    match *act {
        Activation::JumpRelu { bandwidth, .. } => {
            let d_pre = if value != 0.0 { 1.0 } else { 0.0 };
            // Rectangle-kernel STE: ∂z/∂θ = −(θ/ε)·K((pre − θ)/ε), K = 1 on (−½, ½).
            let d_theta = if (pre - threshold).abs() < 0.5 * bandwidth { -threshold / bandwidth } else { 0.0 };
            (d_pre, d_theta)
        }
        _ => (if value > 0.0 { 1.0 } else { 0.0 }, 0.0),
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The selection over a whole row, written the plain way: what `RowSelect` must give back
    /// whatever blocks the row arrives in.
    fn whole_row(act: &Activation, pre: &[f32], threshold: &[f32], window: bool) -> Vec<(u32, f32, f32)> {
        let top = |k: usize| {
            let mut pos: Vec<u32> = (0..pre.len() as u32).filter(|&f| pre[f as usize] > 0.0).collect();
            pos.sort_by(|&a, &b| pre[b as usize].total_cmp(&pre[a as usize]).then(a.cmp(&b)));
            pos.truncate(k);
            pos.sort();
            pos.into_iter().map(|f| (f, pre[f as usize], pre[f as usize])).collect()
        };
        match *act {
            Activation::Relu => top(pre.len()),
            Activation::JumpRelu { bandwidth, .. } => (0..pre.len())
                .filter_map(|f| {
                    let (p, t) = (pre[f], threshold[f]);
                    if p > t {
                        Some((f as u32, p, p))
                    } else if window && (p - t).abs() < 0.5 * bandwidth {
                        Some((f as u32, 0.0, p))
                    } else {
                        None
                    }
                })
                .collect(),
            Activation::TopK { k } => top(k),
            Activation::BatchTopK { k } => top(k * BATCH_TOPK_CANDIDATES),
        }
    }

    fn blockwise(act: &Activation, pre: &[f32], threshold: &[f32], window: bool, block: usize) -> Vec<(u32, f32, f32)> {
        let mut sel = RowSelect::for_activation(act, pre.len());
        for f0 in (0..pre.len()).step_by(block) {
            let f1 = (f0 + block).min(pre.len());
            sel.offer(act, f0, &pre[f0..f1], threshold.get(f0..f1).unwrap_or(&[]), window);
        }
        let mut out = Codes::new();
        sel.finish(&mut out);
        (0..out.index.len()).map(|j| (out.index[j], out.value[j], out.pre[j])).collect()
    }

    proptest! {
        /// Values drawn from a few levels, so that ties are common; blocks of any size.
        #[test]
        fn blockwise_selection_equals_the_whole_row(
            levels in proptest::collection::vec(0usize..12, 1..300),
            block in 1usize..300,
            k in 1usize..40,
            window in any::<bool>(),
        ) {
            let pre: Vec<f32> = levels.iter().map(|&l| l as f32 * 0.25 - 1.0).collect();
            let threshold: Vec<f32> = (0..pre.len()).map(|f| 0.1 + (f % 5) as f32 * 0.2).collect();
            let k = k.min(pre.len());
            for act in [
                Activation::Relu,
                Activation::JumpRelu { threshold: 0.5, bandwidth: 0.6 },
                Activation::TopK { k },
                Activation::BatchTopK { k },
            ] {
                prop_assert_eq!(blockwise(&act, &pre, &threshold, window, block), whole_row(&act, &pre, &threshold, window), "{:?}", act);
            }
        }

        /// The mask of values above the floor, in SSE2 and (where this machine has it) AVX-512,
        /// is the definition: bit i where block[i] > floor, none for a NaN or a value equal to it.
        #[test]
        fn above_masks_the_values_above_the_floor(levels in proptest::collection::vec(0usize..13, 64), floor_level in 0usize..12) {
            let level = |l: usize| if l == 12 { f32::NAN } else { l as f32 * 0.25 - 1.0 };
            let block: [f32; 64] = std::array::from_fn(|i| level(levels[i]));
            let floor = level(floor_level);
            let want = block.iter().enumerate().fold(0u64, |m, (i, &p)| m | (((p > floor) as u64) << i));
            prop_assert_eq!(above(&block, floor, false), want);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                prop_assert_eq!(above(&block, floor, true), want);
            }
        }

        /// The selection's integer keys order floats as `total_cmp` does, reversed, and give them back bit for bit.
        #[test]
        fn descending_keys_follow_total_cmp(a in any::<u32>(), b in any::<u32>()) {
            let (a, b) = (f32::from_bits(a), f32::from_bits(b));
            prop_assert_eq!(descending_key(a).cmp(&descending_key(b)), b.total_cmp(&a));
            prop_assert_eq!(from_descending_key(descending_key(a)).to_bits(), a.to_bits());
        }

        /// AuxK's selection among candidates: the k largest positive candidates, ties to the lower number.
        #[test]
        fn selection_among_candidates(levels in proptest::collection::vec(0usize..12, 1..300), every in 1usize..5, k in 0usize..20, block in 1usize..80) {
            let pre: Vec<f32> = levels.iter().map(|&l| l as f32 * 0.25 - 1.0).collect();
            let cands: Vec<u32> = (0..pre.len() as u32).filter(|f| (*f as usize).is_multiple_of(every)).collect();
            let mut sel = RowSelect::top(Some(k));
            for f0 in (0..pre.len()).step_by(block) {
                let f1 = (f0 + block).min(pre.len());
                let c = &cands[cands.partition_point(|&f| (f as usize) < f0)..cands.partition_point(|&f| (f as usize) < f1)];
                sel.offer_among(f0, &pre[f0..f1], c);
            }
            let mut out = Codes::new();
            sel.finish(&mut out);
            let mut want: Vec<u32> = cands.iter().copied().filter(|&f| pre[f as usize] > 0.0).collect();
            want.sort_by(|&a, &b| pre[b as usize].total_cmp(&pre[a as usize]).then(a.cmp(&b)));
            want.truncate(k);
            want.sort();
            prop_assert_eq!(out.index, want);
        }
    }
}
