//! The route handlers: `POST /v1/classify` (validation, the bounded queue, the answer),
//! `GET /v1/tasks`, `GET /healthz`, `GET /metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;

use super::compute::Job;
use super::respond::{error, one_line};
use super::state::{AppState, Classified};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClassifyRequest {
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

pub(super) async fn classify(
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
    if let Err((status, msg)) = check_texts(app, &req.texts) {
        return error(status, msg);
    }
    let limits = &app.config;
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

/// Refuses texts that are empty, too many, too long or without tokens: the status (400 or
/// 413) and the message.
fn check_texts(app: &AppState, texts: &[String]) -> std::result::Result<(), (StatusCode, String)> {
    let limits = &app.config;
    if texts.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "texts is empty".into()));
    }
    if texts.len() > limits.max_texts_per_request {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} texts in one request; the limit is {}",
                texts.len(),
                limits.max_texts_per_request
            ),
        ));
    }
    for (i, t) in texts.iter().enumerate() {
        if t.trim().is_empty() {
            return Err((StatusCode::BAD_REQUEST, format!("texts[{i}] is empty")));
        }
        let n = t.chars().count();
        if n > limits.max_text_chars {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "texts[{i}] has {n} characters; the limit is {}",
                    limits.max_text_chars
                ),
            ));
        }
        if app.tokenizer.tokenize(t).is_empty() {
            return Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "texts[{i}] has no tokens (only characters the tokenizer drops, such as control characters)"
                ),
            ));
        }
    }
    Ok(())
}

pub(super) async fn list_tasks(State(app): State<Arc<AppState>>) -> Response {
    Json(json!({ "tasks": app.tasks })).into_response()
}

pub(super) async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

pub(super) async fn metrics_text(State(app): State<Arc<AppState>>) -> Response {
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
