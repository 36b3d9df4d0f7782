//! Padding encoded examples into batches, and the random-MLM augmentation of training batches.

use rand::Rng;
use rand::rngs::StdRng;

use crate::prompt::Encoded;

/// A padded batch on the host, flat row-major `[batch, len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Rows.
    pub batch_size: usize,
    /// Length of every row (the longest example; shorter ones are padded).
    pub seq_len: usize,
    /// Token ids, padding included, `batch_size × seq_len`.
    pub ids: Vec<u32>,
    /// Segment (token type) ids, 0 for padding, `batch_size × seq_len`.
    pub token_types: Vec<u32>,
    /// 1 for tokens, 0 for padding.
    pub attention: Vec<u32>,
    /// Flat positions of the `[MASK]` slots, `n_mask` per example, example-major.
    pub mask_positions: Vec<usize>,
    /// `(flat position, prompt index)` of every pseudo token.
    pub pseudo_positions: Vec<(usize, usize)>,
    /// The class of each row (training); empty for a batch to classify ([`Batch::unlabelled`])
    /// or an MLM batch.
    pub labels: Vec<usize>,
    /// `(flat position, target id)`: the positions the training loss is computed at.
    pub targets: Vec<(usize, u32)>,
}

impl Batch {
    /// Pads labelled examples `(encoded, class)` (training) to the longest. All examples must
    /// come from the same template.
    pub fn collate(items: &[(&Encoded, usize)], pad_id: u32) -> Batch {
        let mut batch = Batch::pad(items.iter().map(|(e, _)| *e), items.len(), pad_id);
        batch.labels = items.iter().map(|&(_, label)| label).collect();
        batch
    }

    /// Pads examples to classify to the longest; the batch has no labels (`labels` is empty).
    /// All examples must come from the same template.
    pub fn unlabelled(examples: &[&Encoded], pad_id: u32) -> Batch {
        Batch::pad(examples.iter().copied(), examples.len(), pad_id)
    }

    /// The padded ids, token types, attention and positions of `b` examples, without labels.
    fn pad<'a>(
        examples: impl Iterator<Item = &'a Encoded> + Clone,
        b: usize,
        pad_id: u32,
    ) -> Batch {
        let l = examples.clone().map(|e| e.ids.len()).max().unwrap_or(0);
        let mut batch = Batch {
            batch_size: b,
            seq_len: l,
            ids: vec![pad_id; b * l],
            token_types: vec![0; b * l],
            attention: vec![0; b * l],
            mask_positions: Vec::new(),
            pseudo_positions: Vec::new(),
            labels: Vec::new(),
            targets: Vec::new(),
        };
        for (i, e) in examples.enumerate() {
            let row = i * l;
            batch.ids[row..row + e.ids.len()].copy_from_slice(&e.ids);
            batch.token_types[row..row + e.ids.len()].copy_from_slice(&e.token_types);
            batch.attention[row..row + e.ids.len()].fill(1);
            batch
                .mask_positions
                .extend(e.mask_positions.iter().map(|p| row + p));
            batch.pseudo_positions.extend(
                e.pseudo_positions
                    .iter()
                    .enumerate()
                    .map(|(k, p)| (row + p, k)),
            );
        }
        batch
    }

    /// Whether every row has a class (a batch built by [`Batch::collate`]).
    pub fn is_labelled(&self) -> bool {
        self.labels.len() == self.batch_size
    }

    /// Number of `[MASK]` slots per example.
    pub fn n_mask(&self) -> usize {
        self.mask_positions.len() / self.batch_size.max(1)
    }

    /// Makes the label words the targets at the `[MASK]` slots (replacing any MLM target there).
    pub fn set_label_targets(&mut self, word_ids: &[Vec<u32>]) {
        assert!(self.is_labelled(), "label targets need a labelled batch");
        let n_mask = self.n_mask();
        let slots: std::collections::HashSet<usize> = self.mask_positions.iter().copied().collect();
        self.targets.retain(|(p, _)| !slots.contains(p));
        for (i, &label) in self.labels.iter().enumerate() {
            let slots = &self.mask_positions[i * n_mask..(i + 1) * n_mask];
            self.targets
                .extend(slots.iter().copied().zip(word_ids[label].iter().copied()));
        }
        self.targets.sort_unstable();
    }

    /// Drops every target but the `[MASK]` slots' (a linear head's loss reads only those).
    pub fn keep_label_targets_only(&mut self) {
        let slots: std::collections::HashSet<usize> = self.mask_positions.iter().copied().collect();
        self.targets.retain(|(p, _)| slots.contains(p));
    }

    /// Splits the batch into up to `parts` batches of consecutive rows (each trimmed to its own
    /// longest row), for computing one step on several threads.
    pub fn split_rows(&self, parts: usize) -> Vec<Batch> {
        let parts = parts.clamp(1, self.batch_size.max(1));
        if parts == 1 {
            return vec![self.clone()];
        }
        let (l, n_mask) = (self.seq_len, self.n_mask());
        let row_len = |r: usize| {
            self.attention[r * l..(r + 1) * l]
                .iter()
                .filter(|&&a| a != 0)
                .count()
        };
        let per = self.batch_size.div_ceil(parts);
        (0..self.batch_size)
            .step_by(per)
            .map(|start| {
                let end = (start + per).min(self.batch_size);
                let nl = (start..end).map(row_len).max().unwrap_or(0);
                let remap = |p: usize| (p / l - start) * nl + p % l;
                let in_rows = |p: &usize| *p >= start * l && *p < end * l;
                let rows = |v: &[u32]| {
                    (start..end)
                        .flat_map(|r| v[r * l..r * l + nl].iter().copied())
                        .collect::<Vec<_>>()
                };
                Batch {
                    batch_size: end - start,
                    seq_len: nl,
                    ids: rows(&self.ids),
                    token_types: rows(&self.token_types),
                    attention: rows(&self.attention),
                    mask_positions: self.mask_positions[start * n_mask..end * n_mask]
                        .iter()
                        .map(|&p| remap(p))
                        .collect(),
                    pseudo_positions: self
                        .pseudo_positions
                        .iter()
                        .filter(|(p, _)| in_rows(p))
                        .map(|&(p, k)| (remap(p), k))
                        .collect(),
                    labels: if self.labels.is_empty() {
                        Vec::new()
                    } else {
                        self.labels[start..end].to_vec()
                    },
                    targets: self
                        .targets
                        .iter()
                        .filter(|(p, _)| in_rows(p))
                        .map(|&(p, t)| (remap(p), t))
                        .collect(),
                }
            })
            .collect()
    }

    /// The same batch with every row padded on to `len` positions (a no-op when `len` is not
    /// longer than `seq_len`): padding ids, token type 0, attention 0, and every flat position
    /// (`[MASK]` slots, pseudo tokens, targets) moved to the wider rows. The model computes
    /// the same values at the real positions, up to float rounding; GPU backends use it to
    /// see fewer distinct shapes (see `Kernels::SEQ_LEN_MULTIPLE`).
    pub fn padded_to(self, len: usize, pad_id: u32) -> Batch {
        let l = self.seq_len;
        if len <= l || l == 0 {
            return self;
        }
        let remap = |p: usize| (p / l) * len + p % l;
        let widen = |v: &[u32], fill: u32| {
            let mut out = vec![fill; self.batch_size * len];
            for (r, row) in v.chunks(l).enumerate() {
                out[r * len..r * len + l].copy_from_slice(row);
            }
            out
        };
        Batch {
            batch_size: self.batch_size,
            seq_len: len,
            ids: widen(&self.ids, pad_id),
            token_types: widen(&self.token_types, 0),
            attention: widen(&self.attention, 0),
            mask_positions: self.mask_positions.iter().map(|&p| remap(p)).collect(),
            pseudo_positions: self
                .pseudo_positions
                .iter()
                .map(|&(p, k)| (remap(p), k))
                .collect(),
            targets: self.targets.iter().map(|&(p, t)| (remap(p), t)).collect(),
            labels: self.labels,
        }
    }

    /// Whether any token has a non-zero token type (a sentence pair), i.e. whether the model
    /// needs token type ids at all.
    pub fn has_token_types(&self) -> bool {
        self.token_types.iter().any(|&t| t != 0)
    }
}

/// Random-MLM augmentation of the published recipe: each real token (template, `[CLS]` and
/// `[SEP]` included) becomes a target with probability `mask + keep + random`; it is replaced
/// by `[MASK]` (p `mask`), kept (p `keep`), or replaced by a random id in `[1, V)` (p `random`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MlmAugment {
    /// Probability that a token becomes a target replaced by `[MASK]` (default 0.12).
    pub mask: f64,
    /// Probability that a token becomes a target left unchanged (default 0.015).
    pub keep: f64,
    /// Probability that a token becomes a target replaced by a random id (default 0.015).
    pub random: f64,
}

impl Default for MlmAugment {
    fn default() -> Self {
        MlmAugment {
            mask: 0.12,
            keep: 0.015,
            random: 0.015,
        }
    }
}

impl MlmAugment {
    /// Chooses and replaces targets in every non-padding position of `batch` (appending them to
    /// `batch.targets`, original ids as the targets), then sets the `[MASK]` slots back to
    /// `mask_id` so the answer positions stay masked. Random ids are drawn from `1..vocab_size`.
    pub fn apply(&self, batch: &mut Batch, rng: &mut StdRng, mask_id: u32, vocab_size: usize) {
        for p in 0..batch.ids.len() {
            if batch.attention[p] == 0 {
                continue;
            }
            let r: f64 = rng.random();
            let original = batch.ids[p];
            if r < self.mask {
                batch.ids[p] = mask_id;
            } else if r < self.mask + self.keep {
            } else if r < self.mask + self.keep + self.random {
                batch.ids[p] = rng.random_range(1..vocab_size as u32);
            } else {
                continue;
            }
            batch.targets.push((p, original));
        }
        for &p in &batch.mask_positions {
            batch.ids[p] = mask_id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn enc(n: usize) -> Encoded {
        Encoded {
            ids: (0..n as u32).map(|i| 1000 + i).collect(),
            token_types: vec![0; n],
            mask_positions: vec![2],
            pseudo_positions: vec![1],
            truncated: false,
        }
    }

    #[test]
    fn collate_pads_and_offsets_positions() {
        let (a, b) = (enc(4), enc(6));
        let batch = Batch::collate(&[(&a, 1), (&b, 0)], 0);
        assert_eq!((batch.batch_size, batch.seq_len), (2, 6));
        assert_eq!(&batch.ids[4..6], &[0, 0]);
        assert_eq!(&batch.attention[..6], &[1, 1, 1, 1, 0, 0]);
        assert_eq!(batch.mask_positions, vec![2, 8]);
        assert_eq!(batch.pseudo_positions, vec![(1, 0), (7, 0)]);
    }

    #[test]
    fn unlabelled_pads_like_collate_without_labels() {
        let (a, b) = (enc(4), enc(6));
        let labelled = Batch::collate(&[(&a, 1), (&b, 0)], 0);
        let batch = Batch::unlabelled(&[&a, &b], 0);
        assert!(batch.labels.is_empty() && !batch.is_labelled() && labelled.is_labelled());
        assert_eq!(
            Batch {
                labels: vec![1, 0],
                ..batch.clone()
            },
            labelled
        );
        let parts = batch.split_rows(2);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.labels.is_empty()));
        assert_eq!(parts[1].ids, b.ids);
    }

    #[test]
    fn split_rows_keeps_every_row_and_target() {
        let (a, b, c) = (enc(3), enc(6), enc(4));
        let mut batch = Batch::collate(&[(&a, 0), (&b, 1), (&c, 0)], 0);
        batch.targets = vec![(1, 7), (8, 9), (14, 5)];
        let parts = batch.split_rows(2);
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].batch_size, parts[0].seq_len), (2, 6));
        assert_eq!((parts[1].batch_size, parts[1].seq_len), (1, 4));
        assert_eq!(parts[1].ids, c.ids);
        assert_eq!(parts[0].targets, vec![(1, 7), (8, 9)]);
        assert_eq!(parts[1].targets, vec![(2, 5)]);
        assert_eq!(parts[1].mask_positions, vec![2]);
        assert_eq!(parts[1].pseudo_positions, vec![(1, 0)]);
        assert_eq!(batch.split_rows(1), vec![batch.clone()]);
    }

    #[test]
    fn padded_to_widens_rows_and_moves_every_position() {
        let (a, b) = (enc(3), enc(5));
        let mut batch = Batch::collate(&[(&a, 1), (&b, 0)], 7);
        batch.targets = vec![(0, 1000), (2, 1002), (9, 1004)];
        let wide = batch.clone().padded_to(8, 7);
        assert_eq!((wide.batch_size, wide.seq_len), (2, 8));
        assert_eq!(&wide.ids[..8], &[1000, 1001, 1002, 7, 7, 7, 7, 7]);
        assert_eq!(&wide.ids[8..], &[1000, 1001, 1002, 1003, 1004, 7, 7, 7]);
        assert_eq!(&wide.attention[8..], &[1, 1, 1, 1, 1, 0, 0, 0]);
        assert_eq!(wide.mask_positions, vec![2, 10]);
        assert_eq!(wide.pseudo_positions, vec![(1, 0), (9, 0)]);
        assert_eq!(wide.targets, vec![(0, 1000), (2, 1002), (12, 1004)]);
        assert_eq!(wide.labels, vec![1, 0]);
        for &(p, id) in &wide.targets {
            assert_eq!(wide.ids[p], id, "a target still points at its token");
        }
        // trimming each part to its longest row undoes the padding
        assert_eq!(wide.split_rows(2), batch.split_rows(2));
        assert_eq!(batch.clone().padded_to(5, 7), batch);
        assert_eq!(batch.clone().padded_to(3, 7), batch);
    }

    #[test]
    fn augmentation_rates_and_label_targets() {
        let e = enc(100);
        let items: Vec<_> = (0..50).map(|i| (&e, i % 2)).collect();
        let mut batch = Batch::collate(&items, 0);
        let before = batch.ids.clone();
        MlmAugment::default().apply(&mut batch, &mut StdRng::seed_from_u64(1), 103, 21128);
        batch.set_label_targets(&[vec![679], vec![2523]]);
        let n = batch.ids.len() as f64;
        let mlm_targets = batch.targets.len() - 50;
        let rate = mlm_targets as f64 / n;
        assert!((0.13..0.17).contains(&rate), "target rate {rate}");
        let masked = batch
            .ids
            .iter()
            .zip(&before)
            .filter(|(a, b)| **a == 103 && **b != 103)
            .count() as f64
            / n;
        assert!((0.10..0.14).contains(&masked), "mask rate {masked}");
        for (i, &p) in batch.mask_positions.iter().enumerate() {
            assert_eq!(batch.ids[p], 103);
            let t: Vec<_> = batch.targets.iter().filter(|(q, _)| *q == p).collect();
            assert_eq!(t, vec![&(p, if i % 2 == 0 { 679 } else { 2523 })]);
        }
        for &(p, id) in &batch.targets {
            if !batch.mask_positions.contains(&p) {
                assert_eq!(id, before[p], "an MLM target is the original id");
            }
        }
    }
}
