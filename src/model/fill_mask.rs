//! Top-k predictions at every `[MASK]` of a text (transformers' `fill-mask` pipeline).

use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};

use super::bert::BertForMaskedLM;
use crate::error::{Error, Result};
use crate::tokenizer::BertTokenizer;

/// The most probable tokens at one `[MASK]`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MaskPrediction {
    /// Position of the `[MASK]` in the encoded ids (0 is `[CLS]`).
    pub position: usize,
    /// `(token, id, probability)`, most probable first.
    pub candidates: Vec<(String, u32, f32)>,
}

/// The `top_k` most probable tokens at every `[MASK]` of `text`, in order of position.
/// The text is encoded as `[CLS] text [SEP]`, truncated to the model's positions.
/// Returns [`Error::Invalid`] when the encoded text has no `[MASK]`.
pub fn fill_mask<B: super::kernels::Kernels>(
    model: &BertForMaskedLM<B>,
    tokenizer: &BertTokenizer,
    text: &str,
    top_k: usize,
    device: &B::Device,
) -> Result<Vec<MaskPrediction>> {
    let ids = tokenizer.encode_with_specials(text, model.max_positions());
    let positions: Vec<usize> = ids
        .iter()
        .enumerate()
        .filter(|(_, i)| **i == tokenizer.mask_id)
        .map(|(p, _)| p)
        .collect();
    if positions.is_empty() {
        return Err(Error::invalid(format!(
            "the text has no [MASK] token: \"{text}\""
        )));
    }
    let n = ids.len();
    let input = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids.iter().map(|&i| i as i64).collect(), [1, n]),
        device,
    );
    let mask = Tensor::<B, 2, Int>::ones([1, n], device);
    let logits = model.forward(input, mask);
    let vocab = logits.dims()[2];
    let mut out = Vec::new();
    for &p in &positions {
        let row = logits.clone().slice([0..1, p..p + 1]).reshape([1, vocab]);
        let probs = softmax(row, 1)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 data");
        let mut order: Vec<usize> = (0..vocab).collect();
        let k = top_k.min(vocab);
        order.select_nth_unstable_by(k.saturating_sub(1), |a, b| probs[*b].total_cmp(&probs[*a]));
        order.truncate(k);
        order.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]));
        let candidates = order
            .into_iter()
            .map(|i| {
                (
                    tokenizer
                        .id_to_token(i as u32)
                        .unwrap_or_else(|| format!("<{i}>")),
                    i as u32,
                    probs[i],
                )
            })
            .collect();
        out.push(MaskPrediction {
            position: p,
            candidates,
        });
    }
    Ok(out)
}
