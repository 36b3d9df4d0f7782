//! Adapters: a trained P-tuning task baked into one small file — the prompt vectors (the
//! prompt encoder's output, n × H floats), the template, the label words, and a fingerprint
//! of the backbone they were trained against. Many adapters share one frozen backbone.
//!
//! Deep-prompt adapters (P-tuning v2) add the per-layer keys and values, folded into one
//! matrix `prefix` `[P, layers · 2 · H]` (PEFT's layout, see [`crate::model::deep_prompt`]), and
//! optionally a linear head (`head.weight` `[classes, H]`, `head.bias`).
//!
//! Format: a safetensors file (f32, or f16 when exported with `--dtype f16`) with the tensor
//! `prompt_vectors` `[n, H]` (absent when the template has no pseudo tokens), `prefix` and
//! `head.*` when present, and the description as JSON in the metadata key `ptune`. Files with
//! prompt vectors only are `ptune-adapter-v1` (unchanged); with a prefix or a head, `-v2`.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::classifier::{Head, PromptClassifier, linear_head_from_tensors};
use crate::error::{Error, Result, read_file, write_atomic};
use crate::model::ModelDir;
use crate::model::bert::BertForMaskedLM;
use crate::model::deep_prompt::DeepPrompt;
use crate::model::prompt_encoder::{PromptEncoder, PromptEncoderKind};
use crate::model::tensors::{RawTensor, StorageDType, parse_safetensors, safetensors_bytes_as};
use crate::prompt::{PromptSpec, Template, Verbalizer};
use crate::tokenizer::BertTokenizer;

/// Format name of adapters with prompt vectors only.
pub const FORMAT: &str = "ptune-adapter-v1";
/// Adapters with deep prompts or a linear head.
pub const FORMAT_V2: &str = "ptune-adapter-v2";

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The adapter's description, stored as JSON in the safetensors metadata key `ptune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterInfo {
    /// [`FORMAT`] or [`FORMAT_V2`]; reading rejects anything else.
    pub format: String,
    /// The template spec (e.g. `"[P]*4 [MASK] {text}"`), see [`crate::prompt`].
    pub template: String,
    /// `class=word,...` as given to `--labels`.
    pub labels: String,
    /// Maximum encoded length in tokens, `[CLS]`, `[SEP]` and pseudo tokens included.
    pub max_len: usize,
    /// Hidden size of the backbone, the width of every prompt vector.
    pub hidden_size: usize,
    /// Number of prompt vectors: the template's `[P]` pseudo tokens (0: none).
    pub n_prompts: usize,
    /// SHA-256 of the backbone (config, vocabulary and weights); see [`fingerprint`].
    pub backbone: String,
    /// Where the vectors came from (run directory, method), for people.
    pub source: String,
    /// Deep prompts: virtual tokens per layer (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prefix_len: usize,
    /// The backbone's layers and heads the prefix is laid out for (with `prefix_len`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_layers: usize,
    /// Attention heads of the backbone (0 without deep prompts).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_heads: usize,
    /// The class is read by a linear head (`head.*` tensors) instead of the label words.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub head: bool,
    /// The head reads the `[CLS]` hidden state instead of the first `[MASK]`'s.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub head_on_cls: bool,
    /// The head reads the MLM head's transform of the first `[MASK]`'s state (a
    /// `verbalizer` head, see [`Head::Verbalizer`](crate::classifier::Head::Verbalizer)).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub head_on_transform: bool,
}

/// A trained task as stored in an adapter file: description and tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    /// The description (metadata key `ptune`).
    pub info: AdapterInfo,
    /// `[n_prompts, hidden]`, row-major.
    pub vectors: Vec<f32>,
    /// `[prefix_len, num_layers · 2 · hidden]`, row-major (empty without deep prompts).
    pub prefix: Vec<f32>,
    /// Linear head: weight `[classes, hidden]` and bias `[classes]`.
    pub head: Option<(Vec<f32>, Vec<f32>)>,
    /// `[classes]`: added to the label words' class scores (a calibrated zero-shot run, see
    /// [`prior_bias`](crate::classifier::prior_bias)); a
    /// [`FORMAT_V2`] tensor `class_bias`.
    pub class_bias: Option<Vec<f32>>,
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
    for (k, t) in tensors {
        h.update(k.as_bytes());
        for d in t.shape {
            h.update((d as u64).to_le_bytes());
        }
        for x in t.data {
            h.update(x.to_le_bytes());
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl AdapterInfo {
    /// Where the classifier reads the class, from the file's three head fields (checked on
    /// read: `head_on_cls` and `head_on_transform` need `head` and exclude each other).
    pub fn head_kind(&self) -> Head {
        match (self.head, self.head_on_cls, self.head_on_transform) {
            (false, ..) => Head::Mlm,
            (true, true, _) => Head::Cls,
            (true, false, true) => Head::Verbalizer,
            (true, false, false) => Head::Linear,
        }
    }

    /// This description with its three head fields set for `kind` (the inverse of
    /// [`AdapterInfo::head_kind`]).
    pub fn with_head_kind(self, kind: Head) -> Self {
        AdapterInfo {
            head: kind.is_linear(),
            head_on_cls: kind == Head::Cls,
            head_on_transform: kind == Head::Verbalizer,
            ..self
        }
    }
}

impl Adapter {
    /// Writes the adapter (tensors in `dtype`), atomically.
    pub fn write(&self, path: &Path, dtype: StorageDType) -> Result<()> {
        let mut meta = HashMap::new();
        meta.insert(
            "ptune".to_string(),
            serde_json::to_string(&self.info).expect("json"),
        );
        let i = &self.info;
        let shape = [i.n_prompts, i.hidden_size];
        let prefix_shape = [i.prefix_len, i.num_layers * 2 * i.hidden_size];
        let mut tensors: Vec<(String, &[usize], &[f32])> = Vec::new();
        if i.n_prompts > 0 {
            tensors.push(("prompt_vectors".to_string(), &shape[..], &self.vectors[..]));
        }
        if i.prefix_len > 0 {
            tensors.push(("prefix".to_string(), &prefix_shape[..], &self.prefix[..]));
        }
        let head_shapes = self
            .head
            .as_ref()
            .map(|(w, b)| ([b.len(), w.len() / b.len().max(1)], [b.len()]));
        if let (Some((w, b)), Some((ws, bs))) = (&self.head, &head_shapes) {
            tensors.push(("head.weight".to_string(), &ws[..], &w[..]));
            tensors.push(("head.bias".to_string(), &bs[..], &b[..]));
        }
        let bias_shape = self.class_bias.as_ref().map(|b| [b.len()]);
        if let (Some(b), Some(shape)) = (&self.class_bias, &bias_shape) {
            tensors.push(("class_bias".to_string(), &shape[..], &b[..]));
        }
        write_atomic(path, &safetensors_bytes_as(tensors, dtype, Some(meta)))
    }

    /// The format name this adapter's content calls for: deep prompts, a linear head or a
    /// class bias need [`FORMAT_V2`].
    pub fn format_for(prefix_len: usize, head: bool, class_bias: bool) -> &'static str {
        if prefix_len > 0 || head || class_bias {
            FORMAT_V2
        } else {
            FORMAT
        }
    }

    /// Reads and validates an adapter file: the format name, the tensor shapes against the
    /// metadata, and that no unexpected tensor is present. Returns [`Error::File`] naming
    /// `path` when any check fails, [`Error::Io`] when the file cannot be read.
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
        if info.format != FORMAT && info.format != FORMAT_V2 {
            return Err(bad(format!(
                "unsupported adapter format \"{}\" (expected {FORMAT} or {FORMAT_V2})",
                info.format
            )));
        }
        if info.format == FORMAT && (info.prefix_len > 0 || info.head) {
            return Err(bad(format!(
                "a {FORMAT} adapter cannot have deep prompts or a head (that is {FORMAT_V2})"
            )));
        }
        if info.head_on_cls && !info.head {
            return Err(bad("metadata: head_on_cls needs head: true".into()));
        }
        if info.head_on_transform && (!info.head || info.head_on_cls) {
            return Err(bad(
                "metadata: head_on_transform needs head: true and no head_on_cls".into(),
            ));
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
        let width = info.num_layers * 2 * info.hidden_size;
        let prefix = match map.get("prefix") {
            _ if info.prefix_len > 0 && (info.num_layers == 0 || info.num_heads == 0) => {
                return Err(bad(
                    "metadata: a prefix needs num_layers and num_heads".into()
                ));
            }
            Some(t) if t.shape == [info.prefix_len, width] && info.prefix_len > 0 => t.data.clone(),
            Some(t) => {
                return Err(bad(format!(
                    "prefix has shape {:?}, metadata says [{}, {width}] (prefix_len, layers {} × 2 × hidden {})",
                    t.shape, info.prefix_len, info.num_layers, info.hidden_size
                )));
            }
            None if info.prefix_len == 0 => Vec::new(),
            None => return Err(bad("prefix missing".into())),
        };
        let head = match (map.get("head.weight"), map.get("head.bias")) {
            (Some(w), Some(b))
                if info.head
                    && b.shape.len() == 1
                    && b.shape[0] > 0
                    && w.shape == [b.shape[0], info.hidden_size] =>
            {
                Some((w.data.clone(), b.data.clone()))
            }
            (None, None) if !info.head => None,
            (w, b) => {
                return Err(bad(format!(
                    "head: expected head.weight [classes, {}] and head.bias [classes] {}, found {:?} and {:?}",
                    info.hidden_size,
                    if info.head {
                        "(metadata says head)"
                    } else {
                        "only with metadata head: true"
                    },
                    w.map(|t| &t.shape),
                    b.map(|t| &t.shape)
                )));
            }
        };
        let class_bias = match map.get("class_bias") {
            None => None,
            Some(_) if info.format == FORMAT => {
                return Err(bad(format!(
                    "a {FORMAT} adapter cannot have a class_bias (that is {FORMAT_V2})"
                )));
            }
            Some(_) if head.is_some() => {
                return Err(bad(
                    "class_bias applies to label-word adapters, not to one with a linear head"
                        .into(),
                ));
            }
            Some(t) if t.shape.len() == 1 && t.shape[0] > 0 => Some(t.data.clone()),
            Some(t) => {
                return Err(bad(format!(
                    "class_bias has shape {:?}, expected [classes]",
                    t.shape
                )));
            }
        };
        if let Some(k) = map.keys().find(|k| {
            !matches!(
                k.as_str(),
                "prompt_vectors" | "prefix" | "head.weight" | "head.bias" | "class_bias"
            )
        }) {
            return Err(bad(format!("unexpected tensor \"{k}\"")));
        }
        Ok(Adapter {
            info,
            vectors,
            prefix,
            head,
            class_bias,
        })
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

    /// The task on `backbone`, once its fingerprint is checked: the adapter file at `path`
    /// must have been made for this backbone.
    pub fn attach<B: Backend>(
        &self,
        path: &Path,
        backbone: &Backbone<B>,
        device: &B::Device,
    ) -> Result<Task<B>> {
        self.check_backbone(path, &backbone.fingerprint, &backbone.dir)?;
        self.task(&backbone.lm, &backbone.tokenizer, device)
    }

    /// The task, ready to run on a shared backbone.
    pub fn task<B: Backend>(
        &self,
        lm: &BertForMaskedLM<B>,
        tokenizer: &BertTokenizer,
        device: &B::Device,
    ) -> Result<Task<B>> {
        let PromptSpec {
            template,
            verbalizer,
        } = PromptSpec::parse(&self.info.template, &self.info.labels, tokenizer)?;
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
        let positions = lm.max_positions().saturating_sub(self.info.prefix_len);
        if self.info.max_len > positions || self.info.max_len <= template.fixed_len() {
            return Err(Error::invalid(format!(
                "adapter: max_len {} must be in {}..={} (the template's fixed tokens + 1 .. the backbone's {} positions{})",
                self.info.max_len,
                template.fixed_len() + 1,
                positions,
                lm.max_positions(),
                if self.info.prefix_len > 0 {
                    format!(" less the prefix of {}", self.info.prefix_len)
                } else {
                    String::new()
                }
            )));
        }
        let shape = lm.prefix_shape();
        let deep = if self.info.prefix_len > 0 {
            if (self.info.num_layers, self.info.num_heads) != (shape.num_layers, shape.num_heads) {
                return Err(Error::invalid(format!(
                    "adapter: deep prompts for {} layers × {} heads, the backbone has {} × {}",
                    self.info.num_layers, self.info.num_heads, shape.num_layers, shape.num_heads
                )));
            }
            let mut map = std::collections::BTreeMap::new();
            map.insert(
                "embedding.weight".to_string(),
                RawTensor::new(
                    vec![self.info.prefix_len, shape.width()],
                    self.prefix.clone(),
                ),
            );
            Some(
                DeepPrompt::from_tensors(&map, shape, device)
                    .map_err(|m| Error::invalid(format!("adapter: {m}")))?,
            )
        } else {
            None
        };
        let head = match &self.head {
            Some((w, b)) => {
                if b.len() != verbalizer.n_classes() {
                    return Err(Error::invalid(format!(
                        "adapter: the head has {} classes, the labels {}",
                        b.len(),
                        verbalizer.n_classes()
                    )));
                }
                let mut map = std::collections::BTreeMap::new();
                map.insert(
                    "weight".to_string(),
                    RawTensor::new(vec![b.len(), lm.hidden_size()], w.clone()),
                );
                map.insert("bias".to_string(), RawTensor::new(vec![b.len()], b.clone()));
                Some(
                    linear_head_from_tensors(&map, lm.hidden_size(), b.len(), device)
                        .map_err(|m| Error::invalid(format!("adapter: {m}")))?,
                )
            }
            None => None,
        };
        let class_bias = match &self.class_bias {
            Some(b) if b.len() != verbalizer.n_classes() => {
                return Err(Error::invalid(format!(
                    "adapter: class_bias has {} classes, the labels {}",
                    b.len(),
                    verbalizer.n_classes()
                )));
            }
            b => b.clone(),
        };
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
                deep,
                head,
                head_kind: self.info.head_kind(),
                class_bias,
            },
            template,
            verbalizer,
            max_len: self.info.max_len,
        })
    }
}

/// A loaded backbone that adapters attach to: the LM, its tokenizer and its [`fingerprint`].
pub struct Backbone<B: Backend> {
    /// The model directory (for messages).
    pub dir: std::path::PathBuf,
    /// The masked LM, shared (cloned) by every attached task.
    pub lm: BertForMaskedLM<B>,
    /// The backbone's tokenizer.
    pub tokenizer: BertTokenizer,
    /// SHA-256 [`fingerprint`] of the backbone, as a hex string.
    pub fingerprint: String,
}

impl<B: Backend> Backbone<B> {
    /// Loads the tokenizer and weights of `model_dir` onto `device` and computes the fingerprint.
    pub fn load(model_dir: &ModelDir, device: &B::Device) -> Result<Self> {
        let tokenizer = model_dir.tokenizer()?;
        let lm = model_dir.load::<B>(device)?;
        let fingerprint = fingerprint(model_dir, &lm)?;
        Ok(Backbone {
            dir: model_dir.dir.clone(),
            lm,
            tokenizer,
            fingerprint,
        })
    }
}

/// One classification task on a (shared) backbone: clones of a module share weight storage.
#[derive(Debug, Clone)]
pub struct Task<B: Backend> {
    /// The backbone with this task's prompt vectors, deep prompts and head attached.
    pub classifier: PromptClassifier<B>,
    /// How a text is laid out around the pseudo tokens and the `[MASK]`.
    pub template: Template,
    /// Classes and their label words.
    pub verbalizer: Verbalizer,
    /// Maximum encoded length in tokens; longer texts are truncated.
    pub max_len: usize,
}

/// A classified text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The most probable class.
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
}
