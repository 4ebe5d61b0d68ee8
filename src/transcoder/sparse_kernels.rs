//! `SparseOps` on burn's GPU backends (CUDA, wgpu): three CubeCL kernels, each giving a thread to
//! one (token, column), (token, slot) or (feature, column), so none walks the whole batch as
//! burn-cubecl's `select` backward does, and one listing a row's positive scores (ReLU's active
//! features, whose number burn's top-k kernel would compile in). The W_dec gradient sums each
//! feature's entries in a fixed order (its tokens ascending, listed by a counting sort on the host
//! once per step in `active`), not by atomic adds, so that it does not vary from run to run and
//! needs no float atomics.

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, Int, Shape, TensorData};
use burn_cubecl::element::BoolElement;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeRuntime};
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, CubeDim};

use super::sparse::{encoder_slices, Active, SparseOps};

/// out[n, c] = Σ_j z[n, j] · w[idx[n, j], c]; one thread per (n, c), so a warp reads a decoder row
/// in consecutive columns.
#[cube(launch_unchecked)]
fn rows_weighted_sum_kernel(z: &Tensor<f32>, idx: &Tensor<i32>, w: &Tensor<f32>, out: &mut Tensor<f32>) {
    if ABSOLUTE_POS >= out.len() {
        terminate!();
    }
    let (slots, cols) = (z.shape(1), w.shape(1));
    let (n, c) = (ABSOLUTE_POS / cols, ABSOLUTE_POS % cols);
    let mut acc = 0.0f32;
    for j in 0..slots {
        let f = usize::cast_from(idx[n * slots + j]);
        acc += z[n * slots + j] * w[f * cols + c];
    }
    out[ABSOLUTE_POS] = acc;
}

/// out[n, j] = Σ_c g[n, c] · w[idx[n, j], c]; one thread per (n, j), summing in column order.
#[cube(launch_unchecked)]
fn rows_dot_kernel(g: &Tensor<f32>, idx: &Tensor<i32>, w: &Tensor<f32>, out: &mut Tensor<f32>) {
    if ABSOLUTE_POS >= out.len() {
        terminate!();
    }
    let (slots, cols) = (idx.shape(1), w.shape(1));
    let n = ABSOLUTE_POS / slots;
    let f = usize::cast_from(idx[ABSOLUTE_POS]);
    let mut acc = 0.0f32;
    for c in 0..cols {
        acc += g[n * cols + c] * w[f * cols + c];
    }
    out[ABSOLUTE_POS] = acc;
}

/// out[f, c] = Σ z[m]·g[m / k, c] over the entries m of feature f, which are
/// entries[offsets[f]..offsets[f + 1]] (m = n·k + j, ascending); one thread per (f, c).
#[cube(launch_unchecked)]
fn feature_sums_kernel(z: &Tensor<f32>, entries: &Tensor<i32>, offsets: &Tensor<i32>, g: &Tensor<f32>, out: &mut Tensor<f32>) {
    if ABSOLUTE_POS >= out.len() {
        terminate!();
    }
    let (slots, cols) = (z.shape(1), g.shape(1));
    let (f, c) = (ABSOLUTE_POS / cols, ABSOLUTE_POS % cols);
    let (start, end) = (usize::cast_from(offsets[f]), usize::cast_from(offsets[f + 1]));
    let mut acc = 0.0f32;
    for i in start..end {
        let m = usize::cast_from(entries[i]);
        acc += z[m] * g[(m / slots) * cols + c];
    }
    out[ABSOLUTE_POS] = acc;
}

/// out[r, ..]: the features f with score[r, f] > 0 ascending, then the row's first other feature
/// repeated to the row's end; one thread per row, which reads its row once.
#[cube(launch_unchecked)]
fn positive_indices_kernel(score: &Tensor<f32>, out: &mut Tensor<i32>) {
    if ABSOLUTE_POS >= score.shape(0) {
        terminate!();
    }
    let (features, slots) = (score.shape(1), out.shape(1));
    let (row, first) = (ABSOLUTE_POS * features, ABSOLUTE_POS * slots);
    let mut next = 0usize;
    let mut pad = features; // none yet
    for f in 0..features {
        if score[row + f] > 0.0 {
            if next < slots {
                out[first + next] = i32::cast_from(f);
            }
            next += 1;
        } else if pad == features {
            pad = f;
        }
    }
    for j in next..slots {
        out[first + j] = i32::cast_from(pad);
    }
}

/// Our four kernels compiled for CUDA as burn's CUDA backend compiles them on a Hopper GPU: the C++
/// of CubeCL's CUDA dialect with the features cubecl-cuda enables from compute capability 9.0,
/// through NVRTC with its options (`--gpu-architecture=sm_90a`, CUDA's headers from `CUDA_PATH`).
/// The kernels are defined through any runtime's client, so a machine with no GPU but NVRTC's
/// library (PyPI's `nvidia-cuda-nvrtc`) checks that they compile for CUDA: tests/transcoder.rs runs
/// it on lavapipe's wgpu client. Returns each kernel's name and PTX; an error names the kernel and
/// carries NVRTC's log and the source.
#[cfg(feature = "cuda")]
pub fn compile_for_cuda<R: Runtime>(client: &ComputeClient<R>) -> anyhow::Result<Vec<(&'static str, String)>> {
    use cubecl::{cuda::CudaCompiler, Compiler};
    use cubecl_cpp::shared::{CompilationOptions, CppSupportedFeatures};
    use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
    let features = CppSupportedFeatures { grid_constants: true, clusters: true, fast_math: true, fast_tanh: true, elect_sync: true };
    let options = CompilationOptions { warp_size: 32, supports_features: features };
    let mut include_paths = Vec::new();
    if let Some(cuda) = std::env::var_os("CUDA_PATH").map(std::path::PathBuf::from) {
        include_paths.extend([cuda.join("include"), cuda.join("include/cccl")].iter().filter(|p| p.exists()).map(|p| p.display().to_string()));
    }
    let compile = |name: &'static str, kernel: &dyn CubeKernel| -> anyhow::Result<(&'static str, String)> {
        let source = CudaCompiler::default()
            .compile(kernel.define(), &options, ExecutionMode::Unchecked, kernel.address_type())
            .map_err(|e| anyhow::anyhow!("CubeCL could not write {name} as CUDA C++: {e}"))?
            .to_string();
        let nvrtc = CompileOptions { arch: Some("sm_90a"), include_paths: include_paths.clone(), options: vec!["-lineinfo".into()], ..Default::default() };
        let ptx = compile_ptx_with_opts(&source, nvrtc).map_err(|e| anyhow::anyhow!("NVRTC did not compile {name}: {e}\n{source}"))?;
        Ok((name, ptx.to_src()))
    };
    let settings = || KernelSettings::default().cube_dim(CubeDim::new_1d(256));
    let arg = || TensorCompilationArg { inplace: None };
    let c = || client.clone();
    Ok(vec![
        compile("rows_weighted_sum", &rows_weighted_sum_kernel::RowsWeightedSumKernel::<R>::new(settings(), c(), arg(), arg(), arg(), arg()))?,
        compile("rows_dot", &rows_dot_kernel::RowsDotKernel::<R>::new(settings(), c(), arg(), arg(), arg(), arg()))?,
        compile("feature_sums", &feature_sums_kernel::FeatureSumsKernel::<R>::new(settings(), c(), arg(), arg(), arg(), arg(), arg()))?,
        compile("positive_indices", &positive_indices_kernel::PositiveIndicesKernel::<R>::new(settings(), c(), arg(), arg()))?,
    ])
}

/// Each feature's entries of idx [n·k] (flat), in ascending order, and where each feature's run
/// starts: a counting sort, so that the sums above add in a fixed order.
fn entries_by_feature(idx: &[i32], features: usize) -> (Vec<i32>, Vec<i32>) {
    let mut offsets = vec![0i32; features + 1];
    for &f in idx {
        offsets[f as usize + 1] += 1;
    }
    for f in 0..features {
        offsets[f + 1] += offsets[f];
    }
    let mut next = offsets.clone();
    let mut entries = vec![0i32; idx.len()];
    for (m, &f) in idx.iter().enumerate() {
        entries[next[f as usize] as usize] = m as i32;
        next[f as usize] += 1;
    }
    (entries, offsets)
}

/// One thread per element of an output of `units` elements.
fn grid<R: CubeRuntime>(t: &CubeTensor<R>, units: usize) -> (cubecl::CubeCount, CubeDim) {
    let dim = CubeDim::new(&t.client, units);
    (calculate_cube_count_elemwise(&t.client, units, dim), dim)
}

/// Inputs are made contiguous first and outputs allocated packed (not row-padded, as burn's
/// default allocation may be on CUDA): the kernels index rows as flat offsets.
impl<R: CubeRuntime, BT: BoolElement> SparseOps for CubeBackend<R, f32, i32, BT> {
    /// One read of all encoders' indices back to the host per step, where each feature's entries
    /// are listed for `rows_scatter`.
    fn active(idx: IntTensor<Self>, features: usize) -> Vec<Active<Self>> {
        let device = idx.device.clone();
        let upload = |v: Vec<i32>| {
            let len = v.len();
            burn::tensor::Tensor::<Self, 1, Int>::from_data(TensorData::new(v, [len]), &device).into_primitive()
        };
        let slices = encoder_slices::<Self>(idx.clone());
        let host = burn::tensor::Tensor::<Self, 3, Int>::from_primitive(idx).into_data().convert::<i32>().into_vec::<i32>().expect("i32 indices");
        let per_encoder = host.len() / slices.len();
        slices
            .into_iter()
            .zip(host.chunks(per_encoder))
            .map(|(idx, host)| {
                let (entries, offsets) = entries_by_feature(host, features);
                Active { idx, features, by_feature: Some((upload(entries), upload(offsets))) }
            })
            .collect()
    }

    fn rows_weighted_sum(z: FloatTensor<Self>, a: &Active<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let (z, idx, w) = (into_contiguous(z), into_contiguous(a.idx.clone()), into_contiguous(w));
        let (n, c) = (z.meta.shape()[0], w.meta.shape()[1]);
        let out = empty_device_contiguous_dtype(z.client.clone(), z.device.clone(), Shape::new([n, c]), DType::F32);
        let (count, dim) = grid(&z, n * c);
        // SAFETY: every index is within its tensor: idx holds feature numbers below F, and each
        // thread checks its position against the output's length.
        unsafe {
            rows_weighted_sum_kernel::launch_unchecked::<R>(
                &out.client,
                count,
                dim,
                z.into_tensor_arg(),
                idx.into_tensor_arg(),
                w.into_tensor_arg(),
                out.clone().into_tensor_arg(),
            )
        };
        out
    }

    fn rows_dot(g: FloatTensor<Self>, a: &Active<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let (g, idx, w) = (into_contiguous(g), into_contiguous(a.idx.clone()), into_contiguous(w));
        let (n, k) = (idx.meta.shape()[0], idx.meta.shape()[1]);
        let out = empty_device_contiguous_dtype(g.client.clone(), g.device.clone(), Shape::new([n, k]), DType::F32);
        let (count, dim) = grid(&g, n * k);
        // SAFETY: as in rows_weighted_sum.
        unsafe {
            rows_dot_kernel::launch_unchecked::<R>(
                &out.client,
                count,
                dim,
                g.into_tensor_arg(),
                idx.into_tensor_arg(),
                w.into_tensor_arg(),
                out.clone().into_tensor_arg(),
            )
        };
        out
    }

    fn positive_indices(score: FloatTensor<Self>, k: usize) -> IntTensor<Self> {
        let score = into_contiguous(score);
        let rows = score.meta.shape()[0];
        let out = empty_device_contiguous_dtype(score.client.clone(), score.device.clone(), Shape::new([rows, k]), DType::I32);
        let (count, dim) = grid(&score, rows);
        // SAFETY: each thread writes only its own row's k slots, after checking its row exists.
        unsafe { positive_indices_kernel::launch_unchecked::<R>(&out.client, count, dim, score.into_tensor_arg(), out.clone().into_tensor_arg()) };
        out
    }

    fn rows_scatter(z: FloatTensor<Self>, a: &Active<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        let (entries, offsets) = a.by_feature.clone().expect("made by active");
        let (z, g) = (into_contiguous(z), into_contiguous(g));
        let c = g.meta.shape()[1];
        let out = empty_device_contiguous_dtype(g.client.clone(), g.device.clone(), Shape::new([a.features, c]), DType::F32);
        let (count, dim) = grid(&g, a.features * c);
        // SAFETY: entries are positions in z (below n·k) and offsets run from 0 to n·k; each
        // thread checks its position against the output's length.
        unsafe {
            feature_sums_kernel::launch_unchecked::<R>(
                &out.client,
                count,
                dim,
                z.into_tensor_arg(),
                entries.into_tensor_arg(),
                offsets.into_tensor_arg(),
                g.into_tensor_arg(),
                out.clone().into_tensor_arg(),
            )
        };
        out
    }
}
