//! `_history` at every level — one resource, one type, the whole tenant —
//! newest first, with `_since`, `_at` (point in time), `_count` and sealed
//! paging cursors. A resource the tenant reads from the shared space
//! answers with the shared history, tagged.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;

use query::history::ChangeFilter;
use query::search::sql::Position;
use schemas::scope::Interaction;
use schemas::{ResourceId, ResourceType, TenantId};

use super::auth::Caller;
use super::bundle::{self, Link};
use super::extract::{InTenant, InstanceTarget, TypeTarget};
use super::response::fhir_json;
use super::search::query_pairs;
use super::{ApiError, SharedState};

const DEFAULT_COUNT: u32 = 100;

/// What a listing covers, and whose versions answer for it.
struct Scope<'a> {
    /// The tenant whose versions are read (the shared space for a shared
    /// resource the tenant reads).
    owner: TenantId,
    rt: Option<ResourceType>,
    id: Option<&'a ResourceId>,
}

/// `GET /fhir/{tenant}/{type}/{id}/_history`
#[utoipa::path(
    get,
    path = "/fhir/{tenant}/{rtype}/{id}/_history",
    tag = "FHIR",
    operation_id = "instance-history",
    params(super::openapi::InstancePath, super::openapi::HistoryQuery),
    responses(super::openapi::BundleResponses)
)]
pub(super) async fn instance_history(
    State(state): State<SharedState>,
    target: InstanceTarget,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    caller.require(target.rt, Interaction::Read)?;
    // A malformed request is a 400 whether or not the resource exists.
    let params = params(&uri)?;
    let queries = state.reads(&target.t)?;
    let (tenant, rt, id) = (&target.t.tenant, target.rt, &target.id);
    let owner = match queries.read(tenant, rt, id).await? {
        Some(_) => tenant.clone(),
        None if target.t.reads_shared(rt) && queries.read(&TenantId::shared(), rt, id).await?.is_some() => {
            TenantId::shared()
        }
        // The one "not found", whether the id never existed or exists only
        // in another tenant.
        None => return Err(ApiError::NotFound(format!("{rt}/{id} is not known"))),
    };
    listing(&state, &target.t, &caller, Scope { owner, rt: Some(rt), id: Some(id) }, params).await
}

/// `GET /fhir/{tenant}/{type}/_history`
#[utoipa::path(
    get,
    path = "/fhir/{tenant}/{rtype}/_history",
    tag = "FHIR",
    operation_id = "type-history",
    params(super::openapi::TypePath, super::openapi::HistoryQuery),
    responses(super::openapi::BundleResponses)
)]
pub(super) async fn type_history(
    State(state): State<SharedState>,
    target: TypeTarget,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    // A type's history lists every resource of the type, like a search
    // (SMART v2 puts history-type under `s`): read alone, which opens
    // resources whose ids are known, must not enumerate them.
    caller.require(target.rt, Interaction::Search)?;
    let scope = Scope { owner: target.t.tenant.clone(), rt: Some(target.rt), id: None };
    listing(&state, &target.t, &caller, scope, params(&uri)?).await
}

/// `GET /fhir/{tenant}/_history`
#[utoipa::path(
    get,
    path = "/fhir/{tenant}/_history",
    tag = "FHIR",
    operation_id = "system-history",
    params(super::openapi::TenantPath, super::openapi::HistoryQuery),
    responses(super::openapi::BundleResponses)
)]
pub(super) async fn system_history(
    State(state): State<SharedState>,
    t: InTenant,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    // Versions of every type: only for a token that may search every type
    // (like type history, an enumeration; SMART v2 `s`).
    if !ResourceType::all().all(|rt| caller.allows(rt, Interaction::Search)) {
        return Err(ApiError::Forbidden("system history needs search access to every resource type".into()));
    }
    let scope = Scope { owner: t.tenant.clone(), rt: None, id: None };
    listing(&state, &t, &caller, scope, params(&uri)?).await
}

/// The parameters of a history request, as sent (for links and cursors)
/// and as parsed (for the query).
#[derive(Default)]
struct Params {
    filter: ChangeFilter,
    count: Option<u32>,
    cursor: Option<String>,
    /// `_since` and `_at` as sent, in that order, for links and the cursor.
    echoed: Vec<(&'static str, String)>,
}

fn params(uri: &Uri) -> Result<Params, ApiError> {
    let mut p = Params::default();
    for (k, v) in query_pairs(uri.query().unwrap_or_default().as_bytes()) {
        match k.as_str() {
            "_since" | "_at" => {
                let range =
                    schemas::search::parse_date_range(&v).map_err(|e| ApiError::invalid(format!("{k}: {e}")))?;
                if k == "_since" {
                    p.filter.since = Some(range.lo);
                    p.echoed.retain(|(n, _)| *n != "_since");
                    p.echoed.push(("_since", v));
                } else {
                    p.filter.at = Some((range.lo, range.hi));
                    p.echoed.retain(|(n, _)| *n != "_at");
                    p.echoed.push(("_at", v));
                }
            }
            "_count" => {
                let n = v
                    .parse::<u32>()
                    .map_err(|_| ApiError::invalid(format!("_count '{v}' is not a non-negative integer")))?;
                p.count = Some(n);
            }
            "_cursor" => p.cursor = Some(v),
            "_list" | "_sort" => return Err(ApiError::invalid(format!("{k} is not supported on _history"))),
            _ => {}
        }
    }
    p.echoed.sort();
    Ok(p)
}

async fn listing(
    state: &SharedState,
    t: &InTenant,
    caller: &Caller,
    scope: Scope<'_>,
    params: Params,
) -> Result<Response, ApiError> {
    let Params { mut filter, count, cursor, echoed } = params;
    filter.resource_type = scope.rt;
    filter.id = scope.id.cloned();
    let count = count.unwrap_or(DEFAULT_COUNT).min(state.settings.search.max_count);
    let key = &state.settings.search.cursor_key;
    let path = match (scope.rt, scope.id) {
        (Some(rt), Some(id)) => format!("{rt}/{id}/_history"),
        (Some(rt), None) => format!("{rt}/_history"),
        _ => "_history".to_owned(),
    };
    let echoed_text: Vec<String> = echoed.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // Bound to tenant, caller, listing and filters: a cursor opens nowhere else.
    let binding = format!("{}\n{}\n{path}\n{}", t.tenant, caller.actor.sub, echoed_text.join("&"));
    if let Some(c) = &cursor {
        let pos = key.open(&binding, c)?;
        let seq = pos.keys.first().cloned().flatten().and_then(|s| s.parse::<i64>().ok());
        filter.before_seq = Some(seq.ok_or(query::search::SearchError::BadCursor)?);
    }
    let (mut rows, total) = state.reads(t)?.changes(&scope.owner, &filter, i64::from(count) + 1).await?;
    let more = rows.len() > count as usize;
    rows.truncate(count as usize);
    let base = t.base_url(&state.settings.base_url);
    let url = format!("{base}/{path}");
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &echoed {
        query.append_pair(k, v);
    }
    query.append_pair("_count", &count.to_string());
    let query = query.finish();
    let mut self_url = format!("{url}?{query}");
    if let Some(c) = &cursor {
        self_url.push_str(&format!("&_cursor={c}"));
    }
    let mut links = vec![Link { relation: "self", url: self_url }];
    if let (true, Some(last)) = (more, rows.last()) {
        let pos = Position {
            backward: false,
            keys: vec![Some(last.seq.to_string())],
            rtype: String::new(),
            id: String::new(),
        };
        links.push(Link { relation: "next", url: format!("{url}?{query}&_cursor={}", key.seal(&binding, &pos)) });
    }
    let shared = scope.owner != t.tenant;
    let bundle = bundle::history(&base, total, links, rows, shared)?;
    let body = serde_json::to_vec(&bundle).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(fhir_json(StatusCode::OK, body))
}
