//! The shared space seen from a tenant: how shared resources are marked in
//! answers, and the rule that a tenant's base never writes over one.

use serde_json::{Value, json};

use schemas::{ResourceId, ResourceType};

use super::extract::InTenant;
use super::{ApiError, AppState};

/// The `meta.tag` on every shared resource a tenant receives.
pub(super) const SHARED_TAG_SYSTEM: &str = "https://fhirstream.dev/CodeSystem/tenancy";
pub(super) const SHARED_TAG_CODE: &str = "shared";

/// Marks a resource served from the shared space.
pub(super) fn tag_shared(resource: &mut Value) {
    let Some(obj) = resource.as_object_mut() else { return };
    let meta = obj.entry("meta").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else { return };
    let tags = meta.entry("tag").or_insert_with(|| json!([]));
    if let Some(tags) = tags.as_array_mut() {
        tags.push(json!({"system": SHARED_TAG_SYSTEM, "code": SHARED_TAG_CODE, "display": "shared resource"}));
    }
}

/// Tags a stored body (text) as shared.
pub(crate) fn tagged(body: &str) -> Result<String, ApiError> {
    let mut v: Value = serde_json::from_str(body).map_err(|e| ApiError::Internal(e.into()))?;
    tag_shared(&mut v);
    serde_json::to_string(&v).map_err(|e| ApiError::Internal(e.into()))
}

/// 409 when `rt/id` is a live shared resource the tenant reads: writing it
/// through the tenant's base would shadow or alter a shared resource. The
/// message says only what the tenant can already read.
pub(super) async fn refuse_shadowing(
    state: &AppState,
    t: &InTenant,
    rt: ResourceType,
    id: &ResourceId,
) -> Result<(), ApiError> {
    if !t.reads_shared(rt) {
        return Ok(());
    }
    let Some(queries) = &state.queries else { return Ok(()) };
    let shared = schemas::TenantId::shared();
    if let Some(query::ReadResult::Live(_)) = queries.read(&shared, rt, id).await? {
        return Err(ApiError::Conflict(format!(
            "{rt}/{id} is a shared resource; it can be changed only through the shared space (/fhir/shared)"
        )));
    }
    Ok(())
}
