//! `voltlens import-clt`: a transcoder in circuit-tracer's layout, trained by another tool or
//! exported by VoltLens, made into a transcoder folder that every later stage takes
//! (`OUT/circuit-tracer/`), and optionally scored on cached activations.
//!
//! ```text
//! out/
//!   circuit-tracer/   export_circuit_tracer of the imported transcoder
//!   eval.json         Metrics on the cache (with --eval)
//! ```

use std::path::Path;

use super::cache::{Batch, MemorySource};
use super::clt::Transcoder;
use super::export::{export_circuit_tracer, import_circuit_tracer};
use super::metrics::{evaluate, Metrics};
use super::tensors;
use crate::io::write_json;
use crate::{Error, Result};

/// Tokens per forward pass while scoring.
const EVAL_BATCH: usize = 4096;

/// Imports the transcoder in `from` into `out`; with `eval_cache` (a `cache-activations` file)
/// also scores it there. Returns a summary.
pub fn import_transcoder(from: &Path, out: &Path, eval_cache: Option<&Path>) -> Result<serde_json::Value> {
    let tc = import_circuit_tracer(from)?;
    let metrics = eval_cache.map(|cache| evaluate_on_cache(&tc, cache)).transpose()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    export_circuit_tracer(&tc, &out.join("circuit-tracer"))?;
    if let Some(m) = &metrics {
        write_json(&out.join("eval.json"), m)?;
    }
    let s = tc.shape;
    Ok(serde_json::json!({
        "variant": s.variant,
        "layers": s.layers,
        "d_model": s.d_model,
        "features": s.features,
        "activation": tc.activation,
        "skip": tc.w_skip.is_some(),
        "transcoder": out,
        "eval": metrics,
    }))
}

/// FVU, L0 and dead/live features of `tc` on every token of one cache file, in file order.
pub fn evaluate_on_cache(tc: &Transcoder, path: &Path) -> Result<Metrics> {
    let mut map = tensors::read(path)?;
    let shape = map.get("resid_mid").map(|(s, _)| s.clone()).ok_or_else(|| Error::in_file(path, "no tensor 'resid_mid'"))?;
    let (layers, d) = (tc.shape.layers, tc.shape.d_model);
    if shape.len() != 3 || shape[1..] != [layers, d] {
        let message = format!("resid_mid has shape {shape:?}; the transcoder needs [tokens, {layers}, {d}]");
        return Err(Error::in_file(path, message));
    }
    let resid_mid = tensors::take(&mut map, path, "resid_mid", &shape)?;
    let mlp_out = tensors::take(&mut map, path, "mlp_out", &shape)?;
    let tokens = shape[0];
    let mut source = MemorySource::new(Batch { tokens, resid_mid, mlp_out }, (layers, d));
    evaluate(tc, &mut source, tokens, EVAL_BATCH)
}
