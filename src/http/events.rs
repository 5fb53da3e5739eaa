//! The change feed over Server-Sent Events, `GET /fhir/{tenant}/$events`,
//! for consumers without NATS: the tenant's resource events from JetStream
//! through an ordered (ephemeral, ack-free) consumer filtered to the
//! tenant's subjects. Each message's `id:` is the stream sequence, so a
//! client resumes after it with `Last-Event-ID` (or `?since=`) and gets
//! every later event once, in stream order.

use std::convert::Infallible;
use std::time::Duration;

use async_nats::jetstream::consumer;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::IntoResponse as _;
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::StreamExt as _;

use schemas::ResourceType;
use schemas::genuine::{genuine_resource_event, op_name};
use schemas::quota::effective_cap;
use schemas::scope::Interaction;

use super::access::bulk_types;
use super::auth::Caller;
use super::extract::InTenant;
use super::search::query_pairs;
use super::{ApiError, SharedState};

/// A comment line this often keeps proxies from closing an idle feed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Feeds open at once in this process. A feed outlives its request (the
/// request limit's permit is returned when the response starts) and holds
/// a JetStream consumer, so it is bounded on its own.
const MAX_FEEDS: usize = 512;
static OPEN_FEEDS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_FEEDS);

/// `GET /fhir/{tenant}/$events[?since=N][&_type=A,B]`, or `Last-Event-ID: N`.
/// Without a position the feed starts with the next event written.
pub(super) async fn feed(
    State(state): State<SharedState>,
    t: InTenant,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let mut named: Vec<ResourceType> = Vec::new();
    let mut since: Option<u64> = None;
    let position = |v: &str, what: &str| {
        v.trim().parse::<u64>().map_err(|_| ApiError::invalid(format!("{what} must be a stream sequence number")))
    };
    for (k, v) in query_pairs(uri.query().unwrap_or_default().as_bytes()) {
        match k.as_str() {
            "since" => since = Some(position(&v, "since")?),
            "_type" => {
                for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let rt = ResourceType::parse(name).map_err(|e| ApiError::invalid(format!("_type: {e}")))?;
                    named.push(rt);
                }
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "$events parameter '{}' is not supported (supported: since, _type)",
                    other.chars().take(80).collect::<String>()
                )));
            }
        }
    }
    // The header is what an EventSource sends when it reconnects: it wins.
    if let Some(v) = headers.get("last-event-id") {
        since = Some(position(v.to_str().unwrap_or_default(), "Last-Event-ID")?);
    }
    // The feed delivers every change of its types, like a search does:
    // each needs read and search scope and must be enabled for the tenant.
    // Named types are intersected with those; nothing left is a refusal.
    let readable = bulk_types(
        &named,
        |rt| t.state.config.allows(rt.as_str()),
        |rt| caller.allows(rt, Interaction::Read) && caller.allows(rt, Interaction::Search),
    )
    .map_err(ApiError::Forbidden)?;
    let feeds = &state.settings.limits.tenant_feeds;
    let cap = effective_cap(feeds.cap(), t.state.config.quotas.and_then(|q| q.feeds));
    let share = feeds.try_take_within(&t.tenant, cap).ok_or_else(|| {
        ApiError::TooManyRequests(format!(
            "this tenant has {cap} change feeds open on this node; close one or retry later"
        ))
    })?;
    let permit = OPEN_FEEDS
        .try_acquire()
        .map_err(|_| ApiError::Overloaded(format!("{MAX_FEEDS} change feeds are open on this node; retry shortly")))?;
    let ops = state.ops.as_ref().ok_or_else(|| ApiError::MethodNotAllowed("this node serves no change feed".into()))?;
    // Four tokens: resource events, never the five-token identifier claims.
    let filter_subject = match readable.as_slice() {
        [one] => format!("fhir.{}.{one}.*", t.tenant),
        _ => format!("fhir.{}.*.*", t.tenant),
    };
    let deliver_policy = match since {
        None => consumer::DeliverPolicy::New,
        Some(n) => consumer::DeliverPolicy::ByStartSequence { start_sequence: n.saturating_add(1) },
    };
    let unavailable = |e: &dyn std::fmt::Display| ApiError::Unavailable(format!("open the change feed: {e}"));
    let stream = ops.js.get_stream(&ops.stream).await.map_err(|e| unavailable(&e))?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig { filter_subject, deliver_policy, ..Default::default() })
        .await
        .map_err(|e| unavailable(&e))?;
    let messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
    let tenant = t.tenant.clone();
    let shutdown = state.shutdown.clone();
    let events = messages
        // A broken consumer ends the feed; the client resumes from its
        // last id, so nothing is lost.
        .take_while(|m| std::future::ready(m.is_ok()))
        .filter_map(move |m| {
            let event = m.ok().and_then(|msg| {
                let seq = msg.info().ok()?.stream_sequence;
                let header = |n: &str| msg.headers.as_ref().and_then(|h| h.get(n)).map(|v| v.as_str());
                // Only fhirstream's own events reach a client: anything else
                // placed on the tenant's subjects is skipped and counted.
                let event = match genuine_resource_event(&msg.subject, header, &msg.payload) {
                    Ok(event) => event,
                    Err(why) => {
                        tracing::warn!(reader = "feed", subject = %msg.subject, seq, why = %why,
                            "message that is not a genuine fhirstream event skipped");
                        metrics::counter!("fhirstream_stream_messages_skipped_total",
                            "reader" => "feed", "reason" => why.reason())
                        .increment(1);
                        return None;
                    }
                };
                // Defence in depth: the filter already pins the tenant.
                if event.tenant != tenant || !readable.contains(&event.resource_type) {
                    return None;
                }
                let op = op_name(event.op);
                let data = std::str::from_utf8(&msg.payload).ok()?.to_owned();
                Some(Ok::<_, Infallible>(Event::default().id(seq.to_string()).event(op).data(data)))
            });
            std::future::ready(event)
        })
        // Ends with the server, so a graceful shutdown is not held open;
        // the permit goes with the feed.
        .take_until(async move {
            shutdown.cancelled().await;
            drop(permit);
            drop(share);
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")).into_response())
}
