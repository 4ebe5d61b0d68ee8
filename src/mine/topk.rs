//! Exact top-k windows: the k highest activations whose windows (peak ± radius steps) show
//! distinct events — at most one window per (cell, cycle), at most `per_cell` per cell, none
//! overlapping a higher one.
//!
//! Every rule is within one cell, so the greedy pick over all cells equals each cell's own greedy
//! picks merged by activation: [`TopK`] finds them a cell at a time, which is how the streaming
//! miner reads the record.

use crate::mine::FeatureActivations;

/// A peak: cell, row and activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    pub cell: usize,
    pub row: u32,
    pub value: f32,
}

/// What the top windows may hold.
#[derive(Debug, Clone, Copy)]
pub struct TopLimits {
    pub k: usize,
    pub radius: u32,
    /// Windows per cell, at least 1.
    pub per_cell: usize,
}

/// Highest first; ties by (cell, row) so the result is deterministic.
pub fn order(a: &Peak, b: &Peak) -> std::cmp::Ordering {
    b.value.total_cmp(&a.value).then(a.cell.cmp(&b.cell)).then(a.row.cmp(&b.row))
}

/// Greedy picks over peaks already in `order`: a peak is skipped when its cell already holds
/// `per_cell` picks, one from its cycle, or one whose window overlaps its own (peaks within
/// 2·radius). `cycle` gives a peak's cycle number (NaN: unknown, never equal).
fn pick(sorted: impl Iterator<Item = Peak>, cycle: impl Fn(&Peak) -> f32, lim: TopLimits) -> Vec<Peak> {
    let mut picked: Vec<Peak> = Vec::with_capacity(lim.k);
    for p in sorted {
        if picked.len() == lim.k {
            break;
        }
        let full = picked.iter().filter(|q| q.cell == p.cell).count() >= lim.per_cell;
        let clash = picked.iter().any(|q| q.cell == p.cell && (cycle(q) == cycle(&p) || q.row.abs_diff(p.row) <= 2 * lim.radius));
        if !full && !clash {
            picked.push(p);
        }
    }
    picked
}

/// The running top-k of one feature, fed one cell at a time.
#[derive(Debug, Clone, Default)]
pub struct TopK {
    /// Highest first, at most k.
    pub peaks: Vec<Peak>,
}

impl TopK {
    /// Adds the firing steps (`rows`, `values`) of cell `cell`, whose cycle number per row is
    /// `cycles` (None: unknown). Costs a sort of the cell's entries above the current k-th.
    pub fn add_cell(&mut self, cell: usize, rows: &[u32], values: &[f32], cycles: Option<&[f32]>, lim: TopLimits) {
        // An entry below the current k-th can neither enter nor, coming later in the greedy
        // order, block one that does.
        let floor = if self.peaks.len() == lim.k { self.peaks.last().map_or(f32::INFINITY, |p| p.value) } else { f32::NEG_INFINITY };
        let mut peaks: Vec<Peak> =
            rows.iter().zip(values).filter(|(_, &v)| v >= floor).map(|(&row, &value)| Peak { cell, row, value }).collect();
        peaks.sort_by(order);
        let cell_limits = TopLimits { k: lim.k.min(lim.per_cell), ..lim };
        let cycle = |p: &Peak| cycles.map_or(f32::NAN, |c| c[p.row as usize]);
        self.peaks.extend(pick(peaks.into_iter(), cycle, cell_limits));
        self.peaks.sort_by(order);
        self.peaks.truncate(lim.k);
    }
}

/// The same by one greedy pass over every entry in order: the reference the tests hold
/// [`TopK`] to. `cycles[c][row]` is the cycle number of each row of cell c.
pub fn top_k_brute_force(f: &FeatureActivations, cycles: &[Vec<f32>], lim: TopLimits) -> Vec<Peak> {
    let mut peaks: Vec<Peak> = f.entries().map(|(cell, row, value)| Peak { cell, row, value }).collect();
    peaks.sort_by(order);
    pick(peaks.into_iter(), |p| cycles[p.cell][p.row as usize], lim)
}
