//! `ModelDir`: the files of a Hugging Face BERT checkpoint directory, and loading the model
//! from them.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use super::host::SourceDType;
use super::tensors::{self, WeightFormat};
use super::weights::{Weights, canonical_key};
use crate::error::{Error, Result};
use crate::model::bert::BertForMaskedLM;
use crate::model::config::BertConfig;
use crate::tokenizer::BertTokenizer;

/// The files of a Hugging Face BERT checkpoint directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its `config.json`, parsed and validated.
    pub config: BertConfig,
    /// The weights: `model.safetensors`, `pytorch_model.bin` or `model.safetensors.index.json`.
    pub weight_file: PathBuf,
    /// Which format `weight_file` is in.
    pub weight_format: WeightFormat,
    /// The WordPiece vocabulary, `vocab.txt`.
    pub vocab_file: PathBuf,
    /// `do_lower_case` of `tokenizer_config.json` (true when the file or the field is absent).
    pub lowercase: bool,
}

impl ModelDir {
    /// Checks that the directory has `config.json`, a weight file and `vocab.txt`, and reads
    /// the config.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::file(dir, "model directory does not exist"));
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::file(
                &config_path,
                "missing (a Hugging Face model directory needs config.json)",
            ));
        }
        let config = BertConfig::from_file(&config_path)?;
        let (weight_file, weight_format) = tensors::find_weight_file(dir)?;
        let vocab_file = dir.join("vocab.txt");
        if !vocab_file.is_file() {
            return Err(Error::file(
                &vocab_file,
                "missing (BERT checkpoints ship a WordPiece vocab.txt)",
            ));
        }
        Ok(ModelDir {
            dir: dir.to_path_buf(),
            config,
            weight_file,
            weight_format,
            vocab_file,
            lowercase: read_lowercase(dir)?,
        })
    }

    /// The tokenizer of `vocab.txt`; returns [`Error::File`] when its line count differs from
    /// the config's `vocab_size`.
    pub fn tokenizer(&self) -> Result<BertTokenizer> {
        let tok = BertTokenizer::from_vocab_file(&self.vocab_file, self.lowercase)?;
        if tok.vocab_size() != self.config.vocab_size {
            return Err(Error::file(
                &self.vocab_file,
                format!(
                    "has {} entries but config.json says vocab_size {}",
                    tok.vocab_size(),
                    self.config.vocab_size
                ),
            ));
        }
        Ok(tok)
    }

    /// Reads the weights into a model on `device`, with dropout as in config.json.
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<BertForMaskedLM<B>> {
        self.load_with_config(&self.config, device)
    }

    /// Reads the weights with a modified config (e.g. dropout off); shapes must agree.
    pub fn load_with_config<B: Backend>(
        &self,
        config: &BertConfig,
        device: &B::Device,
    ) -> Result<BertForMaskedLM<B>> {
        let map = tensors::read_weight_file(&self.weight_file, &self.weight_format)?;
        let word_embeddings = map
            .get("bert.embeddings.word_embeddings.weight")
            .or(map.get("embeddings.word_embeddings.weight"));
        if let Some(w) = word_embeddings.filter(|w| w.shape.first() != Some(&config.vocab_size)) {
            return Err(Error::file(
                &self.weight_file,
                format!(
                    "word embeddings have {} rows but config.json says vocab_size {}",
                    w.shape.first().copied().unwrap_or(0),
                    config.vocab_size
                ),
            ));
        }
        // Checked before any layer is allocated: a config that asks for more layers than the
        // weights hold would otherwise build (and zero-fill) them all before failing.
        let layers_in_weights = map
            .keys()
            .filter_map(|k| {
                let k = canonical_key(k);
                let rest = k.strip_prefix("bert.encoder.layer.")?;
                rest.split('.').next()?.parse::<usize>().ok()
            })
            .max()
            .map_or(0, |m| m + 1);
        if layers_in_weights != config.num_hidden_layers {
            return Err(Error::file(
                &self.weight_file,
                format!(
                    "holds {layers_in_weights} encoder layers but config.json says num_hidden_layers {}",
                    config.num_hidden_layers
                ),
            ));
        }
        BertForMaskedLM::from_weights(config, Weights::new(&self.weight_file, map)?, device)
    }

    /// Source dtypes found in the weight file (for `inspect`).
    pub fn dtypes(&self) -> Result<Vec<(SourceDType, usize)>> {
        let map = tensors::read_weight_file(&self.weight_file, &self.weight_format)?;
        let mut counts: Vec<(SourceDType, usize)> = Vec::new();
        for t in map.values() {
            match counts.iter_mut().find(|(d, _)| *d == t.dtype) {
                Some((_, n)) => *n += 1,
                None => counts.push((t.dtype, 1)),
            }
        }
        Ok(counts)
    }
}

/// `do_lower_case` from `tokenizer_config.json` if present (BERT-Chinese checkpoints: true).
fn read_lowercase(dir: &Path) -> Result<bool> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(true);
    }
    let bytes = crate::error::read_file(&path)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::file(&path, format!("malformed JSON: {e}")))?;
    Ok(v.get("do_lower_case")
        .and_then(|x| x.as_bool())
        .unwrap_or(true))
}
