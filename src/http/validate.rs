//! `$validate` at type and instance level: the write path's validation,
//! with the tenant's rules and any profile it can see, answered as an
//! OperationOutcome, writing nothing.
//!
//! The body is the resource itself or a `Parameters` resource with
//! `resource`, `mode` and `profile`; `mode` and `profile` may also come in
//! the query string. The answer is 200 whether or not the resource is valid
//! (the spec's rule: 4xx means the validation itself could not run).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use schemas::scope::Interaction;
use schemas::validate::{Expect, ValidationError, check_resource_with};
use schemas::{IssueCode, OperationOutcome, ResourceId, ResourceType};

use super::auth::Caller;
use super::extract::{FhirBody, InTenant, InstanceTarget, TypeTarget};
use super::response::fhir_json;
use super::write::WriteParts;
use super::{ApiError, SharedState};

/// `mode` and `profile` from the query string.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ValidateQuery {
    mode: Option<String>,
    profile: Option<String>,
}

/// What `$validate` was asked to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No mode, or `create`: the resource as a new one.
    Create,
    /// `update`: the resource as the new version of the instance.
    Update,
    /// `delete`: whether the instance may be deleted (always: no
    /// referential rules are enforced on delete).
    Delete,
}

impl Mode {
    fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("create") => Ok(Self::Create),
            Some("update") => Ok(Self::Update),
            Some("delete") => Ok(Self::Delete),
            Some(other) => Err(ApiError::invalid(format!(
                "mode '{}' is not one of create, update, delete",
                other.chars().take(40).collect::<String>()
            ))),
        }
    }
}

/// `POST /fhir/{tenant}/{type}/$validate`
#[utoipa::path(post, path = "/fhir/{tenant}/{rtype}/$validate", tag = "FHIR", operation_id = "validate_type", params(super::openapi::TypePath), request_body(content = super::openapi::Resource, content_type = "application/fhir+json"), responses((status = 200, description = "An OperationOutcome: the issues found, or one information issue")))]
pub(super) async fn type_level(
    State(state): State<SharedState>,
    target: TypeTarget,
    caller: Caller,
    Query(q): Query<ValidateQuery>,
    FhirBody(body): FhirBody,
) -> Result<Response, ApiError> {
    require_any(&caller, target.rt)?;
    validate(&state, &target.t, &caller, target.rt, None, q, &body).await
}

/// `POST /fhir/{tenant}/{type}/{id}/$validate`
#[utoipa::path(post, path = "/fhir/{tenant}/{rtype}/{id}/$validate", tag = "FHIR", operation_id = "validate_instance", params(super::openapi::InstancePath), request_body(content = super::openapi::Resource, content_type = "application/fhir+json"), responses((status = 200, description = "An OperationOutcome: the issues found, or one information issue")))]
pub(super) async fn instance_level(
    State(state): State<SharedState>,
    target: InstanceTarget,
    caller: Caller,
    Query(q): Query<ValidateQuery>,
    FhirBody(body): FhirBody,
) -> Result<Response, ApiError> {
    require_any(&caller, target.rt)?;
    validate(&state, &target.t, &caller, target.rt, Some(&target.id), q, &body).await
}

/// Any interaction on the type: validating reveals nothing stored, so a
/// token that may create, update or read the type may ask.
fn require_any(caller: &Caller, rt: ResourceType) -> Result<(), ApiError> {
    if [Interaction::Create, Interaction::Update, Interaction::Read].into_iter().any(|i| caller.allows(rt, i)) {
        Ok(())
    } else {
        caller.require(rt, Interaction::Create)
    }
}

/// Validates as a write of this tenant would be: its strictness, its
/// enforced profiles, the profiles the resource claims, and the `profile`
/// asked for (any profile the tenant can see, or the base definition).
async fn validate(
    state: &SharedState,
    t: &InTenant,
    caller: &Caller,
    rt: ResourceType,
    id: Option<&ResourceId>,
    q: ValidateQuery,
    body: &[u8],
) -> Result<Response, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    let Asked { resource, mode, profile } = unwrap_parameters(value, q)?;
    let mode = Mode::parse(mode.as_deref())?;
    let base = format!("http://hl7.org/fhir/StructureDefinition/{rt}");
    let profile = profile.map(|p| p.split('|').next().unwrap_or_default().to_owned()).filter(|p| *p != base);
    let outcome = match (mode, resource) {
        (Mode::Delete, _) => OperationOutcome::information("the resource may be deleted"),
        (_, None) => return Err(ApiError::invalid("$validate needs a resource to validate")),
        (mode, Some(resource)) => {
            let expect = match (mode, id) {
                (Mode::Update, Some(id)) => Expect::Update(rt, id),
                (Mode::Update, None) => {
                    return Err(ApiError::invalid("mode update needs the instance-level $validate"));
                }
                _ => Expect::Create(rt),
            };
            let parts = WriteParts::new(state, t);
            let cx = parts.context(t, caller);
            let empty = serde_json::Map::new();
            let mut rules = cx.rules([(rt, resource.as_object().unwrap_or(&empty))]).await?;
            if let Some(url) = &profile {
                // Whether a profile exists is StructureDefinition content:
                // asking by URL needs the scope to read them.
                let sd = ResourceType::parse("StructureDefinition").map_err(|e| ApiError::Internal(e.into()))?;
                caller.require(sd, Interaction::Read)?;
                let asked = cx.profiles.profiles(&t.tenant, std::slice::from_ref(url)).await?;
                let Some(p) = asked.into_iter().find(|p| p.resource_type == rt.as_str()) else {
                    return Err(ApiError::invalid(format!(
                        "profile '{}' is not a {rt} profile this tenant can see (stored in the tenant or the shared space)",
                        url.chars().take(200).collect::<String>()
                    )));
                };
                rules.enforced.entry(rt).or_default().push(p);
            }
            match check_resource_with(resource, expect, &rules) {
                Ok(checked) => OperationOutcome::from_issues(&checked.warnings),
                Err(ValidationError::NonConformant(issues)) => OperationOutcome::from_issues(&issues),
                Err(e) => {
                    let outcome = OperationOutcome::error(IssueCode::Invalid, e.to_string());
                    match e.expression() {
                        Some(expr) => outcome.at(expr),
                        None => outcome,
                    }
                }
            }
        }
    };
    let body = serde_json::to_string(&outcome).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(fhir_json(StatusCode::OK, body))
}

/// What a `$validate` request asks to check.
struct Asked {
    resource: Option<Value>,
    mode: Option<String>,
    profile: Option<String>,
}

/// The resource, mode and profile of a `Parameters` body (query values
/// are the fallback), or the body itself as the resource.
fn unwrap_parameters(value: Value, q: ValidateQuery) -> Result<Asked, ApiError> {
    let mut asked = Asked { resource: None, mode: q.mode, profile: q.profile };
    if value.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        asked.resource = Some(value);
        return Ok(asked);
    }
    let Value::Object(mut params) = value else {
        return Err(ApiError::invalid("the Parameters body must be a JSON object"));
    };
    let Some(Value::Array(list)) = params.remove("parameter") else {
        return Ok(asked);
    };
    for mut p in list {
        let string =
            |p: &Value, keys: &[&str]| keys.iter().find_map(|k| p.get(*k).and_then(Value::as_str)).map(str::to_owned);
        match p.get("name").and_then(Value::as_str) {
            Some("resource") => asked.resource = p.get_mut("resource").map(Value::take),
            Some("mode") => asked.mode = string(&p, &["valueCode", "valueString"]).or(asked.mode),
            Some("profile") => {
                asked.profile = string(&p, &["valueUri", "valueCanonical", "valueString"]).or(asked.profile);
            }
            _ => {}
        }
    }
    Ok(asked)
}
