//! One training step's loss and gradients, shared by classifier training and pretraining.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::ElementConversion;

use crate::classifier::PromptClassifier;
use crate::data::Batch;
use crate::model::TrainBackend;
use crate::model::kernels::mix;

/// Loss (mean over the batch's targets) and its gradients. The batch's rows are split into
/// `parts` groups computed on parallel threads, each with its own autodiff graph and dropout
/// stream, and the gradients summed, so the result is the same step up to float rounding.
/// Each group is padded as the backend wants it ([`PromptClassifier::shaped`], with
/// `pad_id`). Loss and gradients are multiplied by `scale` (gradient accumulation weights).
pub fn loss_and_grads<B: TrainBackend>(
    model: &PromptClassifier<B>,
    batch: &Batch,
    parts: usize,
    scale: f64,
    step_seed: u64,
    pad_id: u32,
    device: &B::Device,
) -> (f64, GradientsParams) {
    use rayon::prelude::*;
    let mut parts: Vec<Batch> = batch
        .split_rows(parts)
        .into_iter()
        .map(|p| model.shaped(p, pad_id))
        .collect();
    // A group without targets adds nothing (and its mean loss would be 0/0).
    parts.retain(|p| !p.targets.is_empty());
    let total = batch.targets.len() as f64;
    let results: Vec<(f64, GradientsParams)> = parts
        .par_iter()
        .enumerate()
        .map(|(i, part)| {
            // `fork` gives each part its own autodiff leaves (same parameter ids), so the
            // parts' graphs stay separate and backpropagate concurrently.
            let model = if parts.len() > 1 {
                model.clone().fork(device)
            } else {
                model.clone()
            };
            let weight = scale * part.targets.len() as f64 / total;
            let loss = model
                .loss(part, Some(mix(step_seed, i as u64)), device)
                .mul_scalar(weight);
            let value: f64 = loss.clone().into_scalar().elem();
            (value, GradientsParams::from_grads(loss.backward(), &model))
        })
        .collect();
    let mut accumulator = GradientsAccumulator::new();
    let mut value = 0.0;
    for (v, g) in results {
        value += v;
        accumulator.accumulate(model, g);
    }
    (value, accumulator.grads())
}
