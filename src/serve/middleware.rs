//! Middleware around every route: the request log line and request metrics, and the body
//! read under a deadline and a size limit before any handler runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use http_body_util::BodyExt;

use super::respond::{error_and_close, one_line};
use super::state::{AppState, Classified};

/// One log line per request (tracing, target `ptune::request`) and the request metrics.
pub(super) async fn log_request(
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

#[derive(Clone, Copy)]
pub(super) struct BodyLimits {
    pub(super) max_bytes: usize,
    pub(super) timeout: Duration,
}

/// Reads the whole request body before any handler runs: refuses an over-limit declared
/// Content-Length at once (413, body unread), and a body that is over the limit (413) or does
/// not arrive within the body timeout (408). `http_body_util::Limited` counts the bytes; the
/// deadline covers the whole body, not each chunk, so a client trickling bytes cannot hold
/// the request open.
pub(super) async fn read_body(
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
