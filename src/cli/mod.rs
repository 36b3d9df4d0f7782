//! Command-line interface: argument parsing, backend choice, and one small file per subcommand.

mod backend;
mod bench;
mod compare;
mod export;
mod fill_mask;
mod inspect;
mod merge;
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
    about = "Few-shot text classification with BERT masked LMs by P-tuning",
    after_help = DEFAULTS_HELP
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
    /// Weighted average of checkpoints of one architecture, written as a model directory.
    Merge(merge::Args),
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
        Command::Merge(a) => merge::run(a),
        Command::Export(a) => export::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Selftest(a) => selftest::run(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", as_flags(&e.to_string()));
            2
        }
    }
}

/// The library's settings that its messages name (in backticks, see [`ptune::error`]) and
/// the flags that set them here.
const SETTING_FLAGS: &[(&str, &str)] = &[
    ("addr", "--addr"),
    ("frac", "--frac"),
    ("head_lr", "--head-lr"),
    ("label_field", "--label-field"),
    ("labels", "--labels"),
    ("lr", "--lr"),
    ("max_connections", "--max-connections"),
    ("model", "--model"),
    ("resume", "--resume"),
    ("shots", "--shots"),
    ("text_b_field", "--text-b-field"),
    ("text_field", "--text-field"),
    ("warmup", "--warmup"),
];

/// A library message in command-line words: each `` `setting` `` it names becomes the flag.
pub fn as_flags(msg: &str) -> String {
    let mut out = msg.to_string();
    for (setting, flag) in SETTING_FLAGS {
        out = out.replace(&format!("`{setting}`"), flag);
    }
    out
}

/// Where a default model or data set is looked for, in this order (the first that exists
/// wins): `$PTUNE_HOME/<rel>`, `./<rel>` (the working directory), and `<rel>` in the source
/// tree this binary was built from (last, so that `cargo run` works anywhere in a checkout).
/// None existing is an error naming every place tried and `flag`.
pub fn asset_path(rel: &str, flag: &str) -> ptune::error::Result<PathBuf> {
    let mut tried = Vec::new();
    if let Some(home) = std::env::var_os("PTUNE_HOME") {
        tried.push(PathBuf::from(home).join(rel));
    }
    tried.push(PathBuf::from(rel));
    tried.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel));
    if let Some(found) = tried.iter().find(|p| p.exists()) {
        return Ok(found.clone());
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(ptune::Error::invalid(format!(
        "no {rel} found (tried {}): pass {flag} or set PTUNE_HOME to a directory holding {rel}",
        list.join(", ")
    )))
}

pub const DEFAULT_MODEL: &str = "assets/models/zh-mini";
pub const DEFAULT_DATA: &str = "assets/data/reviews";

/// `--model`'s value, or the default model ([`asset_path`]).
pub fn model_or_default(flag: &Option<PathBuf>) -> ptune::error::Result<PathBuf> {
    match flag {
        Some(p) => Ok(p.clone()),
        None => asset_path(DEFAULT_MODEL, "--model"),
    }
}

/// `--data`'s value, or the default data ([`asset_path`]).
pub fn data_or_default(flag: &Option<PathBuf>) -> ptune::error::Result<PathBuf> {
    match flag {
        Some(p) => Ok(p.clone()),
        None => asset_path(DEFAULT_DATA, "--data"),
    }
}

/// How defaults are found, for `--help`.
const DEFAULTS_HELP: &str = "Default model and data (when --model / --data are not given): \
assets/models/zh-mini and assets/data/reviews, looked for in $PTUNE_HOME, then in the working \
directory, then in the source tree the binary was built from.";

/// Opens the model a `--model`/`--init` value names: a local directory, or a Hugging Face Hub
/// name `ORG/NAME[@REVISION]` resolved through the Hub cache (settings from the environment:
/// HF_HUB_CACHE, HF_HOME, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE). The one place Hub names are
/// resolved.
pub fn open_model(spec: &std::path::Path) -> ptune::error::Result<ptune::model::ModelDir> {
    let dir = ptune::model::hub::resolve(spec, ptune::model::hub::HubSettings::from_env)?;
    ptune::model::ModelDir::open(&dir)
}

#[cfg(test)]
mod tests {
    use super::as_flags;

    #[test]
    fn library_setting_names_become_flags() {
        assert_eq!(
            as_flags("d.csv:1: no column \"label\" in the header; set `label_field`"),
            "d.csv:1: no column \"label\" in the header; set --label-field"
        );
        assert_eq!(
            as_flags("lower `lr` or raise `warmup`"),
            "lower --lr or raise --warmup"
        );
        // only the named settings: other backticked text is left alone
        assert_eq!(as_flags("`[MASK]` missing"), "`[MASK]` missing");
    }
}
