//! SMART on FHIR discovery: `GET [base]/.well-known/smart-configuration`
//! and the CapabilityStatement's `rest.security`, so SMART clients
//! (fhirclient's `prepare()`, for one) find where to get a token.
//!
//! fhirstream is a resource server: the endpoints are those of the
//! external identity provider, from configuration
//! (`--smart-authorize-url`, `--smart-token-url`, `--jwt-issuer`,
//! `--smart-capabilities`). The document is the same for every well-formed
//! tenant name and needs no token, so it tells nobody which tenants exist.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use serde_json::{Value, json};

use schemas::TenantId;

use super::extract::PathText;
use super::{ApiError, SharedState};
use crate::config::AuthArgs;

/// The scopes this server understands (README "Security model").
const SCOPES_SUPPORTED: &[&str] = &[
    "system/*.read",
    "system/*.write",
    "system/*.cruds",
    "user/*.read",
    "user/*.write",
    "user/*.cruds",
    "fhirstream/admin",
];

/// The capabilities of the resource server itself: v1 and v2 scopes.
const OWN_CAPABILITIES: &[&str] = &["permission-v1", "permission-v2"];

/// What discovery announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartDiscovery {
    pub issuer: Option<String>,
    pub authorize_url: Option<String>,
    pub token_url: String,
    pub capabilities: Vec<String>,
}

impl SmartDiscovery {
    /// Discovery from configuration; `None` (no discovery) without a token
    /// endpoint, since a SMART client can do nothing without one.
    pub fn from_config(args: &AuthArgs) -> Option<Self> {
        let token_url = args.smart_token_url.clone()?;
        let mut capabilities: Vec<String> = OWN_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
        for c in args.smart_capabilities.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
            if !capabilities.iter().any(|k| k == c) {
                capabilities.push(c.to_owned());
            }
        }
        Some(Self {
            issuer: args.jwt_issuer.clone(),
            authorize_url: args.smart_authorize_url.clone(),
            token_url,
            capabilities,
        })
    }

    /// The `.well-known/smart-configuration` document.
    pub fn configuration(&self) -> Value {
        let mut doc = json!({
            "token_endpoint": self.token_url,
            "grant_types_supported": ["client_credentials", "authorization_code"],
            "capabilities": self.capabilities,
            "scopes_supported": SCOPES_SUPPORTED,
            "code_challenge_methods_supported": ["S256"],
            "response_types_supported": ["code"],
        });
        if let Some(iss) = &self.issuer {
            doc["issuer"] = json!(iss);
        }
        if let Some(authorize) = &self.authorize_url {
            doc["authorization_endpoint"] = json!(authorize);
        }
        doc
    }

    /// The CapabilityStatement's `rest.security`: the SMART service coding
    /// and the OAuth URIs extension.
    pub fn security(&self) -> Value {
        let mut uris = vec![json!({ "url": "token", "valueUri": self.token_url })];
        if let Some(authorize) = &self.authorize_url {
            uris.push(json!({ "url": "authorize", "valueUri": authorize }));
        }
        json!({
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": uris,
            }],
            "service": [{
                "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR",
                }],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }],
        })
    }
}

/// `GET /fhir/{tenant}/.well-known/smart-configuration`, without a token.
pub(super) async fn configuration(
    State(state): State<SharedState>,
    PathText(raw): PathText,
) -> Result<Response, ApiError> {
    TenantId::parse(&raw).map_err(|_| ApiError::NotFound("unknown tenant".into()))?;
    let smart = state
        .settings
        .smart
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("SMART discovery is not configured on this server".into()))?;
    let mut res = (StatusCode::OK, smart.configuration().to_string()).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AuthArgs {
        AuthArgs {
            jwt_issuer: Some("https://idp.example".into()),
            smart_authorize_url: Some("https://idp.example/authorize".into()),
            smart_token_url: Some("https://idp.example/token".into()),
            smart_capabilities: vec!["client-confidential-asymmetric".into(), "permission-v2".into()],
            ..Default::default()
        }
    }

    #[test]
    fn discovery_needs_a_token_endpoint() {
        assert!(SmartDiscovery::from_config(&AuthArgs::default()).is_none());
    }

    #[test]
    fn the_configuration_names_the_identity_providers_endpoints() {
        let doc = SmartDiscovery::from_config(&args()).unwrap().configuration();
        assert_eq!(doc["issuer"], "https://idp.example");
        assert_eq!(doc["authorization_endpoint"], "https://idp.example/authorize");
        assert_eq!(doc["token_endpoint"], "https://idp.example/token");
        assert_eq!(doc["capabilities"], json!(["permission-v1", "permission-v2", "client-confidential-asymmetric"]));
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    }

    #[test]
    fn the_security_element_carries_the_smart_coding_and_oauth_uris() {
        let sec = SmartDiscovery::from_config(&args()).unwrap().security();
        assert_eq!(sec["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
        let uris = &sec["extension"][0]["extension"];
        assert_eq!(uris[0], json!({"url": "token", "valueUri": "https://idp.example/token"}));
        assert_eq!(uris[1]["url"], "authorize");
    }
}
