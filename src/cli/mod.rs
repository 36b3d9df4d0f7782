//! Command-line interface: argument parsing, backend choice, and one small file per subcommand.

mod backend;
mod bench;
mod compare;
mod export;
mod fill_mask;
mod inspect;
mod predict;
mod pretrain;
mod progress;
mod selftest;
mod serve;
mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use backend::{BackendArgs, InferJob, Job, run_infer_job, run_job};

#[derive(Parser)]
#[command(
    name = "ptune",
    version,
    about = "Few-shot text classification with BERT masked LMs by P-tuning"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a checkpoint's config, parameter count, dtypes and files.
    Inspect(inspect::Args),
    /// Predict the tokens at each [MASK] of a text.
    FillMask(fill_mask::Args),
    /// Train one method (ptune, finetune, zeroshot) on a few-shot split.
    Train(train::Args),
    /// Zero-shot, fine-tuning, P-tuning and deep prompts on the same split: one table and a plot.
    Compare(compare::Args),
    /// Masked-LM pretraining (from scratch or continued) on plain-text corpora.
    Pretrain(pretrain::Args),
    /// Bake a trained P-tuning run into a small adapter file.
    Export(export::Args),
    /// Classify texts with an adapter.
    Predict(predict::Args),
    /// Serve adapters over HTTP on one shared backbone.
    Serve(serve::Args),
    /// Measure evaluation and training throughput.
    Bench(bench::Args),
    /// Check this install on a device (CPU or GPU) against committed reference values.
    Selftest(selftest::Args),
}

/// Parses the arguments, runs the command, and returns the process exit code:
/// 0 on success, 2 on any error (printed as one line on stderr).
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::FillMask(a) => fill_mask::run(a),
        Command::Train(a) => train::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Pretrain(a) => pretrain::run(a),
        Command::Export(a) => export::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Selftest(a) => selftest::run(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

/// A path shipped in `assets/`: relative to the working directory when it exists there
/// (running from a checkout), else next to the sources this binary was built from.
pub fn asset_path(rel: &str) -> PathBuf {
    let local = PathBuf::from(rel);
    if local.exists() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub const DEFAULT_MODEL: &str = "assets/models/zh-mini";
pub const DEFAULT_DATA: &str = "assets/data/reviews";

pub fn default_model() -> PathBuf {
    asset_path(DEFAULT_MODEL)
}

/// Opens the model a `--model`/`--init` value names: a local directory, or a Hugging Face Hub
/// name `ORG/NAME[@REVISION]` resolved through the Hub cache (settings from the environment:
/// HF_HUB_CACHE, HF_HOME, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE). The one place Hub names are
/// resolved.
pub fn open_model(spec: &std::path::Path) -> ptune::error::Result<ptune::model::ModelDir> {
    let dir = ptune::model::hub::resolve(spec, ptune::model::hub::HubSettings::from_env)?;
    ptune::model::ModelDir::open(&dir)
}
