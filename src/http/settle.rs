//! Read-your-writes: a write answers once a read of what it wrote sees it.
//!
//! The write's events are on the stream when the handler gets here. Rather
//! than wait for the projector to reach them (behind every other writer's
//! batch, of every tenant), the handler applies them itself with the
//! projector's own batch function, in one transaction on the writer pool.
//! The function is order-independent (migration 0009): when the projector
//! gets to the same events it finds their versions current and changes
//! nothing; an older version it applies later never overwrites a newer one.
//! A search right after sees the write too: its index rows are written in
//! the same transaction. When the direct apply fails (PostgreSQL away, data
//! it refuses), the handler falls back to waiting for the projector, which
//! records a refusal as it always does.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use sqlx::PgPool;
use tracing::debug;

use command::AppliedWatch;
use command::Written;
use projector::apply::Sequenced;
use projector::store::{self, Checkpoint};

use super::SharedState;

/// The header a client sends to opt out of read-your-writes.
pub(super) const CONSISTENCY_HEADER: &str = "x-fhirstream-consistency";

/// How a write reaches read-your-writes.
#[derive(Clone)]
pub struct ReadYourWrites {
    /// The projector's announced checkpoint.
    pub watch: AppliedWatch,
    /// The writer pool, when writes apply their own events (the default).
    pub direct: Option<PgPool>,
}

/// Makes `written` visible to reads unless the client opted out. The write
/// is durable either way; the returned header value says which it is:
/// `applied`, `pending` (not yet visible after the timeout) or `skipped`.
pub(super) async fn settle(state: &SharedState, headers: &HeaderMap, written: &[&Written]) -> HeaderValue {
    let eventual = headers
        .get(CONSISTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("eventual"));
    let Some(ryw) = state.applied.as_ref().filter(|_| !eventual) else {
        return HeaderValue::from_static("skipped");
    };
    let Some(seq) = written.iter().map(|w| w.seq).max() else {
        return HeaderValue::from_static("skipped");
    };
    let timeout = state.settings.read_your_writes_timeout;
    if ryw.watch.current() >= seq {
        return HeaderValue::from_static("applied");
    }
    if let Some(pool) = &ryw.direct
        && apply_directly(pool, written, timeout).await
    {
        return HeaderValue::from_static("applied");
    }
    if ryw.watch.wait_for(seq, timeout).await {
        HeaderValue::from_static("applied")
    } else {
        HeaderValue::from_static("pending")
    }
}

/// Applies the written events in one transaction; false if that failed.
async fn apply_directly(pool: &PgPool, written: &[&Written], timeout: Duration) -> bool {
    let events: Vec<Sequenced> = written.iter().map(|w| Sequenced::new(w.seq, w.event.clone())).collect();
    let at = Checkpoint::Outside { label: "direct" };
    match tokio::time::timeout(timeout, store::apply_batch(pool, at, &events, 0, 0)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            debug!(error = %e, "applying a write directly failed; waiting for the projector");
            false
        }
        Err(_) => false,
    }
}
