//! Softmax over the last axis of `scores + bias` and its gradient on the CPU: one pass per
//! row with the padding bias added in, and the vectorisable `exp` (burn-flex's scalar `exp`
//! was 7% of a training step).

use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::simd::{CHUNK, contiguous_f32, exp, from_vec, lane_max, lane_sum, simd_dispatch};

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

/// `scores` `[b, h, q, n]`, `bias` `[b, 1, 1, n]` or `[1, 1, 1, n]` (one bias for the whole
/// batch); other layouts go to the reference version.
pub(super) fn forward(scores: FlexTensor, bias: FlexTensor) -> Option<FlexTensor> {
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

/// The gradient w.r.t. the softmax input from its output `y`: `y (g − Σ g y)` per row.
pub(super) fn backward(y: FlexTensor, grad: FlexTensor) -> Option<FlexTensor> {
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
