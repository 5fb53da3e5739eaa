//! Evaluating the compiled parameter paths over a resource's JSON.
//!
//! The input is whatever a client stored, so nothing here trusts a shape:
//! a value of the wrong JSON type yields no entry rather than an error, and
//! no input panics. Which entries a value yields is decided by the data type
//! the generator recorded for the path, and by the JSON shape where the
//! type is not known.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::{ResourceId, ResourceType};

use super::defs::{SearchParam, Step, params};
use super::value::{DateRange, far_future, far_past, normalize, parse_date_range};
use super::{IndexEntry, IndexValue, ParamKind};

/// The system of ISO 4217 currency codes, which Money values implicitly use.
const CURRENCY_SYSTEM: &str = "urn:iso:std:iso:4217";

/// Nested objects deeper than this are not searched for string leaves; real
/// data types are a few levels deep, and the bound keeps hostile input cheap.
const MAX_LEAF_DEPTH: usize = 8;

static JSON_TRUE: Value = Value::Bool(true);
static JSON_FALSE: Value = Value::Bool(false);

/// The index entries of a resource, for every parameter of its type except
/// `_id` and `_lastUpdated` (the read model has those as columns).
pub fn index(rt: ResourceType, resource: &Value) -> Vec<IndexEntry> {
    let mut out = Vec::new();
    for p in params(rt) {
        if p.name == "_id" || p.name == "_lastUpdated" {
            continue;
        }
        let mut seen = HashSet::new();
        for path in &p.paths {
            for node in eval(resource, path) {
                for value in values(p, node) {
                    if seen.insert(value.clone()) {
                        out.push(IndexEntry { param: p.name, value });
                    }
                }
            }
        }
    }
    out
}

/// A JSON value reached by a path, with its FHIR data type when known.
#[derive(Debug, Clone, Copy)]
struct Node<'a> {
    value: &'a Value,
    ty: Option<&'static str>,
}

fn eval<'a>(resource: &'a Value, path: &[Step]) -> Vec<Node<'a>> {
    let mut nodes = vec![Node { value: resource, ty: None }];
    for step in path {
        nodes = match step {
            Step::Field { name, ty } => nodes.iter().flat_map(|n| children(n.value, name, *ty)).collect(),
            Step::Choice(keys) => nodes
                .iter()
                .flat_map(|n| keys.iter().flat_map(move |(key, ty)| children(n.value, key, Some(*ty))))
                .collect(),
            Step::WhereEq { field, value } => {
                nodes.into_iter().filter(|n| n.value.get(field).and_then(Value::as_str) == Some(value)).collect()
            }
            Step::Is(target) => nodes
                .into_iter()
                .filter(|n| {
                    let reference = n.value.get("reference").and_then(Value::as_str);
                    reference.and_then(|r| parse_reference(r).0) == Some(*target)
                })
                .collect(),
            Step::Index(i) => nodes.into_iter().nth(*i).into_iter().collect(),
            Step::Truthy => {
                let truthy = nodes.iter().any(|n| n.value != &JSON_FALSE);
                vec![Node { value: if truthy { &JSON_TRUE } else { &JSON_FALSE }, ty: Some("boolean") }]
            }
        };
    }
    nodes
}

/// The value(s) of `key` in an object, arrays flattened; nulls are absent.
fn children<'a>(value: &'a Value, key: &str, ty: Option<&'static str>) -> Vec<Node<'a>> {
    match value.get(key) {
        Some(Value::Array(items)) => items.iter().filter(|v| !v.is_null()).map(|value| Node { value, ty }).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(value) => vec![Node { value, ty }],
    }
}

fn values(p: &SearchParam, node: Node<'_>) -> Vec<IndexValue> {
    match p.kind {
        ParamKind::String => strings(node),
        ParamKind::Token => tokens(node),
        ParamKind::Date => dates(node).into_iter().map(IndexValue::Date).collect(),
        ParamKind::Reference => reference(node).into_iter().collect(),
        ParamKind::Number => number(node).into_iter().collect(),
        ParamKind::Quantity => quantity(node).into_iter().collect(),
        ParamKind::Uri => node
            .value
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|uri| IndexValue::Uri { uri: uri.to_owned() })
            .into_iter()
            .collect(),
    }
}

fn string_value(s: &str) -> Option<IndexValue> {
    (!s.trim().is_empty()).then(|| IndexValue::String { normalized: normalize(s), exact: s.to_owned() })
}

fn strings(node: Node<'_>) -> Vec<IndexValue> {
    let obj = match node.value {
        Value::String(s) => return string_value(s).into_iter().collect(),
        Value::Object(obj) => obj,
        _ => return Vec::new(),
    };
    let fields: &[&str] = match node.ty {
        Some("HumanName") => &["family", "given", "prefix", "suffix", "text"],
        Some("Address") => &["line", "city", "district", "state", "postalCode", "country", "text"],
        _ => {
            let mut leaves = Vec::new();
            string_leaves(obj, 0, &mut leaves);
            return leaves.into_iter().filter_map(string_value).collect();
        }
    };
    fields.iter().flat_map(|f| strs(obj.get(*f))).filter_map(string_value).collect()
}

/// The strings of a field holding a string or a list of strings.
fn strs(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn string_leaves<'a>(obj: &'a Map<String, Value>, depth: usize, out: &mut Vec<&'a str>) {
    if depth > MAX_LEAF_DEPTH {
        return;
    }
    for (key, v) in obj {
        // Extensions and element ids are not the element's text.
        if key == "extension" || key == "modifierExtension" || key == "id" || key.starts_with('_') {
            continue;
        }
        let items = match v {
            Value::Array(items) => items.as_slice(),
            other => std::slice::from_ref(other),
        };
        for item in items {
            match item {
                Value::String(s) => out.push(s),
                Value::Object(inner) => string_leaves(inner, depth + 1, out),
                _ => {}
            }
        }
    }
}

fn opt_str(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn tokens(node: Node<'_>) -> Vec<IndexValue> {
    let obj = match node.value {
        Value::String(s) if !s.is_empty() => {
            return vec![IndexValue::Token { system: None, code: Some(s.clone()), text: None }];
        }
        Value::Bool(b) => return vec![IndexValue::Token { system: None, code: Some(b.to_string()), text: None }],
        Value::Object(obj) => obj,
        _ => return Vec::new(),
    };
    let ty = node.ty.unwrap_or_else(|| token_shape(obj));
    match ty {
        "CodeableConcept" => {
            let mut out: Vec<_> = obj
                .get("coding")
                .into_iter()
                .flat_map(as_items)
                .filter_map(Value::as_object)
                .filter_map(coding)
                .collect();
            if let Some(text) = opt_str(obj, "text") {
                out.push(IndexValue::Token { system: None, code: None, text: Some(normalize(&text)) });
            }
            out
        }
        "Coding" => coding(obj).into_iter().collect(),
        "Identifier" => {
            let (system, code) = (opt_str(obj, "system"), opt_str(obj, "value"));
            let text = obj.get("type").and_then(|t| t.get("text")).and_then(Value::as_str).map(normalize);
            if system.is_none() && code.is_none() {
                return Vec::new();
            }
            vec![IndexValue::Token { system, code, text }]
        }
        // The ContactPoint system (phone, email, ...) is not a code system;
        // searches such as `email=` already select it.
        "ContactPoint" => opt_str(obj, "value")
            .map(|v| IndexValue::Token { system: None, code: Some(v), text: None })
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// The token data type an untyped object looks like.
fn token_shape(obj: &Map<String, Value>) -> &'static str {
    if obj.contains_key("coding") || (obj.contains_key("text") && !obj.contains_key("value")) {
        "CodeableConcept"
    } else if obj.contains_key("code") {
        "Coding"
    } else if obj.contains_key("value") {
        "Identifier"
    } else {
        "unknown"
    }
}

fn coding(obj: &Map<String, Value>) -> Option<IndexValue> {
    let (system, code) = (opt_str(obj, "system"), opt_str(obj, "code"));
    let text = obj.get("display").and_then(Value::as_str).filter(|s| !s.is_empty()).map(normalize);
    (system.is_some() || code.is_some() || text.is_some()).then_some(IndexValue::Token { system, code, text })
}

fn as_items(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) => items,
        other => std::slice::from_ref(other),
    }
}

fn dates(node: Node<'_>) -> Vec<DateRange> {
    match (node.ty, node.value) {
        // A `string` alternative of a date choice (`occurrenceString`) is
        // free text such as "unknown", not a date.
        (Some("string"), _) => Vec::new(),
        (None | Some("date" | "dateTime" | "instant"), Value::String(s)) => {
            parse_date_range(s).ok().into_iter().collect()
        }
        (Some("Period"), Value::Object(obj)) => period(obj).into_iter().collect(),
        (Some("Timing"), Value::Object(obj)) => timing(obj),
        (None, Value::Object(obj)) if obj.contains_key("start") || obj.contains_key("end") => {
            period(obj).into_iter().collect()
        }
        (None, Value::Object(obj)) if obj.contains_key("event") || obj.contains_key("repeat") => timing(obj),
        // Age, Range and Duration are not instants.
        _ => Vec::new(),
    }
}

/// A Period from the start of `start` to the end of `end`; a missing side is
/// open ([`far_past`] / [`far_future`]). A bad or inverted side drops the
/// whole period rather than widening it.
fn period(obj: &Map<String, Value>) -> Option<DateRange> {
    let side = |key: &str| match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_date_range(s).map(Some).map_err(|_| ()),
        Some(_) => Err(()),
    };
    let (start, end) = (side("start").ok()?, side("end").ok()?);
    if start.is_none() && end.is_none() {
        return None;
    }
    let lo = start.map_or_else(far_past, |r| r.lo);
    let hi = end.map_or_else(far_future, |r| r.hi);
    (lo < hi).then_some(DateRange { lo, hi })
}

fn timing(obj: &Map<String, Value>) -> Vec<DateRange> {
    let mut out: Vec<_> = strs(obj.get("event")).into_iter().filter_map(|s| parse_date_range(s).ok()).collect();
    let bounds = obj.get("repeat").and_then(|r| r.get("boundsPeriod")).and_then(Value::as_object);
    out.extend(bounds.and_then(period));
    out
}

fn reference(node: Node<'_>) -> Option<IndexValue> {
    match node.value {
        // canonical / uri typed reference parameters: kept as given.
        Value::String(url) if !url.is_empty() => {
            Some(IndexValue::Reference { target_type: None, target_id: None, url: url.clone() })
        }
        Value::Object(obj) => {
            let url = opt_str(obj, "reference")?;
            let (target_type, target_id) = parse_reference(&url);
            Some(IndexValue::Reference { target_type, target_id, url })
        }
        _ => None,
    }
}

/// The type and id a reference string points at: `Type/id`, or an absolute
/// `http(s)://.../Type/id`, either with an optional `/_history/n`. Other
/// forms (`urn:uuid:`, contained `#x`, conditional `Type?query`) have none;
/// both or neither are returned.
fn parse_reference(s: &str) -> (Option<ResourceType>, Option<String>) {
    let absolute = s.starts_with("http://") || s.starts_with("https://");
    let s = match s.find("/_history/") {
        Some(i) => &s[..i],
        None => s,
    };
    let segments: Vec<&str> = s.split('/').collect();
    let [.., ty, id] = segments.as_slice() else { return (None, None) };
    if !absolute && segments.len() != 2 {
        return (None, None);
    }
    match (ResourceType::parse(ty), ResourceId::parse(id)) {
        (Ok(ty), Ok(id)) => (Some(ty), Some(id.as_str().to_owned())),
        _ => (None, None),
    }
}

fn number(node: Node<'_>) -> Option<IndexValue> {
    // Range alternatives (RiskAssessment.probabilityRange) are not numbers;
    // matching them needs range semantics the index does not have.
    match node.value {
        Value::Number(n) => Some(IndexValue::Number { value: n.to_string() }),
        _ => None,
    }
}

/// Quantity, Age, Duration, Money and the like. Range and SampledData yield
/// nothing: indexing their bounds as plain quantities would make `=5` match
/// a range's edges only, which is wrong, so they are not searchable.
fn quantity(node: Node<'_>) -> Option<IndexValue> {
    if matches!(node.ty, Some("Range" | "SampledData")) {
        return None;
    }
    let obj = node.value.as_object()?;
    let Some(Value::Number(n)) = obj.get("value") else { return None };
    let value = n.to_string();
    if let Some(currency) = opt_str(obj, "currency") {
        return Some(IndexValue::Quantity {
            value,
            system: Some(CURRENCY_SYSTEM.to_owned()),
            code: Some(currency),
            unit: None,
        });
    }
    Some(IndexValue::Quantity {
        value,
        system: opt_str(obj, "system"),
        code: opt_str(obj, "code"),
        unit: opt_str(obj, "unit"),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;

    fn rt(s: &str) -> ResourceType {
        ResourceType::parse(s).unwrap()
    }

    fn shared(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel)
    }

    fn gunzip(path: PathBuf) -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap()).read_to_string(&mut text).unwrap();
        text
    }

    /// The resources of one Synthea transaction bundle.
    fn synthea(file: &str) -> Vec<Value> {
        let bundle: Value = serde_json::from_str(&gunzip(shared("data/synthea-r4").join(file))).unwrap();
        bundle["entry"].as_array().unwrap().iter().map(|e| e["resource"].clone()).collect()
    }

    const ABDUL: &str = "Abdul_Koepp_e925b0f3-8006-43f6-aa31-94bd215e55e7.json.gz";

    fn first_of(resources: &[Value], ty: &str, pred: impl Fn(&Value) -> bool) -> Value {
        resources.iter().find(|r| r["resourceType"] == ty && pred(r)).unwrap().clone()
    }

    /// The values of one parameter.
    fn of(ty: &str, resource: &Value, name: &str) -> Vec<IndexValue> {
        index(rt(ty), resource).into_iter().filter(|e| e.param == name).map(|e| e.value).collect()
    }

    fn exact(values: &[IndexValue]) -> Vec<&str> {
        values
            .iter()
            .map(|v| match v {
                IndexValue::String { exact, .. } => exact.as_str(),
                other => panic!("not a string: {other:?}"),
            })
            .collect()
    }

    fn token(system: Option<&str>, code: Option<&str>, text: Option<&str>) -> IndexValue {
        IndexValue::Token { system: system.map(Into::into), code: code.map(Into::into), text: text.map(Into::into) }
    }

    fn date(lo: &str, hi: &str) -> IndexValue {
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        IndexValue::Date(DateRange { lo: at(lo), hi: at(hi) })
    }

    fn reference(target: Option<(&str, &str)>, url: &str) -> IndexValue {
        IndexValue::Reference {
            target_type: target.map(|(t, _)| rt(t)),
            target_id: target.map(|(_, id)| id.to_owned()),
            url: url.to_owned(),
        }
    }

    #[test]
    fn a_synthea_patient_is_found_by_name_birthdate_gender_identifier_and_city() {
        let patient = first_of(&synthea(ABDUL), "Patient", |_| true);
        assert_eq!(exact(&of("Patient", &patient, "family")), ["Koepp"]);
        assert_eq!(exact(&of("Patient", &patient, "given")), ["Abdul"]);
        assert_eq!(exact(&of("Patient", &patient, "name")), ["Koepp", "Abdul", "Mr."]);
        assert_eq!(
            of("Patient", &patient, "family")[0],
            IndexValue::String { normalized: "koepp".into(), exact: "Koepp".into() }
        );
        assert_eq!(of("Patient", &patient, "birthdate"), [date("1956-08-03T00:00:00Z", "1956-08-04T00:00:00Z")]);
        assert_eq!(of("Patient", &patient, "gender"), [token(None, Some("male"), None)]);
        assert!(of("Patient", &patient, "identifier").contains(&token(
            Some("http://hl7.org/fhir/sid/us-ssn"),
            Some("999-22-1962"),
            Some("social security number")
        )));
        assert_eq!(exact(&of("Patient", &patient, "address-city")), ["Peabody"]);
        assert_eq!(
            exact(&of("Patient", &patient, "address")),
            ["313 Lockman Row Suite 4", "Peabody", "Massachusetts", "01940", "US"]
        );
        assert_eq!(of("Patient", &patient, "phone"), [token(None, Some("555-978-4581"), None)]);
        assert_eq!(of("Patient", &patient, "email"), []);
        assert_eq!(
            of("Patient", &patient, "_tag"),
            [token(Some("https://smarthealthit.org/tags"), Some("synthea-5-2019"), None)]
        );
        assert_eq!(of("Patient", &patient, "deceased"), [token(None, Some("false"), None)]);
    }

    #[test]
    fn id_and_last_updated_are_left_to_the_read_model_columns() {
        let patient = json!({"resourceType": "Patient", "id": "p1", "meta": {"lastUpdated": "2024-01-01T00:00:00Z"}});
        assert!(index(rt("Patient"), &patient).iter().all(|e| e.param != "_id" && e.param != "_lastUpdated"));
    }

    #[test]
    fn a_synthea_observation_has_its_code_value_and_effective_date() {
        let obs = first_of(&synthea(ABDUL), "Observation", |o| o["code"]["coding"][0]["code"] == "8302-2");
        assert_eq!(
            of("Observation", &obs, "code"),
            [
                token(Some("http://loinc.org"), Some("8302-2"), Some("body height")),
                token(None, None, Some("body height"))
            ]
        );
        let IndexValue::Quantity { value, system, code, unit } = &of("Observation", &obs, "value-quantity")[0] else {
            panic!("no quantity")
        };
        assert!(value.starts_with("176.35"));
        assert_eq!(
            (system.as_deref(), code.as_deref(), unit.as_deref()),
            (Some("http://unitsofmeasure.org"), Some("cm"), Some("cm"))
        );
        let effective = obs["effectiveDateTime"].as_str().unwrap();
        assert_eq!(effective, "2011-10-14T23:37:54+00:00");
        assert_eq!(of("Observation", &obs, "date"), [date("2011-10-14T23:37:54Z", "2011-10-14T23:37:55Z")]);
        // Synthea bundles reference by urn:uuid: there is no type and id yet.
        let IndexValue::Reference { target_type: None, target_id: None, url } = &of("Observation", &obs, "subject")[0]
        else {
            panic!("urn:uuid references carry only the url")
        };
        assert!(url.starts_with("urn:uuid:"));
    }

    #[test]
    fn a_synthea_encounter_date_is_its_period() {
        let enc = first_of(&synthea(ABDUL), "Encounter", |e| e["period"]["start"] == "1991-06-07T23:37:54+00:00");
        assert_eq!(of("Encounter", &enc, "date"), [date("1991-06-07T23:37:54Z", "1991-06-07T23:52:55Z")]);
    }

    #[test]
    fn a_period_without_end_is_open_ended() {
        let enc = json!({"resourceType": "Encounter", "period": {"start": "2020-05"}});
        let [IndexValue::Date(r)] = of("Encounter", &enc, "date")[..] else { panic!() };
        assert_eq!((r.lo, r.hi), (date("2020-05-01T00:00:00Z", "2020-05-01T00:00:01Z").lo(), far_future()));
        let enc = json!({"resourceType": "Encounter", "period": {"end": "2020"}});
        let [IndexValue::Date(r)] = of("Encounter", &enc, "date")[..] else { panic!() };
        assert_eq!((r.lo, r.hi), (far_past(), date("2021-01-01T00:00:00Z", "2021-01-01T00:00:01Z").lo()));
        for odd in [json!({}), json!({"start": "soon"}), json!({"start": "2021", "end": "2020"}), json!({"start": 5})] {
            let enc = json!({"resourceType": "Encounter", "period": odd});
            assert_eq!(of("Encounter", &enc, "date"), [], "{odd}");
        }
    }

    impl IndexValue {
        fn lo(&self) -> chrono::DateTime<chrono::Utc> {
            match self {
                IndexValue::Date(r) => r.lo,
                other => panic!("not a date: {other:?}"),
            }
        }
    }

    #[test]
    fn a_plain_path_onto_a_choice_reaches_every_alternative() {
        let period =
            json!({"resourceType": "Observation", "effectivePeriod": {"start": "2020-01-01", "end": "2020-01-02"}});
        assert_eq!(of("Observation", &period, "date"), [date("2020-01-01T00:00:00Z", "2020-01-03T00:00:00Z")]);
        let instant = json!({"resourceType": "Observation", "effectiveInstant": "2020-01-01T10:00:00.5Z"});
        assert_eq!(of("Observation", &instant, "date"), [date("2020-01-01T10:00:00.5Z", "2020-01-01T10:00:00.6Z")]);
        let timing = json!({"resourceType": "Observation", "effectiveTiming": {
            "event": ["2020-02-01", "nonsense"],
            "repeat": {"boundsPeriod": {"start": "2020-03-01"}}
        }});
        assert_eq!(
            of("Observation", &timing, "date"),
            [
                date("2020-02-01T00:00:00Z", "2020-02-02T00:00:00Z"),
                IndexValue::Date(DateRange {
                    lo: date("2020-03-01T00:00:00Z", "2020-03-01T00:00:01Z").lo(),
                    hi: far_future()
                })
            ]
        );
    }

    #[test]
    fn of_type_picks_only_its_alternative() {
        let concept = json!({"resourceType": "Observation", "valueCodeableConcept": {"text": "Positive"}});
        assert_eq!(of("Observation", &concept, "value-quantity"), []);
        assert_eq!(of("Observation", &concept, "value-concept"), [token(None, None, Some("positive"))]);
        assert_eq!(exact(&of("Observation", &concept, "value-string")), ["Positive"]);
        let free_text = json!({"resourceType": "Immunization", "occurrenceString": "2020"});
        assert_eq!(of("Immunization", &free_text, "date"), [], "a string alternative is not a date");
        let onset = json!({"resourceType": "Condition", "onsetAge": {"value": 40}, "onsetDateTime": "2001"});
        assert_eq!(of("Condition", &onset, "onset-date"), [date("2001-01-01T00:00:00Z", "2002-01-01T00:00:00Z")]);
    }

    #[test]
    fn where_system_selects_the_telecom_kind() {
        let patient = json!({"resourceType": "Patient", "telecom": [
            {"system": "phone", "value": "555-1234"},
            {"system": "email", "value": "zoe@example.org"},
            {"system": "email"}
        ]});
        assert_eq!(of("Patient", &patient, "email"), [token(None, Some("zoe@example.org"), None)]);
        assert_eq!(of("Patient", &patient, "phone"), [token(None, Some("555-1234"), None)]);
        assert_eq!(of("Patient", &patient, "telecom").len(), 2);
    }

    #[test]
    fn references_resolve_to_type_and_id_when_they_name_a_resource() {
        let cases = [
            ("Patient/123", Some(("Patient", "123"))),
            ("Patient/123/_history/4", Some(("Patient", "123"))),
            ("https://fhir.example.org/r4/Patient/123", Some(("Patient", "123"))),
            ("http://fhir.example.org/Patient/a.b-c/_history/1", Some(("Patient", "a.b-c"))),
            ("urn:uuid:018f428e-34f6-4707-8009-5ad742f901e7", None),
            ("#contained-1", None),
            ("Patient?identifier=x|1", None),
            ("Patient/", None),
            ("Patient/bad_id", None),
            ("Patients/123", None),
            ("prefix/Patient/123", None),
            ("http://example.org/fhir/Nope/123", None),
            ("Patient", None),
        ];
        for (url, target) in cases {
            let obs = json!({"resourceType": "Observation", "subject": {"reference": url}});
            assert_eq!(of("Observation", &obs, "subject"), [reference(target, url)], "{url}");
        }
        let no_reference = json!({"resourceType": "Observation", "subject": {"display": "someone"}});
        assert_eq!(of("Observation", &no_reference, "subject"), []);
    }

    #[test]
    fn resolve_is_keeps_only_references_to_that_type() {
        let of_patient = json!({"resourceType": "Observation", "subject": {"reference": "Patient/p1"}});
        assert_eq!(of("Observation", &of_patient, "patient"), [reference(Some(("Patient", "p1")), "Patient/p1")]);
        let of_group = json!({"resourceType": "Observation", "subject": {"reference": "Group/g1"}});
        assert_eq!(of("Observation", &of_group, "patient"), []);
        assert_eq!(of("Observation", &of_group, "subject"), [reference(Some(("Group", "g1")), "Group/g1")]);
    }

    #[test]
    fn a_canonical_reference_is_kept_as_its_url() {
        let q =
            json!({"resourceType": "QuestionnaireResponse", "questionnaire": "http://example.org/Questionnaire/q|2"});
        assert_eq!(
            of("QuestionnaireResponse", &q, "questionnaire"),
            [reference(None, "http://example.org/Questionnaire/q|2")]
        );
        let ad = json!({"resourceType": "ActivityDefinition", "relatedArtifact": [
            {"type": "successor", "resource": "http://example.org/ActivityDefinition/next"},
            {"type": "predecessor", "resource": "http://example.org/ActivityDefinition/prev"}
        ]});
        assert_eq!(
            of("ActivityDefinition", &ad, "successor"),
            [reference(None, "http://example.org/ActivityDefinition/next")]
        );
    }

    #[test]
    fn deceased_is_true_for_a_flag_or_a_date_and_false_otherwise() {
        for (deceased, want) in [
            (json!({}), "false"),
            (json!({"deceasedBoolean": false}), "false"),
            (json!({"deceasedBoolean": true}), "true"),
            (json!({"deceasedDateTime": "2020-01-01"}), "true"),
        ] {
            let mut patient = deceased.clone();
            patient["resourceType"] = json!("Patient");
            assert_eq!(of("Patient", &patient, "deceased"), [token(None, Some(want), None)], "{deceased}");
        }
    }

    #[test]
    fn tokens_come_from_codings_concepts_identifiers_codes_and_booleans() {
        let patient = json!({"resourceType": "Patient", "active": true, "language": "en",
            "identifier": [{"value": "only-value"}, {"system": "urn:sys"}, {"type": {"text": "MRN"}}]});
        assert_eq!(of("Patient", &patient, "active"), [token(None, Some("true"), None)]);
        assert_eq!(
            of("Patient", &patient, "identifier"),
            [token(None, Some("only-value"), None), token(Some("urn:sys"), None, None)]
        );
        let security = json!({"resourceType": "Patient", "meta": {"security": [{"display": "Très secret"}]}});
        assert_eq!(of("Patient", &security, "_security"), [token(None, None, Some("tres secret"))]);
    }

    #[test]
    fn identical_values_are_indexed_once() {
        let obs = json!({"resourceType": "Observation",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1"}, {"system": "http://loinc.org", "code": "1"}]},
            "category": [{"text": "Lab"}, {"text": "Lab"}]});
        assert_eq!(of("Observation", &obs, "code"), [token(Some("http://loinc.org"), Some("1"), None)]);
        assert_eq!(of("Observation", &obs, "category"), [token(None, None, Some("lab"))]);
        // The same coding reached through both combo-code paths counts once.
        let combo = json!({"resourceType": "Observation",
            "code": {"coding": [{"code": "x"}]}, "component": [{"code": {"coding": [{"code": "x"}]}}]});
        assert_eq!(of("Observation", &combo, "combo-code"), [token(None, Some("x"), None)]);
    }

    #[test]
    fn quantities_keep_their_units_and_money_its_currency() {
        let invoice = json!({"resourceType": "Invoice", "totalNet": {"value": 12.50, "currency": "EUR"}});
        assert_eq!(
            of("Invoice", &invoice, "totalnet"),
            [IndexValue::Quantity {
                value: "12.5".into(),
                system: Some(CURRENCY_SYSTEM.into()),
                code: Some("EUR".into()),
                unit: None
            }]
        );
        let exact = json!({"resourceType": "Observation", "valueQuantity": {"value": 1.10, "unit": "mg"}});
        assert_eq!(
            of("Observation", &exact, "value-quantity"),
            [IndexValue::Quantity { value: "1.1".into(), system: None, code: None, unit: Some("mg".into()) }]
        );
        let range = json!({"resourceType": "ActivityDefinition", "useContext": [{"code": {"code": "age"},
            "valueRange": {"low": {"value": 1}, "high": {"value": 5}}}]});
        assert_eq!(of("ActivityDefinition", &range, "context-quantity"), [], "ranges are not indexed");
        let no_value = json!({"resourceType": "Observation", "valueQuantity": {"unit": "mg"}});
        assert_eq!(of("Observation", &no_value, "value-quantity"), []);
    }

    #[test]
    fn numbers_keep_their_json_text() {
        let seq = json!({"resourceType": "MolecularSequence", "variant": [{"start": 10}, {"start": 20}]});
        assert_eq!(
            of("MolecularSequence", &seq, "variant-start"),
            [IndexValue::Number { value: "10".into() }, IndexValue::Number { value: "20".into() }]
        );
        let risk = json!({"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.25}]});
        assert_eq!(of("RiskAssessment", &risk, "probability"), [IndexValue::Number { value: "0.25".into() }]);
    }

    #[test]
    fn uris_are_kept_verbatim() {
        let patient = json!({"resourceType": "Patient", "meta": {
            "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"], "source": "#abc"}});
        assert_eq!(
            of("Patient", &patient, "_profile"),
            [IndexValue::Uri { uri: "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient".into() }]
        );
        assert_eq!(of("Patient", &patient, "_source"), [IndexValue::Uri { uri: "#abc".into() }]);
    }

    #[test]
    fn strings_of_other_objects_are_their_leaves() {
        let obs = json!({"resourceType": "Observation", "valueString": "Zoë"});
        assert_eq!(
            of("Observation", &obs, "value-string"),
            [IndexValue::String { normalized: "zoe".into(), exact: "Zoë".into() }]
        );
        let name =
            json!({"resourceType": "Patient", "name": [{"text": "Dr. Zoë Ångström", "given": ["Zoë", 7, null]}]});
        assert_eq!(exact(&of("Patient", &name, "name")), ["Zoë", "Dr. Zoë Ångström"]);
    }

    #[test]
    fn every_synthea_resource_indexes_without_panicking() {
        let mut entries = 0;
        for file in std::fs::read_dir(shared("data/synthea-r4")).unwrap() {
            let path = file.unwrap().path();
            let bundle: Value = serde_json::from_str(&gunzip(path)).unwrap();
            for entry in bundle["entry"].as_array().into_iter().flatten() {
                let resource = &entry["resource"];
                if let Some(ty) = resource["resourceType"].as_str().and_then(|t| ResourceType::parse(t).ok()) {
                    entries += index(ty, resource).len();
                }
            }
        }
        assert!(entries > 100_000, "{entries}");
    }

    #[test]
    fn every_official_example_indexes_without_panicking() {
        let mut seen_kinds = HashSet::new();
        for line in gunzip(shared("fhir-r4/examples-r4.ndjson.gz")).lines() {
            let resource: Value = serde_json::from_str(line).unwrap();
            let ty = rt(resource["resourceType"].as_str().unwrap());
            for e in index(ty, &resource) {
                seen_kinds.insert(std::mem::discriminant(&e.value));
            }
        }
        assert_eq!(seen_kinds.len(), 7, "every kind of value occurs in the examples");
    }

    /// Every JSON shape a client might put anywhere.
    fn odd_values() -> Vec<Value> {
        vec![
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(-1.5e300),
            json!(""),
            json!("x"),
            json!("2020-02-30"),
            json!("Patient/"),
            json!("http://"),
            json!("/_history/"),
            json!([]),
            json!([null, [], [[1]], {}]),
            json!({}),
            json!({"reference": 5, "value": "v", "system": [], "coding": "c", "start": {}, "end": 1}),
            json!({"coding": [null, 1, {"code": {}}], "text": [], "event": {}, "repeat": []}),
            json!({"value": "1", "currency": 1, "start": "2020", "end": "2019"}),
            json!({"family": {}, "given": [1, {}], "line": "l", "extension": [{"valueString": "no"}]}),
        ]
    }

    /// A resource with `leaf` at the end of `path` (and at every field on
    /// the way, when `everywhere`).
    fn build(path: &[Step], leaf: &Value, everywhere: bool) -> Value {
        let Some((step, rest)) = path.split_first() else { return leaf.clone() };
        let inner = build(rest, leaf, everywhere);
        let keys: Vec<&str> = match step {
            Step::Field { name, .. } => vec![name],
            Step::Choice(keys) => keys.iter().map(|(k, _)| *k).collect(),
            _ => return inner,
        };
        let mut obj = Map::new();
        for key in keys {
            let value = if everywhere { json!([inner.clone(), leaf.clone()]) } else { inner.clone() };
            obj.insert(key.to_owned(), value);
        }
        Value::Object(obj)
    }

    #[test]
    fn odd_shapes_at_every_parameter_path_never_panic() {
        for ty in ResourceType::all() {
            for p in params(ty) {
                for path in &p.paths {
                    for leaf in odd_values() {
                        for everywhere in [false, true] {
                            let resource = build(path, &leaf, everywhere);
                            let _ = index(ty, &resource);
                        }
                    }
                }
            }
            for top in odd_values() {
                let _ = index(ty, &top);
            }
        }
    }

    #[test]
    fn deeply_nested_objects_stay_cheap() {
        let mut deep = json!("bottom");
        for _ in 0..100 {
            deep = json!({"a": deep});
        }
        let obs = json!({"resourceType": "Observation", "valueCodeableConcept": deep});
        assert_eq!(of("Observation", &obs, "value-string"), []);
    }
}
