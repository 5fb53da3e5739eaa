//! The HTTP listener: accepts connections and serves the router on each,
//! with the bounds `axum::serve` lacks. A client that trickles its request
//! headers (slowloris) is cut off after `header_read_timeout`, which also
//! reclaims keep-alive connections left idle that long; at most
//! `max_connections` connections are open at once, and beyond that new ones
//! wait in the kernel's accept backlog instead of costing memory here.
//!
//! Only HTTP/1.1 is served: HTTP/2 has no header read timeout in hyper, so
//! a cleartext HTTP/2 client could hold a connection slot forever. TLS and
//! HTTP/2 towards clients belong to the proxy in front.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Bounds on connections (rather than on requests).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// How long a client may take to send a request's headers, counted from
    /// when the server starts waiting for them (so idle keep-alive counts).
    pub header_read_timeout: Duration,
    /// Connections open at once; 0: no limit.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting, lets in-flight requests finish, closes idle connections and
/// returns once every connection is gone.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let slots = match limits.max_connections {
        0 => Semaphore::MAX_PERMITS,
        n => n.min(Semaphore::MAX_PERMITS),
    };
    let slots = Arc::new(Semaphore::new(slots));
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout.max(Duration::from_millis(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // A slot is taken before accepting, so that beyond the limit
        // connections queue in the backlog rather than in this process.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot?,
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        metrics::gauge!("fhirstream_http_connections_open").increment(1.0);
        let service = TowerToHyperService::new(router.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                if e.is_timeout() {
                    metrics::counter!("fhirstream_http_header_timeouts_total").increment(1);
                }
                debug!(error = %e, "connection ended with an error");
            }
            metrics::gauge!("fhirstream_http_connections_open").decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection (reset before it was accepted) are skipped; the
/// others, such as running out of file descriptors, would fail again at
/// once, so the loop pauses instead of spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    warn!(error = %e, "accepting a connection failed; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
