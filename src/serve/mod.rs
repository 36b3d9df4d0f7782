//! `ptune serve`: many tasks (adapters) on one frozen backbone over HTTP.
//!
//! Handlers (axum on tokio) validate requests and hand them to one compute thread, which
//! gathers requests for up to `max_wait` or `max_batch` texts, runs each task's texts as
//! batches on the shared backbone, and answers every request through its own channel.
//! Connections are accepted by our own loop (`conn.rs`): connection cap, header/idle timeouts,
//! bounded shutdown; request bodies are read under a deadline (408) and a size limit (413).
//!
//! Files: `config.rs` (settings), `state.rs` (what handlers share), `handlers.rs` (the routes
//! and request validation), `middleware.rs` (request log and metrics, body limits),
//! `respond.rs` (JSON errors), `compute.rs` (the compute thread), `conn.rs` (connections),
//! `metrics.rs` (Prometheus), `mixed.rs` (mixed-task batches). This file builds the router
//! and runs the server.

mod compute;
mod config;
mod conn;
mod handlers;
mod metrics;
mod middleware;
pub mod mixed;
mod respond;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::adapter::Task;
use crate::error::{Error, Result};
use crate::tokenizer::BertTokenizer;
use compute::{Job, compute_loop};
pub use config::{Batching, ServeConfig};
use handlers::{classify, healthz, list_tasks, metrics_text};
use metrics::Metrics;
use middleware::{BodyLimits, log_request, read_body};
use respond::{method_not_allowed, not_found};
pub use state::TaskInfo;
use state::{AppState, RequestIds};

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
    /// The router with every route and middleware; hand it (or a clone) to the HTTP server.
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
            .map_err(|e| Error::invalid(format!("`addr` {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::invalid(format!("`addr` {addr}: {e}")))?;
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
