//! Transaction and batch Bundles, and the single writes that run as
//! one-entry transactions: conditional create/update/delete and PATCH.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use command::Written;
use command::bundle::{self, BundleError, BundleKind, Criteria, Entry, Method};
use command::transaction::{EntryFailure, EntryResult, ReadModelMatches, TxOutcome};
use query::ReadResult;
use schemas::event::instant;
use schemas::scope::Interaction;
use schemas::{ResourceId, TenantId};

use super::auth::Caller;
use super::extract::{FhirBody, InTenant, InstanceTarget, LimitedBody, TypeTarget, if_match};
use super::response::{PROJECTION_HEADER, fhir_json, version_headers};
use super::settle::settle;
use super::write::set_location;
use super::{ApiError, SharedState};

fn interaction(m: Method) -> Interaction {
    match m {
        Method::Post => Interaction::Create,
        Method::Put | Method::Patch => Interaction::Update,
        Method::Delete => Interaction::Delete,
        Method::Get => Interaction::Read,
    }
}

fn bundle_error(e: BundleError) -> ApiError {
    match e {
        BundleError::TooManyEntries { .. } => ApiError::PayloadTooLarge(e.to_string()),
        e => ApiError::invalid(e.to_string()),
    }
}

/// An entry's failure as the whole request's error, naming the entry.
fn entry_failure(f: EntryFailure) -> ApiError {
    let e = ApiError::from(f.error);
    match f.index {
        Some(i) => e.in_entry(i),
        None => e,
    }
}

/// What the read model knows about each conditional entry's criteria.
async fn read_model_matches(
    state: &SharedState,
    t: &InTenant,
    caller: &Caller,
    entries: &[Entry],
) -> Result<ReadModelMatches, ApiError> {
    let mut matches = ReadModelMatches::new();
    if state.queries.is_none() {
        return Ok(matches);
    }
    for e in entries {
        if let Some(c) = e.if_none_exist.as_ref().or(e.conditional.as_ref()) {
            let ids = super::search::matching_ids(state, t, caller, e.rt, c.pairs(), 2).await?;
            matches.insert(e.index, ids);
        }
    }
    Ok(matches)
}

/// Runs entries as one transaction, with authorization per entry. The
/// outer error is the request's; the inner one names the failing entry.
async fn run(
    state: &SharedState,
    t: &InTenant,
    caller: &Caller,
    entries: Vec<Entry>,
) -> Result<Result<TxOutcome, EntryFailure>, ApiError> {
    for e in &entries {
        caller.require(e.rt, interaction(e.method))?;
        // A condition finds resources by content: that is a search, and a
        // match can answer with the stored resource. Without search or
        // read scope a create-only token could probe (and read) by it.
        if (e.if_none_exist.is_some() || e.conditional.is_some())
            && !caller.allows(e.rt, Interaction::Search)
            && !caller.allows(e.rt, Interaction::Read)
        {
            return Err(ApiError::Forbidden(format!(
                "entry[{}]: a conditional {} needs search or read scope on {}",
                e.index,
                interaction(e.method).name(),
                e.rt
            )));
        }
        if !t.state.config.allows(e.rt.as_str()) {
            return Err(ApiError::NotFound(format!(
                "entry[{}]: resource type {} is not enabled for this tenant",
                e.index, e.rt
            )));
        }
    }
    let matches = read_model_matches(state, t, caller, &entries).await?;
    let parts = super::write::WriteParts::new(state, t);
    let cx = parts.context(t, caller);
    let commands = state.commands()?;
    Ok(commands.transaction(&cx, entries, &matches, |_| ResourceId::generate()).await)
}

/// The error of a single request that ran as a one-entry transaction.
fn single_failure(f: EntryFailure) -> ApiError {
    ApiError::from(f.error)
}

/// `POST /fhir/{tenant}`: a transaction or batch Bundle.
#[utoipa::path(post, path = "/fhir/{tenant}", tag = "FHIR", operation_id = "transaction", params(super::openapi::TenantPath), request_body(content = super::openapi::Bundle, content_type = "application/fhir+json"), responses(super::openapi::BundleResponses))]
pub(super) async fn bundle(
    State(state): State<SharedState>,
    t: InTenant,
    caller: Caller,
    headers: HeaderMap,
    FhirBody(body): FhirBody,
) -> Result<Response, ApiError> {
    let (kind, entries) = bundle::parse(&body, state.settings.max_bundle_entries).map_err(bundle_error)?;
    let base = format!("{}/fhir/{}", state.settings.base_url, t.tenant);
    let (entries_json, last_seq, bundle_type) = match kind {
        BundleKind::Transaction => {
            let outcome = run(&state, &t, &caller, entries).await?.map_err(entry_failure)?;
            let applied = settle_results(&state, &headers, [&outcome]).await;
            let mut out = Vec::with_capacity(outcome.results.len());
            for result in outcome.results {
                out.push(entry_json(&state, &t, &caller, &base, result, applied).await?);
            }
            (out, outcome.last_seq, "transaction-response")
        }
        BundleKind::Batch => {
            let mut out = Vec::with_capacity(entries.len());
            let mut last_seq = None;
            let mut results = Vec::with_capacity(entries.len());
            for mut e in entries {
                let index = e.index;
                e.index = 0;
                let result = match run(&state, &t, &caller, vec![e]).await {
                    Ok(r) => r.map_err(single_failure),
                    Err(e) => Err(e),
                };
                if let Ok(o) = &result {
                    last_seq = last_seq.max(o.last_seq);
                }
                results.push((index, result));
            }
            let applied = settle_results(&state, &headers, results.iter().filter_map(|(_, r)| r.as_ref().ok())).await;
            for (_, result) in results {
                out.push(match result {
                    Ok(mut o) => entry_json(&state, &t, &caller, &base, o.results.remove(0), applied).await?,
                    Err(e) => error_entry(e),
                });
            }
            (out, last_seq, "batch-response")
        }
    };
    let response = json!({ "resourceType": "Bundle", "type": bundle_type, "entry": entries_json });
    let mut res = fhir_json(StatusCode::OK, response.to_string());
    let projection = if last_seq.is_none() { "skipped" } else { "applied" };
    res.headers_mut().insert(PROJECTION_HEADER.clone(), HeaderValue::from_static(projection));
    Ok(res)
}

/// Read-your-writes for the events of some outcomes; true once applied
/// (or when they wrote nothing).
async fn settle_results<'o>(
    state: &SharedState,
    headers: &HeaderMap,
    outcomes: impl IntoIterator<Item = &'o TxOutcome>,
) -> bool {
    let written: Vec<&Written> = outcomes.into_iter().flat_map(|o| o.results.iter().filter_map(written_of)).collect();
    written.is_empty() || settle(state, headers, &written).await == "applied"
}

/// The event a result appended, if any.
fn written_of(result: &EntryResult) -> Option<&Written> {
    match result {
        EntryResult::Created(w) | EntryResult::Updated(w) | EntryResult::Deleted(Some(w)) => Some(w),
        _ => None,
    }
}

/// The response entry of one result.
async fn entry_json(
    state: &SharedState,
    t: &InTenant,
    caller: &Caller,
    base: &str,
    result: EntryResult,
    applied: bool,
) -> Result<Value, ApiError> {
    let response = |status: &str, rt_id: Option<(&str, &ResourceId, schemas::Version)>, at: Option<String>| {
        let mut r = json!({ "status": status });
        if let Some((rt, id, v)) = rt_id {
            r["location"] = json!(format!("{base}/{rt}/{id}/_history/{v}"));
            r["etag"] = json!(v.etag());
        }
        if let Some(at) = at {
            r["lastModified"] = json!(at);
        }
        json!({ "response": r })
    };
    Ok(match result {
        EntryResult::Created(w) => {
            response("201 Created", Some((w.resource_type.as_str(), &w.id, w.version)), Some(instant(&w.last_updated)))
        }
        EntryResult::Updated(w) => {
            response("200 OK", Some((w.resource_type.as_str(), &w.id, w.version)), Some(instant(&w.last_updated)))
        }
        EntryResult::Deleted(Some(w)) => {
            let mut e = response("204 No Content", None, Some(instant(&w.last_updated)));
            e["response"]["etag"] = json!(w.version.etag());
            e
        }
        EntryResult::Deleted(None) => response("204 No Content", None, None),
        EntryResult::Existing { rt, id, version, resource } => {
            let mut e = response("200 OK", Some((rt.as_str(), &id, version)), None);
            // The match's body only for a token that may read it.
            if let Some(r) = resource.filter(|_| caller.allows(rt, Interaction::Read)) {
                e["resource"] = serde_json::from_str(r.get()).unwrap_or(Value::Null);
            }
            e
        }
        EntryResult::Read { rt, id } => {
            let queries = state
                .queries
                .as_ref()
                .ok_or_else(|| ApiError::MethodNotAllowed("this node does not serve reads".into()))?;
            if !applied {
                return Ok(error_entry(ApiError::Unavailable("the transaction's writes are not yet readable".into())));
            }
            match queries.read(&t.tenant, rt, &id).await? {
                Some(ReadResult::Live(v)) => {
                    let mut e = response("200 OK", None, Some(instant(&v.last_updated)));
                    e["response"]["etag"] = json!(v.version.etag());
                    e["resource"] =
                        serde_json::from_str(v.resource.as_deref().unwrap_or("null")).unwrap_or(Value::Null);
                    e
                }
                Some(ReadResult::Deleted(_)) => error_entry(ApiError::Gone(format!("{rt}/{id} was deleted"))),
                None => error_entry(ApiError::NotFound(format!("{rt}/{id} is not known"))),
            }
        }
        EntryResult::Search { rt, query } => {
            if !applied {
                return Ok(error_entry(ApiError::Unavailable(
                    "the transaction's writes are not yet searchable".into(),
                )));
            }
            // A failing search fails its entry (batch) like any entry.
            match super::search::bundle_entry_search(state, t, caller, rt, &query).await {
                Ok(bundle) => {
                    let mut e = response("200 OK", None, None);
                    e["resource"] = bundle;
                    e
                }
                Err(e) => error_entry(e),
            }
        }
    })
}

/// A batch entry that failed: its status and OperationOutcome.
fn error_entry(e: ApiError) -> Value {
    let (status, outcome) = e.outcome();
    json!({
        "response": {
            "status": format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or_default()),
            "outcome": outcome,
        }
    })
}

fn criteria(query: Option<String>) -> Result<Criteria, ApiError> {
    let q = query
        .filter(|q| !q.is_empty())
        .ok_or_else(|| ApiError::MethodNotAllowed("a conditional operation needs search criteria".into()))?;
    Criteria::parse(&q).map_err(|m| ApiError::Invalid(m, None))
}

/// The single-resource answer of a one-entry transaction.
async fn single(
    state: &SharedState,
    caller: &Caller,
    headers: &HeaderMap,
    base: &str,
    outcome: TxOutcome,
) -> Result<Response, ApiError> {
    let written: Vec<&Written> = outcome.results.iter().filter_map(written_of).collect();
    let projection = match written.is_empty() {
        false => settle(state, headers, &written).await,
        true => HeaderValue::from_static("skipped"),
    };
    let result = outcome
        .results
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("a one-entry transaction without a result"))?;
    let (status, w) = match result {
        EntryResult::Created(w) => (StatusCode::CREATED, w),
        EntryResult::Updated(w) => (StatusCode::OK, w),
        EntryResult::Deleted(w) => {
            let mut res = StatusCode::NO_CONTENT.into_response();
            if let Some(w) = w {
                version_headers(res.headers_mut(), w.version, &w.last_updated);
            }
            res.headers_mut().insert(PROJECTION_HEADER.clone(), projection);
            return Ok(res);
        }
        EntryResult::Existing { rt, id, version, resource } => {
            // A search-only token learns that (and where) a match exists,
            // as a search would tell it; the body needs read scope.
            let readable = caller.allows(rt, Interaction::Read);
            let body = resource.filter(|_| readable).map(|r| r.get().to_owned()).unwrap_or_default();
            let mut res = fhir_json(StatusCode::OK, body);
            res.headers_mut().insert(
                header::ETAG,
                HeaderValue::from_str(&version.etag()).map_err(|e| ApiError::Internal(e.into()))?,
            );
            if let Ok(v) = HeaderValue::from_str(&format!("{base}/{rt}/{id}/_history/{version}")) {
                res.headers_mut().insert(header::LOCATION, v);
            }
            return Ok(res);
        }
        EntryResult::Read { .. } | EntryResult::Search { .. } => {
            return Err(ApiError::Internal(anyhow::anyhow!("a write produced a read")));
        }
    };
    let location = format!("{base}/{}/{}/_history/{}", w.resource_type, w.id, w.version);
    let body = w.resource.as_ref().map(|r| r.get().to_owned()).unwrap_or_default();
    let mut res = fhir_json(status, body);
    version_headers(res.headers_mut(), w.version, &w.last_updated);
    set_location(&mut res, &location, status == StatusCode::CREATED);
    res.headers_mut().insert(PROJECTION_HEADER.clone(), projection);
    Ok(res)
}

fn base(state: &SharedState, tenant: &TenantId) -> String {
    format!("{}/fhir/{tenant}", state.settings.base_url)
}

/// `POST /fhir/{tenant}/{type}` with `If-None-Exist`.
pub(super) async fn conditional_create(
    state: SharedState,
    target: TypeTarget,
    caller: Caller,
    headers: HeaderMap,
    body: &[u8],
    if_none_exist: &str,
) -> Result<Response, ApiError> {
    let criteria =
        Criteria::parse(if_none_exist).map_err(|m| ApiError::Invalid(format!("If-None-Exist: {m}"), None))?;
    let resource: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    let entry = Entry { body: Some(resource), if_none_exist: Some(criteria), ..Entry::new(Method::Post, target.rt) };
    let outcome = run(&state, &target.t, &caller, vec![entry]).await?.map_err(single_failure)?;
    single(&state, &caller, &headers, &base(&state, &target.t.tenant), outcome).await
}

/// `PUT /fhir/{tenant}/{type}?identifier=...`
#[utoipa::path(put, path = "/fhir/{tenant}/{rtype}", tag = "FHIR", operation_id = "conditional-update", params(super::openapi::TypePath, super::openapi::SearchQuery), request_body(content = super::openapi::Resource, content_type = "application/fhir+json"), responses(super::openapi::WriteResponses))]
pub(super) async fn conditional_update(
    State(state): State<SharedState>,
    target: TypeTarget,
    caller: Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    FhirBody(body): FhirBody,
) -> Result<Response, ApiError> {
    let criteria = criteria(query)?;
    super::write::check_resource_size(&state, body.len())?;
    let resource: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    let entry = Entry {
        conditional: Some(criteria),
        body: Some(resource),
        if_match: if_match(&headers)?,
        ..Entry::new(Method::Put, target.rt)
    };
    let outcome = run(&state, &target.t, &caller, vec![entry]).await?.map_err(single_failure)?;
    single(&state, &caller, &headers, &base(&state, &target.t.tenant), outcome).await
}

/// `DELETE /fhir/{tenant}/{type}?identifier=...`
#[utoipa::path(
    delete,
    path = "/fhir/{tenant}/{rtype}",
    tag = "FHIR",
    operation_id = "conditional-delete",
    params(super::openapi::TypePath, super::openapi::SearchQuery),
    responses(super::openapi::WriteResponses)
)]
pub(super) async fn conditional_delete(
    State(state): State<SharedState>,
    target: TypeTarget,
    caller: Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entry = Entry { conditional: Some(criteria(query)?), ..Entry::new(Method::Delete, target.rt) };
    let outcome = run(&state, &target.t, &caller, vec![entry]).await?.map_err(single_failure)?;
    single(&state, &caller, &headers, &base(&state, &target.t.tenant), outcome).await
}

/// `PATCH /fhir/{tenant}/{type}/{id}` with a JSON Patch document.
#[utoipa::path(patch, path = "/fhir/{tenant}/{rtype}/{id}", tag = "FHIR", operation_id = "patch", params(super::openapi::InstancePath), request_body(content = Vec<serde_json::Value>, description = "JSON Patch (RFC 6902)", content_type = "application/json-patch+json"), responses(super::openapi::WriteResponses))]
pub(super) async fn patch(
    State(state): State<SharedState>,
    target: InstanceTarget,
    caller: Caller,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !ct.starts_with("application/json-patch+json") {
        return Err(ApiError::UnsupportedMediaType("PATCH takes application/json-patch+json (JSON Patch)".into()));
    }
    super::write::check_resource_size(&state, body.len())?;
    super::sharing::refuse_shadowing(&state, &target.t, target.rt, &target.id).await?;
    let doc: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    let entry = Entry {
        id: Some(target.id.clone()),
        body: Some(doc),
        if_match: if_match(&headers)?,
        ..Entry::new(Method::Patch, target.rt)
    };
    let t = target.t.clone();
    let outcome = run(&state, &t, &caller, vec![entry]).await?.map_err(single_failure)?;
    single(&state, &caller, &headers, &base(&state, &t.tenant), outcome).await
}
