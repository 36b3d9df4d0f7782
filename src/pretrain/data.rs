//! The corpus cut into training and held-out sequences, each epoch's batches, the masking
//! settings, and the held-out loss.

use burn::tensor::ElementConversion;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::config::{PretrainConfig, PretrainSpec};
use super::corpus::{Corpus, Span};
use super::masking::Masking;
use crate::classifier::PromptClassifier;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::Kernels;
use crate::model::bert::BertForMaskedLM;
use crate::model::kernels::mix;
use crate::tokenizer::BertTokenizer;

/// The corpus cut into training and held-out sequences.
pub(super) struct Data {
    pub(super) corpus: Corpus,
    pub(super) train: Vec<Span>,
    pub(super) heldout: Vec<Span>,
}

/// Held-out sequences are chosen by a fixed seed (not the run's), so runs with different
/// seeds or settings evaluate on the same text.
const HELDOUT_SEED: u64 = 0x05ee_d0f4_e1d0_u64;

impl Data {
    pub(super) fn load(spec: &PretrainSpec, tokenizer: &BertTokenizer) -> Result<Data> {
        let (vocab, lowercase) = spec.start.vocab();
        let c = &spec.config;
        let corpus = Corpus::open_or_build(
            &spec.corpus,
            vocab,
            tokenizer,
            lowercase,
            c.whole_word_mask,
            &spec.cache_dir,
            spec.progress,
        )?;
        let spans = corpus.spans(c.packing, c.max_len - 2);
        if spans.len() < c.eval_sequences + c.batch_size {
            return Err(Error::invalid(format!(
                "the corpus gives {} sequences, fewer than the {} held out plus one batch of {}",
                spans.len(),
                c.eval_sequences,
                c.batch_size
            )));
        }
        let mut idx: Vec<usize> = (0..spans.len()).collect();
        idx.shuffle(&mut StdRng::seed_from_u64(HELDOUT_SEED));
        let mut held: Vec<usize> = idx[..c.eval_sequences].to_vec();
        let mut train: Vec<usize> = idx[c.eval_sequences..].to_vec();
        held.sort_unstable();
        train.sort_unstable();
        // A text that occurs more than once (repeated lines, a file given twice to weight it)
        // must not be trained on through another copy of a held-out sequence.
        let key = |i: usize| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            corpus.read(spans[i]).0.hash(&mut h);
            h.finish()
        };
        let held_keys: std::collections::HashSet<u64> = held.iter().map(|&i| key(i)).collect();
        train.retain(|&i| !held_keys.contains(&key(i)));
        Ok(Data {
            train: train.iter().map(|&i| spans[i]).collect(),
            heldout: held.iter().map(|&i| spans[i]).collect(),
            corpus,
        })
    }

    /// The training sequences of each batch of `epoch`: a seeded shuffle, optionally sorted by
    /// length inside groups of 50 batches with the batches shuffled again (the last partial
    /// batch is dropped).
    pub(super) fn epoch_batches(&self, c: &PretrainConfig, epoch: usize) -> Vec<Vec<usize>> {
        let mut rng = StdRng::seed_from_u64(mix(c.seed, 0xe90c_0000 + epoch as u64));
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        order.shuffle(&mut rng);
        let b = c.batch_size;
        let mut batches: Vec<Vec<usize>> = Vec::new();
        if c.group_by_length {
            for group in order.chunks(50 * b) {
                let mut g = group.to_vec();
                g.sort_by_key(|&i| std::cmp::Reverse(self.train[i].len));
                batches.extend(g.chunks_exact(b).map(|x| x.to_vec()));
            }
            batches.shuffle(&mut rng);
        } else {
            batches.extend(order.chunks_exact(b).map(|x| x.to_vec()));
        }
        batches
    }
}

/// Each epoch's batches, computed when a step first reaches the epoch.
pub(super) struct Epochs {
    /// Batches per epoch.
    pub(super) batches_per_epoch: usize,
    current: Option<(usize, Vec<Vec<usize>>)>,
}

impl Epochs {
    pub(super) fn new(batches_per_epoch: usize) -> Epochs {
        Epochs {
            batches_per_epoch,
            current: None,
        }
    }
}

impl Data {
    /// The masked micro-batches of optimizer step `step` (micro-batch `g` is the epoch's batch
    /// `g % bpe`, masked from `(seed, g)`); adds their tokens (with `[CLS]`/`[SEP]`) to `tokens`.
    pub(super) fn step_batches(
        &self,
        c: &PretrainConfig,
        m: &Masking,
        step: usize,
        epochs: &mut Epochs,
        tokens: &mut u64,
    ) -> Vec<Batch> {
        let bpe = epochs.batches_per_epoch;
        let mut batches = Vec::with_capacity(c.grad_accum);
        for k in 0..c.grad_accum {
            let g = step * c.grad_accum + k;
            let epoch = g / bpe;
            if epochs.current.as_ref().is_none_or(|(e, _)| *e != epoch) {
                epochs.current = Some((epoch, self.epoch_batches(c, epoch)));
            }
            let rows = &epochs.current.as_ref().expect("set").1[g % bpe];
            let seqs: Vec<_> = rows
                .iter()
                .map(|&i| self.corpus.read(self.train[i]))
                .collect();
            *tokens += seqs.iter().map(|(s, _)| s.len() as u64 + 2).sum::<u64>();
            let batch = m.batch(&seqs, &mut StdRng::seed_from_u64(mix(c.seed, g as u64)));
            batches.push(batch);
        }
        batches
    }
}

pub(super) fn masking(tok: &BertTokenizer, c: &PretrainConfig) -> Masking {
    Masking {
        rate: c.mask_rate,
        whole_word: c.whole_word_mask,
        cls_id: tok.cls_id,
        sep_id: tok.sep_id,
        pad_id: tok.pad_id,
        mask_id: tok.mask_id,
        unk_id: tok.unk_id,
        vocab_size: tok.vocab_size(),
    }
}

/// Held-out MLM loss (mean cross-entropy over masked tokens, fixed masks, no dropout).
pub(super) fn heldout_loss<B: Kernels>(
    lm: &BertForMaskedLM<B>,
    data: &Data,
    m: &Masking,
    device: &B::Device,
) -> f64 {
    use rayon::prelude::*;
    let model = PromptClassifier::new(lm.clone(), None);
    let chunks: Vec<(usize, &[Span])> = data.heldout.chunks(64).enumerate().collect();
    let sums: Vec<(f64, usize)> = chunks
        .par_iter()
        .map(|(k, spans)| {
            let seqs: Vec<_> = spans.iter().map(|s| data.corpus.read(*s)).collect();
            let batch = m.batch(
                &seqs,
                &mut StdRng::seed_from_u64(mix(HELDOUT_SEED, *k as u64)),
            );
            if batch.targets.is_empty() {
                return (0.0, 0);
            }
            let batch = model.shaped(batch, m.pad_id);
            let loss: f64 = model.loss(&batch, None, device).into_scalar().elem();
            (loss * batch.targets.len() as f64, batch.targets.len())
        })
        .collect();
    let (sum, n) = sums.iter().fold((0.0, 0), |(s, n), (a, b)| (s + a, n + b));
    sum / n.max(1) as f64
}
