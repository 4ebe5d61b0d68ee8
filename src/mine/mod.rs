//! Mine stage (DESIGN §4): per-feature statistics and example windows from sparse activations.
//!
//! The stage streams the record a cell at a time (`stats::mine_cells`). The in-memory layout,
//! shared with `label`: one [`FeatureActivations`] per feature, holding only the
//! steps where it fires (value > 0), grouped by cell and sorted by row, CSR-style. Transcoder
//! features are sparse (L0 ≪ F), so every statistic here and in `label` costs O(firing steps)
//! per feature, not O(steps); a dense `Vec<f32>` per cell would cost 500k reads per feature.

pub mod effect;
pub mod stage;
pub mod stats;
pub mod tables;
pub mod topk;

pub use stats::{mine, mine_cells, CellSource, InMemory, MineConfig, MinedFeature, MinedFeatures, Window};

/// How often one feature fires in each cell (dataset order).
#[derive(Debug, Clone, PartialEq)]
pub struct FiringCounts {
    pub layer: u32,
    pub feature: u32,
    pub per_cell: Vec<u32>,
}

impl FiringCounts {
    pub fn total(&self) -> usize {
        self.per_cell.iter().map(|&n| n as usize).sum()
    }
}

/// The firing steps of one transcoder feature over a whole dataset.
#[derive(Debug, Clone, Default)]
pub struct FeatureActivations {
    pub layer: u32,
    pub feature: u32,
    /// `cell_offsets[c]..cell_offsets[c + 1]` index the entries of cell `c` (length cells + 1).
    pub cell_offsets: Vec<usize>,
    /// Row within the cell, ascending within each cell.
    pub rows: Vec<u32>,
    /// Activation (> 0) at that row.
    pub values: Vec<f32>,
}

impl FeatureActivations {
    /// Keeps the positive entries of dense per-cell activations (cells in dataset order).
    pub fn from_dense(layer: u32, feature: u32, per_cell: &[Vec<f32>]) -> FeatureActivations {
        let mut out = FeatureActivations { layer, feature, cell_offsets: vec![0], ..Default::default() };
        for cell in per_cell {
            for (row, &v) in cell.iter().enumerate() {
                if v > 0.0 {
                    out.rows.push(row as u32);
                    out.values.push(v);
                }
            }
            out.cell_offsets.push(out.rows.len());
        }
        out
    }

    /// Rows and values where the feature fires in cell `c`.
    pub fn cell(&self, c: usize) -> (&[u32], &[f32]) {
        let range = self.cell_offsets[c]..self.cell_offsets[c + 1];
        (&self.rows[range.clone()], &self.values[range])
    }

    /// Number of firing steps.
    pub fn nnz(&self) -> usize {
        self.rows.len()
    }

    /// Firing steps per cell.
    pub fn counts(&self) -> FiringCounts {
        FiringCounts { layer: self.layer, feature: self.feature, per_cell: self.cell_offsets.windows(2).map(|w| (w[1] - w[0]) as u32).collect() }
    }

    /// Iterates (cell, row, value) over every firing step.
    pub fn entries(&self) -> impl Iterator<Item = (usize, u32, f32)> + '_ {
        (0..self.cell_offsets.len() - 1).flat_map(move |c| {
            let (rows, values) = self.cell(c);
            rows.iter().zip(values).map(move |(&r, &v)| (c, r, v))
        })
    }
}

/// Sparse activations of many features over one dataset's cells (same order as `Dataset`).
#[derive(Debug, Clone, Default)]
pub struct SparseActivations {
    pub cell_ids: Vec<String>,
    /// Steps per cell.
    pub cell_rows: Vec<usize>,
    pub features: Vec<FeatureActivations>,
}
