//! Who is calling. Authentication is switched off for now: every caller is
//! the anonymous development actor.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use schemas::Actor;

use super::ApiError;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub(super) actor: Actor,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller { actor: Actor { sub: "anonymous".into(), client: None } })
    }
}
