//! `ptune fill-mask`: top-k tokens at each [MASK] of a text.

use std::path::PathBuf;

use ptune::error::Result;
use ptune::model::fill_mask::fill_mask;

use super::{BackendArgs, InferJob, run_infer_job};

#[derive(clap::Args)]
pub struct Args {
    /// Text with one or more [MASK] tokens.
    text: String,
    /// Model directory, or a Hugging Face Hub name ORG/NAME[@REVISION] (downloaded into the Hub cache).
    /// Default: the shipped zh-mini (see `ptune --help`).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backend: BackendArgs,
}

struct FillMask(Args);

impl InferJob for FillMask {
    type Output = ();
    fn run<B: ptune::model::Kernels>(self, device: B::Device) -> Result<()> {
        let a = self.0;
        let dir = super::open_model(&super::model_or_default(&a.model)?)?;
        let tokenizer = dir.tokenizer()?;
        let model = dir.load::<B>(&device)?;
        let preds = fill_mask(&model, &tokenizer, &a.text, a.top_k, &device)?;
        if a.json {
            println!("{}", serde_json::to_string(&preds).expect("serialisable"));
            return Ok(());
        }
        for p in preds {
            println!("[MASK] at position {}:", p.position);
            for (rank, (tok, id, prob)) in p.candidates.iter().enumerate() {
                println!("  {:>2}  {:<12} {:>6}  {:.4}", rank + 1, tok, id, prob);
            }
        }
        Ok(())
    }
}

pub fn run(args: Args) -> Result<()> {
    run_infer_job(&args.backend.clone(), FillMask(args))
}
