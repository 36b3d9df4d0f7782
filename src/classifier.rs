//! The prompt-based classifier: a BERT masked LM, optionally a prompt encoder whose vectors
//! replace the pseudo tokens' input embeddings, optionally deep prompts (per-layer prefix keys
//! and values), and the class read at `[MASK]` through the label words by the MLM head, or by
//! a small linear head on the `[MASK]` (or `[CLS]`) hidden state, or on the MLM head's
//! transform of the `[MASK]` state (started from the label words' decoder rows).

use std::str::FromStr;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::data::Batch;
use crate::model::bert::{AttentionMask, BertForMaskedLM};
use crate::model::deep_prompt::{DeepPrompt, Prefixes};
use crate::model::host::{to_host, transpose};
use crate::model::kernels::{self, Kernels};
use crate::model::prompt_encoder::PromptEncoder;
use crate::model::tensors::RawTensor;
use crate::model::weights::new_param;

/// A BERT masked LM with the trainable parts of a prompt-based task attached.
#[derive(Module, Debug)]
pub struct PromptClassifier<B: Backend> {
    /// The backbone (frozen in P-tuning, trained in fine-tuning).
    pub lm: BertForMaskedLM<B>,
    /// `None`: pseudo tokens keep their own (`[unusedK]`) embeddings, as in fine-tuning,
    /// zero-shot and manual templates.
    pub prompt: Option<PromptEncoder<B>>,
    /// Deep prompts: trainable keys and values in every layer (P-tuning v2).
    pub deep: Option<DeepPrompt<B>>,
    /// `Some`: classes are read by this linear layer `[hidden → classes]` where `head_kind`
    /// says; `None`: by the MLM head through the label words.
    pub head: Option<Linear<B>>,
    /// Where the linear head reads: [`Head::Linear`] the first `[MASK]`'s hidden state,
    /// [`Head::Cls`] the `[CLS]` state (each row's first position), [`Head::Verbalizer`] the
    /// MLM head's transform (dense, GELU, LayerNorm) of the first `[MASK]`'s state.
    /// Invariant: [`Head::is_linear`] iff `head` is `Some` ([`Head::Mlm`] without a head).
    pub head_kind: Head,
    /// Added to the label-word class scores (MLM head only): contextual calibration, see
    /// [`content_free_bias`]. `None`: the scores as the LM gives them.
    pub class_bias: Option<Vec<f32>>,
}

/// How a class is read at `[MASK]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Head {
    /// The frozen MLM head's logits of the label words.
    #[default]
    Mlm,
    /// A trainable linear layer on the `[MASK]` hidden state.
    Linear,
    /// A trainable linear layer on the `[CLS]` hidden state (P-tuning v2's head for NLU).
    Cls,
    /// A trainable linear layer on the MLM head's transform of the `[MASK]` state, started as
    /// the label words' decoder rows and biases: at step 0 it is the label-word classifier
    /// (for one-token label words), and then it learns. Prompt-based fine-tuning seen as a
    /// head initialised from the verbalizer (Gao et al. 2021, LM-BFF).
    Verbalizer,
}

impl Head {
    /// A trained linear head (on `[MASK]`, on `[CLS]` or on the MLM head's transform of the
    /// `[MASK]` state) rather than the label words.
    pub fn is_linear(self) -> bool {
        matches!(self, Head::Linear | Head::Cls | Head::Verbalizer)
    }
}

impl FromStr for Head {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mlm" => Ok(Self::Mlm),
            "linear" => Ok(Self::Linear),
            "cls" => Ok(Self::Cls),
            "verbalizer" => Ok(Self::Verbalizer),
            _ => Err(format!(
                "unknown head \"{s}\" (expected mlm, linear, cls or verbalizer)"
            )),
        }
    }
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

impl<B: Backend> PromptClassifier<B> {
    /// The LM with an optional prompt encoder (no deep prompts, MLM head).
    pub fn new(lm: BertForMaskedLM<B>, prompt: Option<PromptEncoder<B>>) -> Self {
        PromptClassifier {
            lm,
            prompt,
            deep: None,
            head: None,
            head_kind: Head::Mlm,
            class_bias: None,
        }
    }

    /// The flat positions a linear head reads, one per row: the first `[MASK]`, or `[CLS]`.
    fn head_rows(&self, batch: &Batch) -> Vec<u32> {
        if self.head_kind == Head::Cls {
            (0..batch.batch_size)
                .map(|i| (i * batch.seq_len) as u32)
                .collect()
        } else {
            first_mask_rows(batch)
        }
    }

    /// Parameters besides the LM's (prompt encoder, deep prompts, head).
    pub fn prompt_params(&self) -> usize {
        self.prompt.as_ref().map_or(0, |p| p.num_params())
            + self.deep.as_ref().map_or(0, |d| d.num_params())
            + self.head.as_ref().map_or(0, |h| h.num_params())
    }
}

impl<B: Kernels> PromptClassifier<B> {
    /// The linear head's class scores `[n, classes]` for hidden states `[n, hidden]` read at
    /// its positions (through the MLM head's transform for [`Head::Verbalizer`]).
    ///
    /// # Panics
    /// Without a linear head.
    pub fn head_scores(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        let head = self.head.as_ref().expect("a linear head");
        if self.head_kind == Head::Verbalizer {
            head.forward(self.lm.head_transform(hidden))
        } else {
            head.forward(hidden)
        }
    }

    /// `batch` as this backend computes it: its rows padded to a multiple of
    /// [`kernels::seq_len_multiple`] (1 on the CPU: unchanged), never past the LM's
    /// positions. Every entry point that builds a batch for the model (training steps,
    /// evaluation, the benchmark) passes it through here.
    pub fn shaped(&self, batch: Batch, pad_id: u32) -> Batch {
        let m = kernels::seq_len_multiple::<B>().max(1);
        let len = batch.seq_len.div_ceil(m) * m;
        batch.padded_to(len.min(self.lm.max_positions()), pad_id)
    }

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
        let vectors = encoder.forward(); // once per step, shared by the batch
        splice_rows(embeds, vectors, &batch.pseudo_positions, device)
    }

    /// The encoder's inputs for a batch: embeddings with the prompt vectors spliced in, token
    /// types (when the template has a second segment), the padding mask and the deep prompts.
    fn encoder_inputs(&self, batch: &Batch, device: &B::Device) -> EncoderInputs<B> {
        EncoderInputs::new(
            batch,
            self.input_embeddings(batch, device),
            self.deep.as_ref().map(|d| d.prefixes(batch.batch_size)),
            device,
        )
    }

    /// Last hidden state, flattened to `[batch * len, hidden]`; dropout on iff `dropout_seed`.
    pub fn hidden(
        &self,
        batch: &Batch,
        dropout_seed: Option<u64>,
        device: &B::Device,
    ) -> Tensor<B, 2> {
        let x = self.encoder_inputs(batch, device);
        let hidden = self.lm.encode(
            x.embeds,
            x.types,
            &x.mask,
            x.prefixes.as_ref(),
            dropout_seed,
        );
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
        self.hidden_rows_with(self.encoder_inputs(batch, device), positions, device)
    }

    /// [`Self::hidden_rows`] on inputs already made (mixed-task batches build their own).
    pub fn hidden_rows_with(
        &self,
        x: EncoderInputs<B>,
        positions: &[u32],
        device: &B::Device,
    ) -> Tensor<B, 2> {
        let positions = int_tensor::<B, 1>(positions, [positions.len()], device);
        self.lm
            .encode_rows(x.embeds, x.types, &x.mask, x.prefixes.as_ref(), positions)
    }

    /// Mean cross-entropy over the full vocabulary at the batch's targets (MLM head applied
    /// only at those positions), or, with a linear head, over the classes at each row's first
    /// `[MASK]`. Dropout is on iff `dropout_seed` is given.
    pub fn loss(
        &self,
        batch: &Batch,
        dropout_seed: Option<u64>,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        if self.head.is_some() {
            let rows = self.head_rows(batch);
            let hidden = self
                .hidden(batch, dropout_seed, device)
                .select(0, int_tensor::<B, 1>(&rows, [rows.len()], device));
            let labels: Vec<u32> = batch.labels.iter().map(|&l| l as u32).collect();
            return kernels::cross_entropy(
                self.head_scores(hidden),
                int_tensor::<B, 1>(&labels, [labels.len()], device),
            );
        }
        let positions: Vec<u32> = batch.targets.iter().map(|&(p, _)| p as u32).collect();
        let targets: Vec<u32> = batch.targets.iter().map(|&(_, t)| t).collect();
        let n = positions.len();
        let hidden = self
            .hidden(batch, dropout_seed, device)
            .select(0, int_tensor::<B, 1>(&positions, [n], device));
        let logits = self.lm.mlm_logits(hidden);
        kernels::cross_entropy(logits, int_tensor::<B, 1>(&targets, [n], device))
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
        if self.head.is_some() {
            let rows = self.head_rows(batch);
            let data = to_host(self.head_scores(self.hidden_rows(batch, &rows, device))).data;
            let c = data.len() / batch.batch_size.max(1);
            return data.chunks(c.max(1)).map(|r| r.to_vec()).collect();
        }
        let n_mask = batch.n_mask();
        let n_classes = word_ids.len();
        let flat_words: Vec<u32> = word_ids.iter().flatten().copied().collect();
        let positions: Vec<u32> = batch.mask_positions.iter().map(|&p| p as u32).collect();
        let hidden = self.hidden_rows(batch, &positions, device);
        let logits = self.lm.mlm_logits_for(
            hidden,
            int_tensor::<B, 1>(&flat_words, [flat_words.len()], device),
        );
        let data = to_host(logits).data;
        let cols = flat_words.len();
        (0..batch.batch_size)
            .map(|i| {
                let scores = (0..n_classes).map(|c| {
                    let sum: f32 = (0..n_mask)
                        .map(|k| data[(i * n_mask + k) * cols + c * n_mask + k])
                        .sum();
                    sum / n_mask as f32
                });
                with_bias(scores, self.class_bias.as_deref())
            })
            .collect()
    }
}

/// Label-word class scores with a calibration bias added (when there is one).
pub fn with_bias(scores: impl Iterator<Item = f32>, bias: Option<&[f32]>) -> Vec<f32> {
    match bias {
        Some(b) => scores.zip(b).map(|(s, b)| s + b).collect(),
        None => scores.collect(),
    }
}

/// Where the class prior of a calibrated zero-shot classifier comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Calibration {
    /// Contextual calibration (Zhao et al. 2021, "Calibrate before use"): the probabilities
    /// the template gives [`CONTENT_FREE_TEXTS`], texts with no content.
    ContentFree,
    /// Batch calibration (Zhou et al. 2023): the mean probabilities over the few-shot training
    /// set's texts; their labels are not read.
    Fewshot,
}

impl Calibration {
    /// The name `--calibrate` takes.
    pub fn name(self) -> &'static str {
        match self {
            Calibration::ContentFree => "content-free",
            Calibration::Fewshot => "fewshot",
        }
    }
}

impl FromStr for Calibration {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "content-free" => Ok(Self::ContentFree),
            "fewshot" => Ok(Self::Fewshot),
            _ => Err(format!(
                "unknown calibration \"{s}\" (expected content-free or fewshot)"
            )),
        }
    }
}

/// The texts contextual calibration scores in place of a real input: no content, so what the
/// LM predicts for them is its prior over the label words under this template. Zhao et al.
/// used "N/A", "" and "[MASK]"; "[MASK]" would add a second mask slot to the template, so "无"
/// ("none") takes its place.
pub const CONTENT_FREE_TEXTS: [&str; 3] = ["N/A", "", "无"];

/// [`CONTENT_FREE_TEXTS`] in `template` (sentence-pair templates get the text in both slots).
pub fn content_free_inputs(
    template: &crate::prompt::Template,
    tokenizer: &crate::tokenizer::BertTokenizer,
    max_len: usize,
) -> crate::error::Result<Vec<crate::prompt::Encoded>> {
    let pair = template.is_pair();
    CONTENT_FREE_TEXTS
        .iter()
        .map(|t| template.encode(tokenizer, t, pair.then_some(*t), max_len))
        .collect()
}

/// A calibration bias: `-ln p̄(c)` per class, where `p̄` is the mean over `inputs` of the
/// classifier's uncalibrated class probabilities (any `class_bias` it has is left out). Added to
/// the class scores, it divides every probability by that prior (then renormalises), so an LM
/// that prefers one label word whatever the text no longer predicts that class for everything.
pub fn prior_bias<B: Kernels>(
    model: &PromptClassifier<B>,
    inputs: &[crate::prompt::Encoded],
    word_ids: &[Vec<u32>],
    batch_size: usize,
    pad_id: u32,
    device: &B::Device,
) -> Vec<f32> {
    let mut raw = model.clone();
    raw.class_bias = None;
    let scores = score_all(&raw, inputs, word_ids, batch_size, pad_id, device);
    let mut mean = vec![0.0f64; word_ids.len()];
    for s in &scores {
        for (m, p) in mean.iter_mut().zip(softmax_row(s)) {
            *m += p as f64 / scores.len().max(1) as f64;
        }
    }
    // a probability of 0 (an underflowed softmax) would give an infinite bias
    mean.iter().map(|&p| -(p.max(1e-30).ln()) as f32).collect()
}

/// `embeds` `[batch, len, hidden]` with the rows of `table` `[n, hidden]` put in at
/// `(flat position, table row)` pairs.
pub fn splice_rows<B: Backend>(
    embeds: Tensor<B, 3>,
    table: Tensor<B, 2>,
    at: &[(usize, usize)],
    device: &B::Device,
) -> Tensor<B, 3> {
    let [b, l, h] = embeds.dims();
    let mut which = vec![0u32; b * l];
    let mut is_pseudo = vec![false; b * l];
    for &(p, k) in at {
        which[p] = k as u32;
        is_pseudo[p] = true;
    }
    let spliced = table
        .select(0, int_tensor::<B, 1>(&which, [b * l], device))
        .reshape([b, l, h]);
    let mask = Tensor::<B, 3, Bool>::from_data(TensorData::new(is_pseudo, [b, l, 1]), device)
        .expand([b, l, h]);
    embeds.mask_where(mask, spliced)
}

/// The first `[MASK]` of every row (flat positions), where a linear head reads the class.
fn first_mask_rows(batch: &Batch) -> Vec<u32> {
    let n_mask = batch.n_mask().max(1);
    batch
        .mask_positions
        .iter()
        .step_by(n_mask)
        .map(|&p| p as u32)
        .collect()
}

/// What the encoder is run on: input embeddings, token types, the padding mask, and the
/// deep prompts' per-layer keys and values.
pub struct EncoderInputs<B: Backend> {
    /// Input embeddings `[batch, len, hidden]`, pseudo tokens already replaced.
    pub embeds: Tensor<B, 3>,
    /// Token types `[batch, len]`; `None` when every token type of the batch is 0.
    pub types: Option<Tensor<B, 2, Int>>,
    /// The padding mask of the batch.
    pub mask: AttentionMask<B>,
    /// Deep prompts' per-layer keys and values; `None` without deep prompts.
    pub prefixes: Option<Prefixes<B>>,
}

impl<B: Backend> EncoderInputs<B> {
    /// Token types (when the template has a second segment) and the padding mask of a batch,
    /// with the given embeddings and prefixes.
    pub fn new(
        batch: &Batch,
        embeds: Tensor<B, 3>,
        prefixes: Option<Prefixes<B>>,
        device: &B::Device,
    ) -> Self {
        let (b, l) = (batch.batch_size, batch.seq_len);
        EncoderInputs {
            embeds,
            types: batch
                .has_token_types()
                .then(|| int_tensor::<B, 2>(&batch.token_types, [b, l], device)),
            mask: AttentionMask::new(int_tensor::<B, 2>(&batch.attention, [b, l], device)),
            prefixes,
        }
    }
}

/// Softmax of one row of class scores.
pub fn softmax_row(scores: &[f32]) -> Vec<f32> {
    let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
    let z: f32 = e.iter().sum();
    e.into_iter().map(|x| x / z).collect()
}

/// Index of the largest score (the first one on ties; 0 for an empty slice).
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
            let items: Vec<_> = chunk.iter().map(|&i| &examples[i]).collect();
            let batch = model.shaped(Batch::unlabelled(&items, pad_id), pad_id);
            model.class_scores(&batch, word_ids, device)
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

/// A fresh linear head `[hidden → classes]` with PyTorch's default initialisation (weights and
/// bias uniform in ±1/sqrt(hidden)).
pub fn linear_head_init<B: Backend>(
    hidden: usize,
    classes: usize,
    rng: &mut rand::rngs::StdRng,
    device: &B::Device,
) -> Linear<B> {
    use rand::Rng;
    let bound = 1.0 / (hidden as f32).sqrt();
    let mut u =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
    let mut map = std::collections::BTreeMap::new();
    map.insert(
        "weight".to_string(),
        RawTensor::new(vec![classes, hidden], u(classes * hidden)),
    );
    map.insert(
        "bias".to_string(),
        RawTensor::new(vec![classes], u(classes)),
    );
    linear_head_from_tensors(&map, hidden, classes, device).expect("shapes built here")
}

/// A [`Head::Verbalizer`] head at its start: class `c`'s weight row and bias are the MLM
/// decoder's row and bias of its label word's first token (`word_ids[c][0]`, the token at the
/// first `[MASK]`, where the head reads).
pub fn verbalizer_head_init<B: Kernels>(
    lm: &BertForMaskedLM<B>,
    word_ids: &[Vec<u32>],
    device: &B::Device,
) -> Linear<B> {
    let first: Vec<u32> = word_ids.iter().map(|w| w[0]).collect();
    let ids = int_tensor::<B, 1>(&first, [first.len()], device);
    let mut map = std::collections::BTreeMap::new();
    map.insert(
        "weight".to_string(),
        to_host(lm.decoder_weight().select(0, ids.clone())),
    );
    map.insert(
        "bias".to_string(),
        to_host(lm.cls.predictions.bias.val().select(0, ids)),
    );
    linear_head_from_tensors(&map, lm.hidden_size(), first.len(), device)
        .expect("decoder rows have the hidden width")
}

/// A linear head from `weight` `[classes, hidden]` and `bias` `[classes]` (PyTorch layout).
pub fn linear_head_from_tensors<B: Backend>(
    map: &std::collections::BTreeMap<String, RawTensor>,
    hidden: usize,
    classes: usize,
    device: &B::Device,
) -> std::result::Result<Linear<B>, String> {
    let get = |k: &str, want: &[usize]| -> std::result::Result<Vec<f32>, String> {
        let t = map
            .get(k)
            .ok_or_else(|| format!("missing tensor \"head.{k}\""))?;
        if t.shape != want {
            return Err(format!(
                "tensor \"head.{k}\" has shape {:?}, expected {want:?} (classes, hidden)",
                t.shape
            ));
        }
        Ok(t.data.clone())
    };
    let w = transpose(&get("weight", &[classes, hidden])?, classes, hidden);
    Ok(Linear {
        weight: new_param("head.weight", w, [hidden, classes], device),
        bias: Some(new_param(
            "head.bias",
            get("bias", &[classes])?,
            [classes],
            device,
        )),
    })
}

/// The head's `weight` `[classes, hidden]` and `bias`, PyTorch layout.
pub fn linear_head_tensors<B: Backend>(
    head: &Linear<B>,
) -> std::collections::BTreeMap<String, RawTensor> {
    let mut map = std::collections::BTreeMap::new();
    map.insert(
        "weight".to_string(),
        to_host(head.weight.val()).transposed(),
    );
    let bias = to_host(head.bias.as_ref().expect("the head has a bias").val());
    map.insert("bias".to_string(), bias);
    map
}
