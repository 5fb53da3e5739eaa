//! Transaction and batch Bundles, decided without I/O: parsing entries,
//! FHIR processing order, `urn:uuid:` resolution and reference rewriting.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use schemas::validate::{Expect, Rules, ValidationError, check_resource_with};
use schemas::{ResourceId, ResourceType, Version};

/// Transaction (all or nothing) or batch (each entry on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    Transaction,
    Batch,
}

/// The HTTP verb of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    // Declared in FHIR's transaction processing order.
    Delete,
    Post,
    Put,
    Patch,
    Get,
}

impl Method {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "DELETE" => Self::Delete,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "GET" => Self::Get,
            _ => return None,
        })
    }
}

pub use crate::criteria::Criteria;

/// One entry as the client sent it, checked for shape.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in the Bundle (responses keep the original order).
    pub index: usize,
    pub method: Method,
    pub rt: ResourceType,
    /// The id in the URL (PUT, PATCH, DELETE, GET), if any.
    pub id: Option<ResourceId>,
    /// Criteria of a conditional PUT/DELETE in the URL.
    pub conditional: Option<Criteria>,
    pub full_url: Option<String>,
    /// The resource (POST, PUT) or the JSON Patch document (PATCH).
    pub body: Option<Value>,
    pub if_match: Option<Version>,
    pub if_none_exist: Option<Criteria>,
    /// An id already chosen for a POST entry (import), used by [`plan`].
    pub id_hint: Option<ResourceId>,
    /// A GET entry without an id is a search: its query string (possibly
    /// empty), answered with a searchset Bundle as the entry's resource.
    pub search: Option<String>,
}

impl Entry {
    /// An entry with nothing but a method and a type (for single requests
    /// that run as one-entry transactions); fill in the rest with `..`.
    pub fn new(method: Method, rt: ResourceType) -> Self {
        Self {
            index: 0,
            method,
            rt,
            id: None,
            conditional: None,
            full_url: None,
            body: None,
            if_match: None,
            if_none_exist: None,
            id_hint: None,
            search: None,
        }
    }
}

/// Why a Bundle or one of its entries is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("{0}")]
    NotABundle(String),
    #[error("the Bundle has {found} entries; at most {max} are accepted")]
    TooManyEntries { found: usize, max: usize },
    #[error("entry[{index}]: {message}")]
    Entry { index: usize, message: String },
    /// An entry's resource is not valid FHIR (400 or 422, as for a single write).
    #[error("entry[{index}]: {error}")]
    Invalid { index: usize, error: ValidationError },
}

fn entry_err(index: usize, message: impl Into<String>) -> BundleError {
    BundleError::Entry { index, message: message.into() }
}

/// Parses a transaction or batch Bundle into checked entries.
pub fn parse(body: &[u8], max_entries: usize) -> Result<(BundleKind, Vec<Entry>), BundleError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| BundleError::NotABundle(format!("the body is not valid JSON: {e}")))?;
    parse_value(v, max_entries)
}

/// Like [`parse`], for an already parsed Bundle.
pub fn parse_value(v: Value, max_entries: usize) -> Result<(BundleKind, Vec<Entry>), BundleError> {
    let Value::Object(mut bundle) = v else {
        return Err(BundleError::NotABundle("the body must be a Bundle resource".into()));
    };
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(BundleError::NotABundle("POST to the base URL takes a Bundle".into()));
    }
    let kind = match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => BundleKind::Transaction,
        Some("batch") => BundleKind::Batch,
        other => {
            return Err(BundleError::NotABundle(format!(
                "Bundle.type must be 'transaction' or 'batch', not {}",
                other.map_or("missing".to_owned(), |t| format!("'{t}'"))
            )));
        }
    };
    let entries = match bundle.remove("entry") {
        None => Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(BundleError::NotABundle("Bundle.entry must be an array".into())),
    };
    if entries.len() > max_entries {
        return Err(BundleError::TooManyEntries { found: entries.len(), max: max_entries });
    }
    let entries = entries.into_iter().enumerate().map(|(i, e)| parse_entry(i, e)).collect::<Result<_, _>>()?;
    Ok((kind, entries))
}

fn parse_entry(index: usize, entry: Value) -> Result<Entry, BundleError> {
    let Value::Object(mut entry) = entry else { return Err(entry_err(index, "an entry must be an object")) };
    let Some(Value::Object(request)) = entry.remove("request") else {
        return Err(entry_err(index, "entry.request is required"));
    };
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .and_then(Method::parse)
        .ok_or_else(|| entry_err(index, "request.method must be GET, POST, PUT, PATCH or DELETE"))?;
    let url = request.get("url").and_then(Value::as_str).ok_or_else(|| entry_err(index, "request.url is required"))?;
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let mut segments = path.trim_matches('/').split('/');
    let rt = ResourceType::parse(segments.next().unwrap_or_default()).map_err(|e| entry_err(index, e.to_string()))?;
    let id = segments.next().map(ResourceId::parse).transpose().map_err(|e| entry_err(index, e.to_string()))?;
    if segments.next().is_some() {
        return Err(entry_err(index, format!("request.url '{url}' is not supported in a Bundle")));
    }
    let conditional = match (method, &id, query) {
        (Method::Put | Method::Delete, None, Some(q)) => Some(Criteria::parse(q).map_err(|m| entry_err(index, m))?),
        (Method::Post, None, None) | (Method::Get, None, _) => None,
        (Method::Put | Method::Delete | Method::Patch | Method::Get, Some(_), None) => None,
        _ => return Err(entry_err(index, format!("request.url '{url}' does not fit {method:?}"))),
    };
    let if_match = request
        .get("ifMatch")
        .and_then(Value::as_str)
        .map(Version::parse_etag)
        .transpose()
        .map_err(|e| entry_err(index, format!("ifMatch: {e}")))?;
    let if_none_exist = match request.get("ifNoneExist").and_then(Value::as_str) {
        Some(q) if method == Method::Post => Some(Criteria::parse(q).map_err(|m| entry_err(index, m))?),
        Some(_) => return Err(entry_err(index, "ifNoneExist is only meaningful on POST")),
        None => None,
    };
    let full_url = entry.remove("fullUrl").and_then(|v| v.as_str().map(str::to_owned));
    let body = entry.remove("resource");
    if matches!(method, Method::Post | Method::Put | Method::Patch) && body.is_none() {
        return Err(entry_err(index, "entry.resource is required for POST, PUT and PATCH"));
    }
    let search = (method == Method::Get && id.is_none()).then(|| query.unwrap_or_default().to_owned());
    Ok(Entry { index, method, rt, id, conditional, full_url, body, if_match, if_none_exist, id_hint: None, search })
}

/// A write decided by the planner: the resource's final id and (for POST and
/// PUT) its validated body with references rewritten.
#[derive(Debug, Clone)]
pub struct Planned {
    pub entry: Entry,
    pub id: ResourceId,
    pub resource: Option<Map<String, Value>>,
}

/// Assigns ids, resolves `urn:uuid:` and other `fullUrl` references, and
/// returns the entries in FHIR processing order. `new_id` gives the id of a
/// POST entry (random on the API, deterministic on import); `existing`
/// gives, for an entry index, the id a conditional operation matched.
pub fn plan(
    entries: Vec<Entry>,
    mut new_id: impl FnMut(&Entry) -> ResourceId,
    existing: &HashMap<usize, ResourceId>,
    rules: &Rules,
) -> Result<Vec<Planned>, BundleError> {
    let mut ids: Vec<ResourceId> = Vec::with_capacity(entries.len());
    let mut refs: HashMap<String, String> = HashMap::new();
    let mut targets = HashSet::new();
    for e in &entries {
        let id = match (e.method, existing.get(&e.index), &e.id) {
            (_, Some(found), _) => found.clone(),
            (_, None, Some(id)) => id.clone(),
            (Method::Put, None, None) => body_id(e).unwrap_or_else(|| new_id(e)),
            _ => e.id_hint.clone().unwrap_or_else(|| new_id(e)),
        };
        if e.method != Method::Get && !targets.insert((e.rt, id.clone())) {
            return Err(entry_err(e.index, format!("{}/{id} is the target of more than one entry", e.rt)));
        }
        if let Some(full) = &e.full_url {
            refs.insert(full.clone(), format!("{}/{id}", e.rt));
        }
        ids.push(id);
    }
    let mut planned = Vec::with_capacity(entries.len());
    for (mut e, id) in entries.into_iter().zip(ids) {
        let resource = match (e.method, e.body.take()) {
            (Method::Post | Method::Put, Some(mut body)) => {
                if let Some(unresolved) = rewrite_references(&mut body, &refs) {
                    return Err(entry_err(
                        e.index,
                        format!("reference '{unresolved}' does not resolve to an entry of this Bundle"),
                    ));
                }
                if let Value::Object(map) = &mut body {
                    map.insert("id".into(), Value::String(id.as_str().to_owned()));
                }
                let expect = Expect::Update(e.rt, &id);
                let checked = check_resource_with(body, expect, rules);
                Some(checked.map_err(|error| BundleError::Invalid { index: e.index, error })?.resource)
            }
            (Method::Patch, Some(patch)) => {
                e.body = Some(patch);
                None
            }
            _ => None,
        };
        planned.push(Planned { entry: e, id, resource });
    }
    planned.sort_by_key(|p| (p.entry.method, p.entry.index));
    Ok(planned)
}

/// The id an import gives a POST entry: the UUID of a `urn:uuid:` fullUrl
/// (Synthea's are the natural ids), else a UUID v5 of the fullUrl or of the
/// entry's position in its source. Deterministic, so importing the same
/// data twice targets the same resources and creates nothing twice.
pub fn import_id(e: &Entry, source: &str) -> ResourceId {
    if let Some(uuid) = e.full_url.as_deref().and_then(|u| u.strip_prefix("urn:uuid:"))
        && let Ok(id) = ResourceId::parse(uuid)
    {
        return id;
    }
    let name = match &e.full_url {
        Some(url) => url.clone(),
        None => format!("{source}#{}", e.index),
    };
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes());
    ResourceId::parse(&id.to_string()).unwrap_or_else(|_| ResourceId::generate())
}

/// Resolves every entry's references to the ids `id_of` assigns, across
/// the whole Bundle, so its entries can then be committed in several
/// chunks (or one by one) without dangling `urn:uuid:` references.
pub fn resolve_in_place(entries: &mut [Entry], mut id_of: impl FnMut(&Entry) -> ResourceId) -> Result<(), BundleError> {
    let mut refs = HashMap::new();
    for e in entries.iter_mut() {
        if e.method == Method::Post {
            let id = id_of(e);
            if let Some(full) = &e.full_url {
                refs.insert(full.clone(), format!("{}/{id}", e.rt));
            }
            e.id_hint = Some(id);
        }
    }
    for e in entries.iter_mut() {
        if let Some(body) = e.body.as_mut()
            && let Some(unresolved) = rewrite_references(body, &refs)
        {
            return Err(entry_err(
                e.index,
                format!("reference '{unresolved}' does not resolve to an entry of this Bundle"),
            ));
        }
    }
    Ok(())
}

fn body_id(e: &Entry) -> Option<ResourceId> {
    e.body.as_ref()?.get("id")?.as_str().and_then(|s| ResourceId::parse(s).ok())
}

/// Rewrites every `reference` that names an entry's `fullUrl`; returns the
/// first `urn:` reference that names none.
fn rewrite_references(value: &mut Value, refs: &HashMap<String, String>) -> Option<String> {
    match value {
        Value::Object(map) => {
            let mut unresolved = None;
            for (k, v) in map.iter_mut() {
                if k == "reference"
                    && let Value::String(r) = v
                {
                    if let Some(target) = refs.get(r.as_str()) {
                        *r = target.clone();
                    } else if r.starts_with("urn:uuid:") || r.starts_with("urn:oid:") {
                        unresolved.get_or_insert_with(|| r.clone());
                    }
                    continue;
                }
                if let Some(u) = rewrite_references(v, refs) {
                    unresolved.get_or_insert(u);
                }
            }
            unresolved
        }
        Value::Array(items) => items.iter_mut().filter_map(|v| rewrite_references(v, refs)).next(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bundle(kind: &str, entries: Value) -> Vec<u8> {
        json!({"resourceType": "Bundle", "type": kind, "entry": entries}).to_string().into_bytes()
    }

    fn seq_ids() -> impl FnMut(&Entry) -> ResourceId {
        let mut n = 0;
        move |_| {
            n += 1;
            ResourceId::parse(&format!("new{n}")).unwrap()
        }
    }

    #[test]
    fn urn_references_are_rewritten_to_the_assigned_ids() {
        let body = bundle(
            "transaction",
            json!([
                {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
                {"fullUrl": "urn:uuid:o", "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                  "subject": {"reference": "urn:uuid:p"}, "hasMember": [{"reference": "urn:uuid:o"}]},
                 "request": {"method": "POST", "url": "Observation"}}
            ]),
        );
        let (kind, entries) = parse(&body, 100).unwrap();
        assert_eq!(kind, BundleKind::Transaction);
        let planned = plan(entries, seq_ids(), &HashMap::new(), &Rules::default()).unwrap();
        let obs = planned.iter().find(|p| p.entry.rt.as_str() == "Observation").unwrap();
        let r = obs.resource.as_ref().unwrap();
        assert_eq!(r["subject"]["reference"], "Patient/new1");
        assert_eq!(r["hasMember"][0]["reference"], "Observation/new2");
        assert_eq!(r["id"], "new2");
    }

    #[test]
    fn entries_are_ordered_delete_post_put_patch_get() {
        let body = bundle(
            "transaction",
            json!([
                {"request": {"method": "GET", "url": "Patient/a"}},
                {"resource": {"resourceType": "Patient", "id": "b"}, "request": {"method": "PUT", "url": "Patient/b"}},
                {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
                {"request": {"method": "DELETE", "url": "Patient/c"}},
                {"resource": [{"op": "remove", "path": "/active"}], "request": {"method": "PATCH", "url": "Patient/d"}}
            ]),
        );
        let (_, entries) = parse(&body, 100).unwrap();
        let order: Vec<usize> = plan(entries, seq_ids(), &HashMap::new(), &Rules::default())
            .unwrap()
            .iter()
            .map(|p| p.entry.index)
            .collect();
        assert_eq!(order, vec![3, 2, 1, 4, 0]);
    }

    #[test]
    fn an_unresolvable_urn_names_its_entry() {
        let body = bundle(
            "transaction",
            json!([
                {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
                {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:nope"}},
                 "request": {"method": "POST", "url": "Observation"}}
            ]),
        );
        let (_, entries) = parse(&body, 100).unwrap();
        let err = plan(entries, seq_ids(), &HashMap::new(), &Rules::default()).unwrap_err();
        assert!(matches!(&err, BundleError::Entry { index: 1, message } if message.contains("urn:uuid:nope")), "{err}");
    }

    #[test]
    fn malformed_bundles_and_entries_are_refused_with_their_index() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{".to_vec(), "not valid JSON"),
            (json!({"resourceType": "Patient"}).to_string().into_bytes(), "takes a Bundle"),
            (json!({"resourceType": "Bundle", "type": "collection"}).to_string().into_bytes(), "'collection'"),
            (bundle("batch", json!([{"resource": {"resourceType": "Patient"}}])), "entry[0]: entry.request"),
            (bundle("batch", json!([{"request": {"method": "HEAD", "url": "Patient"}}])), "entry[0]: request.method"),
            (bundle("batch", json!([{"request": {"method": "POST", "url": "Nope"}}])), "entry[0]"),
            (bundle("batch", json!([{"request": {"method": "POST", "url": "Patient"}}])), "entry.resource is required"),
            (
                bundle(
                    "batch",
                    json!([{"request": {"method": "PUT", "url": "Patient?_count=1"}, "resource": {"resourceType": "Patient"}}]),
                ),
                "shapes a search result",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(&body, 100).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
        let err = parse(&bundle("batch", json!([{}, {}, {}])), 2).unwrap_err();
        assert_eq!(err, BundleError::TooManyEntries { found: 3, max: 2 });
    }

    #[test]
    fn two_entries_writing_one_resource_are_refused() {
        let body = bundle(
            "transaction",
            json!([
                {"resource": {"resourceType": "Patient", "id": "x"}, "request": {"method": "PUT", "url": "Patient/x"}},
                {"request": {"method": "DELETE", "url": "Patient/x"}}
            ]),
        );
        let (_, entries) = parse(&body, 100).unwrap();
        assert!(
            plan(entries, seq_ids(), &HashMap::new(), &Rules::default())
                .unwrap_err()
                .to_string()
                .contains("more than one entry")
        );
    }

    #[test]
    fn a_conditional_match_reuses_the_existing_id_for_references() {
        let body = bundle(
            "transaction",
            json!([
                {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=http://x|1"}},
                {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:p"}},
                 "request": {"method": "POST", "url": "Observation"}}
            ]),
        );
        let (_, entries) = parse(&body, 100).unwrap();
        assert_eq!(entries[0].if_none_exist, Some(Criteria::parse("identifier=http://x|1").unwrap()));
        let existing = HashMap::from([(0, ResourceId::parse("old").unwrap())]);
        let planned = plan(entries, seq_ids(), &existing, &Rules::default()).unwrap();
        let obs = planned.iter().find(|p| p.entry.index == 1).unwrap();
        assert_eq!(obs.resource.as_ref().unwrap()["subject"]["reference"], "Patient/old");
    }
}
