//! Content negotiation for the FHIR API: fhirstream speaks FHIR R4 as JSON
//! (and NDJSON for export files, an event stream for `$events`). A client
//! that asks only for something else — XML through `Accept` or `_format`,
//! another FHIR version through the `fhirVersion` MIME parameter — gets 406
//! with an OperationOutcome instead of JSON it did not ask for.

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::ApiError;

/// The one FHIR version served, as the `fhirVersion` MIME parameter says it.
const FHIR_VERSION: &str = "4.0";

/// Refuses requests under `/fhir/` whose `_format` or `Accept` no answer
/// here can satisfy.
pub(super) async fn negotiate(req: Request, next: Next) -> Response {
    // A Binary is also served in its own content type (`GET Binary/x` with
    // `Accept: application/pdf`): any Accept may be right there.
    let binary = req.uri().path().split('/').nth(3) == Some("Binary");
    if req.uri().path().starts_with("/fhir/") && !binary {
        let format = req.uri().query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "_format").map(|(_, v)| v.into_owned())
        });
        let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
        if let Err(why) = acceptable(format.as_deref(), accept) {
            return ApiError::NotAcceptable(why).into_response();
        }
    }
    next.run(req).await
}

/// Whether a `_format` value and an `Accept` header allow a JSON answer.
/// `_format` wins over `Accept`, as the spec says.
pub(crate) fn acceptable(format: Option<&str>, accept: Option<&str>) -> Result<(), String> {
    if let Some(f) = format {
        return match f.trim() {
            "json" | "application/json" | "application/fhir+json" | "application/json+fhir" => Ok(()),
            "xml" | "application/xml" | "application/fhir+xml" | "text/xml" => {
                Err("only JSON is served (_format=json); XML is not implemented".into())
            }
            other => Err(format!("_format '{}' is not served; use json", other.chars().take(40).collect::<String>())),
        };
    }
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else { return Ok(()) };
    let mut wrong_version = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut q_zero = false;
        let mut version = None;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q_zero = v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0),
                    "fhirversion" => version = Some(v.trim().trim_matches('"').to_owned()),
                    _ => {}
                }
            }
        }
        if q_zero || !served(&media) {
            continue;
        }
        match version {
            Some(v) if v != FHIR_VERSION && v != "4.0.1" => wrong_version = Some(v),
            _ => return Ok(()),
        }
    }
    Err(match wrong_version {
        Some(v) => format!(
            "fhirVersion {} is not served; this server speaks FHIR 4.0 (R4)",
            v.chars().take(20).collect::<String>()
        ),
        None => format!(
            "none of the media types in Accept ({}) is served; fhirstream answers application/fhir+json",
            accept.chars().take(120).collect::<String>()
        ),
    })
}

fn served(media: &str) -> bool {
    matches!(
        media,
        "*/*"
            | "application/*"
            | "application/json"
            | "application/fhir+json"
            | "application/json+fhir"
            | "application/fhir+ndjson"
            | "application/ndjson"
            | "text/event-stream"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_wildcards_are_served_and_xml_is_not() {
        for ok in [
            None,
            Some("application/fhir+json"),
            Some("application/json"),
            Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            Some("application/fhir+xml;q=1, application/fhir+json;q=0.5"),
            Some("application/fhir+json; fhirVersion=4.0"),
            Some("text/event-stream"),
        ] {
            assert_eq!(acceptable(None, ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "application/fhir+xml",
            "application/xml",
            "text/turtle",
            "application/fhir+json; fhirVersion=3.0",
            "application/fhir+json;q=0",
        ] {
            assert!(acceptable(None, Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn format_overrides_accept() {
        assert!(acceptable(Some("xml"), Some("application/fhir+json")).is_err());
        assert_eq!(acceptable(Some("json"), Some("application/fhir+xml")), Ok(()));
        assert!(acceptable(Some("ttl"), None).is_err());
    }
}
