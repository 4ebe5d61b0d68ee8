//! Decoding only the active features, as backend operations with their own backward pass.
//!
//! Each (token n, slot j) names one active feature idx[n, j] with activation z[n, j]. Three
//! operations on a matrix w [F, C] (a decoder, or a column of decoder norms) cover the forward and
//! both gradients:
//! - `rows_weighted_sum`: out[n, c] = Σ_j z[n, j] · w[idx[n, j], c]       (the decoding)
//! - `rows_dot`:          out[n, j] = Σ_c g[n, c] · w[idx[n, j], c]       (its gradient in z)
//! - `rows_scatter`:      out[f, c] = Σ_{idx[n, j] = f} z[n, j] · g[n, c]  (its gradient in w)
//!
//! The default implementations use burn's row gather (`select`) and row scatter-add, which are
//! fast on the CPU. On burn's GPU backends (burn-cubecl 0.21) the backward of `select` gives each
//! decoder column one thread that walks every index in turn, so a sparse step there did not finish
//! (module docs of `autodiff`); `kernels` replaces the three with CubeCL kernels that give each
//! (token, column) its own thread. Autodiff wraps them so that `decode` and `pick` differentiate
//! through these operations and never through `select`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::Flex;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorPrimitive};

/// A backend that decodes sparse codes; every method takes and gives primitives (see the module
/// docs for what each computes). z and idx are [n, k], w is [F, C], g is [n, C].
pub trait SparseOps: Backend {
    /// Whether the three operations below are fast on `device` (a GPU backend needs float atomic
    /// adds for `rows_scatter`); where they are not, the trainer decodes densely.
    fn sparse_ok(_device: &Self::Device) -> bool {
        true
    }

    fn rows_weighted_sum(z: FloatTensor<Self>, idx: IntTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let (z, rows) = (float_tensor::<Self, 2>(z), gathered_rows::<Self>(idx, w));
        let [n, k, c] = rows.dims();
        z.reshape([n, 1, k]).matmul(rows).reshape([n, c]).into_primitive().tensor()
    }

    fn rows_dot(g: FloatTensor<Self>, idx: IntTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let (g, rows) = (float_tensor::<Self, 2>(g), gathered_rows::<Self>(idx, w));
        let [n, k, c] = rows.dims();
        rows.matmul(g.reshape([n, c, 1])).reshape([n, k]).into_primitive().tensor()
    }

    fn rows_scatter(z: FloatTensor<Self>, idx: IntTensor<Self>, g: FloatTensor<Self>, features: usize) -> FloatTensor<Self> {
        select_scatter::<Self>(z, idx, g, features)
    }

    /// `rows_weighted_sum`, differentiable in z and w under autodiff.
    fn decode(z: FloatTensor<Self>, idx: IntTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::rows_weighted_sum(z, idx, w)
    }

    /// out[n, j] = w[idx[n, j]] for w [F], differentiable in w under autodiff.
    fn pick(w: FloatTensor<Self>, idx: IntTensor<Self>) -> FloatTensor<Self> {
        let w = float_tensor::<Self, 1>(w);
        let n = int::<Self>(idx.clone()).dims()[0];
        let f = w.dims()[0];
        let ones = Tensor::<Self, 2>::ones([n, 1], &w.device()).into_primitive().tensor();
        Self::rows_dot(ones, idx, w.reshape([f, 1]).into_primitive().tensor())
    }
}

/// w[idx[n, j]] as [n, k, C], through burn's row gather.
fn gathered_rows<B: Backend>(idx: IntTensor<B>, w: FloatTensor<B>) -> Tensor<B, 3> {
    let (idx, w) = (int::<B>(idx), float_tensor::<B, 2>(w));
    let ([n, k], c) = (idx.dims(), w.dims()[1]);
    w.select(0, idx.reshape([n * k])).reshape([n, k, c])
}

/// `rows_scatter` through burn's row scatter-add: the default, and the GPU backends' where the
/// device has no float atomics.
pub(crate) fn select_scatter<B: Backend>(z: FloatTensor<B>, idx: IntTensor<B>, g: FloatTensor<B>, features: usize) -> FloatTensor<B> {
    let (z, idx, g) = (float_tensor::<B, 2>(z), int::<B>(idx), float_tensor::<B, 2>(g));
    let ([n, k], c) = (z.dims(), g.dims()[1]);
    // The outer products z[n, j]·g[n] as a batched product: Flex's broadcasting multiply walks a
    // strided iterator, which took a quarter of the CPU autodiff step.
    let values = z.reshape([n, k, 1]).matmul(g.reshape([n, 1, c])).reshape([n * k, c]);
    let out = Tensor::<B, 2>::zeros([features, c], &values.device());
    out.select_assign(0, idx.reshape([n * k]), values, IndexingUpdateOp::Add).into_primitive().tensor()
}

/// A float primitive as a tensor.
pub(crate) fn float_tensor<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn int<B: Backend>(t: IntTensor<B>) -> Tensor<B, 2, Int> {
    Tensor::from_primitive(t)
}

impl SparseOps for Flex {}

#[cfg(feature = "ndarray")]
impl SparseOps for burn::backend::NdArray {}

#[cfg(feature = "candle")]
#[allow(deprecated)]
impl SparseOps for burn::backend::Candle {}

/// Under autodiff the three operations run on the inner backend, untracked (the trainer uses them
/// only for counts); `decode` and `pick` are tracked, with backward passes made of the same three.
impl<B: SparseOps, C: CheckpointStrategy> SparseOps for Autodiff<B, C> {
    fn sparse_ok(device: &Self::Device) -> bool {
        B::sparse_ok(device)
    }

    fn rows_weighted_sum(z: FloatTensor<Self>, idx: IntTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::rows_weighted_sum(z.primitive, idx, w.primitive))
    }

    fn rows_dot(g: FloatTensor<Self>, idx: IntTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::rows_dot(g.primitive, idx, w.primitive))
    }

    fn rows_scatter(z: FloatTensor<Self>, idx: IntTensor<Self>, g: FloatTensor<Self>, features: usize) -> FloatTensor<Self> {
        Self::from_inner(B::rows_scatter(z.primitive, idx, g.primitive, features))
    }

    fn decode(z: FloatTensor<Self>, idx: IntTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct DecodeBackward;

        impl<B: SparseOps> Backward<B, 2> for DecodeBackward {
            /// z, idx and w (the inner tensors are shared handles, not copies).
            type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_z, node_w] = ops.parents;
                let g = grads.consume::<B>(&ops.node);
                let (z, idx, w) = ops.state;
                let features = float_tensor::<B, 2>(w.clone()).dims()[0];
                if let Some(node) = node_w {
                    grads.register::<B>(node.id, B::rows_scatter(z, idx.clone(), g.clone(), features));
                }
                if let Some(node) = node_z {
                    grads.register::<B>(node.id, B::rows_dot(g, idx, w));
                }
            }
        }

        match DecodeBackward.prepare::<C>([z.node.clone(), w.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::rows_weighted_sum(z.primitive.clone(), idx.clone(), w.primitive.clone());
                prep.finish((z.primitive, idx, w.primitive), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rows_weighted_sum(z.primitive, idx, w.primitive)),
        }
    }

    fn pick(w: FloatTensor<Self>, idx: IntTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct PickBackward;

        impl<B: SparseOps> Backward<B, 1> for PickBackward {
            /// idx and the number of features.
            type State = (IntTensor<B>, usize);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_w] = ops.parents;
                let g = grads.consume::<B>(&ops.node);
                let (idx, features) = ops.state;
                if let Some(node) = node_w {
                    let n = int::<B>(idx.clone()).dims()[0];
                    let ones = Tensor::<B, 2>::ones([n, 1], &float_tensor::<B, 2>(g.clone()).device()).into_primitive().tensor();
                    let dw = float_tensor::<B, 2>(B::rows_scatter(g, idx, ones, features)).reshape([features]);
                    grads.register::<B>(node.id, dw.into_primitive().tensor());
                }
            }
        }

        let features = float_tensor::<B, 1>(w.primitive.clone()).dims()[0];
        match PickBackward.prepare::<C>([w.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::pick(w.primitive, idx.clone());
                prep.finish((idx, features), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::pick(w.primitive, idx)),
        }
    }
}
