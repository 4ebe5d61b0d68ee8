//! Held-out scores (DESIGN §5 step 3): AUROC and F1 of a detector predicate for "feature fires",
//! Spearman and R² of a monotone (isotonic) tracker — all weighted by cell so the same code
//! scores the explain half, the test half and bootstrap resamples.
//!
//! Everything is computed from sums over the firing steps only. Non-firing steps all have
//! activation 0, one tie group with a known mid-rank, so their contribution comes from the
//! weighted code counts of [`Weighting`].

use crate::label::candidates::{Atom, Candidate, CodedSteps, Predicate, Weighting, MAX_CODES, MISSING, N_COV};

/// One feature's firing steps sorted by activation, ascending. Circular shifts move the steps
/// but not the values, so this order (and the ranks) serve every null draw.
pub struct Firing {
    /// Global step (cell offset + row).
    pub steps: Vec<u32>,
    pub cells: Vec<u32>,
    pub values: Vec<f32>,
    /// Mid-rank of each entry among all steps of its own cell (for within-cell Spearman): a
    /// half-integer below the cell's length, which f32 holds exactly below 2^23 steps.
    pub cell_rank: Vec<f32>,
    /// Mid-rank of the non-firing steps of each cell.
    pub cell_zero_rank: Vec<f64>,
}

impl Firing {
    /// Sorts a feature's (cell, row, value) entries by activation and ranks them within cells.
    pub fn new(mut entries: Vec<(u32, u32, f32)>, cell_offsets: &[usize]) -> Firing {
        entries.sort_by(|a, b| a.2.total_cmp(&b.2));
        let n_cells = cell_offsets.len() - 1;
        let mut fires = vec![0usize; n_cells];
        for e in &entries {
            fires[e.0 as usize] += 1;
        }
        let zeros: Vec<f64> = (0..n_cells).map(|c| (cell_offsets[c + 1] - cell_offsets[c] - fires[c]) as f64).collect();
        let mut below = zeros.clone();
        let mut tied = vec![0.0f64; n_cells];
        let mut cell_rank = vec![0.0f32; entries.len()];
        let mut i = 0;
        while i < entries.len() {
            let j = i + entries[i..].iter().take_while(|e| e.2 == entries[i].2).count();
            for e in &entries[i..j] {
                tied[e.0 as usize] += 1.0;
            }
            for (slot, e) in cell_rank[i..j].iter_mut().zip(&entries[i..j]) {
                let c = e.0 as usize;
                *slot = (below[c] + 0.5 * tied[c]) as f32;
            }
            for e in &entries[i..j] {
                let c = e.0 as usize;
                below[c] += tied[c];
                tied[c] = 0.0;
            }
            i = j;
        }
        Firing {
            steps: entries.iter().map(|&(c, r, _)| (cell_offsets[c as usize] + r as usize) as u32).collect(),
            cells: entries.iter().map(|e| e.0).collect(),
            values: entries.iter().map(|e| e.2).collect(),
            cell_rank,
            cell_zero_rank: zeros.iter().map(|z| 0.5 * z).collect(),
        }
    }
}

/// The ordered codes a tracker ranks steps by: its covariate's bins, or, inside a regime
/// ("during discharge"), the bins moved up by one (in the tracker's direction when
/// `descending`) with every step outside the regime in code 0, below them all. `collapse` puts
/// every in-regime step in code 1: the regime alone, which a covariate must improve on to earn
/// its place in the label. With a second scale `and`, the code is a two-covariate graded
/// detector's [`pair_level`], `descending` then giving the first one's direction.
#[derive(Debug, Clone, Copy)]
pub struct TrackerScale {
    pub k: usize,
    pub within: Option<Atom>,
    pub descending: bool,
    pub collapse: bool,
    pub and: Option<SecondScale>,
}

/// The second covariate of a two-covariate scale: its index, whether the firing rises with it,
/// and its share of the summed place in tenths (5: both weigh the same).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecondScale {
    pub k: usize,
    pub rises: bool,
    pub share: u8,
}

/// Levels of a two-covariate scale: the places along both scales summed, in steps of 1/11 of
/// a scale's length (0..=22), below `MISSING`.
const PAIR_LEVELS: usize = 23;

/// A step's level on two scales: where its code sits along each covariate's codes (0 at the
/// low end of the direction the firing rises, 1 at the high end), the two places averaged with
/// the second's `share` and binned into `PAIR_LEVELS` levels; `MISSING` where either covariate
/// has no value. Places go by code, not by value: the codes are quantile bins, so this is close
/// to a percentile-rank sum, the finer tail bins (the last 1 % of a scale) weighing a little more.
pub fn pair_level(coded: &CodedSteps, (k, k_rises): (usize, bool), second: &SecondScale, codes: &[u8]) -> usize {
    let place = |k: usize, rises: bool| {
        let (code, n) = (codes[k] as usize, coded.codings[k].n_codes());
        let x = if n > 1 { code as f64 / (n - 1) as f64 } else { 0.5 };
        (code != MISSING).then_some(if rises { x } else { 1.0 - x })
    };
    let share = second.share as f64 / 10.0;
    match (place(k, k_rises), place(second.k, second.rises)) {
        (Some(a), Some(b)) => (((1.0 - share) * a + share * b) * (PAIR_LEVELS - 1) as f64).round() as usize,
        _ => MISSING,
    }
}

impl TrackerScale {
    pub fn plain(k: usize) -> TrackerScale {
        TrackerScale { k, within: None, descending: false, collapse: false, and: None }
    }

    /// Whether a tracker's activation rises along its scale: a regime tracker's and a two-
    /// covariate scale run in its direction already, a plain one's in the covariate's.
    pub fn rises(candidate: &Candidate) -> bool {
        matches!(candidate, Candidate::Tracker { increasing, within, .. } | Candidate::Graded { increasing, within, .. } if *increasing || within.is_some())
            || matches!(candidate, Candidate::Graded { and: Some(_), .. })
    }

    pub fn of(candidate: &Candidate) -> Option<TrackerScale> {
        match candidate {
            Candidate::Graded { covariate, increasing, and: Some(g), .. } => {
                Some(TrackerScale { k: covariate.index(), within: None, descending: !increasing, collapse: false, and: Some(SecondScale { k: g.covariate.index(), rises: g.increasing, share: g.share }) })
            }
            Candidate::Tracker { covariate, increasing, within } | Candidate::Graded { covariate, increasing, within, .. } => {
                Some(TrackerScale { k: covariate.index(), within: *within, descending: within.is_some() && !increasing, collapse: false, and: None })
            }
            Candidate::Detector(_) => None,
        }
    }

    /// Codes on the scale (the covariate's, one more inside a regime; `MISSING` stays missing).
    pub fn n_codes(&self, coded: &CodedSteps) -> usize {
        if self.and.is_some() {
            return PAIR_LEVELS;
        }
        let n = coded.codings[self.k].n_codes();
        match (self.within, self.collapse) {
            (None, _) => n,
            (Some(_), false) => n + 1,
            (Some(_), true) => 2,
        }
    }

    /// The scale's code of a code of its covariate inside the regime.
    fn inside(&self, own: usize, n: usize) -> usize {
        match own {
            MISSING => MISSING,
            _ if self.collapse => 1,
            _ if self.descending => n - own,
            _ => own + 1,
        }
    }

    /// The scale's code of a step, from its codes.
    pub fn code(&self, coded: &CodedSteps, codes: &[u8]) -> usize {
        if let Some(second) = self.and {
            return pair_level(coded, (self.k, !self.descending), &second, codes);
        }
        let own = codes[self.k] as usize;
        match self.within {
            None => own,
            Some(a) if !a.contains(codes[a.covariate.index()]) => 0,
            Some(_) => self.inside(own, coded.codings[self.k].n_codes()),
        }
    }

    /// Step counts per scale code from the covariate's counts and its counts inside the regime.
    pub(crate) fn regroup(&self, coded: &CodedSteps, all: [f64; MAX_CODES], inside: impl Fn(&Atom) -> [f64; MAX_CODES]) -> [f64; MAX_CODES] {
        let Some(a) = self.within else { return all };
        let inside = inside(&a);
        let n = coded.codings[self.k].n_codes();
        let mut out = [0.0; MAX_CODES];
        for (own, &count) in inside.iter().enumerate() {
            if own < n || own == MISSING {
                out[self.inside(own, n)] += count;
            }
        }
        out[0] = all.iter().sum::<f64>() - inside.iter().sum::<f64>();
        out
    }

    /// Weighted step counts per scale code.
    pub fn bins(&self, coded: &CodedSteps, w: &Weighting) -> [f64; MAX_CODES] {
        match self.and {
            Some(second) => self.pair_bins(coded, w.joint(self.k, second.k)),
            None => self.regroup(coded, w.bins[self.k], |a| w.conditional_bins(a, self.k)),
        }
    }

    /// Counts per level of a two-covariate scale from its covariates' joint counts.
    pub(crate) fn pair_bins(&self, coded: &CodedSteps, joint: impl Iterator<Item = (usize, usize, f64)>) -> [f64; MAX_CODES] {
        let (second, first) = (self.and.expect("a two-covariate scale"), (self.k, !self.descending));
        let mut codes = [0u8; N_COV];
        let mut out = [0.0; MAX_CODES];
        for (x, y, n) in joint {
            (codes[first.0], codes[second.k]) = (x as u8, y as u8);
            out[pair_level(coded, first, &second, &codes)] += n;
        }
        out
    }

    /// Step counts per scale code in one cell.
    fn cell_counts(&self, coded: &CodedSteps, c: usize) -> [f64; MAX_CODES] {
        if let Some(second) = self.and {
            return self.pair_bins(coded, coded.cell_joint_counts(c, self.k, second.k));
        }
        let all = coded.cell_counts(c, self.k).map(|n| n as f64);
        self.regroup(coded, all, |a| coded.cell_conditional_counts(c, a, self.k).map(|n| n as f64))
    }
}

/// AUROC of a scale's order for the `pos` weight against the `neg` weight per code, ties within
/// a code counted half: a graded detector's AUROC (firing against quiet steps) and a scale's
/// sibling AUROC (own firing against the siblings'). Steps without a value (`MISSING`: no SOH
/// in a cycle never discharged fully, no SOC in an unanchored cell) rank below every level in
/// either direction, as a detector's predicate never matches them: left out, they would let a
/// label be scored on the few steps that have the covariate while the feature fires elsewhere.
pub fn ordinal_auroc(pos: &[f64; MAX_CODES], neg: &[f64; MAX_CODES], rising: bool) -> f64 {
    let codes = (0..MAX_CODES).filter(|&c| c != MISSING);
    let levels: Vec<usize> = if rising { codes.collect() } else { codes.rev().collect() };
    let order: Vec<usize> = std::iter::once(MISSING).chain(levels).collect();
    let (n_pos, n_neg) = order.iter().fold((0.0, 0.0), |(p, n), &c| (p + pos[c], n + neg[c]));
    if n_pos <= 0.0 || n_neg <= 0.0 {
        return f64::NAN;
    }
    let (mut below, mut wins) = (0.0, 0.0);
    for c in order {
        wins += pos[c] * (below + 0.5 * neg[c]);
        below += neg[c];
    }
    wins / (n_pos * n_neg)
}

/// AUROC of a graded detector from the step and firing weight per code of its scale: the lower
/// of its AUROC over every step (those without the covariate ranked lowest, `ordinal_auroc`) and
/// over the steps that have the covariate. The second keeps a feature that fires on the cells
/// that have an SOC and on no unanchored cell from reading as graded by SOC (AUROC 0.9999 over
/// every step, chance within the anchored cells): on real files, most SOC labels were that.
pub fn graded_auroc(weight: &[f64; MAX_CODES], fire_weight: &[f64; MAX_CODES], rising: bool) -> f64 {
    let quiet: [f64; MAX_CODES] = std::array::from_fn(|c| (weight[c] - fire_weight[c]).max(0.0));
    let every_step = ordinal_auroc(fire_weight, &quiet, rising);
    if fire_weight[MISSING] <= 0.0 && quiet[MISSING] <= 0.0 {
        return every_step;
    }
    let present = |w: &[f64; MAX_CODES]| std::array::from_fn(|c| if c == MISSING { 0.0 } else { w[c] });
    // Firing on every step that has the covariate, or on none: the scale grades nothing there.
    let within = ordinal_auroc(&present(fire_weight), &present(&quiet), rising);
    every_step.min(if within.is_nan() { 0.5 } else { within })
}

/// The direction (rising?) in which a scale grades the firing better, and that AUROC. The two
/// directions' AUROCs do not add to 1 where steps lack the covariate (`ordinal_auroc`).
pub fn graded_direction(weight: &[f64; MAX_CODES], fire_weight: &[f64; MAX_CODES]) -> (bool, f64) {
    let (up, down) = (graded_auroc(weight, fire_weight, true), graded_auroc(weight, fire_weight, false));
    if up >= down || down.is_nan() { (true, up) } else { (false, down) }
}

/// Weighted mid-ranks of a feature's activations under one weighting.
pub struct Ranked {
    /// The weighting's weight of each cell: an entry's weight is its cell's (0/1 or a bootstrap
    /// multiplicity), looked up rather than stored, as several rankings of a dense feature are
    /// alive at once and they are most of the labeller's memory that grows with the data.
    cell_weight: Vec<f64>,
    /// Mid-rank of each firing entry, aligned with `Firing`: a half-integer sum of integer
    /// weights, which f32 holds exactly below 2^23 steps.
    pub rank: Vec<f32>,
    /// Mid-rank of the non-firing steps (activation 0).
    pub zero_rank: f64,
    /// Σ weight over firing steps.
    pub fire_weight: f64,
}

/// Weighted mid-ranks: rank = weight strictly below + half the weight tied with it, so that
/// rank sums per bin give Spearman's ρ exactly with ties and weights (`spearman`).
pub fn rank(firing: &Firing, weighting: &Weighting) -> Ranked {
    let weight = |i: usize| weighting.cell_weight[firing.cells[i] as usize];
    let n = firing.cells.len();
    let fire_weight: f64 = (0..n).map(weight).sum();
    let zero_weight = weighting.total - fire_weight;
    let mut rank = vec![0.0f32; n];
    let mut below = zero_weight;
    let mut i = 0;
    while i < n {
        let mut j = i;
        let mut tied = 0.0;
        while j < n && firing.values[j] == firing.values[i] {
            tied += weight(j);
            j += 1;
        }
        rank[i..j].fill((below + 0.5 * tied) as f32);
        below += tied;
        i = j;
    }
    Ranked { cell_weight: weighting.cell_weight.clone(), rank, zero_rank: 0.5 * zero_weight, fire_weight }
}

impl Ranked {
    /// The weight of firing entry `i` of `firing`.
    pub fn weight(&self, firing: &Firing, i: usize) -> f64 {
        self.cell_weight[firing.cells[i] as usize]
    }
}

/// Per-code sums of one covariate (all steps; zeros included through the code counts).
#[derive(Clone)]
pub struct BinStats {
    pub weight: [f64; MAX_CODES],
    pub fire_weight: [f64; MAX_CODES],
    pub rank_sum: [f64; MAX_CODES],
    pub rank_sq_sum: [f64; MAX_CODES],
    pub act_sum: [f64; MAX_CODES],
    pub act_sq_sum: [f64; MAX_CODES],
}

impl BinStats {
    fn empty(weight: [f64; MAX_CODES]) -> BinStats {
        let z = [0.0; MAX_CODES];
        BinStats { weight, fire_weight: z, rank_sum: z, rank_sq_sum: z, act_sum: z, act_sq_sum: z }
    }

    fn add(&mut self, code: usize, w: f64, r: f64, a: f64) {
        self.fire_weight[code] += w;
        self.rank_sum[code] += w * r;
        self.rank_sq_sum[code] += w * r * r;
        self.act_sum[code] += w * a;
        self.act_sq_sum[code] += w * a * a;
    }

    /// Adds the non-firing steps of each code, all at the zero mid-rank.
    fn close(mut self, zero_rank: f64) -> BinStats {
        for b in 0..MAX_CODES {
            let zeros = (self.weight[b] - self.fire_weight[b]).max(0.0);
            self.rank_sum[b] += zeros * zero_rank;
            self.rank_sq_sum[b] += zeros * zero_rank * zero_rank;
        }
        self
    }
}

/// Bin statistics of every covariate in one pass over the firing steps, optionally only over
/// steps where `given` holds (the conditional tables of a conjunction search).
pub fn bin_stats(
    firing: &Firing,
    steps: &[u32],
    ranked: &Ranked,
    coded: &CodedSteps,
    weighting: &Weighting,
    given: Option<&Atom>,
) -> Vec<BinStats> {
    let mut stats: Vec<BinStats> = (0..N_COV)
        .map(|l| match given {
            None => BinStats::empty(weighting.bins[l]),
            Some(a) if a.covariate.index() == l => BinStats::empty([0.0; MAX_CODES]),
            Some(a) => BinStats::empty(weighting.conditional_bins(a, l)),
        })
        .collect();
    for (i, &step) in steps.iter().enumerate() {
        let w = ranked.weight(firing, i);
        if w == 0.0 {
            continue;
        }
        let codes = coded.step(step as usize);
        if given.is_some_and(|a| !a.contains(codes[a.covariate.index()])) {
            continue;
        }
        let (r, a) = (ranked.rank[i] as f64, firing.values[i] as f64);
        for (k, s) in stats.iter_mut().enumerate() {
            s.add(codes[k] as usize, w, r, a);
        }
    }
    stats.into_iter().map(|s| s.close(ranked.zero_rank)).collect()
}

/// Detector scores of a predicate.
#[derive(Debug, Clone, Copy, Default)]
pub struct DetectorScore {
    /// AUROC of the predicate as a yes/no score for "the feature fires" (DESIGN §5 step 3):
    /// P(a firing step is inside > a quiet step is inside), ties counted half, = (1 + TPR − FPR) / 2.
    pub auroc: f64,
    /// F1 of "fires" against the predicate.
    pub f1: f64,
    /// Share of the predicate's weight on which the feature fires.
    pub precision: f64,
}

/// AUROC and F1 from the predicate's weighted step count and firing weight. The predicate
/// classifies steps as firing or quiet, as `label_yardstick.py`'s trees and the sibling AUROC
/// do; how strongly it fires inside is the tracker's question, not the detector's.
pub fn detector(in_weight: f64, in_fire_weight: f64, ranked: &Ranked, total: f64) -> Option<DetectorScore> {
    let quiet = total - ranked.fire_weight;
    if in_weight <= 0.0 || in_weight >= total || ranked.fire_weight <= 0.0 || quiet <= 0.0 {
        return None;
    }
    let tpr = in_fire_weight / ranked.fire_weight;
    let fpr = ((in_weight - in_fire_weight) / quiet).max(0.0);
    let f1 = 2.0 * in_fire_weight / (ranked.fire_weight + in_weight);
    Some(DetectorScore { auroc: 0.5 * (1.0 + tpr - fpr), f1, precision: in_fire_weight / in_weight })
}

/// Scores a predicate directly (steps may be circularly shifted).
pub fn score_detector(p: &Predicate, firing: &Firing, steps: &[u32], ranked: &Ranked, coded: &CodedSteps, weighting: &Weighting) -> Option<DetectorScore> {
    let mut fire = 0.0;
    for (i, &step) in steps.iter().enumerate() {
        let w = ranked.weight(firing, i);
        if w > 0.0 && p.holds(coded.step(step as usize)) {
            fire += w;
        }
    }
    detector(coded.count_predicate(p, weighting), fire, ranked, weighting.total)
}

/// Spearman of a tracker: rank correlation of activation with the binned covariate inside each
/// cell, averaged over cells weighted by weight × steps. A tracker should follow its covariate
/// within a cell; pooled ranks would also reward differences between cells (one cell sits at
/// high SOC throughout), which no circular shift can break, and the null would lose its power.
pub fn within_cell_spearman(firing: &Firing, steps: &[u32], coded: &CodedSteps, weighting: &Weighting, scale: &TrackerScale) -> f64 {
    let mut fired = vec![[[0.0; 3]; MAX_CODES]; coded.n_cells()];
    for (i, &step) in steps.iter().enumerate() {
        let c = firing.cells[i] as usize;
        if weighting.cell_weight[c] > 0.0 {
            add_rank(&mut fired[c][scale.code(coded, coded.step(step as usize))], firing.cell_rank[i] as f64);
        }
    }
    scale_spearman(firing, coded, weighting, scale, |c| fired[c])
}

/// Adds one firing step of within-cell rank `rank` to (count, rank sum, rank² sum).
fn add_rank(slot: &mut [f64; 3], rank: f64) {
    slot[0] += 1.0;
    slot[1] += rank;
    slot[2] += rank * rank;
}

/// Spearman on `scale`, averaged over the weighted cells by their steps with a value, from each
/// cell's firing sums per scale code (`fired(c)`: count, rank sum, rank² sum); the non-firing
/// steps come from the code counts at the cell's zero rank.
fn scale_spearman(firing: &Firing, coded: &CodedSteps, weighting: &Weighting, scale: &TrackerScale, fired: impl Fn(usize) -> [[f64; 3]; MAX_CODES]) -> f64 {
    let n_codes = scale.n_codes(coded);
    let (mut total, mut weight) = (0.0, 0.0);
    for c in (0..coded.n_cells()).filter(|&c| weighting.cell_weight[c] > 0.0) {
        let counts = scale.cell_counts(coded, c);
        let fired = fired(c);
        let r0 = firing.cell_zero_rank[c];
        let mut s = BinStats::empty(counts);
        for b in 0..MAX_CODES {
            let zeros = counts[b] - fired[b][0];
            s.rank_sum[b] = fired[b][1] + zeros * r0;
            s.rank_sq_sum[b] = fired[b][2] + zeros * r0 * r0;
        }
        // A cell where the covariate is missing throughout (SOC of an unanchored cell) says
        // nothing about the tracker: it weighs by its steps with a value.
        let w = weighting.cell_weight[c] * (coded.cell_len(c) as f64 - counts[MISSING]);
        total += w * spearman(&s, n_codes);
        weight += w;
    }
    if weight > 0.0 { total / weight } else { 0.0 }
}

/// Within-cell Spearman of every continuous covariate's tracker from one pass over the firing
/// steps: `[k] = [ascending, descending, collapsed]`. With a `regime`, the trackers inside it
/// (ascending and descending scales) and the regime alone (collapsed); without, the plain
/// tracker in `[k][0]` (the others NaN). NaN for categorical covariates and the regime's own.
/// Equal to `within_cell_spearman` on each of those scales.
pub fn tracker_rhos(firing: &Firing, coded: &CodedSteps, weighting: &Weighting, regime: Option<&Atom>) -> Vec<[f64; 3]> {
    type Sums = [[f64; 3]; MAX_CODES];
    let n_cells = coded.n_cells();
    // Per weighted cell: firing sums per covariate and code inside the regime (every step
    // without one), and outside it.
    let mut inside: Vec<Vec<Sums>> = (0..n_cells).map(|c| if weighting.cell_weight[c] > 0.0 { vec![[[0.0; 3]; MAX_CODES]; N_COV] } else { Vec::new() }).collect();
    let mut outside = vec![[0.0f64; 3]; n_cells];
    for (i, &step) in firing.steps.iter().enumerate() {
        let c = firing.cells[i] as usize;
        if weighting.cell_weight[c] <= 0.0 {
            continue;
        }
        let codes = coded.step(step as usize);
        let rank = firing.cell_rank[i] as f64;
        if regime.is_none_or(|a| a.contains(codes[a.covariate.index()])) {
            for (k, sums) in inside[c].iter_mut().enumerate() {
                add_rank(&mut sums[codes[k] as usize], rank);
            }
        } else {
            add_rank(&mut outside[c], rank);
        }
    }
    // A cell's sums moved onto the scale's codes.
    let rho = |scale: &TrackerScale| {
        let n = coded.codings[scale.k].n_codes();
        scale_spearman(firing, coded, weighting, scale, |c| {
            let mut fired = [[0.0; 3]; MAX_CODES];
            fired[0] = outside[c];
            for (own, sums) in inside[c][scale.k].iter().enumerate().filter(|(own, _)| *own < n || *own == MISSING) {
                let code = if scale.within.is_some() { scale.inside(own, n) } else { own };
                for (x, y) in fired[code].iter_mut().zip(sums) {
                    *x += y;
                }
            }
            fired
        })
    };
    (0..N_COV)
        .map(|k| {
            if !coded.codings[k].covariate.is_scale() || regime.is_some_and(|a| a.covariate.index() == k) {
                return [f64::NAN; 3];
            }
            match regime {
                None => [rho(&TrackerScale::plain(k)), f64::NAN, f64::NAN],
                Some(&a) => [(false, false), (true, false), (false, true)].map(|(descending, collapse)| rho(&TrackerScale { k, within: Some(a), descending, collapse, and: None })),
            }
        })
        .collect()
}

/// Weighted Spearman correlation between activation and a binned covariate (bins take their
/// mid-rank; missing values are left out); 0 where either side is constant.
fn spearman(s: &BinStats, n_codes: usize) -> f64 {
    let (mut w, mut sx, mut sxx, mut sy, mut syy, mut sxy, mut below) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for b in (0..n_codes).filter(|&b| b != MISSING) {
        let ry = below + 0.5 * s.weight[b];
        below += s.weight[b];
        w += s.weight[b];
        sx += s.rank_sum[b];
        sxx += s.rank_sq_sum[b];
        sy += ry * s.weight[b];
        syy += ry * ry * s.weight[b];
        sxy += ry * s.rank_sum[b];
    }
    if w <= 0.0 {
        return 0.0;
    }
    let cov = sxy / w - (sx / w) * (sy / w);
    let (vx, vy) = (sxx / w - (sx / w).powi(2), syy / w - (sy / w).powi(2));
    if vx <= 1e-12 || vy <= 1e-12 { 0.0 } else { cov / (vx * vy).sqrt() }
}

/// Isotonic regression (pool-adjacent-violators) of bin means on bin order: the monotone g of a
/// tracker, fitted on the explain cells. Empty bins take the value of their left neighbour.
pub fn isotonic(s: &BinStats, n_codes: usize, increasing: bool) -> Vec<f64> {
    let sign = if increasing { 1.0 } else { -1.0 };
    // Blocks of (sum of w·a, weight, number of bins).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::new();
    for b in 0..n_codes.min(MISSING) {
        // An empty bin joins the block on its left: it carries no weight, and standing alone it
        // would keep two violating blocks from pooling.
        match blocks.last_mut() {
            Some(last) if s.weight[b] <= 0.0 => last.2 += 1,
            _ => blocks.push((sign * s.act_sum[b], s.weight[b], 1)),
        }
        while blocks.len() > 1 {
            let (a2, w2, n2) = blocks[blocks.len() - 1];
            let (a1, w1, n1) = blocks[blocks.len() - 2];
            let violates = w1 > 0.0 && w2 > 0.0 && a1 / w1 > a2 / w2;
            if !violates {
                break;
            }
            blocks.pop();
            *blocks.last_mut().expect("two blocks") = (a1 + a2, w1 + w2, n1 + n2);
        }
    }
    let mut g = Vec::with_capacity(MAX_CODES);
    let mut last = 0.0;
    for (a, w, n) in blocks {
        if w > 0.0 {
            last = sign * a / w;
        }
        g.extend(std::iter::repeat_n(last, n));
    }
    g.resize(MAX_CODES, last);
    g
}

/// R² of a fitted g on (other) bin statistics, over non-missing steps.
pub fn r_squared(s: &BinStats, n_codes: usize, g: &[f64]) -> f64 {
    let (mut w, mut sa, mut saa, mut sse) = (0.0, 0.0, 0.0, 0.0);
    for b in (0..n_codes).filter(|&b| b != MISSING) {
        w += s.weight[b];
        sa += s.act_sum[b];
        saa += s.act_sq_sum[b];
        sse += s.act_sq_sum[b] - 2.0 * g[b] * s.act_sum[b] + g[b] * g[b] * s.weight[b];
    }
    let sst = saa - sa * sa / w.max(1e-12);
    if sst <= 1e-12 { 0.0 } else { 1.0 - sse / sst }
}

/// Bin statistics of one tracker scale only (tracker scoring on the test half and under shifts).
pub fn bin_stats_one(firing: &Firing, steps: &[u32], ranked: &Ranked, coded: &CodedSteps, weighting: &Weighting, scale: &TrackerScale) -> BinStats {
    let mut s = BinStats::empty(scale.bins(coded, weighting));
    for (i, &step) in steps.iter().enumerate() {
        let w = ranked.weight(firing, i);
        if w > 0.0 {
            s.add(scale.code(coded, coded.step(step as usize)), w, ranked.rank[i] as f64, firing.values[i] as f64);
        }
    }
    s.close(ranked.zero_rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weight per code from (code, weight) pairs.
    fn bins(pairs: &[(usize, f64)]) -> [f64; MAX_CODES] {
        let mut out = [0.0; MAX_CODES];
        for &(code, w) in pairs {
            out[code] += w;
        }
        out
    }

    #[test]
    fn steps_without_the_covariate_rank_below_every_level() {
        // Levels 0..3; the feature fires on all 10 steps of level 2 and on 90 of the 100 steps
        // without a value. Left out, those 90 would give "the higher the covariate" AUROC 1.
        let weight = bins(&[(0, 100.0), (1, 100.0), (2, 10.0), (MISSING, 100.0)]);
        let fire = bins(&[(2, 10.0), (MISSING, 90.0)]);
        let (rising, auroc) = graded_direction(&weight, &fire);
        assert!(rising);
        // Quiet: 100 + 100 at levels 0–1 and 10 missing. Level-2 firing beats all 210; missing
        // firing beats nothing but ties the 10 missing quiet steps: (10·210 + 90·5) / (100·210).
        assert!((auroc - (10.0 * 210.0 + 90.0 * 5.0) / (100.0 * 210.0)).abs() < 1e-12, "{auroc}");
        // Falling, missing still ranks lowest: level-2 firing beats only the missing quiet steps,
        // (10·10 + 90·5) / (100·210); within the steps with a value it beats none: 0, the lower.
        let falling = graded_auroc(&weight, &fire, false);
        assert_eq!(falling, 0.0);
    }

    #[test]
    fn firing_on_exactly_the_steps_that_have_the_covariate_is_not_graded_by_it() {
        // An SOC scale, levels 0–2 on anchored cells, 100 steps of unanchored cells missing.
        let weight = bins(&[(0, 100.0), (1, 100.0), (2, 100.0), (MISSING, 100.0)]);
        // Fires on every anchored step and on no unanchored one: every-step AUROC 1 - 100·100/2/…
        // ranks missing lowest and calls it graded; within the anchored steps it grades nothing.
        let everywhere = bins(&[(0, 100.0), (1, 100.0), (2, 100.0)]);
        assert_eq!(graded_direction(&weight, &everywhere).1, 0.5);
        // Graded within the anchored steps (10, 50, 90 % firing) it still is, both ways scored.
        let graded = bins(&[(0, 10.0), (1, 50.0), (2, 90.0)]);
        let (rising, auroc) = graded_direction(&weight, &graded);
        let within = ordinal_auroc(&bins(&[(0, 10.0), (1, 50.0), (2, 90.0)]), &bins(&[(0, 90.0), (1, 50.0), (2, 10.0)]), true);
        assert!(rising && (auroc - within).abs() < 1e-12 && auroc > 0.7, "{auroc} vs {within}");
    }
}
