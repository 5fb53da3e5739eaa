//! Tenant administration: plain JSON (not FHIR resources); errors are still
//! OperationOutcomes. Every call needs the `fhirstream/admin` scope.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use command::tenants;
use projector::TenantState;
use schemas::subject::tenant_filter;
use schemas::{TenantConfig, TenantId};

use super::auth::Caller;
use super::{AdminDeps, ApiError, SharedState};

/// How long a deletion waits for the read models to be purged.
const PURGE_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTenant {
    id: String,
    name: Option<String>,
    #[serde(default)]
    config: TenantConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantUpdate {
    name: String,
    #[serde(default)]
    config: TenantConfig,
}

/// What a deletion removed, and the proof that nothing is left.
#[derive(Debug, Serialize)]
pub(super) struct Deletion {
    tenant: TenantId,
    events_purged: u64,
    events_remaining: u64,
    rows_remaining: i64,
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid tenant document: {e}")))
}

fn parse_tenant(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|_| ApiError::NotFound("unknown tenant".into()))
}

/// `POST /admin/tenants`
pub(super) async fn create(
    State(state): State<SharedState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let new: NewTenant = parse_body(&body)?;
    let tenant = TenantId::parse_new(&new.id).map_err(|e| ApiError::Invalid(e.to_string(), Some("id".into())))?;
    new.config.validate().map_err(|e| ApiError::Invalid(e, Some("config".into())))?;
    let commands = state.commands()?;
    if state.tenants.get(&tenant).await?.is_some() {
        return Err(ApiError::Conflict(format!("tenant '{tenant}' already exists")));
    }
    // Stragglers of an earlier tenant of the same name (a write that slipped
    // past its deletion) must not resurface. Everything at or below the
    // stream's current head predates this creation, so it can go; writes to
    // the new tenant can only come after its creation event, above the head.
    let head = commands.store().last_resource_seq().await?;
    commands.store().purge_subjects_up_to(&tenant_filter(&tenant), head).await?;
    if let Some(admin) = &state.admin {
        let mut conn = admin.pool.acquire().await.map_err(|e| ApiError::Internal(e.into()))?;
        projector::tenants::purge_rows_up_to(&mut conn, &tenant, head)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
    }
    let name = new.name.unwrap_or_else(|| new.id.clone());
    let written = tenants::create(commands.store(), tenant.clone(), name, new.config, caller.actor).await?;
    state.tenants.observe(written.seq, written.event);
    let created = state.tenants.get(&tenant).await?.ok_or_else(|| anyhow::anyhow!("tenant vanished after creation"))?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /admin/tenants`
pub(super) async fn list(State(state): State<SharedState>, caller: Caller) -> Result<Json<Vec<TenantState>>, ApiError> {
    caller.require_admin()?;
    Ok(Json(state.tenants.list()))
}

/// `GET /admin/tenants/{tenant}`
pub(super) async fn get(
    State(state): State<SharedState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<TenantState>, ApiError> {
    caller.require_admin()?;
    let tenant = parse_tenant(&raw)?;
    state.tenants.get(&tenant).await?.map(Json).ok_or_else(|| ApiError::NotFound("unknown tenant".into()))
}

/// `PUT /admin/tenants/{tenant}`: replaces name and configuration.
pub(super) async fn configure(
    State(state): State<SharedState>,
    caller: Caller,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<TenantState>, ApiError> {
    caller.require_admin()?;
    let tenant = parse_tenant(&raw)?;
    let update: TenantUpdate = parse_body(&body)?;
    update.config.validate().map_err(|e| ApiError::Invalid(e, Some("config".into())))?;
    let written =
        tenants::configure(state.commands()?.store(), tenant.clone(), update.name, update.config, caller.actor).await?;
    state.tenants.observe(written.seq, written.event);
    let now = state.tenants.get(&tenant).await?.ok_or_else(|| ApiError::NotFound("unknown tenant".into()))?;
    Ok(Json(now))
}

/// `DELETE /admin/tenants/{tenant}`: records the deletion, purges the
/// tenant's events from the stream and its rows from the read models, and
/// answers with the proof that none are left.
pub(super) async fn delete(
    State(state): State<SharedState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<Deletion>, ApiError> {
    caller.require_admin()?;
    let tenant = parse_tenant(&raw)?;
    let store = state.commands()?.store();
    let admin: &AdminDeps =
        state.admin.as_ref().ok_or_else(|| ApiError::MethodNotAllowed("this node cannot delete tenants".into()))?;
    let written = tenants::delete(store, tenant.clone(), caller.actor).await?;
    state.tenants.observe(written.seq, written.event);
    let filter = tenant_filter(&tenant);
    let mut events_purged = store.purge_subjects(&filter).await?;
    if !admin.tenant_applied.wait_for(written.seq, PURGE_WAIT).await {
        return Err(ApiError::Unavailable("the tenant projection did not apply the deletion in time".into()));
    }
    // A write that passed its tenant check just before the deletion may
    // have landed after the first purge: purge once more, then prove it.
    events_purged += store.purge_subjects(&filter).await?;
    let mut conn = admin.pool.acquire().await.map_err(|e| ApiError::Internal(e.into()))?;
    projector::tenants::purge_rows(&mut conn, &tenant).await.map_err(|e| ApiError::Internal(e.into()))?;
    let events_remaining = store.count_subjects(&filter).await?;
    let rows_remaining =
        projector::tenants::count_rows(&admin.pool, &tenant).await.map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(Deletion { tenant, events_purged, events_remaining, rows_remaining }))
}
