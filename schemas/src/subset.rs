//! `_summary` and `_elements`: which top-level elements of a resource a
//! reader gets back, from the summary, mandatory and modifier flags of the
//! R4 StructureDefinitions (the same generated table validation walks).
//!
//! Subsetting is top-level only: a kept element is returned whole. A
//! resource that lost anything is tagged `SUBSETTED`, as the spec asks, so
//! no client mistakes it for the stored resource.

use serde_json::{Map, Value, json};

use crate::ResourceType;
use crate::validate::model::R4;

/// What a reader asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subset<'a> {
    /// `_summary=true`: the elements marked summary, and mandatory ones.
    Summary,
    /// `_summary=text`: `text`, `id`, `meta` and the mandatory elements.
    Text,
    /// `_summary=data`: everything but `text`.
    Data,
    /// `_elements=a,b`: those, plus mandatory and modifier elements.
    Elements(&'a [String]),
}

/// Elements every subset keeps.
const ALWAYS: [&str; 3] = ["resourceType", "id", "meta"];

/// Reduces `resource` (of type `rt`) to the subset; returns whether
/// anything was removed (and then tags it `SUBSETTED`).
pub fn apply(resource: &mut Map<String, Value>, rt: ResourceType, subset: &Subset<'_>) -> bool {
    let Some(ty) = R4.type_id(rt.as_str()).map(|id| R4.ty(id)) else { return false };
    let mandatory = |key: &str| {
        ty.required.iter().any(|group| group.iter().any(|k| &**k == key || key.strip_prefix('_') == Some(&**k)))
    };
    let flag = |key: &str, f: fn(&crate::validate::model::Element) -> bool| {
        ty.element(key.strip_prefix('_').unwrap_or(key)).is_some_and(f)
    };
    let before = resource.len();
    match subset {
        Subset::Data => {
            resource.remove("text");
        }
        Subset::Summary => {
            resource.retain(|k, _| ALWAYS.contains(&k.as_str()) || mandatory(k) || flag(k, |e| e.summary))
        }
        Subset::Text => resource.retain(|k, _| ALWAYS.contains(&k.as_str()) || k == "text" || mandatory(k)),
        Subset::Elements(names) => resource.retain(|k, _| {
            let base = k.strip_prefix('_').unwrap_or(k);
            ALWAYS.contains(&k.as_str())
                || names.iter().any(|n| n == base || choice_of(n, base))
                || mandatory(k)
                || flag(k, |e| e.modifier)
        }),
    }
    let subsetted = resource.len() != before;
    if subsetted {
        tag_subsetted(resource);
    }
    subsetted
}

/// `_elements=value` names the choice `value[x]`: `valueQuantity` is in.
fn choice_of(name: &str, key: &str) -> bool {
    key.strip_prefix(name).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
}

fn tag_subsetted(resource: &mut Map<String, Value>) {
    let meta = resource.entry("meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Some(tags) = tags.as_array_mut() {
            tags.push(json!({
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "SUBSETTED",
                "display": "subsetted"
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs() -> Map<String, Value> {
        json!({
            "resourceType": "Observation", "id": "o1", "status": "final",
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
            "code": {"text": "weight"}, "subject": {"reference": "Patient/1"},
            "valueQuantity": {"value": 70}, "note": [{"text": "n"}], "interpretation": [{"text": "i"}],
            "_status": {"extension": [{"url": "http://x", "valueString": "y"}]}
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    fn rt() -> ResourceType {
        ResourceType::parse("Observation").unwrap_or_else(|e| panic!("{e}"))
    }

    fn keys(m: &Map<String, Value>) -> Vec<&str> {
        let mut k: Vec<&str> = m.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn summary_keeps_the_summary_elements_and_tags_the_rest_away() {
        let mut o = obs();
        assert!(apply(&mut o, rt(), &Subset::Summary));
        assert_eq!(keys(&o), ["_status", "code", "id", "meta", "resourceType", "status", "subject", "valueQuantity"]);
        assert_eq!(o["meta"]["tag"][0]["code"], "SUBSETTED");
    }

    #[test]
    fn elements_keeps_what_is_named_plus_mandatory_and_modifier_elements() {
        let mut o = obs();
        let names = vec!["value".to_owned()];
        assert!(apply(&mut o, rt(), &Subset::Elements(&names)));
        // status is mandatory and a modifier; code is mandatory.
        assert_eq!(keys(&o), ["_status", "code", "id", "meta", "resourceType", "status", "valueQuantity"]);
    }

    #[test]
    fn text_and_data_split_the_narrative_from_the_rest() {
        let mut o = obs();
        apply(&mut o, rt(), &Subset::Text);
        assert_eq!(keys(&o), ["_status", "code", "id", "meta", "resourceType", "status", "text"]);
        let mut o = obs();
        apply(&mut o, rt(), &Subset::Data);
        assert!(!o.contains_key("text") && o.contains_key("note"));
    }

    #[test]
    fn a_resource_that_loses_nothing_is_not_tagged() {
        let mut o = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert!(!apply(&mut o, rt(), &Subset::Summary));
        assert!(!o.contains_key("meta"));
    }
}
