//! Specific labels (DESIGN §5 step 2): accepted features left with the same sentence are
//! siblings. Each gets a contrastive search for one more term that separates where it fires
//! from where its siblings fire, and a sibling AUROC: how well its label ranks its own firing
//! steps above its siblings' (0.5 = the label cannot tell them apart).
//!
//! Sibling AUROC of a predicate P for feature f: ½·(share of f's firing steps inside P + share
//! of its siblings' firing steps outside P). A step where both fire counts on both sides, so
//! features that fire together score 0.5: no label can tell them apart. (Counting only the
//! steps where a sibling fires and f does not made such near-duplicates look well separated:
//! what is left of a sibling's firing is mostly outside the shared label.) Each sibling's
//! firing counts in full, a step where two siblings fire twice: it is the firing-weighted mean
//! of the pairwise sibling AUROCs. (Counting such a step once let a large group's stray firing
//! outside the label, each sibling's a little at other steps, outweigh the shared firing inside
//! it, which the union counts once: 32 event features that all fire where the label holds
//! scored 0.69 against each other.)

use std::collections::BTreeMap;

use crate::label::candidates::{atoms_of, half_code, Atom, Candidate, CodedSteps, Predicate, Weighting, MAX_CODES, N_COV};
use crate::label::covariates::Covariate;
use crate::label::scoring::{ordinal_auroc, TrackerScale};

/// The most terms a label may have (DESIGN §5 step 2).
pub const MAX_TERMS: usize = 3;
/// Sibling AUROC a contrastive term must add, on the explain cells and again held out.
pub const MIN_SIBLING_GAIN: f64 = 0.05;

/// Where one feature fires and where its siblings do.
pub struct Contrast {
    pub own: Vec<u32>,
    /// Steps where a sibling fires, once per sibling that fires there.
    pub siblings: Vec<u32>,
}

impl Contrast {
    /// `group[i]` are the firing steps of the i-th sibling; the contrast of `member`.
    pub fn new(group: &[&[u32]], member: usize) -> Contrast {
        let mut siblings: Vec<u32> = group.iter().enumerate().filter(|(i, _)| *i != member).flat_map(|(_, s)| s.iter().copied()).collect();
        // In step order, so that the passes over them read the coded steps in order.
        siblings.sort_unstable();
        Contrast { own: group[member].to_vec(), siblings }
    }

    /// Sibling AUROC of a detector's predicate on the cells `w` weighs; NaN without both kinds
    /// of step.
    pub fn auroc(&self, p: &Predicate, coded: &CodedSteps, w: &Weighting) -> f64 {
        let share_inside = |steps: &[u32]| {
            let (mut inside, mut total) = (0.0, 0.0);
            for &step in steps {
                let weight = w.cell_weight[coded.cell_of(step as usize)];
                total += weight;
                if p.holds(coded.step(step as usize)) {
                    inside += weight;
                }
            }
            if total > 0.0 { inside / total } else { f64::NAN }
        };
        0.5 * (share_inside(&self.own) + 1.0 - share_inside(&self.siblings))
    }

    /// Sibling AUROC of any label: a detector's predicate's, or a scale's ([`Contrast::scale_auroc`]).
    pub fn label_auroc(&self, label: &Candidate, coded: &CodedSteps, w: &Weighting) -> f64 {
        match label {
            Candidate::Detector(p) => self.auroc(p, coded, w),
            _ => self.scale_auroc(label, coded, w),
        }
    }

    /// Sibling AUROC of a tracker or graded detector: how well its scale (the binned covariate, in the direction the
    /// activation rises) ranks the feature's firing steps above its siblings' (ties count half;
    /// steps with no value are left out). For a detector's yes/no score this is [`Contrast::auroc`].
    pub fn scale_auroc(&self, tracker: &Candidate, coded: &CodedSteps, w: &Weighting) -> f64 {
        let Some(scale) = TrackerScale::of(tracker) else { return f64::NAN };
        let histogram = |steps: &[u32]| {
            let mut h = [0.0f64; MAX_CODES];
            for &step in steps {
                h[scale.code(coded, coded.step(step as usize))] += w.cell_weight[coded.cell_of(step as usize)];
            }
            h
        };
        ordinal_auroc(&histogram(&self.own), &histogram(&self.siblings), TrackerScale::rises(tracker))
    }

    /// The more specific label for this sibling, with its sibling AUROC on `w`: the predicate
    /// narrowed by one more term ([`Contrast::best_extra_term`]), or, for a two-regime label,
    /// which has no room for a term, the one regime that best separates own from sibling firing
    /// ("A while B, or C" → "A while B" when the siblings fire where C holds).
    pub fn refine(&self, p: &Predicate, coded: &CodedSteps, w: &Weighting) -> Option<(Predicate, f64)> {
        if p.or.is_empty() {
            if p.atoms.len() >= MAX_TERMS {
                return None;
            }
            let (extra, auroc) = self.best_extra_term(p, coded, w)?;
            return Some((Predicate { atoms: p.atoms.iter().copied().chain([extra]).collect(), ..p.clone() }, auroc));
        }
        let regimes = [Predicate { atoms: p.atoms.clone(), any: p.any, or: Vec::new() }, Predicate::all(p.or.clone())];
        regimes.into_iter().map(|r| (self.auroc(&r, coded, w), r)).max_by(|x, y| x.0.total_cmp(&y.0)).map(|(auroc, r)| (r, auroc))
    }

    /// The more specific label for a sibling whose label is a graded detector without a regime:
    /// the regime (an atom of another covariate) inside which its scale best ranks own firing
    /// above the siblings' on `w`, with that sibling AUROC. A two-covariate label tries each of
    /// its scales inside a regime ("fires more often the lower the voltage and the lower the
    /// coming C-rate change" → "fires when the voltage is below 2.8 V, more often the lower the
    /// coming C-rate change"): a sibling that fires at the deep end of both scales is told apart
    /// there, which the pair's one "half of its firing" place rounds away.
    pub fn best_regime(&self, graded: &Candidate, coded: &CodedSteps, w: &Weighting) -> Option<(Candidate, f64)> {
        let Candidate::Graded { covariate, increasing, within: None, and, .. } = *graded else { return None };
        let scales = [Some((covariate, increasing)), and.map(|g| (g.covariate, g.increasing))];
        scales.into_iter().flatten().filter_map(|(c, rises)| self.regime_on_scale(c, rises, coded, w)).max_by(|x, y| x.1.total_cmp(&y.1))
    }

    /// [`Contrast::best_regime`] for one scale. From one pass over the steps: per covariate, the
    /// weight of own and of sibling firing per (its code, the scale's code).
    fn regime_on_scale(&self, covariate: Covariate, increasing: bool, coded: &CodedSteps, w: &Weighting) -> Option<(Candidate, f64)> {
        let k = covariate.index();
        let joint = |steps: &[u32]| {
            let mut out = vec![[[0.0f64; MAX_CODES]; MAX_CODES]; N_COV];
            for &step in steps {
                let weight = w.cell_weight[coded.cell_of(step as usize)];
                let codes = coded.step(step as usize);
                for (l, &c) in codes.iter().enumerate() {
                    out[l][c as usize][codes[k] as usize] += weight;
                }
            }
            out
        };
        let (own, sib) = (joint(&self.own), joint(&self.siblings));
        // Weight per scale code inside regime `b` of covariate `l`, everything else in code 0.
        let on_scale = |table: &[[[f64; MAX_CODES]; MAX_CODES]], l: usize, scale: &TrackerScale, b: &Atom| {
            let all: [f64; MAX_CODES] = std::array::from_fn(|x| table[l].iter().map(|row| row[x]).sum());
            let inside: [f64; MAX_CODES] = std::array::from_fn(|x| b.codes().map(|c| table[l][c][x]).sum());
            scale.regroup(coded, all, |_| inside)
        };
        coded
            .codings
            .iter()
            .enumerate()
            .filter(|&(l, _)| l != k)
            .flat_map(|(l, coding)| atoms_of(coding).into_iter().map(move |b| (l, b)))
            .map(|(l, b)| {
                let scale = TrackerScale { k, within: Some(b), descending: !increasing, collapse: false, and: None };
                let own_inside: [f64; MAX_CODES] = std::array::from_fn(|x| b.codes().map(|c| own[l][c][x]).sum());
                let half = half_code(&own_inside, coded.codings[k].n_codes(), increasing);
                let label = Candidate::Graded { covariate, increasing, within: Some(b), half, and: None };
                (label, ordinal_auroc(&on_scale(&own, l, &scale, &b), &on_scale(&sib, l, &scale, &b), true))
            })
            .filter(|x| x.1.is_finite())
            .max_by(|x, y| x.1.total_cmp(&y.1))
    }

    /// The atom of a covariate not yet in the predicate that, added to its atoms, best separates
    /// own from sibling firing on `w`, with that sibling AUROC.
    pub fn best_extra_term(&self, p: &Predicate, coded: &CodedSteps, w: &Weighting) -> Option<(Atom, f64)> {
        // Per covariate and code, the weight of own / sibling firing steps where `p` holds.
        let counts = |steps: &[u32]| {
            let mut out = vec![[0.0f64; MAX_CODES]; N_COV];
            let mut total = 0.0;
            for &step in steps {
                let weight = w.cell_weight[coded.cell_of(step as usize)];
                total += weight;
                let codes = coded.step(step as usize);
                if weight > 0.0 && p.holds(codes) {
                    for (k, &code) in codes.iter().enumerate() {
                        out[k][code as usize] += weight;
                    }
                }
            }
            (out, total)
        };
        let ((own, own_total), (sib, sib_total)) = (counts(&self.own), counts(&self.siblings));
        if own_total <= 0.0 || sib_total <= 0.0 {
            return None;
        }
        let used: Vec<usize> = p.every_atom().map(|a| a.covariate.index()).collect();
        coded
            .codings
            .iter()
            .enumerate()
            .filter(|(k, _)| !used.contains(k))
            .flat_map(|(k, coding)| atoms_of(coding).into_iter().map(move |b| (k, b)))
            .map(|(k, b)| {
                let inside = |c: &[[f64; MAX_CODES]]| b.codes().map(|code| c[k][code]).sum::<f64>();
                (b, 0.5 * (inside(&own) / own_total + 1.0 - inside(&sib) / sib_total))
            })
            .max_by(|x, y| x.1.total_cmp(&y.1))
    }
}

/// Indices of accepted labels grouped by sentence, groups of two or more only.
pub fn groups<'a>(sentences: impl Iterator<Item = (usize, &'a str)>) -> Vec<Vec<usize>> {
    let mut by_sentence: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in sentences {
        by_sentence.entry(s).or_default().push(i);
    }
    by_sentence.into_values().filter(|g| g.len() >= 2).collect()
}
