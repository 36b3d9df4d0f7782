//! ptune: few-shot text classification with BERT masked LMs by P-tuning.
//!
//! Layers (dependencies point down): `cli` (the binary) → `train` / `serve` → `classifier`
//! → `model`, `prompt`, `data` → `tokenizer`, `error`. See ARCHITECTURE.md.

#![warn(missing_docs)]

pub mod adapter;
pub mod bench;
pub mod classifier;
pub mod cpu_env;
pub mod data;
pub mod error;
pub mod model;
pub mod pretrain;
pub mod prompt;
pub mod selftest;
pub mod serve;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};

/// The default CPU backend (burn's pure-Rust Flex backend).
pub type Cpu = burn::backend::Flex;
/// The default CPU backend with autodiff, for training.
pub type CpuTrain = burn::backend::Autodiff<Cpu>;
