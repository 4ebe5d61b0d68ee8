//! float32 safetensors files in and out: the one format of caches, checkpoints and exports.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::{Error, Result};

/// A named f32 tensor: (name, shape, data).
pub type Named<'a> = (String, Vec<usize>, &'a [f32]);

/// The tensors of a file by name: (shape, data).
pub type TensorMap = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

pub fn write(path: &Path, tensors: &[Named], metadata: Option<HashMap<String, String>>) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(n, s, d)| (n.clone(), s.clone(), d.iter().flat_map(|v| v.to_le_bytes()).collect())).collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| Error::in_file(path, e.to_string()))?)))
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize_to_file(views, metadata, path).map_err(|e| Error::in_file(path, e.to_string()))
}

/// All tensors of a file, by name: (shape, data). f16 and bf16 tensors (as other tools write
/// them) are widened to f32 exactly, f64 narrowed; other dtypes are an error naming them all.
pub fn read(path: &Path) -> Result<TensorMap> {
    read_where(path, |_| true)
}

/// The tensors of a file that `keep` takes by name, as [`read`] reads them: those left out may
/// be of any dtype (a model's boolean causal mask, its int64 position ids).
pub fn read_where(path: &Path, keep: impl Fn(&str) -> bool) -> Result<TensorMap> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&raw).map_err(|e| Error::in_file(path, not_safetensors(&raw, e)))?;
    let kept: Vec<_> = st.tensors().into_iter().filter(|(name, _)| keep(name)).collect();
    let other: Vec<String> = kept.iter().filter(|(_, v)| !matches!(v.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)).map(|(n, v)| format!("'{n}' ({:?})", v.dtype())).collect();
    if !other.is_empty() {
        let msg = format!(
            "{} not floating point (F32, F16, BF16 or F64 expected); buffers saved beside the weights (a causal mask, position ids) \
             are not weights: leave them out (import-model: [weights] ignore)",
            other.join(", ")
        );
        return Err(Error::in_file(path, msg));
    }
    Ok(kept
        .into_iter()
        .map(|(name, view)| {
            let halves = || view.data().chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
            let data = match view.dtype() {
                Dtype::BF16 => halves().map(|h| half::bf16::from_bits(h).to_f32()).collect(),
                Dtype::F16 => halves().map(|h| half::f16::from_bits(h).to_f32()).collect(),
                // numpy's default; narrowed as the model computes in f32.
                Dtype::F64 => view.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
                _ => view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            };
            (name, (view.shape().to_vec(), data))
        })
        .collect())
}

/// Why a file did not read as safetensors, in words: a PyTorch checkpoint (`torch.save` writes a
/// zip archive, older versions a bare pickle) gets the line that converts it.
fn not_safetensors(raw: &[u8], e: safetensors::SafeTensorError) -> String {
    if raw.starts_with(b"PK\x03\x04") || raw.first() == Some(&0x80) {
        return "a PyTorch checkpoint (torch.save), not a safetensors file; convert it with python -c \"import torch; \
                from safetensors.torch import save_file; save_file(torch.load('IN.pt'), 'OUT.safetensors')\" (take the \
                model's state dict when the checkpoint holds more)"
            .into();
    }
    format!("not a safetensors file ({e})")
}

/// Takes a tensor out of a map read by `read`, checking its shape.
pub fn take(map: &mut TensorMap, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let (s, d) = map.remove(name).ok_or_else(|| Error::in_file(path, format!("no tensor '{name}'")))?;
    if s != shape {
        return Err(Error::in_file(path, format!("tensor '{name}' has shape {s:?}, expected {shape:?}")));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pytorch_checkpoint_is_named_with_the_line_that_converts_it() {
        let dir = tempfile::tempdir().unwrap();
        for (name, head) in [("zip.pt", &b"PK\x03\x04archive"[..]), ("pickle.bin", &b"\x80\x02}q\x00"[..]), ("other.safetensors", &b"\xff\xff\xff\xff\xff\xff\xff\xff{}"[..])] {
            let path = dir.path().join(name);
            std::fs::write(&path, head).unwrap();
            let err = read(&path).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
            assert_eq!(err.contains("save_file(torch.load("), !name.starts_with("other"), "{err}");
        }
    }

    #[test]
    fn halves_widen_to_the_same_numbers() {
        // 1.0, -2.0, 65504 (largest half), 2^-14 (smallest normal), 2^-24 (smallest subnormal), +inf.
        let cases = [(0x3c00u16, 1.0f32), (0xc000, -2.0), (0x7bff, 65504.0), (0x0400, 2f32.powi(-14)), (0x0001, 2f32.powi(-24)), (0x7c00, f32::INFINITY)];
        // The same numbers as bf16: the top half of their f32 bits (65504 loses mantissa bits).
        let bf16: Vec<u16> = cases.iter().map(|&(_, v)| (v.to_bits() >> 16) as u16).collect();
        let f16: Vec<u16> = cases.iter().map(|&(bits, _)| bits).chain([0x7e00]).collect();
        let bytes = |halves: &[u16]| -> Vec<u8> { halves.iter().flat_map(|h| h.to_le_bytes()).collect() };
        let (f16_bytes, bf16_bytes) = (bytes(&f16), bytes(&bf16));
        let views = vec![
            ("f16".to_owned(), TensorView::new(Dtype::F16, vec![f16.len()], &f16_bytes).unwrap()),
            ("bf16".to_owned(), TensorView::new(Dtype::BF16, vec![bf16.len()], &bf16_bytes).unwrap()),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("halves.safetensors");
        safetensors::tensor::serialize_to_file(views, None, &path).unwrap();
        let map = read(&path).unwrap();
        for (i, (bits, value)) in cases.iter().enumerate() {
            assert_eq!(map["f16"].1[i], *value, "half {bits:#06x}");
            // bf16 keeps 8 mantissa bits: the widened value is the f32 with its low half zeroed.
            assert_eq!(map["bf16"].1[i], f32::from_bits(value.to_bits() & 0xffff_0000), "bf16 of {value}");
        }
        assert!(map["f16"].1[cases.len()].is_nan());
    }
}
