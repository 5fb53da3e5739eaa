//! The compiled structure of FHIR R4: every type's elements, cardinalities,
//! choices and required bindings, loaded once from the table that
//! `scripts/gen-structure.py` derives from the official StructureDefinitions.
//!
//! The table is embedded (`r4.json`) and indexed into plain vectors, so the
//! walker in `walk.rs` does a binary search per JSON key and never touches
//! a StructureDefinition or a JSON schema at run time.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

static TABLE: &str = include_str!("r4.json");

/// The R4 model, built on first use.
pub(crate) static R4: LazyLock<Model> =
    LazyLock::new(|| Model::load(TABLE).unwrap_or_else(|e| panic!("validate/r4.json does not load: {e}")));

/// Index of a type in [`Model::types`].
pub(crate) type TypeId = u16;
/// Index of a value set in [`Model::value_sets`].
pub(crate) type ValueSetId = u16;

/// How a primitive appears in JSON and what it must look like.
#[derive(Debug)]
pub(crate) enum Primitive {
    Boolean,
    /// `integer`, `positiveInt`, `unsignedInt`: a JSON integer at or above
    /// `min` that fits 32 bits.
    Integer {
        min: i64,
    },
    Decimal,
    /// `xhtml`: a narrative `div` (see `narrative.rs`).
    Xhtml,
    /// Every other primitive is a JSON string matching the spec's regex
    /// (`None` for `string` and `markdown`, whose regex only says non-empty).
    Text(Option<Regex>),
}

#[derive(Debug)]
pub(crate) enum Kind {
    Resource,
    Complex,
    /// `Resource` and `DomainResource`: any resource, by its `resourceType`.
    AnyResource,
    Primitive(Primitive),
}

#[derive(Debug)]
pub(crate) struct Element {
    pub(crate) ty: TypeId,
    /// `max` is `*`: the JSON value is an array.
    pub(crate) many: bool,
    /// For a `value[x]` variant: its group (a bit in a u64) and base name.
    pub(crate) choice: Option<(u8, Box<str>)>,
    /// A required binding to a value set the table could enumerate.
    pub(crate) binding: Option<ValueSetId>,
    /// In the summary (`_summary=true`).
    pub(crate) summary: bool,
    /// A modifier element (kept by `_elements` whatever is asked).
    pub(crate) modifier: bool,
}

#[derive(Debug)]
pub(crate) struct TypeDef {
    pub(crate) name: Box<str>,
    pub(crate) kind: Kind,
    /// Sorted by JSON key.
    pub(crate) elements: Vec<(Box<str>, Element)>,
    /// Each group names the keys of which one must be present (min 1).
    pub(crate) required: Vec<Vec<Box<str>>>,
}

impl TypeDef {
    pub(crate) fn element(&self, key: &str) -> Option<&Element> {
        self.elements.binary_search_by(|(k, _): &(Box<str>, Element)| (**k).cmp(key)).ok().map(|i| &self.elements[i].1)
    }
}

/// The codes of a value set, per code system (sorted).
#[derive(Debug, Clone)]
pub struct ValueSet {
    pub(crate) url: Box<str>,
    pub(crate) systems: Vec<(Box<str>, Vec<Box<str>>)>,
}

impl ValueSet {
    /// Whether a bare `code` is in the value set (any of its systems).
    pub(crate) fn has_code(&self, code: &str) -> bool {
        self.systems.iter().any(|(_, codes)| codes.binary_search_by(|c| (**c).cmp(code)).is_ok())
    }

    /// `Some(true|false)` for a coding of one of the set's systems; `None`
    /// when the system is not one the value set draws from.
    pub(crate) fn has_coding(&self, system: &str, code: &str) -> Option<bool> {
        let (_, codes) = self.systems.iter().find(|(s, _)| &**s == system)?;
        Some(codes.binary_search_by(|c| (**c).cmp(code)).is_ok())
    }
}

#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) types: Vec<TypeDef>,
    index: HashMap<Box<str>, TypeId>,
    pub(crate) value_sets: Vec<ValueSet>,
    /// `Element`: what a primitive's `_name` sibling holds.
    pub(crate) element: TypeId,
}

impl Model {
    /// A value set of the table by URL.
    pub(crate) fn value_set(&self, url: &str) -> Option<ValueSet> {
        let i = self.value_sets.binary_search_by(|v| (*v.url).cmp(url)).ok()?;
        Some(self.value_sets[i].clone())
    }

    pub(crate) fn type_id(&self, name: &str) -> Option<TypeId> {
        self.index.get(name).copied()
    }

    pub(crate) fn ty(&self, id: TypeId) -> &TypeDef {
        &self.types[usize::from(id)]
    }

    fn load(json: &str) -> Result<Self, String> {
        let table: Table = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut names: Vec<&str> = table.primitives.keys().map(String::as_str).collect();
        names.extend(table.types.keys().map(String::as_str));
        names.sort_unstable();
        let index: HashMap<Box<str>, TypeId> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Ok(((*n).into(), TypeId::try_from(i).map_err(|_| "too many types")?)))
            .collect::<Result<_, String>>()?;
        let mut vs_urls: Vec<&String> = table.value_sets.keys().collect();
        vs_urls.sort_unstable();
        let vs_index: HashMap<&str, ValueSetId> =
            vs_urls.iter().enumerate().map(|(i, u)| (u.as_str(), i as ValueSetId)).collect();
        let value_sets = vs_urls
            .iter()
            .map(|url| ValueSet {
                url: url.as_str().into(),
                systems: table.value_sets[*url]
                    .iter()
                    .map(|(s, codes)| {
                        let mut codes: Vec<Box<str>> = codes.iter().map(|c| c.as_str().into()).collect();
                        codes.sort_unstable();
                        (s.as_str().into(), codes)
                    })
                    .collect(),
            })
            .collect();
        let lookup = |n: &str| index.get(n).copied().ok_or_else(|| format!("unknown type '{n}'"));
        let mut types = Vec::with_capacity(names.len());
        for name in &names {
            let def = if let Some(p) = table.primitives.get(*name) {
                TypeDef {
                    name: (*name).into(),
                    kind: Kind::Primitive(primitive(name, p)?),
                    elements: vec![],
                    required: vec![],
                }
            } else {
                let t = &table.types[*name];
                let mut groups: Vec<&str> = vec![];
                let mut elements = Vec::with_capacity(t.elements.len());
                for (key, e) in &t.elements {
                    let choice = match &e.c {
                        Some(base) => {
                            let g = groups.iter().position(|b| b == base).unwrap_or_else(|| {
                                groups.push(base);
                                groups.len() - 1
                            });
                            let g = u8::try_from(g).ok().filter(|g| *g < 64).ok_or("too many choices")?;
                            Some((g, base.as_str().into()))
                        }
                        None => None,
                    };
                    let binding = e.b.as_deref().and_then(|u| vs_index.get(u).copied());
                    let element = Element {
                        ty: lookup(&e.t)?,
                        many: e.m == 1,
                        choice,
                        binding,
                        summary: e.s == 1,
                        modifier: e.x == 1,
                    };
                    elements.push((key.as_str().into(), element));
                }
                elements.sort_unstable_by(|a: &(Box<str>, Element), b| a.0.cmp(&b.0));
                let kind = match t.kind.as_str() {
                    "resource" => Kind::Resource,
                    "abstract" => Kind::AnyResource,
                    _ => Kind::Complex,
                };
                let required = t.required.iter().map(|g| g.iter().map(|k| k.as_str().into()).collect()).collect();
                TypeDef { name: (*name).into(), kind, elements, required }
            };
            types.push(def);
        }
        let element = lookup("Element")?;
        Ok(Self { types, index, value_sets, element })
    }
}

fn primitive(name: &str, p: &PrimitiveRow) -> Result<Primitive, String> {
    Ok(match (name, p.json.as_str()) {
        ("boolean", _) => Primitive::Boolean,
        ("integer", _) => Primitive::Integer { min: i64::from(i32::MIN) },
        ("positiveInt", _) => Primitive::Integer { min: 1 },
        ("unsignedInt", _) => Primitive::Integer { min: 0 },
        ("decimal", _) => Primitive::Decimal,
        ("xhtml", _) => Primitive::Xhtml,
        ("string" | "markdown", _) => Primitive::Text(None),
        (_, "string") => Primitive::Text(match &p.regex {
            Some(r) => Some(Regex::new(&format!("^(?:{r})$")).map_err(|e| format!("{name}: {e}"))?),
            None => None,
        }),
        (_, other) => return Err(format!("{name}: unexpected JSON type {other}")),
    })
}

#[derive(Deserialize)]
struct Table {
    primitives: HashMap<String, PrimitiveRow>,
    types: HashMap<String, TypeRow>,
    #[serde(rename = "valueSets")]
    value_sets: HashMap<String, HashMap<String, Vec<String>>>,
}

#[derive(Deserialize)]
struct PrimitiveRow {
    json: String,
    regex: Option<String>,
}

#[derive(Deserialize)]
struct TypeRow {
    kind: String,
    elements: HashMap<String, ElementRow>,
    required: Vec<Vec<String>>,
}

#[derive(Deserialize)]
struct ElementRow {
    t: String,
    #[serde(default)]
    m: u8,
    c: Option<String>,
    b: Option<String>,
    #[serde(default)]
    s: u8,
    #[serde(default)]
    x: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_loads_every_resource_type_the_server_knows() {
        for rt in crate::r4::RESOURCE_TYPES {
            let id = R4.type_id(rt).unwrap_or_else(|| panic!("{rt} missing"));
            assert!(matches!(R4.ty(id).kind, Kind::Resource), "{rt}");
        }
    }

    #[test]
    fn choices_cardinality_and_bindings_come_from_the_definitions() {
        let obs = R4.ty(R4.type_id("Observation").unwrap());
        let vq = obs.element("valueQuantity").unwrap();
        assert_eq!(vq.choice.as_ref().map(|c| &*c.1), Some("value"));
        assert!(obs.element("component").unwrap().many);
        assert!(obs.required.iter().any(|g| g.iter().any(|k| &**k == "status")));
        let status = obs.element("status").unwrap().binding.map(|b| &R4.value_sets[usize::from(b)]).unwrap();
        assert!(status.has_code("final") && !status.has_code("done"));
    }
}
