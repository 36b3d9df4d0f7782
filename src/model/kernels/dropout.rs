//! Dropout masks from an explicit seed, and the CPU kernel that applies one.
//!
//! A mask is a function of `(seed, prob)` alone: it is generated in independently seeded
//! blocks of [`MASK_BLOCK`] elements, so the blocks can be made on any threads in any order
//! and still give the same mask, and the backward pass regenerates it instead of storing it.

use burn::tensor::DType;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::simd::{owned_contiguous, simd_dispatch};

/// Elements per independently seeded block of a mask, so blocks can be generated in parallel
/// and still give the same mask.
pub const MASK_BLOCK: usize = 1 << 14;

/// Fills `out` (elements `start..start + out.len()` of a mask) with `1 / (1 − prob)` for kept
/// and 0 for dropped elements. `start` must be a multiple of [`MASK_BLOCK`].
///
/// Block `k` keeps an element when the next `u32` of `SmallRng::seed_from_u64(mix(seed, k))`
/// (rand's xoshiro256++) falls below `keep · 2³²`. The generator is written out here so that
/// [`STREAMS`] blocks step their streams together in vector registers (one stream at a time
/// was 4% of a pretraining step); the unit test checks it against `SmallRng` itself.
pub fn dropout_mask(seed: u64, prob: f64, start: usize, out: &mut [f32]) {
    mask_into(seed, prob, start, out, false);
}

/// `out` (elements `start..` of a tensor) times the mask of [`dropout_mask`], in place.
fn apply_mask(seed: u64, prob: f64, start: usize, out: &mut [f32]) {
    mask_into(seed, prob, start, out, true);
}

/// The mask written over `out`, or (`multiply`) `out` times the mask.
fn mask_into(seed: u64, prob: f64, start: usize, out: &mut [f32], multiply: bool) {
    debug_assert_eq!(start % MASK_BLOCK, 0);
    let keep = 1.0 - prob;
    // keep an element when a uniform u32 falls below keep * 2^32
    let threshold = (keep * 4294967296.0).min(4294967295.0) as u32;
    let scale = (1.0 / keep) as f32;
    let first = start / MASK_BLOCK;
    let mut blocks: Vec<&mut [f32]> = out.chunks_mut(MASK_BLOCK).collect();
    for (g, group) in blocks.chunks_mut(STREAMS).enumerate() {
        let full = group.len() == STREAMS && group.iter().all(|b| b.len() == MASK_BLOCK);
        let mut seeds = [0u64; STREAMS];
        for (j, s) in seeds.iter_mut().enumerate() {
            *s = mix(seed, (first + g * STREAMS + j) as u64);
        }
        let mut rng = Streams::new(seeds);
        if full {
            fill_group(&mut rng, group, threshold, scale, multiply);
        } else {
            // a short last group: the same streams, element by element
            let longest = group.iter().map(|b| b.len()).max().unwrap_or(0);
            for i in 0..longest {
                let r = rng.next_u32();
                for (b, &r) in group.iter_mut().zip(&r) {
                    if let Some(v) = b.get_mut(i) {
                        let m = if r < threshold { scale } else { 0.0 };
                        *v = if multiply { *v * m } else { m };
                    }
                }
            }
        }
    }
}

/// Mask blocks whose xoshiro256++ streams advance together.
const STREAMS: usize = 8;

/// [`STREAMS`] xoshiro256++ generators, state word by word across the streams, so that one
/// step is a handful of vector instructions.
struct Streams {
    s: [[u64; STREAMS]; 4],
}

impl Streams {
    /// Each stream seeded as `Xoshiro256PlusPlus::seed_from_u64` does (SplitMix64).
    fn new(seeds: [u64; STREAMS]) -> Streams {
        let mut s = [[0u64; STREAMS]; 4];
        for (j, &seed) in seeds.iter().enumerate() {
            let mut state = seed;
            for word in s.iter_mut() {
                state = state.wrapping_add(0x9e3779b97f4a7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
                word[j] = z ^ (z >> 31);
            }
        }
        Streams { s }
    }

    /// Every stream's next `u32` (the upper half of its next `u64`, as rand's `next_u32`).
    #[inline(always)]
    fn next_u32(&mut self) -> [u32; STREAMS] {
        let [s0, s1, s2, s3] = &mut self.s;
        let mut out = [0u32; STREAMS];
        for j in 0..STREAMS {
            let res = s0[j]
                .wrapping_add(s3[j])
                .rotate_left(23)
                .wrapping_add(s0[j]);
            let t = s1[j] << 17;
            s2[j] ^= s0[j];
            s3[j] ^= s1[j];
            s1[j] ^= s2[j];
            s0[j] ^= s3[j];
            s2[j] ^= t;
            s3[j] = s3[j].rotate_left(45);
            out[j] = (res >> 32) as u32;
        }
        out
    }
}

/// Elements generated per stream before they are written out block by block.
const RUN: usize = 64;

simd_dispatch!(fill_group, (rng: &mut Streams, group: &mut [&mut [f32]], threshold: u32, scale: f32, multiply: bool), {
    let mut run = [[0.0f32; STREAMS]; RUN];
    for i0 in (0..MASK_BLOCK).step_by(RUN) {
        for r in run.iter_mut() {
            let x = rng.next_u32();
            for j in 0..STREAMS {
                r[j] = if x[j] < threshold { scale } else { 0.0 };
            }
        }
        for (j, block) in group.iter_mut().enumerate() {
            let block = &mut block[i0..i0 + RUN];
            if multiply {
                for (v, r) in block.iter_mut().zip(&run) {
                    *v *= r[j];
                }
            } else {
                for (v, r) in block.iter_mut().zip(&run) {
                    *v = r[j];
                }
            }
        }
    }
});

/// Mixes a seed and a stream id into one 64-bit seed (SplitMix64 finaliser): a dropout site's
/// seed from the forward seed and the site, a block's from the site seed and the block.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// `x` times the mask, [`STREAMS`] mask blocks per parallel task, written over `x` when
/// nobody else holds it; `Err(x)` for another dtype.
pub(super) fn forward(x: FlexTensor, prob: f64, seed: u64) -> Result<FlexTensor, FlexTensor> {
    if x.dtype() != DType::F32 {
        return Err(x);
    }
    let mut out = owned_contiguous(x);
    // a task per group of blocks whose streams step together
    let task = MASK_BLOCK * STREAMS;
    out.storage_mut::<f32>()
        .par_chunks_mut(task)
        .enumerate()
        .for_each(|(i, d)| apply_mask(seed, prob, i * task, d));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{RngCore, SeedableRng};

    use super::*;

    /// Applying the mask in place gives the input times the mask, bit for bit, over full
    /// groups of blocks and a short last one.
    #[test]
    fn applied_mask_is_the_input_times_the_mask() {
        let len = MASK_BLOCK * 9 + 77;
        let x: Vec<f32> = (0..len).map(|i| (i % 1000) as f32 * 0.01 - 3.0).collect();
        let mut mask = vec![0.0f32; len];
        dropout_mask(7, 0.1, MASK_BLOCK, &mut mask);
        let mut y = x.clone();
        apply_mask(7, 0.1, MASK_BLOCK, &mut y);
        for i in 0..len {
            assert_eq!(y[i].to_bits(), (x[i] * mask[i]).to_bits(), "element {i}");
        }
        assert!(mask.contains(&0.0) && y.iter().any(|&v| v != 0.0));
    }

    /// The mask equals one `SmallRng` per block drawn one element at a time (what every
    /// earlier version did, so every run's dropout is unchanged), for full groups of blocks,
    /// a short last group and a short last block, at any block offset.
    #[test]
    fn mask_is_one_small_rng_stream_per_block() {
        for (len, start_block) in [(MASK_BLOCK * 8, 0), (MASK_BLOCK * 11 + 123, 3), (77, 5)] {
            let (seed, prob) = (0x5eed ^ len as u64, 0.1);
            let mut fast = vec![0.0f32; len];
            dropout_mask(seed, prob, start_block * MASK_BLOCK, &mut fast);
            let threshold = (0.9f64 * 4294967296.0) as u32;
            let scale = (1.0 / 0.9f64) as f32;
            for (b, block) in fast.chunks(MASK_BLOCK).enumerate() {
                let mut rng = SmallRng::seed_from_u64(mix(seed, (start_block + b) as u64));
                for (i, &v) in block.iter().enumerate() {
                    let want = if rng.next_u32() < threshold {
                        scale
                    } else {
                        0.0
                    };
                    assert_eq!(v, want, "len {len}, block {b}, element {i}");
                }
            }
        }
    }
}
