//! The client HTTP listener and its defences against slow and greedy clients (issue #16,
//! "hostile input"): `axum::serve` offers none of them, so the accept loop is ours.
//!
//! - **Connections** are bounded (`[http] connections_max`): one over the bound is closed at
//!   once and counted, rather than queued in the kernel where it would wait unseen.
//! - **Slow headers** (slowloris): hyper closes a connection whose request headers have not
//!   all arrived within `header_read_timeout_ms` of the first byte, or of the connection going
//!   idle, so trickling a byte at a time cannot hold a slot.
//! - **Slow bodies**: a request's body must arrive within `body_read_timeout_ms` (408).
//! - **Greedy clients**: with `requests_per_second_per_client` set, each client address has a
//!   token bucket; a request that finds it empty gets 429 with `Retry-After`. At most
//!   [`CLIENTS_TRACKED_MAX`] addresses are tracked; past it the least recently seen is forgotten.
//!
//! Refusals are counted in `quorumdb_requests_rejected_total{reason}`.
//!
//! With `[tls]` configured, each accepted connection first completes a TLS handshake (within
//! [`crate::tls::HANDSHAKE_TIMEOUT_MS`], holding its connection slot) with the certificate
//! current at accept time; plain HTTP on the port fails the handshake and is closed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::HttpConfig;
use crate::error::ApiError;
use crate::http::REQUEST_BODY_BYTES_MAX;
use crate::tls::{Listener, Tls};

/// The largest `connections_max` a config may ask for.
pub const CONNECTIONS_MAX: usize = 65_536;
/// Client addresses whose request rate is tracked at once.
pub const CLIENTS_TRACKED_MAX: usize = 16_384;
/// How long a stopping node waits for open connections to finish their requests.
const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(10);

/// The client address of a request, put in its extensions by the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-client token buckets.
struct Limiter {
    rate_per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Limiter {
    /// Takes a token for `ip`, or says how long until one is there.
    fn take(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= CLIENTS_TRACKED_MAX && !buckets.contains_key(&ip) {
            if let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at).map(|(ip, _)| *ip) {
                buckets.remove(&oldest);
            }
        }
        let b = buckets.entry(ip).or_insert(Bucket { tokens: self.burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate_per_s).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate_per_s))
        }
    }
}

struct Guard {
    config: HttpConfig,
    limiter: Option<Limiter>,
}

/// Rate limit, then read the whole body under its deadline (the handlers' extractors then
/// find it buffered).
async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if let (Some(limiter), Some(ClientAddr(addr))) = (&g.limiter, req.extensions().get::<ClientAddr>()) {
        if let Err(wait) = limiter.take(addr.ip(), Instant::now()) {
            metrics::counter!("quorumdb_requests_rejected_total", "reason" => "rate_limited").increment(1);
            let secs = wait.as_secs().max(1);
            let mut r = ApiError::RateLimited(format!(
                "client {} is over {} requests/s (burst {}); retry in {secs} s",
                addr.ip(),
                g.config.requests_per_second_per_client,
                g.config.requests_burst_per_client
            ))
            .into_response();
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
            return r;
        }
    }
    let (parts, body) = req.into_parts();
    let timeout = Duration::from_millis(g.config.body_read_timeout_ms);
    // One byte over the limit tells "too large" from "exactly at the limit".
    let body =
        match tokio::time::timeout(timeout, axum::body::to_bytes(body, REQUEST_BODY_BYTES_MAX + 1)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => {
                // Over the limit, or the client broke the body off.
                metrics::counter!("quorumdb_requests_rejected_total", "reason" => "body").increment(1);
                return ApiError::ValueTooLarge(format!(
                    "the request body is over {REQUEST_BODY_BYTES_MAX} bytes or was cut off"
                ))
                .into_response();
            }
            Err(_) => {
                metrics::counter!("quorumdb_requests_rejected_total", "reason" => "slow_body").increment(1);
                return ApiError::SlowRequest(format!(
                    "the request body did not arrive within {} ms (http.body_read_timeout_ms)",
                    g.config.body_read_timeout_ms
                ))
                .into_response();
            }
        };
    next.run(Request::from_parts(parts, axum::body::Body::from(body))).await
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// their requests (up to [`SHUTDOWN_DRAIN_MAX`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: HttpConfig,
    tls: Option<Arc<Tls>>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let limiter = (config.requests_per_second_per_client > 0).then(|| Limiter {
        rate_per_s: f64::from(config.requests_per_second_per_client),
        burst: f64::from(config.requests_burst_per_client),
        buckets: Mutex::new(HashMap::new()),
    });
    let connections_max = config.connections_max;
    let header_timeout = Duration::from_millis(config.header_read_timeout_ms);
    let guarded = Arc::new(Guard { config, limiter });
    let app = app.layer(axum::middleware::from_fn_with_state(guarded, guard));
    let permits = Arc::new(Semaphore::new(connections_max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("quorumdb_requests_rejected_total", "reason" => "connections").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().layer(axum::Extension(ClientAddr(addr))));
        let stop = stop_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(tls) => {
                    if let Some(stream) = crate::tls::accept(&tls, Listener::Http, stream).await {
                        serve_connection(TokioIo::new(stream), service, header_timeout, stop).await;
                    }
                }
                None => serve_connection(TokioIo::new(stream), service, header_timeout, stop).await,
            }
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
    let all = u32::try_from(connections_max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_DRAIN_MAX, permits.acquire_many(all)).await;
}

/// Serves one connection (plain or TLS) until it ends, or gracefully once `stop` turns true.
async fn serve_connection<I>(
    io: I,
    service: TowerToHyperService<Router>,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let conn = builder.serve_connection(io, service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
