//! Keeping the planner's statistics current as the read models grow.
//!
//! PostgreSQL plans a search from statistics kept per partition, and a
//! tenant's rows share one hash partition per table with other tenants.
//! Until a partition is analyzed after a tenant's first import, that
//! tenant is planned from its neighbours' statistics (or none): a date
//! search on a fresh 10-bundle tenant ran at 5 requests/s, and at 192/s
//! after an ANALYZE (issue #17). Autovacuum may take a minute or more to
//! get there. So the projector refreshes statistics itself:
//! * the whole read model after a large burst settles, or during a very
//!   long one (as it always did);
//! * the partitions holding a tenant that received at least
//!   [`TENANT_EVENTS`] events since they were last refreshed, as soon as
//!   the projector has caught up, beside the projector: refreshing one
//!   tenant's partitions must not hold back other tenants' events.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tracing::{debug, warn};

use crate::apply::Sequenced;
use crate::store;

/// After a burst of this many events the projector refreshes the planner's
/// statistics itself: autovacuum may wait a minute or more, and until then
/// a freshly loaded tenant's searches are planned as if its tables were
/// empty (seen here: a chained search over 35k resources ran for minutes
/// before ANALYZE and in 5 ms after it).
pub(crate) const ANALYZE_AFTER_EVENTS: u64 = 5_000;
/// ...but not more often than this, so a steady trickle that keeps
/// settling does not analyze every few seconds...
pub(crate) const ANALYZE_SETTLED_EVERY: Duration = Duration::from_secs(60);
/// ...or, while a long burst goes on, after this many.
pub(crate) const ANALYZE_DURING_BURST: u64 = 500_000;

/// Whether (and how) to refresh statistics after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Analyze {
    No,
    /// The burst has settled: refresh before acking the batch, so a client
    /// that waits until the projector has caught up also finds its searches
    /// planned with the new rows (searches right after an import otherwise
    /// raced the refresh and could run into the statement timeout).
    BeforeAck,
    /// A long burst goes on: refresh beside it.
    Beside,
}

/// Decides the refresh from the events applied since the last one, the
/// events still pending, and the time since the last settled refresh.
fn analyze_due(since: u64, pending: u64, since_settled: Option<Duration>) -> Analyze {
    if since >= ANALYZE_DURING_BURST {
        Analyze::Beside
    } else if since >= ANALYZE_AFTER_EVENTS && pending == 0 && since_settled.is_none_or(|d| d >= ANALYZE_SETTLED_EVERY)
    {
        Analyze::BeforeAck
    } else {
        Analyze::No
    }
}

/// Events of one tenant after which its partitions are refreshed once the
/// projector has caught up: a first import of a few patients is enough to
/// change its plans, and refreshing one partition samples at most ~30,000
/// rows whatever its size, so it costs tens of milliseconds.
pub(crate) const TENANT_EVENTS: u64 = 200;

/// Events per tenant in a batch.
pub(crate) fn tenant_counts(events: &[Sequenced]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for s in events {
        *counts.entry(s.event.tenant.as_str().to_owned()).or_default() += 1;
    }
    counts
}

/// The tenants whose partitions are due, taken out of `by_tenant`: none
/// while events are still pending (the burst goes on).
fn tenants_due(by_tenant: &mut HashMap<String, u64>, pending: u64) -> Vec<String> {
    if pending > 0 {
        return Vec::new();
    }
    let due: Vec<String> = by_tenant.iter().filter(|(_, n)| **n >= TENANT_EVENTS).map(|(t, _)| t.clone()).collect();
    for t in &due {
        by_tenant.remove(t);
    }
    due
}

/// What the projector has applied since statistics were last refreshed.
#[derive(Default)]
pub(crate) struct Statistics {
    state: Mutex<State>,
    /// A refresh of tenant partitions is running (one at a time).
    refreshing_tenants: std::sync::Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    /// Events since the whole read model was refreshed.
    since: u64,
    /// When it was last refreshed after a settled burst.
    last_settled: Option<Instant>,
    /// Events per tenant since its partitions were refreshed.
    by_tenant: HashMap<String, u64>,
}

impl Statistics {
    /// Counts a batch and refreshes what is due: the whole read model
    /// before the batch is acked (or beside a long burst), a tenant's
    /// partitions beside the projector.
    pub(crate) async fn after_batch(&self, pool: &PgPool, tenants: HashMap<String, u64>, applied: u64, pending: u64) {
        let (whole, tenants) = {
            let Ok(mut st) = self.state.lock() else { return };
            st.since += applied;
            for (t, n) in tenants {
                *st.by_tenant.entry(t).or_default() += n;
            }
            let whole = analyze_due(st.since, pending, st.last_settled.map(|t| t.elapsed()));
            if whole != Analyze::No {
                st.since = 0;
                st.by_tenant.clear();
                if whole == Analyze::BeforeAck {
                    st.last_settled = Some(Instant::now());
                }
                (whole, Vec::new())
            } else if self.refreshing_tenants.load(Ordering::Acquire) {
                (whole, Vec::new())
            } else {
                (whole, tenants_due(&mut st.by_tenant, pending))
            }
        };
        match whole {
            Analyze::BeforeAck => refresh_all(pool.clone()).await,
            Analyze::Beside => drop(tokio::spawn(refresh_all(pool.clone()))),
            Analyze::No if !tenants.is_empty() => {
                self.refreshing_tenants.store(true, Ordering::Release);
                let (pool, flag) = (pool.clone(), self.refreshing_tenants.clone());
                tokio::spawn(async move {
                    refresh_tenants(&pool, &tenants).await;
                    flag.store(false, Ordering::Release);
                });
            }
            Analyze::No => {}
        }
    }
}

async fn refresh_all(pool: PgPool) {
    let started = Instant::now();
    match tokio::time::timeout(Duration::from_secs(120), store::analyze(&pool)).await {
        Ok(Ok(())) => debug!(elapsed_ms = started.elapsed().as_millis() as u64, "read-model statistics refreshed"),
        Ok(Err(e)) => warn!(error = %e, "refreshing read-model statistics failed"),
        Err(_) => warn!("refreshing read-model statistics took over 120 s; gave up"),
    }
}

async fn refresh_tenants(pool: &PgPool, tenants: &[String]) {
    let started = Instant::now();
    match tokio::time::timeout(Duration::from_secs(60), store::analyze_tenants(pool, tenants)).await {
        Ok(Ok(n)) => debug!(
            partitions = n,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "statistics of freshly written tenants refreshed"
        ),
        Ok(Err(e)) => warn!(error = %e, "refreshing a tenant's statistics failed"),
        Err(_) => warn!("refreshing a tenant's statistics took over 60 s; gave up"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_are_refreshed_before_the_ack_once_a_burst_settles_and_beside_a_long_one() {
        assert_eq!(analyze_due(4_999, 0, None), Analyze::No);
        assert_eq!(analyze_due(5_000, 0, None), Analyze::BeforeAck);
        assert_eq!(analyze_due(5_000, 10, None), Analyze::No, "not while events are pending");
        assert_eq!(analyze_due(9_000, 0, Some(Duration::from_secs(5))), Analyze::No, "not every few seconds");
        assert_eq!(analyze_due(9_000, 0, Some(ANALYZE_SETTLED_EVERY)), Analyze::BeforeAck);
        assert_eq!(analyze_due(ANALYZE_DURING_BURST, 1_000, None), Analyze::Beside);
    }

    #[test]
    fn a_tenant_is_due_once_it_has_enough_events_and_the_projector_has_caught_up() {
        let mut by = HashMap::from([("big".to_owned(), TENANT_EVENTS), ("small".to_owned(), TENANT_EVENTS - 1)]);
        assert!(tenants_due(&mut by, 5).is_empty(), "not while the burst goes on");
        assert_eq!(tenants_due(&mut by, 0), vec!["big".to_owned()]);
        assert_eq!(by.get("small"), Some(&(TENANT_EVENTS - 1)), "the other keeps counting");
        assert!(!by.contains_key("big"), "counting starts again");
    }
}
