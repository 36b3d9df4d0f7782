//! Throughput measurements behind `ptune bench` (a benchmark, not a test).

use std::time::Instant;

use serde::Serialize;

use crate::classifier::{PromptClassifier, score_all};
use crate::data::Batch;
use crate::prompt::Encoded;

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub what: String,
    pub examples: usize,
    pub seconds: f64,
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

/// Scores `examples` in batches taken in the given order (each padded to its longest row, as
/// a naive loop over a shuffled data set does), one batch after another.
pub fn forward_in_order<B: crate::model::kernels::Kernels>(
    model: &PromptClassifier<B>,
    examples: &[Encoded],
    word_ids: &[Vec<u32>],
    batch_size: usize,
    pad_id: u32,
    device: &B::Device,
) -> Throughput {
    let start = Instant::now();
    for chunk in examples.chunks(batch_size) {
        let items: Vec<_> = chunk.iter().map(|e| (e, 0usize)).collect();
        model.class_scores(&Batch::collate(&items, pad_id), word_ids, device);
    }
    let tokens = examples.iter().map(|e| e.ids.len()).sum();
    Throughput::new(
        "forward, file-order batches",
        examples.len(),
        tokens,
        start.elapsed().as_secs_f64(),
    )
}

/// ptune's evaluation path: length-sorted batches scored on all cores.
pub fn evaluation<B: crate::model::kernels::Kernels>(
    model: &PromptClassifier<B>,
    examples: &[Encoded],
    word_ids: &[Vec<u32>],
    batch_size: usize,
    pad_id: u32,
    device: &B::Device,
) -> Throughput {
    let start = Instant::now();
    score_all(model, examples, word_ids, batch_size, pad_id, device);
    let tokens = examples.iter().map(|e| e.ids.len()).sum();
    Throughput::new(
        "evaluation (length-sorted batches)",
        examples.len(),
        tokens,
        start.elapsed().as_secs_f64(),
    )
}
