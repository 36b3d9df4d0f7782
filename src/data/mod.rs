//! Data: reading labelled TSV files, few-shot selection, batching and MLM augmentation.

pub mod batch;
pub mod dataset;
pub mod fewshot;

pub use batch::{Batch, MlmAugment};
pub use dataset::{Example, read_tsv};
pub use fewshot::FewShot;
