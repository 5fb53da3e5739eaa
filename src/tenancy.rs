//! Tenant lifecycle steps that span the stream and the read models, shared
//! by the admin API and the CLI so both create and delete tenants the same
//! way.

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use command::tenants::{self, TenantWritten};
use command::{AppliedWatch, CommandError, EventStore};
use schemas::subject::tenant_filter;
use schemas::{Actor, TenantConfig, TenantId};

/// How long a deletion waits for the tenant projection to purge the rows.
pub const PURGE_WAIT: Duration = Duration::from_secs(30);

/// Why a lifecycle step failed.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("the read-model database failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the tenant projection did not apply the deletion within {0:?}; run the deletion again")]
    ProjectionTimeout(Duration),
    #[error("the tenant's stream consumers could not be deleted: {0}; run the deletion again")]
    Consumers(String),
}

/// What a deletion removed, and the proof that nothing is left.
#[derive(Debug, Serialize)]
pub struct Deletion {
    pub tenant: TenantId,
    pub events_purged: u64,
    pub events_remaining: u64,
    /// Read-model rows, refused-event rows and snapshots left.
    pub rows_remaining: i64,
    /// Analytics consumers (`{tenant}_{name}`) removed from the stream.
    pub consumers_deleted: u64,
}

/// Creates a tenant. Stragglers of an earlier tenant of the same name (a
/// write that slipped past its deletion) must not resurface: everything at
/// or below the stream's current head predates this creation and is purged
/// first; writes to the new tenant can only come after its creation event.
pub async fn create(
    store: &EventStore,
    pool: Option<&PgPool>,
    tenant: TenantId,
    name: String,
    config: TenantConfig,
    actor: Actor,
) -> Result<TenantWritten, TenancyError> {
    let head = store.last_resource_seq().await?;
    store.purge_subjects_up_to(&tenant_filter(&tenant), head).await?;
    if let Some(pool) = pool {
        let mut conn = pool.acquire().await?;
        projector::tenants::purge_rows_up_to(&mut conn, &tenant, head).await?;
    }
    Ok(tenants::create(store, tenant, name, config, actor).await?)
}

/// Records a tenant's deletion, purges its events and rows, purges again
/// for any write that passed its tenant check just before, and proves the
/// result by counting what is left.
pub async fn delete(
    store: &EventStore,
    pool: &PgPool,
    tenant_applied: &AppliedWatch,
    tenant: TenantId,
    actor: Actor,
) -> Result<(Deletion, TenantWritten), TenancyError> {
    let written = tenants::delete(store, tenant.clone(), actor).await?;
    let filter = tenant_filter(&tenant);
    let mut events_purged = store.purge_subjects(&filter).await?;
    if !tenant_applied.wait_for(written.seq, PURGE_WAIT).await {
        return Err(TenancyError::ProjectionTimeout(PURGE_WAIT));
    }
    events_purged += store.purge_subjects(&filter).await?;
    let mut conn = pool.acquire().await?;
    projector::tenants::purge_rows(&mut conn, &tenant).await?;
    let consumers_deleted = delete_consumers(store, &tenant).await?;
    let events_remaining = store.count_subjects(&filter).await?;
    let rows_remaining = projector::tenants::count_rows(pool, &tenant).await?
        + projector::tenants::count_leftovers(pool, &tenant).await?;
    Ok((Deletion { tenant, events_purged, events_remaining, rows_remaining, consumers_deleted }, written))
}

/// Deletes the tenant's analytics consumers on the resource stream
/// (`fhirstream nats-auth` names them `{tenant}_{name}`, and tenant names
/// never contain `_`, so the prefix is the tenant's alone). A consumer
/// left behind would keep its position and hand a re-created tenant's
/// client a cursor from the previous life.
async fn delete_consumers(store: &EventStore, tenant: &TenantId) -> Result<u64, TenancyError> {
    use futures::TryStreamExt as _;
    let stream = store.resource_stream();
    let prefix = format!("{tenant}_");
    let names: Vec<String> =
        stream.consumer_names().try_collect().await.map_err(|e| TenancyError::Consumers(e.to_string()))?;
    let mut deleted = 0;
    for name in names.into_iter().filter(|n| n.starts_with(&prefix)) {
        stream.delete_consumer(&name).await.map_err(|e| TenancyError::Consumers(e.to_string()))?;
        deleted += 1;
    }
    Ok(deleted)
}
