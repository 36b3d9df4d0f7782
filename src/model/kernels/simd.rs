//! What the CPU kernels share: the AVX-512 dispatch, lane-wise reductions, a vectorisable
//! `exp`, and the conversions between burn-flex tensors and plain `f32` buffers.
//!
//! The kernels are plain loops over contiguous rows so that the compiler vectorises them
//! (AVX-512 when the CPU has it, chosen at run time), split over rayon's threads for large
//! tensors.

use burn::tensor::{DType, Shape, TensorData};
use burn_flex::FlexTensor;

/// Elements per parallel task; below one task's worth a kernel runs on the caller's thread.
pub(super) const CHUNK: usize = 1 << 14;

/// A contiguous copy (or the tensor itself) when it holds `f32`; `None` sends the caller to
/// the reference version.
pub(super) fn contiguous_f32(t: &FlexTensor) -> Option<FlexTensor> {
    (t.dtype() == DType::F32).then(|| t.to_contiguous())
}

/// `t` itself when it is one plain contiguous buffer (its result can then be written in
/// place when no one else holds it: `storage_mut` copies a shared buffer first), else a
/// contiguous copy. Kernels whose output has an input's shape write into it, which saves
/// allocating, zero-filling and streaming a third buffer.
pub(super) fn owned_contiguous(t: FlexTensor) -> FlexTensor {
    let full = t.layout().start_offset() == 0 && t.bytes().len() == t.layout().num_elements() * 4;
    if t.is_contiguous() && full {
        t
    } else {
        t.to_contiguous()
    }
}

pub(super) fn from_vec(data: Vec<f32>, shape: Shape) -> FlexTensor {
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
pub(super) use simd_dispatch;

/// Lanes of the partial maxima/sums below: float reductions only vectorise when written
/// as independent lanes (the compiler may not reorder a single running sum).
const LANES: usize = 16;

#[inline(always)]
pub(super) fn lane_max(v: &[f32]) -> f32 {
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
pub(super) fn lane_sum(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            acc[j] += c[j];
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `Σ a·b` with [`lane_sum`]'s lanes and order: the same number as `lane_sum` of the rounded
/// products, without a buffer for them.
#[inline(always)]
pub(super) fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_accurate() {
        for i in -8700..=880 {
            let x = i as f32 / 10.0;
            let (got, want) = (super::exp(x), x.exp());
            assert!(
                (got - want).abs() <= want * 3e-7 + 1e-37,
                "exp({x}) = {got}, want {want}"
            );
        }
    }
}
