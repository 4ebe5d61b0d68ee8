//! Where the labeller reads feature activations from: memory, or a record read a chunk of
//! features at a time, so that a large record never sits in memory whole (memory stays flat as
//! the data grows; each chunk costs one more pass over `activations.parquet`).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::mine::{FeatureActivations, FiringCounts, SparseActivations};
use crate::record::{firing_counts, read_sparse_where, RecordDir};
use crate::Result;

/// Firing entries a chunk of features holds at most by default: 2 Mi entries, 16 MiB of rows
/// and values (the quickstart's record, 4.0 M entries, takes two passes).
pub const CHUNK_ENTRIES: usize = 2 << 20;

/// A set of features' activations over one dataset's cells.
pub trait ActivationSource: Sync {
    /// Steps per cell, cells in dataset order.
    fn cell_rows(&self) -> &[usize];
    /// Firing steps per cell of every feature that fires, in (layer, feature) order.
    fn counts(&self) -> Result<Vec<FiringCounts>>;
    /// The activations of the features `keys` (ascending, each one that fires), in that order.
    fn load(&self, keys: &[(u32, u32)]) -> Result<Vec<FeatureActivations>>;
    /// Firing entries to load at once.
    fn chunk_entries(&self) -> usize;
}

impl ActivationSource for SparseActivations {
    fn cell_rows(&self) -> &[usize] {
        &self.cell_rows
    }

    fn counts(&self) -> Result<Vec<FiringCounts>> {
        let mut counts: Vec<FiringCounts> = self.features.iter().map(|f| f.counts()).collect();
        counts.sort_by_key(|c| (c.layer, c.feature));
        Ok(counts)
    }

    fn load(&self, keys: &[(u32, u32)]) -> Result<Vec<FeatureActivations>> {
        Ok(keys.iter().filter_map(|k| self.features.iter().find(|f| (f.layer, f.feature) == *k).cloned()).collect())
    }

    /// Already in memory: one chunk.
    fn chunk_entries(&self) -> usize {
        usize::MAX
    }
}

/// A `voltlens record` folder, read a chunk of features at a time.
pub struct RecordSource {
    dir: PathBuf,
    cell_ids: Vec<String>,
    cell_rows: Vec<usize>,
    chunk_entries: usize,
    /// The counting pass, made once: it also sizes each loaded feature's buffers exactly.
    counts: OnceLock<Vec<FiringCounts>>,
}

impl RecordSource {
    pub fn open(dir: &Path) -> Result<RecordSource> {
        let summary = RecordDir::open(dir)?.summary;
        Ok(RecordSource { dir: dir.to_path_buf(), cell_ids: summary.cell_ids, cell_rows: summary.cell_rows, chunk_entries: CHUNK_ENTRIES, counts: OnceLock::new() })
    }

    /// Loads at most `entries` firing entries at once (a larger feature alone).
    pub fn with_chunk_entries(self, entries: usize) -> RecordSource {
        RecordSource { chunk_entries: entries.max(1), ..self }
    }

    pub fn cell_ids(&self) -> &[String] {
        &self.cell_ids
    }
}

impl ActivationSource for RecordSource {
    fn cell_rows(&self) -> &[usize] {
        &self.cell_rows
    }

    fn counts(&self) -> Result<Vec<FiringCounts>> {
        if let Some(counts) = self.counts.get() {
            return Ok(counts.clone());
        }
        let counts = firing_counts(&self.dir)?;
        Ok(self.counts.get_or_init(|| counts).clone())
    }

    fn load(&self, keys: &[(u32, u32)]) -> Result<Vec<FeatureActivations>> {
        let size = |k: (u32, u32)| {
            let counts = self.counts.get().map_or(&[][..], Vec::as_slice);
            counts.binary_search_by_key(&k, |c| (c.layer, c.feature)).map_or(0, |i| counts[i].total())
        };
        Ok(read_sparse_where(&self.dir, &|k| keys.binary_search(&k).is_ok().then(|| size(k)))?.features)
    }

    fn chunk_entries(&self) -> usize {
        self.chunk_entries
    }
}

/// Consecutive runs of items whose sizes (firing entries) together stay within `budget` (an
/// item larger than that makes a run of its own).
pub fn chunks(sizes: impl IntoIterator<Item = usize>, budget: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut held, mut len) = (0, 0usize, 0);
    for (i, n) in sizes.into_iter().enumerate() {
        if i > start && held.saturating_add(n) > budget {
            out.push(start..i);
            (start, held) = (i, 0);
        }
        held = held.saturating_add(n);
        len = i + 1;
    }
    if start < len {
        out.push(start..len);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_stay_within_the_budget_and_cover_every_feature_once() {
        let sizes = [3, 4, 10, 1, 1, 2];
        assert_eq!(chunks(sizes, 7), vec![0..2, 2..3, 3..6]);
        assert_eq!(chunks(sizes, usize::MAX), vec![0..6]);
        assert_eq!(chunks([], 7), Vec::<Range<usize>>::new());
    }
}
