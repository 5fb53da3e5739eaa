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
    let (expected, last) = last(store, &tenant).await?;
    if let Some(ev) = &last
        && ev.op != TenantEventOp::Deleted
    {
        return Err(CommandError::TenantExists(tenant.to_string()));
    }
    // A genuine earlier event (a deleted incarnation) makes this a re-creation.
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
        (seq, Some(ev)) if ev.op != TenantEventOp::Deleted => (seq, ev),
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
        (seq, Some(ev)) if ev.op != TenantEventOp::Deleted => (seq, ev),
        _ => return Err(CommandError::TenantNotFound(tenant.to_string())),
    };
    let mut event = TenantEvent::new(tenant, TenantEventOp::Deleted, actor, last.name, last.config);
    event.incarnation = last.incarnation;
    append(store, event, seq).await
}

/// The tenant subject's last sequence (what the next event follows) and
/// its last genuine event; messages that are not genuine are skipped.
async fn last(store: &EventStore, tenant: &TenantId) -> Result<(u64, Option<TenantEvent>), CommandError> {
    let tail = store.tenant_tail(&tenant_subject(tenant)).await?;
    let Some(last) = tail.last else {
        return Ok((tail.seq, None));
    };
    let event: TenantEvent = serde_json::from_slice(&last.payload).context("decode the tenant's last event")?;
    Ok((tail.seq, Some(event)))
}

async fn append(store: &EventStore, event: TenantEvent, expected: u64) -> Result<TenantWritten, CommandError> {
    let payload = serde_json::to_vec(&event).context("serialize the tenant event")?;
    let seq = store.append_tenant(tenant_subject(&event.tenant), event.event_id, expected, payload).await?;
    Ok(TenantWritten { seq, event })
}
