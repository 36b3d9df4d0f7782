//! Data: reading splits (.tsv, .csv, .jsonl), few-shot selection, batching and MLM augmentation.
//!
//! `dataset.rs` picks a reader by the file's extension and maps labels to classes; the readers
//! (`tsv.rs`, `csv.rs`, `jsonl.rs`) share `record.rs` (the row type, field names, one-line
//! messages); `props.rs` holds the readers' property tests.

pub mod batch;
mod csv;
pub mod dataset;
pub mod fewshot;
mod jsonl;
#[cfg(test)]
mod props;
mod record;
mod tsv;

pub use batch::{Batch, MlmAugment};
pub use dataset::{
    Example, Fields, Format, Labels, Record, parse_records, read_records, read_split, read_tsv,
    to_examples,
};
pub use fewshot::FewShot;
