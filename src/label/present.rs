//! A label over a covariate that whole cells lack (no SOC in an unanchored cell, no temperature
//! logged) is held out once more on the test cells that have it: ranked below every value
//! there, those cells' steps let a feature that fires on exactly the cells with an SOC score as
//! "fires when SOC is above 3 %" (AUROC 0.99 over every cell, chance within the anchored ones),
//! and on real files most SOC labels were that. The label keeps the lower strength.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::label::candidates::{Candidate, CodedSteps, Weighting, MISSING};
use crate::label::covariates::Covariate;

/// The test weighting without the cells that lack a candidate's covariates, built once per set
/// of such cells (a dataset has few: its unanchored cells, those without temperature…).
pub struct PresentTest {
    test_weight: Vec<f64>,
    /// Per covariate, the test cells without a single value of it.
    lacking: Vec<Vec<usize>>,
    built: Mutex<HashMap<Vec<usize>, Arc<Weighting>>>,
}

impl PresentTest {
    pub fn new(coded: &CodedSteps, test: &Weighting) -> PresentTest {
        let n_cov = coded.codings.len();
        let lacking = (0..n_cov)
            .map(|k| (0..coded.n_cells()).filter(|&c| test.cell_weight[c] > 0.0 && coded.cell_counts(c, k)[MISSING] as usize == coded.cell_len(c)).collect())
            .collect();
        PresentTest { test_weight: test.cell_weight.clone(), lacking, built: Mutex::new(HashMap::new()) }
    }

    /// The covariates of `candidate` that some test cells lack, and the test weighting over the
    /// cells that have them all; `None` where every test cell has them (the held-out score
    /// stands as it is).
    pub fn weighting(&self, candidate: &Candidate, coded: &CodedSteps) -> Option<(Vec<Covariate>, Arc<Weighting>)> {
        let mut lacked: Vec<Covariate> = Vec::new();
        for k in candidate.covariates().into_iter().filter(|k| !self.lacking[k.index()].is_empty()) {
            if !lacked.contains(&k) {
                lacked.push(k);
            }
        }
        let mut cells: Vec<usize> = lacked.iter().flat_map(|k| self.lacking[k.index()].iter().copied()).collect();
        cells.sort_unstable();
        cells.dedup();
        if cells.is_empty() {
            return None;
        }
        let mut built = self.built.lock().expect("present-test cache lock");
        let w = built.entry(cells).or_insert_with_key(|cells| {
            let mut weight = self.test_weight.clone();
            cells.iter().for_each(|&c| weight[c] = 0.0);
            Arc::new(coded.weighting(weight))
        });
        Some((lacked, Arc::clone(w)))
    }
}
