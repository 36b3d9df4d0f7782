//! `ptune train`: one method on a few-shot split, writing `runs/<name>/`.

use std::path::PathBuf;

use ptune::classifier::{Calibration, Head};
use ptune::data::{FewShot, Fields, MlmAugment};
use ptune::error::{Error, Result};
use ptune::model::ModelDir;
use ptune::model::deep_prompt::Reparam;
use ptune::model::prefix_init::PrefixInit;
use ptune::model::prompt_encoder::PromptEncoderKind;
use ptune::train::config::Schedule;
use ptune::train::run_dir::HoldsRun;
use ptune::train::{DataFiles, Method, Recipe, Reporter, RunDir, RunSpec, Start, TrainConfig};

use super::{BackendArgs, Job, run_job};

/// Column (CSV) or key (JSONL) names of the text and label fields; shared with `predict`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FieldArgs {
    /// Text field of .csv/.jsonl data (default "sentence", else "text"; for sentence-pair
    /// templates "sentence1", else "text_a").
    #[arg(long)]
    pub text_field: Option<String>,
    /// Second text of a sentence pair (default "sentence2", else "text_b").
    #[arg(long)]
    pub text_b_field: Option<String>,
    /// Label field of .csv/.jsonl data (default "label"); its values are the class names of
    /// --labels, any strings.
    #[arg(long)]
    pub label_field: Option<String>,
}

impl FieldArgs {
    pub fn fields(&self) -> Result<Fields> {
        let check = |flag: &str, v: &Option<String>| -> Result<Option<String>> {
            match v {
                Some(s) if s.trim().is_empty() => Err(Error::invalid(format!("--{flag} is empty"))),
                Some(s) => Ok(Some(s.trim().to_string())),
                None => Ok(None),
            }
        };
        Ok(Fields {
            text: check("text-field", &self.text_field)?,
            text_b: check("text-b-field", &self.text_b_field)?,
            label: check("label-field", &self.label_field)?,
        })
    }
}

/// `--method` values: the command line's mirror of [`Method`] (clap stays in `cli/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    /// Frozen LM; only the prompt encoder trains (add `tune_lm` to train both).
    Ptune,
    /// Every LM weight trains; pseudo tokens are plain `[unusedK]` tokens.
    Finetune,
    /// No training: the template and label words on the pretrained LM.
    Zeroshot,
    /// Deep prompts (P-tuning v2): frozen LM; trainable keys and values in every layer (and
    /// the prompt encoder when the template has `[P]` tokens, and a linear head if asked).
    #[value(name = "ptune-v2")]
    PtuneV2,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Method {
        match m {
            MethodArg::Ptune => Method::Ptune,
            MethodArg::Finetune => Method::Finetune,
            MethodArg::Zeroshot => Method::Zeroshot,
            MethodArg::PtuneV2 => Method::PtuneV2,
        }
    }
}

/// A recipe by name or path, with the flag that named it in the error.
pub fn load_recipe(name_or_path: &str) -> Result<Recipe> {
    Recipe::load(name_or_path).map_err(|e| match e {
        Error::Invalid(m) => Error::Invalid(format!("--recipe: {m}")),
        e => e,
    })
}

/// Settings shared by `train` and `compare`: where things are and what to override.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Model directory, or a Hugging Face Hub name ORG/NAME[@REVISION] (downloaded into the Hub cache).
    /// Default: the shipped zh-mini (see `ptune --help`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Directory with train, valid and test splits, each .tsv (text<TAB>label, no header),
    /// .csv (header row) or .jsonl (one object per line). Default: the shipped reviews (see
    /// `ptune --help`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub fields: FieldArgs,
    /// Built-in recipe (`seed`: the published one; `quick`) or a TOML file.
    #[arg(long)]
    pub recipe: Option<String>,
    /// Template, e.g. "[P]*4 [MASK] [P]*4 {text}" or "[MASK]满意。{text}".
    #[arg(long)]
    pub template: Option<String>,
    /// Class names and label words, e.g. "0=不,1=很".
    #[arg(long)]
    pub labels: Option<String>,
    #[arg(long)]
    pub prompt_encoder: Option<PromptEncoderKind>,
    /// ptune-v2: deep-prompt virtual tokens per layer.
    #[arg(long)]
    pub prefix_len: Option<usize>,
    /// ptune-v2: reparameterise the prefixes by an MLP while training (none or mlp).
    #[arg(long)]
    pub reparam: Option<Reparam>,
    /// ptune-v2 with --reparam mlp: the MLP's hidden width.
    #[arg(long)]
    pub reparam_hidden: Option<usize>,
    /// ptune-v2: how the prefixes start: `random` (N(0,1), as PEFT) or `text:SOME TEXT` (the
    /// frozen LM's own keys and values of that text's tokens, repeated to --prefix-len).
    #[arg(long)]
    pub prefix_init: Option<PrefixInit>,
    /// How the class is read: mlm (the label words at [MASK]), linear (a trainable head on the
    /// [MASK] hidden state), cls (a trainable head on the [CLS] hidden state) or verbalizer (a
    /// trainable head on the MLM head's transform of the [MASK] state, started as the label
    /// words).
    #[arg(long)]
    pub head: Option<Head>,
    /// Zero-shot: divide every prediction by the LM's prior over the label words under the
    /// template, estimated from `content-free` texts ("N/A", "", "无"; Zhao et al. 2021) or
    /// from the few-shot training set's texts, their labels unread (`fewshot`; batch
    /// calibration, Zhou et al. 2023). With `compare`, it applies to the zeroshot row.
    #[arg(long)]
    pub calibrate: Option<Calibration>,
    /// Few-shot set: the first fraction of the train split.
    #[arg(long, conflicts_with = "shots")]
    pub frac: Option<f64>,
    /// Few-shot set: K rows per class, drawn with the seed.
    #[arg(long)]
    pub shots: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Passes over the few-shot set per epoch.
    #[arg(long)]
    pub passes: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub max_len: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning rate of a trained head (--head linear, cls or verbalizer), on the same schedule (default: --lr)
    #[arg(long)]
    pub head_lr: Option<f64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Cap on optimizer steps per epoch.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// No random-MLM targets: the label word is the only training target.
    #[arg(long)]
    pub no_mlm_aug: bool,
    /// Dropout off while training.
    #[arg(long)]
    pub no_dropout: bool,
    /// Constant learning rate instead of the recipe's schedule.
    #[arg(long)]
    pub constant_lr: bool,
    /// Evaluate the test split after every epoch (the per-epoch test curve and the "best
    /// test" column), not only once at the end with the best-on-valid weights.
    #[arg(long)]
    pub test_every_epoch: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
}

impl RunArgs {
    /// The recipe's configuration for `method`, with this command line's overrides.
    pub fn config(&self, method: Method, default_recipe: &str) -> Result<TrainConfig> {
        let mut c =
            load_recipe(self.recipe.as_deref().unwrap_or(default_recipe))?.resolve(method)?;
        macro_rules! set {
            ($($field:ident <- $arg:ident),*) => { $(if let Some(v) = self.$arg { c.$field = v; })* };
        }
        if let Some(v) = &self.template {
            c.template = v.clone();
        }
        if let Some(v) = &self.labels {
            c.labels = v.clone();
        }
        if let Some(v) = self.prompt_encoder {
            c.prompt_encoder = v;
        }
        // deep-prompt settings apply to ptune-v2 (compare runs every method from one command line)
        if method == Method::PtuneV2 {
            set!(prefix_len <- prefix_len, reparam <- reparam, reparam_hidden <- reparam_hidden);
            if let Some(v) = &self.prefix_init {
                c.prefix_init = v.clone();
            }
        }
        if method != Method::Zeroshot {
            set!(head <- head);
        } else if self.calibrate.is_some() {
            c.calibrate = self.calibrate;
        }
        if let Some(f) = self.frac {
            c.fewshot = FewShot::Frac(f);
        }
        if let Some(k) = self.shots {
            c.fewshot = FewShot::Shots(k);
        }
        set!(seed <- seed, passes <- passes, batch_size <- batch_size, max_len <- max_len, lr <- lr, weight_decay <- weight_decay);
        if method != Method::Zeroshot {
            set!(epochs <- epochs);
        }
        if self.max_steps.is_some() {
            c.max_steps_per_epoch = self.max_steps;
        }
        if self.head_lr.is_some() {
            c.head_lr = self.head_lr;
        } else if !c.head.is_linear() {
            // a recipe's head lr belongs to its trained head: asking for the label words drops it
            c.head_lr = None;
        }
        if self.no_mlm_aug {
            c.mlm_augment = None;
        } else if c.mlm_augment.is_none() && self.recipe.is_none() {
            c.mlm_augment = Some(MlmAugment::default());
        }
        if self.no_dropout {
            c.no_dropout = true;
        }
        if self.constant_lr {
            c.schedule = Schedule::Constant;
        }
        c.validate()?;
        Ok(c)
    }

    /// The model directory: `--model`, or the default.
    pub fn model_path(&self) -> Result<PathBuf> {
        super::model_or_default(&self.model)
    }

    /// The data directory: `--data`, or the default.
    pub fn data_path(&self) -> Result<PathBuf> {
        super::data_or_default(&self.data)
    }

    pub fn data_files(&self) -> Result<DataFiles> {
        DataFiles::find(&self.data_path()?, self.fields.fields()?)
    }

    /// The run of `config` on `model` and `data`, in `run`, on this command line's backend.
    pub fn spec(
        &self,
        config: TrainConfig,
        model: ModelDir,
        data: DataFiles,
        run: RunDir,
        resume: bool,
    ) -> RunSpec {
        RunSpec {
            config,
            model,
            data,
            run,
            resume,
            micro_batches: self.backend.micro_batches(),
            test_every_epoch: self.test_every_epoch,
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// ptune (frozen LM, prompt encoder trains), ptune-v2 (frozen LM, deep prompts in every
    /// layer), finetune (all LM weights) or zeroshot.
    #[arg(long, value_enum, default_value = "ptune")]
    method: MethodArg,
    /// With ptune: train the LM together with the prompt encoder.
    #[arg(long)]
    tune_lm: bool,
    /// Run directory (default runs/<method>-seed<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its last epoch checkpoint.
    #[arg(long)]
    resume: bool,
    /// Start over even if --out holds a run.
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    #[command(flatten)]
    run: RunArgs,
}

struct TrainJob(RunSpec, Box<dyn Reporter>);

impl Job for TrainJob {
    type Output = ptune::train::Summary;
    fn run<B: ptune::model::TrainBackend>(self, device: B::Device) -> Result<Self::Output> {
        let TrainJob(spec, mut reporter) = self;
        ptune::train::train::<B>(&spec, reporter.as_mut(), &device)
    }
}

/// Whether a resumed run in `run` continues from a checkpoint.
fn run_resumes(run: &RunDir) -> Result<bool> {
    Ok(run.latest_checkpoint()?.is_some())
}

/// Refuses to overwrite an existing run unless asked to (`--resume`, `--force`).
pub fn prepare_run_dir(run: &RunDir, resume: bool, force: bool) -> Result<()> {
    run.prepare(Start::from_flags(resume, force))
        .map_err(|HoldsRun(dir)| {
            Error::invalid(format!(
                "{} already holds a run: pass --resume to continue it or --force to start over",
                dir.display()
            ))
        })
}

pub fn run(args: Args) -> Result<()> {
    let method = Method::from(args.method);
    let mut config = args.run.config(method, "seed")?;
    config.tune_lm = args.tune_lm;
    if args.tune_lm && method != Method::Ptune {
        return Err(Error::invalid("--tune-lm applies to --method ptune only"));
    }
    let deep_flags = [
        ("--prefix-len", args.run.prefix_len.is_some()),
        ("--reparam", args.run.reparam.is_some()),
        ("--reparam-hidden", args.run.reparam_hidden.is_some()),
        ("--prefix-init", args.run.prefix_init.is_some()),
    ];
    if let Some((flag, _)) = deep_flags
        .iter()
        .find(|(_, given)| *given && method != Method::PtuneV2)
    {
        return Err(Error::invalid(format!(
            "{flag} applies to --method ptune-v2 only"
        )));
    }
    if method != Method::Zeroshot && args.run.calibrate.is_some() {
        return Err(Error::invalid(
            "--calibrate applies to --method zeroshot only (a trained method learns its own class prior)",
        ));
    }
    if method == Method::Zeroshot && args.run.head.is_some() {
        return Err(Error::invalid(
            "--head applies to trained methods, not zeroshot",
        ));
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/{}-seed{}", method.name(), config.seed)));
    prepare_run_dir(&RunDir::new(&out), args.resume, args.force)?;
    let model = super::open_model(&args.run.model_path()?)?;
    let spec = args.run.spec(
        config,
        model,
        args.run.data_files()?,
        RunDir::new(&out),
        args.resume,
    );
    // checked here as well as by the library, to name the flag
    if spec.resume && run_resumes(&spec.run)? && spec.run.config_differs(&spec.config)? {
        return Err(Error::file(
            spec.run.config_path(),
            "--resume: this run was started with a different configuration",
        ));
    }
    let reporter = super::progress::reporter(args.run.quiet);
    let s = run_job(&args.run.backend, TrainJob(spec, reporter))?;
    println!(
        "{}: best valid {:.4} (epoch {}), test at best valid {:.4} (macro-F1 {:.4}){}; {} trainable params; {:.1} train ex/s; {:.0}s",
        s.method.name(),
        s.best_valid,
        s.best_epoch,
        s.test_at_best_valid,
        s.test_macro_f1_at_best_valid,
        s.best_test
            .map_or(String::new(), |t| format!(", best test {t:.4}")),
        s.trainable_params,
        s.examples_per_s,
        s.wall_seconds
    );
    println!("outputs in {}", out.display());
    Ok(())
}
