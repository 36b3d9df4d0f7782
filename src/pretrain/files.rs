//! A pretraining run directory: `pretrain.toml` (the settings, checked by `--resume`),
//! `checkpoint/step-N/` (weights, AdamW moments, [`State`]), `metrics.jsonl` and `curve.svg`,
//! `summary.json`, and the written models (`model/`, `model-stepN/`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{PretrainConfig, PretrainRecord, PretrainSummary};
use super::optim::PretrainAdamW;
use crate::classifier::PromptClassifier;
use crate::error::{Error, Result, read_file, write_atomic};
use crate::model::bert::BertForMaskedLM;
use crate::model::hf_dir::{SaveOptions, save_model_dir};
use crate::model::tensors::{parse_safetensors, safetensors_bytes};
use crate::model::weights::Weights;
use crate::model::{BertConfig, TrainBackend};
use crate::train::checkpoint::{Checkpoints, read_saved_config};
use crate::train::plot::{Series, write_curves};

/// Where a run stands, saved in each checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) step: usize,
    pub(super) tokens: u64,
    pub(super) wall_seconds: f64,
    pub(super) history: Vec<PretrainRecord>,
}

impl State {
    /// A run that has not started.
    pub(super) fn new() -> State {
        State {
            step: 0,
            tokens: 0,
            wall_seconds: 0.0,
            history: Vec::new(),
        }
    }
}

/// The files of one run directory.
pub(super) struct RunFiles<'a> {
    out_dir: &'a Path,
    checkpoints: Checkpoints,
}

impl<'a> RunFiles<'a> {
    /// Creates the directory if needed.
    pub(super) fn create(out_dir: &'a Path) -> Result<RunFiles<'a>> {
        std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
        Ok(RunFiles {
            out_dir,
            checkpoints: Checkpoints::new(out_dir),
        })
    }

    /// Whether the run resumes: with `resume` and a checkpoint, the saved settings must be
    /// `c`; without `resume` the directory must hold no checkpoint, and `c` is saved.
    pub(super) fn start(&self, c: &PretrainConfig, resume: bool) -> Result<bool> {
        let config_path = self.out_dir.join("pretrain.toml");
        let resuming = resume && self.checkpoints.latest()?.is_some();
        let config_text = toml::to_string(c).expect("serialisable");
        if resuming {
            let saved: PretrainConfig = read_saved_config(&config_path)?;
            if saved != *c {
                return Err(Error::file(
                    &config_path,
                    "this run was started with different settings; resume with the same ones",
                ));
            }
        } else if self.checkpoints.latest()?.is_some() {
            return Err(Error::file(
                self.out_dir,
                "already holds a pretraining run (resume it, or choose another output directory)",
            ));
        } else {
            write_atomic(&config_path, config_text.as_bytes())?;
        }
        Ok(resuming)
    }

    /// The newest checkpoint's directory.
    pub(super) fn latest(&self) -> Result<Option<PathBuf>> {
        self.checkpoints.latest()
    }

    /// Reads checkpoint `dir`: the run's state and weights, and the optimizer's moments into
    /// `opt`.
    pub(super) fn load_checkpoint<B: TrainBackend>(
        &self,
        dir: &Path,
        model_config: &BertConfig,
        opt: &mut PretrainAdamW<B>,
        device: &B::Device,
    ) -> Result<(State, BertForMaskedLM<B>)> {
        let read = |f: &str| read_file(&dir.join(f));
        let sp = dir.join("state.json");
        let state: State = serde_json::from_slice(&read("state.json")?)
            .map_err(|e| Error::file(&sp, e.to_string()))?;
        let wp = dir.join("model.safetensors");
        let map =
            parse_safetensors(&read("model.safetensors")?).map_err(|e| Error::file(&wp, e))?;
        let w = Weights::new(&wp, map)?;
        let lm = BertForMaskedLM::from_weights(model_config, w, device)?;
        let op = dir.join("optimizer.safetensors");
        let map =
            parse_safetensors(&read("optimizer.safetensors")?).map_err(|e| Error::file(&op, e))?;
        opt.load_state(&map, state.step, device)
            .map_err(|e| Error::file(&op, e))?;
        Ok((state, lm))
    }

    /// Writes `checkpoint/step-N/` for `state`'s step.
    pub(super) fn save_checkpoint<B: TrainBackend>(
        &self,
        model: &PromptClassifier<B>,
        opt: &PretrainAdamW<B>,
        state: &State,
    ) -> Result<PathBuf> {
        let weights = model.lm.hf_tensors();
        let w = safetensors_bytes(
            weights
                .iter()
                .map(|(k, t)| (k.clone(), &t.shape[..], &t.data[..])),
            None,
        );
        let o = opt.state_tensors();
        let o = safetensors_bytes(o.iter().map(|(k, s, d)| (k.clone(), &s[..], &d[..])), None);
        let st = serde_json::to_vec_pretty(state).expect("serialisable");
        self.checkpoints.write(
            &format!("step-{:07}", state.step),
            &[
                ("model.safetensors", &w),
                ("optimizer.safetensors", &o),
                ("state.json", &st),
            ],
        )
    }

    /// Writes `lm` as the Hugging Face model directory `name` inside the run directory.
    pub(super) fn export<B: TrainBackend>(
        &self,
        lm: &BertForMaskedLM<B>,
        name: &str,
        model: &ExportModel,
    ) -> Result<PathBuf> {
        let out = self.out_dir.join(name);
        save_model_dir(
            lm,
            model.config,
            model.vocab_file,
            model.lowercase,
            &out,
            &model.save,
        )?;
        Ok(out)
    }

    /// `metrics.jsonl` and `curve.svg` (held-out and training loss against tokens).
    pub(super) fn write_history(&self, history: &[PretrainRecord]) -> Result<()> {
        let mut jsonl = String::new();
        for r in history {
            jsonl.push_str(&serde_json::to_string(r).expect("serialisable"));
            jsonl.push('\n');
        }
        write_atomic(&self.out_dir.join("metrics.jsonl"), jsonl.as_bytes())?;
        let series = |label: &str, f: fn(&PretrainRecord) -> Option<f64>| Series {
            label: label.to_string(),
            points: history
                .iter()
                .filter_map(|r| f(r).map(|y| (r.tokens as f64 / 1e6, y)))
                .collect(),
        };
        write_curves(
            &self.out_dir.join("curve.svg"),
            "MLM loss against tokens (millions)",
            &[
                series("held-out loss", |r| Some(r.heldout_loss)),
                series("training loss", |r| r.train_loss),
            ],
        )
    }

    /// `summary.json`.
    pub(super) fn write_summary(&self, summary: &PretrainSummary) -> Result<()> {
        write_atomic(
            &self.out_dir.join("summary.json"),
            serde_json::to_string_pretty(summary)
                .expect("json")
                .as_bytes(),
        )
    }
}

/// What a written model directory holds besides the weights.
pub(super) struct ExportModel<'a> {
    pub(super) config: &'a BertConfig,
    pub(super) vocab_file: &'a Path,
    pub(super) lowercase: bool,
    pub(super) save: SaveOptions,
}
