//! Authentication and authorization at the HTTP edge.
//!
//! Requests carry `Authorization: Bearer <JWT>`: HS256 with a shared secret,
//! or RS256/ES256 with a configured public key. `exp` is required; `iss` and
//! `aud` are checked when configured; `alg: none` and every algorithm other
//! than the configured one are refused by construction. The claims say which
//! tenants (`tenants` array, `"*"` for all, or one `tenant`) and which
//! interactions (SMART `scope`) the caller may use.
//!
//! Hygiene the edge enforces before any claim is believed: an HS256 secret
//! shorter than 32 bytes (the hash's output size, RFC 7518 3.2) is refused
//! at start, because a short shared secret can be brute-forced offline from
//! any one token; `nbf` is honoured (with the same 30 s leeway as `exp`);
//! `iat` is kept, because a token issued before a tenant's current
//! incarnation must not open it (see [`super::access::incarnation_allows`]).

use std::collections::HashSet;

use anyhow::Context as _;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, header, request::Parts};
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use schemas::scope::{Interaction, Scopes};
use schemas::{Actor, ResourceType, TenantId};

use super::access::{Grant, incarnation_allows};
use super::{ApiError, SharedState};
use crate::config::AuthArgs;

/// Verifies bearer tokens, or lets everyone in when auth is disabled.
pub struct Authenticator {
    verifier: Option<(DecodingKey, Validation)>,
    /// A node without an API role accepts no token at all.
    deny_all: bool,
}

impl Authenticator {
    /// Builds the verifier from configuration; refuses to start with no
    /// way to verify tokens unless auth was disabled explicitly.
    pub fn from_config(args: &AuthArgs) -> anyhow::Result<Self> {
        if args.auth_disabled {
            tracing::warn!(
                "AUTHENTICATION IS DISABLED: every request is served as an anonymous administrator with access to \
                 every tenant. Never run like this outside local development and tests."
            );
            return Ok(Self { verifier: None, deny_all: false });
        }
        let (key, alg) = match (&args.jwt_secret, &args.jwt_public_key) {
            (Some(secret), None) if !secret.is_empty() => {
                anyhow::ensure!(
                    secret.len() >= MIN_HS256_SECRET_BYTES,
                    "the HS256 secret (--jwt-secret / FHIRSTREAM_JWT_SECRET) is {} bytes; use at least \
                     {MIN_HS256_SECRET_BYTES} random bytes (e.g. `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`)",
                    secret.len()
                );
                (DecodingKey::from_secret(secret.as_bytes())?, Algorithm::HS256)
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path).with_context(|| format!("read --jwt-public-key {}", path.display()))?;
                match DecodingKey::from_rsa_pem(&pem) {
                    Ok(key) => (key, Algorithm::RS256),
                    Err(_) => (
                        DecodingKey::from_ec_pem(&pem)
                            .context("--jwt-public-key is neither an RSA nor an EC (P-256) public key in PEM")?,
                        Algorithm::ES256,
                    ),
                }
            }
            (Some(_), Some(_)) => anyhow::bail!("set either --jwt-secret or --jwt-public-key, not both"),
            _ => anyhow::bail!(
                "no way to verify tokens: set FHIRSTREAM_JWT_SECRET (--jwt-secret) or --jwt-public-key, \
                 or pass --auth-disabled for local development"
            ),
        };
        let mut validation = Validation::new(alg);
        validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
        validation.leeway = 30;
        // Off by default in jsonwebtoken: a token not yet valid would pass.
        validation.validate_nbf = true;
        // A configured issuer or audience must also be present: the library
        // checks these claims only when a token carries them.
        match &args.jwt_audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &args.jwt_issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        Ok(Self { verifier: Some((key, validation)), deny_all: false })
    }

    /// For a node that serves no API (projector only): nothing gets in.
    pub fn deny_all() -> Self {
        Self { verifier: None, deny_all: true }
    }

    pub fn is_disabled(&self) -> bool {
        self.verifier.is_none() && !self.deny_all
    }

    /// The caller a request's headers prove, or why they prove nothing.
    pub(super) fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if self.deny_all {
            return Err(ApiError::Unauthorized(None, "this node serves no API".into()));
        }
        let Some((key, validation)) = &self.verifier else {
            return Ok(Caller::anonymous_admin());
        };
        let mut sent = headers.get_all(header::AUTHORIZATION).iter();
        let raw = sent.next().ok_or_else(|| ApiError::Unauthorized(None, "a bearer token is required".into()))?;
        // Two credentials are ambiguous: a proxy in front may have checked
        // the other one. Authorization is not a list header (RFC 9110 11.6.2).
        if sent.next().is_some() {
            return Err(ApiError::Unauthorized(
                Some("invalid_request"),
                "send exactly one Authorization header".into(),
            ));
        }
        let token = raw
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthorized(Some("invalid_request"), "use Authorization: Bearer <token>".into())
            })?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| {
                let why = match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired",
                    jsonwebtoken::errors::ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
                    jsonwebtoken::errors::ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
                    jsonwebtoken::errors::ErrorKind::InvalidAudience => "the token's audience is not accepted",
                    jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted",
                    jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                    _ => "the token is not valid",
                };
                ApiError::Unauthorized(Some("invalid_token"), why.into())
            })?
            .claims;
        Ok(Caller::from_claims(claims))
    }
}

/// The shortest HS256 secret accepted: the output size of SHA-256.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// What a development token grants.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenClaims {
    pub sub: String,
    /// Issued at: a token older than a tenant's current incarnation is
    /// refused on it.
    pub iat: i64,
    pub exp: i64,
    pub tenants: Vec<String>,
    pub scope: String,
}

impl TokenClaims {
    /// Claims valid for `ttl` from now.
    pub fn new(sub: &str, tenants: &[&str], scope: &str, ttl: std::time::Duration) -> Self {
        let now = chrono::Utc::now().timestamp();
        Self {
            sub: sub.to_owned(),
            iat: now,
            exp: now + ttl.as_secs() as i64,
            tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
            scope: scope.to_owned(),
        }
    }
}

/// Signs claims with an HS256 secret (`fhirstream token`, tests).
pub fn mint_hs256(secret: &str, claims: &impl serde::Serialize) -> anyhow::Result<String> {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).context("use the secret")?;
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), claims, &key).context("sign the token")
}

/// The claims fhirstream reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    tenants: Option<Vec<String>>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    iat: Option<i64>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub(super) actor: Actor,
    tenants: Grant,
    scopes: Scopes,
    /// When the token was issued (`iat`), if it says.
    issued_at: Option<i64>,
}

impl Caller {
    fn anonymous_admin() -> Self {
        Self {
            actor: Actor { sub: "anonymous".into(), client: None },
            tenants: Grant::All,
            scopes: Scopes::all(),
            issued_at: None,
        }
    }

    fn from_claims(c: Claims) -> Self {
        let mut names: Vec<String> = c.tenants.unwrap_or_default();
        names.extend(c.tenant);
        let tenants = Grant::from_claim(names);
        Self {
            actor: Actor { sub: c.sub, client: c.client_id.or(c.azp) },
            tenants,
            scopes: Scopes::parse(c.scope.as_deref().unwrap_or_default()),
            issued_at: c.iat,
        }
    }

    /// Whether the token names this tenant (or all tenants).
    pub(super) fn may_use(&self, tenant: &TenantId) -> bool {
        self.tenants.covers(tenant)
    }

    /// The tenants the token grants.
    pub(super) fn grant(&self) -> &Grant {
        &self.tenants
    }

    /// Whether the token carries the `fhirstream/admin` scope.
    pub(super) fn is_admin(&self) -> bool {
        self.scopes.is_admin()
    }

    /// 401 unless the token was issued for the tenant's current
    /// incarnation (not for a deleted tenant of the same name).
    pub(super) fn require_incarnation(&self, tenant: &projector::TenantState) -> Result<(), ApiError> {
        if incarnation_allows(&self.tenants, self.issued_at, tenant.incarnation.as_ref()) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized(
                Some("invalid_token"),
                "the token was issued before this tenant was (re)created; get a new token".into(),
            ))
        }
    }

    /// 403 unless the token may use this tenant.
    pub(super) fn require_tenant(&self, tenant: &TenantId) -> Result<(), ApiError> {
        if self.may_use(tenant) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("this token does not grant access to tenant '{tenant}'")))
        }
    }

    /// 403 unless the token's scopes allow `interaction` on `rt`.
    pub(super) fn require(&self, rt: ResourceType, interaction: Interaction) -> Result<(), ApiError> {
        if self.scopes.allows(rt.as_str(), interaction) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("the token's scopes do not allow {} of {rt}", interaction.name())))
        }
    }

    /// Whether the token's scopes allow `interaction` on `rt`.
    pub(super) fn allows(&self, rt: ResourceType, interaction: Interaction) -> bool {
        self.scopes.allows(rt.as_str(), interaction)
    }
}

/// Middleware: authenticates once and leaves the [`Caller`] in the request.
pub(super) async fn authenticate(
    State(state): State<SharedState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = state.auth.authenticate(req.headers()).inspect_err(|e| {
        let reason = match e {
            ApiError::Unauthorized(Some(code), _) => *code,
            _ => "missing_token",
        };
        metrics::counter!("fhirstream_auth_failures_total", "reason" => reason).increment(1);
    })?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized(None, "a bearer token is required".into()))
    }
}
