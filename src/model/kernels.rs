//! Fused kernels the BERT forward and backward passes spend most of their non-matmul time in,
//! as a burn backend extension (the pattern burn documents for custom operations).
//!
//! Every backend gets a default that composes burn's own tensor ops, so the model stays generic
//! (CUDA uses these). The CPU backend (Flex) gets one-pass, SIMD-friendly loops that run on all
//! cores: measured on a training step, burn-flex spent 11% of the time in scalar `erf` (GELU),
//! 11% permuting attention heads element by element, and 7% in scalar `exp` (softmax). The
//! autodiff backend wraps each kernel with its exact gradient.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ActivationOps, FloatTensor};
use burn::tensor::{Shape, TensorMetadata};

/// A burn backend with ptune's fused kernels.
pub trait Kernels: Backend {
    /// Exact GELU, `x Φ(x)` (transformers' `"gelu"`).
    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }

    /// `grad · (Φ(x) + x φ(x))`.
    fn gelu_exact_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu_backward(x, grad)
    }

    /// Softmax over the last axis of `scores + bias` (`bias` broadcast over the leading axes,
    /// e.g. `[batch, 1, 1, len]` against `[batch, heads, len, len]`).
    fn softmax_with_bias(scores: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::softmax_with_bias::<Self>(scores, bias)
    }

    /// Gradient of the softmax w.r.t. its input, from its output `y`: `y (g − Σ g y)`.
    fn softmax_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::softmax_backward::<Self>(y, grad)
    }

    /// LayerNorm over the last axis: `(x − mean) / sqrt(var + eps) · weight + bias`.
    fn layer_norm_fused(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(x, weight, Some(bias), eps)
    }

    /// Gradients of [`Kernels::layer_norm_fused`] w.r.t. `x`, `weight` and `bias`, given the
    /// output gradient `dy` (statistics recomputed from `x`).
    fn layer_norm_fused_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed::layer_norm_backward::<Self>(x, weight, dy, eps)
    }

    /// One Adam/AdamW update of a parameter, exactly as torch.optim.Adam(W) computes it:
    /// returns the new parameter and moments. `h.step` counts from 1.
    fn adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        h: &AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed::adam_step::<Self>(param, grad, m, v, h)
    }

    /// `x` times the dropout mask of `seed` (see [`super::dropout::dropout_mask`]). Linear in
    /// `x`, so the same call with the same seed is its own backward pass.
    fn dropout(x: FloatTensor<Self>, prob: f64, seed: u64) -> FloatTensor<Self> {
        composed::dropout::<Self>(x, prob, seed)
    }

    /// `[batch, heads, len, head_dim]` → `[batch, len, heads · head_dim]` (contiguous).
    fn merge_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::merge_heads::<Self>(x)
    }
}

/// The kernels composed from burn's tensor ops: every backend's default, and the CPU kernels'
/// fallback for layouts or dtypes they do not handle.
mod composed {
    use burn::tensor::backend::Backend;
    use burn::tensor::ops::FloatTensor;
    use burn::tensor::{Shape, TensorMetadata};

    use super::AdamStep;

    pub fn softmax_with_bias<B: Backend>(
        scores: FloatTensor<B>,
        bias: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let x = B::float_add(scores, bias);
        let last = x.shape().num_dims() - 1;
        let max = B::float_max_dim(x.clone(), last);
        let e = B::float_exp(B::float_sub(x, max));
        let sum = B::float_sum_dim(e.clone(), last);
        B::float_div(e, sum)
    }

    pub fn softmax_backward<B: Backend>(y: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
        let last = y.shape().num_dims() - 1;
        let dot = B::float_sum_dim(B::float_mul(grad.clone(), y.clone()), last);
        B::float_mul(y, B::float_sub(grad, dot))
    }

    pub fn layer_norm_backward<B: Backend>(
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        dy: FloatTensor<B>,
        eps: f64,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        let shape = x.shape();
        let last = shape.num_dims() - 1;
        let h = shape[last];
        let rows = shape.num_elements() / h;
        let flat = |t: FloatTensor<B>| B::float_reshape(t, Shape::new([rows, h]));
        let (x, dy) = (flat(x), flat(dy));
        let mean = B::float_mean_dim(x.clone(), 1);
        let xc = B::float_sub(x, mean);
        let var = B::float_mean_dim(B::float_mul(xc.clone(), xc.clone()), 1);
        let rstd = B::float_recip(B::float_sqrt(B::float_add_scalar(var, (eps as f32).into())));
        let xhat = B::float_mul(xc, rstd.clone());
        let g = B::float_mul(dy.clone(), B::float_reshape(weight, Shape::new([1, h])));
        let mg = B::float_mean_dim(g.clone(), 1);
        let mgx = B::float_mean_dim(B::float_mul(g.clone(), xhat.clone()), 1);
        let dx = B::float_mul(
            rstd,
            B::float_sub(B::float_sub(g, mg), B::float_mul(xhat.clone(), mgx)),
        );
        let dweight = B::float_reshape(
            B::float_sum_dim(B::float_mul(dy.clone(), xhat), 0),
            Shape::new([h]),
        );
        let dbias = B::float_reshape(B::float_sum_dim(dy, 0), Shape::new([h]));
        (B::float_reshape(dx, shape), dweight, dbias)
    }

    pub fn adam_step<B: Backend>(
        param: FloatTensor<B>,
        grad: FloatTensor<B>,
        m: FloatTensor<B>,
        v: FloatTensor<B>,
        h: &AdamStep,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        let (b1, b2) = (h.beta1 as f32, h.beta2 as f32);
        let (mut param, mut grad) = (param, grad);
        if h.weight_decay > 0.0 {
            if h.decoupled {
                param = B::float_mul_scalar(param, (1.0 - h.lr * h.weight_decay).into());
            } else {
                grad = B::float_add(
                    grad,
                    B::float_mul_scalar(param.clone(), (h.weight_decay as f32).into()),
                );
            }
        }
        let m = B::float_add(
            B::float_mul_scalar(m, b1.into()),
            B::float_mul_scalar(grad.clone(), (1.0 - b1).into()),
        );
        let v = B::float_add(
            B::float_mul_scalar(v, b2.into()),
            B::float_mul_scalar(B::float_mul(grad.clone(), grad), (1.0 - b2).into()),
        );
        let (c1, c2) = h.corrections();
        let denom = B::float_add_scalar(
            B::float_mul_scalar(B::float_sqrt(v.clone()), (1.0 / c2.sqrt()).into()),
            (h.eps as f32).into(),
        );
        let update = B::float_mul_scalar(B::float_div(m.clone(), denom), (h.lr / c1).into());
        (B::float_sub(param, update), m, v)
    }

    /// The mask made on the host, then one multiply on the device.
    pub fn dropout<B: Backend>(x: FloatTensor<B>, prob: f64, seed: u64) -> FloatTensor<B> {
        let shape = x.shape();
        let mut mask = vec![0.0f32; shape.num_elements()];
        crate::model::dropout::dropout_mask(seed, prob, 0, &mut mask);
        let device = B::float_device(&x);
        let mask = B::float_from_data(burn::tensor::TensorData::new(mask, shape), &device);
        B::float_mul(x, mask)
    }

    pub fn merge_heads<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
        let s = x.shape();
        let (b, nh, l, hd) = (s[0], s[1], s[2], s[3]);
        B::float_reshape(B::float_swap_dims(x, 1, 2), Shape::new([b, l, nh * hd]))
    }
}

/// Hyper-parameters of one [`Kernels::adam_step`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
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

#[cfg(feature = "cuda")]
impl Kernels for burn::backend::Cuda {}

/// A backend for training: autodiff with the kernels, over an inner backend with them.
pub trait TrainBackend:
    burn::tensor::backend::AutodiffBackend<InnerBackend: Kernels> + Kernels
{
}

impl<B> TrainBackend for B where
    B: burn::tensor::backend::AutodiffBackend<InnerBackend: Kernels> + Kernels
{
}

/// The CPU kernels. Written as plain loops over contiguous rows so that the compiler
/// vectorises them (AVX-512 when the CPU has it, chosen at run time), and split over rayon's
/// threads for large tensors.
mod cpu {
    use burn::tensor::{DType, Shape, TensorData};
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    /// Elements per parallel task; below one task's worth a kernel runs on the caller's thread.
    const CHUNK: usize = 1 << 14;

    fn contiguous_f32(t: &FlexTensor) -> Option<FlexTensor> {
        (t.dtype() == DType::F32).then(|| t.to_contiguous())
    }

    fn from_vec(data: Vec<f32>, shape: Shape) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(data, shape))
    }

    /// `exp` for `x ≤ 88`: 2^k · p(r) with x = k ln2 + r, |r| ≤ ln2/2, p a degree-7 Taylor
    /// polynomial (relative error < 1e-8 before rounding). Branch-free, so loops vectorise.
    #[inline(always)]
    pub(super) fn exp(x: f32) -> f32 {
        let x = x.max(-87.0);
        let k = (x * std::f32::consts::LOG2_E).round();
        let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
        let p = 1.0
            + r * (1.0
                + r * (0.5
                    + r * (1.0 / 6.0
                        + r * (1.0 / 24.0
                            + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
        p * f32::from_bits(((k as i32 + 127) as u32) << 23)
    }

    /// `erf(z)` as `z P(z²) / Q(z²)` on `[-4, 4]` (and ±1 beyond, where erf is 1 to within
    /// 1.5e-8): a degree-5/5 rational fit made for this kernel by weighted least squares on
    /// Chebyshev nodes; max abs error 3.7e-7 when evaluated in f32. A dozen FMAs and one
    /// division, no `exp`, so it vectorises to a handful of AVX-512 instructions.
    #[inline(always)]
    #[allow(clippy::approx_constant)] // P[0] is the fitted value, 1 ulp from 2/sqrt(pi)
    fn erf(z: f32) -> f32 {
        const P: [f32; 6] = [
            1.128_379_1,
            0.194_366_62,
            0.053_214_457,
            0.003_921_289,
            0.000_285_894_95,
            1.985_711e-6,
        ];
        const Q: [f32; 6] = [
            1.0,
            0.505_584_84,
            0.115_694_13,
            0.015_280_583,
            0.001_195_793_9,
            3.748_076_8e-5,
        ];
        let z = z.clamp(-4.0, 4.0);
        let t = z * z;
        let p = P[0] + t * (P[1] + t * (P[2] + t * (P[3] + t * (P[4] + t * P[5]))));
        let q = Q[0] + t * (Q[1] + t * (Q[2] + t * (Q[3] + t * (Q[4] + t * Q[5]))));
        z * p / q
    }

    /// `Φ(x)`, the standard normal CDF.
    #[inline(always)]
    fn normal_cdf(x: f32) -> f32 {
        0.5 + 0.5 * erf(x * std::f32::consts::FRAC_1_SQRT_2)
    }

    #[inline(always)]
    fn gelu_one(x: f32) -> f32 {
        x * normal_cdf(x)
    }

    #[inline(always)]
    fn gelu_grad_one(x: f32, g: f32) -> f32 {
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        g * (normal_cdf(x) + x * INV_SQRT_2PI * exp(-0.5 * x * x))
    }

    /// Runs `body` on `x86-64-v4` code when the CPU has AVX-512, else on baseline code.
    macro_rules! simd_dispatch {
        ($name:ident, ($($arg:ident: $ty:ty),*), $body:block) => {
            fn $name($($arg: $ty),*) {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,bmi2")]
                    unsafe fn wide($($arg: $ty),*) $body
                    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512dq") {
                        // SAFETY: the CPU supports the enabled features (checked above).
                        return unsafe { wide($($arg),*) };
                    }
                }
                $body
            }
        };
    }

    simd_dispatch!(gelu_slice, (src: &[f32], dst: &mut [f32]), {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = gelu_one(x);
        }
    });

    simd_dispatch!(gelu_grad_slice, (x: &[f32], g: &[f32], dst: &mut [f32]), {
        for ((d, &x), &g) in dst.iter_mut().zip(x).zip(g) {
            *d = gelu_grad_one(x, g);
        }
    });

    /// Lanes of the partial maxima/sums below: float reductions only vectorise when written
    /// as independent lanes (the compiler may not reorder a single running sum).
    const LANES: usize = 16;

    #[inline(always)]
    fn lane_max(v: &[f32]) -> f32 {
        let mut m = [f32::NEG_INFINITY; LANES];
        let mut chunks = v.chunks_exact(LANES);
        for c in &mut chunks {
            for j in 0..LANES {
                m[j] = if c[j] > m[j] { c[j] } else { m[j] };
            }
        }
        let tail = chunks
            .remainder()
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        m.iter().copied().fold(tail, f32::max)
    }

    #[inline(always)]
    fn lane_sum(v: &[f32]) -> f32 {
        let mut acc = [0.0f32; LANES];
        let mut chunks = v.chunks_exact(LANES);
        for c in &mut chunks {
            for j in 0..LANES {
                acc[j] += c[j];
            }
        }
        acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
    }

    // One softmax row of `scores + bias` written to `dst`.
    simd_dispatch!(softmax_row, (scores: &[f32], bias: &[f32], dst: &mut [f32]), {
        for (d, (&s, &b)) in dst.iter_mut().zip(scores.iter().zip(bias)) {
            *d = s + b;
        }
        let max = lane_max(dst);
        for d in dst.iter_mut() {
            *d = exp(*d - max);
        }
        let inv = 1.0 / lane_sum(dst);
        for d in dst.iter_mut() {
            *d *= inv;
        }
    });

    simd_dispatch!(softmax_grad_row, (y: &[f32], g: &[f32], dst: &mut [f32]), {
        for ((d, &y), &g) in dst.iter_mut().zip(y).zip(g) {
            *d = y * g;
        }
        let dot = lane_sum(dst);
        for ((d, &y), &g) in dst.iter_mut().zip(y).zip(g) {
            *d = y * (g - dot);
        }
    });

    pub fn gelu(x: FlexTensor) -> Option<FlexTensor> {
        let x = contiguous_f32(&x)?;
        let src = x.storage::<f32>();
        let mut out = vec![0.0f32; src.len()];
        out.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| gelu_slice(s, d));
        Some(from_vec(out, x.layout().shape().clone()))
    }

    pub fn gelu_backward(x: FlexTensor, grad: FlexTensor) -> Option<FlexTensor> {
        let (x, g) = (contiguous_f32(&x)?, contiguous_f32(&grad)?);
        if x.layout().shape() != g.layout().shape() {
            return None;
        }
        let (xs, gs) = (x.storage::<f32>(), g.storage::<f32>());
        let mut out = vec![0.0f32; xs.len()];
        out.par_chunks_mut(CHUNK)
            .zip(xs.par_chunks(CHUNK).zip(gs.par_chunks(CHUNK)))
            .for_each(|(d, (x, g))| gelu_grad_slice(x, g, d));
        Some(from_vec(out, x.layout().shape().clone()))
    }

    /// `scores` `[..., rows, n]`, `bias` `[b, 1, 1, n]` against `scores` `[b, h, q, n]`.
    pub fn softmax_with_bias(scores: FlexTensor, bias: FlexTensor) -> Option<FlexTensor> {
        let s = contiguous_f32(&scores)?;
        let b = contiguous_f32(&bias)?;
        let shape = s.layout().shape().clone();
        let bshape = b.layout().shape().clone();
        if shape.num_dims() != 4
            || bshape.num_dims() != 4
            || bshape[1] != 1
            || bshape[2] != 1
            || bshape[3] != shape[3]
        {
            return None;
        }
        if bshape[0] != shape[0] && bshape[0] != 1 {
            return None;
        }
        let (n, rows_per_batch) = (shape[3], shape[1] * shape[2]);
        let (src, bias_data) = (s.storage::<f32>(), b.storage::<f32>());
        let mut out = vec![0.0f32; src.len()];
        let rows_per_task = (CHUNK / n.max(1)).max(1);
        out.par_chunks_mut(rows_per_task * n)
            .enumerate()
            .for_each(|(task, dst)| {
                let first_row = task * rows_per_task;
                for (i, d) in dst.chunks_mut(n).enumerate() {
                    let row = first_row + i;
                    let batch = if bshape[0] == 1 {
                        0
                    } else {
                        row / rows_per_batch
                    };
                    softmax_row(
                        &src[row * n..(row + 1) * n],
                        &bias_data[batch * n..(batch + 1) * n],
                        d,
                    );
                }
            });
        Some(from_vec(out, shape))
    }

    pub fn softmax_backward(y: FlexTensor, grad: FlexTensor) -> Option<FlexTensor> {
        let (y, g) = (contiguous_f32(&y)?, contiguous_f32(&grad)?);
        let shape = y.layout().shape().clone();
        if &shape != g.layout().shape() {
            return None;
        }
        let n = shape[shape.num_dims() - 1].max(1);
        let (ys, gs) = (y.storage::<f32>(), g.storage::<f32>());
        let mut out = vec![0.0f32; ys.len()];
        let rows_per_task = (CHUNK / n).max(1);
        out.par_chunks_mut(rows_per_task * n)
            .zip(
                ys.par_chunks(rows_per_task * n)
                    .zip(gs.par_chunks(rows_per_task * n)),
            )
            .for_each(|(d, (y, g))| {
                for ((d, y), g) in d.chunks_mut(n).zip(y.chunks(n)).zip(g.chunks(n)) {
                    softmax_grad_row(y, g, d);
                }
            });
        Some(from_vec(out, shape))
    }

    simd_dispatch!(layer_norm_grad_row, (x: &[f32], w: &[f32], dy: &[f32], eps: f32, dx: &mut [f32], dw: &mut [f32], db: &mut [f32]), {
        let n = x.len() as f32;
        let mean = lane_sum(x) / n;
        for (d, &x) in dx.iter_mut().zip(x) {
            *d = (x - mean) * (x - mean);
        }
        let rstd = 1.0 / (lane_sum(dx) / n + eps).sqrt();
        // dx temporarily holds g = dy·w, then g·x̂ for the two row means
        for ((d, &dy), &w) in dx.iter_mut().zip(dy).zip(w) {
            *d = dy * w;
        }
        let mg = lane_sum(dx) / n;
        for (d, &x) in dx.iter_mut().zip(x) {
            *d *= (x - mean) * rstd;
        }
        let mgx = lane_sum(dx) / n;
        for i in 0..x.len() {
            let xhat = (x[i] - mean) * rstd;
            dw[i] += dy[i] * xhat;
            db[i] += dy[i];
            dx[i] = rstd * (dy[i] * w[i] - mg - xhat * mgx);
        }
    });

    /// `(dx, dweight, dbias)`; the weight and bias gradients are summed per fixed block of rows,
    /// then over blocks in order, so the result does not depend on thread scheduling.
    pub fn layer_norm_backward(
        x: FlexTensor,
        w: FlexTensor,
        dy: FlexTensor,
        eps: f64,
    ) -> Option<(FlexTensor, FlexTensor, FlexTensor)> {
        let (x, w, dy) = (
            contiguous_f32(&x)?,
            contiguous_f32(&w)?,
            contiguous_f32(&dy)?,
        );
        let shape = x.layout().shape().clone();
        let h = *shape.last()?;
        if dy.layout().shape() != &shape || w.layout().shape().num_elements() != h || h == 0 {
            return None;
        }
        let (xs, ws, dys) = (x.storage::<f32>(), w.storage::<f32>(), dy.storage::<f32>());
        let mut dx = vec![0.0f32; xs.len()];
        let rows_per_task = (CHUNK / h).max(1);
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(rows_per_task * h)
            .enumerate()
            .map(|(task, dx)| {
                let (mut dw, mut db) = (vec![0.0f32; h], vec![0.0f32; h]);
                let start = task * rows_per_task * h;
                for (r, dxr) in dx.chunks_mut(h).enumerate() {
                    let o = start + r * h;
                    layer_norm_grad_row(
                        &xs[o..o + h],
                        ws,
                        &dys[o..o + h],
                        eps as f32,
                        dxr,
                        &mut dw,
                        &mut db,
                    );
                }
                (dw, db)
            })
            .collect();
        let (mut dw, mut db) = (vec![0.0f32; h], vec![0.0f32; h]);
        for (pw, pb) in partials {
            for i in 0..h {
                dw[i] += pw[i];
                db[i] += pb[i];
            }
        }
        Some((
            from_vec(dx, shape),
            from_vec(dw, Shape::new([h])),
            from_vec(db, Shape::new([h])),
        ))
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

    /// `t` itself when it is a plain contiguous buffer (so it can be updated in place when no
    /// one else holds it), else a contiguous copy.
    fn owned_contiguous(t: FlexTensor) -> FlexTensor {
        let full =
            t.layout().start_offset() == 0 && t.bytes().len() == t.layout().num_elements() * 4;
        if t.is_contiguous() && full {
            t
        } else {
            t.to_contiguous()
        }
    }

    /// `(param, m, v)` after one Adam(W) update, in one parallel sweep over the elements, in
    /// place where the buffers are not shared (copy-on-write otherwise).
    pub fn adam_step(
        p: FlexTensor,
        g: FlexTensor,
        m: FlexTensor,
        v: FlexTensor,
        h: &super::AdamStep,
    ) -> Option<(FlexTensor, FlexTensor, FlexTensor)> {
        let shape = p.layout().shape().clone();
        if [&p, &g, &m, &v]
            .iter()
            .any(|t| t.dtype() != DType::F32 || t.layout().shape() != &shape)
        {
            return None;
        }
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
        Some((p, m, v))
    }

    pub fn dropout(x: FlexTensor, prob: f64, seed: u64) -> Option<FlexTensor> {
        use crate::model::dropout::{MASK_BLOCK, dropout_mask};
        let x = contiguous_f32(&x)?;
        let src = x.storage::<f32>();
        let mut out = vec![0.0f32; src.len()];
        out.par_chunks_mut(MASK_BLOCK)
            .zip(src.par_chunks(MASK_BLOCK))
            .enumerate()
            .for_each(|(i, (d, s))| {
                dropout_mask(seed, prob, i * MASK_BLOCK, d);
                for (d, &s) in d.iter_mut().zip(s) {
                    *d *= s;
                }
            });
        Some(from_vec(out, x.layout().shape().clone()))
    }

    pub fn merge_heads(x: FlexTensor) -> Option<FlexTensor> {
        let x = contiguous_f32(&x)?;
        let s = x.layout().shape().clone();
        if s.num_dims() != 4 {
            return None;
        }
        let (b, nh, l, hd) = (s[0], s[1], s[2], s[3]);
        let src = x.storage::<f32>();
        let mut out = vec![0.0f32; src.len()];
        let h = nh * hd;
        // one task per batch row: out[b, i, n, :] = src[b, n, i, :]
        out.par_chunks_mut(l * h).enumerate().for_each(|(bi, dst)| {
            for n in 0..nh {
                for i in 0..l {
                    let from = ((bi * nh + n) * l + i) * hd;
                    dst[i * h + n * hd..i * h + (n + 1) * hd]
                        .copy_from_slice(&src[from..from + hd]);
                }
            }
        });
        Some(from_vec(out, Shape::new([b, l, h])))
    }
}

impl Kernels for burn::backend::Flex {
    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        cpu::gelu(x.clone()).unwrap_or_else(|| Self::gelu(x))
    }

    fn gelu_exact_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        cpu::gelu_backward(x.clone(), grad.clone()).unwrap_or_else(|| Self::gelu_backward(x, grad))
    }

    fn softmax_with_bias(scores: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        cpu::softmax_with_bias(scores.clone(), bias.clone())
            .unwrap_or_else(|| composed::softmax_with_bias::<Self>(scores, bias))
    }

    fn softmax_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        cpu::softmax_backward(y.clone(), grad.clone())
            .unwrap_or_else(|| composed::softmax_backward::<Self>(y, grad))
    }

    fn layer_norm_fused_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        cpu::layer_norm_backward(x.clone(), weight.clone(), dy.clone(), eps)
            .unwrap_or_else(|| composed::layer_norm_backward::<Self>(x, weight, dy, eps))
    }

    fn adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        h: &AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // checked first, so the buffers are handed over unshared and can be updated in place
        let f32_params = [&param, &grad, &m, &v]
            .iter()
            .all(|t| t.dtype() == burn::tensor::DType::F32);
        match f32_params {
            true => cpu::adam_step(param, grad, m, v, h).expect("f32 tensors of one shape"),
            false => composed::adam_step::<Self>(param, grad, m, v, h),
        }
    }

    fn dropout(x: FloatTensor<Self>, prob: f64, seed: u64) -> FloatTensor<Self> {
        cpu::dropout(x.clone(), prob, seed)
            .unwrap_or_else(|| composed::dropout::<Self>(x, prob, seed))
    }

    fn merge_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        cpu::merge_heads(x.clone()).unwrap_or_else(|| composed::merge_heads::<Self>(x))
    }
}

/// A one-input op whose gradient is `backward(saved, grad)` from one saved tensor (GELU saves
/// its input, softmax its output).
#[derive(Debug)]
struct SavedTensorBackward<B: Backend> {
    backward: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
}

impl<B: Kernels> Backward<B, 1> for SavedTensorBackward<B> {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            (self.backward)(saved, grad)
        });
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl<B: Kernels> Backward<B, 3> for LayerNormBackward {
    /// Input, weight, epsilon.
    type State = (FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, weight, eps) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let [node_x, node_w, node_b] = ops.parents;
        let (dx, dw, db) = B::layer_norm_fused_backward(x, weight, dy, eps);
        if let Some(n) = node_x {
            grads.register::<B>(n.id, dx);
        }
        if let Some(n) = node_w {
            grads.register::<B>(n.id, dw);
        }
        if let Some(n) = node_b {
            grads.register::<B>(n.id, db);
        }
    }
}

#[derive(Debug)]
struct DropoutBackward;

impl<B: Kernels> Backward<B, 1> for DropoutBackward {
    /// Probability and seed: the mask is regenerated, not stored.
    type State = (f64, u64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (prob, seed) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::dropout(grad, prob, seed)
        });
    }
}

#[derive(Debug)]
struct MergeHeadsBackward;

impl<B: Kernels> Backward<B, 1> for MergeHeadsBackward {
    /// `[batch, heads, len, head_dim]` of the input.
    type State = [usize; 4];

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [b, nh, l, hd] = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::float_swap_dims(B::float_reshape(grad, Shape::new([b, l, nh, hd])), 1, 2)
        });
    }
}

impl<B: Kernels, C: CheckpointStrategy> Kernels for Autodiff<B, C> {
    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let backward = SavedTensorBackward::<B> {
            backward: B::gelu_exact_backward,
        };
        match backward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::gelu_exact(x.primitive.clone());
                prep.finish(x.primitive, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gelu_exact(x.primitive)),
        }
    }

    /// The scores are tracked; the bias (the padding mask) is a constant.
    fn softmax_with_bias(scores: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let backward = SavedTensorBackward::<B> {
            backward: B::softmax_backward,
        };
        match backward
            .prepare::<C>([scores.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::softmax_with_bias(scores.primitive, bias.primitive);
                prep.finish(out.clone(), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::softmax_with_bias(scores.primitive, bias.primitive))
            }
        }
    }

    fn layer_norm_fused(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let nodes = [x.node.clone(), weight.node.clone(), bias.node.clone()];
        match LayerNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::layer_norm_fused(
                    x.primitive.clone(),
                    weight.primitive.clone(),
                    bias.primitive,
                    eps,
                );
                prep.finish((x.primitive, weight.primitive, eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::layer_norm_fused(
                x.primitive,
                weight.primitive,
                bias.primitive,
                eps,
            )),
        }
    }

    fn dropout(x: FloatTensor<Self>, prob: f64, seed: u64) -> FloatTensor<Self> {
        match DropoutBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                prep.finish((prob, seed), B::dropout(x.primitive, prob, seed))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::dropout(x.primitive, prob, seed)),
        }
    }

    fn merge_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let s = x.primitive.shape();
        let dims = [s[0], s[1], s[2], s[3]];
        match MergeHeadsBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(dims, B::merge_heads(x.primitive)),
            OpsKind::UnTracked(prep) => prep.finish(B::merge_heads(x.primitive)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cpu, CpuTrain};
    use burn::tensor::activation::{gelu, softmax};
    use burn::tensor::{Distribution, Tensor, TensorData, TensorPrimitive};

    fn apply<B: Kernels, const D: usize>(
        f: fn(FloatTensor<B>) -> FloatTensor<B>,
        x: Tensor<B, D>,
    ) -> Tensor<B, D> {
        Tensor::from_primitive(TensorPrimitive::Float(f(x.into_primitive().tensor())))
    }

    fn max_diff<const D: usize>(a: Tensor<Cpu, D>, b: Tensor<Cpu, D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    #[test]
    fn exp_is_accurate() {
        for i in -8700..=880 {
            let x = i as f32 / 10.0;
            let (got, want) = (cpu::exp(x), x.exp());
            assert!(
                (got - want).abs() <= want * 3e-7 + 1e-37,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn kernels_match_burn_ops() {
        let dev = Default::default();
        let x = Tensor::<Cpu, 3>::random([3, 17, 40], Distribution::Normal(0.0, 3.0), &dev);
        // absolute error of x·Φ(x) grows with |x|: compare relative to max(1, |x|)
        let err = (apply(Cpu::gelu_exact, x.clone()) - gelu(x.clone())).abs()
            / x.clone().abs().clamp_min(1.0);
        assert!(err.max().into_scalar() < 5e-7);
        for (x, want) in [
            (0.0f32, 0.0f32),
            (1.0, 0.841_344_7),
            (-1.0, -0.158_655_26),
            (3.0, 2.995_950_4),
            (-3.0, -0.004_049_6),
        ] {
            let t = Tensor::<Cpu, 1>::from_floats([x], &dev);
            let got: f32 = apply(Cpu::gelu_exact, t).into_scalar();
            assert!((got - want).abs() < 1e-6, "gelu({x}) = {got}, want {want}");
        }
        let scores = Tensor::<Cpu, 4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 4.0), &dev);
        let bias = Tensor::<Cpu, 4>::from_data(
            [
                [[[
                    0.0f32,
                    0.0,
                    f32::NEG_INFINITY,
                    0.0,
                    0.0,
                    0.0,
                    f32::NEG_INFINITY,
                ]]],
                [[[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]],
            ],
            &dev,
        );
        let fused: Tensor<Cpu, 4> =
            Tensor::from_primitive(TensorPrimitive::Float(Cpu::softmax_with_bias(
                scores.clone().into_primitive().tensor(),
                bias.clone().into_primitive().tensor(),
            )));
        assert!(max_diff(fused, softmax(scores + bias, 3)) < 1e-6);
        let heads = Tensor::<Cpu, 4>::random([2, 3, 5, 4], Distribution::Default, &dev);
        let merged: Tensor<Cpu, 3> = Tensor::from_primitive(TensorPrimitive::Float(
            Cpu::merge_heads(heads.clone().into_primitive().tensor()),
        ));
        assert_eq!(
            max_diff(merged, heads.swap_dims(1, 2).reshape([2, 5, 12])),
            0.0
        );
    }

    #[test]
    fn gradients_match_burn_ops() {
        let dev = Default::default();
        let x0 = Tensor::<Cpu, 2>::random([4, 33], Distribution::Normal(0.0, 2.0), &dev);
        let w = Tensor::<CpuTrain, 2>::random([4, 33], Distribution::Default, &dev);
        let grad_of = |fused: bool| {
            let x = Tensor::<CpuTrain, 2>::from_inner(x0.clone()).require_grad();
            let y = if fused {
                apply(CpuTrain::gelu_exact, x.clone())
            } else {
                gelu(x.clone())
            };
            let g = (y * w.clone()).sum().backward();
            x.grad(&g).unwrap()
        };
        assert!(max_diff(grad_of(true), grad_of(false)) < 2e-6);

        let s0 = Tensor::<Cpu, 4>::random([2, 2, 3, 6], Distribution::Normal(0.0, 2.0), &dev);
        let ws = Tensor::<CpuTrain, 4>::random([2, 2, 3, 6], Distribution::Default, &dev);
        let zeros = Tensor::<CpuTrain, 4>::zeros([2, 1, 1, 6], &dev);
        let grad_of = |fused: bool| {
            let s = Tensor::<CpuTrain, 4>::from_inner(s0.clone()).require_grad();
            let y: Tensor<CpuTrain, 4> = if fused {
                Tensor::from_primitive(TensorPrimitive::Float(CpuTrain::softmax_with_bias(
                    s.clone().into_primitive().tensor(),
                    zeros.clone().into_primitive().tensor(),
                )))
            } else {
                softmax(s.clone(), 3)
            };
            let g = (y * ws.clone()).sum().backward();
            s.grad(&g).unwrap()
        };
        assert!(max_diff(grad_of(true), grad_of(false)) < 1e-6);

        // layer norm: gradients for the input, the weight and the bias
        let x0 = Tensor::<Cpu, 3>::random([3, 7, 40], Distribution::Normal(1.0, 2.0), &dev);
        let w0 = Tensor::<Cpu, 1>::random([40], Distribution::Normal(1.0, 0.5), &dev);
        let b0 = Tensor::<Cpu, 1>::random([40], Distribution::Default, &dev);
        let wy = Tensor::<CpuTrain, 3>::random([3, 7, 40], Distribution::Default, &dev);
        let grads_of = |fused: bool| {
            let x = Tensor::<CpuTrain, 3>::from_inner(x0.clone()).require_grad();
            let w = Tensor::<CpuTrain, 1>::from_inner(w0.clone()).require_grad();
            let b = Tensor::<CpuTrain, 1>::from_inner(b0.clone()).require_grad();
            let y: Tensor<CpuTrain, 3> = if fused {
                Tensor::from_primitive(TensorPrimitive::Float(CpuTrain::layer_norm_fused(
                    x.clone().into_primitive().tensor(),
                    w.clone().into_primitive().tensor(),
                    b.clone().into_primitive().tensor(),
                    1e-12,
                )))
            } else {
                let mean = x.clone().mean_dim(2);
                let xc = x.clone() - mean;
                let var = (xc.clone() * xc.clone()).mean_dim(2);
                xc / (var + 1e-12).sqrt() * w.clone().reshape([1, 1, 40])
                    + b.clone().reshape([1, 1, 40])
            };
            let g = (y * wy.clone()).sum().backward();
            (
                x.grad(&g).unwrap(),
                w.grad(&g).unwrap(),
                b.grad(&g).unwrap(),
            )
        };
        let (fx, fw, fb) = grads_of(true);
        let (rx, rw, rb) = grads_of(false);
        assert!(max_diff(fx, rx) < 1e-5);
        assert!(max_diff(fw, rw) < 1e-4);
        assert!(max_diff(fb, rb) < 1e-5);

        let h0 = Tensor::<Cpu, 4>::random([2, 3, 5, 4], Distribution::Default, &dev);
        let wm = Tensor::<CpuTrain, 3>::random([2, 5, 12], Distribution::Default, &dev);
        let h = Tensor::<CpuTrain, 4>::from_inner(h0).require_grad();
        let m: Tensor<CpuTrain, 3> = Tensor::from_primitive(TensorPrimitive::Float(
            CpuTrain::merge_heads(h.clone().into_primitive().tensor()),
        ));
        let g = (m * wm.clone()).sum().backward();
        let want = wm.inner().reshape([2, 5, 3, 4]).swap_dims(1, 2);
        assert_eq!(max_diff(h.grad(&g).unwrap(), want), 0.0);
    }

    /// The composed fallbacks are the only kernels GPU backends run (forward and backward):
    /// each against the fused CPU kernel on the same inputs.
    #[test]
    fn composed_fallbacks_match_cpu_kernels() {
        let dev = Default::default();
        let p = |t: Tensor<Cpu, 4>| t.into_primitive().tensor();
        let t4 = |x: FloatTensor<Cpu>| Tensor::<Cpu, 4>::from_primitive(TensorPrimitive::Float(x));
        let scores = Tensor::<Cpu, 4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 4.0), &dev);
        let mut bias = vec![0.0f32; 14];
        bias[2] = f32::NEG_INFINITY;
        bias[13] = -10000.0;
        let bias = Tensor::<Cpu, 4>::from_data(TensorData::new(bias, [2, 1, 1, 7]), &dev);
        let y_ref = t4(composed::softmax_with_bias::<Cpu>(
            p(scores.clone()),
            p(bias.clone()),
        ));
        let y = t4(Cpu::softmax_with_bias(p(scores), p(bias)));
        assert!(max_diff(y.clone(), y_ref) < 1e-6);
        let g = Tensor::<Cpu, 4>::random([2, 3, 5, 7], Distribution::Default, &dev);
        let d_ref = t4(composed::softmax_backward::<Cpu>(
            p(y.clone()),
            p(g.clone()),
        ));
        let d = t4(Cpu::softmax_backward(p(y), p(g)));
        assert!(max_diff(d, d_ref) < 1e-6);

        let x = Tensor::<Cpu, 3>::random([3, 7, 40], Distribution::Normal(1.0, 2.0), &dev);
        let w = Tensor::<Cpu, 1>::random([40], Distribution::Normal(1.0, 0.5), &dev);
        let dy = Tensor::<Cpu, 3>::random([3, 7, 40], Distribution::Default, &dev);
        let prim3 = |t: Tensor<Cpu, 3>| t.into_primitive().tensor();
        let prim1 = |t: Tensor<Cpu, 1>| t.into_primitive().tensor();
        let (rx, rw, rb) = composed::layer_norm_backward::<Cpu>(
            prim3(x.clone()),
            prim1(w.clone()),
            prim3(dy.clone()),
            1e-12,
        );
        let (fx, fw, fb) = Cpu::layer_norm_fused_backward(prim3(x), prim1(w), prim3(dy), 1e-12);
        let t3 = |x| Tensor::<Cpu, 3>::from_primitive(TensorPrimitive::Float(x));
        let t1 = |x| Tensor::<Cpu, 1>::from_primitive(TensorPrimitive::Float(x));
        assert!(max_diff(t3(fx), t3(rx)) < 1e-5);
        assert!(max_diff(t1(fw), t1(rw)) < 1e-4);
        assert!(max_diff(t1(fb), t1(rb)) < 1e-5);

        for decoupled in [false, true] {
            let h = AdamStep {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
                decoupled,
                step: 3,
            };
            let r = |i: u64| {
                Tensor::<Cpu, 1>::random([1000], Distribution::Normal(0.0, 1.0 + i as f64), &dev)
            };
            let (w, g, m) = (r(0), r(1), r(2));
            let v = r(3).abs();
            let (rp, rm, rv) = composed::adam_step::<Cpu>(
                prim1(w.clone()),
                prim1(g.clone()),
                prim1(m.clone()),
                prim1(v.clone()),
                &h,
            );
            let (fp, fm, fv) = Cpu::adam_step(prim1(w), prim1(g), prim1(m), prim1(v), &h);
            assert!(
                max_diff(t1(fp), t1(rp)) < 1e-6,
                "adam decoupled {decoupled}"
            );
            assert!(max_diff(t1(fm), t1(rm)) < 1e-6);
            assert!(max_diff(t1(fv), t1(rv)) < 1e-5);
        }

        let x = Tensor::<Cpu, 3>::random([4, 9, 33], Distribution::Default, &dev);
        let d_ref = t3(composed::dropout::<Cpu>(prim3(x.clone()), 0.1, 77));
        let d = t3(Cpu::dropout(prim3(x), 0.1, 77));
        assert_eq!(max_diff(d, d_ref), 0.0, "dropout masks differ");

        let heads = Tensor::<Cpu, 4>::random([2, 3, 5, 4], Distribution::Default, &dev);
        let m_ref = t3(composed::merge_heads::<Cpu>(p(heads.clone())));
        let m = t3(Cpu::merge_heads(p(heads)));
        assert_eq!(max_diff(m, m_ref), 0.0);
    }
}
