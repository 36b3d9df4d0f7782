//! One epoch's training batches: the few-shot set shuffled (again whenever it runs out), rows
//! collated, random-MLM augmentation, and the label targets.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::config::TrainConfig;
use super::prepare::Prepared;
use crate::data::Batch;

/// Draws one epoch's batches. Its one random stream, seeded per epoch, gives the shuffles
/// and the augmentation masks in the order the batches are drawn.
pub struct Sampler<'a> {
    config: &'a TrainConfig,
    prepared: &'a Prepared,
    rng: StdRng,
    /// The rest of the current shuffle, next row last.
    order: Vec<usize>,
}

impl<'a> Sampler<'a> {
    /// A sampler over `prepared.train` for one epoch; `epoch_seed` seeds its shuffles and masks.
    pub fn new(config: &'a TrainConfig, prepared: &'a Prepared, epoch_seed: u64) -> Self {
        Sampler {
            config,
            prepared,
            rng: StdRng::seed_from_u64(epoch_seed),
            order: Vec::new(),
        }
    }

    /// The next training batch (at most `batch_size` rows; fewer at the end of a shuffle).
    pub fn next_batch(&mut self) -> Batch {
        let (c, p) = (self.config, self.prepared);
        if self.order.is_empty() {
            self.order = (0..p.train.len()).collect();
            self.order.shuffle(&mut self.rng);
            self.order.reverse(); // taken from the back below, so batches follow the shuffle
        }
        let take = c.batch_size.min(self.order.len());
        let items: Vec<_> = (0..take)
            .map(|_| {
                let i = self.order.pop().expect("non-empty");
                (&p.train[i].0, p.train[i].1)
            })
            .collect();
        let mut batch = Batch::collate(&items, p.tokenizer.pad_id);
        if let Some(aug) = c.mlm_augment {
            aug.apply(
                &mut batch,
                &mut self.rng,
                p.tokenizer.mask_id,
                p.tokenizer.vocab_size(),
            );
        }
        batch.set_label_targets(&p.verbalizer.word_ids);
        if c.head.is_linear() {
            // the head's loss is over classes; MLM augmentation only corrupts the input
            batch.keep_label_targets_only();
        }
        batch
    }
}
