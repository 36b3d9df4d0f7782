//! Dropout whose masks come from an explicit seed instead of the backend's global RNG.
//!
//! Why not `burn::nn::Dropout`: it draws from one process-wide generator, so two micro-batches
//! computed on two threads would interleave their draws and a run would no longer be
//! reproducible; it also samples each element through a generic distribution, which cost
//! ~14% of a CPU training step, and keeps the mask alive until the backward pass. Here each
//! dropout site derives its own stream from `(forward seed, site)` ([`dropout_mask`]), so masks
//! are the same whatever thread runs the forward pass, and the backward pass regenerates the
//! mask from the seed instead of storing it ([`crate::model::Kernels::dropout`]).

use burn::tensor::{Tensor, TensorPrimitive};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use super::kernels::Kernels;

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

/// Dropout of one place in the network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeededDropout {
    pub prob: f64,
    /// Distinguishes this site's mask stream from every other site's.
    pub site: u64,
}

/// Mixes a forward seed and a site id into one 64-bit seed (SplitMix64 finaliser).
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

impl SeededDropout {
    pub fn new(prob: f64, site: u64) -> Self {
        SeededDropout { prob, site }
    }

    /// Applies dropout when `seed` is given (training) and the probability is positive;
    /// otherwise returns `x` unchanged.
    pub fn forward<B: Kernels, const D: usize>(
        &self,
        x: Tensor<B, D>,
        seed: Option<u64>,
    ) -> Tensor<B, D> {
        let Some(seed) = seed else { return x };
        if self.prob <= 0.0 {
            return x;
        }
        let out = B::dropout(x.into_primitive().tensor(), self.prob, mix(seed, self.site));
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cpu, CpuTrain};

    #[test]
    fn same_seed_same_mask_and_the_expected_rate() {
        let d = SeededDropout::new(0.1, 7);
        let x = Tensor::<Cpu, 2>::ones([100, 1000], &Default::default());
        let a = d
            .forward(x.clone(), Some(1))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let b = d
            .forward(x.clone(), Some(1))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let c = d
            .forward(x.clone(), Some(2))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let other_site = SeededDropout::new(0.1, 8)
            .forward(x.clone(), Some(1))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, other_site);
        let dropped = a.iter().filter(|v| **v == 0.0).count() as f64 / a.len() as f64;
        assert!((0.09..0.11).contains(&dropped), "drop rate {dropped}");
        let kept = a.iter().find(|v| **v != 0.0).unwrap();
        assert!((kept - 1.0 / 0.9).abs() < 1e-6);
        assert_eq!(
            d.forward(x.clone(), None)
                .into_data()
                .to_vec::<f32>()
                .unwrap(),
            vec![1.0; 100_000]
        );
    }

    #[test]
    fn gradient_is_the_same_mask() {
        let d = SeededDropout::new(0.3, 1);
        let x = Tensor::<CpuTrain, 2>::ones([50, 999], &Default::default()).require_grad();
        let y = d.forward(x.clone(), Some(9));
        let grads = y.clone().sum().backward();
        let g = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        assert_eq!(g, y.inner().into_data().to_vec::<f32>().unwrap());
    }
}
