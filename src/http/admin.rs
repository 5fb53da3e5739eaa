//! Tenant administration: plain JSON (not FHIR resources); errors are still
//! OperationOutcomes. Every call needs the `fhirstream/admin` scope.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use command::tenants;
use projector::TenantState;
use schemas::{TenantConfig, TenantId};

use super::auth::Caller;
use super::extract::{LimitedBody, PathText};
use super::{AdminDeps, ApiError, SharedState};
use crate::tenancy::{self, Deletion};

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

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid tenant document: {e}")))
}

fn parse_tenant(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|_| ApiError::NotFound("unknown tenant".into()))
}

/// `POST /admin/tenants`
#[utoipa::path(post, path = "/admin/tenants", tag = "admin", operation_id = "create-tenant", request_body = super::openapi::TenantDocument, responses(super::openapi::AdminResponses))]
pub(super) async fn create(
    State(state): State<SharedState>,
    caller: Caller,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let new: NewTenant = parse_body(&body)?;
    let tenant = TenantId::parse_new(&new.id).map_err(|e| ApiError::Invalid(e.to_string(), Some("id".into())))?;
    new.config.validate().map_err(|e| ApiError::Invalid(e, Some("config".into())))?;
    let commands = state.commands()?;
    if state.tenants.get(&tenant).await?.is_some() {
        return Err(ApiError::Conflict(format!("tenant '{tenant}' already exists")));
    }
    let name = new.name.unwrap_or_else(|| new.id.clone());
    let pool = state.admin.as_ref().map(|a| &a.pool);
    let written = tenancy::create(commands.store(), pool, tenant.clone(), name, new.config, caller.actor).await?;
    state.tenants.observe(written.seq, written.event);
    let created = state.tenants.get(&tenant).await?.ok_or_else(|| anyhow::anyhow!("tenant vanished after creation"))?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /admin/tenants`
#[utoipa::path(
    get,
    path = "/admin/tenants",
    tag = "admin",
    operation_id = "list-tenants",
    responses(super::openapi::AdminResponses)
)]
pub(super) async fn list(State(state): State<SharedState>, caller: Caller) -> Result<Json<Vec<TenantState>>, ApiError> {
    caller.require_admin()?;
    Ok(Json(state.tenants.list()))
}

/// `GET /admin/tenants/{tenant}`
#[utoipa::path(
    get,
    path = "/admin/tenants/{tenant}",
    tag = "admin",
    operation_id = "get-tenant",
    params(super::openapi::AdminTenantPath),
    responses(super::openapi::AdminResponses)
)]
pub(super) async fn get(
    State(state): State<SharedState>,
    caller: Caller,
    PathText(raw): PathText,
) -> Result<Json<TenantState>, ApiError> {
    caller.require_admin()?;
    let tenant = parse_tenant(&raw)?;
    state.tenants.get(&tenant).await?.map(Json).ok_or_else(|| ApiError::NotFound("unknown tenant".into()))
}

/// `PUT /admin/tenants/{tenant}`: replaces name and configuration.
#[utoipa::path(put, path = "/admin/tenants/{tenant}", tag = "admin", operation_id = "configure-tenant", params(super::openapi::AdminTenantPath), request_body = super::openapi::TenantUpdateDocument, responses(super::openapi::AdminResponses))]
pub(super) async fn configure(
    State(state): State<SharedState>,
    caller: Caller,
    PathText(raw): PathText,
    LimitedBody(body): LimitedBody,
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
#[utoipa::path(
    delete,
    path = "/admin/tenants/{tenant}",
    tag = "admin",
    operation_id = "delete-tenant",
    params(super::openapi::AdminTenantPath),
    responses(super::openapi::AdminResponses)
)]
pub(super) async fn delete(
    State(state): State<SharedState>,
    caller: Caller,
    PathText(raw): PathText,
) -> Result<Json<Deletion>, ApiError> {
    caller.require_admin()?;
    let tenant = parse_tenant(&raw)?;
    let store = state.commands()?.store();
    let admin: &AdminDeps =
        state.admin.as_ref().ok_or_else(|| ApiError::MethodNotAllowed("this node cannot delete tenants".into()))?;
    let (deletion, written) =
        tenancy::delete(store, &admin.pool, &admin.tenant_applied, tenant.clone(), caller.actor).await?;
    state.tenants.observe(written.seq, written.event);
    // Exports are copies of the tenant's data: they go with it.
    if let Some(exports) = &state.exports {
        exports.purge_tenant(&tenant).await.map_err(ApiError::Internal)?;
    }
    Ok(Json(deletion))
}
