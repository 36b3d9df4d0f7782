//! Deep prompts initialised from the frozen LM's own activations: "initialise the prefix with
//! activations of real words" (prefix tuning, Li & Liang 2021, §7.2), which they found to
//! matter most in low-data settings. Random N(0, 1) prefixes (PEFT's default) are keys and
//! values no layer has ever seen; on a 4-layer zh-mini they push every prediction towards
//! chance before the first step. Keys and values of real tokens instead start the frozen LM
//! where it already works: as if a short text stood before the input.

use std::str::FromStr;

use burn::tensor::{Int, Tensor, TensorData};

use super::bert::{AttentionMask, BertForMaskedLM};
use super::kernels::Kernels;

/// How deep prompts start.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefixInit {
    /// N(0, 1), as PEFT's `nn.Embedding`.
    #[default]
    Random,
    /// The frozen LM's keys and values of this text's tokens ([`prefix_from_tokens`]).
    Text(String),
}

impl FromStr for PrefixInit {
    type Err = String;
    /// `random`, or `text:SOME TEXT`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "random" => Ok(Self::Random),
            _ => match s.strip_prefix("text:") {
                Some(t) if !t.trim().is_empty() => Ok(Self::Text(t.to_string())),
                Some(_) => Err("prefix init \"text:\" needs a text after the colon".into()),
                None => Err(format!(
                    "unknown prefix init \"{s}\" (expected random or text:SOME TEXT)"
                )),
            },
        }
    }
}

/// The prefix matrix `[prefix_len, layers·2·hidden]` (deep_prompt.rs's layout: per layer, the
/// key block then the value block) holding, for virtual token `p`, the keys and values every
/// layer computes for token `p` of `[CLS] t₀ … t_{P-1} [SEP]`, where `t` is `tokens` repeated
/// or cut to `prefix_len` tokens. Inference mode (no dropout). `tokens` must not be empty.
pub fn prefix_from_tokens<B: Kernels>(
    lm: &BertForMaskedLM<B>,
    tokens: &[u32],
    cls: u32,
    sep: u32,
    prefix_len: usize,
) -> Tensor<B, 2> {
    assert!(
        !tokens.is_empty(),
        "prefix_from_tokens needs at least one token"
    );
    let device = lm.bert.embeddings.word_embeddings.weight.device();
    let ids: Vec<i64> = std::iter::once(cls)
        .chain(tokens.iter().copied().cycle().take(prefix_len))
        .chain(std::iter::once(sep))
        .map(i64::from)
        .collect();
    let len = ids.len();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, len]), &device);
    let mask = AttentionMask::new(Tensor::<B, 2, Int>::ones([1, len], &device));
    let mut x = lm
        .bert
        .embeddings
        .forward(lm.embed_tokens(ids), None, None, None);
    let hidden = x.dims()[2];
    let rows = |t: Tensor<B, 3>| {
        t.slice([0..1, 1..1 + prefix_len, 0..hidden])
            .reshape([prefix_len, hidden])
    };
    let mut blocks = Vec::with_capacity(2 * lm.bert.encoder.layer.len());
    for layer in &lm.bert.encoder.layer {
        let attn = &layer.attention.self_attention;
        blocks.push(rows(attn.key.forward(x.clone())));
        blocks.push(rows(attn.value.forward(x.clone())));
        x = layer.forward(x, &mask, None, None);
    }
    Tensor::cat(blocks, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::deep_prompt::Prefixes;

    type B = crate::Cpu;

    /// The prefixes made from tokens `t` equal, layer by layer, the keys and values the LM
    /// itself computes for those tokens (read back through `Prefixes::from_rows`, the path
    /// attention uses), and a shorter token list is repeated.
    #[test]
    fn prefixes_are_the_lms_own_keys_and_values() {
        let dir = crate::model::ModelDir::open(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/models/zh-mini"
        )))
        .unwrap();
        let device = Default::default();
        let lm: BertForMaskedLM<B> = dir.load(&device).unwrap();
        let (cls, sep) = (101, 102);
        let toks = [2769u32, 812, 4263];
        let m = prefix_from_tokens(&lm, &toks, cls, sep, 5);
        let shape = lm.prefix_shape();
        assert_eq!(m.dims(), [5, shape.width()]);
        // reference: the same sequence, keys/values computed at each layer by hand
        let ids: Vec<i64> = [cls, 2769, 812, 4263, 2769, 812, sep]
            .iter()
            .map(|&x| x as i64)
            .collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, 7]), &device);
        let mask = AttentionMask::new(Tensor::<B, 2, Int>::ones([1, 7], &device));
        let mut x = lm
            .bert
            .embeddings
            .forward(lm.embed_tokens(ids), None, None, None);
        let p = Prefixes::from_rows(m.clone().reshape([1, 5, shape.width()]), None, shape);
        let (h, nh) = (shape.hidden, shape.num_heads);
        for (i, layer) in lm.bert.encoder.layer.iter().enumerate() {
            let a = &layer.attention.self_attention;
            let heads = |t: Tensor<B, 3>| {
                t.slice([0..1, 1..6, 0..h])
                    .reshape([1, 5, nh, h / nh])
                    .swap_dims(1, 2)
            };
            let k = heads(a.key.forward(x.clone()));
            let v = heads(a.value.forward(x.clone()));
            let dk: f32 = (k - p.layers[i].0.clone()).abs().max().into_scalar();
            let dv: f32 = (v - p.layers[i].1.clone()).abs().max().into_scalar();
            assert!(
                dk < 1e-6 && dv < 1e-6,
                "layer {i}: key diff {dk}, value diff {dv}"
            );
            x = layer.forward(x, &mask, None, None);
        }
        // the repeated tokens (positions 1 and 4 hold the same token) still differ by position
        let r1: Vec<f32> = m
            .clone()
            .slice([0..1, 0..shape.hidden])
            .into_data()
            .to_vec()
            .unwrap();
        let r4: Vec<f32> = m
            .slice([3..4, 0..shape.hidden])
            .into_data()
            .to_vec()
            .unwrap();
        assert_ne!(r1, r4);
    }
}
