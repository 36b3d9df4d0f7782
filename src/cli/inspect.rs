//! `ptune inspect`: what a checkpoint directory holds.

use std::path::PathBuf;

use burn::module::Module;

use ptune::error::Result;
use ptune::model::ModelDir;

use super::{BackendArgs, InferJob, run_infer_job};

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model directory (config.json, vocab.txt, model.safetensors or pytorch_model.bin),
    /// or a Hub name ORG/NAME[@REVISION] (downloaded into the Hub cache).
    /// Default: the shipped zh-mini (see `ptune --help`).
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
}

struct Inspect(ModelDir);

impl InferJob for Inspect {
    type Output = ();
    fn run<B: ptune::model::Kernels>(self, device: B::Device) -> Result<()> {
        let dir = self.0;
        let c = &dir.config;
        let tokenizer = dir.tokenizer()?;
        let model = dir.load::<B>(&device)?;
        println!("model      {}", dir.dir.display());
        println!(
            "config     {} layers, hidden {}, {} heads, intermediate {}, vocab {}, max positions {}, type vocab {}, act {:?}, eps {:e}, dropout {}/{}",
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.intermediate_size,
            c.vocab_size,
            c.max_position_embeddings,
            c.type_vocab_size,
            c.hidden_act,
            c.layer_norm_eps,
            c.hidden_dropout_prob,
            c.attention_probs_dropout_prob
        );
        println!(
            "parameters {} (decoder tied: {})",
            model.num_params(),
            model.cls.predictions.decoder.is_none()
        );
        let dtypes: Vec<String> = dir
            .dtypes()?
            .iter()
            .map(|(d, n)| format!("{} x{n}", d.name()))
            .collect();
        println!("dtypes     {}", dtypes.join(", "));
        println!(
            "vocab      {} entries, lowercase {}",
            tokenizer.vocab_size(),
            dir.lowercase
        );
        println!("files");
        let mut entries: Vec<_> = std::fs::read_dir(&dir.dir)
            .map_err(|e| ptune::Error::io(&dir.dir, e))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            // std::fs::metadata follows symlinks (a Hub snapshot's files link to blobs).
            let len = std::fs::metadata(e.path()).map(|m| m.len()).unwrap_or(0);
            let mark = if e.path() == dir.weight_file {
                "  (weights used)"
            } else {
                ""
            };
            println!("  {:>12}  {}{mark}", len, e.file_name().to_string_lossy());
        }
        Ok(())
    }
}

pub fn run(args: Args) -> Result<()> {
    let dir = super::open_model(&super::model_or_default(&args.model)?)?;
    run_infer_job(&args.backend, Inspect(dir))
}
