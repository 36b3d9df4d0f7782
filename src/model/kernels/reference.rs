//! The kernels composed from burn's tensor ops: every backend's default, so the only
//! implementation GPU backends run, and the CPU kernels' fallback for layouts or dtypes they
//! do not handle. `tests.rs` checks them against the CPU kernels, values and gradients.

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{FloatDType, Shape, TensorData, TensorMetadata};

use super::adam::AdamStep;
use super::dropout::dropout_mask;

/// Exact GELU: burn's own `gelu`.
pub fn gelu_exact<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::gelu(x)
}

/// Gradient of exact GELU at `x` given the output gradient `grad`: burn's own `gelu_backward`.
pub fn gelu_exact_backward<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    B::gelu_backward(x, grad)
}

/// `softmax(scores + bias)` over the last axis, `bias` broadcast to the shape of `scores`
/// (e.g. an attention mask `[batch, 1, 1, len]` onto `[batch, heads, q, len]`); the row
/// maximum is subtracted first, so -inf entries get probability 0.
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

/// Gradient of a softmax over the last axis from its output `y` and the output gradient
/// `grad`: `y · (grad − Σ grad · y)`.
pub fn softmax_backward<B: Backend>(y: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let last = y.shape().num_dims() - 1;
    let dot = B::float_sum_dim(B::float_mul(grad.clone(), y.clone()), last);
    B::float_mul(y, B::float_sub(grad, dot))
}

/// LayerNorm: burn's own `layer_norm`.
pub fn layer_norm<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    B::layer_norm(x, weight, Some(bias), eps)
}

/// Gradients of [`layer_norm`] over the last axis from the input `x`, the scale `weight`
/// `[hidden]` and the output gradient `dy`: `(dx, dweight, dbias)`, `dx` shaped like `x`.
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

/// One Adam (or AdamW, `h.decoupled`) update with bias correction: returns the new
/// `(param, m, v)`; `eps` is added to the corrected `sqrt(v)`.
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
    dropout_mask(seed, prob, 0, &mut mask);
    let device = B::float_device(&x);
    let mask = B::float_from_data(TensorData::new(mask, shape), &device);
    B::float_mul(x, mask)
}

/// Attention heads back into the hidden axis: `[batch, heads, len, head_dim]` →
/// `[batch, len, heads · head_dim]`.
pub fn merge_heads<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let s = x.shape();
    let (b, nh, l, hd) = (s[0], s[1], s[2], s[3]);
    B::float_reshape(B::float_swap_dims(x, 1, 2), Shape::new([b, l, nh * hd]))
}

/// The hidden axis split into attention heads, `[batch, len, heads · head_dim]` →
/// `[batch, heads, len, head_dim]`: a reshape and a transpose (a strided view, no copy), so
/// also the gradient of [`merge_heads`].
pub fn split_heads<B: Backend>(x: FloatTensor<B>, heads: usize) -> FloatTensor<B> {
    let s = x.shape();
    let (b, l, h) = (s[0], s[1], s[2]);
    B::float_swap_dims(
        B::float_reshape(x, Shape::new([b, l, heads, h / heads])),
        1,
        2,
    )
}

/// Mean cross-entropy of `logits [rows, classes]` at `targets [rows]`, as burn's
/// `CrossEntropyLoss` computes it: `−mean(gather(log_softmax(logits), targets))`, shape `[1]`.
pub fn cross_entropy<B: Backend>(logits: FloatTensor<B>, targets: IntTensor<B>) -> FloatTensor<B> {
    let rows = logits.shape()[0];
    let log_p = B::log_softmax(logits, 1);
    let picked = B::float_gather(1, log_p, B::int_reshape(targets, Shape::new([rows, 1])));
    B::float_neg(B::float_mean(picked))
}

/// Gradient of [`cross_entropy`] w.r.t. the logits from the loss gradient `grad` (`[1]`):
/// `grad / rows · (softmax(logits) − onehot(targets))`.
pub fn cross_entropy_backward<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let shape = logits.shape();
    let rows = shape[0];
    let device = B::float_device(&logits);
    let probs = B::softmax(logits, 1);
    let onehot = B::float_scatter_add(
        1,
        B::float_zeros(shape, &device, probs.dtype().into()),
        B::int_reshape(targets, Shape::new([rows, 1])),
        B::float_ones(Shape::new([rows, 1]), &device, probs.dtype().into()),
    );
    let scale = B::float_div_scalar(
        B::float_reshape(grad, Shape::new([1, 1])),
        (rows as f32).into(),
    );
    B::float_mul(B::float_sub(probs, onehot), scale)
}

/// `lhs [..., m, k] · rhs [..., k, n]`: burn's own matmul (which also broadcasts batch dims).
pub fn matmul<B: Backend>(lhs: FloatTensor<B>, rhs: FloatTensor<B>) -> FloatTensor<B> {
    if super::matmul_precision() == super::Precision::Bf16 {
        // bf16 tensors: the backend multiplies them with f32 accumulation (tensor cores on
        // a GPU) and returns bf16
        let bf16 = |t| B::float_cast(t, FloatDType::BF16);
        return B::float_cast(B::float_matmul(bf16(lhs), bf16(rhs)), FloatDType::F32);
    }
    B::float_matmul(lhs, rhs)
}

/// `x [rows, in] · weight [in, out] + bias [out]`, as burn's linear module computes it.
pub fn linear<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> FloatTensor<B> {
    let out = bias.shape()[0];
    B::float_add(
        matmul::<B>(x, weight),
        B::float_reshape(bias, Shape::new([1, out])),
    )
}
