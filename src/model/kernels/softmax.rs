//! Softmax over the last axis of `scores + bias` and its gradient on the CPU: one pass per
//! row with the padding bias added in, and the vectorisable `exp` (burn-flex's scalar `exp`
//! was 7% of a training step).

use burn::tensor::DType;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::simd::{CHUNK, exp, lane_dot, lane_max, lane_sum, owned_contiguous, simd_dispatch};

// One softmax row of `scores + bias`, written over the scores.
simd_dispatch!(softmax_row, (dst: &mut [f32], bias: &[f32]), {
    for (d, &b) in dst.iter_mut().zip(bias) {
        *d += b;
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

// The gradient written over the incoming one `g`.
simd_dispatch!(softmax_grad_row, (y: &[f32], g: &mut [f32]), {
    let dot = lane_dot(y, g);
    for (g, &y) in g.iter_mut().zip(y) {
        *g = y * (*g - dot);
    }
});

/// `scores` `[b, h, q, n]`, `bias` `[b, 1, 1, n]` or `[1, 1, 1, n]` (one bias for the whole
/// batch), written over the scores when nobody else holds them; other layouts and dtypes:
/// `Err(scores)`, for the reference version.
pub(super) fn forward(scores: FlexTensor, bias: &FlexTensor) -> Result<FlexTensor, FlexTensor> {
    let shape = scores.layout().shape().clone();
    let bshape = bias.layout().shape().clone();
    if scores.dtype() != DType::F32
        || bias.dtype() != DType::F32
        || shape.num_dims() != 4
        || bshape.num_dims() != 4
        || bshape[1] != 1
        || bshape[2] != 1
        || bshape[3] != shape[3]
        || (bshape[0] != shape[0] && bshape[0] != 1)
    {
        return Err(scores);
    }
    let b = bias.to_contiguous();
    let (n, rows_per_batch) = (shape[3], shape[1] * shape[2]);
    let bias_data = b.storage::<f32>();
    let mut out = owned_contiguous(scores);
    let rows_per_task = (CHUNK / n.max(1)).max(1);
    out.storage_mut::<f32>()
        .par_chunks_mut(rows_per_task * n)
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
                softmax_row(d, &bias_data[batch * n..(batch + 1) * n]);
            }
        });
    Ok(out)
}

/// The gradient w.r.t. the softmax input from its output `y`: `y (g − Σ g y)` per row.
/// Written into `grad`'s buffer when nobody else holds it; `Err(grad)` for other dtypes or
/// shapes.
pub(super) fn backward(y: &FlexTensor, grad: FlexTensor) -> Result<FlexTensor, FlexTensor> {
    let shape = y.layout().shape().clone();
    if y.dtype() != DType::F32 || grad.dtype() != DType::F32 || &shape != grad.layout().shape() {
        return Err(grad);
    }
    let y = y.to_contiguous();
    let n = shape[shape.num_dims() - 1].max(1);
    let mut g = owned_contiguous(grad);
    let rows_per_task = (CHUNK / n).max(1);
    g.storage_mut::<f32>()
        .par_chunks_mut(rows_per_task * n)
        .zip(y.storage::<f32>().par_chunks(rows_per_task * n))
        .for_each(|(g, y)| {
            for (g, y) in g.chunks_mut(n).zip(y.chunks(n)) {
                softmax_grad_row(y, g);
            }
        });
    Ok(g)
}
