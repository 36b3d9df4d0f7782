//! BERT's Hugging Face weights. Each struct has one `io` function that names its keys (below
//! its prefix) and is walked both ways: [`BertForMaskedLM::from_weights`] loads through it,
//! [`BertForMaskedLM::hf_tensors`] saves through it, so every key is spelled once.

use burn::tensor::backend::Backend;

use super::{
    BertAttention, BertEmbeddings, BertEncoder, BertForMaskedLM, BertIntermediate,
    BertLMPredictionHead, BertLayer, BertModel, BertOnlyMLMHead, BertPredictionHeadTransform,
    BertResidualOutput, BertSelfAttention,
};
use crate::error::Result;
use crate::model::config::BertConfig;
use crate::model::io::host::{RawTensor, to_host};
use crate::model::io::weights::{Io, Weights, new_param};
use crate::model::layers::{DropoutSite, LayerNorm, SeededDropout};

impl<B: Backend> BertForMaskedLM<B> {
    /// Builds the model from checkpoint tensors (keys already canonical, see [`Weights`]);
    /// fails naming every missing, mis-shaped or unexpected key.
    pub fn from_weights(
        config: &BertConfig,
        mut weights: Weights,
        device: &B::Device,
    ) -> Result<Self> {
        let io = &mut Io::Load {
            weights: &mut weights,
            device,
        };
        let lm = Self::io(io, None, config);
        weights.finish()?;
        Ok(lm)
    }

    /// The weights under their Hugging Face names and layouts (tied decoder omitted), ready
    /// to be written as a `model.safetensors` that transformers loads.
    pub fn hf_tensors(&self) -> Vec<(String, RawTensor)> {
        let mut out = Vec::new();
        Self::io(&mut Io::Save(&mut out), Some(self), &self.config());
        out
    }

    /// The architecture of this model as `config.json` would give it (the dropout
    /// probabilities as its layers hold them).
    pub fn config(&self) -> BertConfig {
        let e = &self.bert.embeddings;
        let first = self.bert.encoder.layer.first();
        BertConfig {
            vocab_size: self.vocab_size(),
            hidden_size: self.hidden_size(),
            num_hidden_layers: self.bert.encoder.layer.len(),
            num_attention_heads: self.prefix_shape().num_heads,
            intermediate_size: first.map_or(0, |l| l.intermediate.dense.weight.dims()[1]),
            max_position_embeddings: self.max_positions(),
            type_vocab_size: e.token_type_embeddings.weight.dims()[0],
            layer_norm_eps: e.layer_norm.eps,
            hidden_act: self.cls.predictions.transform.act,
            hidden_dropout_prob: e.dropout.prob,
            attention_probs_dropout_prob: first
                .map_or(e.dropout.prob, |l| l.attention.self_attention.dropout.prob),
        }
    }

    fn io(io: &mut Io<'_, B>, cur: Option<&Self>, c: &BertConfig) -> Self {
        let embeddings = BertEmbeddings::io(io, cur.map(|m| &m.bert.embeddings), c);
        let layer = (0..c.num_hidden_layers)
            .map(|i| {
                let cur = cur.map(|m| &m.bert.encoder.layer[i]);
                BertLayer::io(io, &format!("bert.encoder.layer.{i}"), cur, c, i)
            })
            .collect();
        let cls = BertOnlyMLMHead::io(io, cur.map(|m| &m.cls), c, &embeddings);
        BertForMaskedLM {
            bert: BertModel {
                embeddings,
                encoder: BertEncoder { layer },
            },
            cls,
        }
    }
}

impl<B: Backend> BertEmbeddings<B> {
    fn io(io: &mut Io<'_, B>, cur: Option<&Self>, c: &BertConfig) -> Self {
        let p = "bert.embeddings";
        let h = c.hidden_size;
        BertEmbeddings {
            word_embeddings: io.embedding(
                &format!("{p}.word_embeddings.weight"),
                cur.map(|e| &e.word_embeddings),
                c.vocab_size,
                h,
            ),
            position_embeddings: io.embedding(
                &format!("{p}.position_embeddings.weight"),
                cur.map(|e| &e.position_embeddings),
                c.max_position_embeddings,
                h,
            ),
            token_type_embeddings: io.embedding(
                &format!("{p}.token_type_embeddings.weight"),
                cur.map(|e| &e.token_type_embeddings),
                c.type_vocab_size,
                h,
            ),
            layer_norm: LayerNorm::io(
                io,
                &format!("{p}.LayerNorm"),
                cur.map(|e| &e.layer_norm),
                h,
                c.layer_norm_eps,
            ),
            dropout: SeededDropout::at(c.hidden_dropout_prob, DropoutSite::Embeddings),
        }
    }
}

impl<B: Backend> BertLayer<B> {
    /// Layer `i` at prefix `p`, with its three dropout sites (see [`DropoutSite`]).
    fn io(io: &mut Io<'_, B>, p: &str, cur: Option<&Self>, c: &BertConfig, i: usize) -> Self {
        let (h, inter) = (c.hidden_size, c.intermediate_size);
        let sa = cur.map(|l| &l.attention.self_attention);
        let self_attention = BertSelfAttention {
            query: io.linear(
                &format!("{p}.attention.self.query"),
                sa.map(|a| &a.query),
                h,
                h,
            ),
            key: io.linear(&format!("{p}.attention.self.key"), sa.map(|a| &a.key), h, h),
            value: io.linear(
                &format!("{p}.attention.self.value"),
                sa.map(|a| &a.value),
                h,
                h,
            ),
            dropout: SeededDropout::at(
                c.attention_probs_dropout_prob,
                DropoutSite::AttentionProbs { layer: i },
            ),
            num_heads: c.num_attention_heads,
        };
        let output = BertResidualOutput::io(
            io,
            &format!("{p}.attention.output"),
            cur.map(|l| &l.attention.output),
            [h, h],
            c,
            DropoutSite::AttentionOutput { layer: i },
        );
        let intermediate = BertIntermediate {
            dense: io.linear(
                &format!("{p}.intermediate.dense"),
                cur.map(|l| &l.intermediate.dense),
                h,
                inter,
            ),
            act: c.hidden_act,
        };
        BertLayer {
            attention: BertAttention {
                self_attention,
                output,
            },
            intermediate,
            output: BertResidualOutput::io(
                io,
                &format!("{p}.output"),
                cur.map(|l| &l.output),
                [inter, h],
                c,
                DropoutSite::FeedForwardOutput { layer: i },
            ),
        }
    }
}

impl<B: Backend> BertResidualOutput<B> {
    /// `{p}.dense` (`[d_in, d_out]`) and `{p}.LayerNorm`, dropout at `site`.
    fn io(
        io: &mut Io<'_, B>,
        p: &str,
        cur: Option<&Self>,
        [d_in, d_out]: [usize; 2],
        c: &BertConfig,
        site: DropoutSite,
    ) -> Self {
        BertResidualOutput {
            dense: io.linear(&format!("{p}.dense"), cur.map(|o| &o.dense), d_in, d_out),
            layer_norm: LayerNorm::io(
                io,
                &format!("{p}.LayerNorm"),
                cur.map(|o| &o.layer_norm),
                d_out,
                c.layer_norm_eps,
            ),
            dropout: SeededDropout::at(c.hidden_dropout_prob, site),
        }
    }
}

impl<B: Backend> BertOnlyMLMHead<B> {
    /// `cls.predictions`; `embeddings` are the (already built) word embeddings the decoder is
    /// normally tied to.
    fn io(
        io: &mut Io<'_, B>,
        cur: Option<&Self>,
        c: &BertConfig,
        embeddings: &BertEmbeddings<B>,
    ) -> Self {
        let p = "cls.predictions";
        let (h, v) = (c.hidden_size, c.vocab_size);
        let cur = cur.map(|m| &m.predictions);
        let t = cur.map(|m| &m.transform);
        let transform = BertPredictionHeadTransform {
            dense: io.linear(&format!("{p}.transform.dense"), t.map(|t| &t.dense), h, h),
            act: c.hidden_act,
            layer_norm: LayerNorm::io(
                io,
                &format!("{p}.transform.LayerNorm"),
                t.map(|t| &t.layer_norm),
                h,
                c.layer_norm_eps,
            ),
        };
        let decoder_key = format!("{p}.decoder.weight");
        let bias_key = format!("{p}.bias");
        let (decoder, bias) = match io {
            Io::Load { weights, device } => {
                let device = *device;
                // The decoder is normally tied (and then omitted from safetensors); keep a
                // separate matrix only when the checkpoint carries one that differs from the
                // embeddings. Old checkpoints carry the bias as `decoder.bias` only.
                let word = to_host(embeddings.word_embeddings.weight.val()).data;
                let decoder = weights
                    .take_optional(&decoder_key, &[v, h])
                    .filter(|d| *d != word)
                    .map(|d| new_param(&decoder_key, d, [v, h], device));
                let decoder_bias = weights.take_optional(&format!("{p}.decoder.bias"), &[v]);
                let bias = match decoder_bias {
                    Some(d) if !weights.contains(&bias_key) => new_param(&bias_key, d, [v], device),
                    _ => weights.param(&bias_key, [v], device),
                };
                (decoder, bias)
            }
            Io::Save(_) => {
                let decoder = cur.and_then(|m| m.decoder.as_ref());
                let decoder = decoder.map(|d| io.param(&decoder_key, Some(d), [v, h]));
                (decoder, io.param(&bias_key, cur.map(|m| &m.bias), [v]))
            }
        };
        BertOnlyMLMHead {
            predictions: BertLMPredictionHead {
                transform,
                decoder,
                bias,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Cpu;
    use crate::model::ModelDir;
    use crate::model::io::weights::Weights;

    /// Saving walks the same keys as loading: the shipped model's tensors load back into a
    /// model with the same tensors and the same architecture.
    #[test]
    fn saved_tensors_load_back() {
        let dir =
            ModelDir::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/zh-mini"))
                .unwrap();
        let lm = dir.load::<Cpu>(&Default::default()).unwrap();
        assert_eq!(lm.config(), dir.config);
        let saved = lm.hf_tensors();
        let map = saved.iter().cloned().collect();
        let w = Weights::new(Path::new("saved"), map).unwrap();
        let back = super::BertForMaskedLM::<Cpu>::from_weights(&dir.config, w, &Default::default())
            .unwrap();
        assert_eq!(back.hf_tensors(), saved);
    }
}
