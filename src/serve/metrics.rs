//! The server's metrics, exposed by `GET /metrics` in the Prometheus text format (the
//! `prometheus` crate, with a registry of its own per server so that servers in one process —
//! tests — do not share counters).
//!
//! Label values are bounded: `endpoint` is one of a fixed set, `task` one of the served tasks
//! or empty (an unknown task name sent by a client never becomes a label).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub(super) struct Metrics {
    registry: Registry,
    /// `ptune_requests_total{endpoint,task,status}`
    pub requests: IntCounterVec,
    /// `ptune_request_duration_seconds{endpoint,task}`: from the head read to the response.
    pub request_seconds: HistogramVec,
    /// `ptune_texts_total{task}`: texts classified (its rate is texts/s).
    pub texts: IntCounterVec,
    /// `ptune_batch_texts`: texts per batch the compute thread ran.
    pub batch_texts: Histogram,
    /// `ptune_queue_wait_seconds`: from a request's arrival at the queue to its batch's start.
    pub queue_wait: Histogram,
    /// `ptune_inference_seconds{task}`: one task's share of a batch, on the backbone.
    pub inference: HistogramVec,
    /// `ptune_queue_texts`: texts waiting for the compute thread (set when scraped).
    pub queued_texts: IntGauge,
    /// `ptune_open_connections`
    pub open_connections: IntGauge,
    /// `ptune_refused_connections_total`: closed at once, over `--max-connections`.
    pub refused_connections: IntCounter,
    /// `ptune_accept_errors_total`: failed accepts (e.g. out of file descriptors).
    pub accept_errors: IntCounter,
}

fn seconds_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("ptune_requests_total", "HTTP requests answered"),
            &["endpoint", "task", "status"],
        )
        .expect("valid metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "ptune_request_duration_seconds",
                "time from a request's head to its response",
            )
            .buckets(seconds_buckets()),
            &["endpoint", "task"],
        )
        .expect("valid metric");
        let texts = IntCounterVec::new(
            Opts::new("ptune_texts_total", "texts classified"),
            &["task"],
        )
        .expect("valid metric");
        let batch_texts = Histogram::with_opts(
            HistogramOpts::new("ptune_batch_texts", "texts per batch computed together").buckets(
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
        )
        .expect("valid metric");
        let queue_wait = Histogram::with_opts(
            HistogramOpts::new(
                "ptune_queue_wait_seconds",
                "time a request waited for the compute thread to start its batch",
            )
            .buckets(seconds_buckets()),
        )
        .expect("valid metric");
        let inference = HistogramVec::new(
            HistogramOpts::new(
                "ptune_inference_seconds",
                "time one task's texts of a batch took on the backbone",
            )
            .buckets(seconds_buckets()),
            &["task"],
        )
        .expect("valid metric");
        let queued_texts =
            IntGauge::new("ptune_queue_texts", "texts waiting for the compute thread")
                .expect("valid metric");
        let open_connections = IntGauge::new("ptune_open_connections", "open client connections")
            .expect("valid metric");
        let refused_connections = IntCounter::new(
            "ptune_refused_connections_total",
            "connections closed at once because `max_connections` were open",
        )
        .expect("valid metric");
        let accept_errors = IntCounter::new(
            "ptune_accept_errors_total",
            "failed accepts (e.g. out of file descriptors)",
        )
        .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_seconds.clone()),
            Box::new(texts.clone()),
            Box::new(batch_texts.clone()),
            Box::new(queue_wait.clone()),
            Box::new(inference.clone()),
            Box::new(queued_texts.clone()),
            Box::new(open_connections.clone()),
            Box::new(refused_connections.clone()),
            Box::new(accept_errors.clone()),
        ] {
            registry.register(m).expect("metric names are distinct");
        }
        Metrics {
            registry,
            requests,
            request_seconds,
            texts,
            batch_texts,
            queue_wait,
            inference,
            queued_texts,
            open_connections,
            refused_connections,
            accept_errors,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding into memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
