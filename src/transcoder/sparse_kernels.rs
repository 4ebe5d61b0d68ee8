//! `SparseOps` on burn's GPU backends (CUDA, wgpu): three CubeCL kernels, each giving a thread to
//! one (token, column) or one (token, slot), so none walks the whole batch as burn-cubecl's
//! `select` backward does. `rows_scatter` adds with float atomics (CUDA has them; Vulkan and Metal
//! where the device offers them), so on a GPU two runs of it agree to float rounding, not bit for
//! bit. On a device without float atomic adds it falls back to burn's scatter, and the trainer
//! decodes densely instead (`sparse_ok`).

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, Shape};
use burn_cubecl::element::BoolElement;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::{empty_device_dtype, zeros_client};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeRuntime};
use cubecl::features::AtomicUsage;
use cubecl::ir::{ElemType, FloatKind, StorageType, Type};
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, CubeDim};

use super::sparse::{select_scatter, SparseOps};

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

/// out[idx[n, j], c] += z[n, j] · g[n, c] over every j; one thread per (n, c).
#[cube(launch_unchecked)]
fn rows_scatter_kernel(z: &Tensor<f32>, idx: &Tensor<i32>, g: &Tensor<f32>, out: &mut Tensor<Atomic<f32>>) {
    if ABSOLUTE_POS >= g.len() {
        terminate!();
    }
    let (slots, cols) = (z.shape(1), g.shape(1));
    let (n, c) = (ABSOLUTE_POS / cols, ABSOLUTE_POS % cols);
    let gv = g[ABSOLUTE_POS];
    for j in 0..slots {
        let f = usize::cast_from(idx[n * slots + j]);
        out[f * cols + c].fetch_add(z[n * slots + j] * gv);
    }
}

/// A contiguous f32 (or i32) tensor: the kernels index rows as flat offsets.
fn flat<R: CubeRuntime>(t: CubeTensor<R>) -> CubeTensor<R> {
    into_contiguous(t)
}

/// One thread per element of an output of `units` elements.
fn grid<R: CubeRuntime>(t: &CubeTensor<R>, units: usize) -> (cubecl::CubeCount, CubeDim) {
    let dim = CubeDim::new(&t.client, units);
    (calculate_cube_count_elemwise(&t.client, units, dim), dim)
}

/// Whether the device adds f32 atomically (all CUDA devices; Vulkan and Metal ones that offer it).
fn float_atomic_add<R: CubeRuntime>(device: &R::Device) -> bool {
    let atomic = Type::new(StorageType::Atomic(ElemType::Float(FloatKind::F32)));
    R::client(device).properties().atomic_type_usage(atomic).contains(AtomicUsage::Add)
}

impl<R: CubeRuntime, BT: BoolElement> SparseOps for CubeBackend<R, f32, i32, BT> {
    fn sparse_ok(device: &Self::Device) -> bool {
        float_atomic_add::<R>(device)
    }

    fn rows_weighted_sum(z: FloatTensor<Self>, idx: IntTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let (z, idx, w) = (flat(z), flat(idx), flat(w));
        let (n, c) = (z.meta.shape()[0], w.meta.shape()[1]);
        let out = empty_device_dtype(z.client.clone(), z.device.clone(), Shape::new([n, c]), DType::F32);
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

    fn rows_dot(g: FloatTensor<Self>, idx: IntTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let (g, idx, w) = (flat(g), flat(idx), flat(w));
        let (n, k) = (idx.meta.shape()[0], idx.meta.shape()[1]);
        let out = empty_device_dtype(g.client.clone(), g.device.clone(), Shape::new([n, k]), DType::F32);
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

    fn rows_scatter(z: FloatTensor<Self>, idx: IntTensor<Self>, g: FloatTensor<Self>, features: usize) -> FloatTensor<Self> {
        if !float_atomic_add::<R>(&z.device) {
            return select_scatter::<Self>(z, idx, g, features);
        }
        let (z, idx, g) = (flat(z), flat(idx), flat(g));
        let (n, c) = (g.meta.shape()[0], g.meta.shape()[1]);
        let out = zeros_client(z.client.clone(), z.device.clone(), Shape::new([features, c]), DType::F32);
        let (count, dim) = grid(&g, n * c);
        // SAFETY: as in rows_weighted_sum.
        unsafe {
            rows_scatter_kernel::launch_unchecked::<R>(
                &out.client,
                count,
                dim,
                z.into_tensor_arg(),
                idx.into_tensor_arg(),
                g.into_tensor_arg(),
                out.clone().into_tensor_arg(),
            )
        };
        out
    }
}
