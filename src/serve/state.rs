//! What the handlers and middleware share: the served tasks, the queue into the compute
//! thread, the limits and the metrics ([`AppState`]), and request ids.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use serde::Serialize;

use super::compute::Job;
use super::config::ServeConfig;
use super::metrics::Metrics;
use crate::tokenizer::BertTokenizer;

/// A task as listed by `GET /v1/tasks`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskInfo {
    /// Task name requests use (the `NAME` of `--adapter NAME=FILE`).
    pub name: String,
    /// Class names, in class-index order.
    pub classes: Vec<String>,
    /// Label word of each class.
    pub label_words: Vec<String>,
    /// The adapter's template spec.
    pub template: String,
    /// Pseudo tokens (continuous prompt vectors) in the template.
    pub prompts: usize,
    /// Deep-prompt virtual tokens per layer (0: none).
    pub prefix_len: usize,
    /// Whether a linear head reads the class (else the label words).
    pub linear_head: bool,
    /// Where the adapter's vectors came from (run directory, method), as recorded in the adapter.
    pub source: String,
}

pub(super) struct AppState {
    pub(super) tasks: Vec<TaskInfo>,
    pub(super) tokenizer: Arc<BertTokenizer>,
    pub(super) jobs: mpsc::Sender<Job>,
    pub(super) config: ServeConfig,
    /// Texts sent to the compute thread and not yet taken by it.
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) metrics: Arc<Metrics>,
    /// Source of request ids for requests that come without one.
    pub(super) ids: RequestIds,
}

/// What a classify request was about, left on its response for the request log and metrics.
#[derive(Clone, Copy)]
pub(super) struct Classified {
    /// Index of a served task (an unknown name is not kept).
    pub(super) task: Option<usize>,
    pub(super) texts: usize,
}

/// `x-request-id` for requests without one: a per-process random prefix and a counter.
#[derive(Clone)]
pub(super) struct RequestIds {
    pub(super) prefix: u32,
    pub(super) next: Arc<std::sync::atomic::AtomicU64>,
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
