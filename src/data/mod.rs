//! Data: reading splits (.tsv, .csv, .jsonl), few-shot selection, batching and MLM augmentation.

pub mod batch;
pub mod dataset;
pub mod fewshot;

pub use batch::{Batch, MlmAugment};
pub use dataset::{
    Example, Fields, Format, Labels, Record, parse_records, read_records, read_split, read_tsv,
    to_examples,
};
pub use fewshot::FewShot;
