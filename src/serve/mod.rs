//! `ptune serve`: many tasks (adapters) on one frozen backbone over HTTP.
//!
//! Handlers (axum on tokio) validate requests and hand them to one compute thread, which
//! gathers requests for up to `max_wait` or `max_batch` texts, runs each task's texts as
//! batches on the shared backbone, and answers every request through its own channel.
//! Connections are accepted by our own loop (`conn.rs`): connection cap, header/idle timeouts,
//! bounded shutdown; request bodies are read under a deadline (408) and a size limit (413).

mod conn;
mod metrics;
pub mod mixed;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;

use crate::adapter::{Prediction, Task};
use crate::error::{Error, Result};
use crate::tokenizer::BertTokenizer;
use metrics::Metrics;
use mixed::MixedTasks;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    /// Most texts computed together.
    pub max_batch: usize,
    /// Longest a request waits for others to share its batch.
    pub max_wait: Duration,
    pub max_texts_per_request: usize,
    pub max_text_chars: usize,
    pub max_body_bytes: usize,
    /// Rows per forward pass inside a batch.
    pub forward_batch: usize,
    /// Most texts waiting for the compute thread; beyond it requests get 503 + Retry-After.
    pub max_queue_texts: usize,
    /// Longest a request head may take from its first byte; then the connection is closed.
    pub header_timeout: Duration,
    /// Longest a request body may take once its head is in; then 408 and the connection closes.
    pub body_timeout: Duration,
    /// A connection with no request and no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Most open connections; beyond it new ones are closed at once (and logged).
    pub max_connections: usize,
    /// After SIGTERM/Ctrl-C: how long requests in flight may take before every connection is
    /// closed and the server exits.
    pub shutdown_grace: Duration,
    /// How a gathered batch is computed.
    pub batching: Batching,
}

/// How the compute thread runs the texts it gathered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// One forward pass for all tasks' texts together (per-row prompts and prefixes).
    Mixed,
    /// One pass per task (the comparison point for `Mixed`).
    PerTask,
}

impl ServeConfig {
    /// The defaults of `ptune serve`, listening on `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        ServeConfig {
            addr,
            max_batch: 64,
            max_wait: Duration::from_millis(5),
            max_texts_per_request: 64,
            max_text_chars: 2000,
            max_body_bytes: 1 << 20,
            forward_batch: 32,
            max_queue_texts: 4096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(5),
            batching: Batching::Mixed,
        }
    }
}

/// A task as listed by `GET /v1/tasks`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskInfo {
    pub name: String,
    pub classes: Vec<String>,
    pub label_words: Vec<String>,
    pub template: String,
    pub prompts: usize,
    /// Deep-prompt virtual tokens per layer (0: none).
    pub prefix_len: usize,
    /// Whether a linear head reads the class (else the label words).
    pub linear_head: bool,
    pub source: String,
}

struct Job {
    task: usize,
    texts: Vec<String>,
    /// When the request joined the queue.
    enqueued: Instant,
    reply: oneshot::Sender<std::result::Result<Vec<Prediction>, String>>,
}

struct AppState {
    tasks: Vec<TaskInfo>,
    tokenizer: Arc<BertTokenizer>,
    jobs: mpsc::Sender<Job>,
    config: ServeConfig,
    /// Texts sent to the compute thread and not yet taken by it.
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    /// Source of request ids for requests that come without one.
    ids: RequestIds,
}

/// What a classify request was about, left on its response for the request log and metrics.
#[derive(Clone, Copy)]
struct Classified {
    /// Index of a served task (an unknown name is not kept).
    task: Option<usize>,
    texts: usize,
}

/// `x-request-id` for requests without one: a per-process random prefix and a counter.
#[derive(Clone)]
struct RequestIds {
    prefix: u32,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl tower_http::request_id::MakeRequestId for RequestIds {
    fn make_request_id<B>(
        &mut self,
        _: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:08x}-{n}", self.prefix);
        Some(tower_http::request_id::RequestId::new(
            id.parse().expect("hex and digits make a valid header"),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyRequest {
    task: String,
    texts: Vec<String>,
}

#[derive(Serialize)]
struct ClassifyResult {
    label: String,
    probs: serde_json::Map<String, serde_json::Value>,
    /// The text was cut to fit the task's max_len.
    truncated: bool,
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// A one-line message: serde and axum errors may quote input that holds line breaks.
fn one_line(msg: String) -> String {
    crate::error::one_line(&msg).into_owned()
}

async fn classify(
    State(app): State<Arc<AppState>>,
    body: std::result::Result<Json<ClassifyRequest>, JsonRejection>,
) -> Response {
    let mut seen = Classified {
        task: None,
        texts: 0,
    };
    let mut r = classify_request(&app, body, &mut seen).await;
    r.extensions_mut().insert(seen);
    r
}

async fn classify_request(
    app: &AppState,
    body: std::result::Result<Json<ClassifyRequest>, JsonRejection>,
    seen: &mut Classified,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(rejection) => return error(rejection.status(), one_line(rejection.body_text())),
    };
    seen.texts = req.texts.len();
    let Some(task) = app.tasks.iter().position(|t| t.name == req.task) else {
        let names: Vec<&str> = app.tasks.iter().map(|t| t.name.as_str()).collect();
        return error(
            StatusCode::NOT_FOUND,
            one_line(format!(
                "unknown task \"{}\" (tasks: {})",
                req.task.escape_debug(),
                names.join(", ")
            )),
        );
    };
    seen.task = Some(task);
    let limits = &app.config;
    if req.texts.is_empty() {
        return error(StatusCode::BAD_REQUEST, "texts is empty");
    }
    if req.texts.len() > limits.max_texts_per_request {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} texts in one request; the limit is {}",
                req.texts.len(),
                limits.max_texts_per_request
            ),
        );
    }
    for (i, t) in req.texts.iter().enumerate() {
        if t.trim().is_empty() {
            return error(StatusCode::BAD_REQUEST, format!("texts[{i}] is empty"));
        }
        let n = t.chars().count();
        if n > limits.max_text_chars {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "texts[{i}] has {n} characters; the limit is {}",
                    limits.max_text_chars
                ),
            );
        }
        if app.tokenizer.tokenize(t).is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "texts[{i}] has no tokens (only characters the tokenizer drops, such as control characters)"
                ),
            );
        }
    }
    let n_texts = req.texts.len();
    let before = app.queued.fetch_add(n_texts, Ordering::SeqCst);
    if before + n_texts > limits.max_queue_texts && before > 0 {
        app.queued.fetch_sub(n_texts, Ordering::SeqCst);
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the queue is full ({before} texts waiting, limit {}); retry shortly",
                limits.max_queue_texts
            ),
        );
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            "1".parse().expect("valid header"),
        );
        return r;
    }
    let (tx, rx) = oneshot::channel();
    if app
        .jobs
        .send(Job {
            task,
            texts: req.texts,
            enqueued: Instant::now(),
            reply: tx,
        })
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    let predictions = match rx.await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, one_line(e)),
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
    };
    let classes = &app.tasks[task].classes;
    let results: Vec<ClassifyResult> = predictions
        .into_iter()
        .map(|p| ClassifyResult {
            label: p.label,
            probs: classes
                .iter()
                .cloned()
                .zip(p.probs.into_iter().map(|x| json!(x)))
                .collect(),
            truncated: p.truncated,
        })
        .collect();
    Json(json!({ "task": app.tasks[task].name, "results": results })).into_response()
}

async fn list_tasks(State(app): State<Arc<AppState>>) -> Response {
    Json(json!({ "tasks": app.tasks })).into_response()
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn metrics_text(State(app): State<Arc<AppState>>) -> Response {
    app.metrics
        .queued_texts
        .set(app.queued.load(Ordering::Relaxed) as i64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// One log line per request (tracing, target `ptune::request`) and the request metrics.
async fn log_request(
    State(app): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let response = next.run(req).await;
    let latency = start.elapsed();
    let status = response.status().as_u16();
    let seen = response.extensions().get::<Classified>().copied();
    let task = seen
        .and_then(|c| c.task)
        .map_or("", |t| app.tasks[t].name.as_str());
    let texts = seen.map_or(0, |c| c.texts);
    let endpoint = match path.as_str() {
        "/v1/classify" => "classify",
        "/v1/tasks" => "tasks",
        "/healthz" => "healthz",
        "/metrics" => "metrics",
        _ => "other",
    };
    let m = &app.metrics;
    m.requests
        .with_label_values(&[endpoint, task, response.status().as_str()])
        .inc();
    m.request_seconds
        .with_label_values(&[endpoint, task])
        .observe(latency.as_secs_f64());
    tracing::info!(
        target: "ptune::request",
        request_id = %crate::error::one_line(&id),
        method = %method,
        path = %crate::error::one_line(&path),
        task,
        texts,
        status,
        latency_ms = (latency.as_secs_f64() * 1e4).round() / 10.0,
        "request"
    );
    response
}

/// 405 with the JSON error body every 4xx has, and the `Allow` header.
fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed here (allowed: {allow})"),
    );
    r.headers_mut().insert(
        axum::http::header::ALLOW,
        allow.parse().expect("valid header"),
    );
    r
}

/// An error after which the connection cannot carry another request (the body is unread).
fn error_and_close(status: StatusCode, msg: String) -> Response {
    let mut r = error(status, msg);
    r.headers_mut().insert(
        axum::http::header::CONNECTION,
        "close".parse().expect("valid header"),
    );
    r
}

#[derive(Clone, Copy)]
struct BodyLimits {
    max_bytes: usize,
    timeout: Duration,
}

/// Reads the whole request body before any handler runs: refuses an over-limit declared
/// Content-Length at once (413, body unread), and a body that is over the limit (413) or does
/// not arrive within the body timeout (408). `http_body_util::Limited` counts the bytes; the
/// deadline covers the whole body, not each chunk, so a client trickling bytes cannot hold
/// the request open.
async fn read_body(
    State(limits): State<BodyLimits>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let limit = limits.max_bytes;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u128>().ok());
    if let Some(n) = declared.filter(|&n| n > limit as u128) {
        return error_and_close(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {n} bytes; the limit is {limit}"),
        );
    }
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(
        limits.timeout,
        http_body_util::Limited::new(body, limit).collect(),
    )
    .await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return error_and_close(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over the limit of {limit} bytes"),
            );
        }
        Ok(Err(e)) => {
            return error_and_close(
                StatusCode::BAD_REQUEST,
                one_line(format!("reading the request body: {e}")),
            );
        }
        Err(_) => {
            return error_and_close(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {} ms",
                    limits.timeout.as_millis()
                ),
            );
        }
    };
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint (POST /v1/classify, GET /v1/tasks, GET /healthz, GET /metrics)",
    )
}

/// The compute thread: gathers jobs into batches and runs them on the backbone.
fn compute_loop<B: crate::model::kernels::Kernels>(
    jobs: mpsc::Receiver<Job>,
    // each with its name, for the metrics' labels
    named_tasks: Vec<(String, Task<B>)>,
    tokenizer: Arc<BertTokenizer>,
    config: ServeConfig,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    device: B::Device,
) {
    let (names, tasks): (Vec<String>, Vec<Task<B>>) = named_tasks.into_iter().unzip();
    let tasks = MixedTasks::new(tasks, &device);
    // label lookups once, not per batch
    let inference: Vec<prometheus::Histogram> = names
        .iter()
        .map(|n| metrics.inference.with_label_values(&[n.as_str()]))
        .collect();
    let classified: Vec<prometheus::IntCounter> = names
        .iter()
        .map(|n| metrics.texts.with_label_values(&[n.as_str()]))
        .collect();
    while let Ok(first) = jobs.recv() {
        let deadline = Instant::now() + config.max_wait;
        let mut n = first.texts.len();
        let mut batch = vec![first];
        while n < config.max_batch {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match jobs.recv_timeout(deadline - now) {
                Ok(job) => {
                    n += job.texts.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        queued.fetch_sub(
            batch.iter().map(|j| j.texts.len()).sum::<usize>(),
            Ordering::SeqCst,
        );
        // a client that hung up is not waiting for its answer: do not compute it
        batch.retain(|j| !j.reply.is_closed());
        let started = Instant::now();
        for j in &batch {
            metrics
                .queue_wait
                .observe(started.duration_since(j.enqueued).as_secs_f64());
        }
        if !batch.is_empty() {
            metrics
                .batch_texts
                .observe(batch.iter().map(|j| j.texts.len()).sum::<usize>() as f64);
        }
        if config.batching == Batching::Mixed && !batch.is_empty() {
            let items: Vec<(usize, &str)> = batch
                .iter()
                .flat_map(|j| j.texts.iter().map(move |s| (j.task, s.as_str())))
                .collect();
            let t0 = Instant::now();
            let result = tasks.classify(&tokenizer, &items, config.forward_batch, &device);
            // one pass serves every task in it: each task present is charged the pass's time
            let mut present = vec![0u64; names.len()];
            for &(t, _) in &items {
                present[t] += 1;
            }
            for (t, &n) in present.iter().enumerate().filter(|(_, n)| **n > 0) {
                inference[t].observe(t0.elapsed().as_secs_f64());
                if result.is_ok() {
                    classified[t].inc_by(n);
                }
            }
            answer(batch, result);
            continue;
        }
        for (t, task) in tasks.tasks().iter().enumerate() {
            let group: Vec<Job> = {
                let (mine, rest): (Vec<Job>, Vec<Job>) =
                    batch.into_iter().partition(|j| j.task == t);
                batch = rest;
                mine
            };
            if group.is_empty() {
                continue;
            }
            let texts: Vec<(&str, Option<&str>)> = group
                .iter()
                .flat_map(|j| j.texts.iter().map(|s| (s.as_str(), None)))
                .collect();
            let t0 = Instant::now();
            let result = task.classify(&tokenizer, &texts, config.forward_batch, &device);
            inference[t].observe(t0.elapsed().as_secs_f64());
            if result.is_ok() {
                classified[t].inc_by(texts.len() as u64);
            }
            answer(group, result);
        }
    }
}

/// Hands each job its share of the predictions (in job order), or the error.
fn answer(jobs: Vec<Job>, result: Result<Vec<Prediction>>) {
    match result {
        Ok(preds) => {
            let mut it = preds.into_iter();
            for job in jobs {
                let mine: Vec<Prediction> = it.by_ref().take(job.texts.len()).collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(e.to_string()));
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM; the handlers are installed when this is called (inside the
/// runtime), so a signal that arrives before the first poll is not missed.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let err = |e: std::io::Error| Error::invalid(format!("cannot handle signals: {e}"));
        let mut term = signal(SignalKind::terminate()).map_err(err)?;
        let mut int = signal(SignalKind::interrupt()).map_err(err)?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// The HTTP application: the router and the compute thread behind it.
pub struct App {
    pub router: Router,
    worker: std::thread::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl App {
    /// Waits for the compute thread, which ends once every clone of the router is dropped.
    pub fn join(self) {
        drop(self.router);
        let _ = self.worker.join();
    }
}

/// Builds the router (validation, routes, body limits) and starts the compute thread.
pub fn app<B: crate::model::kernels::Kernels>(
    tasks: Vec<(TaskInfo, Task<B>)>,
    tokenizer: BertTokenizer,
    config: &ServeConfig,
    device: B::Device,
) -> Result<App> {
    let (infos, tasks): (Vec<TaskInfo>, Vec<Task<B>>) = tasks.into_iter().unzip();
    let tokenizer = Arc::new(tokenizer);
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let worker_config = config.clone();
    let queued = Arc::new(AtomicUsize::new(0));
    let worker_queued = queued.clone();
    let worker_tokenizer = tokenizer.clone();
    let metrics = Arc::new(Metrics::new());
    let worker_metrics = metrics.clone();
    let names: Vec<String> = infos.iter().map(|t| t.name.clone()).collect();
    let worker = std::thread::Builder::new()
        .name("ptune-compute".into())
        .spawn(move || {
            compute_loop(
                job_rx,
                names.into_iter().zip(tasks).collect(),
                worker_tokenizer,
                worker_config,
                worker_queued,
                worker_metrics,
                device,
            )
        })
        .map_err(|e| Error::invalid(format!("cannot start the compute thread: {e}")))?;
    let body_limits = BodyLimits {
        max_bytes: config.max_body_bytes,
        timeout: config.body_timeout,
    };
    let state = Arc::new(AppState {
        tasks: infos,
        tokenizer,
        jobs: job_tx,
        config: config.clone(),
        queued,
        metrics: metrics.clone(),
        ids: RequestIds {
            // std's per-process random hash keys: ids differ between runs
            prefix: {
                use std::hash::{BuildHasher, Hasher};
                std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish() as u32
            },
            next: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        },
    });
    let ids = state.ids.clone();
    let router = Router::new()
        .route(
            "/v1/classify",
            post(classify).fallback(|| async { method_not_allowed("POST") }),
        )
        .route(
            "/v1/tasks",
            get(list_tasks).fallback(|| async { method_not_allowed("GET, HEAD") }),
        )
        .route(
            "/healthz",
            get(healthz).fallback(|| async { method_not_allowed("GET, HEAD") }),
        )
        .route(
            "/metrics",
            get(metrics_text).fallback(|| async { method_not_allowed("GET, HEAD") }),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(body_limits, read_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            log_request,
        ))
        // outermost: an id for every request (an incoming x-request-id is kept), echoed back
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(ids))
        .with_state(state);
    Ok(App {
        router,
        worker,
        metrics,
    })
}

/// Serves until Ctrl-C or SIGTERM. `on_listen` is called with the bound address (useful with
/// port 0), after which requests are accepted. On a signal the server stops accepting, lets
/// requests in flight finish for up to `shutdown_grace`, closes every connection and returns.
pub fn serve<B: crate::model::kernels::Kernels>(
    tasks: Vec<(TaskInfo, Task<B>)>,
    tokenizer: BertTokenizer,
    config: ServeConfig,
    device: B::Device,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<()> {
    let App {
        router,
        worker,
        metrics,
    } = app(tasks, tokenizer, &config, device)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::invalid(format!("cannot start the async runtime: {e}")))?;
    let addr = config.addr;
    let limits = conn::Limits {
        header_timeout: config.header_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections.max(1),
        shutdown_grace: config.shutdown_grace,
    };
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::invalid(format!("--addr {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::invalid(format!("--addr {addr}: {e}")))?;
        let shutdown = shutdown_signal()?;
        on_listen(local);
        conn::run(listener, router, limits, metrics, shutdown).await;
        Ok(())
    });
    // every connection task is finished or aborted; nothing on the runtime is worth waiting for
    runtime.shutdown_timeout(Duration::from_millis(100));
    // the handlers (and their job senders) are gone: the compute thread finishes the batch it
    // is computing, skips the requests nobody waits for, and ends
    let _ = worker.join();
    result
}
