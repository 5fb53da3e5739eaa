//! Building FHIR responses: content type, ETag, Last-Modified, Location.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use schemas::Version;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// Whether the write's projection was applied before the answer.
pub static PROJECTION_HEADER: HeaderName = HeaderName::from_static("x-fhirstream-projection");

/// A FHIR JSON body with the given status.
pub fn fhir_json(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut res = (status, body.into()).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    res
}

/// Sets `ETag` and `Last-Modified` for a resource version.
pub fn version_headers(headers: &mut HeaderMap, version: Version, last_updated: &DateTime<Utc>) {
    if let Ok(etag) = HeaderValue::from_str(&version.etag()) {
        headers.insert(header::ETAG, etag);
    }
    let http_date = httpdate::fmt_http_date(std::time::SystemTime::from(*last_updated));
    if let Ok(v) = HeaderValue::from_str(&http_date) {
        headers.insert(header::LAST_MODIFIED, v);
    }
}
