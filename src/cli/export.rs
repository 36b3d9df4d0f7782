//! `ptune export`: a trained P-tuning run as a small adapter file.

use std::path::PathBuf;

use ptune::classifier::Head;
use ptune::error::Result;
use ptune::model::ModelDir;
use ptune::model::tensors::StorageDType;
use ptune::train::RunDir;

use super::{BackendArgs, InferJob, run_infer_job};

#[derive(clap::Args)]
pub struct Args {
    /// Run directory written by `ptune train` (method ptune, ptune-v2, or zeroshot).
    #[arg(long)]
    run: PathBuf,
    /// The backbone the run was trained on, a directory or Hub name (default: the one its
    /// run.json records; a different backbone is refused).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Adapter file to write.
    #[arg(long)]
    out: PathBuf,
    /// Storage type of the adapter's tensors: f32, or f16 (half the size).
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    dtype: StorageDType,
    #[command(flatten)]
    backend: BackendArgs,
}

struct Export(Args, ModelDir);

impl InferJob for Export {
    type Output = ();
    fn run<B: ptune::model::Kernels>(self, device: B::Device) -> Result<()> {
        let Export(a, model) = self;
        let run = RunDir::new(&a.run);
        let adapter = ptune::train::export::export_run::<B>(&run, &model, &device)?;
        if let Some(info) = run.read_info()?
            && info.backbone != adapter.info.backbone
        {
            return Err(ptune::Error::file(
                run.run_info_path(),
                format!(
                    "the run was trained on {} (fingerprint {}…), not on {} — pass that backbone as --model",
                    info.model.display(),
                    &info.backbone[..12],
                    model.dir.display()
                ),
            ));
        }
        adapter.write(&a.out, a.dtype)?;
        let size = std::fs::metadata(&a.out).map(|m| m.len()).unwrap_or(0);
        let i = &adapter.info;
        let deep = if i.prefix_len > 0 {
            format!(
                ", deep prompts {} × {} layers × 2 × {}",
                i.prefix_len, i.num_layers, i.hidden_size
            )
        } else {
            String::new()
        };
        println!(
            "wrote {} ({size} bytes, {:?}): {} prompt vectors × {}{deep}{}, template \"{}\", labels {}, backbone {}…",
            a.out.display(),
            a.dtype,
            i.n_prompts,
            i.hidden_size,
            match i.head_kind() {
                Head::Mlm => "",
                Head::Cls => ", linear head on [CLS]",
                Head::Verbalizer => ", verbalizer head",
                Head::Linear => ", linear head",
            },
            i.template,
            i.labels,
            &i.backbone[..16]
        );
        Ok(())
    }
}

pub fn run(args: Args) -> Result<()> {
    let recorded = RunDir::new(&args.run).read_info()?;
    let model_path = match (&args.model, &recorded) {
        (Some(m), _) => m.clone(),
        (None, Some(info)) => info.model.clone(),
        (None, None) => super::model_or_default(&None)?,
    };
    let model = super::open_model(&model_path)?;
    let backend = args.backend.clone();
    run_infer_job(&backend, Export(args, model))
}

fn parse_dtype(s: &str) -> std::result::Result<StorageDType, String> {
    match s {
        "f32" => Ok(StorageDType::F32),
        "f16" => Ok(StorageDType::F16),
        _ => Err(format!("\"{s}\": expected f32 or f16")),
    }
}
