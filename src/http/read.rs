//! Read, vread and instance history.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;

use query::ReadResult;
use schemas::scope::Interaction;

use super::auth::Caller;

use super::bundle::{self, Link};
use super::extract::{InstanceTarget, VersionTarget};
use super::response::{fhir_json, version_headers};
use super::search::query_pairs;
use super::{ApiError, SharedState};

const DEFAULT_HISTORY_COUNT: u32 = 100;
const MAX_HISTORY_COUNT: u32 = 1000;

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
    let queries = state.queries()?;
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
    let queries = state.queries()?;
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

/// `GET /fhir/{tenant}/{type}/{id}/_history`: newest first.
#[utoipa::path(
    get,
    path = "/fhir/{tenant}/{rtype}/{id}/_history",
    tag = "FHIR",
    operation_id = "instance-history",
    params(super::openapi::InstancePath, super::openapi::HistoryQuery),
    responses(super::openapi::BundleResponses)
)]
pub(super) async fn history(
    State(state): State<SharedState>,
    target: InstanceTarget,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    caller.require(target.rt, Interaction::Read)?;
    // Read by hand, not with `Query`: its rejections are plain text, and a
    // repeated `_count` takes the last value, as in searches.
    let count_param = query_pairs(uri.query().unwrap_or_default().as_bytes())
        .into_iter()
        .rfind(|(k, _)| k == "_count")
        .map(|(_, v)| v);
    let count = match count_param.as_deref() {
        None => DEFAULT_HISTORY_COUNT,
        Some(raw) => raw
            .parse::<u32>()
            .map_err(|_| ApiError::Invalid(format!("_count '{raw}' is not a non-negative integer"), None))?
            .min(MAX_HISTORY_COUNT),
    };
    let queries = state.queries()?;
    // The shared space answers for a resource the tenant does not have.
    let owner = match queries.read(&target.t.tenant, target.rt, &target.id).await? {
        None if target.t.reads_shared(target.rt) => schemas::TenantId::shared(),
        _ => target.t.tenant.clone(),
    };
    let mut rows = queries.history(&owner, target.rt, &target.id, count).await?;
    if owner != target.t.tenant {
        for v in &mut rows {
            v.resource = v.resource.as_deref().map(super::sharing::tagged).transpose()?;
        }
    }
    // Versions are contiguous from 1, so the newest version is the total;
    // with _count=0 the total needs the newest version all the same.
    let total = match rows.first() {
        Some(newest) => newest.version.get(),
        None => match queries.read(&owner, target.rt, &target.id).await? {
            Some(ReadResult::Live(v) | ReadResult::Deleted(v)) => v.version.get(),
            None => return Err(not_found(&target)),
        },
    };
    let relative = format!("{}/{}", target.rt, target.id);
    let url = format!("{}/fhir/{}/{relative}", state.settings.base_url, target.t.tenant);
    let links = vec![Link { relation: "self", url: format!("{url}/_history?_count={count}") }];
    let bundle = bundle::history(&url, &relative, total, links, rows);
    let body = serde_json::to_vec(&bundle).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(fhir_json(StatusCode::OK, body))
}

impl ApiError {
    /// The error as a response, to which headers can still be added.
    fn into_response_with(self) -> Response {
        axum::response::IntoResponse::into_response(self)
    }
}
