//! Activation sources: batches of (resid_mid, mlp_out) [tokens, L, d], from an on-disk cache of
//! sharded safetensors files through a shuffle buffer, or from anything else implementing
//! `ActivationSource` (the model's hooked forward passes, online).

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::Variant;
use super::tensors;
use crate::{Error, Result};

/// Tokens of activations, both [tokens, L, d] token-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub tokens: usize,
    pub resid_mid: Vec<f32>,
    pub mlp_out: Vec<f32>,
}

impl Batch {
    /// The batch as the encoders of `variant` read it: an SAE on mlp_out reads what it rebuilds,
    /// so its encoder input (`resid_mid` here) is mlp_out.
    pub fn for_variant(mut self, variant: Variant) -> Batch {
        if variant.reads_mlp_out() {
            self.resid_mid.clone_from(&self.mlp_out);
        }
        self
    }
}

/// Where the trainer and the evaluation get activations from.
pub trait ActivationSource {
    /// (layers L, d_model d).
    fn dims(&self) -> (usize, usize);
    /// The next `tokens` tokens; sources cycle, so this never runs dry.
    fn next_batch(&mut self, tokens: usize) -> Result<Batch>;
    /// Drop `n` batches, to resume training where a checkpoint left off.
    fn skip_batches(&mut self, n: u64, tokens: usize) -> Result<()> {
        for _ in 0..n {
            self.next_batch(tokens)?;
        }
        Ok(())
    }
}

/// Write one cache shard: `resid_mid` and `mlp_out`, each f32 `shape` = [tokens, L, d].
pub fn write_cache(path: &Path, resid_mid: &[f32], mlp_out: &[f32], shape: [usize; 3]) -> Result<()> {
    let n: usize = shape.iter().product();
    if resid_mid.len() != n || mlp_out.len() != n {
        return Err(Error::Config(format!("write_cache {}: data does not match shape {shape:?}", path.display())));
    }
    tensors::write(path, &[("resid_mid".into(), shape.to_vec(), resid_mid), ("mlp_out".into(), shape.to_vec(), mlp_out)], None)
}

/// Writes the next `tokens` tokens of `source` into the directory `dir` as shards of at most
/// `shard_tokens` tokens (`00000.safetensors`, …; what `CacheSource` reads), so that no more than
/// a shard is ever in memory. Each shard appears under its name only when complete.
pub fn write_cache_shards(source: &mut dyn ActivationSource, dir: &Path, tokens: usize, shard_tokens: usize) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (layers, d) = source.dims();
    let shard = shard_tokens.max(1);
    for (i, start) in (0..tokens).step_by(shard).enumerate() {
        let n = shard.min(tokens - start);
        let b = source.next_batch(n)?;
        let path = dir.join(format!("{i:05}.safetensors"));
        // Not named *.safetensors until renamed, so a killed write is never read as a shard.
        let tmp = path.with_extension("partial");
        write_cache(&tmp, &b.resid_mid, &b.mlp_out, [n, layers, d])?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Tokens held in memory, handed out in order and cycled: every reader gets the same tokens.
pub struct MemorySource {
    batch: Batch,
    dims: (usize, usize),
    pos: usize,
}

impl MemorySource {
    pub fn new(batch: Batch, dims: (usize, usize)) -> Self {
        MemorySource { batch, dims, pos: 0 }
    }
}

impl ActivationSource for MemorySource {
    fn dims(&self) -> (usize, usize) {
        self.dims
    }

    fn next_batch(&mut self, tokens: usize) -> Result<Batch> {
        let w = self.dims.0 * self.dims.1;
        if self.batch.tokens == 0 {
            return Err(Error::Config("an empty activation source has no tokens to give".to_owned()));
        }
        let mut out = Batch { tokens, resid_mid: Vec::with_capacity(tokens * w), mlp_out: Vec::with_capacity(tokens * w) };
        for _ in 0..tokens {
            let r = self.pos * w..(self.pos + 1) * w;
            out.resid_mid.extend_from_slice(&self.batch.resid_mid[r.clone()]);
            out.mlp_out.extend_from_slice(&self.batch.mlp_out[r]);
            self.pos = (self.pos + 1) % self.batch.tokens;
        }
        Ok(out)
    }
}

/// A cache on disk: one .safetensors file or a directory of shards, read shard by shard in name order.
pub struct CacheSource {
    shards: Vec<PathBuf>,
    dims: (usize, usize),
    next_shard: usize,
    /// The shard being streamed and the next token in it.
    current: Batch,
    pos: usize,
    /// Shuffle buffer, [capacity, L, d] each; empty when reading in order.
    buffer: Batch,
    capacity: usize,
    rng: ChaCha8Rng,
}

impl CacheSource {
    /// Shuffled batches through a buffer of `buffer_tokens` tokens (0: in order), seeded.
    pub fn open(path: &Path, buffer_tokens: usize, seed: u64) -> Result<Self> {
        let shards = shard_paths(path)?;
        let first = read_shard(&shards[0])?;
        let dims = first.1;
        let empty = Batch { tokens: 0, resid_mid: Vec::new(), mlp_out: Vec::new() };
        let mut src = Self {
            shards,
            dims,
            next_shard: 1,
            current: first.0,
            pos: 0,
            buffer: empty,
            capacity: buffer_tokens,
            rng: ChaCha8Rng::seed_from_u64(seed),
        };
        src.fill_buffer()?;
        Ok(src)
    }

    /// Fill the shuffle buffer. A single shard smaller than the buffer is held once, whole, rather
    /// than with duplicated tokens.
    fn fill_buffer(&mut self) -> Result<()> {
        let n = if self.shards.len() == 1 { self.capacity.min(self.current.tokens) } else { self.capacity };
        for _ in 0..n {
            let r = self.stream_token()?;
            self.buffer.resid_mid.extend_from_slice(&self.current.resid_mid[r.clone()]);
            self.buffer.mlp_out.extend_from_slice(&self.current.mlp_out[r]);
            self.buffer.tokens += 1;
        }
        Ok(())
    }

    /// The next token of the in-order stream, wrapping around at the end of the cache: its range
    /// in `current`'s resid_mid and mlp_out (copied from there by the caller: a pair of vectors
    /// per token was a tenth of the trainer's step at F 1,024, all of it on one thread).
    fn stream_token(&mut self) -> Result<std::ops::Range<usize>> {
        if self.pos == self.current.tokens {
            let i = self.next_shard % self.shards.len();
            if self.shards.len() > 1 {
                self.current = read_shard(&self.shards[i])?.0;
            }
            self.next_shard = i + 1;
            self.pos = 0;
        }
        let w = self.dims.0 * self.dims.1;
        self.pos += 1;
        Ok((self.pos - 1) * w..self.pos * w)
    }
}

impl ActivationSource for CacheSource {
    fn dims(&self) -> (usize, usize) {
        self.dims
    }

    fn next_batch(&mut self, tokens: usize) -> Result<Batch> {
        let w = self.dims.0 * self.dims.1;
        let mut out = Batch { tokens, resid_mid: Vec::with_capacity(tokens * w), mlp_out: Vec::with_capacity(tokens * w) };
        for _ in 0..tokens {
            let s = self.stream_token()?;
            let (x, y) = (&self.current.resid_mid[s.clone()], &self.current.mlp_out[s]);
            if self.buffer.tokens == 0 {
                out.resid_mid.extend_from_slice(x);
                out.mlp_out.extend_from_slice(y);
                continue;
            }
            // Emit a random buffered token and put the stream's next token in its place.
            let i = self.rng.random_range(0..self.buffer.tokens);
            let r = i * w..(i + 1) * w;
            out.resid_mid.extend_from_slice(&self.buffer.resid_mid[r.clone()]);
            out.mlp_out.extend_from_slice(&self.buffer.mlp_out[r.clone()]);
            self.buffer.resid_mid[r.clone()].copy_from_slice(x);
            self.buffer.mlp_out[r].copy_from_slice(y);
        }
        Ok(out)
    }
}

fn shard_paths(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut shards: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    shards.sort();
    if shards.is_empty() {
        return Err(Error::in_file(path, "no .safetensors shards in the activation cache"));
    }
    Ok(shards)
}

/// One shard and its (L, d).
fn read_shard(path: &Path) -> Result<(Batch, (usize, usize))> {
    let mut map = tensors::read(path)?;
    let shape = map.get("resid_mid").map(|t| t.0.clone()).ok_or_else(|| Error::in_file(path, "no tensor 'resid_mid'"))?;
    if shape.len() != 3 || shape[0] == 0 {
        return Err(Error::in_file(path, format!("resid_mid has shape {shape:?}, expected [tokens > 0, L, d]")));
    }
    let resid_mid = tensors::take(&mut map, path, "resid_mid", &shape)?;
    let mlp_out = tensors::take(&mut map, path, "mlp_out", &shape)?;
    Ok((Batch { tokens: shape[0], resid_mid, mlp_out }, (shape[1], shape[2])))
}
