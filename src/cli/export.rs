//! `ptune export`: a trained P-tuning run as a small adapter file.

use std::path::PathBuf;

use ptune::error::Result;
use ptune::model::ModelDir;

use super::{BackendArgs, Job, run_job};

#[derive(clap::Args)]
pub struct Args {
    /// Run directory written by `ptune train` (method ptune, or zeroshot).
    #[arg(long)]
    run: PathBuf,
    /// The backbone the run was trained on.
    #[arg(long, default_value_os_t = super::default_model())]
    model: PathBuf,
    /// Adapter file to write.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    backend: BackendArgs,
}

struct Export(Args, ModelDir);

impl Job for Export {
    type Output = ();
    fn run<B: ptune::model::TrainBackend>(self, device: B::Device) -> Result<()> {
        let Export(a, model) = self;
        let adapter = ptune::train::export::export_run::<B::InnerBackend>(&a.run, &model, &device)?;
        adapter.write(&a.out)?;
        let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
        println!(
            "wrote {} ({size} bytes): {} prompt vectors × {}, template \"{}\", labels {}, backbone {}…",
            a.out.display(),
            adapter.info.n_prompts,
            adapter.info.hidden_size,
            adapter.info.template,
            adapter.info.labels,
            &adapter.info.backbone[..16]
        );
        Ok(())
    }
}

pub fn run(args: Args) -> Result<()> {
    let model = ModelDir::open(&args.model)?;
    let backend = args.backend.clone();
    run_job(&backend, Export(args, model))
}
