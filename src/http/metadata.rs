//! The CapabilityStatement: lists only what this server really does.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use schemas::r4::FHIR_VERSION;
use schemas::{ResourceType, TenantConfig, TenantId};

use super::response::fhir_json;
use super::{ApiError, SharedState};

/// `GET /fhir/{tenant}/metadata`. Public: a caller whose token may use
/// the tenant gets the tenant's own statement (404 if it does not exist);
/// anyone else gets the server's generic statement for any well-formed
/// tenant name, so the endpoint is no oracle for which tenants exist.
pub(super) async fn capability_statement(
    State(state): State<SharedState>,
    Path(raw): Path<String>,
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
        interactions.extend(["read", "vread", "history-instance"]);
    }
    if writes {
        interactions.extend(["create", "update", "delete"]);
    }
    let interactions: Vec<Value> = interactions.into_iter().map(|code| json!({ "code": code })).collect();
    let resources: Vec<Value> = ResourceType::all()
        .filter(|rt| config.allows(rt.as_str()))
        .map(|rt| {
            json!({
                "type": rt.as_str(),
                "interaction": interactions,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": false,
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
            })
        })
        .collect();
    let statement = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": schemas::event::instant(&date),
        "kind": "instance",
        "software": { "name": "fhirstream", "version": env!("CARGO_PKG_VERSION") },
        "implementation": {
            "description": format!("fhirstream tenant {tenant}"),
            "url": format!("{}/fhir/{tenant}", state.settings.base_url),
        },
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Search, transactions, batches and conditional operations are not implemented yet.",
            "resource": resources,
        }],
    });
    Ok(fhir_json(StatusCode::OK, statement.to_string()))
}
