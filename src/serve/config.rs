//! The server's settings ([`ServeConfig`]) and how gathered texts are computed ([`Batching`]).

use std::net::SocketAddr;
use std::time::Duration;

/// Settings of the HTTP server: address, batching, request limits and timeouts.
/// [`ServeConfig::new`] gives the defaults of `ptune serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Most texts computed together.
    pub max_batch: usize,
    /// Longest a request waits for others to share its batch.
    pub max_wait: Duration,
    /// Most texts one request may send (default 64); more is refused with 413.
    pub max_texts_per_request: usize,
    /// Most characters (Unicode scalar values) in one text (default 2000); a longer one is
    /// refused with 413.
    pub max_text_chars: usize,
    /// Largest request body in bytes (default 1 MiB); larger is refused with 413.
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
