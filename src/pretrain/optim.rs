//! AdamW for pretraining, as BERT recipes use it: no weight decay on biases and LayerNorm
//! weights, and the gradients clipped to a global norm first (`clip_grad_norm_`).
//!
//! burn's optimizer adaptor applies one configuration to every parameter and clips each
//! parameter's gradient on its own, so this is a small optimizer of its own: a module mapper
//! that runs the fused [`Kernels::adam_step`] per parameter. Its state is keyed by the
//! parameters' Hugging Face names and saved as safetensors, so checkpoints are portable.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorPrimitive};

use crate::model::host::to_host;
use crate::model::kernels::{AdamStep, Kernels, TrainBackend};
use crate::model::tensors::TensorMap;
use crate::model::weights::param_id;

/// First and second moments of one parameter, flat.
struct Moments<B: Backend> {
    m: Tensor<B, 1>,
    v: Tensor<B, 1>,
}

/// AdamW over every trainable parameter, with global-norm clipping and no decay on biases and
/// LayerNorm weights. Its moments are keyed by the parameters' Hugging Face names.
pub struct PretrainAdamW<B: TrainBackend> {
    /// Decay rate of the first moment (0.9).
    pub beta1: f64,
    /// Decay rate of the second moment (0.999).
    pub beta2: f64,
    /// Added to the square root of the bias-corrected second moment (1e-6).
    pub eps: f64,
    /// Decoupled weight decay, applied to every parameter except biases and LayerNorm weights.
    pub weight_decay: f64,
    /// Global gradient-norm limit (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Updates done so far.
    pub step: usize,
    names: HashMap<ParamId, String>,
    state: HashMap<ParamId, Moments<B::InnerBackend>>,
}

/// Biases and LayerNorm weights are not decayed (the BERT convention).
fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm"))
}

impl<B: TrainBackend> PretrainAdamW<B> {
    /// `names`: every trainable parameter's Hugging Face name (ids derive from them).
    pub fn new(names: &[String], weight_decay: f64, max_grad_norm: Option<f64>) -> Self {
        PretrainAdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            weight_decay,
            max_grad_norm,
            step: 0,
            names: names.iter().map(|n| (param_id(n), n.clone())).collect(),
            state: HashMap::new(),
        }
    }

    /// One update with learning rate `lr`; returns the gradients' global norm before clipping.
    pub fn step<M: AutodiffModule<B>>(
        &mut self,
        lr: f64,
        module: M,
        mut grads: GradientsParams,
    ) -> (M, f64) {
        let mut norm = SquaredNorm::<B> {
            grads: &grads,
            total: None,
        };
        module.visit(&mut norm);
        let norm: f64 = norm
            .total
            .map_or(0.0, |t| t.into_scalar().elem::<f64>().sqrt());
        let coef = match self.max_grad_norm {
            Some(max) if norm.is_finite() => (max / (norm + 1e-6)).min(1.0),
            _ => 1.0,
        };
        self.step += 1;
        let mut update = Update {
            opt: self,
            grads: &mut grads,
            lr,
            coef,
        };
        (module.map(&mut update), norm)
    }

    /// The moments as `m.<name>` / `v.<name>` host tensors (flat), for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        let mut names: Vec<(&ParamId, &String)> = self.names.iter().collect();
        names.sort_by(|a, b| a.1.cmp(b.1));
        for (id, name) in names {
            if let Some(s) = self.state.get(id) {
                let m = to_host(s.m.clone());
                let (shape, m, v) = (m.shape, m.data, to_host(s.v.clone()).data);
                out.push((format!("m.{name}"), shape.clone(), m));
                out.push((format!("v.{name}"), shape, v));
            }
        }
        out
    }

    /// Restores moments saved by [`Self::state_tensors`].
    pub fn load_state(
        &mut self,
        map: &TensorMap,
        step: usize,
        device: &burn::tensor::Device<B::InnerBackend>,
    ) -> Result<(), String> {
        self.state.clear();
        self.step = step;
        for (id, name) in &self.names {
            let (Some(m), Some(v)) = (map.get(&format!("m.{name}")), map.get(&format!("v.{name}")))
            else {
                continue;
            };
            if m.data.len() != v.data.len() {
                return Err(format!("optimizer moments of \"{name}\" differ in size"));
            }
            let t = |d: &Vec<f32>| {
                Tensor::<B::InnerBackend, 1>::from_data(
                    burn::tensor::TensorData::new(d.clone(), [d.len()]),
                    device,
                )
            };
            self.state.insert(
                *id,
                Moments {
                    m: t(&m.data),
                    v: t(&v.data),
                },
            );
        }
        if map.len() != 2 * self.state.len() {
            return Err("optimizer state has moments for unknown parameters".into());
        }
        Ok(())
    }
}

struct SquaredNorm<'a, B: TrainBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: TrainBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

struct Update<'a, B: TrainBackend> {
    opt: &'a mut PretrainAdamW<B>,
    grads: &'a mut GradientsParams,
    lr: f64,
    coef: f64,
}

impl<B: TrainBackend> ModuleMapper<B> for Update<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let inner = tensor.inner();
        let shape = inner.dims();
        let n: usize = shape.iter().product();
        let device = inner.device();
        let moments = self.opt.state.remove(&id).unwrap_or_else(|| Moments {
            m: Tensor::zeros([n], &device),
            v: Tensor::zeros([n], &device),
        });
        let decay = match self.opt.names.get(&id) {
            Some(name) if !decays(name) => 0.0,
            _ => self.opt.weight_decay,
        };
        let h = AdamStep {
            lr: self.lr,
            beta1: self.opt.beta1,
            beta2: self.opt.beta2,
            eps: self.opt.eps,
            weight_decay: decay,
            decoupled: true,
            step: self.opt.step,
        };
        let grad = if self.coef < 1.0 {
            grad.mul_scalar(self.coef)
        } else {
            grad
        };
        let prim = |t: Tensor<B::InnerBackend, 1>| t.into_primitive().tensor();
        let (p, m, v) = <B::InnerBackend as Kernels>::adam_step(
            prim(inner.reshape([n])),
            prim(grad.reshape([n])),
            prim(moments.m),
            prim(moments.v),
            &h,
        );
        let wrap = |t| Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(t));
        self.opt.state.insert(
            id,
            Moments {
                m: wrap(m),
                v: wrap(v),
            },
        );
        let new = Tensor::<B, D>::from_inner(wrap(p).reshape(shape)).require_grad();
        Param::from_mapped_value(id, new, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuTrain;
    use burn::module::Module;
    use burn::tensor::TensorData;

    #[derive(Module, Debug)]
    struct Toy<B: Backend> {
        w: Param<Tensor<B, 2>>,
        b: Param<Tensor<B, 1>>,
    }

    /// One step worked by hand: the global norm over all parameters, the first AdamW update
    /// of size lr, and decoupled decay on the weight but not on the bias.
    #[test]
    fn clips_globally_and_skips_decay_on_biases() {
        let dev = Default::default();
        let toy = Toy::<CpuTrain> {
            w: crate::model::weights::new_param("x.weight", vec![1.0, 2.0, 3.0, 4.0], [2, 2], &dev),
            b: crate::model::weights::new_param("x.bias", vec![1.0, 1.0], [2], &dev),
        };
        // loss = 10·Σw + 10·Σb: every gradient is 10, global norm sqrt(6)·10
        let loss = toy.w.val().sum().mul_scalar(10.0) + toy.b.val().sum().mul_scalar(10.0);
        let grads = GradientsParams::from_grads(loss.backward(), &toy);
        let mut opt =
            PretrainAdamW::<CpuTrain>::new(&["x.weight".into(), "x.bias".into()], 0.1, Some(1.0));
        let (toy, norm) = opt.step(0.01, toy, grads);
        assert!((norm - 600f64.sqrt()).abs() < 1e-3, "global norm {norm}");
        // first Adam step: update = lr · g/|g| (bias-corrected) = lr, whatever the clipping
        let w = toy.w.val().inner().into_data();
        let b = toy.b.val().inner().into_data();
        let expect_w: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .map(|x| x * (1.0 - 0.01 * 0.1) - 0.01)
            .collect();
        w.assert_approx_eq::<f32>(
            &TensorData::new(expect_w, [2, 2]),
            burn::tensor::Tolerance::absolute(1e-5),
        );
        b.assert_approx_eq::<f32>(
            &TensorData::new(vec![0.99f32, 0.99], [2]),
            burn::tensor::Tolerance::absolute(1e-5),
        );
        assert_eq!(opt.state_tensors().len(), 4);
    }
}
