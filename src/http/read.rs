//! Read, vread and instance history.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use query::ReadResult;
use schemas::scope::Interaction;

use super::auth::Caller;

use super::extract::{InstanceTarget, VersionTarget};
use super::response::{fhir_json, version_headers};
use super::{ApiError, SharedState};

/// The one "not found" of an instance: identical whether the id never
/// existed or exists only in another tenant.
fn not_found(t: &InstanceTarget) -> ApiError {
    ApiError::NotFound(format!("{}/{} is not known", t.rt, t.id))
}

/// `GET /fhir/{tenant}/{type}/{id}`
#[utoipa::path(
    get,
    path = "/fhir/{tenant}/{rtype}/{id}",
    tag = "FHIR",
    operation_id = "read",
    params(super::openapi::InstancePath),
    responses(super::openapi::ResourceResponses)
)]
pub(super) async fn read(
    State(state): State<SharedState>,
    target: InstanceTarget,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(target.rt, Interaction::Read)?;
    let queries = state.reads(&target.t)?;
    let mut found = queries.read(&target.t.tenant, target.rt, &target.id).await?;
    let mut shared = false;
    if found.is_none() && target.t.reads_shared(target.rt) {
        found = queries.read(&schemas::TenantId::shared(), target.rt, &target.id).await?;
        shared = true;
    }
    match found {
        None => Err(not_found(&target)),
        // A deletion in the shared space is not the tenant's to report.
        Some(ReadResult::Deleted(_)) if shared => Err(not_found(&target)),
        Some(ReadResult::Live(mut v)) if shared => {
            v.resource = v.resource.as_deref().map(super::sharing::tagged).transpose()?;
            let mut res = fhir_json(StatusCode::OK, v.resource.unwrap_or_default());
            version_headers(res.headers_mut(), v.version, &v.last_updated);
            Ok(res)
        }
        Some(ReadResult::Deleted(v)) => {
            let mut res = ApiError::Gone(format!("{}/{} was deleted", target.rt, target.id)).into_response_with();
            version_headers(res.headers_mut(), v.version, &v.last_updated);
            Ok(res)
        }
        Some(ReadResult::Live(v)) => {
            let mut res = fhir_json(StatusCode::OK, v.resource.unwrap_or_default());
            version_headers(res.headers_mut(), v.version, &v.last_updated);
            Ok(res)
        }
    }
}

/// `GET /fhir/{tenant}/{type}/{id}/_history/{vid}`
#[utoipa::path(
    get,
    path = "/fhir/{tenant}/{rtype}/{id}/_history/{vid}",
    tag = "FHIR",
    operation_id = "vread",
    params(super::openapi::VersionPath),
    responses(super::openapi::ResourceResponses)
)]
pub(super) async fn vread(
    State(state): State<SharedState>,
    target: VersionTarget,
    caller: Caller,
) -> Result<Response, ApiError> {
    let t = &target.i;
    caller.require(t.rt, Interaction::Read)?;
    let queries = state.reads(&t.t)?;
    let mut row = queries.vread(&t.t.tenant, t.rt, &t.id, target.vid).await?;
    let mut shared = false;
    if row.is_none() && t.t.reads_shared(t.rt) && queries.read(&t.t.tenant, t.rt, &t.id).await?.is_none() {
        row = queries.vread(&schemas::TenantId::shared(), t.rt, &t.id, target.vid).await?;
        shared = true;
    }
    if let Some(v) = row.as_mut().filter(|_| shared) {
        v.resource = v.resource.as_deref().map(super::sharing::tagged).transpose()?;
    }
    let Some(v) = row else {
        return Err(ApiError::NotFound(format!("version {} of {}/{} is not known", target.vid, t.rt, t.id)));
    };
    let mut res = if v.is_delete() {
        ApiError::Gone(format!("version {} of {}/{} is a deletion", target.vid, t.rt, t.id)).into_response_with()
    } else {
        fhir_json(StatusCode::OK, v.resource.unwrap_or_default())
    };
    version_headers(res.headers_mut(), v.version, &v.last_updated);
    Ok(res)
}

impl ApiError {
    /// The error as a response, to which headers can still be added.
    fn into_response_with(self) -> Response {
        axum::response::IntoResponse::into_response(self)
    }
}
