//! Decoding only the active features, as backend operations with their own backward pass.
//!
//! Each (token n, slot j) names one active feature idx[n, j] with activation z[n, j]. Three
//! operations on a matrix w [F, C] (a decoder, or a column of decoder norms) cover the forward and
//! both gradients:
//! - `rows_weighted_sum`: out[n, c] = Σ_j z[n, j] · w[idx[n, j], c]       (the decoding)
//! - `rows_dot`:          out[n, j] = Σ_c g[n, c] · w[idx[n, j], c]       (its gradient in z)
//! - `rows_scatter`:      out[f, c] = Σ_{idx[n, j] = f} z[n, j] · g[n, c]  (its gradient in w)
//!
//! The indices come as an `Active`, made once per step by `SparseOps::active`, so that a backend
//! can derive what it needs from them once (the GPU lists each feature's entries for the scatter).
//!
//! The default implementations use burn's row gather (`select`) and row scatter-add, which are
//! fast on the CPU. On burn's GPU backends (burn-cubecl 0.21) the backward of `select` gives each
//! decoder column one thread that walks every index in turn, so a sparse step there did not finish
//! (module docs of `autodiff`); `sparse_kernels` replaces the three with CubeCL kernels that give
//! each (token, column) its own thread. Autodiff wraps them so that `decode` and `pick`
//! differentiate through these operations and never through `select`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::Flex;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData, TensorPrimitive};
use rayon::prelude::*;

/// One encoder's active features, idx [n, k] over `features` features, with what the backend
/// derived from them in `SparseOps::active` (the GPU: each feature's entries and where they start).
#[derive(Clone, Debug)]
pub struct Active<B: Backend> {
    pub idx: IntTensor<B>,
    pub features: usize,
    pub by_feature: Option<(IntTensor<B>, IntTensor<B>)>,
}

impl<B: Backend> Active<B> {
    /// The same indices seen from a backend with the same integer tensors (autodiff and its inner
    /// backend).
    fn recast<O: Backend<IntTensorPrimitive = B::IntTensorPrimitive>>(self) -> Active<O> {
        Active { idx: self.idx, features: self.features, by_feature: self.by_feature }
    }
}

/// A backend that decodes sparse codes; every method takes and gives primitives (see the module
/// docs for what each computes). z and the indices are [n, k], w is [F, C], g is [n, C].
pub trait SparseOps: Backend {
    /// Each encoder's `Active` from the indices [E, n, k] of `features` features.
    fn active(idx: IntTensor<Self>, features: usize) -> Vec<Active<Self>> {
        encoder_slices::<Self>(idx).into_iter().map(|idx| Active { idx, features, by_feature: None }).collect()
    }

    fn rows_weighted_sum(z: FloatTensor<Self>, a: &Active<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let (z, rows) = (float_tensor::<Self, 2>(z), gathered_rows::<Self>(a, w));
        let [n, k, c] = rows.dims();
        z.reshape([n, 1, k]).matmul(rows).reshape([n, c]).into_primitive().tensor()
    }

    fn rows_dot(g: FloatTensor<Self>, a: &Active<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let (g, rows) = (float_tensor::<Self, 2>(g), gathered_rows::<Self>(a, w));
        let [n, k, c] = rows.dims();
        rows.matmul(g.reshape([n, c, 1])).reshape([n, k]).into_primitive().tensor()
    }

    fn rows_scatter(z: FloatTensor<Self>, a: &Active<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        let (z, idx, g) = (float_tensor::<Self, 2>(z), int::<Self, 2>(a.idx.clone()), float_tensor::<Self, 2>(g));
        let ([n, k], c) = (z.dims(), g.dims()[1]);
        // The outer products z[n, j]·g[n] as a batched product: Flex's broadcasting multiply walks
        // a strided iterator, which took a quarter of the CPU autodiff step.
        let values = z.reshape([n, k, 1]).matmul(g.reshape([n, 1, c])).reshape([n * k, c]);
        let out = Tensor::<Self, 2>::zeros([a.features, c], &values.device());
        out.select_assign(0, idx.reshape([n * k]), values, IndexingUpdateOp::Add).into_primitive().tensor()
    }

    /// For each row of score [R, F], the features whose score is > 0 in ascending order, then the
    /// row's first feature whose score is not, repeated to fill k slots: [R, k]. A gather there
    /// reads every positive score and no other positive one. k must be at least each row's
    /// count of positive scores (a row with fewer has a score to pad with).
    fn positive_indices(score: FloatTensor<Self>, k: usize) -> IntTensor<Self> {
        let score = float_tensor::<Self, 2>(score);
        let [rows, f_n] = score.dims();
        let host = score.to_data().convert::<f32>().into_vec::<f32>().expect("f32 scores");
        let idx: Vec<i64> = host
            .par_chunks(f_n)
            .flat_map_iter(|row| {
                let mut out: Vec<i64> = (0..f_n).filter(|&f| row[f] > 0.0).map(|f| f as i64).collect();
                assert!(out.len() <= k, "{} positive scores in a row, {k} slots", out.len());
                let pad = (0..f_n).find(|&f| !(row[f] > 0.0)).unwrap_or(0) as i64;
                out.resize(k, pad);
                out
            })
            .collect();
        Tensor::<Self, 2, Int>::from_data(TensorData::new(idx, [rows, k]), &score.device()).into_primitive()
    }

    /// `rows_weighted_sum`, differentiable in z and w under autodiff.
    fn decode(z: FloatTensor<Self>, a: &Active<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::rows_weighted_sum(z, a, w)
    }

    /// out[n, j] = w[idx[n, j]] for w [F], differentiable in w under autodiff.
    fn pick(w: FloatTensor<Self>, a: &Active<Self>) -> FloatTensor<Self> {
        let w = float_tensor::<Self, 1>(w);
        let ones = ones_column::<Self>(a, &w.device());
        Self::rows_dot(ones, a, w.reshape([a.features, 1]).into_primitive().tensor())
    }
}

/// The indices [E, n, k] as E tensors [n, k].
pub(crate) fn encoder_slices<B: Backend>(idx: IntTensor<B>) -> Vec<IntTensor<B>> {
    let idx = int::<B, 3>(idx);
    let [e_n, n, k] = idx.dims();
    (0..e_n).map(|e| idx.clone().slice([e..e + 1, 0..n, 0..k]).reshape([n, k]).into_primitive()).collect()
}

/// w[idx[n, j]] as [n, k, C], through burn's row gather.
fn gathered_rows<B: Backend>(a: &Active<B>, w: FloatTensor<B>) -> Tensor<B, 3> {
    let (idx, w) = (int::<B, 2>(a.idx.clone()), float_tensor::<B, 2>(w));
    let ([n, k], c) = (idx.dims(), w.dims()[1]);
    w.select(0, idx.reshape([n * k])).reshape([n, k, c])
}

/// Ones [n, 1], one per token of `a`: g for the operations above over a single column.
pub(crate) fn ones_column<B: Backend>(a: &Active<B>, device: &B::Device) -> FloatTensor<B> {
    let n = int::<B, 2>(a.idx.clone()).dims()[0];
    Tensor::<B, 2>::ones([n, 1], device).into_primitive().tensor()
}

/// A float primitive as a tensor.
pub(crate) fn float_tensor<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn int<B: Backend, const D: usize>(t: IntTensor<B>) -> Tensor<B, D, Int> {
    Tensor::from_primitive(t)
}

impl SparseOps for Flex {}

#[cfg(feature = "ndarray")]
impl SparseOps for burn::backend::NdArray {}

#[cfg(feature = "candle")]
#[allow(deprecated)]
impl SparseOps for burn::backend::Candle {}

/// Under autodiff the indices and the three operations are the inner backend's, untracked (the
/// trainer uses them only for counts); `decode` and `pick` are tracked, with backward passes made
/// of the same three.
impl<B: SparseOps, C: CheckpointStrategy> SparseOps for Autodiff<B, C> {
    fn active(idx: IntTensor<Self>, features: usize) -> Vec<Active<Self>> {
        B::active(idx, features).into_iter().map(Active::recast).collect()
    }

    fn rows_weighted_sum(z: FloatTensor<Self>, a: &Active<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::rows_weighted_sum(z.primitive, &inner(a), w.primitive))
    }

    fn rows_dot(g: FloatTensor<Self>, a: &Active<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::rows_dot(g.primitive, &inner(a), w.primitive))
    }

    fn rows_scatter(z: FloatTensor<Self>, a: &Active<Self>, g: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::rows_scatter(z.primitive, &inner(a), g.primitive))
    }

    fn positive_indices(score: FloatTensor<Self>, k: usize) -> IntTensor<Self> {
        B::positive_indices(score.primitive, k)
    }

    fn decode(z: FloatTensor<Self>, a: &Active<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct DecodeBackward;

        impl<B: SparseOps> Backward<B, 2> for DecodeBackward {
            /// z, the indices and w (the inner tensors are shared handles, not copies).
            type State = (FloatTensor<B>, Active<B>, FloatTensor<B>);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_z, node_w] = ops.parents;
                let g = grads.consume::<B>(&ops.node);
                let (z, a, w) = ops.state;
                if let Some(node) = node_w {
                    grads.register::<B>(node.id, B::rows_scatter(z, &a, g.clone()));
                }
                if let Some(node) = node_z {
                    grads.register::<B>(node.id, B::rows_dot(g, &a, w));
                }
            }
        }

        let a = inner(a);
        match DecodeBackward.prepare::<C>([z.node.clone(), w.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::rows_weighted_sum(z.primitive.clone(), &a, w.primitive.clone());
                prep.finish((z.primitive, a, w.primitive), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rows_weighted_sum(z.primitive, &a, w.primitive)),
        }
    }

    fn pick(w: FloatTensor<Self>, a: &Active<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct PickBackward;

        impl<B: SparseOps> Backward<B, 1> for PickBackward {
            type State = Active<B>;

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_w] = ops.parents;
                let g = grads.consume::<B>(&ops.node);
                let a = ops.state;
                if let Some(node) = node_w {
                    let ones = ones_column::<B>(&a, &float_tensor::<B, 2>(g.clone()).device());
                    let dw = float_tensor::<B, 2>(B::rows_scatter(g, &a, ones)).reshape([a.features]);
                    grads.register::<B>(node.id, dw.into_primitive().tensor());
                }
            }
        }

        let a = inner(a);
        match PickBackward.prepare::<C>([w.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::pick(w.primitive, &a);
                prep.finish(a, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::pick(w.primitive, &a)),
        }
    }
}

/// An autodiff backend's `Active` as its inner backend's.
fn inner<B: Backend, C: CheckpointStrategy>(a: &Active<Autodiff<B, C>>) -> Active<B> {
    a.clone().recast()
}
