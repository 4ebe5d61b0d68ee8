//! Exact top-k windows: the k highest activations whose windows (peak ± radius steps, same cell)
//! do not overlap a higher one.

use crate::mine::FeatureActivations;

/// A peak: cell, row and activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    pub cell: usize,
    pub row: u32,
    pub value: f32,
}

/// Highest first; ties by (cell, row) so the result is deterministic.
fn order(a: &Peak, b: &Peak) -> std::cmp::Ordering {
    b.value.total_cmp(&a.value).then(a.cell.cmp(&b.cell)).then(a.row.cmp(&b.row))
}

/// Greedy non-maximum suppression over peaks already in `order`.
fn suppress(sorted: impl Iterator<Item = Peak>, k: usize, radius: u32) -> Vec<Peak> {
    let mut picked: Vec<Peak> = Vec::with_capacity(k);
    for p in sorted {
        if picked.len() == k {
            break;
        }
        // Two windows overlap when their peaks are within 2·radius of each other.
        if !picked.iter().any(|q| q.cell == p.cell && q.row.abs_diff(p.row) <= 2 * radius) {
            picked.push(p);
        }
    }
    picked
}

/// Top-k windows in O(nnz): each pick suppresses at most 4·radius + 1 entries, so the greedy
/// pass never looks beyond the k·(4·radius + 1) highest entries, found by selection, not a sort.
pub fn top_k(f: &FeatureActivations, k: usize, radius: u32) -> Vec<Peak> {
    let mut peaks: Vec<Peak> = f.entries().map(|(cell, row, value)| Peak { cell, row, value }).collect();
    let needed = k.saturating_mul(4 * radius as usize + 1);
    if needed < peaks.len() {
        peaks.select_nth_unstable_by(needed, order);
        peaks.truncate(needed);
    }
    peaks.sort_by(order);
    suppress(peaks.into_iter(), k, radius)
}

/// The same by a full sort: the reference the tests hold `top_k` to.
pub fn top_k_brute_force(f: &FeatureActivations, k: usize, radius: u32) -> Vec<Peak> {
    let mut peaks: Vec<Peak> = f.entries().map(|(cell, row, value)| Peak { cell, row, value }).collect();
    peaks.sort_by(order);
    suppress(peaks.into_iter(), k, radius)
}
