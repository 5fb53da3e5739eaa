//! Type- and system-level `_history`: a tenant's versions newest first,
//! with `_since`, `_count` and sealed paging cursors.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use query::history::{Change, ChangeFilter};
use query::search::sql::Position;
use schemas::ResourceType;
use schemas::event::instant;
use schemas::scope::Interaction;

use super::auth::Caller;
use super::extract::{InTenant, TypeTarget};
use super::response::fhir_json;
use super::search::query_pairs;
use super::{ApiError, SharedState};

const DEFAULT_COUNT: u32 = 100;

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
    caller.require(target.rt, Interaction::Read)?;
    listing(&state, &target.t, &caller, Some(target.rt), &uri).await
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
    // Versions of every type: only for a token that may read every type.
    if !ResourceType::all().all(|rt| caller.allows(rt, Interaction::Read)) {
        return Err(ApiError::Forbidden("system history needs read access to every resource type".into()));
    }
    listing(&state, &t, &caller, None, &uri).await
}

async fn listing(
    state: &SharedState,
    t: &InTenant,
    caller: &Caller,
    rt: Option<ResourceType>,
    uri: &Uri,
) -> Result<Response, ApiError> {
    let mut filter = ChangeFilter { resource_type: rt, ..Default::default() };
    let mut count = DEFAULT_COUNT;
    let (mut since_raw, mut cursor) = (String::new(), None);
    for (k, v) in query_pairs(uri.query().unwrap_or_default().as_bytes()) {
        match k.as_str() {
            "_since" => {
                let range =
                    schemas::search::parse_date_range(&v).map_err(|e| ApiError::invalid(format!("_since: {e}")))?;
                filter.since = Some(range.lo);
                since_raw = v;
            }
            "_count" => {
                count = v
                    .parse::<u32>()
                    .map_err(|_| ApiError::invalid(format!("_count '{v}' is not a non-negative integer")))?;
            }
            "_cursor" => cursor = Some(v),
            "_at" | "_list" | "_sort" => {
                return Err(ApiError::invalid(format!("{k} is not supported on _history")));
            }
            _ => {}
        }
    }
    let count = count.min(state.settings.search.max_count);
    let key = &state.settings.search.cursor_key;
    let binding =
        format!("{}\n{}\n_history\n{}\n{since_raw}", t.tenant, caller.actor.sub, rt.map(|r| r.as_str()).unwrap_or(""));
    if let Some(c) = &cursor {
        let pos = key.open(&binding, c)?;
        let seq = pos.keys.first().cloned().flatten().and_then(|s| s.parse::<i64>().ok());
        filter.before_seq = Some(seq.ok_or(query::search::SearchError::BadCursor)?);
    }
    let (mut rows, total) = state.queries()?.changes(&t.tenant, &filter, i64::from(count) + 1).await?;
    let more = rows.len() > count as usize;
    rows.truncate(count as usize);
    let base = format!("{}/fhir/{}", state.settings.base_url, t.tenant);
    let url = match rt {
        Some(rt) => format!("{base}/{rt}/_history"),
        None => format!("{base}/_history"),
    };
    let mut params = url::form_urlencoded::Serializer::new(String::new());
    if !since_raw.is_empty() {
        params.append_pair("_since", &since_raw);
    }
    params.append_pair("_count", &count.to_string());
    let params = params.finish();
    let mut self_url = format!("{url}?{params}");
    if let Some(c) = &cursor {
        self_url.push_str(&format!("&_cursor={c}"));
    }
    let mut links = vec![json!({"relation": "self", "url": self_url})];
    if let (true, Some(last)) = (more, rows.last()) {
        let pos = Position {
            backward: false,
            keys: vec![Some(last.seq.to_string())],
            rtype: String::new(),
            id: String::new(),
        };
        let next = format!("{url}?{params}&_cursor={}", key.seal(&binding, &pos));
        links.push(json!({"relation": "next", "url": next}));
    }
    let entries: Vec<Value> = rows.into_iter().map(|c| entry(&base, c)).collect::<Result<_, _>>()?;
    let mut bundle = json!({"resourceType": "Bundle", "type": "history", "total": total, "link": links});
    if !entries.is_empty() {
        bundle["entry"] = entries.into();
    }
    let body = serde_json::to_vec(&bundle).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(fhir_json(StatusCode::OK, body))
}

fn entry(base: &str, c: Change) -> Result<Value, ApiError> {
    let relative = format!("{}/{}", c.resource_type, c.id);
    let (method, status) = match c.op.as_str() {
        "delete" => ("DELETE", "204 No Content"),
        "create" => ("POST", "201 Created"),
        _ => ("PUT", "200 OK"),
    };
    let url = if method == "POST" { c.resource_type.clone() } else { relative.clone() };
    let mut e = json!({
        "fullUrl": format!("{base}/{relative}"),
        "request": {"method": method, "url": url},
        "response": {"status": status, "etag": format!("W/\"{}\"", c.version), "lastModified": instant(&c.last_updated)},
    });
    if let Some(r) = c.resource {
        e["resource"] = serde_json::from_str(&r).map_err(|e| ApiError::Internal(e.into()))?;
    }
    Ok(e)
}
