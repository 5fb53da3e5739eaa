//! Tenant administration: plain JSON (not FHIR resources); errors are still
//! OperationOutcomes. Every call needs the `fhirstream/admin` scope, and
//! that scope is bound to the token's tenants ([`admin_may`]): a tenant
//! admin sees and configures only its own tenants; creating and deleting
//! tenants is for platform tokens (`tenants: ["*"]`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use command::tenants;
use projector::TenantState;
use schemas::{TenantConfig, TenantId};

use super::access::{AdminAction, Grant, admin_may};
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

/// 403 unless the caller may perform `action`.
fn authorize(caller: &Caller, action: AdminAction<'_>) -> Result<(), ApiError> {
    admin_may(caller.grant(), caller.is_admin(), action).map_err(ApiError::Forbidden)
}

/// Parses the tenant of an admin URL (authorize the action on it next).
fn target(caller: &Caller, raw: &str) -> Result<TenantId, ApiError> {
    let Ok(tenant) = TenantId::parse(raw) else {
        // A malformed name is in no token's grant: only a platform admin
        // learns that it names no tenant; anyone else gets a refusal.
        if caller.is_admin() && *caller.grant() == Grant::All {
            return parse_tenant(raw);
        }
        if !caller.is_admin() {
            authorize(caller, AdminAction::List)?;
        }
        return Err(ApiError::Forbidden("this token does not administer that tenant".into()));
    };
    Ok(tenant)
}

/// `POST /admin/tenants`
#[utoipa::path(post, path = "/admin/tenants", tag = "admin", operation_id = "create-tenant", request_body = super::openapi::TenantDocument, responses(super::openapi::AdminResponses))]
pub(super) async fn create(
    State(state): State<SharedState>,
    caller: Caller,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    authorize(&caller, AdminAction::Create)?;
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
    authorize(&caller, AdminAction::List)?;
    let mut all = state.tenants.list();
    // A tenant admin lists only the tenants it holds, in their current life.
    all.retain(|t| caller.may_use(&t.id) && caller.require_incarnation(t).is_ok());
    Ok(Json(all))
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
    let tenant = target(&caller, &raw)?;
    authorize(&caller, AdminAction::Read(&tenant))?;
    let found = state.tenants.get(&tenant).await?.ok_or_else(|| ApiError::NotFound("unknown tenant".into()))?;
    caller.require_incarnation(&found)?;
    Ok(Json(found))
}

/// `PUT /admin/tenants/{tenant}`: replaces name and configuration.
#[utoipa::path(put, path = "/admin/tenants/{tenant}", tag = "admin", operation_id = "configure-tenant", params(super::openapi::AdminTenantPath), request_body = super::openapi::TenantUpdateDocument, responses(super::openapi::AdminResponses))]
pub(super) async fn configure(
    State(state): State<SharedState>,
    caller: Caller,
    PathText(raw): PathText,
    LimitedBody(body): LimitedBody,
) -> Result<Json<TenantState>, ApiError> {
    let tenant = target(&caller, &raw)?;
    authorize(&caller, AdminAction::Configure(&tenant))?;
    if let Some(current) = state.tenants.get(&tenant).await? {
        caller.require_incarnation(&current)?;
    }
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
    let tenant = target(&caller, &raw)?;
    authorize(&caller, AdminAction::Delete(&tenant))?;
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
