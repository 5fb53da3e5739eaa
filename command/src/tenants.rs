//! Tenant lifecycle commands: the tenant registry is event-sourced on
//! `fhirstream.tenants.{tenant}`, one subject per tenant.

use anyhow::Context as _;

use schemas::subject::tenant_subject;
use schemas::{Actor, TenantConfig, TenantEvent, TenantEventOp, TenantId};

use crate::CommandError;
use crate::store::EventStore;

/// A tenant event as appended, with its stream sequence.
#[derive(Debug, Clone)]
pub struct TenantWritten {
    pub seq: u64,
    pub event: TenantEvent,
}

/// Creates a tenant. A deleted tenant's name may be used again.
pub async fn create(
    store: &EventStore,
    tenant: TenantId,
    name: String,
    config: TenantConfig,
    actor: Actor,
) -> Result<TenantWritten, CommandError> {
    let last = last(store, &tenant).await?;
    if let Some((_, ev)) = &last
        && ev.op != TenantEventOp::Deleted
    {
        return Err(CommandError::TenantExists(tenant.to_string()));
    }
    let expected = last.as_ref().map_or(0, |(seq, _)| *seq);
    let event = TenantEvent::created(tenant, actor, name, config, last.is_some());
    append(store, event, expected).await
}

/// Replaces a live tenant's name and configuration.
pub async fn configure(
    store: &EventStore,
    tenant: TenantId,
    name: String,
    config: TenantConfig,
    actor: Actor,
) -> Result<TenantWritten, CommandError> {
    let (seq, last) = match last(store, &tenant).await? {
        Some((seq, ev)) if ev.op != TenantEventOp::Deleted => (seq, ev),
        _ => return Err(CommandError::TenantNotFound(tenant.to_string())),
    };
    let mut event = TenantEvent::new(tenant, TenantEventOp::Configured, actor, name, config);
    // Every event names its incarnation, so the last one alone says it.
    event.incarnation = last.incarnation;
    append(store, event, seq).await
}

/// Records a live tenant's deletion. Purging its events and rows is the
/// caller's next step (the event comes first, so a crash in between leaves
/// a deleted tenant whose purge can simply be repeated).
pub async fn delete(store: &EventStore, tenant: TenantId, actor: Actor) -> Result<TenantWritten, CommandError> {
    let (seq, last) = match last(store, &tenant).await? {
        Some((seq, ev)) if ev.op != TenantEventOp::Deleted => (seq, ev),
        _ => return Err(CommandError::TenantNotFound(tenant.to_string())),
    };
    let mut event = TenantEvent::new(tenant, TenantEventOp::Deleted, actor, last.name, last.config);
    event.incarnation = last.incarnation;
    append(store, event, seq).await
}

async fn last(store: &EventStore, tenant: &TenantId) -> Result<Option<(u64, TenantEvent)>, CommandError> {
    let Some(last) = store.last_tenant_event(&tenant_subject(tenant)).await? else {
        return Ok(None);
    };
    let event: TenantEvent = serde_json::from_slice(&last.payload).context("decode the tenant's last event")?;
    Ok(Some((last.seq, event)))
}

async fn append(store: &EventStore, event: TenantEvent, expected: u64) -> Result<TenantWritten, CommandError> {
    let payload = serde_json::to_vec(&event).context("serialize the tenant event")?;
    let seq = store.append_tenant(tenant_subject(&event.tenant), event.event_id, expected, payload).await?;
    Ok(TenantWritten { seq, event })
}
