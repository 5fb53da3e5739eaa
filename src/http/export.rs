//! FHIR Bulk Data `$export` at system (tenant) and Patient level: async
//! kick-off (202 + `Content-Location`), status polling, cancellation and
//! the NDJSON downloads. Status and files answer 404 to a token without
//! the tenant or of another client, exactly as for a job that does not
//! exist, so nothing about another tenant's or client's exports can be
//! inferred.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use schemas::scope::Interaction;
use schemas::{ResourceType, TenantId};

use super::access::bulk_types;
use super::auth::Caller;
use super::extract::{InTenant, InstanceTarget, TypeTarget};
use super::search::query_pairs;
use super::{ApiError, SharedState};
use crate::export::ExportSpec;
use crate::export::jobs::{ExportJobs, JobError, JobRecord, JobStatus};

const NDJSON_FORMATS: &[&str] = &["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// `GET /fhir/{tenant}/$export`
pub(super) async fn system(
    State(state): State<SharedState>,
    t: InTenant,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    kick_off(&state, &t, &caller, &headers, &uri, Level::System).await
}

/// `GET /fhir/{tenant}/Patient/$export` (no other type level is defined).
pub(super) async fn type_level(
    State(state): State<SharedState>,
    target: TypeTarget,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    if target.rt.as_str() != "Patient" {
        return Err(ApiError::invalid(format!(
            "$export is defined at system level, for Patient and for Group/[id], not for {}",
            target.rt
        )));
    }
    kick_off(&state, &target.t, &caller, &headers, &uri, Level::Patient(None)).await
}

/// `GET /fhir/{tenant}/Group/{id}/$export`: the Group's member Patients
/// and their compartments. The Group is the tenant's own, read like any
/// resource (a missing or other tenant's Group is a plain 404).
pub(super) async fn group_level(
    State(state): State<SharedState>,
    target: InstanceTarget,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    if target.rt.as_str() != "Group" {
        return Err(ApiError::NotFound("instance-level $export is defined for Group only".into()));
    }
    caller.require(target.rt, Interaction::Read)?;
    let queries = state.reads(&target.t)?;
    let not_found = || ApiError::NotFound(format!("Group/{} is not known", target.id));
    let group = match queries.read(&target.t.tenant, target.rt, &target.id).await? {
        Some(query::ReadResult::Live(v)) => v.resource.ok_or_else(not_found)?,
        _ => return Err(not_found()),
    };
    let members = group_members(&group).map_err(|e| ApiError::Internal(anyhow::anyhow!("a stored Group: {e}")))?;
    kick_off(&state, &target.t, &caller, &headers, &uri, Level::Patient(Some(members))).await
}

/// The Patient ids a Group's `member.entity` references name (relative
/// `Patient/{id}` references; other member types have no compartment).
fn group_members(group: &str) -> Result<Vec<String>, serde_json::Error> {
    let group: serde_json::Value = serde_json::from_str(group)?;
    let mut ids: Vec<String> = group["member"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["entity"]["reference"].as_str())
        .filter_map(|r| r.strip_prefix("Patient/"))
        .filter(|id| schemas::ResourceId::parse(id).is_ok())
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// What an export covers.
enum Level {
    System,
    /// Patient level: every Patient, or only a Group's members.
    Patient(Option<Vec<String>>),
}

fn jobs(state: &SharedState) -> Result<&std::sync::Arc<ExportJobs>, ApiError> {
    state.exports.as_ref().ok_or_else(|| ApiError::MethodNotAllowed("this node does not serve reads".into()))
}

fn prefers(headers: &HeaderMap, what: &str) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|p| p.trim().eq_ignore_ascii_case(what))
}

async fn kick_off(
    state: &SharedState,
    t: &InTenant,
    caller: &Caller,
    headers: &HeaderMap,
    uri: &Uri,
    level: Level,
) -> Result<Response, ApiError> {
    let (patient_level, patients) = match level {
        Level::System => (false, None),
        Level::Patient(members) => (true, members),
    };
    if !prefers(headers, "respond-async") {
        return Err(ApiError::invalid("$export runs asynchronously: send Prefer: respond-async"));
    }
    let lenient = prefers(headers, "handling=lenient");
    let mut named: Vec<ResourceType> = Vec::new();
    let mut since: Option<DateTime<Utc>> = None;
    for (k, v) in query_pairs(uri.query().unwrap_or_default().as_bytes()) {
        match k.as_str() {
            "_type" => {
                for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let rt = ResourceType::parse(name).map_err(|e| ApiError::invalid(format!("_type: {e}")))?;
                    if !t.state.config.allows(rt.as_str()) {
                        return Err(ApiError::invalid(format!("_type: {rt} is not enabled for this tenant")));
                    }
                    if patient_level && schemas::r4::patient_compartment(rt).is_none() {
                        return Err(ApiError::invalid(format!("_type: {rt} is not in the Patient compartment")));
                    }
                    if !named.contains(&rt) {
                        named.push(rt);
                    }
                }
            }
            "_since" => {
                if since.is_some() {
                    return Err(ApiError::invalid("_since may be given once"));
                }
                since = Some(parse_instant(&v)?);
            }
            "_outputFormat" if NDJSON_FORMATS.contains(&v.as_str()) => {}
            "_outputFormat" => {
                return Err(ApiError::invalid(format!(
                    "_outputFormat '{}' is not supported; use application/fhir+ndjson",
                    v.chars().take(80).collect::<String>()
                )));
            }
            _ if lenient => {}
            other => {
                return Err(ApiError::invalid(format!(
                    "$export parameter '{}' is not supported (supported: _type, _since, _outputFormat)",
                    other.chars().take(80).collect::<String>()
                )));
            }
        }
    }
    // `_type` is intersected with what the token may read in bulk (read
    // and search: an export enumerates, like a search); nothing left is a
    // refusal, never an export of everything.
    let enabled = |rt: ResourceType| {
        t.state.config.allows(rt.as_str()) && (!patient_level || schemas::r4::patient_compartment(rt).is_some())
    };
    let bulk_readable =
        |rt: ResourceType| caller.allows(rt, Interaction::Read) && caller.allows(rt, Interaction::Search);
    let types = bulk_types(&named, enabled, bulk_readable).map_err(ApiError::Forbidden)?;
    let shared_reads = t.shared_reads.iter().copied().filter(|rt| types.contains(rt)).collect();
    let spec = ExportSpec { tenant: t.tenant.clone(), types, since, patient_level, patients, shared_reads };
    let request = format!("{}{}", state.settings.base_url, uri.path_and_query().map(|p| p.as_str()).unwrap_or(""));
    let own = t.state.config.quotas.and_then(|q| q.exports);
    let job = jobs(state)?.start(spec, request, caller.actor.sub.clone(), own).await.map_err(|e| match e {
        JobError::Busy => ApiError::Overloaded(e.to_string()),
        JobError::TenantBusy(_) => ApiError::TooManyRequests(e.to_string()),
        JobError::Io(e) => ApiError::Internal(e.context("start an export")),
    })?;
    let location = format!("{}/fhir/{}/$export-status/{job}", state.settings.base_url, t.tenant);
    let mut res = StatusCode::ACCEPTED.into_response();
    let value = HeaderValue::from_str(&location).map_err(|e| ApiError::Internal(e.into()))?;
    res.headers_mut().insert(header::CONTENT_LOCATION, value);
    Ok(res)
}

/// A FHIR instant (RFC 3339 with a zone). A `+` in a query string that was
/// not percent-encoded arrives as a space; it is read back as `+`.
fn parse_instant(raw: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw.trim())
        .or_else(|_| DateTime::parse_from_rfc3339(&raw.trim().replace(' ', "+")))
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::invalid(format!(
                "_since '{}' is not a FHIR instant (e.g. 2024-01-31T12:00:00Z)",
                raw.chars().take(80).collect::<String>()
            ))
        })
}

/// The tenant and job of a status or file URL. A token without the tenant,
/// an unknown tenant, an unknown job and another client's job are the same
/// 404: a job answers only the client (`sub`) that started it, since its
/// files hold what that client's scopes allowed, not the caller's.
async fn job_target(
    state: &SharedState,
    caller: &Caller,
    tenant: &str,
    job: &str,
) -> Result<(TenantId, Uuid, JobRecord), ApiError> {
    let missing = || ApiError::NotFound("no such export".into());
    let tenant = TenantId::parse(tenant).map_err(|_| missing())?;
    if !caller.may_use(&tenant) || state.tenants.get(&tenant).await?.is_none() {
        return Err(missing());
    }
    let job = Uuid::parse_str(job).map_err(|_| missing())?;
    let record = jobs(state)?.status(&tenant, job).await.map_err(ApiError::Internal)?.ok_or_else(missing)?;
    if record.owner.as_deref() != Some(caller.actor.sub.as_str()) {
        return Err(missing());
    }
    Ok((tenant, job, record))
}

/// `GET /fhir/{tenant}/$export-status/{job}`
pub(super) async fn status(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant, job)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (tenant, job, record) = job_target(&state, &caller, &tenant, &job).await?;
    match record.status {
        JobStatus::InProgress => {
            let mut res = StatusCode::ACCEPTED.into_response();
            let h = res.headers_mut();
            h.insert(
                "x-progress",
                HeaderValue::from_str(&record.progress).unwrap_or(HeaderValue::from_static("in progress")),
            );
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(res)
        }
        JobStatus::Failed => {
            Err(ApiError::Internal(anyhow::anyhow!("export {job} failed: {}", record.error.unwrap_or_default())))
        }
        JobStatus::Completed => {
            let base = format!("{}/fhir/{tenant}/$export-file/{job}", state.settings.base_url);
            let output: Vec<serde_json::Value> = record
                .output
                .iter()
                .map(|w| {
                    serde_json::json!({
                        "type": w.resource_type,
                        "url": format!("{base}/{}.ndjson", w.resource_type),
                        "count": w.count,
                    })
                })
                .collect();
            let manifest = serde_json::json!({
                "transactionTime": record.transaction_time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "request": record.request,
                "requiresAccessToken": true,
                "output": output,
                "error": [],
            });
            let mut res = (StatusCode::OK, manifest.to_string()).into_response();
            res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(res)
        }
    }
}

/// `DELETE /fhir/{tenant}/$export-status/{job}`: cancels the job (if it
/// runs) and removes it with its files.
pub(super) async fn cancel(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant, job)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (tenant, job, _) = job_target(&state, &caller, &tenant, &job).await?;
    if !jobs(&state)?.delete(&tenant, job).await.map_err(ApiError::Internal)? {
        return Err(ApiError::NotFound("no such export".into()));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /fhir/{tenant}/$export-file/{job}/{Type}.ndjson`
pub(super) async fn file(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant, job, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let (tenant, job, _) = job_target(&state, &caller, &tenant, &job).await?;
    let missing = || ApiError::NotFound("no such export file".into());
    let rt = name.strip_suffix(".ndjson").and_then(|n| ResourceType::parse(n).ok()).ok_or_else(missing)?;
    caller.require(rt, Interaction::Read)?;
    let path = jobs(&state)?.file(&tenant, job, rt).await.map_err(ApiError::Internal)?.ok_or_else(missing)?;
    let f = tokio::fs::File::open(&path).await.map_err(|_| missing())?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(f));
    let mut res = (StatusCode::OK, body).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+ndjson"));
    Ok(res)
}
