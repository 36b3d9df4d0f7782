//! `ptune selftest`: checks an install on any device in seconds, against values committed with
//! the source: the shipped zh-mini's masked-LM logits (from transformers: the parity fixture
//! `tests/fixtures/zh_mini_parity.json`) and one P-tuning training step (the loss and the
//! prompt encoder's gradients, dropout off; written on CPU by `ptune selftest
//! --write-reference`, and that CPU step is itself checked against PyTorch by
//! `tests/grad_parity.rs`), plus the device's Adam step against its formula.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::classifier::PromptClassifier;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::host::to_host;
use crate::model::prompt_encoder::{PromptEncoder, PromptEncoderKind};
use crate::model::{Kernels, ModelDir, TrainBackend};
use crate::train::optim::FusedAdam;

const LOGITS: &str = include_str!("../tests/fixtures/zh_mini_parity.json");
const STEP_BATCH: &str = include_str!("../tests/fixtures/grad_step.json");
/// The committed result of [`train_step`] on CPU.
pub const STEP_REFERENCE: &str = include_str!("selftest_reference.json");

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked, for the report.
    pub name: String,
    /// Number of values compared.
    pub compared: usize,
    /// Largest difference found (absolute, relative for sums of many values).
    pub max_abs_diff: f64,
    /// The largest difference that still passes.
    pub tolerance: f64,
}

impl Check {
    /// Whether `max_abs_diff` is within `tolerance`.
    pub fn passed(&self) -> bool {
        self.max_abs_diff <= self.tolerance
    }
}

fn bad_fixture(what: &str) -> Error {
    Error::invalid(format!("selftest: the built-in {what} is malformed"))
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// Logits of `model_dir` (the shipped zh-mini) against transformers' at the top-5 ids of
/// every position of 21 texts.
pub fn logits<B: Kernels>(model_dir: &ModelDir, device: &B::Device) -> Result<Check> {
    let fx: Value = serde_json::from_str(LOGITS).map_err(|_| bad_fixture("logits fixture"))?;
    let cases = fx["cases"]
        .as_array()
        .ok_or_else(|| bad_fixture("logits fixture"))?;
    let largest_id = cases
        .iter()
        .flat_map(|c| u32s(&c["ids"]))
        .max()
        .unwrap_or(0) as usize;
    if largest_id >= model_dir.config.vocab_size {
        return Err(Error::invalid(
            "selftest: the reference values belong to the shipped zh-mini; `model` is another model",
        ));
    }
    let lm = model_dir.load::<B>(device)?;
    let (mut worst, mut n) = (0.0f64, 0usize);
    for case in cases {
        let ids = u32s(&case["ids"]);
        let l = ids.len();
        let t = |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [1, l]), device);
        let logits = lm.forward(t(ids.iter().map(|&x| x as i64).collect()), t(vec![1; l]));
        let crate::model::host::RawTensor { shape, data, .. } = to_host(logits);
        let v = shape[2];
        for row in case["rows"]
            .as_array()
            .ok_or_else(|| bad_fixture("logits fixture"))?
        {
            let pos = row["pos"].as_u64().unwrap_or(0) as usize;
            let top = u32s(&row["top_ids"]);
            let want: Vec<f64> = row["top_logits"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                .unwrap_or_default();
            if top.len() != want.len() || pos >= l {
                return Err(bad_fixture("logits fixture"));
            }
            if top.iter().any(|&id| id as usize >= v) {
                return Err(Error::invalid(
                    "selftest: the reference values belong to the shipped zh-mini; `model` is another model",
                ));
            }
            for (id, w) in top.iter().zip(want) {
                let got = data[pos * v + *id as usize] as f64;
                worst = worst.max((got - w).abs());
                n += 1;
            }
        }
    }
    Ok(Check {
        name: "zh-mini logits vs transformers".into(),
        compared: n,
        max_abs_diff: worst,
        tolerance: 1e-4,
    })
}

/// Per tensor: (sum, sum of squares, first 8 values).
pub type TensorStats = BTreeMap<String, (f64, f64, Vec<f32>)>;

fn stats(tensors: BTreeMap<String, crate::model::host::RawTensor>) -> TensorStats {
    tensors
        .into_iter()
        .map(|(k, t)| {
            let sum: f64 = t.data.iter().map(|&x| x as f64).sum();
            let sq: f64 = t.data.iter().map(|&x| (x as f64) * (x as f64)).sum();
            (k, (sum, sq, t.data.iter().take(8).copied().collect()))
        })
        .collect()
}

/// What one P-tuning step computes that does not depend on the device beyond float rounding:
/// the loss and the prompt encoder's gradients. (The weights after the first Adam step do
/// depend on it: that step moves every weight by about `lr · sign(gradient)`, so a gradient
/// that is zero up to rounding moves by ±lr depending on the device's rounding. The step
/// itself is checked on the device, against its formula, by [`train_step`].)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    /// Mean cross-entropy loss of the batch before the step.
    pub loss: f64,
    /// The prompt encoder's gradients under the PyTorch module's names.
    pub grads: TensorStats,
}

/// Learning rate and (L2) weight decay of the selftest's Adam step.
const STEP_LR: f64 = 1e-2;
const STEP_WEIGHT_DECAY: f64 = 5e-4;
/// Two units in the last place of an f32, relative.
const F32_2ULP: f64 = 2.0 * f32::EPSILON as f64;

/// One P-tuning step on the fixture batch (frozen zh-mini, LSTM prompt encoder initialised
/// with seed 0, dropout off, Adam lr 1e-2): its [`StepResult`], and the check that the
/// device's Adam step moved every weight as Adam's first-step formula says for the gradients
/// the device computed (`θ − lr·g'/(|g'| + ε)`, `g' = g + wd·θ`), to within what the f32
/// rounding of `g'` allows where `g` and `wd·θ` nearly cancel.
pub fn train_step<B: TrainBackend>(
    model_dir: &ModelDir,
    device: &B::Device,
) -> Result<(StepResult, Check)> {
    let fx: Value = serde_json::from_str(STEP_BATCH).map_err(|_| bad_fixture("step batch"))?;
    let rows: Vec<Vec<u32>> = fx["ids"]
        .as_array()
        .ok_or_else(|| bad_fixture("step batch"))?
        .iter()
        .map(u32s)
        .collect();
    let (b, l) = (rows.len(), rows.first().map_or(0, |r| r.len()));
    let pseudo: Vec<usize> = u32s(&fx["pseudo_positions"])
        .iter()
        .map(|&x| x as usize)
        .collect();
    let mask_pos = fx["mask_position"].as_u64().unwrap_or(5) as usize;
    let attention: Vec<u32> = fx["attention_mask"]
        .as_array()
        .ok_or_else(|| bad_fixture("step batch"))?
        .iter()
        .flat_map(u32s)
        .collect();
    let targets: Vec<(usize, u32)> = fx["targets"]
        .as_array()
        .ok_or_else(|| bad_fixture("step batch"))?
        .iter()
        .map(|t| {
            (
                t[0].as_u64().unwrap_or(0) as usize,
                t[1].as_u64().unwrap_or(0) as u32,
            )
        })
        .collect();
    if b == 0 || attention.len() != b * l || targets.iter().any(|t| t.0 >= b * l) {
        return Err(bad_fixture("step batch"));
    }
    let batch = Batch {
        batch_size: b,
        seq_len: l,
        ids: rows.concat(),
        token_types: vec![0; b * l],
        attention,
        mask_positions: (0..b).map(|i| i * l + mask_pos).collect(),
        pseudo_positions: (0..b)
            .flat_map(|i| pseudo.iter().enumerate().map(move |(k, p)| (i * l + p, k)))
            .collect(),
        labels: vec![0; b],
        targets,
    };
    let lm = model_dir.load::<B>(device)?.no_grad();
    let prompt = PromptEncoder::init(
        PromptEncoderKind::Lstm,
        lm.token_embeddings(&[2, 3, 4, 5, 6, 7, 8, 9]),
        &mut StdRng::seed_from_u64(0),
        device,
    );
    let model = PromptClassifier::new(lm, Some(prompt));
    let loss = model.loss(&batch, None, device);
    let loss_value = to_host(loss.clone()).data[0] as f64;
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let encoder = model.prompt.as_ref().expect("set above");
    let (before, grad_tensors) = (encoder.named_tensors(), encoder.named_grads(&grads));
    let adam_config = FusedAdam::adam(STEP_WEIGHT_DECAY);
    let (wd, eps) = (adam_config.weight_decay, adam_config.eps);
    let mut optim = adam_config.init();
    let model = optim.step(STEP_LR, model, grads);
    let after = model.prompt.as_ref().expect("set above").named_tensors();
    let (mut worst, mut n) = (0.0f64, 0);
    for (k, theta) in &before {
        let (g, new) = (&grad_tensors[k], &after[k]);
        for ((&t, &g), &new) in theta.data.iter().zip(&g.data).zip(&new.data) {
            let (t, g) = (t as f64, g as f64);
            let decay = wd * t;
            let gd = g + decay;
            let want = t - STEP_LR * gd / (gd.abs() + eps);
            // `g + wd·θ` is computed in f32 on the device; where the two nearly cancel, its
            // rounding (2 ulp of the larger term) moves the update by up to this much.
            let slack =
                STEP_LR * eps / (gd.abs() + eps).powi(2) * (g.abs() + decay.abs()) * F32_2ULP;
            worst = worst.max((new as f64 - want).abs() - slack);
            n += 1;
        }
    }
    let adam = Check {
        name: "the Adam step on this device (prompt encoder, against the formula, beyond f32 rounding of g + wd·θ)".into(),
        compared: n,
        max_abs_diff: worst,
        tolerance: 1e-6,
    };
    Ok((
        StepResult {
            loss: loss_value,
            grads: stats(grad_tensors),
        },
        adam,
    ))
}

/// [`train_step`]'s loss and gradients against the committed reference: the loss to 1e-4
/// (absolute), the gradients relative to the size of their tensor (its L2 norm `‖g‖`) — the
/// sum and the first values as `|ours − ref| / ‖g‖`, the sum of squares as
/// `|ours − ref| / ‖g‖²` — to 1e-3. A GPU sums in another order and has its own `exp`/`log`:
/// on Mesa's software Vulkan driver the gradients differ from the CPU's by up to 6e-4 of
/// their norm (the loss by 5e-6), while a wrong kernel moves them by order 1.
pub fn compare_step(ours: &StepResult, reference: &StepResult) -> Result<Vec<Check>> {
    if ours.grads.keys().ne(reference.grads.keys()) {
        return Err(Error::invalid(
            "selftest: the prompt encoder's tensors differ in name",
        ));
    }
    let (mut worst, mut n) = (0.0f64, 0);
    for (k, (s, q, first)) in &ours.grads {
        let (rs, rq, rfirst) = &reference.grads[k];
        let norm = rq.sqrt().max(1e-30);
        worst = worst.max((s - rs).abs() / norm);
        worst = worst.max((q - rq).abs() / (norm * norm));
        for (a, b) in first.iter().zip(rfirst) {
            worst = worst.max((a - b).abs() as f64 / norm);
        }
        n += 2 + first.len();
    }
    Ok(vec![
        Check {
            name: "one P-tuning step: the loss".into(),
            compared: 1,
            max_abs_diff: (ours.loss - reference.loss).abs(),
            tolerance: 1e-4,
        },
        Check {
            name: "one P-tuning step: prompt-encoder gradients (relative to each tensor's norm)"
                .into(),
            compared: n,
            max_abs_diff: worst,
            tolerance: 1e-3,
        },
    ])
}
