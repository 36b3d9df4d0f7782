//! What a run reports: per-epoch records and the summary (written to the run directory), and
//! the [`Reporter`] a caller passes in to show progress. Nothing under `train/` prints; the
//! command line decides what a reporter shows.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::Method;
use super::metrics::Metrics;

/// One evaluated epoch of a run, a line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, 1-based (0 for the single zero-shot evaluation).
    pub epoch: usize,
    /// Optimizer steps taken so far in the run.
    pub step: usize,
    /// Mean training loss over the epoch (`None` for zero-shot).
    pub loss: Option<f64>,
    /// Learning rate of the epoch's last step (0 for zero-shot).
    pub lr: f64,
    /// Training examples processed in the epoch (every pass counted).
    pub train_examples: usize,
    /// Seconds spent training in the epoch (evaluation excluded).
    pub train_seconds: f64,
    /// `train_examples / train_seconds`.
    pub examples_per_s: f64,
    /// Metrics on the validation split after the epoch.
    pub valid: Metrics,
    /// Metrics on the test split after the epoch: only after the epochs that improve on
    /// valid (so the best epoch always has them), or after every epoch when the run asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Metrics>,
    /// Seconds the evaluation took (valid, and test where evaluated).
    pub eval_seconds: f64,
}

/// The outcome of a run, written as `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// What was trained.
    pub method: Method,
    /// The backbone's model directory, as a path.
    pub model: String,
    /// Training examples in the few-shot set.
    pub fewshot_size: usize,
    /// Parameters that train (0 for zero-shot).
    pub trainable_params: usize,
    /// The last evaluated epoch.
    pub epochs: usize,
    /// Optimizer steps over the whole run.
    pub steps: usize,
    /// Model selection on valid: the first epoch with the best valid accuracy.
    pub best_epoch: usize,
    /// Validation accuracy at `best_epoch`.
    pub best_valid: f64,
    /// Test accuracy at `best_epoch`.
    pub test_at_best_valid: f64,
    /// Test macro-F1 at `best_epoch`.
    pub test_macro_f1_at_best_valid: f64,
    /// The published code's column (it selected on test): best test accuracy of any epoch,
    /// when every epoch was evaluated on test (`RunSpec::test_every_epoch`).
    pub best_test: Option<f64>,
    /// Seconds spent training, summed over the epochs.
    pub train_seconds: f64,
    /// Training examples per second over the run (0 when no training time passed).
    pub examples_per_s: f64,
    /// Wall-clock seconds of the run, summed over resumed invocations.
    pub wall_seconds: f64,
}

impl Summary {
    /// The summary of `history`, or `None` while it has no epoch or its best-on-valid epoch
    /// has not been evaluated on test yet.
    pub fn of(
        method: Method,
        model: String,
        fewshot_size: usize,
        history: &[EpochRecord],
        trainable: usize,
        wall: f64,
    ) -> Option<Summary> {
        let best = &history[best_index(history)?];
        let best_test = best.test.as_ref()?;
        let train_seconds: f64 = history.iter().map(|r| r.train_seconds).sum();
        let examples: usize = history.iter().map(|r| r.train_examples).sum();
        Some(Summary {
            method,
            model,
            fewshot_size,
            trainable_params: trainable,
            epochs: history.last().map_or(0, |r| r.epoch),
            steps: history.last().map_or(0, |r| r.step),
            best_epoch: best.epoch,
            best_valid: best.valid.accuracy,
            test_at_best_valid: best_test.accuracy,
            test_macro_f1_at_best_valid: best_test.macro_f1,
            best_test: history
                .iter()
                .map(|r| r.test.as_ref().map(|t| t.accuracy))
                .collect::<Option<Vec<f64>>>()
                .map(|t| t.into_iter().fold(0.0, f64::max)),
            train_seconds,
            examples_per_s: if train_seconds > 0.0 {
                examples as f64 / train_seconds
            } else {
                0.0
            },
            wall_seconds: wall,
        })
    }
}

/// Model selection on valid: the index of the first epoch of `history` with the best valid
/// accuracy (`None` for an empty history).
pub fn best_index(history: &[EpochRecord]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, r) in history.iter().enumerate() {
        if best.is_none_or(|b| r.valid.accuracy > history[b].valid.accuracy) {
            best = Some(i);
        }
    }
    best
}

/// Where an epoch's training stands after a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepProgress {
    /// Steps done in this epoch (1-based).
    pub step: usize,
    /// Mean training loss over the epoch's steps so far.
    pub mean_loss: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Training examples so far in this epoch, and the seconds they took.
    pub examples: usize,
    /// Seconds the epoch's training has taken so far.
    pub seconds: f64,
}

/// Progress of a training run, as it happens. Every method has a default that shows nothing.
pub trait Reporter {
    /// The run continues from `checkpoint` (epochs up to `epoch` and `step` steps done).
    fn resumed(&mut self, _checkpoint: &Path, _epoch: usize, _step: usize) {}
    /// Epoch `epoch` of `epochs` starts training, `steps` steps.
    fn epoch_started(&mut self, _method: Method, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// One optimizer step is done.
    fn stepped(&mut self, _progress: &StepProgress) {}
    /// The epoch's training steps are done (evaluation follows).
    fn epoch_trained(&mut self) {}
    /// The loss became non-finite; the run stops with an error.
    fn diverged(&mut self) {}
    /// Epoch `record.epoch` of `epochs` is evaluated; `best`: its valid accuracy is the best yet.
    fn epoch_done(&mut self, _method: Method, _epochs: usize, _record: &EpochRecord, _best: bool) {}
    /// The best-on-valid epoch `record.epoch` was evaluated on test, once, after the last epoch
    /// (runs that do not evaluate test every epoch).
    fn tested(&mut self, _method: Method, _record: &EpochRecord) {}
    /// A zero-shot run's one evaluation.
    fn zero_shot_done(&mut self, _record: &EpochRecord) {}
}

/// A reporter that shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Reporter for Silent {}
