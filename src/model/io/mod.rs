//! Checkpoint files: the host tensor type ([`host`]), reading and writing safetensors and
//! reading `pytorch_model.bin` ([`tensors`], [`pickle`]), handing tensors to the model builders
//! by key ([`weights`]), writing a Hugging Face model directory ([`hf_dir`]), a checkpoint
//! directory ([`model_dir`]), Hub names resolved to one ([`hub`]), and weighted averages of
//! checkpoints ([`merge`]).

pub mod hf_dir;
pub mod host;
pub mod hub;
pub mod merge;
pub mod model_dir;
pub mod pickle;
pub mod tensors;
pub mod weights;
