//! `ptune pretrain`: masked-LM pretraining from scratch or from a model directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ptune::error::{Error, Result};
use ptune::model::BertConfig;
use ptune::model::tensors::StorageDType;
use ptune::pretrain::corpus::Packing;
use ptune::pretrain::{Decay, PretrainConfig, PretrainSpec, Start, pretrain};

use super::{BackendArgs, Job, run_job};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Corpus: text files or directories (each non-empty line a text; a blank line ends a document).
    #[arg(long, required = true, num_args = 1..)]
    corpus: Vec<PathBuf>,
    /// Run directory: metrics.jsonl, curve.svg, checkpoint/, and the final model/.
    #[arg(long)]
    out: PathBuf,
    /// Continue from this model directory or Hub name ORG/NAME[@REVISION] (domain-adaptive
    /// pretraining). Without it, a
    /// model is initialised at random from --config or the architecture flags.
    #[arg(long, conflicts_with = "config")]
    init: Option<PathBuf>,
    /// config.json of the architecture to train from scratch.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Vocabulary for training from scratch (default: the shipped model's).
    #[arg(long)]
    vocab: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    layers: usize,
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Feed-forward size (default 4 × hidden).
    #[arg(long)]
    intermediate: Option<usize>,
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Micro-batches accumulated per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    #[arg(long, value_enum, default_value = "linear")]
    decay: DecayArg,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Global gradient-norm clipping (0: off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// `lines`: one line per sequence (cut into several when longer); `docs`: lines of a
    /// document packed; `truncate`: one line per sequence, truncated.
    #[arg(long, value_enum, default_value = "lines")]
    packing: PackingArg,
    /// Whole-word masking (Chinese words segmented with jieba).
    #[arg(long)]
    wwm: bool,
    #[arg(long, default_value_t = 0.15)]
    mask_rate: f64,
    /// Batches in corpus order instead of grouped by length.
    #[arg(long)]
    no_group_by_length: bool,
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Held-out sequences (never trained on) for the MLM loss.
    #[arg(long, default_value_t = 512)]
    eval_sequences: usize,
    #[arg(long, default_value_t = 200)]
    eval_every: usize,
    #[arg(long, default_value_t = 500)]
    save_every: usize,
    /// Also write model-stepN/ every N steps (0: only the final model/).
    #[arg(long, default_value_t = 0)]
    export_every: usize,
    /// Storage type of the written model.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DTypeArg,
    /// Shard the written model into files of at most this many MiB (0: one file).
    #[arg(long, default_value_t = 0)]
    shard_mib: usize,
    /// Where tokenized corpus shards are cached (default: <out>/../.corpus-cache).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Stop after this many minutes as if the schedule had ended (evaluation, checkpoint,
    /// model written); --resume continues the schedule.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum DecayArg {
    Linear,
    Cosine,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum PackingArg {
    Lines,
    Docs,
    Truncate,
}

/// `--dtype` of the commands that write a model directory (`pretrain`, `merge`).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(super) enum DTypeArg {
    F32,
    F16,
    Bf16,
}

impl DTypeArg {
    pub(super) fn storage(self) -> StorageDType {
        match self {
            DTypeArg::F32 => StorageDType::F32,
            DTypeArg::F16 => StorageDType::F16,
            DTypeArg::Bf16 => StorageDType::Bf16,
        }
    }
}

struct PretrainJob(PretrainSpec);

impl Job for PretrainJob {
    type Output = ptune::pretrain::PretrainSummary;
    fn run<B: ptune::model::TrainBackend>(self, device: B::Device) -> Result<Self::Output> {
        pretrain::<B>(&self.0, &device)
    }
}

/// Ctrl-C / SIGTERM set the flag; the run saves a checkpoint after the current step and stops.
fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    extern "C" fn on_signal(_: libc::c_int) {
        if let Some(f) = FLAG.get() {
            f.store(true, Ordering::SeqCst);
        }
    }
    let flag = FLAG
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone();
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    flag
}

pub fn run(args: Args) -> Result<()> {
    let start = match (&args.init, &args.config) {
        (Some(dir), _) => {
            Start::From(super::open_model(dir).map_err(|e| Error::invalid(format!("--init: {e}")))?)
        }
        (None, config_file) => {
            let vocab_file = match &args.vocab {
                Some(v) => v.clone(),
                None => super::model_or_default(&None)?.join("vocab.txt"),
            };
            let vocab_size =
                ptune::tokenizer::BertTokenizer::from_vocab_file(&vocab_file, true)?.vocab_size();
            let config = match config_file {
                Some(f) => BertConfig::from_file(f)?,
                None => {
                    let json = serde_json::json!({
                        "vocab_size": vocab_size,
                        "hidden_size": args.hidden,
                        "num_hidden_layers": args.layers,
                        "num_attention_heads": args.heads,
                        "intermediate_size": args.intermediate.unwrap_or(4 * args.hidden),
                    });
                    BertConfig::from_json(json.to_string().as_bytes())
                        .map_err(|m| Error::invalid(format!("architecture flags: {m}")))?
                }
            };
            Start::Scratch {
                config,
                vocab_file,
                lowercase: true,
            }
        }
    };
    let config = PretrainConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        lr: args.lr,
        warmup: args.warmup,
        decay: match args.decay {
            DecayArg::Linear => Decay::Linear,
            DecayArg::Cosine => Decay::Cosine,
        },
        weight_decay: args.weight_decay,
        max_grad_norm: args.max_grad_norm,
        max_len: args.max_len,
        packing: match args.packing {
            PackingArg::Lines => Packing::Lines,
            PackingArg::Docs => Packing::Docs,
            PackingArg::Truncate => Packing::Truncate,
        },
        whole_word_mask: args.wwm,
        mask_rate: args.mask_rate,
        group_by_length: !args.no_group_by_length,
        seed: args.seed,
        eval_sequences: args.eval_sequences,
        eval_every: args.eval_every,
        save_every: args.save_every,
        export_every: args.export_every,
        dtype: args.dtype.storage(),
        shard_mib: args.shard_mib,
        precision: args.backend.precision.to_string(),
    };
    let cache_dir = args.cache_dir.clone().unwrap_or_else(|| {
        args.out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .join(".corpus-cache")
    });
    let spec = PretrainSpec {
        config,
        start,
        corpus: args.corpus.clone(),
        cache_dir,
        out_dir: args.out.clone(),
        resume: args.resume,
        progress: !args.quiet,
        micro_batches: args.backend.micro_batches(),
        stop: stop_flag(),
        time_limit: args.max_minutes.map(|m| m * 60.0),
    };
    let s = run_job(&args.backend, PretrainJob(spec))?;
    println!(
        "pretrain: {} steps, {} tokens ({:.0} tokens/s), held-out MLM loss {} (ppl {}); {} parameters; {:.0}s",
        s.steps,
        s.tokens,
        s.tokens_per_s,
        s.heldout_loss.map_or("-".into(), |v| format!("{v:.4}")),
        s.heldout_ppl.map_or("-".into(), |v| format!("{v:.1}")),
        s.parameters,
        s.wall_seconds
    );
    if s.time_limit_reached {
        println!(
            "stopped at the time limit (step {} of {})",
            s.steps, args.steps
        );
    }
    match &s.model_dir {
        Some(d) => println!("model in {}", d.display()),
        None => println!(
            "interrupted: checkpoint saved in {}; --resume continues",
            args.out.join("checkpoint").display()
        ),
    }
    Ok(())
}
