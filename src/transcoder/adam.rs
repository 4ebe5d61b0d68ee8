//! Adam (Kingma & Ba 2015), dense: every parameter moves every step, as in the PyTorch reference.
//! A lazy variant that touches only the rows of active features was not needed: at L=4, d=64,
//! F=1024 the moments hold about a million floats each, and perf puts the whole update at a few
//! per cent of a step, far below the dense encoder product.

use rayon::prelude::*;

use super::clt::Transcoder;

pub(super) const BETA1: f32 = 0.9;
pub(super) const BETA2: f32 = 0.999;
pub(super) const EPS: f32 = 1e-8;
/// JumpReLU thresholds stay positive, or the feature stops being a jump.
pub(super) const MIN_THRESHOLD: f32 = 1e-4;

pub struct Adam {
    pub lr: f32,
    /// Steps taken, for the bias correction.
    pub step: u64,
    /// First and second moments, shaped like the parameters.
    pub m: Transcoder,
    pub v: Transcoder,
}

impl Adam {
    pub fn new(params: &Transcoder, lr: f32) -> Self {
        let mut m = params.clone();
        m.tensors_mut().into_iter().for_each(|t| t.fill(0.0));
        Self { lr, step: 0, v: m.clone(), m }
    }

    pub fn update(&mut self, params: &mut Transcoder, grad: &Transcoder) {
        self.step += 1;
        let t = self.step as i32;
        let lr_t = self.lr * (1.0 - BETA2.powi(t)).sqrt() / (1.0 - BETA1.powi(t));
        let (ms, vs, gs) = (self.m.tensors_mut(), self.v.tensors_mut(), grad.tensors());
        for (((p, m), v), (_, g)) in params.tensors_mut().into_iter().zip(ms).zip(vs).zip(gs) {
            p.par_chunks_mut(4096).zip(m.par_chunks_mut(4096)).zip(v.par_chunks_mut(4096)).zip(g.par_chunks(4096)).for_each(|(((p, m), v), g)| step(p, m, v, g, lr_t));
        }
        params.threshold.iter_mut().for_each(|t| *t = t.max(MIN_THRESHOLD));
    }
}

/// One Adam step of a chunk of parameters, compiled for AVX2 and AVX-512 too (`dense`'s comment says why);
/// zipped, not indexed, so that no bounds check stops it vectorising.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn step(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], lr_t: f32) {
    for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
        *m = BETA1 * *m + (1.0 - BETA1) * g;
        *v = BETA2 * *v + (1.0 - BETA2) * g * g;
        *p -= lr_t * *m / (v.sqrt() + EPS);
    }
}
