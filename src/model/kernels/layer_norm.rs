//! LayerNorm's backward pass on the CPU (the forward pass is burn-flex's own `layer_norm`):
//! the statistics are recomputed per row, and the weight and bias gradients summed in a fixed
//! order.

use burn::tensor::Shape;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::simd::{CHUNK, contiguous_f32, from_vec, lane_sum, simd_dispatch};

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
pub(super) fn backward(
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
