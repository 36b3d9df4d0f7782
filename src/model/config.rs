//! `config.json` of a Hugging Face BERT checkpoint.

use std::path::Path;

use serde::Deserialize;

pub use super::layers::Activation;
use crate::error::{Error, Result, read_file};

/// The fields of `BertConfig` that the architecture depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// Rows of the word-embedding table (required, > 0).
    pub vocab_size: usize,
    /// Hidden size `H` (required, a multiple of `num_attention_heads`).
    pub hidden_size: usize,
    /// Number of transformer layers (required, > 0).
    pub num_hidden_layers: usize,
    /// Attention heads per layer (required, > 0).
    pub num_attention_heads: usize,
    /// Width of the feed-forward's inner layer (required, > 0).
    pub intermediate_size: usize,
    /// Number of position embeddings, the longest input (default 512).
    pub max_position_embeddings: usize,
    /// Number of token types (segments), default 2.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (default 1e-12).
    pub layer_norm_eps: f64,
    /// Feed-forward and MLM-head activation (`hidden_act`, default `gelu`).
    pub hidden_act: Activation,
    /// Dropout on embeddings and sub-layer outputs, in [0, 1) (default 0.1).
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities, in [0, 1) (default 0.1).
    pub attention_probs_dropout_prob: f64,
}

/// The JSON as written by transformers; optional fields take transformers' defaults.
#[derive(Deserialize)]
struct RawConfig {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_dropout")]
    hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    attention_probs_dropout_prob: f64,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default)]
    model_type: Option<String>,
}

fn default_max_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}

impl BertConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = read_file(path)?;
        Self::from_json(&bytes).map_err(|msg| Error::file(path, msg))
    }

    /// Parses the JSON text; the error is a message without the file name.
    pub fn from_json(bytes: &[u8]) -> std::result::Result<Self, String> {
        Self::parse_json(bytes).map_err(|e| crate::error::one_line(&e).into_owned())
    }

    fn parse_json(bytes: &[u8]) -> std::result::Result<Self, String> {
        let raw: RawConfig =
            serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON: {e}"))?;
        if let Some(t) = &raw.model_type {
            const KNOWN: [&str; 3] = ["bert", "roberta", "megatron-bert"];
            if !KNOWN.contains(&t.as_str()) {
                return Err(format!(
                    "model_type \"{t}\" is not a BERT-family model (expected one of {KNOWN:?})"
                ));
            }
        }
        if let Some(p) = raw
            .position_embedding_type
            .as_ref()
            .filter(|p| *p != "absolute")
        {
            return Err(format!(
                "position_embedding_type \"{p}\" is not supported (only \"absolute\")"
            ));
        }
        let need = |v: Option<usize>, name: &str| -> std::result::Result<usize, String> {
            match v {
                Some(0) => Err(format!("field \"{name}\" must be positive")),
                Some(v) => Ok(v),
                None => Err(format!("missing field \"{name}\"")),
            }
        };
        let hidden_act = match raw.hidden_act.as_str() {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => {
                return Err(format!(
                    "field \"hidden_act\": unsupported activation \"{other}\""
                ));
            }
        };
        let config = BertConfig {
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            hidden_size: need(raw.hidden_size, "hidden_size")?,
            num_hidden_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads: need(raw.num_attention_heads, "num_attention_heads")?,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            layer_norm_eps: raw.layer_norm_eps,
            hidden_act,
            hidden_dropout_prob: raw.hidden_dropout_prob,
            attention_probs_dropout_prob: raw.attention_probs_dropout_prob,
        };
        if !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
        {
            return Err(format!(
                "field \"hidden_size\" ({}) is not a multiple of \"num_attention_heads\" ({})",
                config.hidden_size, config.num_attention_heads
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", config.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                config.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("field \"{name}\" must be in [0, 1), got {p}"));
            }
        }
        if config.max_position_embeddings == 0 || config.type_vocab_size == 0 {
            return Err(
                "fields \"max_position_embeddings\" and \"type_vocab_size\" must be positive"
                    .into(),
            );
        }
        Ok(config)
    }

    /// `config.json` as transformers writes it for `BertForMaskedLM`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["BertForMaskedLM"],
            "model_type": "bert",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": match self.hidden_act {
                Activation::Gelu => "gelu",
                Activation::GeluTanh => "gelu_new",
                Activation::Relu => "relu",
            },
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "initializer_range": 0.02,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
            "tie_word_embeddings": true,
        })
    }

    /// Width of one attention head, `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The same architecture with dropout switched off (parity tests, deterministic checks).
    pub fn without_dropout(mut self) -> Self {
        self.hidden_dropout_prob = 0.0;
        self.attention_probs_dropout_prob = 0.0;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16}"#;

    #[test]
    fn defaults_follow_transformers() {
        let c = BertConfig::from_json(MINI.as_bytes()).unwrap();
        assert_eq!(c.max_position_embeddings, 512);
        assert_eq!(c.type_vocab_size, 2);
        assert_eq!(c.layer_norm_eps, 1e-12);
        assert_eq!(c.hidden_act, Activation::Gelu);
        assert_eq!(c.head_dim(), 4);
    }

    #[test]
    fn json_round_trip() {
        let c = BertConfig::from_json(MINI.as_bytes()).unwrap();
        let back = BertConfig::from_json(c.to_json().to_string().as_bytes()).unwrap();
        assert_eq!(c, back);
    }

    #[test]
    fn missing_field_is_named() {
        let err = BertConfig::from_json(br#"{"vocab_size": 10, "hidden_size": 8}"#).unwrap_err();
        assert!(err.contains("num_hidden_layers"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected() {
        let bad_heads = MINI.replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 3");
        assert!(
            BertConfig::from_json(bad_heads.as_bytes())
                .unwrap_err()
                .contains("multiple")
        );
        let bad_act = MINI.replace("}", ", \"hidden_act\": \"swish\"}");
        assert!(
            BertConfig::from_json(bad_act.as_bytes())
                .unwrap_err()
                .contains("swish")
        );
        assert!(
            BertConfig::from_json(b"{not json")
                .unwrap_err()
                .contains("malformed JSON")
        );
        let gpt = MINI.replace("}", ", \"model_type\": \"gpt2\"}");
        assert!(
            BertConfig::from_json(gpt.as_bytes())
                .unwrap_err()
                .contains("gpt2")
        );
    }
}
