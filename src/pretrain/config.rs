//! What a pretraining run is given and what it reports: the settings ([`PretrainConfig`], saved
//! in the run directory and validated), where the weights start ([`Start`]), the run itself
//! ([`PretrainSpec`]), one evaluation ([`PretrainRecord`]) and the outcome
//! ([`PretrainSummary`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::corpus::Packing;
use crate::error::{Error, Result};
use crate::model::tensors::StorageDType;
use crate::model::{BertConfig, ModelDir};

/// Learning-rate decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Decays linearly from the peak rate to 0 at the last step.
    Linear,
    /// Follows a half cosine from the peak rate to 0 at the last step.
    Cosine,
}

/// The settings of a pretraining run (saved in the run directory; `--resume` requires the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate, reached at the end of warm-up.
    pub lr: f64,
    /// Steps of linear warm-up from `lr / warmup` to `lr` (0: none).
    pub warmup: usize,
    /// Shape of the decay from `lr` to 0 over the steps after warm-up.
    pub decay: Decay,
    /// AdamW decoupled weight decay (≥ 0).
    pub weight_decay: f64,
    /// Global gradient-norm clipping (0: off).
    pub max_grad_norm: f64,
    /// Sequence length including `[CLS]` and `[SEP]`.
    pub max_len: usize,
    /// How corpus lines are cut or packed into sequences.
    pub packing: Packing,
    /// Mask whole words (every sub-token of a chosen word) instead of single tokens; the corpus
    /// shard then records word continuations.
    pub whole_word_mask: bool,
    /// Fraction of the non-special tokens chosen as MLM targets; must be in (0, 1).
    pub mask_rate: f64,
    /// Sort sequences by length inside groups of 50 batches (less padding).
    pub group_by_length: bool,
    /// Seed of the random initialisation, the batch order, the masks and dropout.
    pub seed: u64,
    /// Held-out sequences (never trained on) for the MLM loss.
    pub eval_sequences: usize,
    /// Steps between evaluations on the held-out sequences (each one a [`PretrainRecord`]);
    /// positive.
    pub eval_every: usize,
    /// Steps between checkpoints in the run directory; positive.
    pub save_every: usize,
    /// Also write `model-stepN/` every this many steps (0: only the final `model/`).
    pub export_every: usize,
    /// Storage type of the written model's weights.
    pub dtype: StorageDType,
    /// Shard size of the written model in MiB (0: one file).
    pub shard_mib: usize,
    /// Precision of the matrix products, `f32` or `bf16` (see `--precision`); runs from before
    /// it was recorded: `f32`.
    #[serde(default = "f32_name")]
    pub precision: String,
}

fn f32_name() -> String {
    crate::model::kernels::Precision::F32.to_string()
}

impl PretrainConfig {
    /// Checks the values that would make training meaningless or crash.
    pub fn validate(&self, model: &BertConfig) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(m));
        if self.steps == 0 || self.batch_size == 0 || self.grad_accum == 0 {
            return bad("steps, batch size and gradient accumulation must be positive".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate must be positive, got {}", self.lr));
        }
        if !(self.mask_rate > 0.0 && self.mask_rate < 1.0) {
            return bad(format!(
                "mask rate must be in (0, 1), got {}",
                self.mask_rate
            ));
        }
        if self.max_len < 3 || self.max_len > model.max_position_embeddings {
            return bad(format!(
                "max length {} must be in 3..={} (the model's max_position_embeddings)",
                self.max_len, model.max_position_embeddings
            ));
        }
        if !(self.weight_decay >= 0.0 && self.max_grad_norm >= 0.0) {
            return bad("weight decay and gradient clipping must be ≥ 0".into());
        }
        if self.eval_every == 0 || self.save_every == 0 {
            return bad("evaluation and checkpoint intervals must be positive".into());
        }
        Ok(())
    }

    /// Learning rate for the update after `step` updates: linear warmup, then decay to 0.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        match self.decay {
            Decay::Linear => self.lr * (1.0 - t),
            Decay::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
        }
    }
}

/// Where the weights start.
#[derive(Debug, Clone)]
pub enum Start {
    /// Random initialisation of this architecture, with this vocabulary.
    Scratch {
        /// Architecture of the new model.
        config: BertConfig,
        /// `vocab.txt` of the tokenizer; its size must equal `config.vocab_size`.
        vocab_file: PathBuf,
        /// Whether the tokenizer lowercases its input.
        lowercase: bool,
    },
    /// Continue from a model directory.
    From(ModelDir),
}

impl Start {
    pub(super) fn config(&self) -> &BertConfig {
        match self {
            Start::Scratch { config, .. } => config,
            Start::From(m) => &m.config,
        }
    }

    pub(super) fn vocab(&self) -> (&std::path::Path, bool) {
        match self {
            Start::Scratch {
                vocab_file,
                lowercase,
                ..
            } => (vocab_file, *lowercase),
            Start::From(m) => (&m.vocab_file, m.lowercase),
        }
    }
}

/// One pretraining run.
#[derive(Debug, Clone)]
pub struct PretrainSpec {
    /// The training settings (validated when the run starts).
    pub config: PretrainConfig,
    /// The starting weights and the architecture.
    pub start: Start,
    /// Corpus text files, or directories searched recursively for them.
    pub corpus: Vec<PathBuf>,
    /// Where tokenized shards are cached.
    pub cache_dir: PathBuf,
    /// Run directory: metrics, checkpoints and the written model(s).
    pub out_dir: PathBuf,
    /// Continue from the run directory's last checkpoint; the saved settings must equal `config`.
    pub resume: bool,
    /// Print progress (bar, evaluations) to stderr.
    pub progress: bool,
    /// Row groups per micro-batch computed on parallel threads (CPU).
    pub micro_batches: usize,
    /// Set (e.g. by a Ctrl-C handler) to save a checkpoint and stop after the current step.
    pub stop: Arc<AtomicBool>,
    /// Wall-clock budget in seconds for this invocation: when it is spent, the run ends as if
    /// the current step were the last (evaluation, checkpoint, model), with the schedule
    /// unfinished. `--resume` can continue it.
    pub time_limit: Option<f64>,
}

/// One evaluation of a run, a line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainRecord {
    /// Optimizer steps done.
    pub step: usize,
    /// Tokens (including `[CLS]`/`[SEP]`) trained on so far.
    pub tokens: u64,
    /// Mean training loss since the previous record (`None` before the first step).
    pub train_loss: Option<f64>,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Global gradient norm of the last step, before clipping (0 in the record before any step).
    pub grad_norm: f64,
    /// Mean masked-LM cross-entropy on the held-out sequences (nats per target).
    pub heldout_loss: f64,
    /// `exp(heldout_loss)`.
    pub heldout_ppl: f64,
    /// Training tokens per second since the previous record (its held-out pass not counted).
    pub tokens_per_s: f64,
    /// Batch positions (tokens plus padding: what the model computes on) per second since the
    /// previous record, measured like `tokens_per_s`; the speed to compare with another
    /// implementation whose batches hold other sequences.
    #[serde(default)]
    pub positions_per_s: f64,
    /// Training time in seconds, summed over all invocations of the run (resumes included).
    pub wall_seconds: f64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainSummary {
    /// Optimizer steps done in the run (all invocations).
    pub steps: usize,
    /// Tokens (including `[CLS]`/`[SEP]`) trained on.
    pub tokens: u64,
    /// Tokens in the whole corpus shard (no special tokens).
    pub corpus_tokens: usize,
    /// Sequences available for training (held-out ones and their duplicates excluded).
    pub train_sequences: usize,
    /// Sequences held out for evaluation.
    pub heldout_sequences: usize,
    /// Parameters of the model.
    pub parameters: usize,
    /// Held-out loss of the last evaluation (`None` if there was none).
    pub heldout_loss: Option<f64>,
    /// Held-out perplexity of the last evaluation (`None` if there was none).
    pub heldout_ppl: Option<f64>,
    /// Mean tokens per second over the whole run (`tokens / wall_seconds`; 0 before any time
    /// passed).
    pub tokens_per_s: f64,
    /// Training time in seconds over all invocations of the run.
    pub wall_seconds: f64,
    /// Stopped early by [`PretrainSpec::stop`]; `--resume` continues.
    pub interrupted: bool,
    /// Ended by [`PretrainSpec::time_limit`] before `steps`.
    pub time_limit_reached: bool,
    /// The written `model/` directory (`None` when the run was interrupted).
    pub model_dir: Option<PathBuf>,
}
