//! Dropout masks from an explicit seed, and the CPU kernel that applies one.
//!
//! A mask is a function of `(seed, prob)` alone: it is generated in independently seeded
//! blocks of [`MASK_BLOCK`] elements, so the blocks can be made on any threads in any order
//! and still give the same mask, and the backward pass regenerates it instead of storing it.

use burn_flex::FlexTensor;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use rayon::prelude::*;

use super::simd::{contiguous_f32, from_vec};

/// Elements per independently seeded block of a mask, so blocks can be generated in parallel
/// and still give the same mask.
pub const MASK_BLOCK: usize = 1 << 14;

/// Fills `out` (elements `start..start + out.len()` of a mask) with `1 / (1 − prob)` for kept
/// and 0 for dropped elements. `start` must be a multiple of [`MASK_BLOCK`].
pub fn dropout_mask(seed: u64, prob: f64, start: usize, out: &mut [f32]) {
    debug_assert_eq!(start % MASK_BLOCK, 0);
    let keep = 1.0 - prob;
    // keep an element when a uniform u32 falls below keep * 2^32
    let threshold = (keep * 4294967296.0).min(4294967295.0) as u32;
    let scale = (1.0 / keep) as f32;
    for (b, block) in out.chunks_mut(MASK_BLOCK).enumerate() {
        let mut rng = SmallRng::seed_from_u64(mix(seed, ((start / MASK_BLOCK) + b) as u64));
        for v in block {
            *v = if rng.next_u32() < threshold {
                scale
            } else {
                0.0
            };
        }
    }
}

/// Mixes a seed and a stream id into one 64-bit seed (SplitMix64 finaliser): a dropout site's
/// seed from the forward seed and the site, a block's from the site seed and the block.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// `x` times the mask, one mask block per parallel task.
pub(super) fn forward(x: FlexTensor, prob: f64, seed: u64) -> Option<FlexTensor> {
    let x = contiguous_f32(&x)?;
    let src = x.storage::<f32>();
    let mut out = vec![0.0f32; src.len()];
    out.par_chunks_mut(MASK_BLOCK)
        .zip(src.par_chunks(MASK_BLOCK))
        .enumerate()
        .for_each(|(i, (d, s))| {
            dropout_mask(seed, prob, i * MASK_BLOCK, d);
            for (d, &s) in d.iter_mut().zip(s) {
                *d *= s;
            }
        });
    Some(from_vec(out, x.layout().shape().clone()))
}
