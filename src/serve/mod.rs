//! `ptune serve`: many tasks (adapters) on one frozen backbone over HTTP.
//!
//! Handlers (axum on tokio) validate requests and hand them to one compute thread, which
//! gathers requests for up to `max_wait` or `max_batch` texts, runs each task's texts as
//! batches on the shared backbone, and answers every request through its own channel.

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
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;

pub mod mixed;

use crate::adapter::{Prediction, Task};
use crate::error::{Error, Result};
use crate::tokenizer::BertTokenizer;
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
    reply: oneshot::Sender<std::result::Result<Vec<Prediction>, String>>,
}

struct AppState {
    tasks: Vec<TaskInfo>,
    jobs: mpsc::Sender<Job>,
    config: ServeConfig,
    /// Texts sent to the compute thread and not yet taken by it.
    queued: Arc<AtomicUsize>,
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
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

async fn classify(
    State(app): State<Arc<AppState>>,
    body: std::result::Result<Json<ClassifyRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    let Some(task) = app.tasks.iter().position(|t| t.name == req.task) else {
        let names: Vec<&str> = app.tasks.iter().map(|t| t.name.as_str()).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown task \"{}\" (tasks: {})",
                req.task,
                names.join(", ")
            ),
        );
    };
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
            reply: tx,
        })
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    let predictions = match rx.await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
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

/// Refuses a request whose declared Content-Length is over the limit before reading its body.
async fn content_length_guard(
    State(limit): State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u128>().ok());
    if let Some(n) = declared.filter(|&n| n > limit as u128) {
        let mut r = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {n} bytes; the limit is {limit}"),
        );
        // the body is left unread, so this connection cannot carry another request
        r.headers_mut().insert(
            axum::http::header::CONNECTION,
            "close".parse().expect("valid header"),
        );
        return r;
    }
    next.run(req).await
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint (POST /v1/classify, GET /v1/tasks, GET /healthz)",
    )
}

/// The compute thread: gathers jobs into batches and runs them on the backbone.
fn compute_loop<B: crate::model::kernels::Kernels>(
    jobs: mpsc::Receiver<Job>,
    tasks: MixedTasks<B>,
    tokenizer: BertTokenizer,
    config: ServeConfig,
    queued: Arc<AtomicUsize>,
    device: B::Device,
) {
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
        if config.batching == Batching::Mixed {
            let items: Vec<(usize, &str)> = batch
                .iter()
                .flat_map(|j| j.texts.iter().map(move |s| (j.task, s.as_str())))
                .collect();
            let result = tasks.classify(&tokenizer, &items, config.forward_batch, &device);
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
            let result = task.classify(&tokenizer, &texts, config.forward_batch, &device);
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

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Serves until Ctrl-C or SIGTERM. `on_listen` is called with the bound address (useful with
/// port 0), after which requests are accepted.
pub fn serve<B: crate::model::kernels::Kernels>(
    tasks: Vec<(TaskInfo, Task<B>)>,
    tokenizer: BertTokenizer,
    config: ServeConfig,
    device: B::Device,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<()> {
    let (infos, tasks): (Vec<TaskInfo>, Vec<Task<B>>) = tasks.into_iter().unzip();
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let worker_config = config.clone();
    let queued = Arc::new(AtomicUsize::new(0));
    let worker_queued = queued.clone();
    let worker = std::thread::Builder::new()
        .name("ptune-compute".into())
        .spawn(move || {
            let tasks = MixedTasks::new(tasks, &device);
            compute_loop(
                job_rx,
                tasks,
                tokenizer,
                worker_config,
                worker_queued,
                device,
            )
        })
        .map_err(|e| Error::invalid(format!("cannot start the compute thread: {e}")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::invalid(format!("cannot start the async runtime: {e}")))?;
    let addr = config.addr;
    let body_limit = config.max_body_bytes;
    let state = Arc::new(AppState {
        tasks: infos,
        jobs: job_tx,
        config,
        queued,
    });
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::invalid(format!("--addr {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::invalid(format!("--addr {addr}: {e}")))?;
        let app = Router::new()
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
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(body_limit))
            .layer(axum::middleware::from_fn_with_state(
                body_limit,
                content_length_guard,
            ))
            .with_state(state);
        on_listen(local);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| Error::invalid(format!("server error: {e}")))
    });
    // the handlers (and their job senders) are gone: the compute thread finishes its queue and ends
    let _ = worker.join();
    result
}
