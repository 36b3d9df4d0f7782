//! `ptune bench`: throughput of evaluation and of training steps (see bench/compare.sh for the
//! side-by-side run with PyTorch).

use std::path::PathBuf;

use ptune::classifier::PromptClassifier;
use ptune::error::{Error, Result};
use ptune::model::ModelDir;
use ptune::train::{DataFiles, Method, Recipe, RunDir, RunSpec, Silent};

use super::{BackendArgs, Job, run_job};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory, or a Hugging Face Hub name ORG/NAME[@REVISION] (downloaded into the Hub cache).
    /// Default: the shipped zh-mini (see `ptune --help`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Data directory (train.tsv, valid.tsv). Default: the shipped reviews (see `ptune --help`).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// Training steps timed per method.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Valid-set rows used for forward/eval (default: all).
    #[arg(long)]
    rows: Option<usize>,
    /// What to measure.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "forward,eval,ptune,finetune"
    )]
    what: Vec<What>,
    #[command(flatten)]
    backend: BackendArgs,
}

/// A `bench --what` measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum What {
    Forward,
    Eval,
    Ptune,
    Finetune,
}

impl What {
    fn name(self) -> &'static str {
        match self {
            What::Forward => "forward",
            What::Eval => "eval",
            What::Ptune => "ptune",
            What::Finetune => "finetune",
        }
    }
}

struct Bench(Args, ModelDir, PathBuf);

impl Job for Bench {
    type Output = ();
    fn run<B: ptune::model::TrainBackend>(self, device: B::Device) -> Result<()> {
        let Bench(a, model_dir, data) = self;
        let recipe = Recipe::load("seed")?;
        for &what in &a.what {
            match what {
                What::Forward | What::Eval => {
                    let mut config = recipe.resolve(Method::Zeroshot)?;
                    config.max_len = a.max_len;
                    let tokenizer = model_dir.tokenizer()?;
                    let ptune::prompt::PromptSpec {
                        template,
                        verbalizer,
                    } = ptune::prompt::PromptSpec::parse(
                        &config.template,
                        &config.labels,
                        &tokenizer,
                    )?;
                    let mut rows =
                        ptune::data::read_tsv(&data.join("valid.tsv"), &verbalizer.classes, false)?;
                    rows.truncate(a.rows.unwrap_or(usize::MAX));
                    let encoded = rows
                        .iter()
                        .map(|r| template.encode(&tokenizer, &r.text_a, None, a.max_len))
                        .collect::<Result<Vec<_>>>()?;
                    let model =
                        PromptClassifier::new(model_dir.load::<B::InnerBackend>(&device)?, None);
                    let order = if what == What::Forward {
                        ptune::bench::BatchOrder::FileOrder
                    } else {
                        ptune::bench::BatchOrder::LengthSorted
                    };
                    let t = ptune::bench::scoring(
                        order,
                        &model,
                        &encoded,
                        &verbalizer.word_ids,
                        a.batch_size,
                        tokenizer.pad_id,
                        &device,
                    );
                    let mut line = serde_json::to_value(&t).expect("json");
                    line["precision"] = a.backend.precision.to_string().into();
                    line["len_multiple"] = ptune::model::kernels::seq_len_multiple::<B>().into();
                    println!("{line}");
                }
                What::Ptune | What::Finetune => {
                    let method = if what == What::Ptune {
                        Method::Ptune
                    } else {
                        Method::Finetune
                    };
                    let mut config = recipe.resolve(method)?;
                    config.epochs = 1;
                    config.max_steps_per_epoch = Some(a.steps);
                    config.batch_size = a.batch_size;
                    config.max_len = a.max_len;
                    // the few-shot set of the recipe; evaluation on 8 rows only (not timed)
                    let tmp =
                        std::env::temp_dir().join(format!("ptune-bench-{}", std::process::id()));
                    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
                    let small: String = std::fs::read_to_string(data.join("valid.tsv"))
                        .map_err(|e| Error::io(data.join("valid.tsv"), e))?
                        .lines()
                        .take(8)
                        .map(|l| format!("{l}\n"))
                        .collect();
                    std::fs::write(tmp.join("small.tsv"), small).map_err(|e| Error::io(&tmp, e))?;
                    let spec = RunSpec {
                        config,
                        model: model_dir.clone(),
                        data: DataFiles {
                            train: data.join("train.tsv"),
                            valid: tmp.join("small.tsv"),
                            test: tmp.join("small.tsv"),
                            fields: Default::default(),
                        },
                        run: RunDir::new(tmp.join("run")),
                        resume: false,
                        micro_batches: a.backend.micro_batches(),
                        test_every_epoch: false,
                    };
                    let summary = ptune::train::train::<B>(&spec, &mut Silent, &device);
                    let _ = std::fs::remove_dir_all(&tmp);
                    let s = summary?;
                    let line = serde_json::json!({
                        "what": format!("{} training steps", what.name()),
                        "steps": s.steps,
                        "seconds": s.train_seconds,
                        "examples_per_s": s.examples_per_s,
                        "precision": a.backend.precision.to_string(),
                        "len_multiple": ptune::model::kernels::seq_len_multiple::<B>(),
                    });
                    println!("{line}");
                }
            }
        }
        Ok(())
    }
}

pub fn run(args: Args) -> Result<()> {
    let model = super::open_model(&super::model_or_default(&args.model)?)?;
    let data = super::data_or_default(&args.data)?;
    let backend = args.backend.clone();
    run_job(&backend, Bench(args, model, data))
}
