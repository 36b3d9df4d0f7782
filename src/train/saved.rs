//! What a run saves of its model: the best-on-valid weights in `best/`, and the epoch
//! checkpoints (trainable weights, optimizer state, loop state) a resumed run restores.

use std::path::{Path, PathBuf};

use burn::optim::Optimizer;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::report::EpochRecord;
use super::run_dir::{RunDir, best_files};
use crate::classifier::{PromptClassifier, linear_head_from_tensors, linear_head_tensors};
use crate::error::{Error, Result};
use crate::model::ModelDir;
use crate::model::bert::BertForMaskedLM;
use crate::model::deep_prompt::DeepPrompt;
use crate::model::prompt_encoder::PromptEncoder;
use crate::model::tensors::{RawTensor, TensorMap, parse_safetensors, safetensors_bytes};
use crate::model::weights::Weights;

/// Resumable state written with every epoch checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct TrainerState {
    pub epoch: usize,
    pub step: usize,
    pub history: Vec<EpochRecord>,
    pub wall_seconds: f64,
}

const WEIGHTS: &str = "trainable.safetensors";
const OPTIMIZER: &str = "optimizer.bin";
const STATE: &str = "state.json";

fn recorder() -> BinBytesRecorder<FullPrecisionSettings> {
    BinBytesRecorder::<FullPrecisionSettings>::default()
}

/// The best-on-valid weights, in formats other tools read: the prompt encoder as
/// safetensors with PyTorch names; a trained LM as a Hugging Face model directory.
pub(super) fn save_best<B: Backend>(
    run: &RunDir,
    model: &PromptClassifier<B>,
    lm_trains: bool,
    model_dir: &ModelDir,
) -> Result<()> {
    let named = |map: std::collections::BTreeMap<String, RawTensor>| {
        let named: Vec<(String, Vec<usize>, Vec<f32>)> =
            map.into_iter().map(|(k, t)| (k, t.shape, t.data)).collect();
        to_safetensors(&named)
    };
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    if let Some(p) = &model.prompt {
        files.push((best_files::PROMPT_ENCODER, named(p.named_tensors())));
    }
    if let Some(d) = &model.deep {
        files.push((best_files::DEEP_PROMPT, named(d.named_tensors())));
    }
    if let Some(h) = &model.head {
        files.push((best_files::HEAD, named(linear_head_tensors(h))));
    }
    if lm_trains {
        let named: Vec<(String, Vec<usize>, Vec<f32>)> = (model.lm.hf_tensors().into_iter())
            .map(|(k, t)| (k, t.shape, t.data))
            .collect();
        files.push((best_files::LM_WEIGHTS, to_safetensors(&named)));
        for f in ["config.json", "vocab.txt"] {
            files.push((f, crate::error::read_file(&model_dir.dir.join(f))?));
        }
    }
    run.write_best(&files)
}

/// `model` with its trained parts replaced by the best-on-valid weights [`save_best`] wrote
/// (the frozen LM, which `best/` does not hold unless it trains, is kept).
pub(super) fn restore_best<B: Backend>(
    run: &RunDir,
    model: PromptClassifier<B>,
    config: &TrainConfig,
    model_dir: &ModelDir,
    device: &B::Device,
) -> Result<PromptClassifier<B>> {
    let mut tensors = |part: Part| -> Result<(PathBuf, TensorMap)> {
        let path = run.best_file(match part {
            Part::Prompt => best_files::PROMPT_ENCODER,
            Part::Deep => best_files::DEEP_PROMPT,
            Part::Head => best_files::HEAD,
            Part::Lm => best_files::LM_WEIGHTS,
        })?;
        let map = parse_safetensors(&crate::error::read_file(&path)?)
            .map_err(|m| Error::file(&path, m))?;
        Ok((path, map))
    };
    with_trained_parts(model, &mut tensors, config, model_dir, device)
}

/// A trained part of a classifier, as saved.
#[derive(Debug, Clone, Copy)]
enum Part {
    Prompt,
    Deep,
    Head,
    Lm,
}

/// `model` with each part that trains replaced by the tensors `tensors` gives for it (and
/// the file they came from, for messages); the shapes are `model`'s.
fn with_trained_parts<B: Backend>(
    model: PromptClassifier<B>,
    tensors: &mut dyn FnMut(Part) -> Result<(PathBuf, TensorMap)>,
    config: &TrainConfig,
    model_dir: &ModelDir,
    device: &B::Device,
) -> Result<PromptClassifier<B>> {
    let PromptClassifier {
        mut lm,
        mut prompt,
        mut deep,
        mut head,
        head_kind,
        class_bias,
    } = model;
    if let Some(p) = &prompt {
        let (path, map) = tensors(Part::Prompt)?;
        let restored = PromptEncoder::from_tensors(p.kind(), &map, device);
        prompt = Some(restored.map_err(|m| Error::file(&path, m))?);
    }
    if let Some(d) = &deep {
        let (path, map) = tensors(Part::Deep)?;
        let restored = DeepPrompt::from_tensors(&map, d.shape(), device);
        deep = Some(restored.map_err(|m| Error::file(&path, m))?);
    }
    if let Some(h) = &head {
        let [hidden, classes] = h.weight.dims();
        let (path, map) = tensors(Part::Head)?;
        let restored = linear_head_from_tensors(&map, hidden, classes, device);
        head = Some(restored.map_err(|m| Error::file(&path, m))?);
    }
    if config.lm_trains() {
        let (path, map) = tensors(Part::Lm)?;
        let w = Weights::new(&path, map)?;
        lm = BertForMaskedLM::from_weights(&config.lm_config(&model_dir.config), w, device)?;
    }
    Ok(PromptClassifier {
        lm,
        prompt,
        deep,
        head,
        head_kind,
        class_bias,
    })
}

/// Writes epoch `state.epoch`'s checkpoint.
pub(super) fn save_checkpoint<B, O>(
    run: &RunDir,
    model: &PromptClassifier<B>,
    optim: &O,
    state: &TrainerState,
    lm_trains: bool,
) -> Result<()>
where
    B: AutodiffBackend,
    O: Optimizer<PromptClassifier<B>, B>,
{
    let weights = to_safetensors(&trainable_tensors(model, lm_trains));
    let optim_bytes = recorder().record(optim.to_record(), ()).map_err(|e| {
        Error::file(
            run.checkpoint_dir(),
            format!("cannot serialise the optimizer state: {e}"),
        )
    })?;
    let state_json = serde_json::to_vec_pretty(state).expect("serialisable");
    run.write_checkpoint(
        state.epoch,
        &[
            (WEIGHTS, &weights),
            (OPTIMIZER, &optim_bytes),
            (STATE, &state_json),
        ],
    )?;
    Ok(())
}

/// The model, optimizer and loop state of the checkpoint in `dir`; `model` gives the shapes
/// (and the frozen LM, which checkpoints do not hold).
pub(super) fn restore<B, O>(
    dir: &Path,
    model: PromptClassifier<B>,
    optim: O,
    config: &TrainConfig,
    model_dir: &ModelDir,
    device: &B::Device,
) -> Result<(PromptClassifier<B>, O, TrainerState)>
where
    B: AutodiffBackend,
    O: Optimizer<PromptClassifier<B>, B>,
{
    let read = |f: &str| crate::error::read_file(&dir.join(f));
    let state_path = dir.join(STATE);
    let state: TrainerState = serde_json::from_slice(&read(STATE)?)
        .map_err(|e| Error::file(&state_path, e.to_string()))?;
    let weights_path = dir.join(WEIGHTS);
    let map: TensorMap =
        parse_safetensors(&read(WEIGHTS)?).map_err(|m| Error::file(&weights_path, m))?;
    let mut tensors = |part: Part| -> Result<(PathBuf, TensorMap)> {
        let namespace = match part {
            Part::Prompt => PROMPT,
            Part::Deep => DEEP,
            Part::Head => HEAD,
            Part::Lm => LM,
        };
        Ok((weights_path.clone(), sub_map(&map, namespace)))
    };
    let model = with_trained_parts(model, &mut tensors, config, model_dir, device)?;
    let record = recorder().load(read(OPTIMIZER)?, device).map_err(|e| {
        Error::file(
            dir.join(OPTIMIZER),
            format!("cannot read the optimizer state: {e}"),
        )
    })?;
    Ok((model, optim.load_record(record), state))
}

/// Namespaces of the trainable-weights file: each part's own names follow `{namespace}.`.
const PROMPT: &str = crate::model::prompt_encoder::keys::NAMESPACE;
const DEEP: &str = crate::model::deep_prompt::keys::NAMESPACE;
const HEAD: &str = "head";
const LM: &str = "lm";

/// Trainable weights by name: `prompt.<PyTorch name>`, `deep.<PEFT name>`, `head.weight|bias`
/// and, when the LM trains, `lm.<HF name>`.
fn trainable_tensors<B: Backend>(
    model: &PromptClassifier<B>,
    lm_trains: bool,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    let mut put = |prefix: &str, map: std::collections::BTreeMap<String, RawTensor>| {
        out.extend(
            map.into_iter()
                .map(|(k, t)| (format!("{prefix}.{k}"), t.shape, t.data)),
        )
    };
    if let Some(p) = &model.prompt {
        put(PROMPT, p.named_tensors());
    }
    if let Some(d) = &model.deep {
        put(DEEP, d.named_tensors());
    }
    if let Some(h) = &model.head {
        put(HEAD, linear_head_tensors(h));
    }
    if lm_trains {
        out.extend(
            model
                .lm
                .hf_tensors()
                .into_iter()
                .map(|(k, t)| (format!("{LM}.{k}"), t.shape, t.data)),
        );
    }
    out
}

fn to_safetensors(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    safetensors_bytes(
        tensors.iter().map(|(k, s, d)| (k.clone(), &s[..], &d[..])),
        None,
    )
}

/// The tensors of one namespace, the `{namespace}.` stripped from their names.
fn sub_map(map: &TensorMap, namespace: &str) -> TensorMap {
    map.iter()
        .filter_map(|(k, v)| {
            let k = k.strip_prefix(namespace)?.strip_prefix('.')?;
            Some((k.to_string(), v.clone()))
        })
        .collect()
}
