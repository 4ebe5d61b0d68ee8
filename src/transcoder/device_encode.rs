//! The transcoder's encoder on a burn device, for record and replacement runs on a GPU (`Encoder`
//! picks it where the model runs on one): W_enc, b_enc (and θ) uploaded once, the encoder product
//! and the selection made there (`autodiff::choose`, the trainer's), and only the kept entries read
//! back as `Codes`. It keeps what `Transcoder::encode` keeps: ReLU and JumpReLU what passes, TopK
//! the k largest positive values, BatchTopK the batch's n·k largest candidates per encoder. On the
//! CPU the hand-written encoder stays (its own GEMM in column blocks, selecting as it goes, never
//! holds the [tokens, F] pre-activations). At the LBLM study's
//! size (24 encoders × 8,192 features, d 512) the encoder costs ~200 MFLOP a step, more than the
//! model's own forward pass at that width (~150 MFLOP): it belongs where the model runs.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use super::activation::Codes;
use super::autodiff::{choose, is_gpu, Decoding};
use super::clt::{Shape, Transcoder};
use super::config::Activation;
use super::replacement::LayerEncoder;
use super::sparse::SparseOps;

pub struct DeviceEncoder<A: AutodiffBackend> {
    shape: Shape,
    activation: Activation,
    /// [E, d_in, F]
    w_enc: Tensor<A::InnerBackend, 3>,
    /// [E, F]
    b_enc: Tensor<A::InnerBackend, 2>,
    /// JumpReLU's θ [E, F].
    threshold: Option<Tensor<A::InnerBackend, 2>>,
}

impl<A: AutodiffBackend + SparseOps> DeviceEncoder<A> {
    pub fn new(tc: &Transcoder, device: &burn::tensor::Device<A::InnerBackend>) -> Self {
        let s = tc.shape;
        let (e_n, f_n) = (s.encoders(), s.features);
        let upload = |v: &[f32], shape: [usize; 2]| Tensor::<A::InnerBackend, 2>::from_data(TensorData::new(v.to_vec(), shape), device);
        DeviceEncoder {
            shape: s,
            activation: tc.activation,
            w_enc: upload(&tc.w_enc, [e_n * s.d_in(), f_n]).reshape([e_n, s.d_in(), f_n]),
            b_enc: upload(&tc.b_enc, [e_n, f_n]),
            threshold: (!tc.threshold.is_empty()).then(|| upload(&tc.threshold, [e_n, f_n])),
        }
    }

    /// Codes of x [n, L·d] (token-major, as `Transcoder::encode` reads it): row token·E + e, each
    /// row's entries in feature order.
    pub fn encode(&self, x: Tensor<A::InnerBackend, 2>) -> Codes {
        let s = self.shape;
        let (n, e_n) = (x.dims()[0], s.encoders());
        let x = x.reshape([n, e_n, s.d_in()]).swap_dims(0, 1);
        self.encode_encoders(x, self.w_enc.clone(), self.b_enc.clone(), self.threshold.clone())
    }

    /// Codes of encoder `e` alone from its input x [n, d_in] on the host: row t per token.
    fn encode_one(&self, e: usize, x: &[f32]) -> Codes {
        let (d_in, f_n) = (self.shape.d_in(), self.shape.features);
        let n = x.len() / d_in;
        let x = Tensor::<A::InnerBackend, 2>::from_data(TensorData::new(x.to_vec(), [n, d_in]), &self.w_enc.device()).reshape([1, n, d_in]);
        let one = |t: &Tensor<A::InnerBackend, 2>| t.clone().slice([e..e + 1, 0..f_n]);
        self.encode_encoders(x, self.w_enc.clone().slice([e..e + 1, 0..d_in, 0..f_n]), one(&self.b_enc), self.threshold.as_ref().map(one))
    }

    /// Codes of x [E', n, d_in] through the encoders w [E', d_in, F], b [E', F] (θ [E', F]):
    /// row token·E' + e.
    fn encode_encoders(
        &self,
        x: Tensor<A::InnerBackend, 3>,
        w: Tensor<A::InnerBackend, 3>,
        b: Tensor<A::InnerBackend, 2>,
        threshold: Option<Tensor<A::InnerBackend, 2>>,
    ) -> Codes {
        let [e_n, n, _] = x.dims();
        let pre = x.matmul(w) + b.reshape([e_n, 1, self.shape.features]);
        let chosen = choose::<A>(&pre, threshold, &self.activation, n, Decoding::Gather, false);
        let idx = chosen.idx.expect("a gathered selection lists its features");
        let k = idx.dims()[2];
        let value = pre.gather(2, idx.clone()).into_data().convert::<f32>().into_vec::<f32>().expect("f32 codes");
        let keep = chosen.keep.into_data().convert::<bool>().into_vec::<bool>().expect("bool mask");
        let idx = idx.into_data().convert::<i64>().into_vec::<i64>().expect("indices");
        let mut codes = Codes::with_capacity(n * e_n, keep.iter().filter(|&&k| k).count());
        let mut row = Vec::with_capacity(k);
        for t in 0..n {
            for e in 0..e_n {
                let at = (e * n + t) * k;
                row.clear();
                row.extend((at..at + k).filter(|&j| keep[j]).map(|j| (idx[j] as usize, value[j])));
                row.sort_unstable_by_key(|&(f, _)| f); // top-k lists by value
                row.iter().for_each(|&(f, v)| codes.push(f, v, v));
                codes.end_row();
            }
        }
        codes
    }
}

/// A transcoder's encoder where the model runs: on a GPU backend the device encoder, elsewhere
/// the hand-written one.
pub enum Encoder<'a, A: AutodiffBackend> {
    Cpu(&'a Transcoder),
    Device(DeviceEncoder<A>),
}

impl<'a, A: AutodiffBackend + SparseOps> Encoder<'a, A> {
    pub fn new(tc: &'a Transcoder, device: &burn::tensor::Device<A::InnerBackend>) -> Self {
        if is_gpu::<A::InnerBackend>() { Encoder::Device(DeviceEncoder::new(tc, device)) } else { Encoder::Cpu(tc) }
    }

    /// `Transcoder::encode` of x [n, L·d], on the device where there is one.
    pub fn encode(&self, x: Tensor<A::InnerBackend, 2>) -> Codes {
        match self {
            Encoder::Device(encoder) => encoder.encode(x),
            Encoder::Cpu(tc) => tc.encode(&x.into_data().convert::<f32>().into_vec::<f32>().expect("f32 activations")),
        }
    }
}

impl<A: AutodiffBackend + SparseOps> LayerEncoder for Encoder<'_, A> {
    fn encode_layer(&self, e: usize, x: &[f32]) -> Codes {
        match self {
            Encoder::Device(encoder) => encoder.encode_one(e, x),
            Encoder::Cpu(tc) => tc.encode_layer(e, x),
        }
    }
}
