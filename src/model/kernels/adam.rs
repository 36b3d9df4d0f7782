//! One Adam/AdamW update of a parameter and its moments, on the CPU in one parallel sweep
//! and in place where the buffers are not shared.

use burn::tensor::DType;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::simd::{CHUNK, owned_contiguous, simd_dispatch};

/// Hyper-parameters of one `Kernels::adam_step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// Decay rate of the first-moment (mean) estimate.
    pub beta1: f64,
    /// Decay rate of the second-moment (uncentred variance) estimate.
    pub beta2: f64,
    /// Added to the bias-corrected `sqrt(v)` in the denominator.
    pub eps: f64,
    /// Weight-decay coefficient (0: none); see `decoupled`.
    pub weight_decay: f64,
    /// AdamW (decay the weights) rather than Adam (L2 term added to the gradient).
    pub decoupled: bool,
    /// 1 for the first update.
    pub step: usize,
}

impl AdamStep {
    /// Bias corrections `(1 − β1^t, 1 − β2^t)`.
    pub fn corrections(&self) -> (f64, f64) {
        (
            1.0 - self.beta1.powi(self.step as i32),
            1.0 - self.beta2.powi(self.step as i32),
        )
    }
}

// `k` = [β1, β2, 1−β1, 1−β2, L2 coefficient, decoupled decay factor, lr/c1, 1/sqrt(c2), eps]
simd_dispatch!(adam_slice, (p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &[f32; 9]), {
    let [b1, b2, nb1, nb2, l2, keep, step_size, inv_sqrt_c2, eps] = *k;
    for i in 0..p.len() {
        let gi = g[i] + l2 * p[i];
        let mi = b1 * m[i] + nb1 * gi;
        let vi = b2 * v[i] + nb2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * keep - step_size * mi / (vi.sqrt() * inv_sqrt_c2 + eps);
    }
});

/// Whether [`step`] handles these tensors: all `f32` and of one shape. Checked before the
/// tensors are handed over, so that they arrive unshared and can be updated in place.
pub(super) fn fits(p: &FlexTensor, g: &FlexTensor, m: &FlexTensor, v: &FlexTensor) -> bool {
    let shape = p.layout().shape();
    [p, g, m, v]
        .iter()
        .all(|t| t.dtype() == DType::F32 && t.layout().shape() == shape)
}

/// `(param, m, v)` after one Adam(W) update, in one parallel sweep over the elements, in
/// place where the buffers are not shared (copy-on-write otherwise). The tensors must
/// [`fits`].
pub(super) fn step(
    p: FlexTensor,
    g: FlexTensor,
    m: FlexTensor,
    v: FlexTensor,
    h: &AdamStep,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    debug_assert!(fits(&p, &g, &m, &v));
    let (mut p, g, mut m, mut v) = (
        owned_contiguous(p),
        owned_contiguous(g),
        owned_contiguous(m),
        owned_contiguous(v),
    );
    let (c1, c2) = h.corrections();
    let (l2, keep) = if h.decoupled {
        (0.0, (1.0 - h.lr * h.weight_decay) as f32)
    } else {
        (h.weight_decay as f32, 1.0)
    };
    let (b1, b2) = (h.beta1 as f32, h.beta2 as f32);
    let k = [
        b1,
        b2,
        1.0 - b1,
        1.0 - b2,
        l2,
        keep,
        (h.lr / c1) as f32,
        (1.0 / c2.sqrt()) as f32,
        h.eps as f32,
    ];
    let gd = g.storage::<f32>();
    let (pd, md, vd) = (
        p.storage_mut::<f32>(),
        m.storage_mut::<f32>(),
        v.storage_mut::<f32>(),
    );
    pd.par_chunks_mut(CHUNK)
        .zip(gd.par_chunks(CHUNK))
        .zip(md.par_chunks_mut(CHUNK).zip(vd.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| adam_slice(p, g, m, v, &k));
    (p, m, v)
}
