//! What the fuzz targets do with their input: each function feeds bytes to
//! one of the request parsers the HTTP edge relies on and checks the
//! properties that must hold for any input, so a failure is a panic.
//!
//! The same file is compiled into tests/fuzz_regressions.rs, which replays
//! the saved crash inputs (`fuzz/regressions/`) and the seed corpus
//! (`fuzz/seeds/`) in the normal test suite without cargo-fuzz.

use std::collections::HashMap;

use chrono::{TimeZone as _, Utc};
use schemas::subject::{parse_resource_subject, resource_subject, tenant_subject};
use schemas::validate::{Expect, parse_resource};
use schemas::{ResourceId, ResourceType, TenantId, Version};

/// Search parameters: the first byte picks the searched types and strict
/// handling, the rest is a query string. Whatever parses must also turn
/// into SQL without panicking.
pub fn search_params(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else { return };
    let all: Vec<ResourceType> = ResourceType::all().collect();
    let types = match first >> 1 {
        0..=7 => Vec::new(),
        8..=15 => all.iter().copied().skip(usize::from(first) % all.len()).take(3).collect(),
        n => vec![all[usize::from(n) % all.len()]],
    };
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(rest).into_owned().collect();
    let cx = query::search::Context {
        tenant_base: "http://fuzz.test/fhir/acme",
        now: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default(),
        strict: first & 1 == 1,
    };
    if let Ok(req) = query::search::parse(types, &pairs, &cx) {
        let _ = query::search::sql::count("acme", &req);
        let _ = query::search::sql::page("acme", &req, None, 50);
    }
}

/// Ids, tenants, ETags and subjects: every id that parses maps to a subject
/// of exactly four tokens without wildcards or whitespace that parses back
/// to the same address; every subject that parses is the one its address
/// builds (the mapping is a bijection).
pub fn ids_subjects(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = Version::parse(&text);
    let _ = Version::parse_etag(&text);
    let tenant = TenantId::parse(&text).or_else(|_| TenantId::parse("acme")).ok();
    if let (Ok(id), Some(tenant)) = (ResourceId::parse(&text), &tenant) {
        let subject = resource_subject(tenant, patient(), &id);
        assert_eq!(subject.split('.').count(), 4, "{subject}");
        assert!(!subject.contains(['*', '>', ' ', '\t', '\r', '\n']), "{subject}");
        let back = parse_resource_subject(&subject).unwrap_or_else(|e| panic!("{subject}: {e}"));
        assert_eq!(back.id, id);
        assert_eq!(&back.tenant, tenant);
    }
    if let Ok(t) = TenantId::parse(&text) {
        let subject = tenant_subject(&t);
        assert_eq!(subject.split('.').count(), 3, "{subject}");
        assert!(!subject.contains(['*', '>', ' ', '\t', '\r', '\n']), "{subject}");
    }
    if let Ok(addr) = parse_resource_subject(&text) {
        assert_eq!(resource_subject(&addr.tenant, addr.resource_type, &addr.id), text);
    }
}

fn patient() -> ResourceType {
    ResourceType::parse("Patient").unwrap_or_else(|e| panic!("{e}"))
}

/// Resource validation, as for a create and as for an update of
/// `Patient/fuzz`: what is accepted is an object of the expected type.
pub fn validate_json(data: &[u8]) {
    let rt = patient();
    if let Ok(r) = parse_resource(data, Expect::Create(rt)) {
        assert_eq!(r.get("resourceType").and_then(|v| v.as_str()), Some("Patient"));
    }
    let Ok(id) = ResourceId::parse("fuzz") else { return };
    if let Ok(r) = parse_resource(data, Expect::Update(rt, &id)) {
        assert_eq!(r.get("resourceType").and_then(|v| v.as_str()), Some("Patient"));
        assert_eq!(r.get("id").and_then(|v| v.as_str()), Some("fuzz"));
    }
}

/// R4 conformance of any JSON object: the first byte picks the resource
/// type, the rest is the body. Issues are bounded, point into the resource,
/// and strictness only turns unknown-element errors into warnings.
pub fn conformance(data: &[u8]) {
    use schemas::validate::{Severity, Strictness, conformance};
    let Some((&first, rest)) = data.split_first() else { return };
    let all: Vec<ResourceType> = ResourceType::all().collect();
    let rt = all[usize::from(first) % all.len()];
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(rest) else { return };
    let strict = conformance(&map, rt, Strictness::Strict);
    let lenient = conformance(&map, rt, Strictness::AllowUnknownElements);
    assert!(strict.len() <= 100 && lenient.len() <= 100);
    assert_eq!(strict.len(), lenient.len(), "the same issues, only severities differ");
    for (s, l) in strict.iter().zip(&lenient) {
        assert!(s.expression.starts_with(rt.as_str()), "{}", s.expression);
        assert_eq!((s.code, &s.expression), (l.code, &l.expression));
        assert!(s.severity == l.severity || l.severity == Severity::Warning);
    }
}

/// Bundle parsing and planning as a transaction is planned: ids assigned,
/// references resolved, processing order. Every planned write targets a
/// distinct resource, and each body carries the id it was planned under.
pub fn bundle(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = command::bundle::Criteria::parse(text);
    }
    let Ok((_, entries)) = command::bundle::parse(data, 1000) else { return };
    let mut n = 0u32;
    let new_id = |_: &command::bundle::Entry| {
        n += 1;
        ResourceId::parse(&format!("new-{n}")).unwrap_or_else(|e| panic!("{e}"))
    };
    let Ok(planned) = command::bundle::plan(entries, new_id, &HashMap::new(), &schemas::validate::Rules::default())
    else {
        return;
    };
    let mut targets = std::collections::HashSet::new();
    for p in &planned {
        if p.entry.method != command::bundle::Method::Get {
            assert!(targets.insert((p.entry.rt, p.id.clone())), "{}/{} planned twice", p.entry.rt, p.id);
        }
        if let Some(r) = &p.resource {
            assert_eq!(r.get("id").and_then(|v| v.as_str()), Some(p.id.as_str()));
        }
    }
}
