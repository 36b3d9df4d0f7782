//! One deep-prompt (P-tuning v2) step equals PEFT's prefix tuning: loss, gradients of the
//! prefixes (and of the reparameterisation MLP and the linear head), and the weights after one
//! optimizer step (fixture: tests/fixtures/make_fixtures.py `deep_step`).

mod common;

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::ElementConversion;
use common::*;
use ptune::CpuTrain;
use ptune::classifier::{PromptClassifier, linear_head_from_tensors, linear_head_tensors};
use ptune::data::Batch;
use ptune::model::ModelDir;
use ptune::model::deep_prompt::DeepPrompt;
use ptune::model::host::to_host;
use ptune::model::tensors::{RawTensor, read_safetensors};
use ptune::train::optim::FusedAdam;
use serde_json::Value;

/// Trainable tensors of the model, PEFT/PyTorch names (`deep.*`, `head.*`).
fn named(model: &PromptClassifier<CpuTrain>) -> BTreeMap<String, RawTensor> {
    let mut out = BTreeMap::new();
    for (k, t) in model.deep.as_ref().unwrap().named_tensors() {
        out.insert(format!("deep.{k}"), t);
    }
    if let Some(h) = &model.head {
        for (k, t) in linear_head_tensors(h) {
            out.insert(format!("head.{k}"), t);
        }
    }
    out
}

fn named_grads(
    model: &PromptClassifier<CpuTrain>,
    grads: &GradientsParams,
) -> BTreeMap<String, RawTensor> {
    let mut out = BTreeMap::new();
    for (k, t) in model.deep.as_ref().unwrap().named_grads(grads) {
        out.insert(format!("deep.{k}"), t);
    }
    if let Some(h) = &model.head {
        let w = to_host(grads.get::<ptune::Cpu, 2>(h.weight.id).unwrap());
        out.insert("head.weight".into(), w.transposed());
        let b = grads
            .get::<ptune::Cpu, 1>(h.bias.as_ref().unwrap().id)
            .unwrap();
        out.insert("head.bias".into(), to_host(b));
    }
    out
}

fn check_case(name: &str) {
    let fx: Value =
        serde_json::from_slice(&std::fs::read(fixture("deep_step.json")).unwrap()).unwrap();
    let case = &fx["cases"][name];
    let tensors = read_safetensors(&fixture("deep_step.safetensors")).unwrap();
    let init = with_prefix(&tensors, &format!("{name}.init."));
    let want_grads = with_prefix(&tensors, &format!("{name}.grad."));
    let want_after = with_prefix(&tensors, &format!("{name}.after."));
    let device = Default::default();
    let dir = ModelDir::open(&zh_mini()).unwrap();
    let lm = dir.load::<CpuTrain>(&device).unwrap().no_grad();
    let shape = lm.prefix_shape();
    let deep =
        DeepPrompt::<CpuTrain>::from_tensors(&with_prefix(&init, "deep."), shape, &device).unwrap();
    assert_eq!(
        deep.prefix_len() as u64,
        case["prefix_len"].as_u64().unwrap()
    );
    let head = (case["head"] == "linear").then(|| {
        linear_head_from_tensors::<CpuTrain>(&with_prefix(&init, "head."), 256, 2, &device).unwrap()
    });
    let mut model = PromptClassifier::new(lm, None);
    model.deep = Some(deep);
    model.head = head;
    assert_eq!(named(&model), init, "{name}: weights read back unchanged");

    let rows: Vec<Vec<u32>> = fx["ids"].as_array().unwrap().iter().map(u32s).collect();
    let (b, l) = (rows.len(), rows[0].len());
    let m = fx["mask_position"].as_u64().unwrap() as usize;
    let batch = Batch {
        batch_size: b,
        seq_len: l,
        ids: rows.concat(),
        token_types: vec![0; b * l],
        attention: fx["attention_mask"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(u32s)
            .collect(),
        mask_positions: (0..b).map(|i| i * l + m).collect(),
        pseudo_positions: Vec::new(),
        labels: u32s(&fx["labels"])
            .into_iter()
            .map(|x| x as usize)
            .collect(),
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
    // no dropout seed: dropout off, as in the fixture
    let loss = model.loss(&batch, None, &device);
    let value: f64 = loss.clone().into_scalar().elem();
    let want = case["loss"].as_f64().unwrap();
    assert!(
        (value - want).abs() <= 1e-4,
        "{name}: loss {value} vs {want}"
    );
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let ours = named_grads(&model, &grads);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        want_grads.keys().collect::<Vec<_>>()
    );
    // every gradient within 1e-4, and within 1e-3 of the largest gradient of its tensor
    for (k, w) in &want_grads {
        let d = max_abs_diff(&ours[k].data, &w.data);
        let largest = w.data.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        assert!(
            d <= 1e-4 && d <= 1e-3 * largest,
            "{name} gradient {k}: max abs diff {d:e} (largest gradient {largest:e})"
        );
        eprintln!("{name} gradient {k}: max abs diff {d:.2e}, largest {largest:.2e}");
    }
    assert!(
        grads
            .get::<ptune::Cpu, 2>(model.lm.bert.embeddings.word_embeddings.weight.id)
            .is_none(),
        "frozen LM got a gradient"
    );

    let lr = fx["lr"].as_f64().unwrap();
    let wd = case["weight_decay"].as_f64().unwrap();
    let adamw = case["optimizer"] == "adamw";
    let optim = if adamw {
        FusedAdam::adamw(wd)
    } else {
        FusedAdam::adam(wd)
    };
    let optim = FusedAdam {
        eps: fx["adam_eps"].as_f64().unwrap(),
        ..optim
    };
    let adam = || optim.init::<CpuTrain, PromptClassifier<CpuTrain>>();
    // (a) The optimizer alone: the reference's gradients through our step give the reference's
    // weights, every element.
    let reference = adam().step(lr, model.clone(), grads_from_named(&model, &want_grads));
    let after = named(&reference);
    for (k, w) in &want_after {
        let d = max_abs_diff(&after[k].data, &w.data);
        assert!(
            d <= 1e-5,
            "{name} {k}: our step from PEFT's gradients off by {d:e}"
        );
    }
    // (b) The whole step with our gradients. Adam's first step is lr · g' / (|g'| + eps): where
    // |g'| is tiny (below 1e-6) it turns float noise in the gradient into a change of up to one
    // learning rate, so those elements are only checked to stay within two learning rates.
    let stepped = adam().step(lr, model, grads);
    let after = named(&stepped);
    let (mut checked, mut noisy) = (0usize, 0usize);
    for (k, w) in &want_after {
        for (i, (o, x)) in after[k].data.iter().zip(&w.data).enumerate() {
            let g = want_grads[k].data[i]
                + if adamw {
                    0.0
                } else {
                    wd as f32 * init[k].data[i]
                };
            let tol = if g.abs() >= 1e-6 {
                checked += 1;
                1e-4
            } else {
                noisy += 1;
                2.0 * lr as f32
            };
            assert!(
                (o - x).abs() <= tol,
                "{name} {k}[{i}] after the step: {o} vs {x}"
            );
        }
    }
    assert!(
        checked >= 1000,
        "{name}: only {checked} well-conditioned weights"
    );
    eprintln!(
        "{name}: loss {value:.6} (PEFT {want:.6}); after the step {checked} weights within 1e-4, {noisy} with |g'| < 1e-6 within 2 lr"
    );
}

#[test]
fn deep_prompt_step_matches_peft_prefix_tuning() {
    check_case("plain_mlm");
}

#[test]
fn reparameterised_prefixes_with_linear_head_match_peft() {
    check_case("mlp_linear");
}

/// Gradients in PEFT naming as burn gradients of `model`'s parameters.
fn grads_from_named(
    model: &PromptClassifier<CpuTrain>,
    named: &BTreeMap<String, RawTensor>,
) -> GradientsParams {
    let device = Default::default();
    let mut grads = GradientsParams::new();
    let deep = DeepPrompt::<ptune::Cpu>::from_tensors(
        &with_prefix(named, "deep."),
        model.lm.prefix_shape(),
        &device,
    )
    .unwrap();
    let ours = model.deep.as_ref().unwrap();
    grads.register(ours.embedding.id, deep.embedding.val());
    if let (Some(o), Some(t)) = (&ours.transform, &deep.transform) {
        for (a, b) in [(&o.linear1, &t.linear1), (&o.linear2, &t.linear2)] {
            grads.register(a.weight.id, b.weight.val());
            grads.register(a.bias.as_ref().unwrap().id, b.bias.as_ref().unwrap().val());
        }
    }
    if let Some(h) = &model.head {
        let t =
            linear_head_from_tensors::<ptune::Cpu>(&with_prefix(named, "head."), 256, 2, &device)
                .unwrap();
        grads.register(h.weight.id, t.weight.val());
        grads.register(h.bias.as_ref().unwrap().id, t.bias.as_ref().unwrap().val());
    }
    grads
}
