//! `[batch, heads, len, head_dim]` → `[batch, len, heads · head_dim]` on the CPU by row
//! copies, read through the input's strides (burn-flex permutes element by element: 11% of
//! a training step). It is also the backward pass of the head split, whose gradients arrive
//! strided (the keys' gradient is a transposed view). Its own backward pass is that split.

use burn::tensor::{DType, Shape};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::simd::from_vec;

pub(super) fn forward(x: FlexTensor) -> Option<FlexTensor> {
    let layout = x.layout();
    let s = layout.shape().clone();
    if x.dtype() != DType::F32 || s.num_dims() != 4 || !layout.has_positive_strides() {
        return None;
    }
    let (b, nh, l, hd) = (s[0], s[1], s[2], s[3]);
    let st: Vec<usize> = layout.strides().iter().map(|&v| v as usize).collect();
    let offset = layout.start_offset();
    let src = x.storage::<f32>();
    let h = nh * hd;
    let mut out = vec![0.0f32; b * l * h];
    // one task per batch row: out[b, i, n, :] = x[b, n, i, :]
    out.par_chunks_mut(l * h).enumerate().for_each(|(bi, dst)| {
        for n in 0..nh {
            for i in 0..l {
                let from = offset + bi * st[0] + n * st[1] + i * st[2];
                let row = &mut dst[i * h + n * hd..i * h + (n + 1) * hd];
                if st[3] == 1 {
                    row.copy_from_slice(&src[from..from + hd]);
                } else {
                    for (d, v) in row.iter_mut().enumerate() {
                        *v = src[from + d * st[3]];
                    }
                }
            }
        }
    });
    Some(from_vec(out, Shape::new([b, l, h])))
}
