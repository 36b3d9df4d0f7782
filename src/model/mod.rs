//! The model layer: BERT masked LM, prompt encoders, and reading Hugging Face checkpoints.
//!
//! By concern: [`io`] (checkpoint files: host tensors, safetensors, the pickle reader,
//! [`Weights`](io::weights::Weights), writing model directories, [`ModelDir`], Hub names),
//! [`kernels`] (the fused kernels, by operation), [`layers`] (LayerNorm, the activation,
//! seeded dropout) and the models: [`bert`], [`prompt_encoder`], [`deep_prompt`], with
//! [`fill_mask`] on top. The checkpoint modules are re-exported here under their own names
//! (`model::tensors`, `model::weights`, ...).

pub mod bert;
pub mod config;
pub mod deep_prompt;
pub mod fill_mask;
pub mod io;
pub mod kernels;
pub mod layers;
pub mod prefix_init;
pub mod prompt_encoder;

pub use bert::{AttentionMask, BertForMaskedLM};
pub use config::BertConfig;
pub use host::SourceDType;
pub use io::model_dir::ModelDir;
pub use io::{hf_dir, host, hub, pickle, tensors, weights};
pub use kernels::{Kernels, TrainBackend};
pub use tensors::WeightFormat;
