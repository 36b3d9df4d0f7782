//! Training and evaluation of prompt-based classifiers: the loop, optimizers and schedules,
//! checkpoints (atomic, resumable), metrics, plots and run outputs.

pub mod checkpoint;
pub mod config;
pub mod export;
pub mod memory;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod prepare;
pub mod report;
pub mod run_dir;
pub mod run_info;
pub mod sampler;
mod saved;
pub mod step;
pub mod trainer;

pub use config::{Method, Recipe, TrainConfig};
pub use metrics::Metrics;
pub use prepare::{DataFiles, Prepared};
pub use report::{EpochRecord, Reporter, Silent, StepProgress, Summary};
pub use run_dir::{RunDir, Start};
pub use trainer::{RunSpec, train, train_prepared};
