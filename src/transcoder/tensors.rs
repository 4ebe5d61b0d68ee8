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

/// All tensors of a file, by name: (shape, data). Non-f32 tensors are an error.
pub fn read(path: &Path) -> Result<TensorMap> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&raw).map_err(|e| Error::in_file(path, e.to_string()))?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            if view.dtype() != Dtype::F32 {
                return Err(Error::in_file(path, format!("tensor '{name}' is {:?}, expected F32", view.dtype())));
            }
            let data = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            Ok((name, (view.shape().to_vec(), data)))
        })
        .collect()
}

/// Takes a tensor out of a map read by `read`, checking its shape.
pub fn take(map: &mut TensorMap, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let (s, d) = map.remove(name).ok_or_else(|| Error::in_file(path, format!("no tensor '{name}'")))?;
    if s != shape {
        return Err(Error::in_file(path, format!("tensor '{name}' has shape {s:?}, expected {shape:?}")));
    }
    Ok(d)
}
