//! Candidate predicates (DESIGN §5 step 2) over coded covariates.
//!
//! Every covariate is coded per step into at most `MAX_CODES` codes: continuous ones into
//! quantile bins of the explain cells, categorical ones into their values. An [`Atom`] is a set of
//! allowed codes of one covariate (an interval of bins, a category, or its complement), so every
//! predicate test is one byte lookup and every interval score is a difference of prefix sums.

use serde::{Deserialize, Serialize};

use crate::data::schema::State;
use crate::label::covariates::{Covariate, Covariates, StepKind};
use crate::label::sentence::{resolution, round_bound};
use crate::label::scoring::{
    bin_stats, bin_stats_one, detector, graded_auroc, graded_direction, isotonic, r_squared, score_detector, tracker_rhos, within_cell_spearman, BinStats, DetectorScore, Firing, Ranked,
    SecondScale, TrackerScale,
};

/// Codes per covariate, the last one reserved for missing values (NaN temperature, null soh).
pub const MAX_CODES: usize = 24;
pub const MISSING: usize = MAX_CODES - 1;
pub const N_COV: usize = Covariate::ALL.len();

/// Bin edges as quantiles: deciles, with finer tails, because the regimes a feature picks out
/// (top of charge, a current step coming) are often the extreme few percent of steps.
const BIN_QUANTILES: [f64; 17] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995];

/// An atom with at most this share of its (indicator's) variance within cells takes whole cells.
const WHOLE_CELL_SHARE: f64 = 0.05;

/// Share of a covariate's steps at exactly zero above which zero gets its own bin
/// `[0, ZERO_BIN_TOP)`.
const ZERO_BIN_SHARE: f64 = 0.01;
/// Below any cycler's resolution, so its bound reads zero.
const ZERO_BIN_TOP: f32 = 1e-6;

/// The covariate's 1–99 % range: an upper bound at or above its top ("below 43.1 °C" where
/// 43.1 °C is the maximum) or a lower bound at or below its bottom excludes almost nothing and
/// is dropped (DESIGN §5 step 2). Tail events ("above 0.5C" in the top 0.5 %) stay.
const BOUND_RANGE: (f64, f64) = (0.01, 0.99);

/// How one covariate's values become codes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Coding {
    pub covariate: Covariate,
    /// Continuous: bin `b` holds values in `[edges[b-1], edges[b])` (open at both ends).
    pub edges: Vec<f32>,
    /// Categorical: the name of each code.
    pub categories: Vec<String>,
    /// Continuous: the `BOUND_RANGE` quantiles of the explain cells' values (None without any).
    #[serde(default)]
    pub range: Option<(f32, f32)>,
}

impl Coding {
    /// Quantile bins of the explain cells' values at `BIN_QUANTILES`, each edge rounded to a
    /// number an engineer would write ([`round_bound`]), deduplicated, so few-valued
    /// covariates (cycle number, ambient temperature) get one bin per value.
    fn quantiles(covariate: Covariate, mut values: Vec<f32>) -> Coding {
        values.retain(|v| v.is_finite());
        values.sort_by(f32::total_cmp);
        let mut edges: Vec<f32> = Vec::new();
        if values.is_empty() {
            return Coding { covariate, edges, categories: Vec::new(), range: None };
        }
        let at = |q: f64| values[((q * values.len() as f64) as usize).min(values.len() - 1)];
        for q in BIN_QUANTILES {
            let e = round_bound(covariate, at(q));
            // An edge equal to the minimum would leave the first bin empty.
            if e > values[0] && edges.last().is_none_or(|&last| e > last) {
                edges.push(e);
            }
        }
        // Steps at exactly zero (rests, steady current, a quantised voltage that holds) get a
        // bin of their own, or "during charge" could only be said with the rests in.
        let zeros = values.partition_point(|&v| v < 0.0)..values.partition_point(|&v| v <= 0.0);
        if resolution(covariate) > 0.0 && zeros.len() as f64 >= ZERO_BIN_SHARE * values.len() as f64 {
            let top = *values.last().expect("not empty");
            edges.extend([0.0, ZERO_BIN_TOP].into_iter().filter(|&e| e > values[0] && e <= top));
            edges.sort_by(f32::total_cmp);
            edges.dedup();
        }
        Coding { covariate, edges, categories: Vec::new(), range: Some((at(BOUND_RANGE.0), at(BOUND_RANGE.1))) }
    }

    /// An interval of bins `lo..=hi` whose every bound lies inside the 1–99 % range.
    fn bounds_inside_range(&self, lo: usize, hi: usize) -> bool {
        let Some((bottom, top)) = self.range else { return false };
        let (low, high) = self.range(lo, hi);
        low.is_none_or(|b| b > bottom) && high.is_none_or(|b| b < top)
    }

    pub fn n_codes(&self) -> usize {
        if self.covariate.is_categorical() { self.categories.len() } else { self.edges.len() + 1 }
    }

    /// Code of a continuous value (or of a categorical index).
    pub fn code(&self, x: f32) -> u8 {
        if self.covariate.is_categorical() {
            return x as u8;
        }
        if !x.is_finite() {
            return MISSING as u8;
        }
        self.edges.partition_point(|&e| e <= x) as u8
    }

    /// Value range of bins `lo..=hi`: (None for open below, None for open above).
    pub fn range(&self, lo: usize, hi: usize) -> (Option<f32>, Option<f32>) {
        let low = (lo > 0).then(|| self.edges[lo - 1]);
        let high = (hi + 1 < self.n_codes()).then(|| self.edges[hi]);
        (low, high)
    }
}

/// A set of allowed codes of one covariate: a quantile interval, a category, or its complement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Atom {
    pub covariate: Covariate,
    pub allowed: u32,
}

impl Atom {
    pub fn interval(covariate: Covariate, lo: usize, hi: usize) -> Atom {
        let allowed = ((1u64 << (hi + 1)) - (1u64 << lo)) as u32;
        Atom { covariate, allowed }
    }

    pub fn contains(&self, code: u8) -> bool {
        self.allowed >> code & 1 == 1
    }

    pub fn codes(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_CODES).filter(|&c| self.contains(c as u8))
    }

    /// Lowest and highest allowed code (an interval's bins).
    pub fn span(&self) -> (usize, usize) {
        (self.allowed.trailing_zeros() as usize, 31 - self.allowed.leading_zeros() as usize)
    }

    /// Jaccard overlap of two atoms' code sets.
    pub fn overlap(&self, other: &Atom) -> f64 {
        let union = (self.allowed | other.allowed).count_ones();
        if union == 0 { 0.0 } else { (self.allowed & other.allowed).count_ones() as f64 / union as f64 }
    }
}

/// A detector's predicate over one step's codes: every atom of `atoms` — with `any`, one of
/// the first two and every later one ((A ∨ B) ∧ C: a disjunction narrowed by a contrastive
/// term) — or else every atom of `or` when it is set ("fires when A while B, or when C": a
/// feature of two regimes, one of them narrowed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predicate {
    pub atoms: Vec<Atom>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub or: Vec<Atom>,
}

impl Predicate {
    /// Every atom (a conjunction).
    pub fn all(atoms: Vec<Atom>) -> Predicate {
        Predicate { atoms, any: false, or: Vec::new() }
    }

    /// One of two atoms ("A, or B"), in one order, so "A, or B" is never also "B, or A".
    pub fn either(a: Atom, b: Atom) -> Predicate {
        let mut atoms = vec![a, b];
        atoms.sort_by_key(|a| a.covariate.index());
        Predicate { atoms, any: true, or: Vec::new() }
    }

    pub fn holds(&self, codes: &[u8]) -> bool {
        let inside = |a: &Atom| a.contains(codes[a.covariate.index()]);
        let first = if self.any { self.atoms.iter().take(2).any(inside) && self.atoms.iter().skip(2).all(inside) } else { self.atoms.iter().all(inside) };
        first || (!self.or.is_empty() && self.or.iter().all(inside))
    }

    /// Every atom, `or`'s included.
    pub fn every_atom(&self) -> impl Iterator<Item = &Atom> {
        self.atoms.iter().chain(&self.or)
    }

    /// The conjunctions it is a disjunction of: (A ∨ B) ∧ C is A ∧ C or B ∧ C; with `or`, the
    /// atoms or the `or` atoms; else the atoms alone.
    fn branches(&self) -> Vec<Vec<&Atom>> {
        let mut branches = if self.any && self.atoms.len() >= 2 {
            (0..2).map(|k| std::iter::once(&self.atoms[k]).chain(&self.atoms[2..]).collect()).collect()
        } else {
            vec![self.atoms.iter().collect::<Vec<_>>()]
        };
        if !self.or.is_empty() {
            branches.push(self.or.iter().collect());
        }
        branches
    }
}

/// A candidate explanation of a feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Candidate {
    /// "Fires when the predicate holds" ([`Predicate`]).
    Detector(Predicate),
    /// "Activation ≈ monotone g(covariate)", inside a regime when `within` is set ("tracks
    /// |C-rate| during discharge": low outside it, rising with |C-rate| inside).
    Tracker {
        covariate: Covariate,
        increasing: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        within: Option<Atom>,
    },
    /// "Fires more often the higher (lower) the covariate", inside a regime when `within` is set
    /// ("fires during discharge, more often the higher the |C-rate|"): a detector that ranks the
    /// steps along a tracker's scale instead of saying yes or no, scored by AUROC for "the
    /// feature fires" over every level, as the graded leaves of `label_yardstick.py`'s trees are.
    Graded {
        covariate: Covariate,
        increasing: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        within: Option<Atom>,
        /// The covariate's code from which, in the graded direction, half of the firing lies
        /// (on the explain cells, inside the regime): "…, half of its firing above 1.2C". Two
        /// features on one scale fire at different places along it, and the sentence says where.
        #[serde(default)]
        half: u8,
        /// A second scale, for a graded detector over two covariates ("fires more often the
        /// lower the voltage and the higher the |C-rate|"; never with a regime): steps rank by
        /// the sum of their places along both scales ([`crate::label::scoring::pair_level`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        and: Option<Grade>,
    },
}

/// One scale of a two-covariate graded detector after the first: its covariate, direction and
/// the code from which half of the firing lies (as `Candidate::Graded`'s `half`), and its share
/// of the steps' summed place in tenths (5: both scales weigh the same).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Grade {
    pub covariate: Covariate,
    pub increasing: bool,
    pub half: u8,
    #[serde(default = "even_share")]
    pub share: u8,
}

fn even_share() -> u8 {
    5
}

/// Two labels count as the same (for stability and for distinct runners-up) when they are the
/// same kind over the same covariates and their code sets overlap by half or more (Jaccard), so
/// a bootstrap that moves an interval edge by one bin still agrees. A tracker and a graded
/// detector of one scale state one relation ("more active, and more often, the higher the
/// covariate") and count as the same.
pub fn same_label(a: &Candidate, b: &Candidate) -> bool {
    match (a.pair_scales(), b.pair_scales()) {
        (Some(x), Some(y)) => return x == y,
        (None, None) => {}
        _ => return false,
    }
    if let (Some((c1, i1, w1)), Some((c2, i2, w2))) = (a.scale(), b.scale()) {
        return c1 == c2
            && i1 == i2
            && match (w1, w2) {
                (None, None) => true,
                (Some(x), Some(y)) => x.covariate == y.covariate && x.overlap(&y) >= 0.5,
                _ => false,
            };
    }
    match (a, b) {
        (Candidate::Detector(p), Candidate::Detector(q)) => {
            let alike = |a: &[Atom], b: &[Atom]| a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| x.covariate == y.covariate && x.overlap(y) >= 0.5));
            // "A while B, or C" is "C, or A while B": a two-regime predicate matches either way round.
            let swapped = !p.any && !p.or.is_empty() && alike(&p.atoms, &q.or) && alike(&p.or, &q.atoms);
            p.any == q.any && ((alike(&p.atoms, &q.atoms) && alike(&p.or, &q.or)) || swapped)
        }
        _ => false,
    }
}

impl Candidate {
    /// A conjunction detector of these atoms.
    pub fn all(atoms: Vec<Atom>) -> Candidate {
        Candidate::Detector(Predicate::all(atoms))
    }

    /// A two-covariate graded detector's (covariate, increasing) pairs, ordered by covariate:
    /// "the lower A and the higher B" is "the higher B and the lower A".
    pub fn pair_scales(&self) -> Option<[(Covariate, bool); 2]> {
        let Candidate::Graded { covariate, increasing, and: Some(g), .. } = self else { return None };
        let mut both = [(*covariate, *increasing), (g.covariate, g.increasing)];
        both.sort_by_key(|x| x.0.index());
        Some(both)
    }

    /// A tracker's or graded detector's (first) covariate, direction and regime.
    pub fn scale(&self) -> Option<(Covariate, bool, Option<Atom>)> {
        match self {
            Candidate::Tracker { covariate, increasing, within } | Candidate::Graded { covariate, increasing, within, .. } => Some((*covariate, *increasing, *within)),
            Candidate::Detector(_) => None,
        }
    }

    pub fn covariates(&self) -> Vec<Covariate> {
        match self {
            Candidate::Detector(p) => p.every_atom().map(|a| a.covariate).collect(),
            Candidate::Tracker { covariate, within, .. } => [*covariate].into_iter().chain(within.map(|a| a.covariate)).collect(),
            Candidate::Graded { covariate, within, and, .. } => [*covariate].into_iter().chain(within.map(|a| a.covariate)).chain(and.map(|g| g.covariate)).collect(),
        }
    }

    /// Which raw-V/I baseline a label meets (DESIGN §5 step 5): that of its own kind, a
    /// two-covariate graded detector's apart from a one-covariate one's.
    pub fn baseline_kind(&self) -> (std::mem::Discriminant<Candidate>, bool) {
        (std::mem::discriminant(self), self.pair_scales().is_some())
    }

    /// True when it, or one of the regimes of a detector's disjunction, names only covariates
    /// constant through each cell ([`Covariate::is_per_cell`]). Such a regime takes whole cells,
    /// which the circular-shift null cannot test: "fires when SOC is above 100 %, or in drive
    /// cells" scored 0.941 held out against shifts at 0.936 ± 0.001 (OKane2022), a tail-fit p of
    /// 5e-4 that the within-cell regime, adding 0.003, earned alone.
    /// `whole` says which further atoms take whole cells on the cells at hand (SOH on a set of a
    /// few cycles per cell, [`CodedSteps::takes_whole_cells`]).
    pub fn is_per_cell(&self, whole: impl Fn(&Atom) -> bool) -> bool {
        match self {
            Candidate::Detector(p) => p.branches().iter().any(|b| b.iter().all(|a| a.covariate.is_per_cell() || whole(a))),
            _ => self.covariates().iter().all(|c| c.is_per_cell()),
        }
    }

    /// True when it uses only raw V and I: the baseline of DESIGN §5 step 5.
    pub fn is_raw_signal(&self) -> bool {
        self.covariates().iter().all(|c| c.is_raw_signal())
    }
}

/// Every step of a dataset coded, plus per-cell code counts for the weighted totals.
/// Memory: one byte per covariate and step, plus each cell's joint counts of covariate pairs
/// (stored sparsely: [`CellJoint`]), which is what lets conjunctions be counted without a pass
/// over all steps.
pub struct CodedSteps {
    pub codings: Vec<Coding>,
    /// `codes[step * N_COV + k]`, steps numbered cell after cell.
    pub codes: Vec<u8>,
    /// First global step of each cell (length cells + 1).
    pub cell_offsets: Vec<usize>,
    /// Per cell: `[k][code]` counts.
    cell_counts: Vec<Vec<[u32; MAX_CODES]>>,
    cell_joint: Vec<CellJoint>,
}

/// One cell's joint counts of covariate pairs k < l, slot `code_k * MAX_CODES + code_l`, only
/// the non-zero slots. Covariates move together (SOC and voltage, step kind and current), so
/// most slots of a pair are empty, and a dense table (~440 kB a cell) made memory grow with the
/// number of cells.
struct CellJoint {
    /// Where each pair's slots start in `slots` and `counts` (N_PAIRS + 1 entries).
    start: Vec<u32>,
    slots: Vec<u16>,
    counts: Vec<u32>,
}

impl CellJoint {
    fn from_dense(joint: &[Vec<u32>]) -> CellJoint {
        let mut out = CellJoint { start: vec![0], slots: Vec::new(), counts: Vec::new() };
        for table in joint {
            for (slot, &n) in table.iter().enumerate().filter(|(_, n)| **n > 0) {
                out.slots.push(slot as u16);
                out.counts.push(n);
            }
            out.start.push(out.slots.len() as u32);
        }
        out
    }

    /// The non-zero (slot, count) of pair `p`.
    fn pair(&self, p: usize) -> impl Iterator<Item = (usize, u32)> + '_ {
        let range = self.start[p] as usize..self.start[p + 1] as usize;
        self.slots[range.clone()].iter().map(|&s| s as usize).zip(self.counts[range].iter().copied())
    }
}

/// Index of the unordered pair (k, l), k ≠ l, in the upper triangle.
pub fn pair_index(k: usize, l: usize) -> usize {
    let (a, b) = if k < l { (k, l) } else { (l, k) };
    a * N_COV - a * (a + 1) / 2 + (b - a - 1)
}
const N_PAIRS: usize = N_COV * (N_COV - 1) / 2;

/// Steps sampled to compare two scales' rankings, and the rank correlation from which they
/// count as one label ([`CodedSteps::same_ranking`]).
const PROBE_STEPS: usize = 4096;
const SAME_RANKING: f64 = 0.9;

/// Spearman's rank correlation of two coded variables from their weighted joint counts
/// `[code x][code y]`, ties at their mid-ranks, `MISSING` on either side left out; 0 where
/// either side is constant.
fn table_spearman(joint: &[[f64; MAX_CODES]; MAX_CODES]) -> f64 {
    let valid = |c: usize| c != MISSING;
    let mid_ranks = |weight: [f64; MAX_CODES]| {
        let mut below = 0.0;
        weight.map(|w| {
            let r = below + 0.5 * w;
            below += w;
            r
        })
    };
    let rows: [f64; MAX_CODES] = std::array::from_fn(|x| if valid(x) { (0..MAX_CODES).filter(|&y| valid(y)).map(|y| joint[x][y]).sum() } else { 0.0 });
    let cols: [f64; MAX_CODES] = std::array::from_fn(|y| if valid(y) { (0..MAX_CODES).filter(|&x| valid(x)).map(|x| joint[x][y]).sum() } else { 0.0 });
    let (rx, ry) = (mid_ranks(rows), mid_ranks(cols));
    let (mut n, mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for x in (0..MAX_CODES).filter(|&x| valid(x)) {
        for y in (0..MAX_CODES).filter(|&y| valid(y)) {
            let w = joint[x][y];
            (n, sx, sy) = (n + w, sx + w * rx[x], sy + w * ry[y]);
            (sxx, syy, sxy) = (sxx + w * rx[x] * rx[x], syy + w * ry[y] * ry[y], sxy + w * rx[x] * ry[y]);
        }
    }
    if n <= 0.0 {
        return 0.0;
    }
    let (vx, vy) = (sxx / n - (sx / n).powi(2), syy / n - (sy / n).powi(2));
    if vx <= 1e-12 || vy <= 1e-12 { 0.0 } else { (sxy / n - (sx / n) * (sy / n)) / (vx * vy).sqrt() }
}

/// The (code of `k`, code of `l`) of a slot of pair (k, l)'s joint table (stored k < l).
fn slot_codes(k: usize, l: usize, slot: usize) -> (usize, usize) {
    let (low, high) = (slot / MAX_CODES, slot % MAX_CODES);
    if k < l { (low, high) } else { (high, low) }
}

impl CodedSteps {
    /// Codes every cell's covariates with bins fitted on the explain cells only (so bin edges
    /// carry no information from the test cells).
    pub fn new(cells: &[Covariates], explain: &[bool]) -> CodedSteps {
        CodedSteps::with_codings(cells, fit_codings(cells, explain))
    }

    /// Codes every cell with given codings (fitted on another dataset: `label --check`).
    pub fn with_codings(cells: &[Covariates], codings: Vec<Coding>) -> CodedSteps {
        let mut cell_offsets = vec![0];
        let mut codes = Vec::new();
        for cell in cells {
            let protocol = protocol_code(&codings[Covariate::Protocol.index()], cell.protocol.as_deref());
            for row in 0..cell.len() {
                for (k, coding) in codings.iter().enumerate() {
                    let code = if coding.covariate == Covariate::Protocol { protocol } else { coding.code(cell.columns[k][row]) };
                    codes.push(code);
                }
            }
            cell_offsets.push(codes.len() / N_COV);
        }
        let mut coded = CodedSteps { codings, codes, cell_offsets, cell_counts: Vec::new(), cell_joint: Vec::new() };
        coded.count_cells();
        coded
    }

    fn count_cells(&mut self) {
        use rayon::prelude::*;
        let n_cells = self.cell_offsets.len() - 1;
        let (counts, joints): (Vec<_>, Vec<_>) = (0..n_cells)
            .into_par_iter()
            .map(|c| {
                let mut counts = vec![[0u32; MAX_CODES]; N_COV];
                let mut joint = vec![vec![0u32; MAX_CODES * MAX_CODES]; N_PAIRS];
                for step in self.cell_offsets[c]..self.cell_offsets[c + 1] {
                    let row = self.step(step);
                    for k in 0..N_COV {
                        counts[k][row[k] as usize] += 1;
                        for l in k + 1..N_COV {
                            joint[pair_index(k, l)][row[k] as usize * MAX_CODES + row[l] as usize] += 1;
                        }
                    }
                }
                (counts, CellJoint::from_dense(&joint))
            })
            .unzip();
        self.cell_counts = counts;
        self.cell_joint = joints;
    }

    /// Two detectors on different covariates that pick out the same steps (rest ∧ t < 80 s and
    /// C-rate ≈ 0 ∧ t < 80 s; "the current steps up next, or …" with two wordings of its second
    /// regime) are one label in different words: Jaccard ≥ 0.8 over the steps of the weighted
    /// cells. From the count tables when both are conjunctions on at most two covariates
    /// together, else one scan of those steps; only called when `same_label` says no.
    pub fn same_steps(&self, a: &Candidate, b: &Candidate, w: &Weighting) -> bool {
        let (Candidate::Detector(a), Candidate::Detector(b)) = (a, b) else { return false };
        let (only_a, only_b) = (self.count_predicate(a, w), self.count_predicate(b, w));
        let conjunction = |p: &Predicate| !p.any && p.or.is_empty();
        let both = match conjunction(a) && conjunction(b) {
            true => self.count(&intersection(&a.atoms, &b.atoms), w),
            false => self.scan_count(w, |codes| a.holds(codes) && b.holds(codes)),
        };
        let either = only_a + only_b - both;
        either > 0.0 && both / either >= 0.8
    }

    /// Weighted number of steps of the weighted cells where `holds`, by a scan.
    fn scan_count(&self, w: &Weighting, holds: impl Fn(&[u8]) -> bool) -> f64 {
        (0..self.n_cells())
            .filter(|&c| w.cell_weight[c] > 0.0)
            .map(|c| w.cell_weight[c] * (self.cell_offsets[c]..self.cell_offsets[c + 1]).filter(|&s| holds(self.step(s))).count() as f64)
            .sum()
    }

    /// Two trackers or graded detectors whose scales rank the steps alike ("more often the lower
    /// the voltage" and "… the lower the SOC"; "the lower the voltage and, less so, the higher
    /// the |C-rate|" and the same with SOC) are one label in different words, as `same_steps`
    /// finds for detectors: a rank correlation of their levels, each in the direction the firing
    /// rises, of at least `SAME_RANKING` over `PROBE_STEPS` steps spread evenly over the dataset
    /// and weighted as `w` weighs their cells (a sample: both scales may span four covariates,
    /// which no count table holds).
    pub fn same_ranking(&self, a: &Candidate, b: &Candidate, w: &Weighting) -> bool {
        let (Some(scale_a), Some(scale_b)) = (TrackerScale::of(a), TrackerScale::of(b)) else { return false };
        let steps = self.codes.len() / N_COV;
        let probes = PROBE_STEPS.min(steps);
        let mut joint = [[0.0f64; MAX_CODES]; MAX_CODES];
        for i in 0..probes {
            let step = i * steps / probes;
            let (codes, weight) = (self.step(step), w.cell_weight[self.cell_of(step)]);
            joint[scale_a.code(self, codes)][scale_b.code(self, codes)] += weight;
        }
        let sign = if TrackerScale::rises(a) == TrackerScale::rises(b) { 1.0 } else { -1.0 };
        sign * table_spearman(&joint) >= SAME_RANKING
    }

    /// The cell a global step belongs to.
    pub fn cell_of(&self, step: usize) -> usize {
        self.cell_offsets.partition_point(|&o| o <= step) - 1
    }

    /// Weighted number of steps where a detector's predicate holds.
    /// From the count tables for up to two atoms, else by a scan of the weighted cells.
    pub fn count_predicate(&self, p: &Predicate, w: &Weighting) -> f64 {
        if p.atoms.len() <= 2 && p.or.is_empty() {
            return w.count_predicate(&p.atoms, p.any);
        }
        self.scan_count(w, |codes| p.holds(codes))
    }

    /// Weighted step counts per covariate and code among the steps where `p` holds (a scan of
    /// the weighted cells that tallies only those steps: cheap for the narrow predicates of
    /// labels).
    pub fn counts_where(&self, p: &Predicate, w: &Weighting) -> Vec<[f64; MAX_CODES]> {
        let mut out = vec![[0.0f64; MAX_CODES]; N_COV];
        for c in (0..self.n_cells()).filter(|&c| w.cell_weight[c] > 0.0) {
            for s in self.cell_offsets[c]..self.cell_offsets[c + 1] {
                let codes = self.step(s);
                if p.holds(codes) {
                    for (k, &code) in codes.iter().enumerate() {
                        out[k][code as usize] += w.cell_weight[c];
                    }
                }
            }
        }
        out
    }

    /// Weighted number of steps where every atom holds.
    pub fn count(&self, atoms: &[Atom], w: &Weighting) -> f64 {
        self.count_predicate(&Predicate::all(atoms.to_vec()), w)
    }

    /// Step counts per code of covariate `k` in cell `c`.
    pub fn cell_counts(&self, c: usize, k: usize) -> &[u32; MAX_CODES] {
        &self.cell_counts[c][k]
    }

    /// Whether `a` holds on all or none of almost every cell's steps (the cells `w` weighs):
    /// under `WHOLE_CELL_SHARE` of its variance lies within cells, all a circular shift moves.
    pub fn takes_whole_cells(&self, a: &Atom, w: &Weighting) -> bool {
        let k = a.covariate.index();
        let (mut within, mut steps, mut held) = (0.0, 0.0, 0.0);
        for (c, &weight) in w.cell_weight.iter().enumerate().filter(|(_, w)| **w > 0.0) {
            let n = self.cell_len(c) as f64;
            let inside: f64 = a.codes().map(|code| self.cell_counts[c][k][code] as f64).sum();
            within += weight * inside * (1.0 - inside / n.max(1.0));
            steps += weight * n;
            held += weight * inside;
        }
        let total = held * (1.0 - held / steps.max(f64::MIN_POSITIVE));
        total > 0.0 && within <= WHOLE_CELL_SHARE * total
    }

    /// Step counts per code of covariate `l` among cell `c`'s steps where `a` holds.
    pub fn cell_conditional_counts(&self, c: usize, a: &Atom, l: usize) -> [u32; MAX_CODES] {
        let mut out = [0u32; MAX_CODES];
        for (x, y, n) in self.cell_joint_counts(c, a.covariate.index(), l) {
            if a.contains(x as u8) {
                out[y] += n as u32;
            }
        }
        out
    }

    /// Cell `c`'s joint counts (code of `k`, code of `l`, count) of two covariates, k ≠ l.
    pub fn cell_joint_counts(&self, c: usize, k: usize, l: usize) -> impl Iterator<Item = (usize, usize, f64)> + '_ {
        self.cell_joint[c].pair(pair_index(k, l)).map(move |(slot, n)| {
            let (x, y) = slot_codes(k, l, slot);
            (x, y, n as f64)
        })
    }

    /// The codes of every covariate at one global step.
    pub fn step(&self, step: usize) -> &[u8] {
        &self.codes[step * N_COV..(step + 1) * N_COV]
    }

    pub fn n_cells(&self) -> usize {
        self.cell_offsets.len() - 1
    }

    pub fn cell_len(&self, c: usize) -> usize {
        self.cell_offsets[c + 1] - self.cell_offsets[c]
    }

    /// Totals of all steps weighted by cell (explain, test, or a bootstrap resample).
    pub fn weighting(&self, cell_weight: Vec<f64>) -> Weighting {
        let mut bins = vec![[0.0f64; MAX_CODES]; N_COV];
        let mut joint = vec![vec![0.0f64; MAX_CODES * MAX_CODES]; N_PAIRS];
        for (c, &w) in cell_weight.iter().enumerate().filter(|(_, w)| **w > 0.0) {
            for (bin, counts) in bins.iter_mut().zip(&self.cell_counts[c]) {
                for (b, &n) in bin.iter_mut().zip(counts) {
                    *b += w * n as f64;
                }
            }
            for (p, table) in joint.iter_mut().enumerate() {
                for (slot, n) in self.cell_joint[c].pair(p) {
                    table[slot] += w * n as f64;
                }
            }
        }
        let total = (0..self.n_cells()).map(|c| cell_weight[c] * self.cell_len(c) as f64).sum();
        Weighting { cell_weight, total, bins, joint }
    }
}

/// The predicate "all of `a` and all of `b` hold" with atoms on one covariate merged, so that
/// two one-covariate labels make a two-atom predicate the count tables answer.
fn intersection(a: &[Atom], b: &[Atom]) -> Vec<Atom> {
    let mut out: Vec<Atom> = Vec::new();
    for x in a.iter().chain(b) {
        match out.iter_mut().find(|o| o.covariate == x.covariate) {
            Some(o) => o.allowed &= x.allowed,
            None => out.push(*x),
        }
    }
    out
}

/// Cells weighted for one scoring pass: 1/0 for the explain or test half, multiplicities for a
/// bootstrap resample. Steps carry their cell's weight.
pub struct Weighting {
    pub cell_weight: Vec<f64>,
    /// Σ weight over all steps.
    pub total: f64,
    /// `[k][code]` weighted step counts.
    pub bins: Vec<[f64; MAX_CODES]>,
    /// `[pair][code_k * MAX_CODES + code_l]` weighted joint counts (k < l).
    joint: Vec<Vec<f64>>,
}

impl Weighting {
    /// Weighted number of steps where every atom holds (one atom or a pair on two covariates).
    pub fn count(&self, atoms: &[Atom]) -> f64 {
        match atoms {
            [a] => a.codes().map(|c| self.bins[a.covariate.index()][c]).sum(),
            [a, b] => {
                let (k, l) = (a.covariate.index(), b.covariate.index());
                let table = &self.joint[pair_index(k, l)];
                let (first, second) = if k < l { (a, b) } else { (b, a) };
                first.codes().flat_map(|x| second.codes().map(move |y| table[x * MAX_CODES + y])).sum()
            }
            _ => unreachable!("candidates have one or two atoms"),
        }
    }

    /// [`Weighting::count`] of a detector's predicate of up to two atoms; a disjunction by
    /// inclusion–exclusion (either = each − both).
    pub fn count_predicate(&self, atoms: &[Atom], any: bool) -> f64 {
        match (any, atoms) {
            (true, [a, b]) => self.count(&[*a]) + self.count(&[*b]) - self.count(atoms),
            _ => self.count(atoms),
        }
    }

    /// Weighted joint counts (code of `k`, code of `l`, count) of two covariates, k ≠ l.
    pub fn joint(&self, k: usize, l: usize) -> impl Iterator<Item = (usize, usize, f64)> + '_ {
        let table = &self.joint[pair_index(k, l)];
        table.iter().enumerate().filter(|(_, n)| **n > 0.0).map(move |(slot, &n)| {
            let (x, y) = slot_codes(k, l, slot);
            (x, y, n)
        })
    }

    /// Weighted counts per code of covariate `l` among steps where `a` holds.
    pub fn conditional_bins(&self, a: &Atom, l: usize) -> [f64; MAX_CODES] {
        let k = a.covariate.index();
        let table = &self.joint[pair_index(k, l)];
        let mut out = [0.0; MAX_CODES];
        for x in a.codes() {
            for (y, slot) in out.iter_mut().enumerate() {
                *slot += if k < l { table[x * MAX_CODES + y] } else { table[y * MAX_CODES + x] };
            }
        }
        out
    }
}

/// The name of the code that gathers what a label may not name: protocols of a single cell
/// (often just a file name) and cells without protocol metadata.
pub const OTHER_PROTOCOL: &str = "(other)";

/// Every covariate's coding, fitted on the explain cells.
pub fn fit_codings(cells: &[Covariates], explain: &[bool]) -> Vec<Coding> {
    Covariate::ALL.iter().map(|&c| fit_coding(c, cells, explain)).collect()
}

fn fit_coding(covariate: Covariate, cells: &[Covariates], explain: &[bool]) -> Coding {
    let categories = |names: Vec<String>| Coding { covariate, edges: Vec::new(), categories: names, range: None };
    match covariate {
        Covariate::State => categories(State::ALL.iter().map(|s| s.as_str().to_owned()).collect()),
        Covariate::StepKind => categories(StepKind::ALL.iter().map(|k| k.as_str().to_owned()).collect()),
        Covariate::Protocol => categories(shared_protocols(cells)),
        _ => {
            // A stride keeps the quantile sort bounded on large datasets.
            let total: usize = cells.iter().zip(explain).filter(|(_, e)| **e).map(|(c, _)| c.len()).sum();
            let stride = (total / 200_000).max(1);
            let values = cells
                .iter()
                .zip(explain)
                .filter(|(_, e)| **e)
                .flat_map(|(c, _)| c.column(covariate).iter().step_by(stride).copied())
                .collect();
            Coding::quantiles(covariate, values)
        }
    }
}

/// Protocol names shared by at least two cells (DESIGN §5 step 2: no term names a single cell
/// or file), sorted, then `OTHER_PROTOCOL`. Beyond the code budget, rare ones join the other.
fn shared_protocols(cells: &[Covariates]) -> Vec<String> {
    let mut names: Vec<&str> = cells.iter().filter_map(|c| c.protocol.as_deref()).collect();
    names.sort();
    let mut shared: Vec<String> = names.chunk_by(|a, b| a == b).filter(|run| run.len() >= 2).map(|run| run[0].to_owned()).collect();
    shared.truncate(MISSING - 1);
    shared.push(OTHER_PROTOCOL.to_owned());
    shared
}

/// A protocol's code under a coding (fitted here or on another dataset); unknown or unshared
/// protocols take `OTHER_PROTOCOL`'s.
pub fn protocol_code(coding: &Coding, protocol: Option<&str>) -> u8 {
    let other = coding.categories.len().saturating_sub(1);
    protocol.and_then(|p| coding.categories.iter().position(|c| c == p)).unwrap_or(other) as u8
}

/// Every atom of one covariate: intervals of contiguous bins (not the whole range) for
/// continuous covariates; each category and its complement for categorical ones.
pub fn atoms_of(coding: &Coding) -> Vec<Atom> {
    let n = coding.n_codes();
    let c = coding.covariate;
    if !c.is_worded() {
        return Vec::new();
    }
    if c.is_categorical() {
        // The catch-all code (other step kinds, unshared protocols) is never named on its
        // own; it still sits inside the complements ("except in gitt cells").
        let catch_all = |code: usize| matches!(c, Covariate::StepKind | Covariate::Protocol) && code + 1 == n;
        let all = (1u32 << n) - 1;
        (0..n)
            .filter(|&code| !catch_all(code))
            .flat_map(|code| {
                let one = Atom { covariate: c, allowed: 1 << code };
                let others = Atom { covariate: c, allowed: all & !(1 << code) };
                if n > 2 { vec![one, others] } else { vec![one] }
            })
            .collect()
    } else {
        (0..n)
            .flat_map(|lo| (lo..n).map(move |hi| (lo, hi)))
            .filter(|&(lo, hi)| !(lo == 0 && hi + 1 == n) && coding.bounds_inside_range(lo, hi))
            .map(|(lo, hi)| Atom::interval(c, lo, hi))
            .collect()
    }
}

/// Scores of one candidate on one half of the cells (NaN where the kind has no such score).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Score {
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub auroc: f64,
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub f1: f64,
    /// A detector's share of the steps it names on which the feature fires (cells weighted as
    /// in AUROC): a rare feature can rank its steps first (AUROC 0.98) and fire on 1 in 200.
    #[serde(default = "crate::json::nan", deserialize_with = "crate::json::f64_or_nan")]
    pub precision: f64,
    /// Spearman in the tracker's direction (positive = agrees with it).
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub spearman: f64,
    #[serde(deserialize_with = "crate::json::f64_or_nan")]
    pub r2: f64,
}

impl Score {
    /// No score (a detector that cannot be scored on these cells).
    pub(crate) const NONE: Score = Score { auroc: f64::NAN, f1: f64::NAN, precision: f64::NAN, spearman: f64::NAN, r2: f64::NAN };

    pub(crate) fn detector(d: DetectorScore) -> Score {
        Score { auroc: d.auroc, f1: d.f1, precision: d.precision, ..Score::NONE }
    }

    /// A graded detector's score: AUROC only (F1 needs a yes/no answer).
    pub(crate) fn graded(auroc: f64) -> Score {
        Score { auroc, ..Score::NONE }
    }

    pub(crate) fn tracker(spearman: f64, r2: f64) -> Score {
        Score { spearman, r2, ..Score::NONE }
    }
}

/// A candidate with its explain-half scores (and, for a tracker, its fitted g per code).
#[derive(Debug, Clone)]
pub struct Scored {
    pub candidate: Candidate,
    pub score: Score,
    pub g: Vec<f64>,
}

/// Thresholds and search widths used when ranking candidates.
pub struct SearchSettings {
    pub min_auroc: f64,
    pub min_spearman: f64,
    /// How many top single atoms, by F1 and again by AUROC, seed the combination search.
    pub conjunction_seeds: usize,
    /// A conjunction must raise F1 by this much over its seed atom (simpler labels win ties).
    pub min_conjunction_gain: f64,
    pub keep: usize,
}

impl SearchSettings {
    /// Detectors and trackers on one scale: the score over its acceptance threshold
    /// (AUROC ≥ 0.85 and |Spearman| ≥ 0.6 both map to 1).
    pub fn strength(&self, candidate: &Candidate, s: &Score) -> f64 {
        let v = match candidate {
            Candidate::Detector(_) | Candidate::Graded { .. } => (s.auroc - 0.5) / (self.min_auroc - 0.5),
            Candidate::Tracker { .. } => s.spearman / self.min_spearman,
        };
        if v.is_nan() { f64::NEG_INFINITY } else { v }
    }
}

/// What the held-out cells can test, known before any candidate is scored there: their
/// covariates' code totals, and whether the feature is ever quiet on them.
#[derive(Clone, Copy)]
pub struct Testable<'a> {
    pub held_out: &'a Weighting,
    pub quiet: bool,
}

/// The explain cells split once more (DESIGN §5 step 2): a conjunction's second term is chosen
/// on `fit` and kept only if it raises F1 on `check`, cells the choice never saw.
pub struct Validation<'a> {
    pub fit: &'a Weighting,
    pub fit_ranked: &'a Ranked,
    pub check: &'a Weighting,
    pub check_ranked: &'a Ranked,
}

/// The search on one weighting (DESIGN §5 step 2): every atom and tracker, then conjunctions
/// seeded by the best atoms (terms confirmed on `validation` when given, else on the same cells).
/// Detectors are ranked both by F1 (the predicate that matches where the feature fires) and by
/// strength, trackers by Spearman; the best few of each are then ordered by strength.
/// With `testable`, candidates no held-out score could test are passed over: detectors whose
/// predicate holds on none or all of the held-out steps ("after a current step down of more
/// than 3C" where only an explain cell has such steps), and every detector of a feature that
/// fires on every held-out step (no quiet step to tell it from; a tracker can still be scored),
/// and every candidate over per-cell covariates alone ("fires in drive cells") or regimes that
/// take whole cells of the held-out set ("SOH below 95 %" over a few cycles), or with such a
/// regime in a disjunction ([`Candidate::is_per_cell`]): the shift null cannot test a regime of
/// whole cells, so as the label it would leave the feature unexplained (or explained by the other
/// regime alone), where a runner-up that varies within cells can be tested.
/// Returns the distinct top `keep` and the baselines: the best raw-V/I candidate of each kind.
pub fn search(
    firing: &Firing,
    ranked: &Ranked,
    coded: &CodedSteps,
    weighting: &Weighting,
    set: &SearchSettings,
    validation: Option<&Validation>,
    testable: Option<&Testable>,
) -> (Vec<Scored>, Vec<Scored>) {
    let stats = bin_stats(firing, &firing.steps, ranked, coded, weighting, None);
    let mut detectors: Vec<Scored> = Vec::new();
    for (k, coding) in coded.codings.iter().enumerate() {
        for atom in atoms_of(coding) {
            if !covers_some_but_not_all(&atom, &stats[k], weighting.total) {
                continue;
            }
            if let Some(d) = atom_score(&atom, &stats[k], ranked, weighting.total) {
                detectors.push(Scored { candidate: Candidate::all(vec![atom]), score: Score::detector(d), g: Vec::new() });
            }
        }
    }
    by_f1(&mut detectors);
    let scope = Scope { firing, ranked, coded, weighting };
    // Seeds by F1 (where the feature fires) and by AUROC (what acceptance asks): a broad atom
    // that catches most firing is the root a narrowing term needs.
    let mut seeds = leading_atoms(&detectors, set.conjunction_seeds);
    let mut by_auroc = detectors.clone();
    by_auroc.sort_by(|a, b| b.score.auroc.total_cmp(&a.score.auroc));
    for a in leading_atoms(&by_auroc, set.conjunction_seeds) {
        if !seeds.contains(&a) {
            seeds.push(a);
        }
    }
    let mut combinations = combinations(&seeds, &scope, set, validation);
    if let Some(validation) = validation {
        let conjunctions = combinations.iter().filter_map(|s| match &s.candidate {
            Candidate::Detector(p) if !p.any => Some(p.clone()),
            _ => None,
        });
        let firsts: Vec<Predicate> = seeds.iter().map(|&a| Predicate::all(vec![a])).chain(conjunctions).collect();
        combinations.extend(second_regimes(&firsts, &scope, set, validation));
    }
    let rhos = tracker_rhos(firing, coded, weighting, None);
    let mut trackers: Vec<Scored> = coded.codings.iter().enumerate().filter(|(_, c)| c.covariate.is_scale()).map(|(k, c)| tracker(c, &stats[k], rhos[k][0])).collect();
    let regimes = leading_atoms(&detectors, TRACKER_REGIMES);
    trackers.extend(regime_trackers(&regimes, &scope, set, validation));
    let (mut graded, mut pairs) = graded(&stats, &regimes, &scope, set, validation);
    detectors.extend(combinations);
    if let Some(&Testable { held_out, quiet }) = testable {
        let scorable = |p: &Predicate| {
            let n = coded.count_predicate(p, held_out);
            n > 0.0 && n < held_out.total
        };
        let testable = |s: &Scored| !s.candidate.is_per_cell(|a| coded.takes_whole_cells(a, held_out)) && match &s.candidate {
            Candidate::Detector(p) => quiet && scorable(p),
            Candidate::Tracker { within, .. } => within.is_none_or(|a| scorable(&Predicate::all(vec![a]))),
            Candidate::Graded { within, .. } => quiet && within.is_none_or(|a| scorable(&Predicate::all(vec![a]))),
        };
        detectors.retain(testable);
        trackers.retain(testable);
        graded.retain(testable);
        pairs.retain(testable);
    }
    by_f1(&mut detectors);
    trackers.sort_by(|a, b| b.score.spearman.total_cmp(&a.score.spearman));
    graded.sort_by(|a, b| b.score.auroc.total_cmp(&a.score.auroc));
    pairs.sort_by(|a, b| b.score.auroc.total_cmp(&a.score.auroc));
    let baselines = [&detectors, &trackers, &graded, &pairs].into_iter().filter_map(|list| list.iter().find(|s| s.candidate.is_raw_signal()).cloned()).collect();
    let by_strength = |list: &mut Vec<Scored>| list.sort_by(|a, b| set.strength(&b.candidate, &b.score).total_cmp(&set.strength(&a.candidate, &a.score)));
    let mut top = distinct(detectors.clone(), set.keep);
    by_strength(&mut detectors);
    top.extend(distinct(detectors, set.keep));
    top.extend(distinct(trackers, set.keep));
    top.extend(distinct(graded, set.keep));
    top.extend(distinct(pairs, set.keep));
    by_strength(&mut top);
    (distinct(top, set.keep), baselines)
}

fn by_f1(list: &mut [Scored]) {
    list.sort_by(|a, b| b.score.f1.total_cmp(&a.score.f1));
}

/// The first `keep` candidates of a ranked list that are not the same label as an earlier one.
fn distinct(list: Vec<Scored>, keep: usize) -> Vec<Scored> {
    let mut out: Vec<Scored> = Vec::new();
    for s in list {
        if out.len() == keep {
            break;
        }
        if !out.iter().any(|o| same_label(&o.candidate, &s.candidate)) {
            out.push(s);
        }
    }
    out
}

/// A predicate true on nearly every step ("SOC above −2 %") says nothing and has no held-out
/// negatives; one true on a handful of steps cannot be scored. Keep 0.1 %–98 % coverage.
fn covers_some_but_not_all(atom: &Atom, s: &BinStats, total: f64) -> bool {
    let share = atom.codes().map(|c| s.weight[c]).sum::<f64>() / total.max(1.0);
    (0.001..=0.98).contains(&share)
}

/// Detector score of an atom from its covariate's bin statistics.
fn atom_score(atom: &Atom, s: &BinStats, ranked: &Ranked, total: f64) -> Option<DetectorScore> {
    let (mut w, mut f) = (0.0, 0.0);
    for c in atom.codes() {
        w += s.weight[c];
        f += s.fire_weight[c];
    }
    detector(w, f, ranked, total)
}

/// What one search looks at: a feature's firing, ranked on one weighting of the cells.
#[derive(Clone, Copy)]
struct Scope<'a> {
    firing: &'a Firing,
    ranked: &'a Ranked,
    coded: &'a CodedSteps,
    weighting: &'a Weighting,
}

/// The first `n` single atoms of `detectors` (best first) on distinct covariates: the seeds of
/// conjunctions and the regimes of trackers.
fn leading_atoms(detectors: &[Scored], n: usize) -> Vec<Atom> {
    let mut out: Vec<Atom> = Vec::new();
    for d in detectors {
        if let Candidate::Detector(Predicate { atoms, any: false, or }) = &d.candidate {
            if out.len() < n && atoms.len() == 1 && or.is_empty() && out.iter().all(|a| a.covariate != atoms[0].covariate) {
                out.push(atoms[0]);
            }
        }
    }
    out
}

/// Two-term conjunctions (rest ∧ step_time < 120 s) and disjunctions (CV hold ∨ rest after
/// charge: a feature of two regimes). For each seed atom, the atom of another covariate that
/// best narrows it on the steps where the seed holds, and the one that best widens it to the
/// steps where it does not (by AUROC: choosing by F1 narrows "at rest" to "the first 80 s"
/// of a feature that fires for 3 min, and held out it fails), each kept when it raises F1 by
/// `min_conjunction_gain` on the validation cells (a term that only fits the cells it was
/// chosen on lowers held-out F1), then scored on `weighting`. Both come from the seed's
/// conditional tables: either = each − both.
fn combinations(seeds: &[Atom], scope: &Scope, set: &SearchSettings, validation: Option<&Validation>) -> Vec<Scored> {
    let Scope { firing, ranked, coded, weighting } = *scope;
    let mut out = Vec::new();
    let (fit, fit_ranked) = validation.map_or((weighting, ranked), |v| (v.fit, v.fit_ranked));
    let (check, check_ranked) = validation.map_or((weighting, ranked), |v| (v.check, v.check_ranked));
    let alone = bin_stats(firing, &firing.steps, fit_ranked, coded, fit, None);
    let sum = |codes: &Atom, x: &[f64; MAX_CODES]| codes.codes().map(|c| x[c]).sum::<f64>();
    for &given in seeds {
        let k = given.covariate.index();
        let (given_weight, given_fire) = (sum(&given, &alone[k].weight), sum(&given, &alone[k].fire_weight));
        let both = bin_stats(firing, &firing.steps, fit_ranked, coded, fit, Some(&given));
        let others = || coded.codings.iter().enumerate().filter(|(l, _)| *l != k).flat_map(|(l, coding)| atoms_of(coding).into_iter().map(move |b| (l, b)));
        let narrower = best_by_auroc(others().filter_map(|(l, b)| atom_score(&b, &both[l], fit_ranked, fit.total).map(|d| (b, d.auroc))));
        let wider = best_by_auroc(others().filter_map(|(l, b)| {
            let weight = given_weight + sum(&b, &alone[l].weight) - sum(&b, &both[l].weight);
            let fire = given_fire + sum(&b, &alone[l].fire_weight) - sum(&b, &both[l].fire_weight);
            detector(weight, fire, fit_ranked, fit.total).map(|d| (b, d.auroc))
        }));
        let pairs = [(narrower, false), (wider, true)];
        for (b, any) in pairs.into_iter().filter_map(|(b, any)| b.map(|b| (b, any))) {
            let pair = if any { Predicate::either(given, b) } else { Predicate::all(vec![given, b]) };
            let f1_on_check = |p: &Predicate| f1_on(p, firing, check_ranked, coded, check);
            if f1_on_check(&pair) <= f1_on_check(&Predicate::all(vec![given])) + set.min_conjunction_gain {
                continue;
            }
            if let Some(d) = score_detector(&pair, firing, &firing.steps, ranked, coded, weighting) {
                out.push(Scored { candidate: Candidate::Detector(pair), score: Score::detector(d), g: Vec::new() });
            }
        }
    }
    out
}

/// Features of two regimes where one regime needs two terms: "fires when A while B, or when C"
/// and "fires when A, or when C while D" (DESIGN §5 step 2: up to three terms). For each first
/// regime P (a seed atom or a two-atom conjunction), the atom C that best widens it to the
/// steps where P does not hold, by AUROC on the `fit` cells; for a one-atom P, C is then
/// narrowed by the atom D that best keeps P ∨ (C ∧ D) on the steps outside P. Kept when it
/// raises F1 over P by `min_conjunction_gain` on the `check` cells, then scored on `weighting`.
/// Counts outside P are the totals less one scan of the steps where P holds. Runs only with a
/// validation split (the labeller's and each bootstrap resample's).
fn second_regimes(firsts: &[Predicate], scope: &Scope, set: &SearchSettings, validation: &Validation) -> Vec<Scored> {
    let Scope { firing, ranked, coded, weighting } = *scope;
    let (fit, fit_ranked) = (validation.fit, validation.fit_ranked);
    let f1_on_check = |p: &Predicate| f1_on(p, firing, validation.check_ranked, coded, validation.check);
    // Firing weight per covariate and code over the fit cells' firing steps where `keep` holds.
    let fire_where = |keep: &dyn Fn(&[u8]) -> bool| {
        let mut out = vec![[0.0f64; MAX_CODES]; N_COV];
        for (i, &step) in firing.steps.iter().enumerate() {
            let codes = coded.step(step as usize);
            let w = fit_ranked.weight(firing, i);
            if w > 0.0 && keep(codes) {
                for (k, &c) in codes.iter().enumerate() {
                    out[k][c as usize] += w;
                }
            }
        }
        out
    };
    let sum = |a: &Atom, x: &[[f64; MAX_CODES]]| a.codes().map(|c| x[a.covariate.index()][c]).sum::<f64>();
    let mut out = Vec::new();
    for p in firsts {
        let (in_weight, in_fire) = (coded.count_predicate(p, fit), sum_fire(firing, fit_ranked, coded, p));
        let inside = coded.counts_where(p, fit);
        let outside: Vec<[f64; MAX_CODES]> = (0..N_COV).map(|k| std::array::from_fn(|c| fit.bins[k][c] - inside[k][c])).collect();
        let outside_fire = fire_where(&|codes| !p.holds(codes));
        let used: Vec<Covariate> = p.atoms.iter().map(|a| a.covariate).collect();
        // AUROC on the fit cells of P widened by the steps of `a` outside P (counts `w`, firing `f`).
        let widened = |a: Atom, w: &[[f64; MAX_CODES]], f: &[[f64; MAX_CODES]]| detector(in_weight + sum(&a, w), in_fire + sum(&a, f), fit_ranked, fit.total).map(|d| (a, d.auroc));
        let atoms = || coded.codings.iter().filter(|c| !used.contains(&c.covariate)).flat_map(atoms_of);
        let Some(c) = best_by_auroc(atoms().filter_map(|a| widened(a, &outside, &outside_fire))) else { continue };
        let second = if p.atoms.len() == 2 {
            vec![c]
        } else {
            // D among the steps outside P where C holds: C's joint counts less those inside P.
            let inside_c = coded.counts_where(&Predicate::all(vec![p.atoms[0], c]), fit);
            let outside_c: Vec<[f64; MAX_CODES]> = (0..N_COV)
                .map(|l| {
                    if l == c.covariate.index() {
                        return [0.0; MAX_CODES];
                    }
                    let with_c = fit.conditional_bins(&c, l);
                    std::array::from_fn(|x| with_c[x] - inside_c[l][x])
                })
                .collect();
            let fire_c = fire_where(&|codes| !p.holds(codes) && c.contains(codes[c.covariate.index()]));
            let Some(d) = best_by_auroc(atoms().filter(|d| d.covariate != c.covariate).filter_map(|a| widened(a, &outside_c, &fire_c))) else { continue };
            vec![c, d]
        };
        let both = Predicate { or: second, ..p.clone() };
        if f1_on_check(&both) <= f1_on_check(p) + set.min_conjunction_gain {
            continue;
        }
        if let Some(d) = score_detector(&both, firing, &firing.steps, ranked, coded, weighting) {
            out.push(Scored { candidate: Candidate::Detector(both), score: Score::detector(d), g: Vec::new() });
        }
    }
    out
}

/// The atom of the highest AUROC (of equals, the last).
fn best_by_auroc(scored: impl Iterator<Item = (Atom, f64)>) -> Option<Atom> {
    scored.max_by(|x, y| x.1.total_cmp(&y.1)).map(|x| x.0)
}

/// F1 of a predicate on the cells `w` weighs (0 where it cannot be scored).
fn f1_on(p: &Predicate, firing: &Firing, ranked: &Ranked, coded: &CodedSteps, w: &Weighting) -> f64 {
    score_detector(p, firing, &firing.steps, ranked, coded, w).map_or(0.0, |d| d.f1)
}

/// Firing weight of the steps where `p` holds.
fn sum_fire(firing: &Firing, ranked: &Ranked, coded: &CodedSteps, p: &Predicate) -> f64 {
    firing.steps.iter().enumerate().map(|(i, &s)| (ranked.weight(firing, i), s)).filter(|&(w, s)| w > 0.0 && p.holds(coded.step(s as usize))).map(|(w, _)| w).sum()
}

/// A monotone tracker of a continuous covariate: direction from the sign of Spearman,
/// g by isotonic regression of the bin means.
fn tracker(coding: &Coding, s: &BinStats, rho: f64) -> Scored {
    let n = coding.n_codes();
    let increasing = rho >= 0.0;
    let g = isotonic(s, n, increasing);
    let score = Score::tracker(rho.abs(), r_squared(s, n, &g));
    Scored { candidate: Candidate::Tracker { covariate: coding.covariate, increasing, within: None }, score, g }
}

/// Graded detectors (DESIGN §5 step 2: trackers preferred to thresholds when they explain
/// more): each continuous covariate's scale, and for each of the best `regimes` the scale of the
/// covariate and direction that grade it best, directions chosen by AUROC on the `fit` cells.
/// Each is kept when on the `check` cells it beats what it grades by `min_conjunction_gain`
/// (a covariate's best interval, chosen on `fit`; the regime alone): a threshold that says as
/// much is the simpler label. Then scored on `weighting` (`stats` are its bin statistics).
/// Returns them, and apart the two-covariate ones ([`graded_pairs`]).
fn graded(stats: &[BinStats], regimes: &[Atom], scope: &Scope, set: &SearchSettings, validation: Option<&Validation>) -> (Vec<Scored>, Vec<Scored>) {
    let Scope { firing, ranked, coded, weighting } = *scope;
    let (fit, fit_ranked) = validation.map_or((weighting, ranked), |v| (v.fit, v.fit_ranked));
    let (check, check_ranked) = validation.map_or((weighting, ranked), |v| (v.check, v.check_ranked));
    let all_fit = bin_stats(firing, &firing.steps, fit_ranked, coded, fit, None);
    let all_check = bin_stats(firing, &firing.steps, check_ranked, coded, check, None);
    let yes_no = |a: &Atom, s: &[BinStats], ranked: &Ranked, w: &Weighting| atom_score(a, &s[a.covariate.index()], ranked, w.total).map_or(0.5, |d| d.auroc);
    let continuous: Vec<usize> = (0..N_COV).filter(|&k| coded.codings[k].covariate.is_scale()).collect();
    let mut out = Vec::new();
    let plain_on = |s: &[BinStats], k: usize, rising: bool| graded_auroc(&s[k].weight, &s[k].fire_weight, rising);
    for &k in &continuous {
        let plain = |s: &[BinStats], rising: bool| plain_on(s, k, rising);
        let (rising, _) = graded_direction(&all_fit[k].weight, &all_fit[k].fire_weight);
        let Some(interval) = best_by_auroc(atoms_of(&coded.codings[k]).into_iter().map(|a| (a, yes_no(&a, &all_fit, fit_ranked, fit)))) else { continue };
        if plain(&all_check, rising) >= yes_no(&interval, &all_check, check_ranked, check) + set.min_conjunction_gain {
            let auroc = plain(stats, rising);
            let half = half_code(&stats[k].fire_weight, coded.codings[k].n_codes(), rising);
            out.push(Scored { candidate: Candidate::Graded { covariate: coded.codings[k].covariate, increasing: rising, within: None, half, and: None }, score: Score::graded(auroc), g: Vec::new() });
        }
    }
    for &regime in regimes {
        // A scale's AUROC from the covariate's statistics over all steps and inside the regime.
        let on_scale = |scale: &TrackerScale, all: &[BinStats], inside: &[BinStats]| {
            let (k, w) = (scale.k, &inside[scale.k]);
            let weight = scale.regroup(coded, all[k].weight, |_| w.weight);
            graded_auroc(&weight, &scale.regroup(coded, all[k].fire_weight, |_| w.fire_weight), true)
        };
        let inside_fit = bin_stats(firing, &firing.steps, fit_ranked, coded, fit, Some(&regime));
        let scales = continuous.iter().filter(|&&k| k != regime.covariate.index()).flat_map(|&k| [false, true].map(|descending| TrackerScale { k, within: Some(regime), descending, collapse: false, and: None }));
        // Of equal scales the first: covariates come in order of preference.
        let Some(best) = scales.map(|s| (s, on_scale(&s, &all_fit, &inside_fit))).filter(|x| x.1.is_finite()).min_by(|a, b| b.1.total_cmp(&a.1)).map(|x| x.0) else { continue };
        let inside_check = bin_stats(firing, &firing.steps, check_ranked, coded, check, Some(&regime));
        // As for regime trackers, both terms must add.
        let alone = yes_no(&regime, &all_check, check_ranked, check).max(plain_on(&all_check, best.k, !best.descending));
        if !(on_scale(&best, &all_check, &inside_check) >= alone + set.min_conjunction_gain) {
            continue;
        }
        let inside = &bin_stats(firing, &firing.steps, ranked, coded, weighting, Some(&regime))[best.k];
        let half = half_code(&inside.fire_weight, coded.codings[best.k].n_codes(), !best.descending);
        let candidate = Candidate::Graded { covariate: coded.codings[best.k].covariate, increasing: !best.descending, within: Some(regime), half, and: None };
        let s = bin_stats_one(firing, &firing.steps, ranked, coded, weighting, &best);
        out.push(Scored { candidate, score: Score::graded(graded_auroc(&s.weight, &s.fire_weight, true)), g: Vec::new() });
    }
    let pairs = graded_pairs(stats, [&all_fit, &all_check], &continuous, scope, set, validation);
    (out, pairs)
}

/// How many covariates a two-covariate graded detector may start from (those whose one-scale
/// AUROC on the fit cells is highest), and how many of the best pairs there are confirmed on
/// the check cells.
const PAIR_FIRSTS: usize = 6;
const PAIRS_CHECKED: usize = 2;
/// The second scale's shares of the summed place tried (tenths): less, as much, more.
const PAIR_SHARES: [u8; 3] = [3, 5, 7];

/// Two-covariate graded detectors (DESIGN §5 step 2): "fires more often the lower the voltage
/// and the higher the |C-rate|", steps ranked by their summed places along both scales
/// ([`crate::label::scoring::pair_level`]). A feature whose firing grows along two covariates
/// at once (deep discharge at high current) is ranked well by neither alone, and a yes/no
/// conjunction cuts both scales at one edge. The first covariate is one of the `PAIR_FIRSTS`
/// ranking firing best alone on the fit cells (in its direction there); the second any other
/// continuous covariate in either direction and with a share of `PAIR_SHARES`, all chosen by
/// AUROC on the fit cells from one pass over the firing steps per first covariate. The best
/// `PAIRS_CHECKED` distinct pairs are kept when on the check cells they beat each of their
/// scales alone by `min_conjunction_gain` (each term adds held-out gain), then scored on
/// `weighting` (`stats`); `[all_fit, all_check]` are the bin statistics of the fit and check
/// cells.
fn graded_pairs(stats: &[BinStats], [all_fit, all_check]: [&[BinStats]; 2], continuous: &[usize], scope: &Scope, set: &SearchSettings, validation: Option<&Validation>) -> Vec<Scored> {
    let Scope { firing, ranked, coded, weighting } = *scope;
    let (fit, fit_ranked) = validation.map_or((weighting, ranked), |v| (v.fit, v.fit_ranked));
    let (check, check_ranked) = validation.map_or((weighting, ranked), |v| (v.check, v.check_ranked));
    let alone = |s: &[BinStats], k: usize, rises: bool| graded_auroc(&s[k].weight, &s[k].fire_weight, rises);
    let mut firsts: Vec<(usize, bool, f64)> = continuous
        .iter()
        .filter_map(|&k| {
            let (rises, auroc) = graded_direction(&all_fit[k].weight, &all_fit[k].fire_weight);
            auroc.is_finite().then_some((k, rises, auroc))
        })
        .collect();
    firsts.sort_by(|a, b| b.2.total_cmp(&a.2));
    firsts.truncate(PAIR_FIRSTS);
    let mut pairs: Vec<(TrackerScale, f64)> = Vec::new();
    for &(k, k_rises, _) in &firsts {
        // Fit-cell firing weight per (code of k, code of l), for every covariate l.
        let mut fire = vec![[0.0f64; MAX_CODES * MAX_CODES]; N_COV];
        for (i, &step) in firing.steps.iter().enumerate() {
            let w = fit_ranked.weight(firing, i);
            if w > 0.0 {
                let codes = coded.step(step as usize);
                for (table, &code) in fire.iter_mut().zip(codes) {
                    table[codes[k] as usize * MAX_CODES + code as usize] += w;
                }
            }
        }
        for &l in continuous.iter().filter(|&&l| l != k) {
            let fired = || fire[l].iter().enumerate().filter(|x| *x.1 > 0.0).map(|(slot, &n)| (slot / MAX_CODES, slot % MAX_CODES, n));
            for (rises, share) in [false, true].into_iter().flat_map(|r| PAIR_SHARES.map(|s| (r, s))) {
                let scale = TrackerScale { k, within: None, descending: !k_rises, collapse: false, and: Some(SecondScale { k: l, rises, share }) };
                pairs.push((scale, graded_auroc(&scale.pair_bins(coded, fit.joint(k, l)), &scale.pair_bins(coded, fired()), true)));
            }
        }
    }
    pairs.retain(|x| x.1.is_finite());
    pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let covariates = |s: &TrackerScale| {
        let l = s.and.expect("a pair").k;
        (s.k.min(l), s.k.max(l))
    };
    let mut chosen: Vec<TrackerScale> = Vec::new();
    for (scale, _) in pairs {
        if chosen.len() < PAIRS_CHECKED && chosen.iter().all(|d| covariates(d) != covariates(&scale)) {
            chosen.push(scale);
        }
    }
    let on = |scale: &TrackerScale, ranked: &Ranked, w: &Weighting| {
        let s = bin_stats_one(firing, &firing.steps, ranked, coded, w, scale);
        graded_auroc(&s.weight, &s.fire_weight, true)
    };
    let mut out = Vec::new();
    for scale in chosen {
        let (k, k_rises, SecondScale { k: l, rises: l_rises, share }) = (scale.k, !scale.descending, scale.and.expect("a pair"));
        if !(on(&scale, check_ranked, check) >= alone(all_check, k, k_rises).max(alone(all_check, l, l_rises)) + set.min_conjunction_gain) {
            continue;
        }
        let half = |k: usize, rises: bool| half_code(&stats[k].fire_weight, coded.codings[k].n_codes(), rises);
        let and = Grade { covariate: coded.codings[l].covariate, increasing: l_rises, half: half(l, l_rises), share };
        let candidate = Candidate::Graded { covariate: coded.codings[k].covariate, increasing: k_rises, within: None, half: half(k, k_rises), and: Some(and) };
        out.push(Scored { candidate, score: Score::graded(on(&scale, ranked, weighting)), g: Vec::new() });
    }
    out
}

/// The code of a covariate from which, taking codes from the top when `increasing` (else from
/// the bottom), half of the firing weight `fire` over its `n` codes lies.
pub fn half_code(fire: &[f64; MAX_CODES], n: usize, increasing: bool) -> u8 {
    let n = n.min(MISSING);
    let total: f64 = fire[..n].iter().sum();
    let order: Vec<usize> = if increasing { (0..n).rev().collect() } else { (0..n).collect() };
    let mut held = 0.0;
    for c in order {
        held += fire[c];
        if held >= 0.5 * total {
            return c as u8;
        }
    }
    0
}

/// Regimes a tracker may be confined to: the best single atoms by F1, on distinct covariates.
const TRACKER_REGIMES: usize = 2;

/// Trackers inside a regime ("tracks |C-rate| during discharge", DESIGN §5 step 2: trackers
/// preferred to thresholds when they explain more): for each of the best `TRACKER_REGIMES`
/// atoms, the covariate and direction with the best within-cell Spearman on the `fit` cells,
/// kept when on the `check` cells it beats the regime alone by `min_conjunction_gain` (the
/// covariate is a term like any other), then scored on `weighting`; g is fitted on the scale.
fn regime_trackers(regimes: &[Atom], scope: &Scope, set: &SearchSettings, validation: Option<&Validation>) -> Vec<Scored> {
    let Scope { firing, ranked, coded, weighting } = *scope;
    let (fit, check) = validation.map_or((weighting, weighting), |v| (v.fit, v.check));
    let mut out = Vec::new();
    for &regime in regimes {
        let rhos = tracker_rhos(firing, coded, fit, Some(&regime));
        // Of equals the first, as for graded regimes.
        let best = rhos.iter().enumerate().flat_map(|(k, r)| [(k, false, r[0]), (k, true, r[1])]).filter(|x| x.2.is_finite()).min_by(|a, b| b.2.total_cmp(&a.2));
        let Some((k, descending, _)) = best else { continue };
        let scale = TrackerScale { k, within: Some(regime), descending, collapse: false, and: None };
        let on_check = |scale: &TrackerScale| within_cell_spearman(firing, &firing.steps, coded, check, scale);
        // Both terms must add: the scale over the regime alone, the regime over the scale alone
        // (a regime holding on nearly every step would only narrow the sentence).
        let alone = on_check(&TrackerScale { collapse: true, ..scale }).max(on_check(&TrackerScale { within: None, ..scale }));
        if on_check(&scale) < alone + set.min_conjunction_gain {
            continue;
        }
        let stats = bin_stats_one(firing, &firing.steps, ranked, coded, weighting, &scale);
        let n = scale.n_codes(coded);
        let g = isotonic(&stats, n, true);
        let rho = within_cell_spearman(firing, &firing.steps, coded, weighting, &scale);
        let score = Score::tracker(rho, r_squared(&stats, n, &g));
        let candidate = Candidate::Tracker { covariate: coded.codings[k].covariate, increasing: !descending, within: Some(regime) };
        out.push(Scored { candidate, score, g });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rests sit at C-rate exactly zero: they get a bin of their own, so a charge feature can be
    /// labelled "during charge" without the rests, and rests "when no current flows".
    #[test]
    fn steps_at_exactly_zero_get_their_own_bin() {
        let values: Vec<f32> = (0..1000).map(|i| match i % 10 {
            0..=2 => 0.0,
            k => (k as f32 - 6.0) / 4.0 + 0.001 * (i / 10) as f32,
        }).collect();
        let coding = Coding::quantiles(Covariate::CRate, values.clone());
        let (zero, charge) = (coding.code(0.0) as usize, coding.code(0.3) as usize);
        assert_eq!((coding.code(-1e-3) as usize, coding.code(1e-5) as usize), (zero - 1, zero + 1), "{:?}", coding.edges);
        let mut codings: Vec<Coding> = Covariate::ALL.iter().map(|&c| Coding { covariate: c, edges: Vec::new(), categories: Vec::new(), range: None }).collect();
        codings[Covariate::CRate.index()] = coding.clone();
        let said = |lo, hi| crate::label::sentence::sentence(&Candidate::all(vec![Atom::interval(Covariate::CRate, lo, hi)]), &codings);
        assert_eq!(said(zero, zero), "fires when no current flows");
        assert_eq!(said(zero + 1, coding.n_codes() - 1), "fires during charge");
        assert!(charge > zero + 1);
        // SOC at exactly zero (an empty cell) is no event: no bin of its own.
        assert!(!Coding::quantiles(Covariate::Soc, values.iter().map(|v| v.abs()).collect()).edges.contains(&1e-6));
    }

    /// A regime of whole cells cannot be tested by shifting firing within cells: alone, as one
    /// side of an "or", or as either side of (A ∨ B) ∧ C; narrowed by a within-cell term it can.
    #[test]
    fn a_regime_of_whole_cells_is_per_cell_wherever_it_stands() {
        let (drive, warm) = (Atom::interval(Covariate::Protocol, 4, 4), Atom::interval(Covariate::AmbientTemperature, 2, 3));
        let (soc, rate) = (Atom::interval(Covariate::Soc, 7, 9), Atom::interval(Covariate::CRate, 0, 2));
        let detector = |atoms: Vec<Atom>, any: bool, or: Vec<Atom>| Candidate::Detector(Predicate { atoms, any, or });
        assert!(detector(vec![drive, warm], false, vec![]).is_per_cell(|_| false));
        assert!(detector(vec![soc], false, vec![drive]).is_per_cell(|_| false), "SOC high, or in drive cells");
        assert!(detector(vec![drive], false, vec![soc, rate]).is_per_cell(|_| false));
        assert!(Candidate::Detector(Predicate::either(drive, soc)).is_per_cell(|_| false));
        assert!(!detector(vec![drive, warm, soc], true, vec![]).is_per_cell(|_| false), "(drive ∨ warm) ∧ SOC high is narrowed within cells");
        assert!(!Candidate::all(vec![drive, soc]).is_per_cell(|_| false), "in drive cells while SOC is high");
        assert!(!detector(vec![drive, soc], false, vec![rate]).is_per_cell(|_| false));
    }

    #[test]
    fn a_two_regime_label_is_the_same_either_way_round() {
        let (a, b, c) = (Atom::interval(Covariate::Voltage, 18, 22), Atom::interval(Covariate::Current, 3, 6), Atom::interval(Covariate::DvDt, 0, 2));
        let two_regimes = |first: Vec<Atom>, or: Vec<Atom>| Candidate::Detector(Predicate { atoms: first, any: false, or });
        assert!(same_label(&two_regimes(vec![a, b], vec![c]), &two_regimes(vec![c], vec![a, b])));
        assert!(same_label(&two_regimes(vec![a, b], vec![c]), &two_regimes(vec![b, a], vec![c])));
        assert!(!same_label(&two_regimes(vec![a, b], vec![c]), &two_regimes(vec![a], vec![b, c])), "(A ∧ B) ∨ C is not A ∨ (B ∧ C)");
        assert!(!same_label(&two_regimes(vec![a, b], vec![c]), &Candidate::all(vec![a, b])));
    }
}
