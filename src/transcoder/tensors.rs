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
/// them) are widened to f32 exactly; other dtypes are an error.
pub fn read(path: &Path) -> Result<TensorMap> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&raw).map_err(|e| Error::in_file(path, e.to_string()))?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let halves = || view.data().chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
            let data = match view.dtype() {
                Dtype::F32 => view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                Dtype::BF16 => halves().map(|h| f32::from_bits((h as u32) << 16)).collect(),
                Dtype::F16 => halves().map(f16_to_f32).collect(),
                other => return Err(Error::in_file(path, format!("tensor '{name}' is {other:?}, expected F32, F16 or BF16"))),
            };
            Ok((name, (view.shape().to_vec(), data)))
        })
        .collect()
}

/// IEEE 754 half to single precision (exact: every half is a single).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let (exponent, mantissa) = ((h >> 10) & 0x1f, (h & 0x3ff) as u32);
    match exponent {
        0 => sign * mantissa as f32 * (-24f32).exp2(),
        0x1f => f32::from_bits(((h as u32 & 0x8000) << 16) | 0x7f80_0000 | (mantissa << 13)),
        e => f32::from_bits(((h as u32 & 0x8000) << 16) | ((e as u32 + 112) << 23) | (mantissa << 13)),
    }
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
    use super::f16_to_f32;

    #[test]
    fn halves_widen_to_the_same_numbers() {
        // 1.0, -2.0, 65504 (largest half), 2^-14 (smallest normal), 2^-24 (smallest subnormal), +inf.
        let cases = [(0x3c00, 1.0), (0xc000, -2.0), (0x7bff, 65504.0), (0x0400, 2f32.powi(-14)), (0x0001, 2f32.powi(-24)), (0x7c00, f32::INFINITY)];
        for (bits, value) in cases {
            assert_eq!(f16_to_f32(bits), value, "half {bits:#06x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
