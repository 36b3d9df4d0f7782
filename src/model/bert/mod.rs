//! BERT with its masked-LM head, mirroring transformers' `BertForMaskedLM`.
//!
//! Struct and field names follow the Hugging Face weight keys (`bert.encoder.layer.3.attention.
//! self.query.weight` lives in `bert.encoder.layer[3].attention.self_attention.query.weight`),
//! so loading and saving are straight mappings (one walk over the keys for both, in
//! `hf_weights.rs`). Dropout is active when a forward
//! pass is given a dropout seed (training) and off otherwise.

mod hf_weights;

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::deep_prompt::{PrefixShape, Prefixes};
use super::io::host::{RawTensor, to_host};
use super::kernels::{self, Kernels};
use super::layers::{Activation, LayerNorm, SeededDropout};

/// Which keys are padding, as an additive attention bias.
#[derive(Clone, Debug)]
pub struct AttentionMask<B: Backend> {
    /// `[batch, 1, 1, len]`: 0 for tokens, -inf for padding.
    bias: Tensor<B, 4>,
}

impl<B: Backend> AttentionMask<B> {
    /// From a Hugging Face style `attention_mask` `[batch, len]` (1 = token, 0 = padding).
    pub fn new(attention_mask: Tensor<B, 2, Int>) -> Self {
        let [b, l] = attention_mask.dims();
        let pad = attention_mask.equal_elem(0).reshape([b, 1, 1, l]);
        // Padded keys get probability exactly 0, as with transformers' finfo.min; -inf rather
        // than a large finite number keeps exp() off its slow underflow path. Every row has at
        // least one real key ([CLS]), so no row is all -inf.
        let bias =
            Tensor::<B, 4>::zeros([b, 1, 1, l], &pad.device()).mask_fill(pad, f32::NEG_INFINITY);
        AttentionMask { bias }
    }

    /// The mask over `prefix` keys followed by the tokens' keys (`[batch, 1, 1, P + len]`).
    pub fn with_prefix(&self, prefix: &Prefixes<B>) -> Self {
        AttentionMask {
            bias: Tensor::cat(vec![prefix.bias.clone(), self.bias.clone()], 3),
        }
    }
}

/// One layer's prefix keys and values, `[batch, heads, P, head_dim]` each.
pub type LayerPrefix<'a, B> = Option<&'a (Tensor<B, 4>, Tensor<B, 4>)>;

/// `bert.embeddings`: word, position and token-type embeddings, then LayerNorm and dropout.
#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    /// HF key `word_embeddings.weight`, `[vocab, hidden]`.
    pub word_embeddings: Embedding<B>,
    /// HF key `position_embeddings.weight`, `[max_positions, hidden]`.
    pub position_embeddings: Embedding<B>,
    /// HF key `token_type_embeddings.weight`, `[type_vocab, hidden]`.
    pub token_type_embeddings: Embedding<B>,
    /// HF key `LayerNorm`.
    pub layer_norm: LayerNorm<B>,
    /// Dropout after the LayerNorm (`hidden_dropout_prob`).
    pub dropout: SeededDropout,
}

impl<B: Kernels> BertEmbeddings<B> {
    /// `inputs_embeds` + position + token-type embeddings, LayerNorm, dropout
    /// (transformers' `BertEmbeddings.forward` with `inputs_embeds`). Positions start at 0, or
    /// at each row's `offsets` entry (after its deep-prompt prefix).
    pub fn forward(
        &self,
        inputs_embeds: Tensor<B, 3>,
        token_type_ids: Option<Tensor<B, 2, Int>>,
        offsets: Option<&[usize]>,
        seed: Option<u64>,
    ) -> Tensor<B, 3> {
        let [b, l, h] = inputs_embeds.dims();
        let table = self.position_embeddings.weight.val();
        let pos = match offsets {
            Some(o) if o.iter().any(|&x| x != o[0]) => {
                let ids: Vec<i64> = o
                    .iter()
                    .flat_map(|&x| (x..x + l).map(|p| p as i64))
                    .collect();
                let ids = Tensor::<B, 1, Int>::from_data(
                    burn::tensor::TensorData::new(ids, [b * l]),
                    &table.device(),
                );
                table.select(0, ids).reshape([b, l, h])
            }
            _ => {
                let o = offsets.and_then(|o| o.first().copied()).unwrap_or(0);
                table.slice(o..o + l).reshape([1, l, h])
            }
        };
        let types = match token_type_ids {
            Some(ids) => self.token_type_embeddings.forward(ids),
            None => self
                .token_type_embeddings
                .weight
                .val()
                .slice(0..1)
                .reshape([1, 1, h]),
        };
        let x = inputs_embeds + pos + types;
        self.dropout.forward(self.layer_norm.forward(x), seed)
    }
}

/// `attention.self`: multi-head scaled dot-product self-attention (before the output projection).
#[derive(Module, Debug)]
pub struct BertSelfAttention<B: Backend> {
    /// Query projection, hidden → hidden.
    pub query: Linear<B>,
    /// Key projection, hidden → hidden.
    pub key: Linear<B>,
    /// Value projection, hidden → hidden.
    pub value: Linear<B>,
    /// Dropout on the attention probabilities (`attention_probs_dropout_prob`).
    pub dropout: SeededDropout,
    /// Number of attention heads; `hidden` is divisible by it.
    pub num_heads: usize,
}

impl<B: Kernels> BertSelfAttention<B> {
    /// Attention of `queries` `[batch, q, hidden]` over the keys and values of `x`
    /// `[batch, len, hidden]`; `queries` is `x` itself except when only some rows of the
    /// output are wanted (see [`BertForMaskedLM::encode_rows`]). With a `prefix` (deep prompts)
    /// its keys and values come before the tokens' and `mask` covers both.
    pub fn forward(
        &self,
        queries: Tensor<B, 3>,
        x: Tensor<B, 3>,
        mask: &AttentionMask<B>,
        prefix: LayerPrefix<'_, B>,
        seed: Option<u64>,
    ) -> Tensor<B, 3> {
        let h = x.dims()[2];
        let nh = self.num_heads;
        let q = kernels::split_heads(kernels::linear(queries, &self.query), nh);
        let k = kernels::split_heads(kernels::linear(x.clone(), &self.key), nh);
        let v = kernels::split_heads(kernels::linear(x, &self.value), nh);
        let (k, v) = match prefix {
            Some((pk, pv)) => (
                Tensor::cat(vec![pk.clone(), k], 2),
                Tensor::cat(vec![pv.clone(), v], 2),
            ),
            None => (k, v),
        };
        // Softmax attention on strided head views (no copies), with the padding bias and the
        // softmax fused into one kernel; measured faster on the CPU backend than its fused
        // attention, which first makes q, k and v contiguous.
        let scale = 1.0 / ((h / nh) as f64).sqrt();
        let scores = kernels::matmul(q, k.swap_dims(2, 3)).mul_scalar(scale);
        let probs = kernels::softmax_with_bias(scores, mask.bias.clone());
        let context = kernels::matmul(self.dropout.forward(probs, seed), v);
        kernels::merge_heads(context)
    }
}

/// Dense + dropout + residual + LayerNorm (transformers' `BertSelfOutput` and `BertOutput`).
#[derive(Module, Debug)]
pub struct BertResidualOutput<B: Backend> {
    /// Projection of the sub-layer's output back to hidden size.
    pub dense: Linear<B>,
    /// HF key `LayerNorm`, applied after the residual sum.
    pub layer_norm: LayerNorm<B>,
    /// Dropout on the projection, before the residual sum.
    pub dropout: SeededDropout,
}

impl<B: Kernels> BertResidualOutput<B> {
    /// `LayerNorm(dropout(dense(x)) + residual)`: `x` `[batch, len, _]`, `residual` and the
    /// result `[batch, len, hidden]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        residual: Tensor<B, 3>,
        seed: Option<u64>,
    ) -> Tensor<B, 3> {
        self.layer_norm
            .forward(self.dropout.forward(kernels::linear(x, &self.dense), seed) + residual)
    }
}

/// `attention`: self-attention followed by its output projection and residual.
#[derive(Module, Debug)]
pub struct BertAttention<B: Backend> {
    /// HF key `attention.self`.
    pub self_attention: BertSelfAttention<B>,
    /// HF key `attention.output`.
    pub output: BertResidualOutput<B>,
}

/// `intermediate`: the feed-forward's first half, hidden → intermediate size, then the
/// activation.
#[derive(Module, Debug)]
pub struct BertIntermediate<B: Backend> {
    /// HF key `intermediate.dense`.
    pub dense: Linear<B>,
    /// The config's `hidden_act`.
    pub act: Activation,
}

/// One transformer block, HF key `bert.encoder.layer.N`.
#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    /// Self-attention with its residual output.
    pub attention: BertAttention<B>,
    /// Feed-forward up-projection and activation.
    pub intermediate: BertIntermediate<B>,
    /// HF key `output`: feed-forward down-projection with residual and LayerNorm.
    pub output: BertResidualOutput<B>,
}

impl<B: Kernels> BertLayer<B> {
    /// The layer on `x` `[batch, len, hidden]`, returning the same shape. `prefix`: this layer's
    /// deep-prompt keys and values (`mask` must then cover them); `seed`: dropout on when `Some`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        mask: &AttentionMask<B>,
        prefix: LayerPrefix<'_, B>,
        seed: Option<u64>,
    ) -> Tensor<B, 3> {
        self.forward_rows(x.clone(), x, mask, prefix, seed)
    }

    /// The layer's output at some rows only: `rows` `[batch, k, hidden]` are those rows of
    /// the input `x` `[batch, len, hidden]`. Every row attends to all of `x`, so the result
    /// equals the same rows of [`Self::forward`] at a fraction of the cost.
    pub fn forward_rows(
        &self,
        rows: Tensor<B, 3>,
        x: Tensor<B, 3>,
        mask: &AttentionMask<B>,
        prefix: LayerPrefix<'_, B>,
        seed: Option<u64>,
    ) -> Tensor<B, 3> {
        let a = self
            .attention
            .self_attention
            .forward(rows.clone(), x, mask, prefix, seed);
        let a = self.attention.output.forward(a, rows, seed);
        let i = self
            .intermediate
            .act
            .apply(kernels::linear(a.clone(), &self.intermediate.dense));
        self.output.forward(i, a, seed)
    }
}

/// `bert.encoder`: the stack of transformer layers.
#[derive(Module, Debug)]
pub struct BertEncoder<B: Backend> {
    /// The layers in order, HF keys `bert.encoder.layer.0` onwards.
    pub layer: Vec<BertLayer<B>>,
}

/// `bert`: embeddings and encoder (this model has no pooler).
#[derive(Module, Debug)]
pub struct BertModel<B: Backend> {
    /// HF key `bert.embeddings`.
    pub embeddings: BertEmbeddings<B>,
    /// HF key `bert.encoder`.
    pub encoder: BertEncoder<B>,
}

/// `cls.predictions.transform`.
#[derive(Module, Debug)]
pub struct BertPredictionHeadTransform<B: Backend> {
    /// HF key `transform.dense`, hidden → hidden.
    pub dense: Linear<B>,
    /// The config's `hidden_act`.
    pub act: Activation,
    /// HF key `transform.LayerNorm`.
    pub layer_norm: LayerNorm<B>,
}

/// `cls.predictions`: transform, then the decoder (tied to the word embeddings unless the
/// checkpoint carries a different matrix) plus a per-token bias.
#[derive(Module, Debug)]
pub struct BertLMPredictionHead<B: Backend> {
    /// Dense, activation and LayerNorm before the decoder.
    pub transform: BertPredictionHeadTransform<B>,
    /// Untied decoder weight `[vocab, hidden]`; `None` when tied to the word embeddings.
    pub decoder: Option<Param<Tensor<B, 2>>>,
    /// HF key `cls.predictions.bias`, `[vocab]`.
    pub bias: Param<Tensor<B, 1>>,
}

/// `cls`: the masked-LM head.
#[derive(Module, Debug)]
pub struct BertOnlyMLMHead<B: Backend> {
    /// HF key `cls.predictions`.
    pub predictions: BertLMPredictionHead<B>,
}

/// BERT with its masked-LM head (transformers' `BertForMaskedLM`); loaded from and saved
/// to Hugging Face weight keys.
#[derive(Module, Debug)]
pub struct BertForMaskedLM<B: Backend> {
    /// HF key prefix `bert`.
    pub bert: BertModel<B>,
    /// HF key prefix `cls`.
    pub cls: BertOnlyMLMHead<B>,
}

impl<B: Kernels> BertForMaskedLM<B> {
    /// Word-embedding lookup (the `inputs_embeds` a caller may edit before [`Self::encode`]).
    pub fn embed_tokens(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.bert.embeddings.word_embeddings.forward(input_ids)
    }

    /// Last hidden state `[batch, len, hidden]` from input embeddings. `dropout_seed`: `Some`
    /// in training (dropout on, masks derived from the seed), `None` for inference.
    /// `prefixes`: deep prompts, one key/value pair per layer.
    pub fn encode(
        &self,
        inputs_embeds: Tensor<B, 3>,
        token_type_ids: Option<Tensor<B, 2, Int>>,
        mask: &AttentionMask<B>,
        prefixes: Option<&Prefixes<B>>,
        dropout_seed: Option<u64>,
    ) -> Tensor<B, 3> {
        let mut x = self.bert.embeddings.forward(
            inputs_embeds,
            token_type_ids,
            prefixes.map(|p| &p.offsets[..]),
            dropout_seed,
        );
        let prefixed = prefixes.map(|p| mask.with_prefix(p));
        let mask = prefixed.as_ref().unwrap_or(mask);
        for (i, layer) in self.bert.encoder.layer.iter().enumerate() {
            x = layer.forward(x, mask, prefixes.map(|p| &p.layers[i]), dropout_seed);
        }
        x
    }

    /// Like [`Self::encode`], but only the last hidden state's rows at `positions` (flat
    /// indices into `[batch * len]`, the same number `k` per example, example-major) as
    /// `[batch * k, hidden]`. The last layer runs its queries, feed-forward and LayerNorms
    /// on those rows alone; nothing after it reads the other rows when only `[MASK]` is
    /// scored, so classification skips most of that layer.
    pub fn encode_rows(
        &self,
        inputs_embeds: Tensor<B, 3>,
        token_type_ids: Option<Tensor<B, 2, Int>>,
        mask: &AttentionMask<B>,
        prefixes: Option<&Prefixes<B>>,
        positions: Tensor<B, 1, Int>,
    ) -> Tensor<B, 2> {
        let [b, l, h] = inputs_embeds.dims();
        let prefixed = prefixes.map(|p| mask.with_prefix(p));
        let mask = prefixed.as_ref().unwrap_or(mask);
        let prefix = |i: usize| prefixes.map(|p| &p.layers[i]);
        let n = positions.dims()[0];
        let layers = &self.bert.encoder.layer;
        let mut x = self.bert.embeddings.forward(
            inputs_embeds,
            token_type_ids,
            prefixes.map(|p| &p.offsets[..]),
            None,
        );
        let Some((last, rest)) = layers.split_last() else {
            return x.reshape([b * l, h]).select(0, positions);
        };
        for (i, layer) in rest.iter().enumerate() {
            x = layer.forward(x, mask, prefix(i), None);
        }
        let rows = x
            .clone()
            .reshape([b * l, h])
            .select(0, positions)
            .reshape([b, n / b, h]);
        last.forward_rows(rows, x, mask, prefix(rest.len()), None)
            .reshape([n, h])
    }

    /// The decoder matrix `[vocab, hidden]`.
    pub fn decoder_weight(&self) -> Tensor<B, 2> {
        match &self.cls.predictions.decoder {
            Some(w) => w.val(),
            None => self.bert.embeddings.word_embeddings.weight.val(),
        }
    }

    /// The head's transform (dense, activation, LayerNorm) on hidden states `[n, hidden]`.
    pub fn head_transform(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        let t = &self.cls.predictions.transform;
        t.layer_norm
            .forward(t.act.apply(kernels::linear(hidden, &t.dense)))
    }

    /// MLM logits over the whole vocabulary for hidden states `[n, hidden]`.
    pub fn mlm_logits(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        let h = self.head_transform(hidden);
        kernels::linear_t(h, self.decoder_weight(), self.cls.predictions.bias.val())
    }

    /// MLM logits restricted to some token ids (`[n, hidden]` → `[n, ids.len()]`): the same
    /// numbers as the full logits' columns, without computing the other 21k columns.
    pub fn mlm_logits_for(
        &self,
        hidden: Tensor<B, 2>,
        token_ids: Tensor<B, 1, Int>,
    ) -> Tensor<B, 2> {
        let h = self.head_transform(hidden);
        let w = self.decoder_weight().select(0, token_ids.clone());
        let bias = self.cls.predictions.bias.val().select(0, token_ids);
        kernels::linear_t(h, w, bias)
    }

    /// Full forward like `BertForMaskedLM(input_ids, attention_mask)`: logits `[batch, len, vocab]`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let [b, l] = input_ids.dims();
        let mask = AttentionMask::new(attention_mask);
        let hidden = self.encode(self.embed_tokens(input_ids), None, &mask, None, None);
        let h = hidden.dims()[2];
        let logits = self.mlm_logits(hidden.reshape([b * l, h]));
        let v = logits.dims()[1];
        logits.reshape([b, l, v])
    }
}

impl<B: Backend> BertForMaskedLM<B> {
    /// Hidden size `H`, the word-embedding width.
    pub fn hidden_size(&self) -> usize {
        self.bert.embeddings.word_embeddings.weight.dims()[1]
    }

    /// Number of rows of the word-embedding table.
    pub fn vocab_size(&self) -> usize {
        self.bert.embeddings.word_embeddings.weight.dims()[0]
    }

    /// Word-embedding rows of `ids` on the host, `[ids.len(), hidden]` (e.g. to initialise
    /// prompt vectors from the `[unusedK]` rows).
    pub fn token_embeddings(&self, ids: &[u32]) -> RawTensor {
        let weight = self.bert.embeddings.word_embeddings.weight.val();
        let idx = Tensor::<B, 1, Int>::from_data(
            burn::tensor::TensorData::new(ids.iter().map(|&i| i as i64).collect(), [ids.len()]),
            &weight.device(),
        );
        to_host(weight.select(0, idx))
    }

    /// The shape deep prompts need from this backbone.
    pub fn prefix_shape(&self) -> PrefixShape {
        PrefixShape {
            num_layers: self.bert.encoder.layer.len(),
            num_heads: self
                .bert
                .encoder
                .layer
                .first()
                .map_or(1, |l| l.attention.self_attention.num_heads),
            hidden: self.hidden_size(),
        }
    }

    /// Number of position embeddings: the longest sequence the model accepts, deep-prompt
    /// prefix included.
    pub fn max_positions(&self) -> usize {
        self.bert.embeddings.position_embeddings.weight.dims()[0]
    }
}
