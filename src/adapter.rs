//! Adapters: a trained P-tuning task baked into one small file — the prompt vectors (the
//! prompt encoder's output, n × H floats), the template, the label words, and a fingerprint
//! of the backbone they were trained against. Many adapters share one frozen backbone.
//!
//! Format: a safetensors file with the tensor `prompt_vectors` `[n, H]` (absent when the
//! template has no pseudo tokens) and the description as JSON in the metadata key `ptune`.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::classifier::PromptClassifier;
use crate::error::{Error, Result, read_file, write_atomic};
use crate::model::ModelDir;
use crate::model::bert::BertForMaskedLM;
use crate::model::prompt_encoder::{PromptEncoder, PromptEncoderKind};
use crate::model::tensors::{RawTensor, parse_safetensors, safetensors_bytes};
use crate::prompt::{Template, Verbalizer};
use crate::tokenizer::BertTokenizer;

pub const FORMAT: &str = "ptune-adapter-v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterInfo {
    pub format: String,
    pub template: String,
    /// `class=word,...` as given to `--labels`.
    pub labels: String,
    pub max_len: usize,
    pub hidden_size: usize,
    pub n_prompts: usize,
    /// SHA-256 of the backbone (config, vocabulary and weights); see [`fingerprint`].
    pub backbone: String,
    /// Where the vectors came from (run directory, method), for people.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    pub info: AdapterInfo,
    /// `[n_prompts, hidden]`, row-major.
    pub vectors: Vec<f32>,
}

/// SHA-256 over the architecture-relevant config, the vocabulary file and every weight (HF
/// names, f32, sorted): the same weights give the same fingerprint whether they were read
/// from safetensors or a pickle.
pub fn fingerprint<B: Backend>(model_dir: &ModelDir, lm: &BertForMaskedLM<B>) -> Result<String> {
    let mut h = Sha256::new();
    let c = &model_dir.config;
    h.update(
        format!(
            "{} {} {} {} {} {} {} {} {:?}",
            c.vocab_size,
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.intermediate_size,
            c.max_position_embeddings,
            c.type_vocab_size,
            c.layer_norm_eps,
            c.hidden_act
        )
        .as_bytes(),
    );
    h.update(read_file(&model_dir.vocab_file)?);
    let mut tensors = lm.hf_tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, shape, data) in tensors {
        h.update(k.as_bytes());
        for d in shape {
            h.update((d as u64).to_le_bytes());
        }
        for x in data {
            h.update(x.to_le_bytes());
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl Adapter {
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut meta = HashMap::new();
        meta.insert(
            "ptune".to_string(),
            serde_json::to_string(&self.info).expect("json"),
        );
        let shape = [self.info.n_prompts, self.info.hidden_size];
        let tensors: Vec<(String, &[usize], &[f32])> = if self.info.n_prompts == 0 {
            Vec::new()
        } else {
            vec![("prompt_vectors".to_string(), &shape[..], &self.vectors[..])]
        };
        write_atomic(path, &safetensors_bytes(tensors, Some(meta)))
    }

    pub fn read(path: &Path) -> Result<Self> {
        let bytes = read_file(path)?;
        let bad = |m: String| Error::file(path, m);
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not an adapter file: {e}")))?;
        let json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("ptune"))
            .ok_or_else(|| bad("not an adapter file (no ptune metadata)".into()))?;
        let info: AdapterInfo =
            serde_json::from_str(json).map_err(|e| bad(format!("bad adapter metadata: {e}")))?;
        if info.format != FORMAT {
            return Err(bad(format!(
                "unsupported adapter format \"{}\" (expected {FORMAT})",
                info.format
            )));
        }
        let map = parse_safetensors(&bytes).map_err(bad)?;
        let vectors = match map.get("prompt_vectors") {
            Some(t) if t.shape == [info.n_prompts, info.hidden_size] => t.data.clone(),
            Some(t) => {
                return Err(bad(format!(
                    "prompt_vectors has shape {:?}, metadata says [{}, {}]",
                    t.shape, info.n_prompts, info.hidden_size
                )));
            }
            None if info.n_prompts == 0 => Vec::new(),
            None => return Err(bad("prompt_vectors missing".into())),
        };
        Ok(Adapter { info, vectors })
    }

    /// Checks that this adapter was made for `backbone` (a [`fingerprint`]).
    pub fn check_backbone(&self, path: &Path, backbone: &str, model: &Path) -> Result<()> {
        if self.info.backbone != backbone {
            return Err(Error::file(
                path,
                format!(
                    "was trained against another backbone (fingerprint {}…) than {} ({}…)",
                    &self.info.backbone[..12.min(self.info.backbone.len())],
                    model.display(),
                    &backbone[..12]
                ),
            ));
        }
        Ok(())
    }

    /// The task, ready to run on a shared backbone.
    pub fn task<B: Backend>(
        &self,
        lm: &BertForMaskedLM<B>,
        tokenizer: &BertTokenizer,
        device: &B::Device,
    ) -> Result<Task<B>> {
        let template = Template::parse(&self.info.template, tokenizer)?;
        let verbalizer = Verbalizer::parse(&self.info.labels, tokenizer, template.n_mask())?;
        if template.n_pseudo() != self.info.n_prompts {
            return Err(Error::invalid(format!(
                "adapter: template has {} pseudo tokens but {} vectors",
                template.n_pseudo(),
                self.info.n_prompts
            )));
        }
        if lm.hidden_size() != self.info.hidden_size {
            return Err(Error::invalid(format!(
                "adapter: hidden size {} ≠ backbone's {}",
                self.info.hidden_size,
                lm.hidden_size()
            )));
        }
        if self.info.max_len > lm.max_positions() || self.info.max_len <= template.fixed_len() {
            return Err(Error::invalid(format!(
                "adapter: max_len {} must be in {}..={} (the template's fixed tokens + 1 .. the backbone's positions)",
                self.info.max_len,
                template.fixed_len() + 1,
                lm.max_positions()
            )));
        }
        let prompt = (self.info.n_prompts > 0).then(|| {
            let mut map = std::collections::BTreeMap::new();
            map.insert(
                "embedding.weight".to_string(),
                RawTensor::new(
                    vec![self.info.n_prompts, self.info.hidden_size],
                    self.vectors.clone(),
                ),
            );
            PromptEncoder::from_tensors(PromptEncoderKind::Embedding, &map, device)
                .expect("shapes checked")
        });
        Ok(Task {
            classifier: PromptClassifier {
                lm: lm.clone(),
                prompt,
            },
            template,
            verbalizer,
            max_len: self.info.max_len,
        })
    }
}

/// One classification task on a (shared) backbone: clones of a module share weight storage.
#[derive(Debug, Clone)]
pub struct Task<B: Backend> {
    pub classifier: PromptClassifier<B>,
    pub template: Template,
    pub verbalizer: Verbalizer,
    pub max_len: usize,
}

/// A classified text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub label: String,
    /// Per-class probability, in class order.
    pub probs: Vec<f32>,
    /// The text was cut to fit the task's `max_len`.
    pub truncated: bool,
}

impl<B: crate::model::kernels::Kernels> Task<B> {
    /// Classifies texts (batched, length-sorted, in parallel on CPU); `text_b` for pair templates.
    pub fn classify(
        &self,
        tokenizer: &BertTokenizer,
        texts: &[(&str, Option<&str>)],
        batch_size: usize,
        device: &B::Device,
    ) -> Result<Vec<Prediction>> {
        let encoded = texts
            .iter()
            .map(|(a, b)| self.template.encode(tokenizer, a, *b, self.max_len))
            .collect::<Result<Vec<_>>>()?;
        let scores = crate::classifier::score_all(
            &self.classifier,
            &encoded,
            &self.verbalizer.word_ids,
            batch_size,
            tokenizer.pad_id,
            device,
        );
        Ok(scores
            .iter()
            .zip(&encoded)
            .map(|(s, e)| Prediction {
                label: self.verbalizer.classes[crate::classifier::argmax(s)].clone(),
                probs: crate::classifier::softmax_row(s),
                truncated: e.truncated,
            })
            .collect())
    }

    pub fn n_params(&self) -> usize {
        self.classifier
            .prompt
            .as_ref()
            .map_or(0, |p| p.num_params())
    }
}
