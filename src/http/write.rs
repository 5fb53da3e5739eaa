//! Create, update and delete.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use command::{WriteContext, Written};
use schemas::scope::Interaction;

use super::auth::Caller;
use super::extract::{FhirBody, InstanceTarget, TypeTarget, if_match};
use super::response::{PROJECTION_HEADER, fhir_json, version_headers};
use super::settle::settle;
use super::{ApiError, SharedState};

/// Request header with which a client opts out of read-your-writes.

/// `POST /fhir/{tenant}/{type}`
#[utoipa::path(post, path = "/fhir/{tenant}/{rtype}", tag = "FHIR", operation_id = "create", params(super::openapi::TypePath), request_body(content = super::openapi::Resource, content_type = "application/fhir+json"), responses(super::openapi::WriteResponses))]
pub(super) async fn create(
    State(state): State<SharedState>,
    target: TypeTarget,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    FhirBody(body): FhirBody,
) -> Result<Response, ApiError> {
    caller.require(target.rt, Interaction::Create)?;
    refuse_unused_query(query.as_deref(), "a create", "send them in If-None-Exist for a conditional create")?;
    check_resource_size(&state, body.len())?;
    if let Some(criteria) = headers.get("if-none-exist") {
        let criteria = criteria.to_str().map_err(|_| ApiError::invalid("If-None-Exist is not readable"))?.to_owned();
        return super::transaction::conditional_create(state, target, caller, headers, &body, &criteria).await;
    }
    let parts = WriteParts::new(&state, &target.t);
    let cx = parts.context(&target.t, &caller);
    let written = state.commands()?.create(&cx, target.rt, &body).await?;
    let location = state.version_url(&target.t.tenant, target.rt, &written.id, written.version);
    let mut res = respond(&state, &headers, StatusCode::CREATED, written).await;
    set_location(&mut res, &location, true);
    Ok(res)
}

/// `PUT /fhir/{tenant}/{type}/{id}`
#[utoipa::path(put, path = "/fhir/{tenant}/{rtype}/{id}", tag = "FHIR", operation_id = "update", params(super::openapi::InstancePath), request_body(content = super::openapi::Resource, content_type = "application/fhir+json"), responses(super::openapi::WriteResponses))]
pub(super) async fn update(
    State(state): State<SharedState>,
    target: InstanceTarget,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    FhirBody(body): FhirBody,
) -> Result<Response, ApiError> {
    caller.require(target.rt, Interaction::Update)?;
    refuse_unused_query(query.as_deref(), "an update by id", "use PUT [type]?criteria for a conditional update")?;
    super::sharing::refuse_shadowing(&state, &target.t, target.rt, &target.id).await?;
    check_resource_size(&state, body.len())?;
    let if_match = if_match(&headers)?;
    let parts = WriteParts::new(&state, &target.t);
    let cx = parts.context(&target.t, &caller);
    let written = state.commands()?.update(&cx, target.rt, target.id.clone(), &body, if_match).await?;
    let status = if written.version.get() == 1 { StatusCode::CREATED } else { StatusCode::OK };
    let location = state.version_url(&target.t.tenant, target.rt, &written.id, written.version);
    let mut res = respond(&state, &headers, status, written).await;
    set_location(&mut res, &location, status == StatusCode::CREATED);
    Ok(res)
}

/// `DELETE /fhir/{tenant}/{type}/{id}`: 204 whether or not there was
/// anything to delete (deletes are idempotent in FHIR).
#[utoipa::path(
    delete,
    path = "/fhir/{tenant}/{rtype}/{id}",
    tag = "FHIR",
    operation_id = "delete",
    params(super::openapi::InstancePath),
    responses(super::openapi::WriteResponses)
)]
pub(super) async fn delete(
    State(state): State<SharedState>,
    target: InstanceTarget,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(target.rt, Interaction::Delete)?;
    super::sharing::refuse_shadowing(&state, &target.t, target.rt, &target.id).await?;
    let if_match = if_match(&headers)?;
    let written = state.commands()?.delete(&target.t.tenant, &caller.actor, target.rt, target.id, if_match).await?;
    let mut res = fhir_json(StatusCode::NO_CONTENT, "");
    res.headers_mut().remove(header::CONTENT_TYPE);
    if let Some(w) = written {
        version_headers(res.headers_mut(), w.version, &w.last_updated);
        let projection = settle(&state, &headers, &[&w]).await;
        res.headers_mut().insert(PROJECTION_HEADER.clone(), projection);
    }
    Ok(res)
}

/// A write never ignores search parameters in silence: a client that sends
/// `POST /Patient?identifier=x` expects a conditional create (fhirpy's
/// `get_or_create` does), and would get a duplicate. Only the format
/// parameters, which apply to every interaction, pass.
fn refuse_unused_query(query: Option<&str>, what: &str, instead: &str) -> Result<(), ApiError> {
    let unused: Vec<String> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, _)| k.into_owned())
        .filter(|k| !matches!(k.as_str(), "_format" | "_pretty" | ""))
        .collect();
    match unused.first() {
        None => Ok(()),
        Some(first) => Err(ApiError::invalid(format!(
            "{what} does not use URL parameters such as '{}'; {instead}",
            first.chars().take(40).collect::<String>()
        ))),
    }
}

/// What a tenant's writes are decided with, besides the caller: its id
/// claims, its validation policy and where its profiles are found.
pub(super) struct WriteParts<'s> {
    shared_ids: command::SharedIds,
    policy: schemas::validate::ValidationPolicy,
    profiles: Box<dyn command::ProfileSource + 's>,
    conformance: bool,
}

impl<'s> WriteParts<'s> {
    pub(super) fn new(state: &'s SharedState, t: &super::extract::InTenant) -> Self {
        // A node without the query role cannot look profiles up: a write
        // that must conform to one is then refused, never let through.
        let profiles: Box<dyn command::ProfileSource + 's> = match &state.queries {
            Some(q) => Box::new(crate::profiles::ReadModelProfiles::new(q, &t.shared_reads)),
            None => Box::new(command::NoProfiles),
        };
        let conformance = !state.settings.skip_conformance;
        Self { shared_ids: t.shared_ids(&state.settings.shareable), policy: t.validation(), profiles, conformance }
    }

    pub(super) fn context<'a>(&'a self, t: &'a super::extract::InTenant, caller: &'a Caller) -> WriteContext<'a> {
        WriteContext {
            tenant: &t.tenant,
            actor: &caller.actor,
            shared_ids: &self.shared_ids,
            policy: &self.policy,
            profiles: &*self.profiles,
            conformance: self.conformance,
        }
    }
}

/// 413 for a resource larger than one event can carry.
pub(super) fn check_resource_size(state: &SharedState, len: usize) -> Result<(), ApiError> {
    let limit = state.settings.max_resource_bytes;
    if len > limit {
        return Err(ApiError::PayloadTooLarge(format!(
            "the resource exceeds the limit of {limit} bytes for a single resource (one event on the stream)"
        )));
    }
    Ok(())
}

/// Sets `Content-Location` (and `Location` for a creation) to a version URL.
pub(super) fn set_location(res: &mut Response, url: &str, created: bool) {
    if let Ok(v) = HeaderValue::from_str(url) {
        if created {
            res.headers_mut().insert(header::LOCATION, v.clone());
        }
        res.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
}

/// The response to a stored write: waits for read-your-writes, then honours
/// `Prefer: return=...`.
async fn respond(state: &SharedState, headers: &HeaderMap, status: StatusCode, written: Written) -> Response {
    let projection = settle(state, headers, &[&written]).await;
    let prefer = headers.get("prefer").and_then(|v| v.to_str().ok()).unwrap_or_default();
    // `return=OperationOutcome` answers with the validation warnings (an
    // information issue when there are none) instead of the resource.
    let outcome = prefer.contains("return=OperationOutcome");
    let body = if prefer.contains("return=minimal") {
        String::new()
    } else if outcome {
        serde_json::to_string(&schemas::OperationOutcome::from_issues(&written.warnings)).unwrap_or_default()
    } else {
        written.resource.map(|r| Box::<str>::from(r).into_string()).unwrap_or_default()
    };
    let applied = if prefer.contains("return=minimal") {
        Some("return=minimal")
    } else if outcome {
        Some("return=OperationOutcome")
    } else if prefer.contains("return=representation") {
        Some("return=representation")
    } else {
        None
    };
    let mut res = fhir_json(status, body);
    if let Some(applied) = applied {
        res.headers_mut().insert("preference-applied", HeaderValue::from_static(applied));
    }
    version_headers(res.headers_mut(), written.version, &written.last_updated);
    res.headers_mut().insert(PROJECTION_HEADER.clone(), projection);
    res
}
