//! The prompt-based classifier: a BERT masked LM, optionally a prompt encoder whose vectors
//! replace the pseudo tokens' input embeddings, and the label words read at `[MASK]`.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::data::Batch;
use crate::model::bert::{AttentionMask, BertForMaskedLM};
use crate::model::kernels::Kernels;
use crate::model::prompt_encoder::PromptEncoder;
use crate::model::weights::to_host;

#[derive(Module, Debug)]
pub struct PromptClassifier<B: Backend> {
    pub lm: BertForMaskedLM<B>,
    /// `None`: pseudo tokens keep their own (`[unusedK]`) embeddings, as in fine-tuning,
    /// zero-shot and manual templates.
    pub prompt: Option<PromptEncoder<B>>,
}

pub(crate) fn int_tensor<B: Backend, const D: usize>(
    v: &[u32],
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D, Int> {
    Tensor::from_data(
        TensorData::new(v.iter().map(|&x| x as i64).collect::<Vec<_>>(), shape),
        device,
    )
}

impl<B: Kernels> PromptClassifier<B> {
    /// Input embeddings `[batch, len, hidden]` with the prompt vectors spliced in.
    pub fn input_embeddings(&self, batch: &Batch, device: &B::Device) -> Tensor<B, 3> {
        let (b, l) = (batch.batch_size, batch.seq_len);
        let ids = int_tensor::<B, 2>(&batch.ids, [b, l], device);
        let embeds = self.lm.embed_tokens(ids);
        let Some(encoder) = &self.prompt else {
            return embeds;
        };
        if batch.pseudo_positions.is_empty() {
            return embeds;
        }
        let h = embeds.dims()[2];
        let vectors = encoder.forward(); // once per step, shared by the batch
        let mut which = vec![0u32; b * l];
        let mut is_pseudo = vec![false; b * l];
        for &(p, k) in &batch.pseudo_positions {
            which[p] = k as u32;
            is_pseudo[p] = true;
        }
        let spliced = vectors
            .select(0, int_tensor::<B, 1>(&which, [b * l], device))
            .reshape([b, l, h]);
        let mask = Tensor::<B, 3, Bool>::from_data(TensorData::new(is_pseudo, [b, l, 1]), device)
            .expand([b, l, h]);
        embeds.mask_where(mask, spliced)
    }

    /// The encoder's inputs for a batch: embeddings with the prompt vectors spliced in, token
    /// types (when the template has a second segment) and the padding mask.
    fn encoder_inputs(
        &self,
        batch: &Batch,
        device: &B::Device,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 2, Int>>, AttentionMask<B>) {
        let (b, l) = (batch.batch_size, batch.seq_len);
        let types = batch
            .has_token_types()
            .then(|| int_tensor::<B, 2>(&batch.token_types, [b, l], device));
        let mask = AttentionMask::new(int_tensor::<B, 2>(&batch.attention, [b, l], device));
        (self.input_embeddings(batch, device), types, mask)
    }

    /// Last hidden state, flattened to `[batch * len, hidden]`; dropout on iff `dropout_seed`.
    pub fn hidden(
        &self,
        batch: &Batch,
        dropout_seed: Option<u64>,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        let (embeds, types, mask) = self.encoder_inputs(batch, device);
        let hidden = self.lm.encode(embeds, types, &mask, dropout_seed);
        let [b, l, h] = hidden.dims();
        hidden.reshape([b * l, h])
    }

    /// Last hidden state at flat `positions` only (inference; see
    /// [`BertForMaskedLM::encode_rows`]), `[positions.len(), hidden]`.
    pub fn hidden_rows(
        &self,
        batch: &Batch,
        positions: &[u32],
        device: &B::Device,
    ) -> Tensor<B, 2> {
        let (embeds, types, mask) = self.encoder_inputs(batch, device);
        let positions = int_tensor::<B, 1>(positions, [positions.len()], device);
        self.lm.encode_rows(embeds, types, &mask, positions)
    }

    /// Mean cross-entropy over the full vocabulary at the batch's targets (MLM head applied
    /// only at those positions). Dropout is on iff `dropout_seed` is given.
    pub fn loss(
        &self,
        batch: &Batch,
        dropout_seed: Option<u64>,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let positions: Vec<u32> = batch.targets.iter().map(|&(p, _)| p as u32).collect();
        let targets: Vec<u32> = batch.targets.iter().map(|&(_, t)| t).collect();
        let n = positions.len();
        let hidden = self
            .hidden(batch, dropout_seed, device)
            .select(0, int_tensor::<B, 1>(&positions, [n], device));
        let logits = self.lm.mlm_logits(hidden);
        CrossEntropyLossConfig::new()
            .init(device)
            .forward(logits, int_tensor::<B, 1>(&targets, [n], device))
    }

    /// Class scores `[batch][class]`: the mean over `[MASK]` slots of the label-word token's
    /// logit. Softmax over them equals softmax over mean log-probabilities (the per-slot
    /// normaliser is the same for every class), and argmax is the prediction.
    pub fn class_scores(
        &self,
        batch: &Batch,
        word_ids: &[Vec<u32>],
        device: &B::Device,
    ) -> Vec<Vec<f32>> {
        let n_mask = batch.n_mask();
        let n_classes = word_ids.len();
        let flat_words: Vec<u32> = word_ids.iter().flatten().copied().collect();
        let positions: Vec<u32> = batch.mask_positions.iter().map(|&p| p as u32).collect();
        let hidden = self.hidden_rows(batch, &positions, device);
        let logits = self.lm.mlm_logits_for(
            hidden,
            int_tensor::<B, 1>(&flat_words, [flat_words.len()], device),
        );
        let (_, data) = to_host(logits);
        let cols = flat_words.len();
        (0..batch.batch_size)
            .map(|i| {
                (0..n_classes)
                    .map(|c| {
                        let sum: f32 = (0..n_mask)
                            .map(|k| data[(i * n_mask + k) * cols + c * n_mask + k])
                            .sum();
                        sum / n_mask as f32
                    })
                    .collect()
            })
            .collect()
    }
}

/// Softmax of one row of class scores.
pub fn softmax_row(scores: &[f32]) -> Vec<f32> {
    let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
    let z: f32 = e.iter().sum();
    e.into_iter().map(|x| x / z).collect()
}

pub fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    best
}

/// Class scores for many encoded examples, in their order. Batches are formed from
/// length-sorted examples so little padding is computed, and are scored on all cores: most
/// per-op kernels of the CPU backend run on one thread, so batch-level parallelism is what
/// keeps both cores busy.
pub fn score_all<B: Kernels>(
    model: &PromptClassifier<B>,
    examples: &[crate::prompt::Encoded],
    word_ids: &[Vec<u32>],
    batch_size: usize,
    pad_id: u32,
    device: &B::Device,
) -> Vec<Vec<f32>> {
    use rayon::prelude::*;
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].ids.len());
    let chunks: Vec<&[usize]> = order.chunks(batch_size.max(1)).collect();
    let scored: Vec<Vec<Vec<f32>>> = chunks
        .par_iter()
        .map(|chunk| {
            let items: Vec<_> = chunk.iter().map(|&i| (&examples[i], 0usize)).collect();
            model.class_scores(&Batch::collate(&items, pad_id), word_ids, device)
        })
        .collect();
    let mut scores = vec![Vec::new(); examples.len()];
    for (chunk, batch_scores) in chunks.iter().zip(scored) {
        for (&i, s) in chunk.iter().zip(batch_scores) {
            scores[i] = s;
        }
    }
    scores
}
