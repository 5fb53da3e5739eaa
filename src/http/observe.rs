//! What operators look at: request metrics, `/metrics` in Prometheus text
//! format, and `/ready`. Labels are route templates and status codes, never
//! tenant names or ids, so cardinality stays fixed and nothing about a
//! tenant leaks through monitoring.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::SharedState;

/// Records every request's count and latency by method, route and status.
pub(super) async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("fhirstream_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("fhirstream_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    res
}

/// `GET /metrics`
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics", security(()), responses(super::openapi::OpsResponses))]
pub(super) async fn metrics(State(state): State<SharedState>) -> Response {
    let Some(ops) = &state.ops else {
        return (StatusCode::NOT_FOUND, "metrics are not enabled").into_response();
    };
    for (name, pool) in [("writer", Some(&ops.pool)), ("reader", state.queries.as_ref().map(|q| q.pool()))] {
        if let Some(pool) = pool {
            let (size, idle) = (pool.size() as f64, pool.num_idle() as f64);
            metrics::gauge!("fhirstream_db_pool_connections", "pool" => name, "state" => "open").set(size);
            metrics::gauge!("fhirstream_db_pool_connections", "pool" => name, "state" => "idle").set(idle);
        }
    }
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ops.metrics.as_ref().map(|m| m.render()).unwrap_or_default(),
    )
        .into_response()
}

/// `GET /ready`: NATS with JetStream, PostgreSQL with current migrations,
/// and the projector within its lag bound. 200 or 503, with each check.
#[utoipa::path(get, path = "/ready", tag = "operations", operation_id = "ready", security(()), responses(super::openapi::OpsResponses))]
pub(super) async fn ready(State(state): State<SharedState>) -> Response {
    let Some(ops) = &state.ops else {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not ready"}))).into_response();
    };
    let bound = Duration::from_secs(2);
    let nats = matches!(ops.nats.connection_state(), async_nats::connection::State::Connected);
    let jetstream = nats && matches!(tokio::time::timeout(bound, ops.js.query_account()).await, Ok(Ok(_)));
    let postgres = matches!(
        tokio::time::timeout(bound, sqlx::query_scalar::<_, i32>("select 1").fetch_one(&ops.pool)).await,
        Ok(Ok(1))
    );
    let migrations = postgres
        && matches!(tokio::time::timeout(bound, projector::migrate::is_current(&ops.pool)).await, Ok(Ok(true)));
    let lag = if jetstream { projector_lag(ops, bound).await } else { None };
    let caught_up = lag.is_some_and(|l| l <= ops.max_lag_events);
    let ok = nats && jetstream && postgres && migrations && caught_up;
    let body: Value = json!({
        "status": if ok { "ready" } else { "not ready" },
        "checks": {
            "nats": nats,
            "jetstream": jetstream,
            "postgres": postgres,
            "migrations": migrations,
            "projector_lag_events": lag,
            "projector_lag_bound": ops.max_lag_events,
        }
    });
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// Events the projector has not applied yet: its consumer's undelivered
/// plus unacknowledged messages.
async fn projector_lag(ops: &super::Ops, bound: Duration) -> Option<u64> {
    let info = tokio::time::timeout(bound, async {
        let stream = ops.js.get_stream(&ops.stream).await.ok()?;
        stream.consumer_info(format!("projector-{}", ops.projector)).await.ok()
    })
    .await
    .ok()
    .flatten()?;
    Some(info.num_pending + info.num_ack_pending as u64)
}
