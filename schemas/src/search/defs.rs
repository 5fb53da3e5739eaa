//! The search parameters of each resource type (generated data, loaded once).
//!
//! `params.json` is written by `scripts/gen-search-params.py` and embedded,
//! so the definitions are fixed at build time; names and URLs are borrowed
//! straight from the embedded text (the generator guarantees no escapes).

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::ResourceType;

use super::ParamKind;

/// A search parameter as the server supports it.
#[derive(Debug, Clone)]
pub struct SearchParam {
    pub name: &'static str,
    pub kind: ParamKind,
    /// The canonical URL of the official definition.
    pub url: &'static str,
    /// For references: the resource types it may point at.
    pub targets: Vec<ResourceType>,
    /// Where the values are: any of these paths (the expression's union).
    pub(crate) paths: Vec<Vec<Step>>,
}

/// One compiled FHIRPath step; each maps a collection of JSON values to a
/// new one, arrays flattened as FHIRPath does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// The field `name`; `ty` is its FHIR data type when the definitions
    /// give one (not for backbone elements).
    Field { name: &'static str, ty: Option<&'static str> },
    /// Any of these concrete keys of a choice element, with each key's type.
    Choice(Vec<(&'static str, &'static str)>),
    /// Keep objects whose `field` is the string `value`.
    WhereEq { field: &'static str, value: &'static str },
    /// Keep references that point at this type (`where(resolve() is T)`).
    Is(ResourceType),
    /// Keep only this element of the collection (`[n]`).
    Index(usize),
    /// The whole collection as one boolean: non-empty and not `false`.
    Truthy,
}

static PARAMS_JSON: &str = include_str!("params.json");

static DEFS: LazyLock<Defs> = LazyLock::new(|| {
    // The file is generated and committed, and a test loads it, so a failure
    // here is a build defect rather than a run-time condition.
    load(PARAMS_JSON).unwrap_or_else(|e| panic!("search/params.json does not load: {e}"))
});

#[derive(Debug, Default)]
struct TypeDefs {
    params: Vec<SearchParam>,
    unsupported: Vec<&'static str>,
}

#[derive(Debug)]
struct Defs {
    by_type: HashMap<ResourceType, TypeDefs>,
}

/// Every supported parameter of `rt`, including the common ones
/// (`_id`, `_lastUpdated`, `_tag`, `_profile`, `_security`, `_source`).
pub fn params(rt: ResourceType) -> &'static [SearchParam] {
    DEFS.by_type.get(&rt).map_or(&[], |t| &t.params)
}

/// The supported parameter `name` of `rt`.
pub fn param(rt: ResourceType, name: &str) -> Option<&'static SearchParam> {
    params(rt).iter().find(|p| p.name == name)
}

/// Names of official parameters of `rt` that are not supported (composite,
/// special, or an expression the extractor cannot evaluate).
pub fn unsupported(rt: ResourceType) -> &'static [&'static str] {
    DEFS.by_type.get(&rt).map_or(&[], |t| &t.unsupported)
}

#[derive(Deserialize)]
struct RawFile<'a> {
    #[serde(borrow)]
    common: Vec<RawParam<'a>>,
    #[serde(borrow)]
    types: HashMap<&'a str, RawType<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawType<'a> {
    #[serde(borrow)]
    params: Vec<RawParam<'a>>,
    #[serde(borrow)]
    unsupported: Vec<&'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    url: &'a str,
    #[serde(borrow, default)]
    target: Vec<&'a str>,
    /// "Any type but these": how the generator shortens near-complete lists.
    #[serde(borrow, default)]
    target_except: Vec<&'a str>,
    #[serde(borrow)]
    paths: Vec<Vec<RawStep<'a>>>,
}

/// A step as written: exactly one of the keys besides `t` is present.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep<'a> {
    #[serde(borrow)]
    f: Option<&'a str>,
    #[serde(borrow)]
    t: Option<&'a str>,
    #[serde(borrow)]
    c: Option<Vec<(&'a str, &'a str)>>,
    #[serde(borrow)]
    w: Option<(&'a str, &'a str)>,
    #[serde(borrow)]
    is: Option<&'a str>,
    i: Option<usize>,
    truthy: Option<bool>,
}

fn load(text: &'static str) -> Result<Defs, String> {
    let raw: RawFile<'static> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let common = raw.common.iter().map(convert).collect::<Result<Vec<_>, _>>()?;
    let mut by_type = HashMap::new();
    for (name, t) in &raw.types {
        let rt = ResourceType::parse(name).map_err(|e| e.to_string())?;
        let mut params = t.params.iter().map(convert).collect::<Result<Vec<_>, _>>()?;
        params.extend(common.iter().cloned());
        params.sort_by_key(|p| p.name);
        by_type.insert(rt, TypeDefs { params, unsupported: t.unsupported.clone() });
    }
    if let Some(missing) = ResourceType::all().find(|rt| !by_type.contains_key(rt)) {
        return Err(format!("no entry for {missing}"));
    }
    Ok(Defs { by_type })
}

fn convert(p: &RawParam<'static>) -> Result<SearchParam, String> {
    let kind = match p.kind {
        "string" => ParamKind::String,
        "token" => ParamKind::Token,
        "date" => ParamKind::Date,
        "reference" => ParamKind::Reference,
        "number" => ParamKind::Number,
        "quantity" => ParamKind::Quantity,
        "uri" => ParamKind::Uri,
        other => return Err(format!("{}: unknown type {other}", p.name)),
    };
    let parse = |t: &str| ResourceType::parse(t).map_err(|e| format!("{}: {e}", p.name));
    let targets = if p.target_except.is_empty() {
        p.target.iter().map(|t| parse(t)).collect::<Result<Vec<_>, _>>()?
    } else {
        let except = p.target_except.iter().map(|t| parse(t)).collect::<Result<Vec<_>, _>>()?;
        ResourceType::all().filter(|rt| !except.contains(rt)).collect()
    };
    let paths = p
        .paths
        .iter()
        .map(|path| path.iter().map(|s| step(s).map_err(|e| format!("{}: {e}", p.name))).collect())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SearchParam { name: p.name, kind, url: p.url, targets, paths })
}

fn step(s: &RawStep<'static>) -> Result<Step, String> {
    let step = match (s.f, &s.c, s.w, s.is, s.i, s.truthy) {
        (Some(name), None, None, None, None, None) => return Ok(Step::Field { name, ty: s.t }),
        (None, Some(keys), None, None, None, None) => Step::Choice(keys.clone()),
        (None, None, Some((field, value)), None, None, None) => Step::WhereEq { field, value },
        (None, None, None, Some(t), None, None) => Step::Is(ResourceType::parse(t).map_err(|e| e.to_string())?),
        (None, None, None, None, Some(i), None) => Step::Index(i),
        (None, None, None, None, None, Some(true)) => Step::Truthy,
        _ => return Err("a step must have exactly one kind".to_string()),
    };
    match s.t {
        Some(_) => Err("only field steps carry a type".to_string()),
        None => Ok(step),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(s: &str) -> ResourceType {
        ResourceType::parse(s).unwrap()
    }

    fn kind(t: &str, name: &str) -> ParamKind {
        param(rt(t), name).unwrap_or_else(|| panic!("{t}.{name} missing")).kind
    }

    #[test]
    fn the_embedded_definitions_load() {
        let defs = load(PARAMS_JSON).unwrap();
        assert_eq!(defs.by_type.len(), 146);
    }

    #[test]
    fn patient_has_the_everyday_parameters_with_their_kinds() {
        for (name, k) in [
            ("family", ParamKind::String),
            ("given", ParamKind::String),
            ("name", ParamKind::String),
            ("birthdate", ParamKind::Date),
            ("gender", ParamKind::Token),
            ("identifier", ParamKind::Token),
            ("_tag", ParamKind::Token),
            ("_profile", ParamKind::Uri),
            ("_id", ParamKind::Token),
            ("_lastUpdated", ParamKind::Date),
            ("general-practitioner", ParamKind::Reference),
        ] {
            assert_eq!(kind("Patient", name), k, "{name}");
        }
        assert_eq!(
            param(rt("Patient"), "gender").unwrap().url,
            "http://hl7.org/fhir/SearchParameter/individual-gender"
        );
        assert!(param(rt("Patient"), "no-such-thing").is_none());
    }

    #[test]
    fn observation_subject_may_point_at_patients_and_groups() {
        let subject = param(rt("Observation"), "subject").unwrap();
        assert_eq!(subject.kind, ParamKind::Reference);
        assert!(subject.targets.contains(&rt("Patient")));
        assert!(subject.targets.contains(&rt("Group")));
        assert!(!subject.targets.contains(&rt("Observation")));
    }

    #[test]
    fn a_reference_to_any_type_lists_every_type_but_parameters() {
        let targets = &param(rt("Provenance"), "target").unwrap().targets;
        assert_eq!(targets.len(), 145);
        assert!(!targets.contains(&rt("Parameters")));
    }

    #[test]
    fn every_type_has_the_common_parameters() {
        for t in ResourceType::all() {
            for name in ["_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"] {
                assert!(param(t, name).is_some(), "{t}.{name}");
            }
            let names: Vec<_> = params(t).iter().map(|p| p.name).collect();
            let mut unique = names.clone();
            unique.dedup();
            assert_eq!(names, unique, "{t}: names are sorted and unique");
            assert!(unsupported(t).contains(&"_content"), "{t}");
        }
    }

    #[test]
    fn composite_and_special_parameters_are_listed_as_unsupported() {
        let obs = unsupported(rt("Observation"));
        assert!(obs.contains(&"code-value-quantity"));
        assert!(param(rt("Observation"), "code-value-quantity").is_none());
        assert!(unsupported(rt("Location")).contains(&"near"));
        assert!(unsupported(rt("Bundle")).contains(&"composition"), "an inline resource is not a reference");
        assert!(unsupported(rt("Patient")).contains(&"_text"));
        assert!(!unsupported(rt("Bundle")).contains(&"_text"), "Bundle is not a DomainResource");
    }

    #[test]
    fn a_plain_path_onto_a_choice_lists_every_concrete_key() {
        let date = param(rt("Observation"), "date").unwrap();
        let [path] = date.paths.as_slice() else { panic!("{:?}", date.paths) };
        let [Step::Choice(keys)] = path.as_slice() else { panic!("{path:?}") };
        let keys: Vec<_> = keys.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["effectiveDateTime", "effectivePeriod", "effectiveTiming", "effectiveInstant"]);
    }

    #[test]
    fn of_type_selects_the_one_concrete_key() {
        let vq = param(rt("Observation"), "value-quantity").unwrap();
        assert_eq!(vq.paths[0], [Step::Field { name: "valueQuantity", ty: Some("Quantity") }]);
    }

    #[test]
    fn malformed_steps_are_refused() {
        for bad in [r#"{"f":"a","c":[]}"#, r#"{"w":["a","b"],"t":"string"}"#, r#"{}"#, r#"{"truthy":false}"#] {
            let raw: RawStep<'static> = serde_json::from_str(bad).unwrap();
            assert!(step(&raw).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<RawStep<'static>>(r#"{"zz":1}"#).is_err());
    }
}
