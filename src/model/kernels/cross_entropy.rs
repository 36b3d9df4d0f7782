//! Mean cross-entropy of `logits [rows, classes]` at one target class per row, and its
//! gradient, on the CPU: one pass per row for the log-sum-exp with the vectorisable `exp`.
//! burn's composed loss (log-softmax, gather, mean) made about ten full `[rows, classes]`
//! tensors forward and backward with a scalar `exp`; over the 21,128-word vocabulary at every
//! masked token that was 10–12% of a pretraining step.

use burn::tensor::DType;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::simd::{CHUNK, exp, from_vec, lane_max, lane_sum, owned_contiguous, simd_dispatch};

// `log Σ exp(row)` into `out`; `scratch` (the row's length) receives `exp(row − max)`.
simd_dispatch!(log_sum_exp_row, (row: &[f32], scratch: &mut [f32], out: &mut f32), {
    let max = lane_max(row);
    for (s, &x) in scratch.iter_mut().zip(row) {
        *s = exp(x - max);
    }
    *out = max + lane_sum(scratch).ln();
});

// `scale · softmax(row)`, written over the row.
simd_dispatch!(scaled_softmax_row, (dst: &mut [f32], scale: f32), {
    let max = lane_max(dst);
    for d in dst.iter_mut() {
        *d = exp(*d - max);
    }
    let k = scale / lane_sum(dst);
    for d in dst.iter_mut() {
        *d *= k;
    }
});

/// The number of classes and the targets as row indices, or `None` (another dtype or rank,
/// no rows or classes, a target out of range) for the reference version.
fn operands(logits: &FlexTensor, targets: &FlexTensor) -> Option<(usize, Vec<usize>)> {
    if logits.dtype() != DType::F32 {
        return None;
    }
    let shape = logits.layout().shape();
    if shape.num_dims() != 2 || shape[0] == 0 || shape[1] == 0 {
        return None;
    }
    let classes = shape[1];
    if targets.layout().shape().num_elements() != shape[0] {
        return None;
    }
    let t = targets.to_contiguous();
    let index = |v: i64| usize::try_from(v).ok().filter(|&i| i < classes);
    let ids: Option<Vec<usize>> = match t.dtype() {
        DType::I32 => t
            .storage::<i32>()
            .iter()
            .map(|&v| index(v as i64))
            .collect(),
        DType::I64 => t.storage::<i64>().iter().map(|&v| index(v)).collect(),
        _ => None,
    };
    Some((classes, ids?))
}

/// The loss, shape `[1]`. Each row's term is summed in f64 in row order, so the value does
/// not depend on how the rows were split over threads.
pub(super) fn forward(logits: FlexTensor, targets: FlexTensor) -> Option<FlexTensor> {
    let (classes, ids) = operands(&logits, &targets)?;
    let rows = ids.len();
    let x = logits.to_contiguous();
    let data = x.storage::<f32>();
    let terms: Vec<f64> = data
        .par_chunks(classes)
        .zip(ids.par_iter())
        .with_min_len(CHUNK / classes + 1)
        .map_init(
            || vec![0.0f32; classes],
            |scratch, (row, &t)| {
                let mut lse = 0.0f32;
                log_sum_exp_row(row, scratch, &mut lse);
                (lse - row[t]) as f64
            },
        )
        .collect();
    let loss = terms.iter().sum::<f64>() / rows as f64;
    Some(from_vec(vec![loss as f32], [1].into()))
}

// `exp(row − max)` written over the row; returns (log Σ exp(row), Σ exp(row − max)), the sum
// taken as `log_sum_exp_row` takes it, so both give the same loss.
simd_dispatch!(exp_row_in_place, (dst: &mut [f32], out: &mut (f32, f32)), {
    let max = lane_max(dst);
    for d in dst.iter_mut() {
        *d = exp(*d - max);
    }
    let sum = lane_sum(dst);
    *out = (max + sum.ln(), sum);
});

/// The loss (as [`forward`]) and, for its gradient, each row's `exp(x − max)` written over the
/// logits (when nobody else holds them; else over a copy) with each row's sum of them;
/// `Err(logits)` for the reference version.
pub(super) fn forward_saving(
    logits: FlexTensor,
    targets: &FlexTensor,
) -> Result<(FlexTensor, FlexTensor, Vec<f32>), FlexTensor> {
    let Some((classes, ids)) = operands(&logits, targets) else {
        return Err(logits);
    };
    let rows = ids.len();
    let mut e = owned_contiguous(logits);
    let per_row: Vec<(f64, f32)> = e
        .storage_mut::<f32>()
        .par_chunks_mut(classes)
        .zip(ids.par_iter())
        .with_min_len(CHUNK / classes + 1)
        .map(|(row, &t)| {
            let target = row[t];
            let mut out = (0.0f32, 0.0f32);
            exp_row_in_place(row, &mut out);
            ((out.0 - target) as f64, out.1)
        })
        .collect();
    let loss = per_row.iter().map(|(t, _)| t).sum::<f64>() / rows as f64;
    let sums = per_row.into_iter().map(|(_, s)| s).collect();
    Ok((from_vec(vec![loss as f32], [1].into()), e, sums))
}

/// The gradient from [`forward_saving`]'s exponentials and row sums: the same numbers as
/// [`backward`] on the logits, in one pass; `Err(exps)` for the reference version.
pub(super) fn backward_from_exps(
    exps: FlexTensor,
    sums: &[f32],
    targets: &FlexTensor,
    grad: &FlexTensor,
) -> Result<FlexTensor, FlexTensor> {
    let Some((classes, ids)) = operands(&exps, targets) else {
        return Err(exps);
    };
    if grad.dtype() != DType::F32
        || grad.layout().shape().num_elements() != 1
        || sums.len() != ids.len()
    {
        return Err(exps);
    }
    let scale = grad.to_contiguous().storage::<f32>()[0] / ids.len() as f32;
    let mut out = owned_contiguous(exps);
    out.storage_mut::<f32>()
        .par_chunks_mut(classes)
        .zip(ids.par_iter().zip(sums.par_iter()))
        .with_min_len(CHUNK / classes + 1)
        .for_each(|(dst, (&t, &sum))| {
            scale_row(dst, scale / sum);
            dst[t] -= scale;
        });
    Ok(out)
}

simd_dispatch!(scale_row, (dst: &mut [f32], k: f32), {
    for d in dst.iter_mut() {
        *d *= k;
    }
});

/// `grad / rows · (softmax(logits) − onehot(targets))`, `grad` the loss's gradient (`[1]`),
/// written over the logits when nobody else holds them (a vocabulary-sized buffer fewer);
/// `Err(logits)` for the reference version.
pub(super) fn backward(
    logits: FlexTensor,
    targets: &FlexTensor,
    grad: &FlexTensor,
) -> Result<FlexTensor, FlexTensor> {
    let Some((classes, ids)) = operands(&logits, targets) else {
        return Err(logits);
    };
    if grad.dtype() != DType::F32 || grad.layout().shape().num_elements() != 1 {
        return Err(logits);
    }
    let rows = ids.len();
    let scale = grad.to_contiguous().storage::<f32>()[0] / rows as f32;
    let mut out = owned_contiguous(logits);
    out.storage_mut::<f32>()
        .par_chunks_mut(classes)
        .zip(ids.par_iter())
        .with_min_len(CHUNK / classes + 1)
        .for_each(|(dst, &t)| {
            scaled_softmax_row(dst, scale);
            dst[t] -= scale;
        });
    Ok(out)
}
