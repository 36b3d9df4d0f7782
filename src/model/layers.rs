//! The layers the models are built from, beyond burn's `Linear` and `Embedding`: LayerNorm
//! with Hugging Face's parameter names, the feed-forward activation, and seeded dropout.
//!
//! Why not `burn::nn::Dropout`: it draws from one process-wide generator, so two micro-batches
//! computed on two threads would interleave their draws and a run would no longer be
//! reproducible; it also samples each element through a generic distribution, which cost
//! ~14% of a CPU training step, and keeps the mask alive until the backward pass. Here each
//! dropout site derives its own stream from `(forward seed, site)` ([`super::kernels::mix`]), so
//! masks are the same whatever thread runs the forward pass, and the backward pass regenerates
//! the mask from the seed instead of storing it ([`super::kernels::Kernels::dropout`]).

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::{relu, tanh};
use burn::tensor::backend::Backend;

use super::io::weights::Io;
use super::kernels::{self, Kernels, mix};

/// LayerNorm over the hidden axis with HF's parameter names (`LayerNorm.weight` / `.bias`).
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale (HF `LayerNorm.weight`, `gamma` in old checkpoints), `[hidden]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift (HF `LayerNorm.bias`, `beta` in old checkpoints), `[hidden]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Added to the variance before the square root (the config's `layer_norm_eps`).
    pub eps: f64,
}

impl<B: Kernels> LayerNorm<B> {
    /// Normalises `x` over its last axis, then scales and shifts; the shape is unchanged.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        kernels::layer_norm(x, self.weight.val(), self.bias.val(), self.eps)
    }
}

impl<B: Backend> LayerNorm<B> {
    /// Loads or saves the LayerNorm at `{prefix}.weight` / `.bias` (see [`Io`]).
    pub fn io(io: &mut Io<'_, B>, prefix: &str, cur: Option<&Self>, d: usize, eps: f64) -> Self {
        LayerNorm {
            weight: io.param(&format!("{prefix}.weight"), cur.map(|l| &l.weight), [d]),
            bias: io.param(&format!("{prefix}.bias"), cur.map(|l| &l.bias), [d]),
            eps,
        }
    }
}

/// Feed-forward activation named by `hidden_act` in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU with erf (`"gelu"`), BERT's default.
    Gelu,
    /// Tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
    /// `max(x, 0)` (`"relu"`).
    Relu,
}

impl Activation {
    /// The activation, element-wise; the shape is unchanged.
    pub fn apply<B: Kernels, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Gelu => kernels::gelu_exact(x),
            Activation::Relu => relu(x),
            Activation::GeluTanh => {
                // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
                let inner = (x.clone() + x.clone().powf_scalar(3.0).mul_scalar(0.044715))
                    .mul_scalar((2.0f64 / std::f64::consts::PI).sqrt());
                x.clone().mul_scalar(0.5) * (tanh(inner) + 1.0)
            }
        }
    }
}

/// Where a dropout sits in BERT, by module path; [`DropoutSite::id`] turns the path into the
/// number that keys the site's mask stream (see [`SeededDropout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropoutSite {
    /// `bert.embeddings.dropout`.
    Embeddings,
    /// `bert.encoder.layer.{layer}.attention.self.dropout` (on the attention probabilities).
    AttentionProbs {
        /// Encoder layer index.
        layer: usize,
    },
    /// `bert.encoder.layer.{layer}.attention.output.dropout`.
    AttentionOutput {
        /// Encoder layer index.
        layer: usize,
    },
    /// `bert.encoder.layer.{layer}.output.dropout` (after the feed-forward block).
    FeedForwardOutput {
        /// Encoder layer index.
        layer: usize,
    },
}

impl DropoutSite {
    /// The site's stream id: 0 for the embeddings, then three per layer in the order the
    /// forward pass meets them (`1 + 3·layer`, `2 + 3·layer`, `3 + 3·layer`). Distinct sites
    /// get distinct ids, and these are the ids every earlier ptune version used, so runs
    /// reproduce their old numbers. (A hash of the path string would also be unique, but
    /// would change every dropout mask and so every training result.)
    pub const fn id(self) -> u64 {
        match self {
            DropoutSite::Embeddings => 0,
            DropoutSite::AttentionProbs { layer } => 1 + 3 * layer as u64,
            DropoutSite::AttentionOutput { layer } => 2 + 3 * layer as u64,
            DropoutSite::FeedForwardOutput { layer } => 3 + 3 * layer as u64,
        }
    }
}

/// Dropout of one place in the network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeededDropout {
    /// Probability of zeroing an element, in [0, 1); kept elements are scaled by `1 / (1 - prob)`.
    pub prob: f64,
    /// Distinguishes this site's mask stream from every other site's.
    pub site: u64,
}

impl SeededDropout {
    /// A dropout site with probability `prob` and stream id `site`.
    pub fn new(prob: f64, site: u64) -> Self {
        SeededDropout { prob, site }
    }

    /// Dropout with probability `prob` at BERT's `site`.
    pub fn at(prob: f64, site: DropoutSite) -> Self {
        Self::new(prob, site.id())
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
        kernels::dropout(x, self.prob, mix(seed, self.site))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_sites_have_distinct_ids_in_forward_order() {
        let mut ids = vec![DropoutSite::Embeddings.id()];
        for layer in 0..48 {
            ids.push(DropoutSite::AttentionProbs { layer }.id());
            ids.push(DropoutSite::AttentionOutput { layer }.id());
            ids.push(DropoutSite::FeedForwardOutput { layer }.id());
        }
        // consecutive in the order the forward pass meets them, hence all distinct
        let expected: Vec<u64> = (0..ids.len() as u64).collect();
        assert_eq!(ids, expected);
    }
    use crate::{Cpu, CpuTrain};

    /// transformers' `gelu_new` (`NewGELUActivation`) and `relu` at a few points.
    #[test]
    fn gelu_tanh_and_relu() {
        let dev = Default::default();
        let xs = [-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0];
        let x = Tensor::<Cpu, 1>::from_floats(xs, &dev);
        let tanh_approx = |x: f64| {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
        };
        let got = Activation::GeluTanh
            .apply(x.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        for (&x, g) in xs.iter().zip(&got) {
            let want = tanh_approx(x as f64) as f32;
            assert!((g - want).abs() < 1e-6, "gelu_new({x}) = {g}, want {want}");
        }
        // known values of gelu_new: close to, but not exactly, the exact GELU
        assert!((got[5] - 0.841_192).abs() < 1e-5, "{}", got[5]);
        assert!((got[1] + 0.158_808).abs() < 1e-5, "{}", got[1]);
        let relu = Activation::Relu
            .apply(x.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(relu, vec![0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 3.0]);
        let exact = Activation::Gelu
            .apply(x)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert!((exact[5] - 0.841_344_7).abs() < 1e-6);
    }

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
