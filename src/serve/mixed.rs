//! Mixed-task batches: rows of different tasks (adapters) in one forward pass of the shared
//! backbone. Each row gets its own task's prompt vectors (spliced in at its pseudo tokens), its
//! own deep-prompt prefix (padded to the longest prefix in the batch, the padding masked out,
//! its positions starting after its own prefix), and its class is read with its own label
//! words or linear head. A row's numbers are the ones single-task scoring gives, up to float
//! rounding (tested).

use burn::tensor::Tensor;

use crate::adapter::{Prediction, Task};
use crate::classifier::{
    EncoderInputs, Head, argmax, int_tensor, softmax_row, splice_rows, with_bias,
};
use crate::data::Batch;
use crate::error::Result;
use crate::model::Kernels;
use crate::model::deep_prompt::{PrefixShape, Prefixes};
use crate::prompt::Encoded;
use crate::tokenizer::BertTokenizer;

/// Tasks on one backbone, with their prompt vectors and prefixes stacked into shared tables.
pub struct MixedTasks<B: Kernels> {
    tasks: Vec<Task<B>>,
    /// Every task's prompt vectors, stacked `[Σ n_t, hidden]` (`None`: no task has any).
    vectors: Option<Tensor<B, 2>>,
    vector_start: Vec<usize>,
    /// Every task's prefix rows stacked, then one zero row (the padding) `[Σ P_t + 1, L·2·H]`.
    prefixes: Option<Tensor<B, 2>>,
    prefix_start: Vec<usize>,
    prefix_len: Vec<usize>,
    shape: PrefixShape,
}

impl<B: Kernels> MixedTasks<B> {
    /// `tasks` must share one backbone (adapters checked against the same fingerprint).
    pub fn new(tasks: Vec<Task<B>>, device: &B::Device) -> Self {
        let shape = tasks
            .first()
            .map(|t| t.classifier.lm.prefix_shape())
            .unwrap_or(PrefixShape {
                num_layers: 0,
                num_heads: 1,
                hidden: 0,
            });
        let (mut vectors, mut vector_start, mut n) = (Vec::new(), Vec::new(), 0);
        let (mut prefixes, mut prefix_start, mut prefix_len, mut np) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        for t in &tasks {
            vector_start.push(n);
            if let Some(p) = &t.classifier.prompt {
                let v = p.forward();
                n += v.dims()[0];
                vectors.push(v);
            }
            prefix_start.push(np);
            let len = t.classifier.deep.as_ref().map_or(0, |d| d.prefix_len());
            prefix_len.push(len);
            if let Some(d) = &t.classifier.deep {
                np += len;
                prefixes.push(d.forward());
            }
        }
        let prefixes = (!prefixes.is_empty()).then(|| {
            prefixes.push(Tensor::zeros([1, shape.width()], device));
            Tensor::cat(prefixes, 0)
        });
        MixedTasks {
            vectors: (!vectors.is_empty()).then(|| Tensor::cat(vectors, 0)),
            vector_start,
            prefixes,
            prefix_start,
            prefix_len,
            shape,
            tasks,
        }
    }

    /// The served tasks, in the order given (task index `i` of [`MixedTasks::classify`] is
    /// `tasks()[i]`).
    pub fn tasks(&self) -> &[Task<B>] {
        &self.tasks
    }

    /// Classifies `(task index, text)` pairs: length-sorted batches of up to `batch_size` rows
    /// that mix tasks, scored in parallel on CPU; predictions in input order.
    pub fn classify(
        &self,
        tokenizer: &BertTokenizer,
        items: &[(usize, &str)],
        batch_size: usize,
        device: &B::Device,
    ) -> Result<Vec<Prediction>> {
        use rayon::prelude::*;
        let encoded = items
            .iter()
            .map(|&(t, text)| {
                let task = &self.tasks[t];
                Ok((
                    t,
                    task.template.encode(tokenizer, text, None, task.max_len)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| encoded[i].1.ids.len());
        let chunks: Vec<&[usize]> = order.chunks(batch_size.max(1)).collect();
        let scored: Vec<Vec<Vec<f32>>> = chunks
            .par_iter()
            .map(|chunk| {
                let rows: Vec<(usize, &Encoded)> = chunk
                    .iter()
                    .map(|&i| (encoded[i].0, &encoded[i].1))
                    .collect();
                self.score(&rows, tokenizer.pad_id, device)
            })
            .collect();
        let mut out = vec![None; encoded.len()];
        for (chunk, scores) in chunks.iter().zip(scored) {
            for (&i, s) in chunk.iter().zip(scores) {
                let v = &self.tasks[encoded[i].0].verbalizer;
                out[i] = Some(Prediction {
                    label: v.classes[argmax(&s)].clone(),
                    probs: softmax_row(&s),
                    truncated: encoded[i].1.truncated,
                });
            }
        }
        Ok(out
            .into_iter()
            .map(|p| p.expect("every row scored"))
            .collect())
    }

    /// Class scores of one batch of rows `(task, encoded)`, in row order.
    fn score(&self, rows: &[(usize, &Encoded)], pad_id: u32, device: &B::Device) -> Vec<Vec<f32>> {
        let b = rows.len();
        // every row is read at the same number k of rows (the most [MASK]s of any task here);
        // rows with fewer repeat their last one, which nothing reads
        let k = rows
            .iter()
            .map(|(_, e)| e.mask_positions.len())
            .max()
            .unwrap_or(1);
        // padded ids, types and mask as for one task; then every row is read at k rows, and
        // its pseudo tokens index its own task's block of the stacked prompt vectors
        let items: Vec<&Encoded> = rows.iter().map(|&(_, e)| e).collect();
        let mut batch = self.tasks[rows[0].0]
            .classifier
            .shaped(Batch::unlabelled(&items, pad_id), pad_id);
        let l = batch.seq_len;
        batch.mask_positions.clear();
        batch.pseudo_positions.clear();
        let mut pseudo = Vec::new();
        for (i, (t, e)) in rows.iter().enumerate() {
            let row = i * l;
            let last = *e.mask_positions.last().expect("templates have a [MASK]");
            if self.tasks[*t].classifier.head_kind == Head::Cls {
                // a [CLS] head reads the row's first position only
                batch.mask_positions.extend((0..k).map(|_| row));
            } else {
                batch
                    .mask_positions
                    .extend((0..k).map(|s| row + e.mask_positions.get(s).copied().unwrap_or(last)));
            }
            if self.tasks[*t].classifier.prompt.is_some() {
                let start = self.vector_start[*t];
                pseudo.extend(
                    e.pseudo_positions
                        .iter()
                        .enumerate()
                        .map(|(j, p)| (row + p, start + j)),
                );
            }
        }
        let lm = &self.tasks[rows[0].0].classifier.lm;
        let mut embeds = lm.embed_tokens(int_tensor::<B, 2>(&batch.ids, [b, l], device));
        if let (Some(table), false) = (&self.vectors, pseudo.is_empty()) {
            embeds = splice_rows(embeds, table.clone(), &pseudo, device);
        }
        let used: Vec<usize> = rows.iter().map(|(t, _)| self.prefix_len[*t]).collect();
        let pmax = used.iter().copied().max().unwrap_or(0);
        let prefixes = match (&self.prefixes, pmax) {
            (Some(table), p) if p > 0 => {
                let zero = table.dims()[0] - 1;
                let idx: Vec<u32> = rows
                    .iter()
                    .flat_map(|(t, _)| {
                        let (start, len) = (self.prefix_start[*t], self.prefix_len[*t]);
                        (0..p).map(move |j| if j < len { start + j } else { zero } as u32)
                    })
                    .collect();
                let m = table
                    .clone()
                    .select(0, int_tensor::<B, 1>(&idx, [b * p], device))
                    .reshape([b, p, self.shape.width()]);
                Some(Prefixes::from_rows(m, Some(&used), self.shape))
            }
            _ => None,
        };
        let positions: Vec<u32> = batch.mask_positions.iter().map(|&p| p as u32).collect();
        let x = EncoderInputs::new(&batch, embeds, prefixes, device);
        let hidden = lm.encode_rows(
            x.embeds,
            x.types,
            &x.mask,
            x.prefixes.as_ref(),
            int_tensor::<B, 1>(&positions, [positions.len()], device),
        );
        let mut scores = vec![Vec::new(); b];
        // label-word rows: one restricted MLM head over every word id these rows' tasks use
        let mut words: Vec<u32> = Vec::new();
        for (t, _) in rows {
            let task = &self.tasks[*t];
            if task.classifier.head.is_none() {
                for &w in task.verbalizer.word_ids.iter().flatten() {
                    if !words.contains(&w) {
                        words.push(w);
                    }
                }
            }
        }
        if !words.is_empty() {
            let logits = lm.mlm_logits_for(
                hidden.clone(),
                int_tensor::<B, 1>(&words, [words.len()], device),
            );
            let data = logits
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32");
            let col = |w: u32| words.iter().position(|&x| x == w).expect("collected");
            let u = words.len();
            for (i, (t, _)) in rows.iter().enumerate() {
                let task = &self.tasks[*t];
                if task.classifier.head.is_some() {
                    continue;
                }
                let n_mask = task.template.n_mask();
                let raw = task.verbalizer.word_ids.iter().map(|ids| {
                    let sum: f32 = ids
                        .iter()
                        .enumerate()
                        .map(|(s, &w)| data[(i * k + s) * u + col(w)])
                        .sum();
                    sum / n_mask as f32
                });
                scores[i] = with_bias(raw, task.classifier.class_bias.as_deref());
            }
        }
        // linear-head rows: each task's head on its rows' first [MASK] (or [CLS]; through the
        // MLM head's transform for a verbalizer head, see `head_scores`)
        for (t, task) in self.tasks.iter().enumerate() {
            if task.classifier.head.is_none() {
                continue;
            }
            let mine: Vec<u32> = (0..b)
                .filter(|&i| rows[i].0 == t)
                .map(|i| (i * k) as u32)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let sel = hidden
                .clone()
                .select(0, int_tensor::<B, 1>(&mine, [mine.len()], device));
            let out: Tensor<B, 2> = task.classifier.head_scores(sel);
            let c = out.dims()[1];
            let data = out
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32");
            for (j, &r) in mine.iter().enumerate() {
                scores[r as usize / k] = data[j * c..(j + 1) * c].to_vec();
            }
        }
        scores
    }
}
