//! Extractors that parse the URL once into domain types and check the
//! tenant exists, and the FHIR body extractor (media type, size limit).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{HeaderMap, header, request::Parts};

use projector::TenantState;
use schemas::{ResourceId, ResourceType, SnapshotName, TenantId, Version};

use super::auth::Caller;
use super::{ApiError, SharedState};

/// A request inside an existing tenant.
#[derive(Debug, Clone)]
pub(super) struct InTenant {
    pub(super) tenant: TenantId,
    pub(super) state: TenantState,
    /// The shared types this tenant reads beside its own (none for the
    /// shared space itself, nor in a snapshot).
    pub(super) shared_reads: Vec<ResourceType>,
    /// A kept snapshot of this tenant that answers instead of the live
    /// read model (`/fhir/{tenant}/_snapshot/{name}/...`, read-only).
    pub(super) snapshot: Option<SnapshotName>,
}

impl InTenant {
    /// The FHIR base URL the request was made against.
    pub(super) fn base_url(&self, server: &str) -> String {
        match &self.snapshot {
            Some(s) => format!("{server}/fhir/{}/_snapshot/{s}", self.tenant),
            None => format!("{server}/fhir/{}", self.tenant),
        }
    }

    /// Whether a resource of `rt` missing here is looked up in `shared`.
    pub(super) fn reads_shared(&self, rt: ResourceType) -> bool {
        self.shared_reads.contains(&rt)
    }

    /// The tenant's validation policy (strict base rules when it has none).
    pub(super) fn validation(&self) -> schemas::validate::ValidationPolicy {
        self.state.config.validation.clone().unwrap_or_default()
    }

    /// The types whose creates claim their id against the other side: for
    /// the shared space every shareable type, for a tenant those it reads.
    pub(super) fn shared_ids(&self, shareable: &[ResourceType]) -> command::SharedIds {
        let types = if self.tenant.is_shared() { shareable.to_vec() } else { self.shared_reads.clone() };
        command::SharedIds { types }
    }
}

/// `/{tenant}/{type}`.
#[derive(Debug, Clone)]
pub(super) struct TypeTarget {
    pub(super) t: InTenant,
    pub(super) rt: ResourceType,
}

/// `/{tenant}/{type}/{id}`.
#[derive(Debug, Clone)]
pub(super) struct InstanceTarget {
    pub(super) t: InTenant,
    pub(super) rt: ResourceType,
    pub(super) id: ResourceId,
}

/// `/{tenant}/{type}/{id}/_history/{vid}`.
#[derive(Debug, Clone)]
pub(super) struct VersionTarget {
    pub(super) i: InstanceTarget,
    pub(super) vid: Version,
}

async fn params(parts: &mut Parts, state: &SharedState) -> Result<(InTenant, HashMap<String, String>), ApiError> {
    let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::invalid("the URL could not be decoded"))?;
    let raw = params.get("tenant").map(String::as_str).unwrap_or_default();
    // A malformed tenant name cannot exist: the same 404 as an unknown one.
    let unknown = || ApiError::NotFound("unknown tenant".into());
    let tenant = TenantId::parse(raw).map_err(|_| unknown())?;
    // The token decides before existence is looked at, so a caller can
    // never learn whether a tenant it may not use exists.
    let caller = Caller::from_request_parts(parts, state).await?;
    caller.require_tenant(&tenant)?;
    let shareable = &state.settings.shareable;
    if tenant.is_shared() {
        // Snapshots are of tenants; a snapshot URL under `shared` must not
        // answer with live data.
        if params.contains_key("snapshot") {
            return Err(ApiError::NotFound("unknown snapshot".into()));
        }
        // The shared space exists in every deployment and holds only the
        // shareable types.
        let config = schemas::TenantConfig {
            allowed_types: Some(shareable.iter().map(|t| t.as_str().to_string()).collect()),
            ..Default::default()
        };
        let state = TenantState {
            id: tenant.clone(),
            name: "shared".into(),
            config,
            updated_at: chrono::DateTime::UNIX_EPOCH,
            seq: 0,
            incarnation: None,
        };
        return Ok((InTenant { tenant, state, shared_reads: Vec::new(), snapshot: None }, params));
    }
    let tenant_state = state.tenants.get(&tenant).await?.ok_or_else(unknown)?;
    caller.require_incarnation(&tenant_state)?;
    if let Some(limit) = tenant_state.config.max_body_bytes {
        parts.extensions.insert(TenantBodyLimit(limit));
    }
    if let Some(raw) = params.get("snapshot") {
        let snapshot = owned_snapshot(state, &tenant, raw).await?;
        return Ok((
            InTenant { tenant, state: tenant_state, shared_reads: Vec::new(), snapshot: Some(snapshot) },
            params,
        ));
    }
    let shared_reads = tenant_state.config.reads_from_shared(shareable);
    Ok((InTenant { tenant, state: tenant_state, shared_reads, snapshot: None }, params))
}

/// A snapshot of `tenant`: one that does not exist and one built for
/// another tenant are the same 404.
async fn owned_snapshot(state: &SharedState, tenant: &TenantId, raw: &str) -> Result<SnapshotName, ApiError> {
    let unknown = || ApiError::NotFound("unknown snapshot".into());
    let name = SnapshotName::parse(raw).map_err(|_| unknown())?;
    match state.queries()?.snapshot_tenant(&name).await? {
        Some((owner, _)) if owner == tenant.as_str() => Ok(name),
        _ => Err(unknown()),
    }
}

fn resource_type(t: &InTenant, params: &HashMap<String, String>) -> Result<ResourceType, ApiError> {
    let raw = params.get("rtype").map(String::as_str).unwrap_or_default();
    let rt = ResourceType::parse(raw).map_err(|e| ApiError::NotFound(e.to_string()))?;
    if !t.state.config.allows(rt.as_str()) {
        return Err(ApiError::NotFound(format!("resource type {rt} is not enabled for this tenant")));
    }
    Ok(rt)
}

fn resource_id(params: &HashMap<String, String>) -> Result<ResourceId, ApiError> {
    let raw = params.get("id").map(String::as_str).unwrap_or_default();
    ResourceId::parse(raw).map_err(|e| ApiError::Invalid(e.to_string(), Some("id".into())))
}

impl FromRequestParts<SharedState> for InTenant {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Self::Rejection> {
        Ok(params(parts, state).await?.0)
    }
}

impl FromRequestParts<SharedState> for TypeTarget {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Self::Rejection> {
        let (t, p) = params(parts, state).await?;
        let rt = resource_type(&t, &p)?;
        Ok(Self { t, rt })
    }
}

impl FromRequestParts<SharedState> for InstanceTarget {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Self::Rejection> {
        let (t, p) = params(parts, state).await?;
        let rt = resource_type(&t, &p)?;
        let id = resource_id(&p)?;
        Ok(Self { t, rt, id })
    }
}

impl FromRequestParts<SharedState> for VersionTarget {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, Self::Rejection> {
        let (t, p) = params(parts, state).await?;
        let rt = resource_type(&t, &p)?;
        let id = resource_id(&p)?;
        let raw = p.get("vid").map(String::as_str).unwrap_or_default();
        let vid = Version::parse(raw).map_err(|e| ApiError::Invalid(e.to_string(), None))?;
        Ok(Self { i: InstanceTarget { t, rt, id }, vid })
    }
}

/// A tenant's own body-size limit, left in the request by the tenant
/// extractor for the body extractors (which run after it).
#[derive(Debug, Clone, Copy)]
struct TenantBodyLimit(usize);

/// The body limit of a request: the server's, or the tenant's if lower.
fn body_limit(req: &Request, state: &SharedState) -> usize {
    let server = state.settings.max_body_bytes;
    req.extensions().get::<TenantBodyLimit>().map_or(server, |t| t.0.min(server))
}

/// The one path parameter of a route (`/admin/tenants/{tenant}`,
/// `/fhir/{tenant}/metadata`), percent-decoded; a URL that does not decode
/// (invalid UTF-8) is a 400 OperationOutcome like every other error.
pub(super) struct PathText(pub(super) String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::invalid("the URL could not be decoded"))?;
        Ok(Self(text))
    }
}

/// A FHIR JSON request body, read up to the configured size limit.
pub(super) struct FhirBody(pub(super) Bytes);

impl FromRequest<SharedState> for FhirBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        if let Some(binary) = native_binary(&req) {
            let limit = body_limit(&req, state);
            let bytes = read_limited(req, state, limit).await?;
            return Ok(Self(binary.wrap(&bytes)));
        }
        check_json_media_type(req.headers())?;
        let limit = body_limit(&req, state);
        Ok(Self(read_limited(req, state, limit).await?))
    }
}

/// A `Binary` create or update sent in its own content type (a PDF, an
/// image): FHIR lets a client post the bytes themselves, and the server
/// keeps them as a Binary resource (`contentType`, base64 `data`).
struct NativeBinary {
    content_type: String,
    /// The id of `PUT .../Binary/{id}`.
    id: Option<String>,
}

fn native_binary(req: &Request) -> Option<NativeBinary> {
    let ct = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    if matches!(essence(ct).as_str(), "application/fhir+json" | "application/json" | "") {
        return None;
    }
    let mut segments = req.uri().path().trim_start_matches('/').split('/');
    let (Some("fhir"), Some(_tenant), Some("Binary")) = (segments.next(), segments.next(), segments.next()) else {
        return None;
    };
    let id = segments.next().map(str::to_owned);
    if segments.next().is_some() {
        return None;
    }
    Some(NativeBinary { content_type: ct.trim().to_owned(), id })
}

impl NativeBinary {
    fn wrap(&self, bytes: &[u8]) -> Bytes {
        use base64::Engine as _;
        let mut resource = serde_json::json!({
            "resourceType": "Binary",
            "contentType": self.content_type,
            "data": base64::engine::general_purpose::STANDARD.encode(bytes),
        });
        if let Some(id) = &self.id {
            resource["id"] = serde_json::Value::String(id.clone());
        }
        Bytes::from(resource.to_string())
    }
}

/// Any request body (JSON Patch, admin documents), read up to the
/// configured size limit; too large is a 413 OperationOutcome like the rest.
pub(super) struct LimitedBody(pub(super) Bytes);

impl FromRequest<SharedState> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let limit = body_limit(&req, state);
        Ok(Self(read_limited(req, state, limit).await?))
    }
}

/// Reads a body up to the size limit and within the read timeout, so
/// neither a large body nor a slow one can hold memory for long.
async fn read_limited(req: Request, state: &SharedState, limit: usize) -> Result<Bytes, ApiError> {
    let timeout = state.settings.body_read_timeout;
    let too_large = || ApiError::PayloadTooLarge(format!("the request body exceeds the limit of {limit} bytes"));
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(req.into_body(), limit)).await.map_err(|_| {
        ApiError::RequestTimeout(format!("the request body did not arrive within {} ms", timeout.as_millis()))
    })?;
    read.map_err(|e| {
        let over = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if over { too_large() } else { ApiError::invalid("the request body could not be read") }
    })
}

fn check_json_media_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("a Content-Type of application/fhir+json is required".into()));
    };
    let essence = essence(ct.to_str().unwrap_or_default());
    match essence.as_str() {
        "application/fhir+json" | "application/json" => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type '{}' is not supported; send application/fhir+json",
            essence.chars().take(80).collect::<String>()
        ))),
    }
}

/// A media type without its parameters, lower-cased (`application/json`
/// of `Application/JSON; charset=utf-8`).
fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// The version in an `If-Match` header, if one was sent.
pub(super) fn if_match(headers: &HeaderMap) -> Result<Option<Version>, ApiError> {
    headers
        .get(header::IF_MATCH)
        .map(|v| {
            let s = v.to_str().map_err(|_| ApiError::invalid("If-Match is not readable"))?;
            Version::parse_etag(s).map_err(|_| ApiError::invalid(format!("If-Match '{s}' is not a FHIR version ETag")))
        })
        .transpose()
}
