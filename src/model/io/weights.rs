//! Hands checkpoint tensors to the model builders by their Hugging Face key, checking shapes,
//! and reports every missing, mis-shaped or unexpected key by name; [`Io`] walks a model's
//! keys once for both directions, loading and saving.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::{Param, ParamId};
use burn::nn::{Embedding, Linear};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use super::host::{RawTensor, SourceDType, TensorMap, to_host, transpose};
use crate::error::{Error, Result};

/// Keys that a BERT checkpoint may carry but a masked LM does not use.
fn ignorable(key: &str) -> bool {
    key.starts_with("bert.pooler.")
        || key.starts_with("cls.seq_relationship.")
        || key == "bert.embeddings.position_ids"
        || key == "bert.embeddings.token_type_ids"
}

/// Maps the key variants found in the wild onto `BertForMaskedLM`'s names:
/// no `bert.` prefix (a bare `BertModel` state dict), and TF-era `gamma`/`beta`.
pub fn canonical_key(key: &str) -> String {
    let mut k = key.to_string();
    if !k.starts_with("bert.") && !k.starts_with("cls.") {
        k = format!("bert.{k}");
    }
    if let Some(stem) = k.strip_suffix("LayerNorm.gamma") {
        k = format!("{stem}LayerNorm.weight");
    } else if let Some(stem) = k.strip_suffix("LayerNorm.beta") {
        k = format!("{stem}LayerNorm.bias");
    }
    k
}

/// Stable parameter id from a weight name, so optimizer state can be matched to parameters
/// across processes (resume) without depending on creation order. FNV-1a, 64 bit.
pub fn param_id(key: &str) -> ParamId {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    ParamId::from(h)
}

/// The tensors of a checkpoint by [`canonical_key`], taken one by one while a model is built;
/// missing, mis-shaped and left-over keys are collected and reported by [`Weights::finish`].
pub struct Weights {
    source: PathBuf,
    tensors: BTreeMap<String, RawTensor>,
    missing: Vec<String>,
    problems: Vec<String>,
}

impl Weights {
    /// The tensors of `map`, read from `source` (named in errors), under their canonical keys;
    /// returns [`Error::File`] when two keys map to the same canonical key.
    pub fn new(source: &Path, map: TensorMap) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        for (k, v) in map {
            let c = canonical_key(&k);
            if tensors.insert(c.clone(), v).is_some() {
                return Err(Error::file(
                    source,
                    format!("two tensors map to the key \"{c}\""),
                ));
            }
        }
        Ok(Weights {
            source: source.to_path_buf(),
            tensors,
            missing: Vec::new(),
            problems: Vec::new(),
        })
    }

    /// Whether a tensor (canonical key) is still there to be taken.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// Removes and returns a tensor if present, without recording it as missing.
    pub fn take_optional(&mut self, key: &str, shape: &[usize]) -> Option<Vec<f32>> {
        let t = self.tensors.remove(key)?;
        if t.dtype == SourceDType::Int {
            self.problems
                .push(format!("\"{key}\" has an integer dtype"));
            return None;
        }
        if let Some(x) = t.data.iter().find(|x| !x.is_finite()) {
            self.problems
                .push(format!("\"{key}\" has a non-finite value ({x})"));
            return None;
        }
        if t.shape != shape {
            self.problems.push(format!(
                "\"{key}\" has shape {:?}, expected {:?}",
                t.shape, shape
            ));
            return None;
        }
        Some(t.data)
    }

    /// Removes and returns a tensor; a missing or mis-shaped one is recorded and zeros are
    /// returned so that loading can go on and report every problem at once in
    /// [`finish`](Self::finish).
    pub fn take(&mut self, key: &str, shape: &[usize]) -> Vec<f32> {
        if !self.tensors.contains_key(key) {
            self.missing.push(key.to_string());
            return vec![0.0; shape.iter().product()];
        }
        self.take_optional(key, shape)
            .unwrap_or_else(|| vec![0.0; shape.iter().product()])
    }

    /// Fails if any key was missing, mis-shaped or left over (except ignorable ones).
    pub fn finish(self) -> Result<()> {
        let unexpected: BTreeSet<&String> = self.tensors.keys().filter(|k| !ignorable(k)).collect();
        let mut parts = self.problems.clone();
        if !self.missing.is_empty() {
            parts.push(format!("missing keys {:?}", self.missing));
        }
        if !unexpected.is_empty() {
            parts.push(format!("unexpected keys {unexpected:?}"));
        }
        if parts.is_empty() {
            Ok(())
        } else {
            Err(Error::file(&self.source, parts.join("; ")))
        }
    }

    /// [`Weights::take`] as a trainable parameter of `shape` on `device` (zeros if missing or
    /// mis-shaped, reported by [`Weights::finish`]).
    pub fn param<B: Backend, const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Param<Tensor<B, D>> {
        let data = self.take(key, &shape);
        new_param(key, data, shape, device)
    }
}

/// A trainable parameter whose id is derived from its weight name.
pub fn new_param<B: Backend, const D: usize>(
    key: &str,
    data: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let t = Tensor::<B, D>::from_data(TensorData::new(data, shape), device);
    Param::initialized(param_id(key), t.require_grad())
}

/// One direction of the mapping between a model and its Hugging Face tensors. A model's
/// `io` functions take one and name each key once: loading builds the model from
/// [`Weights`], saving appends its tensors (in PyTorch layouts, in the order the keys are
/// visited) and hands back clones of what it was given.
pub enum Io<'a, B: Backend> {
    /// Building a model from checkpoint tensors.
    Load {
        /// The tensors, taken from as keys are visited.
        weights: &'a mut Weights,
        /// Where the parameters are created.
        device: &'a B::Device,
    },
    /// Saving a model: its tensors are appended here by HF key.
    Save(&'a mut Vec<(String, RawTensor)>),
}

impl<B: Backend> Io<'_, B> {
    /// A parameter at `key` of `shape` (loading), or `cur`'s tensor saved at `key`.
    pub fn param<const D: usize>(
        &mut self,
        key: &str,
        cur: Option<&Param<Tensor<B, D>>>,
        shape: [usize; D],
    ) -> Param<Tensor<B, D>> {
        match self {
            Io::Load { weights, device } => weights.param(key, shape, *device),
            Io::Save(out) => {
                let p = saved(cur, key);
                out.push((key.to_string(), to_host(p.val())));
                p.clone()
            }
        }
    }

    /// A `Linear` at `{prefix}.weight` / `.bias`, its weight in PyTorch's `[out, in]` on disk
    /// (burn keeps `[in, out]`).
    pub fn linear(
        &mut self,
        prefix: &str,
        cur: Option<&Linear<B>>,
        d_in: usize,
        d_out: usize,
    ) -> Linear<B> {
        let key = format!("{prefix}.weight");
        let weight = match self {
            Io::Load { weights, device } => {
                let w = transpose(&weights.take(&key, &[d_out, d_in]), d_out, d_in);
                new_param(&key, w, [d_in, d_out], *device)
            }
            Io::Save(out) => {
                let w = &saved(cur, &key).weight;
                out.push((key, to_host(w.val()).transposed()));
                w.clone()
            }
        };
        let bias = cur.map(|l| l.bias.as_ref().expect("the linears here have a bias"));
        Linear {
            weight,
            bias: Some(self.param(&format!("{prefix}.bias"), bias, [d_out])),
        }
    }

    /// An `Embedding` whose table `[n, d]` is at `key`.
    pub fn embedding(
        &mut self,
        key: &str,
        cur: Option<&Embedding<B>>,
        n: usize,
        d: usize,
    ) -> Embedding<B> {
        Embedding {
            weight: self.param(key, cur.map(|e| &e.weight), [n, d]),
        }
    }
}

/// What a save walks: the model it was given.
fn saved<'t, T>(cur: Option<&'t T>, key: &str) -> &'t T {
    cur.unwrap_or_else(|| panic!("saving \"{key}\" needs the model to save"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_variants_are_canonicalised() {
        assert_eq!(
            canonical_key("embeddings.LayerNorm.gamma"),
            "bert.embeddings.LayerNorm.weight"
        );
        assert_eq!(
            canonical_key("bert.encoder.layer.0.output.LayerNorm.beta"),
            "bert.encoder.layer.0.output.LayerNorm.bias"
        );
        assert_eq!(
            canonical_key("cls.predictions.bias"),
            "cls.predictions.bias"
        );
        assert!(ignorable("bert.pooler.dense.weight"));
    }
}
