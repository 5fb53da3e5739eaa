//! Search endpoints: type level (`GET /{type}`, `POST /{type}/_search`) and
//! system level (`GET /`, `POST /_search` with `_type`), answered with
//! `searchset` Bundles whose paging links carry sealed cursors.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use query::search::access::narrow_to_searchable;
use query::search::{self, Hit, SearchOptions, SearchPage, SearchRequest, Summary};
use schemas::ResourceType;
use schemas::scope::Interaction;

use super::access::{SystemTypes, system_search_types};
use super::auth::Caller;
use super::extract::{InTenant, LimitedBody, TypeTarget};
use super::response::fhir_json;
use super::{ApiError, SharedState};

/// `GET /fhir/{tenant}/{type}?...`
#[utoipa::path(
    get,
    path = "/fhir/{tenant}/{rtype}",
    tag = "FHIR",
    operation_id = "search-type",
    params(super::openapi::TypePath, super::openapi::SearchQuery),
    responses(super::openapi::BundleResponses)
)]
pub(super) async fn type_get(
    State(state): State<SharedState>,
    target: TypeTarget,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(uri.query().unwrap_or_default().as_bytes());
    type_search(&state, &target, &caller, &headers, pairs).await
}

/// `POST /fhir/{tenant}/{type}/_search` with a form-encoded body.
#[utoipa::path(post, path = "/fhir/{tenant}/{rtype}/_search", tag = "FHIR", operation_id = "search-type-post", params(super::openapi::TypePath), request_body(content = String, description = "Search parameters, form-encoded", content_type = "application/x-www-form-urlencoded"), responses(super::openapi::BundleResponses))]
pub(super) async fn type_post(
    State(state): State<SharedState>,
    target: TypeTarget,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let pairs = form_pairs(&headers, &uri, &body)?;
    type_search(&state, &target, &caller, &headers, pairs).await
}

/// `GET /fhir/{tenant}?_type=...`
#[utoipa::path(
    get,
    path = "/fhir/{tenant}",
    tag = "FHIR",
    operation_id = "search-system",
    params(super::openapi::TenantPath, super::openapi::SearchQuery),
    responses(super::openapi::BundleResponses)
)]
pub(super) async fn system_get(
    State(state): State<SharedState>,
    t: InTenant,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(uri.query().unwrap_or_default().as_bytes());
    system_search(&state, &t, &caller, &headers, pairs).await
}

/// `POST /fhir/{tenant}/_search` with a form-encoded body.
#[utoipa::path(post, path = "/fhir/{tenant}/_search", tag = "FHIR", operation_id = "search-system-post", params(super::openapi::TenantPath), request_body(content = String, description = "Search parameters, form-encoded", content_type = "application/x-www-form-urlencoded"), responses(super::openapi::BundleResponses))]
pub(super) async fn system_post(
    State(state): State<SharedState>,
    t: InTenant,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let pairs = form_pairs(&headers, &uri, &body)?;
    system_search(&state, &t, &caller, &headers, pairs).await
}

pub(super) fn query_pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

/// The URL's parameters followed by the form body's.
fn form_pairs(headers: &HeaderMap, uri: &Uri, body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let ct = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !body.is_empty() && !ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::UnsupportedMediaType(
            "_search takes its parameters as application/x-www-form-urlencoded".into(),
        ));
    }
    let mut pairs = query_pairs(uri.query().unwrap_or_default().as_bytes());
    pairs.extend(query_pairs(body));
    Ok(pairs)
}

/// `Prefer: handling=strict`.
fn strict(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|p| p.trim().eq_ignore_ascii_case("handling=strict"))
}

async fn type_search(
    state: &SharedState,
    target: &TypeTarget,
    caller: &Caller,
    headers: &HeaderMap,
    pairs: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(target.rt, Interaction::Search)?;
    let path = format!("{}", target.rt);
    run(state, &target.t, caller, headers, (vec![target.rt], Vec::new()), pairs, &path).await
}

async fn system_search(
    state: &SharedState,
    t: &InTenant,
    caller: &Caller,
    headers: &HeaderMap,
    mut pairs: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    let mut named: Vec<ResourceType> = Vec::new();
    let mut type_params = Vec::new();
    pairs.retain(|(k, v)| {
        if k == "_type" {
            type_params.push(v.clone());
            false
        } else {
            true
        }
    });
    for v in &type_params {
        for name in v.split(',').filter(|n| !n.is_empty()) {
            named.push(ResourceType::parse(name).map_err(|e| ApiError::invalid(format!("_type: {e}")))?);
        }
    }
    let decided = system_search_types(
        &named,
        |rt| t.state.config.allows(rt.as_str()),
        |rt| caller.allows(rt, Interaction::Search),
    )
    .map_err(ApiError::Forbidden)?;
    let types: Vec<ResourceType> = match decided {
        SystemTypes::All => Vec::new(),
        SystemTypes::Only(types) => types,
        // Every named type is disabled: nothing can match. An empty list
        // would mean "every type" to the query side, so answer here.
        SystemTypes::Nothing => return empty_searchset(state, t, named, &type_params, &pairs, headers),
    };
    // `_type` stays in the links and in what a cursor is bound to.
    let type_pairs = type_params.iter().map(|v| ("_type".to_string(), v.clone())).collect::<Vec<_>>();
    run(state, t, caller, headers, (types, type_pairs), pairs, "").await
}

/// A search inside a batch or transaction (`GET Patient?family=x` as an
/// entry): the same search as the type-level endpoint, its searchset Bundle
/// returned as the entry's resource.
pub(super) async fn bundle_entry_search(
    state: &SharedState,
    t: &InTenant,
    caller: &Caller,
    rt: ResourceType,
    query: &str,
) -> Result<Value, ApiError> {
    caller.require(rt, Interaction::Search)?;
    if !t.state.config.allows(rt.as_str()) {
        return Err(ApiError::NotFound(format!("resource type {rt} is not enabled for this tenant")));
    }
    let pairs = query_pairs(query.as_bytes());
    let body = searchset_bytes(state, t, caller, false, (vec![rt], Vec::new()), pairs, rt.as_str()).await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::Internal(e.into()))
}

/// The tenant's own live resources of `rt` matching a conditional write's
/// criteria (at most `limit` ids): the read model's half of the answer, the
/// criteria claim on the stream being the other. Unknown or unsupported
/// parameters are errors here, never dropped: a condition that silently
/// matched everything would update or delete the wrong resource.
pub(super) async fn matching_ids(
    state: &SharedState,
    t: &InTenant,
    caller: &Caller,
    rt: ResourceType,
    criteria: &[(String, String)],
    limit: u32,
) -> Result<Vec<schemas::ResourceId>, ApiError> {
    let base = t.base_url(&state.settings.base_url);
    let cx = search::Context { tenant_base: &base, now: chrono::Utc::now(), strict: true };
    let mut req = search::parse(vec![rt], criteria, &cx)?;
    // A condition that chains or uses `_has` reads those types like a search.
    narrow_to_searchable(&mut req, &|rt| caller.allows(rt, Interaction::Search)).map_err(|rt| {
        ApiError::Forbidden(format!("the token's scopes do not allow search of {rt}, which this condition reads"))
    })?;
    req.count = Some(limit);
    req.total = search::Total::None;
    let s = &state.settings.search;
    let opts = SearchOptions {
        default_count: limit,
        max_count: limit,
        max_included: 0,
        key: &s.cursor_key,
        caller: "conditional",
    };
    let page = state.reads(t)?.search(&t.tenant, &req, &opts).await?;
    page.matches
        .into_iter()
        .map(|h| schemas::ResourceId::parse(&h.id).map_err(|e| ApiError::Internal(anyhow::anyhow!("a stored id: {e}"))))
        .collect()
}

async fn run(
    state: &SharedState,
    t: &InTenant,
    caller: &Caller,
    headers: &HeaderMap,
    types: (Vec<ResourceType>, Vec<(String, String)>),
    pairs: Vec<(String, String)>,
    path: &str,
) -> Result<Response, ApiError> {
    let body = searchset_bytes(state, t, caller, strict(headers), types, pairs, path).await?;
    Ok(fhir_json(StatusCode::OK, body))
}

async fn searchset_bytes(
    state: &SharedState,
    t: &InTenant,
    caller: &Caller,
    strict: bool,
    (types, type_pairs): (Vec<ResourceType>, Vec<(String, String)>),
    pairs: Vec<(String, String)>,
    path: &str,
) -> Result<Vec<u8>, ApiError> {
    let base = t.base_url(&state.settings.base_url);
    let cx = search::Context { tenant_base: &base, now: chrono::Utc::now(), strict };
    let mut req = search::parse(types, &pairs, &cx)?;
    // Chains and `_has` read other types: each needs search scope too.
    narrow_to_searchable(&mut req, &|rt| caller.allows(rt, Interaction::Search)).map_err(|rt| {
        ApiError::Forbidden(format!("the token's scopes do not allow search of {rt}, which this search reads"))
    })?;
    req.shared = shared_in_play(&req, &t.shared_reads);
    // `_type` is the scope of a system search, already applied.
    req.canonical.splice(0..0, type_pairs);
    let s = &state.settings.search;
    let opts = SearchOptions {
        default_count: s.default_count,
        max_count: s.max_count,
        max_included: s.max_included,
        key: &s.cursor_key,
        caller: &caller.actor.sub,
    };
    let page = state.reads(t)?.search(&t.tenant, &req, &opts).await?;
    let url = if path.is_empty() { base.clone() } else { format!("{base}/{path}") };
    let bundle = searchset(&state.settings.base_url, t, caller, &req, page, &url)?;
    serde_json::to_vec(&bundle).map_err(|e| ApiError::Internal(e.into()))
}

/// The answer to a system search that can match nothing: an empty
/// searchset with a total of 0. The parameters are still parsed, so a
/// malformed one is the same 400 it would be otherwise.
fn empty_searchset(
    state: &SharedState,
    t: &InTenant,
    named: Vec<ResourceType>,
    type_params: &[String],
    pairs: &[(String, String)],
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let base = t.base_url(&state.settings.base_url);
    let cx = search::Context { tenant_base: &base, now: chrono::Utc::now(), strict: strict(headers) };
    let mut req = search::parse(named, pairs, &cx)?;
    req.canonical.splice(0..0, type_params.iter().map(|v| ("_type".to_string(), v.clone())));
    let link = serde_json::json!({"relation": "self", "url": link(&base, &req.canonical, &[])});
    let bundle =
        SearchSet { resource_type: "Bundle", r#type: "searchset", total: Some(0), link: vec![link], entry: vec![] };
    let body = serde_json::to_vec(&bundle).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(fhir_json(StatusCode::OK, body))
}

fn link(url: &str, canonical: &[(String, String)], extra: &[(&str, &str)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in canonical {
        q.append_pair(k, v);
    }
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() { url.to_string() } else { format!("{url}?{q}") }
}

/// A `searchset` Bundle, serialised without re-parsing the stored
/// resources that need no change (most of them).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SearchSet {
    resource_type: &'static str,
    r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    link: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    entry: Vec<SearchEntry>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SearchEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    full_url: Option<String>,
    resource: Box<RawValue>,
    search: EntryMode,
}

#[derive(Serialize)]
struct EntryMode {
    mode: &'static str,
}

fn searchset(
    server: &str,
    t: &InTenant,
    caller: &Caller,
    req: &SearchRequest,
    page: SearchPage,
    url: &str,
) -> Result<SearchSet, ApiError> {
    let count = page.count.to_string();
    let mut links = Vec::new();
    let mut self_extra = vec![("_count", count.as_str())];
    if let Some(c) = &req.cursor {
        self_extra.push(("_cursor", c));
    }
    let canonical: Vec<(String, String)> = req.canonical.iter().filter(|(k, _)| k != "_count").cloned().collect();
    links.push(serde_json::json!({"relation": "self", "url": link(url, &canonical, &self_extra)}));
    if let Some(c) = &page.next {
        let next = link(url, &canonical, &[("_count", &count), ("_cursor", c)]);
        links.push(serde_json::json!({"relation": "next", "url": next}));
    }
    if let Some(c) = &page.previous {
        let prev = link(url, &canonical, &[("_count", &count), ("_cursor", c)]);
        links.push(serde_json::json!({"relation": "previous", "url": prev}));
    }
    let tenant_base = t.base_url(server);
    let entry = |h: Hit, mode: &'static str, shaped: bool| -> Result<SearchEntry, ApiError> {
        let full_url = format!("{tenant_base}/{}/{}", h.resource_type, h.id);
        let shared = h.tenant != t.tenant.as_str();
        let resource = if !shaped && !shared {
            RawValue::from_string(h.resource).map_err(|e| ApiError::Internal(e.into()))?
        } else {
            let mut v = if shaped {
                shape(&h.resource, req)?
            } else {
                serde_json::from_str(&h.resource).map_err(|e| ApiError::Internal(e.into()))?
            };
            if shared {
                super::sharing::tag_shared(&mut v);
            }
            serde_json::value::to_raw_value(&v).map_err(|e| ApiError::Internal(e.into()))?
        };
        Ok(SearchEntry { full_url: Some(full_url), resource, search: EntryMode { mode } })
    };
    let shaped = req.elements.is_some() || matches!(req.summary, Summary::True | Summary::Text | Summary::Data);
    let mut entries = Vec::with_capacity(page.matches.len() + page.included.len());
    for h in page.matches {
        entries.push(entry(h, "match", shaped)?);
    }
    for h in page.included {
        // Included resources of types the token may not read stay out.
        let readable = ResourceType::parse(&h.resource_type).is_ok_and(|rt| caller.allows(rt, Interaction::Read));
        if readable {
            entries.push(entry(h, "include", false)?);
        }
    }
    // Lenient handling drops what it does not support, but says so: a
    // client must not take an unfiltered result for a filtered one.
    if !req.ignored.is_empty() {
        let mut names: Vec<&str> = req.ignored.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        let outcome = serde_json::json!({"resourceType": "OperationOutcome", "issue": [{
            "severity": "warning",
            "code": "not-supported",
            "diagnostics": format!(
                "these search parameters are unknown or not supported and were ignored: {}; \
                 send Prefer: handling=strict to have them refused",
                names.join(", ")
            ),
        }]});
        let resource = serde_json::value::to_raw_value(&outcome).map_err(|e| ApiError::Internal(e.into()))?;
        entries.push(SearchEntry { full_url: None, resource, search: EntryMode { mode: "outcome" } });
    }
    Ok(SearchSet { resource_type: "Bundle", r#type: "searchset", total: page.total, link: links, entry: entries })
}

/// Applies `_elements` and `_summary` to a match (`schemas::subset`).
fn shape(raw: &str, req: &SearchRequest) -> Result<Value, ApiError> {
    use schemas::subset::{self, Subset};
    let mut v: Value = serde_json::from_str(raw).map_err(|e| ApiError::Internal(e.into()))?;
    let subset = match (&req.elements, req.summary) {
        (Some(names), _) => Subset::Elements(names),
        (None, Summary::True) => Subset::Summary,
        (None, Summary::Text) => Subset::Text,
        (None, Summary::Data) => Subset::Data,
        (None, Summary::False | Summary::Count) => return Ok(v),
    };
    let rt = v.get("resourceType").and_then(Value::as_str).and_then(|t| ResourceType::parse(t).ok());
    if let (Some(rt), Some(map)) = (rt, v.as_object_mut()) {
        subset::apply(map, rt, &subset);
    }
    Ok(v)
}

/// The shared types a search can touch: those searched, chained into,
/// `_has`-joined or included. Only they widen the statement (each one adds
/// an `or` to every join), so a search that cannot meet a shared resource
/// is planned exactly as a tenant-only one.
fn shared_in_play(req: &SearchRequest, shared_reads: &[ResourceType]) -> Vec<ResourceType> {
    use query::search::request::Clause;
    if shared_reads.is_empty() {
        return Vec::new();
    }
    if req.types.is_empty() {
        return shared_reads.to_vec();
    }
    let mut relevant: Vec<ResourceType> = req.types.clone();
    fn walk(c: &Clause, out: &mut Vec<ResourceType>) {
        match c {
            Clause::Chain { targets, inner, .. } => {
                out.extend(targets.iter().copied());
                walk(inner, out);
            }
            Clause::Has { source, inner, .. } => {
                out.push(*source);
                walk(inner, out);
            }
            _ => {}
        }
    }
    for c in &req.clauses {
        walk(c, &mut relevant);
    }
    for inc in req.includes.iter().chain(&req.revincludes) {
        relevant.push(inc.source);
        match inc.target {
            Some(t) => relevant.push(t),
            None => relevant
                .extend(schemas::search::param(inc.source, inc.param).map(|p| p.targets.clone()).unwrap_or_default()),
        }
    }
    shared_reads.iter().copied().filter(|t| relevant.contains(t)).collect()
}
