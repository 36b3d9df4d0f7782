//! Throughput measurements behind `ptune bench` (a benchmark, not a test).

use std::time::Instant;

use serde::Serialize;

use crate::classifier::{PromptClassifier, score_all};
use crate::data::Batch;
use crate::prompt::Encoded;

/// One timed run: how many examples took how long.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// What was timed (e.g. `"evaluation (length-sorted batches)"`).
    pub what: String,
    /// Number of examples processed.
    pub examples: usize,
    /// Wall-clock time of the run, in seconds.
    pub seconds: f64,
    /// `examples / seconds`.
    pub examples_per_s: f64,
    /// Real (non-padding) tokens processed, for FLOP estimates.
    pub tokens: usize,
}

impl Throughput {
    fn new(what: &str, examples: usize, tokens: usize, seconds: f64) -> Self {
        Throughput {
            what: what.into(),
            examples,
            seconds,
            examples_per_s: examples as f64 / seconds,
            tokens,
        }
    }
}

/// How [`scoring`] forms its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOrder {
    /// Batches in file order, each padded to its longest row (as a naive loop over a
    /// shuffled data set does), one after another.
    FileOrder,
    /// ptune's evaluation path: length-sorted batches scored on all cores.
    LengthSorted,
}

/// Times scoring every example's class at `[MASK]`.
pub fn scoring<B: crate::model::kernels::Kernels>(
    order: BatchOrder,
    model: &PromptClassifier<B>,
    examples: &[Encoded],
    word_ids: &[Vec<u32>],
    batch_size: usize,
    pad_id: u32,
    device: &B::Device,
) -> Throughput {
    let start = Instant::now();
    let what = match order {
        BatchOrder::FileOrder => {
            for chunk in examples.chunks(batch_size) {
                let items: Vec<_> = chunk.iter().collect();
                let batch = model.shaped(Batch::unlabelled(&items, pad_id), pad_id);
                model.class_scores(&batch, word_ids, device);
            }
            "forward, file-order batches"
        }
        BatchOrder::LengthSorted => {
            score_all(model, examples, word_ids, batch_size, pad_id, device);
            "evaluation (length-sorted batches)"
        }
    };
    let tokens = examples.iter().map(|e| e.ids.len()).sum();
    Throughput::new(what, examples.len(), tokens, start.elapsed().as_secs_f64())
}
