//! `ptune serve`: an HTTP server hosting several adapters on one backbone.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ptune::adapter::{Adapter, Backbone};
use ptune::error::{Error, Result};
use ptune::model::ModelDir;
use ptune::serve::{Batching, ServeConfig, TaskInfo, serve};

use super::{BackendArgs, InferJob, run_infer_job};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory, or a Hugging Face Hub name ORG/NAME[@REVISION] (downloaded into the Hub cache).
    /// Default: the shipped zh-mini (see `ptune --help`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A task: NAME=ADAPTER_FILE (repeat for more tasks).
    #[arg(long = "adapter", required = true, value_parser = parse_task)]
    adapters: Vec<(String, PathBuf)>,
    /// Address to listen on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Most texts computed together across concurrent requests.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Longest a request waits for others to share its batch, in milliseconds (0–1000).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=1000))]
    max_wait_ms: u64,
    /// Most texts waiting to be computed; beyond it requests get 503 with Retry-After.
    #[arg(long, default_value_t = 4096)]
    max_queue_texts: usize,
    #[arg(long, default_value_t = 64)]
    max_texts: usize,
    #[arg(long, default_value_t = 2000)]
    max_text_chars: usize,
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 32)]
    forward_batch: usize,
    /// Compute each task's texts in passes of their own, instead of one pass that mixes tasks
    /// (per-row prompt vectors and prefixes); for comparison.
    #[arg(long)]
    per_task_batches: bool,
    /// Longest a request head may take from its first byte (ms); then the connection closes.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_ms: u64,
    /// Longest a request body may take once its head is in (ms); then 408.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_ms: u64,
    /// A connection with no request and no traffic for this long (ms) is closed.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_ms: u64,
    /// Most open connections; beyond it new ones are closed at once (and logged).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// After SIGTERM/Ctrl-C, how long requests in flight may take (ms) before the server
    /// closes every connection and exits.
    #[arg(long, default_value_t = 5_000)]
    shutdown_grace_ms: u64,
    /// Log lines (one per request, and warnings) on stderr as text or as JSON objects.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

struct Serve(Args, ModelDir, Vec<(String, PathBuf, Adapter)>);

impl InferJob for Serve {
    type Output = ();
    fn run<B: ptune::model::Kernels>(self, device: B::Device) -> Result<()> {
        let Serve(a, model_dir, adapters) = self;
        let backbone = Backbone::<B>::load(&model_dir, &device)?;
        let mut tasks = Vec::new();
        for (name, path, adapter) in adapters {
            let task = adapter.attach(&path, &backbone, &device)?;
            let info = TaskInfo {
                name,
                classes: task.verbalizer.classes.clone(),
                label_words: task.verbalizer.words.clone(),
                template: adapter.info.template.clone(),
                prompts: adapter.info.n_prompts,
                prefix_len: adapter.info.prefix_len,
                linear_head: adapter.info.head,
                source: adapter.info.source.clone(),
            };
            tasks.push((info, task));
        }
        let config = ServeConfig {
            addr: a.addr,
            max_batch: a.max_batch.max(1),
            max_wait: Duration::from_millis(a.max_wait_ms),
            max_texts_per_request: a.max_texts.max(1),
            max_text_chars: a.max_text_chars,
            max_body_bytes: a.max_body_bytes,
            forward_batch: a.forward_batch.max(1),
            max_queue_texts: a.max_queue_texts.max(1),
            batching: if a.per_task_batches {
                Batching::PerTask
            } else {
                Batching::Mixed
            },
            header_timeout: Duration::from_millis(a.header_timeout_ms),
            body_timeout: Duration::from_millis(a.body_timeout_ms),
            idle_timeout: Duration::from_millis(a.idle_timeout_ms),
            max_connections: usize::try_from(a.max_connections).unwrap_or(usize::MAX),
            shutdown_grace: Duration::from_millis(a.shutdown_grace_ms),
        };
        if !a.addr.ip().is_loopback() {
            eprintln!(
                "warning: listening on {} — reachable from other machines; the server has no authentication",
                a.addr
            );
        }
        let n = tasks.len();
        serve(tasks, backbone.tokenizer, config, device, |addr| {
            println!(
                "listening on http://{addr} ({n} tasks on {})",
                model_dir.dir.display()
            );
            let _ = std::io::stdout().flush();
        })?;
        eprintln!("shut down");
        Ok(())
    }
}

/// Server logs (one line per request, refused connections, failed accepts, shutdown) go to
/// stderr through tracing; `RUST_LOG` overrides the default level (info).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

pub fn run(args: Args) -> Result<()> {
    init_logging(args.log_format);
    let model = super::open_model(&super::model_or_default(&args.model)?)?;
    let mut adapters = Vec::new();
    for (name, path) in &args.adapters {
        if adapters
            .iter()
            .any(|(n, _, _): &(String, PathBuf, Adapter)| n == name)
        {
            return Err(Error::invalid(format!(
                "--adapter: task name \"{name}\" given twice"
            )));
        }
        let adapter = Adapter::read(path)?;
        adapters.push((name.clone(), path.clone(), adapter));
    }
    let backend = args.backend.clone();
    run_infer_job(&backend, Serve(args, model, adapters))
}

/// `--adapter NAME=FILE`.
fn parse_task(spec: &str) -> std::result::Result<(String, PathBuf), String> {
    spec.split_once('=')
        .filter(|(n, f)| !n.is_empty() && !f.is_empty())
        .map(|(n, f)| (n.to_string(), PathBuf::from(f)))
        .ok_or_else(|| format!("\"{spec}\": expected NAME=FILE"))
}
