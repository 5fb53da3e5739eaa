//! The CapabilityStatement: lists only what this server really does.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use schemas::r4::FHIR_VERSION;
use schemas::search::{self, ParamKind};
use schemas::{ResourceType, TenantConfig, TenantId};

use super::extract::PathText;
use super::response::fhir_json;
use super::{ApiError, SharedState};

/// `GET /fhir/{tenant}/metadata`. Public: a caller whose token may use
/// the tenant gets the tenant's own statement (404 if it does not exist);
/// anyone else gets the server's generic statement for any well-formed
/// tenant name, so the endpoint is no oracle for which tenants exist.
#[utoipa::path(get, path = "/fhir/{tenant}/metadata", tag = "FHIR", operation_id = "capabilities", security(()), params(super::openapi::TenantPath), responses(super::openapi::ResourceResponses))]
pub(super) async fn capability_statement(
    State(state): State<SharedState>,
    PathText(raw): PathText,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let unknown = || ApiError::NotFound("unknown tenant".into());
    let tenant = TenantId::parse(&raw).map_err(|_| unknown())?;
    let (config, date) = match state.auth.authenticate(&headers) {
        Ok(caller) if caller.may_use(&tenant) => {
            let t = state.tenants.get(&tenant).await?.ok_or_else(unknown)?;
            (t.config, t.updated_at)
        }
        _ => (TenantConfig::default(), chrono::DateTime::UNIX_EPOCH),
    };
    let writes = state.commands.is_some();
    let reads = state.queries.is_some();
    let mut interactions = Vec::new();
    if reads {
        interactions.extend(["read", "vread", "history-instance", "history-type", "search-type"]);
    }
    if writes {
        interactions.extend(["create", "update", "patch", "delete"]);
    }
    let interactions: Vec<Value> = interactions.into_iter().map(|code| json!({ "code": code })).collect();
    let allowed: Vec<ResourceType> = ResourceType::all().filter(|rt| config.allows(rt.as_str())).collect();
    let resources: Vec<Value> = allowed.iter().map(|rt| resource_entry(*rt, &allowed, &interactions, reads)).collect();
    let mut system = Vec::new();
    if writes {
        system.extend(["transaction", "batch"]);
    }
    if reads {
        system.extend(["search-system", "history-system"]);
    }
    let system: Vec<Value> = system.into_iter().map(|code| json!({ "code": code })).collect();
    let mut statement = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": schemas::event::instant(&date),
        "kind": "instance",
        "software": { "name": "fhirstream", "version": env!("CARGO_PKG_VERSION") },
        "implementation": {
            "description": format!("fhirstream tenant {tenant}"),
            "url": format!("{}/fhir/{tenant}", state.settings.base_url),
        },
        "fhirVersion": config.fhir_version.as_deref().unwrap_or(FHIR_VERSION),
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "documentation": DOCUMENTATION,
            "resource": resources,
            "interaction": system,
            "searchParam": common_params(),
        }],
    });
    if reads {
        add_bulk_export(&mut statement);
    }
    if let Some(smart) = &state.settings.smart {
        statement["rest"][0]["security"] = smart.security();
    }
    let body = statement.to_string();
    // The statement changes only with the tenant's configuration and the
    // server's build: a digest of it is a stable ETag, so clients revalidate
    // with If-None-Match instead of downloading it again.
    let etag = {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        format!("W/\"{:016x}\"", h.finish())
    };
    let matches = headers
        .get(axum::http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if matches {
        axum::response::IntoResponse::into_response(StatusCode::NOT_MODIFIED)
    } else {
        fhir_json(StatusCode::OK, body)
    };
    if let Ok(v) = axum::http::HeaderValue::from_str(&etag) {
        res.headers_mut().insert(axum::http::header::ETAG, v);
    }
    Ok(res)
}

const DOCUMENTATION: &str = "Search supports every R4 search parameter of type string, token, date, reference, \
number, quantity and uri, with the modifiers :missing, :exact, :contains, :not, :text, :[Type], :below and :above; \
chains two levels deep and _has one level deep; _text (narrative) and _content (whole resource) as full-text \
searches of every word; _include and _revinclude (with :iterate, one level); _sort, _count, _total, \
_summary (true, count, text, data, false; also on read) and _elements (mandatory and modifier elements always kept). Not supported: composite and special parameters (each \
resource lists the ones it lacks), _query, _filter, _list, unit conversion of quantities, \
token :in/:not-in/:below/:above/:of-type and reference :identifier. Conditional create, update and delete \
take any supported search criteria; concurrent conditional creates with the same criteria make one resource.";

/// FHIR Bulk Data: `$export` at system level and on Patient.
fn add_bulk_export(statement: &mut Value) {
    const IG: &str = "http://hl7.org/fhir/uv/bulkdata";
    statement["instantiates"] = json!([format!("{IG}/CapabilityStatement/bulk-data")]);
    let rest = &mut statement["rest"][0];
    rest["operation"] = json!([{ "name": "export", "definition": format!("{IG}/OperationDefinition/export") }]);
    for (rt, definition) in [("Patient", "patient-export"), ("Group", "group-export")] {
        let Some(entry) = rest["resource"].as_array_mut().and_then(|rs| rs.iter_mut().find(|r| r["type"] == rt)) else {
            continue;
        };
        let export = json!({ "name": "export", "definition": format!("{IG}/OperationDefinition/{definition}") });
        match entry["operation"].as_array_mut() {
            Some(ops) => ops.push(export),
            None => entry["operation"] = json!([export]),
        }
    }
}

fn common_params() -> Vec<Value> {
    let Some(any) = ResourceType::all().next() else { return Vec::new() };
    let mut params: Vec<Value> = search::params(any)
        .iter()
        .filter(|p| p.name.starts_with('_'))
        .map(|p| json!({ "name": p.name, "definition": p.url, "type": p.kind.as_str() }))
        .collect();
    // Full text, answered by PostgreSQL rather than the index.
    params.push(json!({ "name": "_text", "definition": "http://hl7.org/fhir/SearchParameter/DomainResource-text", "type": "string" }));
    params.push(json!({ "name": "_content", "definition": "http://hl7.org/fhir/SearchParameter/Resource-content", "type": "string" }));
    params
}

/// One type's entry: its interactions, parameters, includes and the
/// official parameters it does not support.
fn resource_entry(rt: ResourceType, allowed: &[ResourceType], interactions: &[Value], reads: bool) -> Value {
    let mut entry = json!({
        "type": rt.as_str(),
        "interaction": interactions,
        "versioning": "versioned-update",
        "readHistory": true,
        "updateCreate": true,
        "conditionalCreate": true,
        "conditionalUpdate": true,
        "conditionalDelete": "single",
        "conditionalRead": "full-support",
        "operation": [{ "name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate" }],
    });
    if !reads {
        return entry;
    }
    let params = search::params(rt);
    entry["searchParam"] =
        params.iter().map(|p| json!({ "name": p.name, "definition": p.url, "type": p.kind.as_str() })).collect();
    entry["searchInclude"] = params
        .iter()
        .filter(|p| p.kind == ParamKind::Reference)
        .map(|p| Value::from(format!("{rt}:{}", p.name)))
        .collect();
    entry["searchRevInclude"] = allowed
        .iter()
        .flat_map(|src| {
            search::params(*src)
                .iter()
                .filter(|p| p.kind == ParamKind::Reference && p.targets.contains(&rt))
                .map(move |p| Value::from(format!("{src}:{}", p.name)))
        })
        .collect();
    let missing = search::unsupported(rt);
    if !missing.is_empty() {
        entry["documentation"] = format!("Search parameters not supported: {}.", missing.join(", ")).into();
    }
    entry
}
