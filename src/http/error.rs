//! The one place where failures become HTTP statuses and OperationOutcomes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use command::CommandError;
use query::QueryError;
use schemas::{IssueCode, OperationOutcome};

use super::response::FHIR_JSON;

/// An error answer. Messages are written for the client and never carry
/// another tenant's data; details of internal failures are logged only.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(String, Option<String>),
    /// No or bad credentials; the optional code is the RFC 6750 `error`.
    #[error("{1}")]
    Unauthorized(Option<&'static str>, String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into(), None)
    }

    fn status_and_code(&self) -> (StatusCode, IssueCode) {
        match self {
            Self::Invalid(..) => (StatusCode::BAD_REQUEST, IssueCode::Invalid),
            Self::Unauthorized(..) => (StatusCode::UNAUTHORIZED, IssueCode::Login),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, IssueCode::Forbidden),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, IssueCode::NotFound),
            Self::Gone(_) => (StatusCode::GONE, IssueCode::Deleted),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, IssueCode::NotSupported),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, IssueCode::NotSupported),
            Self::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, IssueCode::NotSupported),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, IssueCode::TooLong),
            Self::Conflict(_) => (StatusCode::CONFLICT, IssueCode::Conflict),
            Self::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, IssueCode::Conflict),
            Self::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, IssueCode::NotSupported),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, IssueCode::Transient),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, IssueCode::Exception),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let diagnostics = match &self {
            Self::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
                "internal server error; the incident was logged".to_owned()
            }
            Self::Unavailable(detail) => {
                tracing::warn!(detail, "dependency unavailable");
                "a backing service is temporarily unavailable; retry later".to_owned()
            }
            other => other.to_string(),
        };
        let mut outcome = OperationOutcome::error(code, diagnostics);
        if let Self::Invalid(_, Some(expr)) = &self {
            outcome = outcome.at(expr.clone());
        }
        let body = serde_json::to_vec(&outcome).unwrap_or_default();
        let mut res = (status, body).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        if let Self::Unauthorized(code, _) = &self {
            let challenge = match code {
                Some(code) => format!("Bearer realm=\"fhirstream\", error=\"{code}\""),
                None => "Bearer realm=\"fhirstream\"".to_owned(),
            };
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Invalid(v) => Self::Invalid(v.to_string(), v.expression()),
            CommandError::PreconditionFailed { current: Some(v) } => Self::PreconditionFailed(format!(
                "If-Match does not name the current version (the current version is {})",
                v.etag()
            )),
            CommandError::PreconditionFailed { current: None } => {
                Self::PreconditionFailed("If-Match does not name a current version of this resource".into())
            }
            CommandError::Conflict => Self::Conflict(e.to_string()),
            CommandError::TenantExists(_) => Self::Conflict(e.to_string()),
            CommandError::TenantNotFound(_) => Self::NotFound(e.to_string()),
            CommandError::Unavailable(detail) => Self::Unavailable(detail),
            CommandError::Internal(e) => Self::Internal(e),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Unavailable(detail) => Self::Unavailable(detail),
            QueryError::Internal(e) => Self::Internal(e),
        }
    }
}
