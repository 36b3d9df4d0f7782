//! The precision of the model's matrix products (`--precision`): `f32`, or `bf16` — operands
//! rounded to bfloat16, products accumulated in f32, each result rounded to bfloat16 — with
//! LayerNorm, softmax, GELU, the loss, the master weights and the optimizer state in f32.
//! That is what `torch.autocast(dtype=torch.bfloat16)` does to a BERT's linear layers and
//! attention products, forward and backward (every gradient product goes through
//! [`Kernels::matmul`](super::Kernels::matmul) too).
//!
//! GPUs run it as bf16 tensors (the reference path casts, multiplies and casts back, so
//! tensor cores do the products). The CPU has no bf16 arithmetic worth using, so there it is
//! emulated exactly: operands rounded to bf16 values held in f32 (the product of two bf16
//! numbers is exact in f32), the same f32 accumulation, the result rounded. It is slower than
//! f32 on the CPU, and there only to measure what bf16 does to accuracy.
//!
//! The setting is process-wide, like PyTorch's `torch.set_float32_matmul_precision`: the
//! kernels are static backend functions with no context to carry it, and a run uses one
//! precision throughout. The CLI sets it once, before any model runs.

use std::sync::atomic::{AtomicBool, Ordering};

use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::simd::{CHUNK, owned_contiguous};

/// Precision of the matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bf16 operands and results, f32 accumulation (mixed precision).
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision \"{s}\" (expected f32 or bf16)")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

static BF16: AtomicBool = AtomicBool::new(false);

/// Sets the precision of every matrix product from now on, in this process.
pub fn set_matmul_precision(p: Precision) {
    BF16.store(p == Precision::Bf16, Ordering::Relaxed);
}

/// The precision [`set_matmul_precision`] set (`f32` unless it was called).
pub fn matmul_precision() -> Precision {
    if BF16.load(Ordering::Relaxed) {
        Precision::Bf16
    } else {
        Precision::F32
    }
}

/// `x` rounded to the nearest bfloat16 (ties to even), as an f32.
#[inline(always)]
fn round_bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// Rounds every element of `data` to bfloat16, in place.
pub(super) fn round_slice(data: &mut [f32]) {
    data.par_chunks_mut(CHUNK).for_each(|c| {
        for v in c {
            *v = round_bf16(*v);
        }
    });
}

/// A contiguous f32 copy of `t` rounded to bfloat16, made with one copy (`None` for other
/// dtypes).
pub(super) fn rounded(t: &FlexTensor) -> Option<FlexTensor> {
    if t.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    // a strided view becomes a fresh buffer here; a contiguous one is shared with `t`, so
    // `storage_mut` copies it before the rounding writes
    let mut c = owned_contiguous(t.clone());
    round_slice(c.storage_mut::<f32>());
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even_bf16() {
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1)
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(round_bf16(-2.5), -2.5);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        // every result has a zero low half: a bf16 value
        for i in 0..1000 {
            let x = (i as f32 * 0.7315).sin() * 1e3;
            assert_eq!(round_bf16(x).to_bits() & 0xffff, 0, "{x}");
            assert!((round_bf16(x) - x).abs() <= x.abs() / 256.0);
        }
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!("fp8".parse::<Precision>().is_err());
    }
}
