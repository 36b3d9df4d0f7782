//! One P-tuning step equals the PyTorch reference's: loss, prompt-encoder gradients and the
//! weights after one Adam step (fixture: tests/fixtures/make_fixtures.py, `grad_step`).

mod common;

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::{GradientsParams, Optimizer};
use common::*;
use ptune::CpuTrain;
use ptune::classifier::PromptClassifier;
use ptune::data::Batch;
use ptune::model::ModelDir;
use ptune::model::host::to_host;
use ptune::model::prompt_encoder::{PromptEncoder, PromptEncoderKind};
use ptune::model::tensors::{RawTensor, read_safetensors};
use ptune::train::optim::FusedAdam;
use serde_json::Value;

fn compare(
    what: &str,
    ours: &BTreeMap<String, RawTensor>,
    want: &BTreeMap<String, RawTensor>,
    tol: f32,
) {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: names"
    );
    for (k, w) in want {
        let o = &ours[k];
        assert_eq!(o.shape, w.shape, "{what} {k}: shape");
        let d = max_abs_diff(&o.data, &w.data);
        assert!(d <= tol, "{what} {k}: max abs diff {d:e} > {tol:e}");
    }
}

#[test]
fn one_ptuning_step_matches_pytorch() {
    let fx: Value =
        serde_json::from_slice(&std::fs::read(fixture("grad_step.json")).unwrap()).unwrap();
    let tensors = read_safetensors(&fixture("grad_step.safetensors")).unwrap();
    let device = Default::default();
    let dir = ModelDir::open(&zh_mini()).unwrap();
    let lm = dir.load::<CpuTrain>(&device).unwrap().no_grad();
    let prompt = PromptEncoder::<CpuTrain>::from_tensors(
        PromptEncoderKind::Lstm,
        &with_prefix(&tensors, "init."),
        &device,
    )
    .unwrap();
    let model = PromptClassifier::new(lm, Some(prompt));
    // no dropout seed: dropout off, as in the fixture

    let rows: Vec<Vec<u32>> = fx["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    let (b, l) = (rows.len(), rows[0].len());
    let pseudo: Vec<usize> = fx["pseudo_positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let batch = Batch {
        batch_size: b,
        seq_len: l,
        ids: rows.concat(),
        token_types: vec![0; b * l],
        attention: fx["attention_mask"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect::<Vec<_>>()
            })
            .collect(),
        mask_positions: (0..b).map(|i| i * l + 5).collect(),
        pseudo_positions: (0..b)
            .flat_map(|i| pseudo.iter().enumerate().map(move |(k, p)| (i * l + p, k)))
            .collect(),
        labels: vec![0; b],
        targets: fx["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t[0].as_u64().unwrap() as usize,
                    t[1].as_u64().unwrap() as u32,
                )
            })
            .collect(),
    };

    let loss = model.loss(&batch, None, &device);
    let loss_value = to_host(loss.clone()).data[0];
    let want_loss = fx["loss"].as_f64().unwrap() as f32;
    assert!(
        (loss_value - want_loss).abs() <= 1e-4,
        "loss {loss_value} vs {want_loss}"
    );

    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let prompt = model.prompt.as_ref().unwrap();
    let ours = prompt.named_grads(&grads);

    compare("gradient", &ours, &with_prefix(&tensors, "grad."), 1e-4);
    // frozen LM: no gradient is computed for its weights
    assert!(
        grads
            .get::<ptune::Cpu, 2>(model.lm.bert.embeddings.word_embeddings.weight.id)
            .is_none()
    );
    let largest = ours
        .values()
        .flat_map(|t| t.data.iter())
        .fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(
        largest > 1e-3,
        "gradients are too small for the comparison to mean anything ({largest:e})"
    );

    let lr = fx["lr"].as_f64().unwrap();
    // the optimizer `ptune train` uses for the recipe's Adam
    let adam = || {
        FusedAdam {
            eps: fx["adam_eps"].as_f64().unwrap(),
            ..FusedAdam::adam(fx["weight_decay"].as_f64().unwrap())
        }
        .init::<CpuTrain, PromptClassifier<CpuTrain>>()
    };
    let want_after = with_prefix(&tensors, "after.");
    let want_grads = with_prefix(&tensors, "grad.");

    // (a) The optimizer alone: the reference's own gradients through our Adam step give the
    // reference's weights (same eps, L2 weight decay, bias correction).
    let reference_grads = grads_from_named(&want_grads, &device);
    let stepped = adam().step(lr, model.clone(), reference_grads);
    compare(
        "Adam step from the reference's gradients",
        &stepped.prompt.as_ref().unwrap().named_tensors(),
        &want_after,
        1e-5,
    );

    // (b) The whole step with our gradients. Adam's first step is g' / (|g'| + eps) with
    // g' = g + weight_decay * w: where |g'| is below ~1e-6 (g and the decay term cancel) it
    // amplifies float noise in the gradient, so those few elements are only checked to stay
    // within two learning rates (measured: every element off by more than 1e-4 had |g'| < 8e-8).
    let init = with_prefix(&tensors, "init.");
    let wd = fx["weight_decay"].as_f64().unwrap() as f32;
    let word_before = to_host(model.lm.bert.embeddings.word_embeddings.weight.val()).data;
    let model = adam().step(lr, model, grads);
    let ours = model.prompt.as_ref().unwrap().named_tensors();
    let (mut checked, mut noisy) = (0usize, 0usize);
    for (k, want) in &want_after {
        for (i, (o, w)) in ours[k].data.iter().zip(&want.data).enumerate() {
            let effective = want_grads[k].data[i] + wd * init[k].data[i];
            let tol = if effective.abs() >= 1e-6 {
                checked += 1;
                1e-4
            } else {
                noisy += 1;
                2.0 * lr as f32
            };
            assert!(
                (o - w).abs() <= tol,
                "{k}[{i}]: {o} vs {w} (reference grad + decay {effective:e})"
            );
        }
    }
    assert!(
        noisy * 20 < checked,
        "too many ill-conditioned elements: {noisy} vs {checked}"
    );
    eprintln!(
        "after one step: {checked} elements within 1e-4, {noisy} with |grad + decay| < 1e-6 within 2 lr"
    );
    assert_eq!(
        to_host(model.lm.bert.embeddings.word_embeddings.weight.val()).data,
        word_before,
        "frozen LM changed"
    );
}

/// Gradients in PyTorch naming turned into burn gradients: building an encoder from them maps
/// names to the same (name-derived) parameter ids and layouts as the trained encoder.
fn grads_from_named(
    named: &BTreeMap<String, RawTensor>,
    device: &burn::tensor::Device<ptune::Cpu>,
) -> GradientsParams {
    struct Collect(GradientsParams);
    impl burn::module::ModuleVisitor<ptune::Cpu> for Collect {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<ptune::Cpu, D>>,
        ) {
            self.0.register(param.id, param.val());
        }
    }
    let as_encoder =
        PromptEncoder::<ptune::Cpu>::from_tensors(PromptEncoderKind::Lstm, named, device).unwrap();
    let mut c = Collect(GradientsParams::new());
    as_encoder.visit(&mut c);
    c.0
}
