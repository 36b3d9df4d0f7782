//! Weighted averages of checkpoints of one architecture (`ptune merge`): interpolating a
//! continued-pretraining run back towards the model it started from (as WiSE-FT does for
//! fine-tuned models), or averaging several runs ("model soups").
//!
//! Every part is loaded through [`ModelDir::load`], so the average is taken over the canonical
//! Hugging Face tensors whatever layout each part was stored in (f32/f16/bf16, sharded or not,
//! `pytorch_model.bin`), and the result is an ordinary [`BertForMaskedLM`] that
//! [`super::hf_dir::save_model_dir`] writes.

use burn::tensor::backend::Backend;

use super::host::{RawTensor, TensorMap};
use super::weights::Weights;
use crate::error::{Error, Result, read_file};
use crate::model::bert::BertForMaskedLM;
use crate::model::config::BertConfig;
use crate::model::io::model_dir::ModelDir;

/// How far the weights of a merge may sum away from 1 (they are parsed from decimal text).
const WEIGHT_SUM_TOLERANCE: f64 = 1e-6;

/// `Σ weightᵢ · modelᵢ`, tensor by tensor, accumulated in f64 (so a weight of exactly 1 on one
/// model and 0 on the others gives that model's tensors bit for bit). The parts must share the
/// architecture (config.json up to dropout, which fixes the set of tensors) and the vocabulary
/// file (byte for byte); the weights must be finite and sum to 1 (negative weights extrapolate). The config
/// of the result is the first part's.
pub fn merge_models<B: Backend>(
    parts: &[(ModelDir, f64)],
    device: &B::Device,
) -> Result<BertForMaskedLM<B>> {
    if parts.len() < 2 {
        return Err(Error::invalid("merge needs at least two models"));
    }
    let first = &parts[0].0;
    if let Some((dir, w)) = parts.iter().find(|(_, w)| !w.is_finite()) {
        return Err(Error::invalid(format!(
            "the weight of {} is {w}; weights must be finite",
            dir.dir.display()
        )));
    }
    let sum: f64 = parts.iter().map(|(_, w)| w).sum();
    if (sum - 1.0).abs() > WEIGHT_SUM_TOLERANCE {
        // rounded, so that 0.2 + 0.7 reads "0.9", not "0.8999999999999999"
        let shown = (sum * 1e9).round() / 1e9;
        return Err(Error::invalid(format!(
            "the merge weights sum to {shown}, not 1"
        )));
    }
    let vocab = read_file(&first.vocab_file)?;
    for (dir, _) in &parts[1..] {
        if let Some(field) = architecture_difference(&first.config, &dir.config) {
            return Err(Error::file(
                dir.dir.join("config.json"),
                format!(
                    "{field} differs from {}'s: only models of one architecture can be merged",
                    first.dir.display()
                ),
            ));
        }
        if read_file(&dir.vocab_file)? != vocab {
            return Err(Error::file(
                &dir.vocab_file,
                format!(
                    "differs from {}: the token ids of the two models mean different tokens",
                    first.vocab_file.display()
                ),
            ));
        }
    }

    // One part in memory at a time, next to the f64 sums. The architecture (checked above)
    // fixes the canonical tensors' names, order and shapes, so the parts' lists line up.
    let mut sums: Vec<(String, Vec<usize>, Vec<f64>)> = Vec::new();
    for (dir, w) in parts {
        let tensors = dir.load::<B>(device)?.hf_tensors();
        if sums.is_empty() {
            sums = tensors
                .iter()
                .map(|(k, t)| (k.clone(), t.shape.clone(), vec![0.0; t.data.len()]))
                .collect();
        }
        for ((key, shape, acc), (k, t)) in sums.iter_mut().zip(&tensors) {
            debug_assert!(
                key == k && *shape == t.shape,
                "{key}: {shape:?} vs {k}: {:?}",
                t.shape
            );
            for (a, &x) in acc.iter_mut().zip(&t.data) {
                *a += *w * f64::from(x);
            }
        }
    }
    let mut map = TensorMap::new();
    for (key, shape, acc) in sums {
        let data: Vec<f32> = acc.iter().map(|&a| a as f32).collect();
        if data.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid(format!(
                "the merged tensor \"{key}\" is not finite (weights too large for f32)"
            )));
        }
        map.insert(key, RawTensor::new(shape, data));
    }
    BertForMaskedLM::from_weights(
        &first.config,
        Weights::new(&first.weight_file, map)?,
        device,
    )
}

/// The first `config.json` field (dropout aside) in which two architectures differ.
fn architecture_difference(a: &BertConfig, b: &BertConfig) -> Option<&'static str> {
    let fields: [(&'static str, bool); 9] = [
        ("vocab_size", a.vocab_size == b.vocab_size),
        ("hidden_size", a.hidden_size == b.hidden_size),
        (
            "num_hidden_layers",
            a.num_hidden_layers == b.num_hidden_layers,
        ),
        (
            "num_attention_heads",
            a.num_attention_heads == b.num_attention_heads,
        ),
        (
            "intermediate_size",
            a.intermediate_size == b.intermediate_size,
        ),
        (
            "max_position_embeddings",
            a.max_position_embeddings == b.max_position_embeddings,
        ),
        ("type_vocab_size", a.type_vocab_size == b.type_vocab_size),
        ("layer_norm_eps", a.layer_norm_eps == b.layer_norm_eps),
        ("hidden_act", a.hidden_act == b.hidden_act),
    ];
    fields.iter().find(|(_, same)| !same).map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Cpu;
    use crate::model::hf_dir::{SaveOptions, save_model_dir};
    use crate::model::tensors::StorageDType;

    fn shipped() -> ModelDir {
        ModelDir::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/zh-mini"))
            .unwrap()
    }

    /// A copy of `src` in `out` with every weight multiplied by `scale`.
    fn scaled_copy(src: &ModelDir, scale: f32, out: &Path) -> ModelDir {
        let lm = src.load::<Cpu>(&Default::default()).unwrap();
        let mut map = TensorMap::new();
        for (k, t) in lm.hf_tensors() {
            let data = t.data.iter().map(|x| x * scale).collect();
            map.insert(k, RawTensor::new(t.shape, data));
        }
        let weights = Weights::new(&src.weight_file, map).unwrap();
        let scaled =
            BertForMaskedLM::<Cpu>::from_weights(&src.config, weights, &Default::default())
                .unwrap();
        let opts = SaveOptions {
            dtype: StorageDType::F32,
            max_shard_bytes: None,
        };
        save_model_dir(&scaled, &src.config, &src.vocab_file, true, out, &opts).unwrap();
        ModelDir::open(out).unwrap()
    }

    fn max_diff(a: &[(String, RawTensor)], b: &[(String, RawTensor)], scale: f32) -> f32 {
        assert_eq!(a.len(), b.len());
        let mut worst = 0.0f32;
        for ((ka, ta), (kb, tb)) in a.iter().zip(b) {
            assert_eq!((ka, &ta.shape), (kb, &tb.shape));
            for (x, y) in ta.data.iter().zip(&tb.data) {
                worst = worst.max((x * scale - y).abs());
            }
        }
        worst
    }

    #[test]
    fn weighted_averages_are_taken_tensor_by_tensor() {
        let tmp = tempfile::tempdir().unwrap();
        let zh = shipped();
        let double = scaled_copy(&zh, 2.0, &tmp.path().join("double"));
        let orig = zh.load::<Cpu>(&Default::default()).unwrap().hf_tensors();
        let device = Default::default();
        // all weight on one model: that model, bit for bit
        let same = merge_models::<Cpu>(&[(zh.clone(), 1.0), (double.clone(), 0.0)], &device)
            .unwrap()
            .hf_tensors();
        assert_eq!(max_diff(&orig, &same, 1.0), 0.0);
        // halfway between x and 2x is 1.5x; extrapolating 2·x − 1·(2x) gives 0
        let half = merge_models::<Cpu>(&[(zh.clone(), 0.5), (double.clone(), 0.5)], &device)
            .unwrap()
            .hf_tensors();
        let d = max_diff(&orig, &half, 1.5);
        assert!(d < 1e-5, "0.5/0.5: off by {d}");
        let zero = merge_models::<Cpu>(&[(zh.clone(), 2.0), (double, -1.0)], &device)
            .unwrap()
            .hf_tensors();
        assert_eq!(max_diff(&orig, &zero, 0.0), 0.0);
    }

    #[test]
    fn refuses_bad_weights_other_architectures_and_other_vocabularies() {
        let tmp = tempfile::tempdir().unwrap();
        let zh = shipped();
        let device = Default::default();
        let err = |parts: &[(ModelDir, f64)]| {
            merge_models::<Cpu>(parts, &device)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[(zh.clone(), 1.0)]).contains("at least two models"));
        let e = err(&[(zh.clone(), 0.5), (zh.clone(), 0.4)]);
        assert!(e.contains("sum to 0.9"), "{e}");
        let e = err(&[(zh.clone(), f64::NAN), (zh.clone(), 0.5)]);
        assert!(e.contains("finite"), "{e}");

        // the same weights under another activation: a different architecture
        let relu = tmp.path().join("relu");
        std::fs::create_dir(&relu).unwrap();
        for f in ["model.safetensors", "vocab.txt"] {
            std::fs::copy(zh.dir.join(f), relu.join(f)).unwrap();
        }
        let config = std::fs::read_to_string(zh.dir.join("config.json")).unwrap();
        assert!(config.contains("\"gelu\""));
        std::fs::write(
            relu.join("config.json"),
            config.replace("\"gelu\"", "\"relu\""),
        )
        .unwrap();
        let e = err(&[(zh.clone(), 0.5), (ModelDir::open(&relu).unwrap(), 0.5)]);
        assert!(e.contains("config.json") && e.contains("hidden_act"), "{e}");

        // the same weights with one vocabulary line changed
        let other = tmp.path().join("vocab");
        std::fs::create_dir(&other).unwrap();
        for f in ["model.safetensors", "config.json"] {
            std::fs::copy(zh.dir.join(f), other.join(f)).unwrap();
        }
        let vocab = std::fs::read_to_string(zh.dir.join("vocab.txt")).unwrap();
        std::fs::write(
            other.join("vocab.txt"),
            vocab.replacen("[unused1]", "[unusedX]", 1),
        )
        .unwrap();
        let e = err(&[(zh, 0.5), (ModelDir::open(&other).unwrap(), 0.5)]);
        assert!(
            e.contains("vocab.txt") && e.contains("different tokens"),
            "{e}"
        );
    }
}
