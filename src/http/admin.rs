//! Tenant administration: plain JSON (not FHIR resources), errors still
//! OperationOutcomes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use command::tenants;
use projector::TenantState;
use schemas::{TenantConfig, TenantId};

use super::auth::Caller;
use super::{ApiError, SharedState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTenant {
    id: String,
    name: Option<String>,
    #[serde(default)]
    config: TenantConfig,
}

/// `POST /admin/tenants`
pub(super) async fn create(
    State(state): State<SharedState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let new: NewTenant =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("invalid tenant document: {e}")))?;
    let tenant = TenantId::parse_new(&new.id).map_err(|e| ApiError::Invalid(e.to_string(), Some("id".into())))?;
    new.config.validate().map_err(|e| ApiError::Invalid(e, Some("config".into())))?;
    let commands =
        state.commands.as_ref().ok_or_else(|| ApiError::MethodNotAllowed("this node does not accept writes".into()))?;
    let name = new.name.unwrap_or_else(|| new.id.clone());
    let written = tenants::create(commands.store(), tenant.clone(), name, new.config, caller.actor).await?;
    state.tenants.observe(written.seq, written.event);
    let created = state.tenants.get(&tenant).await?.ok_or_else(|| anyhow::anyhow!("tenant vanished after creation"))?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /admin/tenants`
pub(super) async fn list(State(state): State<SharedState>, _caller: Caller) -> Json<Vec<TenantState>> {
    Json(state.tenants.list())
}

/// `GET /admin/tenants/{tenant}`
pub(super) async fn get(
    State(state): State<SharedState>,
    _caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<TenantState>, ApiError> {
    let unknown = || ApiError::NotFound("unknown tenant".into());
    let tenant = TenantId::parse(&raw).map_err(|_| unknown())?;
    state.tenants.get(&tenant).await?.map(Json).ok_or_else(unknown)
}
