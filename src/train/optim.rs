//! Adam and AdamW as one fused update per parameter (see [`Kernels::adam_step`]).
//!
//! burn's `Adam`/`AdamW` compute the same update as about a dozen separate tensor operations,
//! each a pass over every parameter; for fine-tuning (8.8 M parameters, 5.4 M of them the word
//! embeddings) that was ~10% of a CPU step. The state (moments and step count) is a burn record,
//! so checkpoints save and restore it like any optimizer's.

use burn::module::AutodiffModule;
use burn::optim::SimpleOptimizer;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::record::Record;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::model::kernels::{AdamStep, Kernels, TrainBackend};

/// Adam or AdamW computed as one fused kernel per parameter; use [`FusedAdam::adam`] or
/// [`FusedAdam::adamw`] for the usual settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdam {
    /// Decay rate of the first moment (0.9).
    pub beta1: f64,
    /// Decay rate of the second moment (0.999).
    pub beta2: f64,
    /// Added to the square root of the bias-corrected second moment (1e-8).
    pub eps: f64,
    /// Weight decay coefficient: an L2 term added to the gradient, or decoupled decay when
    /// `decoupled`.
    pub weight_decay: f64,
    /// AdamW's decoupled decay instead of Adam's L2 term.
    pub decoupled: bool,
}

impl FusedAdam {
    /// torch.optim.Adam(lr, weight_decay) (betas 0.9/0.999, eps 1e-8).
    pub fn adam(weight_decay: f64) -> Self {
        FusedAdam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            decoupled: false,
        }
    }

    /// torch.optim.AdamW(lr, weight_decay).
    pub fn adamw(weight_decay: f64) -> Self {
        FusedAdam {
            decoupled: true,
            ..Self::adam(weight_decay)
        }
    }

    /// The optimizer for a module trained on `B`.
    pub fn init<B: TrainBackend, M: AutodiffModule<B>>(self) -> OptimizerAdaptor<FusedAdam, M, B> {
        OptimizerAdaptor::from(self)
    }
}

/// Optimizer state of one parameter tensor, saved in checkpoints.
#[derive(Record, Clone)]
pub struct FusedAdamState<B: Backend, const D: usize> {
    /// First moment (exponential moving average of the gradient).
    pub m: Tensor<B, D>,
    /// Second moment (exponential moving average of the squared gradient).
    pub v: Tensor<B, D>,
    /// Updates done so far.
    pub step: usize,
}

impl<B: Kernels> SimpleOptimizer<B> for FusedAdam {
    type State<const D: usize> = FusedAdamState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (m, v, step) = match state {
            Some(s) => (s.m, s.v, s.step + 1),
            None => (tensor.zeros_like(), tensor.zeros_like(), 1),
        };
        let h = AdamStep {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            decoupled: self.decoupled,
            step,
        };
        let prim = |t: Tensor<B, D>| t.into_primitive().tensor();
        let (p, m, v) = B::adam_step(prim(tensor), prim(grad), prim(m), prim(v), &h);
        let wrap = |t| Tensor::<B, D>::from_primitive(TensorPrimitive::Float(t));
        (
            wrap(p),
            Some(FusedAdamState {
                m: wrap(m),
                v: wrap(v),
                step,
            }),
        )
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        FusedAdamState {
            m: state.m.to_device(device),
            v: state.v.to_device(device),
            step: state.step,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cpu, CpuTrain};
    use burn::module::Module;
    use burn::optim::decay::WeightDecayConfig;
    use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, Optimizer};
    use burn::tensor::Distribution;

    #[derive(Module, Debug)]
    struct Toy<B: Backend> {
        w: burn::module::Param<Tensor<B, 2>>,
    }

    /// Three steps of the fused optimizer against burn's own Adam/AdamW (same formulas).
    #[test]
    fn matches_burn_adam_and_adamw() {
        let dev = Default::default();
        let w0 = Tensor::<Cpu, 2>::random([37, 19], Distribution::Normal(0.0, 1.0), &dev);
        let run = |fused: bool, decoupled: bool| {
            let mut toy = Toy {
                w: burn::module::Param::from_tensor(Tensor::<CpuTrain, 2>::from_inner(w0.clone())),
            };
            let mut fused_opt = if decoupled {
                FusedAdam::adamw(0.01)
            } else {
                FusedAdam::adam(5e-4)
            }
            .init::<CpuTrain, Toy<CpuTrain>>();
            let mut adam = AdamConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay(Some(WeightDecayConfig::new(5e-4)))
                .init::<CpuTrain, Toy<CpuTrain>>();
            let mut adamw = AdamWConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay(0.01)
                .init::<CpuTrain, Toy<CpuTrain>>();
            for step in 0..3 {
                let loss = (toy.w.val() * toy.w.val().sin())
                    .sum()
                    .mul_scalar(1.0 + step as f64);
                let grads = GradientsParams::from_grads(loss.backward(), &toy);
                toy = match (fused, decoupled) {
                    (true, _) => fused_opt.step(1e-2, toy, grads),
                    (false, false) => adam.step(1e-2, toy, grads),
                    (false, true) => adamw.step(1e-2, toy, grads),
                };
            }
            toy.w.val().inner()
        };
        for decoupled in [false, true] {
            let d: f32 = (run(true, decoupled) - run(false, decoupled))
                .abs()
                .max()
                .into_scalar();
            assert!(d < 1e-6, "decoupled {decoupled}: {d}");
            let moved: f32 = (run(true, decoupled) - w0.clone())
                .abs()
                .max()
                .into_scalar();
            assert!(moved > 1e-3);
        }
    }
}
