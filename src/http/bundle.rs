//! FHIR Bundles built from stored rows without re-parsing resource JSON.

use serde::Serialize;
use serde_json::value::RawValue;

use query::VersionRow;
use schemas::event::instant;

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

/// A `history` Bundle of one resource's versions (newest first).
/// `resource_url` is the resource's absolute URL without `_history`.
pub(super) fn history(
    resource_url: &str,
    relative: &str,
    total: u64,
    links: Vec<Link>,
    rows: Vec<VersionRow>,
) -> Bundle {
    let entry = rows
        .into_iter()
        .map(|row| {
            let (method, status) = match row.op.as_str() {
                "delete" => ("DELETE", "204 No Content"),
                "create" => ("PUT", "201 Created"),
                _ => ("PUT", "200 OK"),
            };
            Entry {
                full_url: resource_url.to_owned(),
                resource: row.resource.and_then(|r| RawValue::from_string(r).ok()),
                request: Request { method, url: relative.to_owned() },
                response: EntryResponse { status, etag: row.version.etag(), last_modified: instant(&row.last_updated) },
            }
        })
        .collect();
    Bundle { resource_type: "Bundle", r#type: "history", total, link: links, entry }
}
