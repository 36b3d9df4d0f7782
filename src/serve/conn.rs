//! The accept loop: a cap on open connections, header and idle timeouts per connection, logged
//! (and backed-off) accept failures, and a shutdown bounded by a grace period.
//!
//! Each connection is driven by hyper's HTTP/1 connection (the one `axum::serve` uses), serving
//! the axum `Router`. The timeouts are ours rather than hyper's `header_read_timeout` because
//! hyper starts that timer as soon as a connection waits for a request — after accept and again
//! after every response — so it cannot tell an idle keep-alive connection (allowed
//! `idle_timeout`) from a client sending a request head slowly (allowed `header_timeout`). We
//! watch the bytes on the socket and the requests in flight instead and close the connection
//! when either limit passes. The request body has its own deadline, in the body-reading
//! middleware (408).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The connection-level limits of [`super::config::ServeConfig`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

/// What a connection is doing, as seen from its socket and its requests.
#[derive(Debug)]
struct Activity {
    /// Requests handed to the router and not yet answered.
    in_flight: usize,
    /// When the first byte of a request head arrived while no request was in flight.
    head_started: Option<Instant>,
    /// Last byte read or written, accept, or end of a request.
    quiet_since: Instant,
}

#[derive(Debug, PartialEq, Eq)]
enum Expired {
    No,
    /// A request head started but did not finish within `header_timeout`.
    Header,
    /// No request and no traffic for `idle_timeout`.
    Idle,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Activity {
            in_flight: 0,
            head_started: None,
            quiet_since: now,
        }
    }
    fn read(&mut self, now: Instant) {
        self.quiet_since = now;
        if self.in_flight == 0 && self.head_started.is_none() {
            self.head_started = Some(now);
        }
    }
    fn wrote(&mut self, now: Instant) {
        self.quiet_since = now;
    }
    fn begin(&mut self) {
        self.in_flight += 1;
        self.head_started = None;
    }
    fn end(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.quiet_since = now;
    }
    /// A request in flight is never timed out here: its body has its own deadline and its
    /// computation is bounded by the queue.
    fn expired(&self, now: Instant, limits: &Limits) -> Expired {
        if self.in_flight > 0 {
            Expired::No
        } else if let Some(t) = self.head_started {
            if now.duration_since(t) >= limits.header_timeout {
                Expired::Header
            } else {
                Expired::No
            }
        } else if now.duration_since(self.quiet_since) >= limits.idle_timeout {
            Expired::Idle
        } else {
            Expired::No
        }
    }
}

type Shared = Arc<Mutex<Activity>>;

fn lock(a: &Shared) -> MutexGuard<'_, Activity> {
    a.lock().unwrap_or_else(|e| e.into_inner())
}

/// The socket, noting when bytes move.
struct Tracked {
    io: TcpStream,
    activity: Shared,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            lock(&this.activity).read(Instant::now());
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            lock(&this.activity).wrote(Instant::now());
        }
        r
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            lock(&this.activity).wrote(Instant::now());
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A request in flight on a connection, for as long as the router works on it.
struct InFlight(Shared);

impl InFlight {
    fn begin(a: &Shared) -> Self {
        lock(a).begin();
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.0).end(Instant::now());
    }
}

/// How often a connection checks its timeouts: a quarter of the shorter one, within 5 ms..1 s.
fn check_every(limits: &Limits) -> Duration {
    (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(5), Duration::from_secs(1))
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let activity: Shared = Arc::new(Mutex::new(Activity::new(Instant::now())));
    let io = TokioIo::new(Tracked {
        io: stream,
        activity: activity.clone(),
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let guard = InFlight::begin(&requests);
        let router = router.clone();
        async move {
            let response = tower::ServiceExt::oneshot(router, req).await;
            drop(guard);
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut ticks = tokio::time::interval(check_every(&limits));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                return;
            }
            _ = ticks.tick() => {
                let verdict = lock(&activity).expired(Instant::now(), &limits);
                match verdict {
                    Expired::No => {}
                    Expired::Header => {
                        tracing::info!(%peer, "closing connection: request head not received within {} ms", limits.header_timeout.as_millis());
                        return;
                    }
                    Expired::Idle => {
                        tracing::debug!(%peer, "closing idle connection after {} ms", limits.idle_timeout.as_millis());
                        return;
                    }
                }
            }
            _ = stop.changed(), if !draining => {
                // finish the request in flight (if any), then close
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Logs refused connections: the first at once, then at most one line a second with a count.
#[derive(Default)]
struct Refusals {
    unlogged: u64,
    last_log: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, peer: SocketAddr, open: usize) {
        self.unlogged += 1;
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(
                %peer,
                "refused {} connection(s): {open} open, the limit (`max_connections`)",
                self.unlogged
            );
            self.unlogged = 0;
            self.last_log = Some(Instant::now());
        }
    }
}

/// Accepts connections until `shutdown` resolves, then stops accepting, asks every connection
/// to finish its request in flight and close, and waits for them at most `shutdown_grace`
/// before closing the rest.
pub(super) async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Arc<super::metrics::Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut refusals = Refusals::default();
    // after a failed accept (e.g. EMFILE: out of file descriptors) wait before the next one,
    // doubling from 10 ms to 1 s, instead of spinning on the same error
    let mut backoff = Duration::ZERO;
    let mut resume_at: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (resume, listener) = (resume_at, &listener);
        let accept = async move {
            if let Some(t) = resume {
                tokio::time::sleep_until(t).await;
            }
            listener.accept().await
        };
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {
                metrics.open_connections.set(conns.len() as i64);
            }
            r = accept => match r {
                Ok((stream, peer)) => {
                    backoff = Duration::ZERO;
                    resume_at = None;
                    if conns.len() >= limits.max_connections {
                        metrics.refused_connections.inc();
                        refusals.note(peer, conns.len());
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    // counted before the task starts: it may serve a request (even /metrics)
                    // before this loop runs again
                    metrics.open_connections.set(conns.len() as i64 + 1);
                    conns.spawn(connection(stream, peer, router.clone(), limits, stop_rx.clone()));
                }
                Err(e) => {
                    metrics.accept_errors.inc();
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    resume_at = Some(tokio::time::Instant::now() + backoff);
                    tracing::warn!(
                        "accept failed: {e}; retrying in {} ms ({} connections open)",
                        backoff.as_millis(),
                        conns.len()
                    );
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if !conns.is_empty() {
        tracing::info!(
            "shutting down: waiting up to {} ms for {} open connection(s)",
            limits.shutdown_grace.as_millis(),
            conns.len()
        );
    }
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "closing {} connection(s) still open after the shutdown grace period",
            conns.len()
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
            max_connections: 4,
            shutdown_grace: Duration::from_millis(100),
        }
    }

    #[test]
    fn timeouts_follow_the_connection_state() {
        let l = limits();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut a = Activity::new(t0);
        // idle from accept: the idle timeout applies, not the header timeout
        assert_eq!(a.expired(ms(200), &l), Expired::No);
        assert_eq!(a.expired(ms(300), &l), Expired::Idle);
        // a head starts: now the header timeout counts, from its first byte
        a.read(ms(250));
        a.read(ms(300));
        assert_eq!(a.expired(ms(340), &l), Expired::No);
        assert_eq!(a.expired(ms(350), &l), Expired::Header);
        // a request in flight is never expired here, however long
        a.begin();
        a.read(ms(400));
        assert_eq!(a.expired(ms(10_000), &l), Expired::No);
        a.end(ms(10_000));
        // after the answer: idle again, counted from the end of the request or the last write
        a.wrote(ms(10_050));
        assert_eq!(a.expired(ms(10_300), &l), Expired::No);
        assert_eq!(a.expired(ms(10_350), &l), Expired::Idle);
        assert_eq!(check_every(&l), Duration::from_millis(25));
    }
}
