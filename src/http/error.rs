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
    UriTooLong(String),
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The request body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// Shed: the server already handles as many requests as it may.
    #[error("{0}")]
    Overloaded(String),
    /// The tenant holds its whole share of a limited resource (requests in
    /// flight, change feeds, exports): 429 with `Retry-After`.
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Unprocessable(String),
    /// A resource that breaks R4 rules: 422 with one issue per problem.
    #[error("the resource does not conform to FHIR R4")]
    NonConformant(Vec<schemas::validate::Issue>),
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
            Self::UriTooLong(_) => (StatusCode::URI_TOO_LONG, IssueCode::TooLong),
            Self::HeadersTooLarge(_) => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, IssueCode::TooLong),
            Self::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, IssueCode::Timeout),
            Self::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, IssueCode::Throttled),
            Self::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, IssueCode::Throttled),
            Self::Conflict(_) => (StatusCode::CONFLICT, IssueCode::Conflict),
            Self::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, IssueCode::Conflict),
            Self::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, IssueCode::Processing),
            Self::NonConformant(_) => (StatusCode::UNPROCESSABLE_ENTITY, IssueCode::Invalid),
            Self::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, IssueCode::NotSupported),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, IssueCode::Transient),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, IssueCode::Exception),
        }
    }
}

impl ApiError {
    /// The same error with `prefix` before its message (e.g. `entry[3]: `).
    pub fn prefixed(self, prefix: &str) -> Self {
        let p = |m: String| format!("{prefix}{m}");
        match self {
            Self::Invalid(m, e) => Self::Invalid(p(m), e),
            Self::Unauthorized(c, m) => Self::Unauthorized(c, p(m)),
            Self::Forbidden(m) => Self::Forbidden(p(m)),
            Self::NotFound(m) => Self::NotFound(p(m)),
            Self::Gone(m) => Self::Gone(p(m)),
            Self::MethodNotAllowed(m) => Self::MethodNotAllowed(p(m)),
            Self::UnsupportedMediaType(m) => Self::UnsupportedMediaType(p(m)),
            Self::NotAcceptable(m) => Self::NotAcceptable(p(m)),
            Self::PayloadTooLarge(m) => Self::PayloadTooLarge(p(m)),
            Self::UriTooLong(m) => Self::UriTooLong(p(m)),
            Self::HeadersTooLarge(m) => Self::HeadersTooLarge(p(m)),
            Self::RequestTimeout(m) => Self::RequestTimeout(p(m)),
            Self::Overloaded(m) => Self::Overloaded(p(m)),
            Self::TooManyRequests(m) => Self::TooManyRequests(p(m)),
            Self::Conflict(m) => Self::Conflict(p(m)),
            Self::PreconditionFailed(m) => Self::PreconditionFailed(p(m)),
            Self::Unprocessable(m) => Self::Unprocessable(p(m)),
            Self::NonConformant(issues) => Self::NonConformant(issues),
            Self::NotImplemented(m) => Self::NotImplemented(p(m)),
            Self::Unavailable(m) => Self::Unavailable(p(m)),
            Self::Internal(e) => Self::Internal(e),
        }
    }

    /// The error of Bundle entry `index`: issues point into the Bundle
    /// (`Bundle.entry[3].resource.name`), messages name the entry.
    pub fn in_entry(self, index: usize) -> Self {
        match self {
            Self::NonConformant(mut issues) => {
                for i in &mut issues {
                    let rest = i.expression.split_once('.').map_or("", |(_, rest)| rest);
                    let dot = if rest.is_empty() { "" } else { "." };
                    i.expression = format!("Bundle.entry[{index}].resource{dot}{rest}");
                }
                Self::NonConformant(issues)
            }
            other => other.prefixed(&format!("entry[{index}]: ")),
        }
    }

    /// The status and OperationOutcome this error answers with.
    pub fn outcome(self) -> (StatusCode, OperationOutcome) {
        let (status, code) = self.status_and_code();
        if let Self::NonConformant(issues) = &self {
            return (status, OperationOutcome::from_issues(issues));
        }
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
        (status, outcome)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let challenge = match &self {
            Self::Unauthorized(Some(code), _) => Some(format!("Bearer realm=\"fhirstream\", error=\"{code}\"")),
            Self::Unauthorized(None, _) => Some("Bearer realm=\"fhirstream\"".to_owned()),
            _ => None,
        };
        let (status, outcome) = self.outcome();
        let body = serde_json::to_vec(&outcome).unwrap_or_default();
        let mut res = (status, body).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Invalid(schemas::validate::ValidationError::NonConformant(issues)) => {
                Self::NonConformant(issues)
            }
            CommandError::Invalid(v) => Self::Invalid(v.to_string(), v.expression()),
            CommandError::PreconditionFailed { current: Some(v) } => Self::PreconditionFailed(format!(
                "If-Match does not name the current version (the current version is {})",
                v.etag()
            )),
            CommandError::PreconditionFailed { current: None } => {
                Self::PreconditionFailed("If-Match does not name a current version of this resource".into())
            }
            CommandError::Conflict => Self::Conflict(e.to_string()),
            CommandError::IdTaken(m) => Self::Conflict(m),
            CommandError::TenantExists(_) => Self::Conflict(e.to_string()),
            CommandError::TenantNotFound(_) => Self::NotFound(e.to_string()),
            CommandError::TooLarge(msg) => Self::PayloadTooLarge(msg),
            CommandError::BadRequest(msg) => Self::Invalid(msg, None),
            CommandError::NotFound(msg) => Self::NotFound(msg),
            CommandError::Unprocessable(msg) => Self::Unprocessable(msg),
            CommandError::MultipleMatches(_) => Self::PreconditionFailed(e.to_string()),
            CommandError::Unavailable(detail) => Self::Unavailable(detail),
            CommandError::Internal(e) => Self::Internal(e),
        }
    }
}

impl From<crate::tenancy::TenancyError> for ApiError {
    fn from(e: crate::tenancy::TenancyError) -> Self {
        match e {
            crate::tenancy::TenancyError::Command(e) => e.into(),
            crate::tenancy::TenancyError::Database(e) => Self::Unavailable(e.to_string()),
            e @ (crate::tenancy::TenancyError::ProjectionTimeout(_) | crate::tenancy::TenancyError::Consumers(_)) => {
                Self::Unavailable(e.to_string())
            }
        }
    }
}

impl From<query::search::SearchError> for ApiError {
    fn from(e: query::search::SearchError) -> Self {
        use query::search::SearchError;
        match e {
            SearchError::Invalid(msg) => Self::Invalid(msg, None),
            e @ (SearchError::Unknown(_) | SearchError::BadCursor) => Self::Invalid(e.to_string(), None),
            SearchError::Query(e) => e.into(),
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
