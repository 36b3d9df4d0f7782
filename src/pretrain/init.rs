//! Random initial weights for pretraining from scratch, as transformers initialises
//! `BertForMaskedLM`: normal(0, 0.02) for matrices and embeddings (the padding row zero),
//! zero biases, LayerNorm weight 1 and bias 0.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::BertConfig;
use crate::model::tensors::{RawTensor, TensorMap};

/// Standard normal sample by the Box–Muller transform (rand's normal distribution lives in
/// `rand_distr`, a dependency not worth adding for one line).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// The Hugging Face tensors of a freshly initialised `BertForMaskedLM` (tied decoder).
pub fn random_weights(c: &BertConfig, seed: u64) -> TensorMap {
    let mut rng = StdRng::seed_from_u64(seed);
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let mut map = TensorMap::new();
    let mut matrix = |map: &mut TensorMap, key: String, shape: Vec<usize>| {
        let n = shape.iter().product();
        let data = (0..n).map(|_| 0.02 * normal(&mut rng)).collect();
        map.insert(key, RawTensor::new(shape, data));
    };
    let zeros = |n: usize| RawTensor::new(vec![n], vec![0.0; n]);
    let ones = |n: usize| RawTensor::new(vec![n], vec![1.0; n]);
    let e = "bert.embeddings";
    matrix(&mut map, format!("{e}.word_embeddings.weight"), vec![v, h]);
    if let Some(w) = map.get_mut(&format!("{e}.word_embeddings.weight")) {
        w.data[..h].fill(0.0); // padding_idx 0
    }
    matrix(
        &mut map,
        format!("{e}.position_embeddings.weight"),
        vec![c.max_position_embeddings, h],
    );
    matrix(
        &mut map,
        format!("{e}.token_type_embeddings.weight"),
        vec![c.type_vocab_size, h],
    );
    let mut linears: Vec<(String, usize, usize)> = Vec::new();
    let mut norms: Vec<String> = vec![format!("{e}.LayerNorm")];
    for l in 0..c.num_hidden_layers {
        let p = format!("bert.encoder.layer.{l}");
        for q in ["query", "key", "value"] {
            linears.push((format!("{p}.attention.self.{q}"), h, h));
        }
        linears.push((format!("{p}.attention.output.dense"), h, h));
        linears.push((format!("{p}.intermediate.dense"), h, i));
        linears.push((format!("{p}.output.dense"), i, h));
        norms.push(format!("{p}.attention.output.LayerNorm"));
        norms.push(format!("{p}.output.LayerNorm"));
    }
    linears.push(("cls.predictions.transform.dense".into(), h, h));
    norms.push("cls.predictions.transform.LayerNorm".into());
    for (p, d_in, d_out) in linears {
        matrix(&mut map, format!("{p}.weight"), vec![d_out, d_in]);
        map.insert(format!("{p}.bias"), zeros(d_out));
    }
    for p in norms {
        map.insert(format!("{p}.weight"), ones(h));
        map.insert(format!("{p}.bias"), zeros(h));
    }
    map.insert("cls.predictions.bias".into(), zeros(v));
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_complete_model_with_bert_statistics() {
        let c = BertConfig::from_json(
            br#"{"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 32}"#,
        )
        .unwrap();
        let map = random_weights(&c, 1);
        let w = &map["bert.encoder.layer.1.intermediate.dense.weight"];
        assert_eq!(w.shape, vec![32, 16]);
        let n = w.data.len() as f32;
        let mean = w.data.iter().sum::<f32>() / n;
        let sd = (w.data.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt();
        assert!(
            mean.abs() < 0.004 && (sd - 0.02).abs() < 0.003,
            "{mean} {sd}"
        );
        let weights =
            crate::model::weights::Weights::new(std::path::Path::new("init"), map.clone()).unwrap();
        crate::model::BertForMaskedLM::<crate::Cpu>::from_weights(&c, weights, &Default::default())
            .unwrap();
        assert_eq!(random_weights(&c, 1), map, "seeded");
    }
}
