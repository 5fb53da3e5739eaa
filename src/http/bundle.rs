//! FHIR Bundles built from stored rows without re-parsing resource JSON.

use serde::Serialize;
use serde_json::value::RawValue;

use query::history::Change;
use schemas::event::instant;

use super::ApiError;

#[derive(Serialize)]
pub(super) struct Link {
    pub relation: &'static str,
    pub url: String,
}

#[derive(Serialize)]
struct Request {
    method: &'static str,
    url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryResponse {
    status: &'static str,
    etag: String,
    last_modified: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    full_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<Box<RawValue>>,
    request: Request,
    response: EntryResponse,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Bundle {
    resource_type: &'static str,
    r#type: &'static str,
    total: u64,
    link: Vec<Link>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    entry: Vec<Entry>,
}

/// A `history` Bundle of versions (newest first). `base` is the tenant's
/// base URL; `tag` marks every resource as served from the shared space.
pub(super) fn history(
    base: &str,
    total: u64,
    links: Vec<Link>,
    rows: Vec<Change>,
    tag: bool,
) -> Result<Bundle, ApiError> {
    let entry = rows
        .into_iter()
        .map(|row| {
            let (method, status) = match row.op.as_str() {
                "delete" => ("DELETE", "204 No Content"),
                "create" => ("PUT", "201 Created"),
                _ => ("PUT", "200 OK"),
            };
            let relative = format!("{}/{}", row.resource_type, row.id);
            let resource = match row.resource {
                Some(r) if tag => Some(super::sharing::tagged(&r)?),
                r => r,
            };
            Ok(Entry {
                full_url: format!("{base}/{relative}"),
                resource: resource.and_then(|r| RawValue::from_string(r).ok()),
                request: Request { method, url: relative },
                response: EntryResponse {
                    status,
                    etag: format!("W/\"{}\"", row.version),
                    last_modified: instant(&row.last_updated),
                },
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Bundle { resource_type: "Bundle", r#type: "history", total, link: links, entry })
}
