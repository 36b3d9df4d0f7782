//! `ptune merge`: a weighted average of checkpoints of one architecture, written as a model
//! directory (e.g. a continued-pretraining run interpolated back towards its start).

use std::path::PathBuf;

use ptune::error::{Error, Result};
use ptune::model::hf_dir::{SaveOptions, save_model_dir};

use super::open_model;
use super::pretrain::DTypeArg;

#[derive(clap::Args)]
pub struct Args {
    /// The models to average: two or more directories or Hub names ORG/NAME[@REVISION] of one
    /// architecture and vocabulary.
    #[arg(long, num_args = 2.., required = true)]
    model: Vec<PathBuf>,
    /// One weight per model, in the same order, summing to 1 (e.g. 0.7,0.3; a negative weight
    /// extrapolates). Default: equal weights.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    weights: Vec<f64>,
    /// Model directory to write (replaced atomically if it exists).
    #[arg(long)]
    out: PathBuf,
    /// Storage type of the written model.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DTypeArg,
    /// Shard the written model into files of at most this many MiB (0: one file).
    #[arg(long, default_value_t = 0)]
    shard_mib: usize,
}

pub fn run(a: Args) -> Result<()> {
    let weights = if a.weights.is_empty() {
        vec![1.0 / a.model.len() as f64; a.model.len()]
    } else if a.weights.len() != a.model.len() {
        return Err(Error::invalid(format!(
            "--weights has {} values for {} models",
            a.weights.len(),
            a.model.len()
        )));
    } else {
        a.weights.clone()
    };
    let parts = a
        .model
        .iter()
        .zip(&weights)
        .map(|(m, &w)| Ok((open_model(m)?, w)))
        .collect::<Result<Vec<_>>>()?;
    let device = Default::default();
    let lm = ptune::model::io::merge::merge_models::<ptune::Cpu>(&parts, &device)?;
    let first = &parts[0].0;
    let opts = SaveOptions::with_shard_mib(a.dtype.storage(), a.shard_mib);
    save_model_dir(
        &lm,
        &first.config,
        &first.vocab_file,
        first.lowercase,
        &a.out,
        &opts,
    )?;
    let recipe: Vec<String> = parts
        .iter()
        .map(|(d, w)| format!("{w} × {}", d.dir.display()))
        .collect();
    println!("{}: {}", a.out.display(), recipe.join(" + "));
    Ok(())
}
