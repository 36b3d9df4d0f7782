//! Fused kernels the BERT forward and backward passes spend most of their non-matmul time in,
//! as a burn backend extension (the pattern burn documents for custom operations).
//!
//! Organised by operation. [`Kernels`] is the trait; every method defaults to the version
//! composed from burn's own ops in [`reference`](mod@reference) (what CUDA and any other
//! backend run). The CPU backend (Flex) overrides them with one-pass, SIMD-friendly loops
//! that run on all cores, one file per kernel (`gelu`, `softmax`, `layer_norm`,
//! `merge_heads`, `dropout`, `adam`, `matmul`, `cross_entropy`, on the helpers in `simd`),
//! each falling back to the reference for layouts or dtypes it does not handle. Measured on
//! a training step, burn-flex spent 11% of the time in scalar `erf` (GELU), 11% permuting
//! attention heads element by element, and 7% in scalar `exp` (softmax); on an evaluation
//! pass, 16% zero-filling and copying matmul outputs (`matmul`, which also makes a linear
//! layer one product over all rows); on a pretraining step, 10–12% in the composed
//! cross-entropy over the vocabulary and 6% making the head split's gradient contiguous
//! (`split_heads`, whose gradient is now the merge kernel). `autodiff` wraps each kernel with
//! its exact gradient. The functions at the end of this file are the tensor-level entry
//! points the model calls.
//!
//! Adding a kernel: a method on [`Kernels`] with a default in `reference.rs`, its CPU version
//! in its own file and one line in the Flex impl below, a backward in `autodiff.rs` if it
//! has one, a tensor-level wrapper here, and its case in `tests.rs`.

mod adam;
mod autodiff;
mod cross_entropy;
mod dropout;
mod gelu;
mod layer_norm;
mod matmul;
mod merge_heads;
mod precision;
pub mod reference;
mod simd;
mod softmax;
#[cfg(test)]
mod tests;

use burn::nn::Linear;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, FloatTensorOps, IntTensor};
use burn::tensor::{Int, Tensor, TensorPrimitive};
use burn_flex::FlexTensor;

pub use adam::AdamStep;
pub use dropout::{MASK_BLOCK, dropout_mask, mix};
pub use precision::{Precision, matmul_precision, set_matmul_precision};

/// `--len-multiple`, process-wide like the precision (0: each backend's own
/// [`Kernels::SEQ_LEN_MULTIPLE`]).
static LEN_MULTIPLE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Overrides every backend's [`Kernels::SEQ_LEN_MULTIPLE`] from now on, in this process
/// (`None`: back to each backend's own). Set once by the CLI, before any model runs.
pub fn set_seq_len_multiple(m: Option<usize>) {
    LEN_MULTIPLE.store(m.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
}

/// The multiple that batches computed on `B` are padded to: the override if one is set,
/// else the backend's own.
pub fn seq_len_multiple<B: Kernels>() -> usize {
    match LEN_MULTIPLE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => B::SEQ_LEN_MULTIPLE,
        m => m,
    }
}

/// A burn backend with ptune's fused kernels.
pub trait Kernels: Backend {
    /// Batches are padded to a multiple of this many positions before this backend computes
    /// them (the longest row rounded up; see [`seq_len_multiple`]). GPU backends compile and
    /// tune kernels for the shapes they meet, so a length-sorted evaluation or a shuffled
    /// training set that brings a new length with nearly every batch pays that cost again
    /// and again; multiples of 32 leave at most four lengths up to 128. The CPU kernels have
    /// no such cost and compute every padded position, so there it is 1 (no extra padding).
    const SEQ_LEN_MULTIPLE: usize = 32;

    /// Exact GELU, `x Φ(x)` (transformers' `"gelu"`).
    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::gelu_exact::<Self>(x)
    }

    /// `grad · (Φ(x) + x φ(x))`.
    fn gelu_exact_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::gelu_exact_backward::<Self>(x, grad)
    }

    /// Softmax over the last axis of `scores + bias` (`bias` broadcast over the leading axes,
    /// e.g. `[batch, 1, 1, len]` against `[batch, heads, len, len]`).
    fn softmax_with_bias(scores: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::softmax_with_bias::<Self>(scores, bias)
    }

    /// Gradient of the softmax w.r.t. its input, from its output `y`: `y (g − Σ g y)`.
    fn softmax_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::softmax_backward::<Self>(y, grad)
    }

    /// LayerNorm over the last axis: `(x − mean) / sqrt(var + eps) · weight + bias`.
    fn layer_norm_fused(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        reference::layer_norm::<Self>(x, weight, bias, eps)
    }

    /// Gradients of [`Kernels::layer_norm_fused`] w.r.t. `x`, `weight` and `bias`, given the
    /// output gradient `dy` (statistics recomputed from `x`).
    fn layer_norm_fused_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        reference::layer_norm_backward::<Self>(x, weight, dy, eps)
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
        reference::adam_step::<Self>(param, grad, m, v, h)
    }

    /// `x` times the dropout mask of `seed` (see [`dropout_mask`]). Linear in `x`, so the
    /// same call with the same seed is its own backward pass.
    fn dropout(x: FloatTensor<Self>, prob: f64, seed: u64) -> FloatTensor<Self> {
        reference::dropout::<Self>(x, prob, seed)
    }

    /// `[batch, heads, len, head_dim]` → `[batch, len, heads · head_dim]` (contiguous).
    fn merge_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::merge_heads::<Self>(x)
    }

    /// `[batch, len, heads · head_dim]` → `[batch, heads, len, head_dim]`, a strided view on
    /// every backend; its gradient is [`Kernels::merge_heads`] (burn's own backward made the
    /// gradient contiguous element by element: 6% of a pretraining step).
    fn split_heads(x: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        reference::split_heads::<Self>(x, heads)
    }

    /// Mean cross-entropy of `logits [rows, classes]` at `targets [rows]`, shape `[1]`.
    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        reference::cross_entropy::<Self>(logits, targets)
    }

    /// Gradient of [`Kernels::cross_entropy`] w.r.t. the logits, given the loss's gradient
    /// `grad` (`[1]`): `grad / rows · (softmax(logits) − onehot(targets))`.
    fn cross_entropy_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference::cross_entropy_backward::<Self>(logits, targets, grad)
    }

    /// [`Kernels::cross_entropy`] for training: the loss and what its gradient needs. The
    /// default keeps the logits; the CPU writes each row's `exp(x − max)` over them (the
    /// loss's own pass), so the gradient is one pass instead of recomputing the softmax.
    fn cross_entropy_saving(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, CrossEntropySaved<Self>) {
        let loss = Self::cross_entropy(logits.clone(), targets);
        (loss, CrossEntropySaved::Logits(logits))
    }

    /// The logits' gradient from what [`Kernels::cross_entropy_saving`] kept.
    fn cross_entropy_backward_saved(
        saved: CrossEntropySaved<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match saved {
            CrossEntropySaved::Logits(logits) => {
                Self::cross_entropy_backward(logits, targets, grad)
            }
            // softmax(ln e) = e / Σe: the reference on the log of the kept exponentials
            CrossEntropySaved::Exps(e, _) => {
                Self::cross_entropy_backward(Self::float_log(e), targets, grad)
            }
        }
    }

    /// `lhs [..., m, k] · rhs [..., k, n]` (batch dimensions broadcast).
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::matmul::<Self>(lhs, rhs)
    }

    /// A linear layer on rows: `x [rows, in] · weight [in, out] + bias [out]`.
    fn linear_rows(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference::linear::<Self>(x, weight, bias)
    }

    /// A linear layer with its weight stored `[out, in]` (PyTorch's layout; the MLM decoder,
    /// tied to the word embeddings): `x [rows, in] · weightᵀ + bias [out]`. The same numbers
    /// as [`Kernels::linear_rows`] on the transposed view; under autodiff the weight's
    /// gradient comes out `[out, in]`, in the weight's own layout, so adding it to the word
    /// embeddings' gradient is a contiguous sum rather than a strided one.
    fn linear_rows_t(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::linear_rows(x, Self::float_swap_dims(weight, 0, 1), bias)
    }
}

#[cfg(feature = "cuda")]
impl Kernels for burn::backend::Cuda {}

#[cfg(feature = "wgpu")]
impl Kernels for burn::backend::Wgpu {}

/// What [`Kernels::cross_entropy_saving`] keeps for the gradient.
#[derive(Debug, Clone)]
pub enum CrossEntropySaved<B: Backend> {
    /// The logits `[rows, classes]`.
    Logits(FloatTensor<B>),
    /// Each row's `exp(x − max)` `[rows, classes]`, and each row's sum of them.
    Exps(FloatTensor<B>, Vec<f32>),
}

/// The CPU kernels, each falling back to the reference version when it returns `None`.
impl Kernels for burn::backend::Flex {
    const SEQ_LEN_MULTIPLE: usize = 1;

    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu::forward(x.clone()).unwrap_or_else(|| reference::gelu_exact::<Self>(x))
    }

    fn gelu_exact_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu::backward(&x, grad)
            .unwrap_or_else(|grad| reference::gelu_exact_backward::<Self>(x, grad))
    }

    fn softmax_with_bias(scores: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax::forward(scores, &bias)
            .unwrap_or_else(|scores| reference::softmax_with_bias::<Self>(scores, bias))
    }

    fn softmax_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax::backward(&y, grad)
            .unwrap_or_else(|grad| reference::softmax_backward::<Self>(y, grad))
    }

    fn layer_norm_fused_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        layer_norm::backward(x.clone(), weight.clone(), dy.clone(), eps)
            .unwrap_or_else(|| reference::layer_norm_backward::<Self>(x, weight, dy, eps))
    }

    fn adam_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        h: &AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // checked first, so the buffers are handed over unshared and can be updated in place
        if adam::fits(&param, &grad, &m, &v) {
            adam::step(param, grad, m, v, h)
        } else {
            reference::adam_step::<Self>(param, grad, m, v, h)
        }
    }

    fn dropout(x: FloatTensor<Self>, prob: f64, seed: u64) -> FloatTensor<Self> {
        dropout::forward(x, prob, seed)
            .unwrap_or_else(|x| reference::dropout::<Self>(x, prob, seed))
    }

    fn merge_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        merge_heads::forward(x.clone()).unwrap_or_else(|| reference::merge_heads::<Self>(x))
    }

    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        if matmul_precision() == Precision::Bf16 {
            return bf16_product(&lhs, &rhs).unwrap_or_else(|| reference::matmul::<Self>(lhs, rhs));
        }
        matmul::matmul(&lhs, &rhs).unwrap_or_else(|| reference::matmul::<Self>(lhs, rhs))
    }

    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        cross_entropy::forward(logits.clone(), targets.clone())
            .unwrap_or_else(|| reference::cross_entropy::<Self>(logits, targets))
    }

    fn cross_entropy_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        cross_entropy::backward(logits, &targets, &grad).unwrap_or_else(|logits| {
            reference::cross_entropy_backward::<Self>(logits, targets, grad)
        })
    }

    fn cross_entropy_saving(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, CrossEntropySaved<Self>) {
        match cross_entropy::forward_saving(logits, &targets) {
            Ok((loss, exps, sums)) => (loss, CrossEntropySaved::Exps(exps, sums)),
            Err(logits) => {
                let loss = Self::cross_entropy(logits.clone(), targets);
                (loss, CrossEntropySaved::Logits(logits))
            }
        }
    }

    fn cross_entropy_backward_saved(
        saved: CrossEntropySaved<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        match saved {
            CrossEntropySaved::Exps(e, sums) => {
                cross_entropy::backward_from_exps(e, &sums, &targets, &grad).unwrap_or_else(|e| {
                    reference::cross_entropy_backward::<Self>(Self::float_log(e), targets, grad)
                })
            }
            CrossEntropySaved::Logits(logits) => {
                Self::cross_entropy_backward(logits, targets, grad)
            }
        }
    }

    fn linear_rows(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if matmul_precision() == Precision::Bf16 {
            // the bf16 product, then the bias in f32, as the reference adds it
            let out = bias.layout().shape().num_elements();
            let y = Self::matmul(x, weight);
            return Self::float_add(y, Self::float_reshape(bias, [1, out].into()));
        }
        matmul::linear(&x, &weight, &bias)
            .unwrap_or_else(|| reference::linear::<Self>(x, weight, bias))
    }
}

/// `lhs · rhs` in emulated bf16 (see `precision.rs`): the operands rounded to bfloat16, the
/// f32 product rounded to bfloat16; `None` for what [`matmul::matmul`] does not take.
fn bf16_product(lhs: &FlexTensor, rhs: &FlexTensor) -> Option<FlexTensor> {
    let (a, b) = (precision::rounded(lhs)?, precision::rounded(rhs)?);
    let mut y = matmul::matmul(&a, &b)?;
    precision::round_slice(y.storage_mut::<f32>());
    Some(y)
}

/// A backend for training: autodiff with the kernels, over an inner backend with them.
pub trait TrainBackend: AutodiffBackend<InnerBackend: Kernels> + Kernels {}

impl<B> TrainBackend for B where B: AutodiffBackend<InnerBackend: Kernels> + Kernels {}

fn prim<B: Backend, const D: usize>(x: Tensor<B, D>) -> FloatTensor<B> {
    x.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(x: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

/// [`Kernels::gelu_exact`] on a tensor.
pub fn gelu_exact<B: Kernels, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    tensor(B::gelu_exact(prim(x)))
}

/// [`Kernels::softmax_with_bias`] on tensors.
pub fn softmax_with_bias<B: Kernels, const D: usize>(
    scores: Tensor<B, D>,
    bias: Tensor<B, D>,
) -> Tensor<B, D> {
    tensor(B::softmax_with_bias(prim(scores), prim(bias)))
}

/// [`Kernels::layer_norm_fused`] on tensors.
pub fn layer_norm<B: Kernels, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    tensor(B::layer_norm_fused(prim(x), prim(weight), prim(bias), eps))
}

/// [`Kernels::dropout`] on a tensor (`seed` is the site's own seed, see [`mix`]).
pub fn dropout<B: Kernels, const D: usize>(x: Tensor<B, D>, prob: f64, seed: u64) -> Tensor<B, D> {
    tensor(B::dropout(prim(x), prob, seed))
}

/// [`Kernels::merge_heads`] on a tensor.
pub fn merge_heads<B: Kernels>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    tensor(B::merge_heads(prim(x)))
}

/// [`Kernels::split_heads`] on a tensor.
pub fn split_heads<B: Kernels>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    tensor(B::split_heads(prim(x), heads))
}

/// [`Kernels::cross_entropy`] on tensors: the mean loss, shape `[1]`.
pub fn cross_entropy<B: Kernels>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    tensor(B::cross_entropy(prim(logits), targets.into_primitive()))
}

/// [`Kernels::matmul`] on tensors.
pub fn matmul<B: Kernels, const D: usize>(lhs: Tensor<B, D>, rhs: Tensor<B, D>) -> Tensor<B, D> {
    tensor(B::matmul(prim(lhs), prim(rhs)))
}

/// `layer` on `x` `[..., in]` → `[..., out]` through [`Kernels::linear_rows`]: the leading axes are
/// flattened into rows, so the product is one `[rows, in] · [in, out]` (burn's `Linear`
/// runs one product per leading index).
pub fn linear<B: Kernels, const D: usize>(x: Tensor<B, D>, layer: &Linear<B>) -> Tensor<B, D> {
    let Some(bias) = &layer.bias else {
        return layer.forward(x);
    };
    let dims = x.dims();
    let [inp, out] = layer.weight.dims();
    let rows = dims[..D - 1].iter().product();
    let y: Tensor<B, 2> = tensor(B::linear_rows(
        prim(x.reshape([rows, inp])),
        prim(layer.weight.val()),
        prim(bias.val()),
    ));
    let mut out_dims = dims;
    out_dims[D - 1] = out;
    y.reshape(out_dims)
}

/// [`Kernels::linear_rows_t`] on tensors: `x [rows, in] · weightᵀ + bias`, `weight` `[out, in]`.
pub fn linear_t<B: Kernels>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 2> {
    tensor(B::linear_rows_t(prim(x), prim(weight), prim(bias)))
}

/// [`Kernels::adam_step`] on tensors: the new parameter and moments.
pub fn adam_step<B: Kernels, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    m: Tensor<B, D>,
    v: Tensor<B, D>,
    h: &AdamStep,
) -> (Tensor<B, D>, Tensor<B, D>, Tensor<B, D>) {
    let (p, m, v) = B::adam_step(prim(param), prim(grad), prim(m), prim(v), h);
    (tensor(p), tensor(m), tensor(v))
}
