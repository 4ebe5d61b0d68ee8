//! Vendor readers: detect a file's format from its header and stream it as `RawChunk`s.

use crate::data::raw::{RawChunk, SourceMetadata};
use crate::Result;

/// A source of one cell's rows, read chunk by chunk so memory does not grow with file length.
/// Vendor files, canonical/PyBaMM Parquet and the synthetic generator all implement it.
pub trait CyclerReader: Send {
    /// What the source says about the cell (known before the first chunk is read).
    fn metadata(&self) -> &SourceMetadata;
    /// The next run of rows, or `None` at the end. Rows are in file order.
    fn next_chunk(&mut self) -> Result<Option<RawChunk>>;
}
