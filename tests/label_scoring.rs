//! The labeller's statistics against slow, obvious implementations on random activations and
//! random cell weights: weighted AUROC and F1 of a detector, within-cell Spearman, the isotonic
//! fit and its R². The fast versions work from per-bin sums; these work step by step.

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use voltlens::data::canonical::Dataset;
use voltlens::data::ingest::{ingest, IngestOptions};
use voltlens::label::candidates::{atoms_of, Atom, Candidate, CodedSteps, Grade, Predicate, MAX_CODES, MISSING};
use voltlens::label::covariates::{Covariate, Covariates};
use voltlens::label::scoring::{bin_stats_one, isotonic, r_squared, rank, score_detector, tracker_rhos, within_cell_spearman, Firing, SecondScale, TrackerScale};

/// Steps kept per cell: enough for every bin, few enough for O(n²) checks.
const ROWS: usize = 240;

/// Covariates of three PyBaMM cells (three protocols), each cut to `ROWS` steps.
fn covariates() -> &'static Vec<Covariates> {
    static COVS: OnceLock<Vec<Covariates>> = OnceLock::new();
    COVS.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pybamm-chen2020");
        let files: Vec<_> = ["chen2020-11-00-cccv.parquet", "chen2020-11-02-hppc.parquet", "chen2020-11-05-drive.parquet"].iter().map(|f| src.join(f)).collect();
        ingest(&files, &tmp.path().join("ds"), &IngestOptions::default()).unwrap();
        let dataset = Dataset::load(&tmp.path().join("ds")).unwrap();
        let mut covs = Covariates::for_dataset(&dataset);
        for c in &mut covs {
            // Start part-way in, where the cells are busy.
            c.columns.iter_mut().filter(|col| !col.is_empty()).for_each(|col| *col = col[col.len() / 3..][..ROWS].to_vec());
        }
        covs
    })
}

/// A random sparse feature: (cell, row, value) of firing steps, values from a small set so that
/// ties occur, and the dense activation of every global step.
fn random_feature(rng: &mut ChaCha8Rng, coded: &CodedSteps) -> (Vec<(u32, u32, f32)>, Vec<f64>) {
    let n_cells = coded.n_cells();
    let mut entries = Vec::new();
    let mut dense = vec![0.0; coded.cell_offsets[n_cells]];
    let rate = rng.random_range(0.05..0.6);
    for c in 0..n_cells {
        for r in 0..coded.cell_len(c) {
            if rng.random::<f64>() < rate {
                let v = rng.random_range(1..8) as f32 * 0.25;
                entries.push((c as u32, r as u32, v));
                dense[coded.cell_offsets[c] + r] = v as f64;
            }
        }
    }
    (entries, dense)
}

/// Cell of every global step.
fn cell_of(coded: &CodedSteps) -> Vec<usize> {
    (0..coded.n_cells()).flat_map(|c| std::iter::repeat_n(c, coded.cell_len(c))).collect()
}

fn continuous() -> Vec<Covariate> {
    Covariate::ALL.into_iter().filter(|c| c.is_scale()).collect()
}

/// Mid-ranks (1-based average ranks of ties) of `values`.
fn mid_ranks(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| values.iter().filter(|u| *u < v).count() as f64 + 0.5 * values.iter().filter(|u| *u == v).count() as f64).collect()
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum::<f64>() / n;
    let (vx, vy) = (x.iter().map(|a| (a - mx).powi(2)).sum::<f64>() / n, y.iter().map(|b| (b - my).powi(2)).sum::<f64>() / n);
    if vx <= 1e-12 || vy <= 1e-12 { 0.0 } else { cov / (vx * vy).sqrt() }
}

#[test]
fn weighted_auroc_and_f1_match_counting_every_pair() {
    let covs = covariates();
    let coded = CodedSteps::new(covs, &vec![true; covs.len()]);
    let cells = cell_of(&coded);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut checked = 0;
    for _ in 0..6 {
        let (entries, dense) = random_feature(&mut rng, &coded);
        let cell_weight: Vec<f64> = (0..coded.n_cells()).map(|_| rng.random_range(0..4) as f64).collect();
        let firing = Firing::new(entries, &coded.cell_offsets);
        let weighting = coded.weighting(cell_weight.clone());
        let ranked = rank(&firing, &weighting);
        let mut random_atom = |cov: Covariate| {
            let n_codes = coded.codings[cov.index()].n_codes().min(MISSING);
            let lo = rng.random_range(0..n_codes);
            Atom::interval(cov, lo, rng.random_range(lo..n_codes))
        };
        let covs = continuous();
        // Each covariate alone, as a disjunction with the next one ("A, or B"), that
        // disjunction narrowed by a third ("(A ∨ B) ∧ C", a scan rather than the tables), and a
        // conjunction or a third ("A ∧ B, or C").
        let next = |i: usize, by: usize| covs[(i + by) % covs.len()];
        let predicates: Vec<Predicate> = (0..covs.len())
            .flat_map(|i| {
                let either = vec![random_atom(covs[i]), random_atom(next(i, 1))];
                let narrowed = [either.clone(), vec![random_atom(next(i, 2))]].concat();
                let or = vec![random_atom(next(i, 2))];
                [
                    Predicate::all(vec![random_atom(covs[i])]),
                    Predicate { atoms: either.clone(), any: true, or: Vec::new() },
                    Predicate { atoms: narrowed, any: true, or: Vec::new() },
                    Predicate { atoms: either, any: false, or },
                ]
            })
            .collect();
        for p in predicates {
            let (atoms, any) = (&p.atoms, p.any);
            let cov = atoms[0].covariate;
            let got = score_detector(&p, &firing, &firing.steps, &ranked, &coded, &weighting);
            // Every (firing, quiet) pair: 1 when the predicate holds at the firing step and not
            // at the quiet one, ½ when it holds at both or neither.
            let inside = |s: usize| {
                let holds = |a: &Atom| a.contains(coded.step(s)[a.covariate.index()]);
                let first = if any { atoms[..2].iter().any(holds) && atoms[2..].iter().all(holds) } else { atoms.iter().all(holds) };
                first || (!p.or.is_empty() && p.or.iter().all(holds))
            };
            let w = |s: usize| cell_weight[cells[s]];
            let (mut pairs, mut wins) = (0.0, 0.0);
            for p in (0..dense.len()).filter(|&s| dense[s] > 0.0 && w(s) > 0.0) {
                for q in (0..dense.len()).filter(|&s| dense[s] == 0.0 && w(s) > 0.0) {
                    pairs += w(p) * w(q);
                    wins += w(p) * w(q) * if inside(p) == inside(q) { 0.5 } else if inside(p) { 1.0 } else { 0.0 };
                }
            }
            let in_all: f64 = (0..dense.len()).filter(|&s| inside(s)).map(w).sum();
            let total: f64 = (0..dense.len()).map(w).sum();
            let Some(got) = got else {
                assert!(pairs == 0.0 || in_all == 0.0 || in_all == total, "{cov:?}: no score though it can be scored");
                continue;
            };
            assert!((got.auroc - wins / pairs).abs() < 1e-9, "{cov:?}: AUROC {} vs {}", got.auroc, wins / pairs);
            let fire_in: f64 = (0..dense.len()).filter(|&s| inside(s) && dense[s] > 0.0).map(w).sum();
            let fire: f64 = (0..dense.len()).filter(|&s| dense[s] > 0.0).map(w).sum();
            assert!((got.f1 - 2.0 * fire_in / (fire + in_all)).abs() < 1e-9, "{cov:?}: F1");
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} predicates scored");
}

/// The scale code of a step the slow way: the covariate's code, or inside a regime its code
/// moved up by one (reversed when descending; 1 when collapsed), 0 outside the regime. A two-
/// covariate scale's level is placed step by step (what the tests check is its count tables).
fn slow_scale_code(coded: &CodedSteps, scale: &TrackerScale, step: usize) -> usize {
    let codes = coded.step(step);
    if scale.and.is_some() {
        return scale.code(coded, codes);
    }
    let own = codes[scale.k] as usize;
    let n = coded.codings[scale.k].n_codes();
    match scale.within {
        None => own,
        Some(a) if !a.contains(codes[a.covariate.index()]) => 0,
        Some(_) if own == MISSING => MISSING,
        Some(_) if scale.collapse => 1,
        Some(_) if scale.descending => n - own,
        Some(_) => own + 1,
    }
}

#[test]
fn within_cell_spearman_matches_ranking_each_cell() {
    let covs = covariates();
    let coded = CodedSteps::new(covs, &vec![true; covs.len()]);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    // Regimes: discharge, and SOC in its middle bins.
    let discharging = Atom { covariate: Covariate::State, allowed: 1 << voltlens::data::schema::State::ALL.iter().position(|s| s.as_str() == "discharging").unwrap() };
    let regimes = [discharging, Atom::interval(Covariate::Soc, 3, 8)];
    for _ in 0..6 {
        let (entries, dense) = random_feature(&mut rng, &coded);
        let cell_weight: Vec<f64> = (0..coded.n_cells()).map(|_| rng.random_range(0..4) as f64).collect();
        let firing = Firing::new(entries, &coded.cell_offsets);
        let weighting = coded.weighting(cell_weight.clone());
        let mut scales: Vec<TrackerScale> = continuous().iter().map(|c| TrackerScale::plain(c.index())).collect();
        let plain = tracker_rhos(&firing, &coded, &weighting, None);
        for scale in &scales {
            let one = within_cell_spearman(&firing, &firing.steps, &coded, &weighting, scale);
            assert!((plain[scale.k][0] - one).abs() < 1e-9, "{scale:?}: one pass {} vs {one}", plain[scale.k][0]);
        }
        for regime in regimes {
            let rhos = tracker_rhos(&firing, &coded, &weighting, Some(&regime));
            for cov in continuous().into_iter().filter(|c| *c != regime.covariate) {
                for (i, (descending, collapse)) in [(false, false), (true, false), (false, true)].into_iter().enumerate() {
                    let scale = TrackerScale { k: cov.index(), within: Some(regime), descending, collapse, and: None };
                    let one = within_cell_spearman(&firing, &firing.steps, &coded, &weighting, &scale);
                    assert!((rhos[cov.index()][i] - one).abs() < 1e-9, "{cov:?} in {regime:?} {i}: one pass {} vs {one}", rhos[cov.index()][i]);
                    scales.push(scale);
                }
            }
        }
        let pair = |(a, b): (Covariate, Covariate), rises: bool, share: u8| TrackerScale { k: a.index(), within: None, descending: !rises, collapse: false, and: Some(SecondScale { k: b.index(), rises, share }) };
        scales.extend([pair((Covariate::Voltage, Covariate::AbsCRate), true, 3), pair((Covariate::Soc, Covariate::StepTime), false, 7)]);
        for scale in &scales {
            let got = within_cell_spearman(&firing, &firing.steps, &coded, &weighting, scale);
            let (mut total, mut weight) = (0.0, 0.0);
            for c in (0..coded.n_cells()).filter(|&c| cell_weight[c] > 0.0) {
                let steps: Vec<usize> = (coded.cell_offsets[c]..coded.cell_offsets[c + 1]).collect();
                // Activation ranks among all the cell's steps; scale ranks among its non-missing ones.
                let act_rank = mid_ranks(&steps.iter().map(|&s| dense[s]).collect::<Vec<_>>());
                let kept: Vec<usize> = (0..steps.len()).filter(|&i| slow_scale_code(&coded, scale, steps[i]) != MISSING).collect();
                let codes: Vec<f64> = kept.iter().map(|&i| slow_scale_code(&coded, scale, steps[i]) as f64).collect();
                let rho = if kept.is_empty() { 0.0 } else { pearson(&kept.iter().map(|&i| act_rank[i]).collect::<Vec<_>>(), &mid_ranks(&codes)) };
                // A cell weighs by its steps where the scale has a value.
                let w = cell_weight[c] * kept.len() as f64;
                total += w * rho;
                weight += w;
            }
            let expected = if weight > 0.0 { total / weight } else { 0.0 };
            assert!((got - expected).abs() < 1e-9, "{scale:?}: Spearman {got} vs {expected}");
        }
    }
}

/// Pool-adjacent-violators done the slow way: merge any adjacent pair of blocks that breaks the
/// order until none does. `bins`: (weight, weighted activation sum) per bin; empty bins are left
/// out of the pooling and take their left neighbour's value.
fn slow_isotonic(bins: &[(f64, f64)], increasing: bool) -> Vec<f64> {
    let sign = if increasing { 1.0 } else { -1.0 };
    let filled: Vec<usize> = (0..bins.len()).filter(|&b| bins[b].0 > 0.0).collect();
    let mut blocks: Vec<(Vec<usize>, f64, f64)> = filled.iter().map(|&b| (vec![b], bins[b].0, sign * bins[b].1)).collect();
    while let Some(i) = (0..blocks.len().saturating_sub(1)).find(|&i| blocks[i].2 / blocks[i].1 > blocks[i + 1].2 / blocks[i + 1].1) {
        let next = blocks.remove(i + 1);
        blocks[i].0.extend(next.0);
        blocks[i].1 += next.1;
        blocks[i].2 += next.2;
    }
    let mut g = vec![f64::NAN; bins.len()];
    for (members, w, a) in &blocks {
        members.iter().for_each(|&b| g[b] = sign * a / w);
    }
    let mut last = 0.0;
    for v in &mut g {
        if v.is_nan() { *v = last } else { last = *v }
    }
    g
}

#[test]
fn isotonic_fit_and_r_squared_match_step_by_step_sums() {
    let covs = covariates();
    let coded = CodedSteps::new(covs, &vec![true; covs.len()]);
    let cells = cell_of(&coded);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut fitted = 0;
    for trial in 0..8 {
        let (entries, dense) = random_feature(&mut rng, &coded);
        // Half the trials leave a cell out, which can empty bins.
        let cell_weight: Vec<f64> = (0..coded.n_cells()).map(|c| if trial % 2 == 1 && c == 0 { 0.0 } else { rng.random_range(1..4) as f64 }).collect();
        let firing = Firing::new(entries, &coded.cell_offsets);
        let weighting = coded.weighting(cell_weight.clone());
        let ranked = rank(&firing, &weighting);
        for cov in continuous() {
            let k = cov.index();
            let n_codes = coded.codings[k].n_codes();
            let stats = bin_stats_one(&firing, &firing.steps, &ranked, &coded, &weighting, &TrackerScale::plain(k));
            let mut bins = vec![(0.0, 0.0); n_codes.min(MISSING)];
            for s in 0..dense.len() {
                let b = coded.step(s)[k] as usize;
                if b < bins.len() {
                    bins[b].0 += cell_weight[cells[s]];
                    bins[b].1 += cell_weight[cells[s]] * dense[s];
                }
            }
            for increasing in [true, false] {
                let g = isotonic(&stats, n_codes, increasing);
                let expected = slow_isotonic(&bins, increasing);
                for (b, e) in expected.iter().enumerate() {
                    assert!((g[b] - e).abs() < 1e-9, "{cov:?} increasing={increasing} bin {b}: {} vs {e}\n{g:?}\n{expected:?}", g[b]);
                }
                // R² of g, over the non-missing steps one by one.
                let steps: Vec<usize> = (0..dense.len()).filter(|&s| (coded.step(s)[k] as usize) != MISSING).collect();
                let w = |s: usize| cell_weight[cells[s]];
                let total: f64 = steps.iter().map(|&s| w(s)).sum();
                let mean = steps.iter().map(|&s| w(s) * dense[s]).sum::<f64>() / total.max(1e-12);
                let sst: f64 = steps.iter().map(|&s| w(s) * (dense[s] - mean).powi(2)).sum();
                let sse: f64 = steps.iter().map(|&s| w(s) * (dense[s] - g[coded.step(s)[k] as usize]).powi(2)).sum();
                let expected_r2 = if sst <= 1e-12 { 0.0 } else { 1.0 - sse / sst };
                let got = r_squared(&stats, n_codes, &g);
                assert!((got - expected_r2).abs() < 1e-6 * (1.0 + expected_r2.abs()), "{cov:?}: R² {got} vs {expected_r2}");
                fitted += 1;
            }
        }
    }
    assert!(fitted > 50);
}

/// A two-covariate scale's counts per level from the joint count tables match placing every
/// step by its codes; its firing per level from `bin_stats_one` matches summing the firing
/// steps' weights (each cell's own tables: `within_cell_spearman_matches_ranking_each_cell`).
#[test]
fn two_covariate_scale_counts_match_placing_every_step() {
    let covs = covariates();
    let coded = CodedSteps::new(covs, &vec![true; covs.len()]);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let cell_weight: Vec<f64> = (0..coded.n_cells()).map(|_| rng.random_range(0..3) as f64).collect();
    let w = coded.weighting(cell_weight.clone());
    let cells = cell_of(&coded);
    let (entries, dense) = random_feature(&mut rng, &coded);
    let firing = Firing::new(entries, &coded.cell_offsets);
    let ranked = rank(&firing, &w);
    let continuous = continuous();
    let mut checked = 0;
    for (i, &a) in continuous.iter().enumerate() {
        let b = continuous[(i * 7 + 3) % continuous.len()];
        if a == b {
            continue;
        }
        for (rises, share) in [(false, 3), (true, 5), (true, 7)] {
            let scale = TrackerScale { k: a.index(), within: None, descending: i % 2 == 0, collapse: false, and: Some(SecondScale { k: b.index(), rises, share }) };
            let (mut weight, mut fire) = ([0.0; MAX_CODES], [0.0; MAX_CODES]);
            for s in 0..dense.len() {
                let level = scale.code(&coded, coded.step(s));
                weight[level] += cell_weight[cells[s]];
                if dense[s] > 0.0 {
                    fire[level] += cell_weight[cells[s]];
                }
            }
            let close = |x: &[f64; MAX_CODES], y: &[f64; MAX_CODES]| x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-9);
            assert!(close(&scale.bins(&coded, &w), &weight), "{a:?} + {b:?}: counts per level");
            assert!(close(&bin_stats_one(&firing, &firing.steps, &ranked, &coded, &w, &scale).fire_weight, &fire), "{a:?} + {b:?}: firing per level");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} scales checked");
}

/// Two graded labels count as one when their levels rank the steps alike: on a dataset smaller
/// than the probe sample every step is probed, so `same_ranking` is Spearman over all steps
/// (missing left out) of at least 0.9, signed by whether both rise.
#[test]
fn alike_rankings_are_a_rank_correlation_over_the_steps() {
    let covs = covariates();
    let coded = CodedSteps::new(covs, &vec![true; covs.len()]);
    let w = coded.weighting(vec![1.0; coded.n_cells()]);
    let graded = |c: Covariate, increasing: bool, and: Option<Grade>| Candidate::Graded { covariate: c, increasing, within: None, half: 0, and };
    let mut labels = Vec::new();
    for (i, &c) in continuous().iter().enumerate() {
        labels.push(graded(c, i % 2 == 0, None));
        let second = continuous()[(i + 5) % continuous().len()];
        labels.push(graded(c, true, Some(Grade { covariate: second, increasing: i % 3 == 0, half: 0, share: [3, 5, 7][i % 3] })));
    }
    let (mut alike, mut apart) = (0, 0);
    for a in &labels {
        for b in &labels {
            let (sa, sb) = (TrackerScale::of(a).unwrap(), TrackerScale::of(b).unwrap());
            let kept: Vec<usize> = (0..coded.cell_offsets[coded.n_cells()]).filter(|&s| sa.code(&coded, coded.step(s)) != MISSING && sb.code(&coded, coded.step(s)) != MISSING).collect();
            let level = |scale: &TrackerScale| mid_ranks(&kept.iter().map(|&s| scale.code(&coded, coded.step(s)) as f64).collect::<Vec<_>>());
            let sign = if TrackerScale::rises(a) == TrackerScale::rises(b) { 1.0 } else { -1.0 };
            let rho = sign * pearson(&level(&sa), &level(&sb));
            let same = coded.same_ranking(a, b, &w);
            assert_eq!(same, rho >= 0.9, "{a:?} vs {b:?}: Spearman {rho}");
            if same { alike += 1 } else { apart += 1 }
        }
    }
    assert!(alike > labels.len() && apart > labels.len(), "{alike} alike, {apart} apart");
}

/// Two detectors count as one label when they pick out the same steps: `same_steps` is a step
/// Jaccard of at least 0.8 over the weighted cells, for two-regime predicates ("A, or B while
/// C") as for conjunctions.
#[test]
fn same_steps_is_a_step_jaccard_for_every_predicate_form() {
    let covs = covariates();
    let coded = CodedSteps::new(covs, &vec![true; covs.len()]);
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let cell_weight: Vec<f64> = (0..coded.n_cells()).map(|_| rng.random_range(0..3) as f64).collect();
    let w = coded.weighting(cell_weight.clone());
    let cells = cell_of(&coded);
    let atoms: Vec<Atom> = coded.codings.iter().flat_map(atoms_of).collect();
    let mut pick = || atoms[rng.random_range(0..atoms.len())];
    let mut predicates: Vec<Predicate> = Vec::new();
    for _ in 0..40 {
        let (a, b, c) = (pick(), pick(), pick());
        predicates.push(Predicate::all(vec![a]));
        predicates.push(Predicate { atoms: vec![a, b], any: false, or: vec![c] });
        predicates.push(Predicate { atoms: vec![a], any: false, or: vec![b, c] });
    }
    let (mut alike, mut apart) = (0, 0);
    for (i, p) in predicates.iter().enumerate() {
        // A near twin of each: the same predicate with its first regime's first atom widened by a code.
        let mut twin = p.clone();
        let first = &mut twin.atoms[0];
        first.allowed |= first.allowed << 1 & ((1 << coded.codings[first.covariate.index()].n_codes()) - 1);
        for q in [&twin, &predicates[(i * 7 + 1) % predicates.len()]] {
            let (mut both, mut either) = (0.0, 0.0);
            for s in 0..cells.len() {
                let (x, y) = (p.holds(coded.step(s)), q.holds(coded.step(s)));
                both += cell_weight[cells[s]] * (x && y) as u8 as f64;
                either += cell_weight[cells[s]] * (x || y) as u8 as f64;
            }
            let expected = either > 0.0 && both / either >= 0.8;
            assert_eq!(coded.same_steps(&Candidate::Detector(p.clone()), &Candidate::Detector(q.clone()), &w), expected, "{p:?} vs {q:?}: Jaccard {}", both / either);
            if expected { alike += 1 } else { apart += 1 }
        }
    }
    assert!(alike >= 20 && apart >= 20, "{alike} alike, {apart} apart");
}

/// SOH over a few cycles separates cells, not steps within them: a regime on it takes whole
/// cells, which the circular shift cannot test; once a cell crosses the bound it does not.
#[test]
fn a_regime_constant_through_each_cell_takes_whole_cells() {
    let mut covs = covariates().clone();
    let soh = Covariate::Soh.index();
    for (c, cell) in covs.iter_mut().enumerate() {
        cell.columns[soh] = vec![if c == 0 { 0.9 } else { 0.99 }; ROWS];
    }
    let whole = |covs: &[Covariates], atom: Atom| {
        let coded = CodedSteps::new(covs, &vec![true; covs.len()]);
        coded.takes_whole_cells(&atom, &coded.weighting(vec![1.0; covs.len()]))
    };
    let aged = Atom::interval(Covariate::Soh, 0, 0);
    assert!(whole(&covs, aged));
    assert!(!whole(&covs, Atom::interval(Covariate::Soc, 0, 3)), "SOC moves within every cell");
    covs[1].columns[soh][ROWS / 2..].fill(0.9);
    assert!(!whole(&covs, aged), "a cell that ages past the bound half-way");
}
