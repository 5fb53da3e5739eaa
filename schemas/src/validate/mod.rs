//! Validation of resource bodies before they become events.
//!
//! Two stages, both pure so the same rules apply over HTTP, in Bundles, on
//! import and in `verify`: first what every write relies on (a JSON object
//! of the URL's R4 type, a matching id, no empty or control-laden values),
//! answered with the first mistake; then conformance to the R4 definitions
//! (`walk.rs` over the table in `model.rs`), answered with every issue.

pub(crate) mod model;
mod narrative;
mod profile;
mod walk;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use model::ValueSet;
pub use profile::{Profile, value_sets_from};

use crate::resource::{ResourceId, ResourceType};

/// How bad an issue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// The kind of rule an issue breaks (the OperationOutcome `code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueKind {
    /// Unknown element, wrong JSON shape, two choice variants.
    Structure,
    /// A mandatory element is missing.
    Required,
    /// A primitive does not match its type's format or range.
    Value,
    /// A code outside its required value set.
    CodeInvalid,
    /// A constraint (`ext-1`, `txt-1`, ...) does not hold.
    Invariant,
    /// Something could not be checked (a claimed profile that is not known).
    NotSupported,
}

/// One finding of conformance validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueKind,
    /// The FHIRPath of the element (`Observation.component[1].code`).
    pub expression: String,
    /// For a person: what is wrong.
    pub message: String,
}

/// How strictly a tenant treats elements R4 does not define.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strictness {
    /// Unknown elements are errors (the default).
    #[default]
    Strict,
    /// Unknown elements are warnings; everything else stays an error.
    AllowUnknownElements,
}

/// What a tenant asks of its writes beyond base R4 (its configuration's
/// `validation`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationPolicy {
    /// `warn` accepts elements R4 does not define, as warnings; `refuse`
    /// (the default) refuses them. Types, cardinality and bindings are
    /// always enforced.
    #[serde(default, skip_serializing_if = "is_default")]
    pub unknown_elements: UnknownElements,
    /// Canonical URLs of the profiles every write of a type must conform
    /// to, per resource type (`{"Observation": ["http://.../vitalsigns"]}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub profiles: BTreeMap<String, Vec<String>>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A tenant's choice for unknown elements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownElements {
    #[default]
    Refuse,
    Warn,
}

impl ValidationPolicy {
    pub fn strictness(&self) -> Strictness {
        match self.unknown_elements {
            UnknownElements::Refuse => Strictness::Strict,
            UnknownElements::Warn => Strictness::AllowUnknownElements,
        }
    }

    /// The canonical URLs a write of `rt` must be checked against: the
    /// enforced ones and the ones its `meta.profile` claims.
    pub fn profiles_for(&self, rt: ResourceType, resource: &Map<String, Value>) -> Vec<String> {
        let mut urls: Vec<String> = self.profiles.get(rt.as_str()).cloned().unwrap_or_default();
        urls.extend(claimed_profiles(resource));
        urls.sort();
        urls.dedup();
        urls
    }

    /// Checks that every type named is an R4 resource type.
    pub fn check(&self) -> Result<(), String> {
        for (t, urls) in &self.profiles {
            ResourceType::parse(t).map_err(|e| format!("validation.profiles: {e}"))?;
            if urls.iter().any(|u| u.is_empty()) {
                return Err(format!("validation.profiles.{t}: a profile URL must not be empty"));
            }
        }
        Ok(())
    }
}

/// The canonical URLs in `meta.profile` (versions stripped).
pub fn claimed_profiles(resource: &Map<String, Value>) -> impl Iterator<Item = String> + '_ {
    resource
        .get("meta")
        .and_then(|m| m.get("profile"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|u| u.split('|').next().unwrap_or(u).to_owned())
}

/// The rules one write is checked against: base R4 with the tenant's
/// strictness, plus the profiles resolved for it.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub strictness: Strictness,
    /// Profiles enforced on a type (all must hold).
    pub enforced: HashMap<ResourceType, Vec<Arc<Profile>>>,
    /// Profiles the tenant can see, by URL, for `meta.profile` claims.
    pub visible: HashMap<String, Arc<Profile>>,
    /// Benchmarks only: check the structure stage alone.
    pub skip_conformance: bool,
}

/// A resource that passed, with the warnings it earned.
#[derive(Debug)]
pub struct Checked {
    pub resource: Map<String, Value>,
    pub warnings: Vec<Issue>,
}

/// [`check_resource`] under a tenant's [`Rules`]: its strictness, its
/// enforced profiles and the profiles the resource claims. A claimed
/// profile the tenant cannot see is a warning, not an error.
pub fn check_resource_with(value: Value, expect: Expect<'_>, rules: &Rules) -> Result<Checked, ValidationError> {
    let resource = check_structure(value, expect)?;
    if rules.skip_conformance {
        return Ok(Checked { resource, warnings: vec![] });
    }
    let rt = match expect {
        Expect::Create(rt) | Expect::Update(rt, _) => rt,
    };
    let mut issues = conformance(&resource, rt, rules.strictness);
    if !issues.iter().any(|i| i.severity == Severity::Error) {
        let mut seen: Vec<&str> = vec![];
        for p in rules.enforced.get(&rt).into_iter().flatten() {
            seen.push(&p.url);
            p.check(&resource, &mut issues);
        }
        for url in claimed_profiles(&resource) {
            if seen.contains(&url.as_str()) {
                continue;
            }
            match rules.visible.get(&url) {
                Some(p) if p.resource_type == rt.as_str() => p.check(&resource, &mut issues),
                _ => issues.push(Issue {
                    severity: Severity::Warning,
                    code: IssueKind::NotSupported,
                    expression: format!("{rt}.meta.profile"),
                    message: format!("profile {} is not known to this tenant; it was not checked", printable(&url)),
                }),
            }
        }
    }
    if issues.iter().any(|i| i.severity == Severity::Error) {
        return Err(ValidationError::NonConformant(issues));
    }
    Ok(Checked { resource, warnings: issues })
}

/// Conformance of a resource object of type `rt` to R4: every issue found
/// (capped at 100), errors and warnings. Empty means conformant.
pub fn conformance(resource: &Map<String, Value>, rt: ResourceType, strictness: Strictness) -> Vec<Issue> {
    let model = &*model::R4;
    let Some(ty) = model.type_id(rt.as_str()) else {
        return vec![];
    };
    let mut walker = walk::Walker::new(model, rt.as_str(), strictness == Strictness::AllowUnknownElements);
    walker.resource(ty, resource);
    walker.issues
}

/// Why a body cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    #[error("the body must be a JSON object (a FHIR resource)")]
    NotObject,
    #[error("the resource has no resourceType")]
    MissingResourceType,
    #[error("resourceType '{found}' does not match the URL's type '{expected}'")]
    TypeMismatch { expected: ResourceType, found: String },
    #[error("the resource id '{body}' does not match the URL's id '{url}'")]
    IdMismatch { url: ResourceId, body: String },
    #[error("an update must carry the resource id in its body (id '{0}' expected)")]
    MissingId(ResourceId),
    #[error("'{0}' is not a valid FHIR id")]
    InvalidId(String),
    #[error("meta must be a JSON object")]
    InvalidMeta,
    #[error("the element '{0}' must not be empty (FHIR forbids empty objects, arrays and strings)")]
    Empty(String),
    #[error("the element '{0}' holds a control character (FHIR strings allow only tab, CR and LF below U+0020)")]
    ControlCharacter(String),
    /// Well-formed, but not a conformant R4 resource (422): every error.
    #[error("{}", summary(.0))]
    NonConformant(Vec<Issue>),
}

fn summary(issues: &[Issue]) -> String {
    let errors: Vec<&Issue> = issues.iter().filter(|i| i.severity == Severity::Error).collect();
    match errors.as_slice() {
        [] => "the resource does not conform to FHIR R4".to_owned(),
        [one] => format!("the resource does not conform to FHIR R4: {} ({})", one.message, one.expression),
        [first, rest @ ..] => format!(
            "the resource does not conform to FHIR R4: {} ({}), and {} more issue(s)",
            first.message,
            first.expression,
            rest.len()
        ),
    }
}

impl ValidationError {
    /// The FHIRPath of the element the error is about, where there is one.
    pub fn expression(&self) -> Option<String> {
        match self {
            Self::MissingResourceType | Self::TypeMismatch { .. } => Some("resourceType".into()),
            Self::IdMismatch { .. } | Self::MissingId(_) | Self::InvalidId(_) => Some("id".into()),
            Self::InvalidMeta => Some("meta".into()),
            Self::Empty(path) | Self::ControlCharacter(path) => Some(path.clone()),
            Self::NonConformant(issues) => issues.first().map(|i| i.expression.clone()),
            Self::NotJson(_) | Self::NotObject => None,
        }
    }
}

/// What the URL says the body must be.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// `POST /{type}`: the server assigns the id; one in the body is ignored.
    Create(ResourceType),
    /// `PUT /{type}/{id}`: the body's id must equal the URL's.
    Update(ResourceType, &'a ResourceId),
}

/// Parses and checks a resource body, returning the resource object.
pub fn parse_resource(body: &[u8], expect: Expect<'_>) -> Result<Map<String, Value>, ValidationError> {
    check_resource(parse_json(body)?, expect)
}

/// Parses a request body as JSON (400 when it is not).
pub fn parse_json(body: &[u8]) -> Result<Value, ValidationError> {
    serde_json::from_slice(body).map_err(|e| ValidationError::NotJson(e.to_string()))
}

/// Checks an already parsed resource (e.g. a Bundle entry) under the
/// strict base rules.
pub fn check_resource(value: Value, expect: Expect<'_>) -> Result<Map<String, Value>, ValidationError> {
    check_resource_with(value, expect, &Rules::default()).map(|c| c.resource)
}

/// The first stage: what every write relies on (400 on failure).
fn check_structure(value: Value, expect: Expect<'_>) -> Result<Map<String, Value>, ValidationError> {
    let Value::Object(resource) = value else {
        return Err(ValidationError::NotObject);
    };
    let expected = match expect {
        Expect::Create(rt) | Expect::Update(rt, _) => rt,
    };
    match resource.get("resourceType") {
        None => return Err(ValidationError::MissingResourceType),
        Some(Value::String(t)) if t == expected.as_str() => {}
        Some(other) => {
            let found = other.as_str().map_or_else(|| other.to_string(), str::to_owned);
            return Err(ValidationError::TypeMismatch { expected, found: found.chars().take(70).collect() });
        }
    }
    if let Expect::Update(_, url_id) = expect {
        match resource.get("id") {
            None => return Err(ValidationError::MissingId(url_id.clone())),
            Some(Value::String(id)) if id == url_id.as_str() => {}
            Some(Value::String(id)) if ResourceId::parse(id).is_err() => {
                return Err(ValidationError::InvalidId(id.chars().take(70).collect()));
            }
            Some(other) => {
                let body = other.as_str().map_or_else(|| other.to_string(), str::to_owned);
                return Err(ValidationError::IdMismatch { url: url_id.clone(), body: body.chars().take(70).collect() });
            }
        }
    }
    if resource.get("meta").is_some_and(|m| !m.is_object()) {
        return Err(ValidationError::InvalidMeta);
    }
    for (k, v) in &resource {
        let at = |rest: String| format!("{expected}.{}{rest}", printable(k));
        if has_control(k) {
            return Err(ValidationError::ControlCharacter(at(String::new())));
        }
        match first_flaw(v) {
            Some((Flaw::Empty, rest)) => return Err(ValidationError::Empty(at(rest))),
            Some((Flaw::Control, rest)) => return Err(ValidationError::ControlCharacter(at(rest))),
            None => {}
        }
    }
    Ok(resource)
}

/// What can be wrong with a JSON value below the resource's top level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    /// FHIR JSON never holds empty objects, arrays or strings.
    Empty,
    /// FHIR strings (and so keys) allow no control character but tab, CR
    /// and LF; NUL in particular cannot be stored in PostgreSQL (`jsonb`
    /// and `text` refuse it), so one accepted would stop the projector.
    Control,
}

/// The first flaw below `value` and its path (`""` for `value` itself).
/// Paths are built only on failure, so the common case allocates nothing.
fn first_flaw(value: &Value) -> Option<(Flaw, String)> {
    match value {
        Value::Object(map) if map.is_empty() => Some((Flaw::Empty, String::new())),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if has_control(k) {
                return Some((Flaw::Control, format!(".{}", printable(k))));
            }
            first_flaw(v).map(|(flaw, rest)| (flaw, format!(".{k}{rest}")))
        }),
        Value::Array(items) if items.is_empty() => Some((Flaw::Empty, String::new())),
        Value::Array(items) => items.iter().find_map(first_flaw),
        Value::String(s) if s.is_empty() => Some((Flaw::Empty, String::new())),
        Value::String(s) if has_control(s) => Some((Flaw::Control, String::new())),
        _ => None,
    }
}

fn has_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
}

/// A key fit to appear in a message: control characters escaped, and
/// hostile lengths cut short.
fn printable(s: &str) -> String {
    s.chars().take(70).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient() -> ResourceType {
        ResourceType::parse("Patient").unwrap()
    }

    #[test]
    fn a_well_formed_patient_is_accepted() {
        let r = parse_resource(br#"{"resourceType":"Patient","name":[{"family":"Smith"}]}"#, Expect::Create(patient()));
        assert!(r.is_ok());
    }

    #[test]
    fn each_structural_mistake_is_named() {
        let id = ResourceId::parse("p1").unwrap();
        type Case<'a> = (&'a [u8], Expect<'a>, fn(&ValidationError) -> bool);
        let cases: Vec<Case<'_>> = vec![
            (b"{", Expect::Create(patient()), |e| matches!(e, ValidationError::NotJson(_))),
            (b"[1]", Expect::Create(patient()), |e| matches!(e, ValidationError::NotObject)),
            (br#"{"id":"x"}"#, Expect::Create(patient()), |e| matches!(e, ValidationError::MissingResourceType)),
            (br#"{"resourceType":"Observation"}"#, Expect::Create(patient()), |e| {
                matches!(e, ValidationError::TypeMismatch { .. })
            }),
            (br#"{"resourceType":"Patient"}"#, Expect::Update(patient(), &id), |e| {
                matches!(e, ValidationError::MissingId(_))
            }),
            (br#"{"resourceType":"Patient","id":"p2"}"#, Expect::Update(patient(), &id), |e| {
                matches!(e, ValidationError::IdMismatch { .. })
            }),
            (br#"{"resourceType":"Patient","id":"p_1"}"#, Expect::Update(patient(), &id), |e| {
                matches!(e, ValidationError::InvalidId(_))
            }),
            (br#"{"resourceType":"Patient","meta":"x"}"#, Expect::Create(patient()), |e| {
                matches!(e, ValidationError::InvalidMeta)
            }),
            (
                br#"{"resourceType":"Patient","name":[]}"#,
                Expect::Create(patient()),
                |e| matches!(e, ValidationError::Empty(p) if p == "Patient.name"),
            ),
        ];
        for (body, expect, is_expected) in cases {
            let err = parse_resource(body, expect).unwrap_err();
            assert!(is_expected(&err), "{}: {err:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn control_characters_are_refused_anywhere_in_a_resource() {
        for body in [
            r#"{"resourceType":"Patient","name":[{"family":"a\u0000b"}]}"#,
            r#"{"resourceType":"Patient","name":[{"family":"\u001b[31m"}]}"#,
            r#"{"resourceType":"Patient","\u0000":1}"#,
            r#"{"resourceType":"Patient","contained":[{"resourceType":"Patient","x\u0001":true}]}"#,
        ] {
            let err = parse_resource(body.as_bytes(), Expect::Create(patient())).unwrap_err();
            assert!(matches!(err, ValidationError::ControlCharacter(_)), "{body}: {err:?}");
            assert!(!err.to_string().contains('\0'), "the message escapes what it names: {err}");
        }
        let text = r#"{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">a\tb\r\nc</div>"}}"#;
        assert!(parse_resource(text.as_bytes(), Expect::Create(patient())).is_ok(), "tab, CR and LF are text");
    }

    #[test]
    fn a_create_ignores_the_body_id() {
        assert!(parse_resource(br#"{"resourceType":"Patient","id":"whatever"}"#, Expect::Create(patient())).is_ok());
    }

    #[test]
    fn absurdly_deep_json_is_refused_not_overflowed() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(parse_resource(deep.as_bytes(), Expect::Create(patient())), Err(ValidationError::NotJson(_))));
    }
}
