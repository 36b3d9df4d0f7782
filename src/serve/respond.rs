//! The JSON error responses every handler and middleware answers with.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub(super) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// A one-line message: serde and axum errors may quote input that holds line breaks.
pub(super) fn one_line(msg: String) -> String {
    crate::error::one_line(&msg).into_owned()
}

/// 405 with the JSON error body every 4xx has, and the `Allow` header.
pub(super) fn method_not_allowed(allow: &'static str) -> Response {
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
pub(super) fn error_and_close(status: StatusCode, msg: String) -> Response {
    let mut r = error(status, msg);
    r.headers_mut().insert(
        axum::http::header::CONNECTION,
        "close".parse().expect("valid header"),
    );
    r
}

pub(super) async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint (POST /v1/classify, GET /v1/tasks, GET /healthz, GET /metrics)",
    )
}
