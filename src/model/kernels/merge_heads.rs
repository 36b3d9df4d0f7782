//! `[batch, heads, len, head_dim]` → `[batch, len, heads · head_dim]` on the CPU by row
//! copies (burn-flex permutes element by element: 11% of a training step). Its backward pass
//! is a reshape and a transpose (in `autodiff.rs`).

use burn::tensor::Shape;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::simd::{contiguous_f32, from_vec};

pub(super) fn forward(x: FlexTensor) -> Option<FlexTensor> {
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
                dst[i * h + n * hd..i * h + (n + 1) * hd].copy_from_slice(&src[from..from + hd]);
            }
        }
    });
    Some(from_vec(out, Shape::new([b, l, h])))
}
