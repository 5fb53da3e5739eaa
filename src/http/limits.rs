//! Bounds on what one request may cost before a handler runs: the size of
//! its URL and headers, and how many requests are handled at once. Every
//! refusal is an OperationOutcome like any other error.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::Semaphore;

use schemas::TenantId;
use schemas::quota::{effective_cap, usage_bucket};

use super::shares::TenantShare;
use super::{ApiError, SharedState};

/// The request bounds of a server.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub max_url_bytes: usize,
    pub max_header_bytes: usize,
    /// Permits for requests in flight; `None`: no limit.
    pub in_flight: Option<Arc<Semaphore>>,
    /// One tenant's share of requests in flight (0: no cap).
    pub tenant_in_flight: Arc<TenantShare>,
    /// One tenant's share of open change feeds (0: no cap).
    pub tenant_feeds: Arc<TenantShare>,
    /// Hashed buckets of per-tenant usage metrics (0: off).
    pub usage_buckets: u32,
}

impl RequestLimits {
    /// `max_concurrent` 0 means no limit.
    pub fn new(max_url_bytes: usize, max_header_bytes: usize, max_concurrent: usize) -> Self {
        let in_flight = (max_concurrent > 0).then(|| Arc::new(Semaphore::new(max_concurrent)));
        Self {
            max_url_bytes,
            max_header_bytes,
            in_flight,
            tenant_in_flight: TenantShare::new(0),
            tenant_feeds: TenantShare::new(0),
            usage_buckets: 0,
        }
    }

    /// The same bounds, counting usage per tenant in `buckets` hashed
    /// buckets (0: off).
    pub fn with_usage_buckets(mut self, buckets: u32) -> Self {
        self.usage_buckets = buckets;
        self
    }

    /// The same bounds with per-tenant shares of requests and feeds.
    pub fn with_tenant_shares(mut self, requests: usize, feeds: usize) -> Self {
        self.tenant_in_flight = TenantShare::new(requests);
        self.tenant_feeds = TenantShare::new(feeds);
        self
    }
}

/// The tenant a request's URL addresses (`/fhir/{tenant}/...`), if any.
fn tenant_of(path: &str) -> Option<TenantId> {
    let rest = path.strip_prefix("/fhir/")?;
    TenantId::parse(rest.split('/').next()?).ok()
}

/// Operations endpoints are never shed: a load balancer or orchestrator
/// that cannot reach them under load would restart a busy server.
fn exempt(path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/metrics")
}

/// Middleware: 414 for a long URL, 431 for large headers, 503 when the
/// server already handles as many requests as it may. Shedding at once,
/// rather than queueing, keeps memory and latency bounded under overload
/// and tells clients to come back (`Retry-After`).
pub(super) async fn bound(State(state): State<SharedState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let limits = &state.settings.limits;
    let url = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if url > limits.max_url_bytes {
        return Err(ApiError::UriTooLong(format!(
            "the request URL has {url} bytes; at most {} are accepted (send long searches as POST _search)",
            limits.max_url_bytes
        )));
    }
    let headers: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if headers > limits.max_header_bytes {
        return Err(ApiError::HeadersTooLarge(format!(
            "the request headers have {headers} bytes; at most {} are accepted",
            limits.max_header_bytes
        )));
    }
    let _permit = match &limits.in_flight {
        Some(sem) if !exempt(req.uri().path()) => Some(sem.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("fhirstream_http_requests_shed_total").increment(1);
            ApiError::Overloaded("the server is handling as many requests as it may; retry shortly".into())
        })?),
        _ => None,
    };
    // The tenant's share is taken after the node's: a tenant refused here
    // costs the node nothing, and every other tenant still gets in.
    let tenant = tenant_of(req.uri().path());
    let bucket = tenant.as_ref().and_then(|t| usage_bucket(t, limits.usage_buckets)).map(|b| format!("b{b}"));
    let _share = match tenant {
        Some(t) => {
            let own = state.tenants.known(&t).and_then(|s| s.config.quotas).and_then(|q| q.concurrent_requests);
            let cap = effective_cap(limits.tenant_in_flight.cap(), own);
            Some(limits.tenant_in_flight.try_take_within(&t, cap).ok_or_else(|| {
                metrics::counter!("fhirstream_http_requests_throttled_total", "share" => "tenant").increment(1);
                if let Some(b) = &bucket {
                    metrics::counter!("fhirstream_tenant_usage_throttled_total", "bucket" => b.clone()).increment(1);
                }
                ApiError::TooManyRequests(format!(
                    "this tenant already has {cap} requests in flight on this node; retry shortly"
                ))
            })?)
        }
        None => None,
    };
    let Some(bucket) = bucket else { return Ok(next.run(req).await) };
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    let class = match res.status().as_u16() {
        500.. => "5xx",
        400.. => "4xx",
        _ => "2xx",
    };
    metrics::counter!("fhirstream_tenant_usage_requests_total", "bucket" => bucket.clone(), "class" => class)
        .increment(1);
    metrics::histogram!("fhirstream_tenant_usage_request_seconds", "bucket" => bucket)
        .record(started.elapsed().as_secs_f64());
    Ok(res)
}
