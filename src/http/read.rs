//! Read, vread and instance history.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;

use query::{ReadResult, VersionRow as Stored};
use schemas::scope::Interaction;
use schemas::subset::{self, Subset};
use schemas::{ResourceType, Version};

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
    headers: HeaderMap,
    Query(q): Query<ReadQuery>,
) -> Result<Response, ApiError> {
    let subset = q.subset()?;
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
            live(target.rt, v, &headers, subset.as_ref())
        }
        Some(ReadResult::Deleted(v)) => {
            let mut res = ApiError::Gone(format!("{}/{} was deleted", target.rt, target.id)).into_response_with();
            version_headers(res.headers_mut(), v.version, &v.last_updated);
            Ok(res)
        }
        Some(ReadResult::Live(v)) => live(target.rt, v, &headers, subset.as_ref()),
    }
}

/// `_summary` and `_elements` of a read.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ReadQuery {
    #[serde(rename = "_summary")]
    summary: Option<String>,
    #[serde(rename = "_elements")]
    elements: Option<String>,
}

/// The subset a read asked for (`_summary=count` is for searches).
enum Asked {
    Summary(Subset<'static>),
    Elements(Vec<String>),
}

impl Asked {
    fn as_subset(&self) -> Subset<'_> {
        match self {
            Self::Summary(s) => s.clone(),
            Self::Elements(names) => Subset::Elements(names),
        }
    }
}

impl ReadQuery {
    fn subset(&self) -> Result<Option<Asked>, ApiError> {
        if let Some(e) = &self.elements {
            let names: Vec<String> = e.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
            return Ok(Some(Asked::Elements(names)));
        }
        Ok(match self.summary.as_deref() {
            None | Some("false") => None,
            Some("true") => Some(Asked::Summary(Subset::Summary)),
            Some("text") => Some(Asked::Summary(Subset::Text)),
            Some("data") => Some(Asked::Summary(Subset::Data)),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "_summary must be true, text, data or false on a read, not '{}'",
                    other.chars().take(20).collect::<String>()
                )));
            }
        })
    }
}

/// A live resource: 304 when the client's copy is current (`If-None-Match`
/// naming this version, or `If-Modified-Since` not before its last update),
/// else the resource, subset if asked.
fn live(rt: ResourceType, v: Stored, headers: &HeaderMap, subset: Option<&Asked>) -> Result<Response, ApiError> {
    if not_modified(headers, v.version, &v.last_updated) {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        version_headers(res.headers_mut(), v.version, &v.last_updated);
        return Ok(res);
    }
    if rt.as_str() == "Binary"
        && let Some(native) = native_binary(headers, v.resource.as_deref())
    {
        let mut res = native;
        version_headers(res.headers_mut(), v.version, &v.last_updated);
        return Ok(res);
    }
    let body = match (subset, v.resource) {
        (Some(asked), Some(raw)) => {
            let mut value: serde_json::Value = serde_json::from_str(&raw).map_err(|e| ApiError::Internal(e.into()))?;
            if let Some(map) = value.as_object_mut() {
                subset::apply(map, rt, &asked.as_subset());
            }
            value.to_string()
        }
        (_, raw) => raw.unwrap_or_default(),
    };
    let mut res = fhir_json(StatusCode::OK, body);
    version_headers(res.headers_mut(), v.version, &v.last_updated);
    Ok(res)
}

/// A Binary in its own content type, when the client's Accept asks for it
/// rather than for FHIR JSON (`Accept: application/pdf`, or `*/*` alone is
/// not enough: FHIR clients send it and expect JSON).
fn native_binary(headers: &HeaderMap, stored: Option<&str>) -> Option<Response> {
    use base64::Engine as _;
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?.to_ascii_lowercase();
    let wants_fhir = accept.split(',').any(|m| {
        let m = m.split(';').next().unwrap_or_default().trim();
        m.contains("json") || m.contains("fhir") || m == "*/*"
    });
    if wants_fhir {
        return None;
    }
    let binary: serde_json::Value = serde_json::from_str(stored?).ok()?;
    let content_type = binary["contentType"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(binary["data"].as_str().unwrap_or_default()).ok()?;
    let mut res = (StatusCode::OK, bytes).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_str(content_type).ok()?);
    Some(res)
}

/// Whether the conditional-read headers say the client already has it.
fn not_modified(headers: &HeaderMap, version: Version, last_updated: &chrono::DateTime<chrono::Utc>) -> bool {
    if let Some(tags) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        return tags.split(',').any(|t| t.trim() == "*" || Version::parse_etag(t).is_ok_and(|t| t == version));
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    // HTTP dates have whole seconds: compare at that precision.
    since.is_some_and(|since| {
        let since = chrono::DateTime::<chrono::Utc>::from(since);
        last_updated.timestamp() <= since.timestamp()
    })
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
