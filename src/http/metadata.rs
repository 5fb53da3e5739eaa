//! The CapabilityStatement: lists only what this server really does.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use schemas::ResourceType;
use schemas::r4::FHIR_VERSION;

use super::extract::InTenant;
use super::response::fhir_json;
use super::{ApiError, SharedState};

/// `GET /fhir/{tenant}/metadata`
pub(super) async fn capability_statement(State(state): State<SharedState>, t: InTenant) -> Result<Response, ApiError> {
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
        .filter(|rt| t.state.config.allows(rt.as_str()))
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
        "date": schemas::event::instant(&t.state.updated_at),
        "kind": "instance",
        "software": { "name": "fhirstream", "version": env!("CARGO_PKG_VERSION") },
        "implementation": {
            "description": format!("fhirstream tenant {}", t.tenant),
            "url": format!("{}/fhir/{}", state.settings.base_url, t.tenant),
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
