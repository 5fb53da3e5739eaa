//! Constraint profiles (StructureDefinitions with `derivation: constraint`)
//! compiled from their snapshot into a tree of element rules, and checked
//! against a resource after the base R4 walk has passed it.
//!
//! Supported: cardinality (also of slices), allowed types of choice
//! elements, `fixed[x]` and `pattern[x]` values, required bindings to value
//! sets that can be enumerated (the base table's, or ValueSets given when
//! compiling), and slicing with `value` and `pattern` discriminators (open
//! or closed). Not supported, and ignored: other discriminator types
//! (`type`, `profile`, `exists`), FHIRPath constraints, `maxLength`,
//! `minValue`/`maxValue`, reference target profiles.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::model::{R4, ValueSet};
use super::{Issue, IssueKind, Severity};

/// A compiled constraint profile.
#[derive(Debug)]
pub struct Profile {
    /// Its canonical URL.
    pub url: String,
    /// The resource type it constrains.
    pub resource_type: String,
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    /// JSON base name (`component`, `value[x]`).
    name: String,
    min: u32,
    /// `None`: unbounded.
    max: Option<u32>,
    /// Allowed type codes (for choices: which `value[x]` variants).
    types: Vec<String>,
    fixed: Option<Value>,
    pattern: Option<Value>,
    binding: Option<ValueSet>,
    slicing: Option<Slicing>,
    children: Vec<Node>,
    /// Named slices of this element (`component:SystolicBP`).
    slices: Vec<(String, Node)>,
}

#[derive(Debug)]
struct Slicing {
    /// Discriminator paths (`code.coding.code`, `$this`).
    paths: Vec<String>,
    closed: bool,
}

impl Profile {
    /// Compiles a StructureDefinition resource. `value_set` resolves
    /// required bindings the base table does not know (ValueSets stored
    /// beside the profile); an unresolvable binding is not enforced.
    pub fn compile(sd: &Value, value_set: &dyn Fn(&str) -> Option<ValueSet>) -> Result<Self, String> {
        let url = sd.get("url").and_then(Value::as_str).ok_or("the StructureDefinition has no url")?;
        let rt = sd.get("type").and_then(Value::as_str).ok_or("the StructureDefinition has no type")?;
        if R4.type_id(rt).is_none() {
            return Err(format!("'{rt}' is not an R4 type"));
        }
        let elements = sd
            .pointer("/snapshot/element")
            .and_then(Value::as_array)
            .ok_or("only StructureDefinitions with a snapshot can be enforced")?;
        let mut root = Node { name: rt.to_owned(), max: None, ..Node::default() };
        for e in elements {
            let Some(id) = e.get("id").and_then(Value::as_str) else { continue };
            let segments = parse_id(id);
            if segments.first().map(|(n, _)| n.as_str()) != Some(rt) {
                return Err(format!("element '{id}' is not under {rt}"));
            }
            if segments.len() == 1 {
                continue;
            }
            let node = locate(&mut root, &segments[1..]);
            fill(node, e, value_set);
        }
        Ok(Self { url: url.to_owned(), resource_type: rt.to_owned(), root })
    }

    /// Appends an error for every rule of the profile `resource` breaks.
    pub fn check(&self, resource: &Map<String, Value>, issues: &mut Vec<Issue>) {
        let mut cx = Check { url: &self.url, issues };
        cx.children(&self.root, resource, &self.resource_type);
    }
}

/// `Observation.component:SystolicBP.value[x]` -> [(Observation, None),
/// (component, Some(SystolicBP)), (value[x], None)].
fn parse_id(id: &str) -> Vec<(String, Option<String>)> {
    id.split('.')
        .map(|seg| match seg.split_once(':') {
            Some((name, slice)) => (name.to_owned(), Some(slice.to_owned())),
            None => (seg.to_owned(), None),
        })
        .collect()
}

fn locate<'n>(mut node: &'n mut Node, segments: &[(String, Option<String>)]) -> &'n mut Node {
    for (name, slice) in segments {
        let i = match node.children.iter().position(|c| &c.name == name) {
            Some(i) => i,
            None => {
                node.children.push(Node { name: name.clone(), max: None, ..Node::default() });
                node.children.len() - 1
            }
        };
        node = &mut node.children[i];
        if let Some(slice) = slice {
            let j = match node.slices.iter().position(|(s, _)| s == slice) {
                Some(j) => j,
                None => {
                    node.slices.push((slice.clone(), Node { name: name.clone(), max: None, ..Node::default() }));
                    node.slices.len() - 1
                }
            };
            node = &mut node.slices[j].1;
        }
    }
    node
}

fn fill(node: &mut Node, e: &Value, value_set: &dyn Fn(&str) -> Option<ValueSet>) {
    node.min = e.get("min").and_then(Value::as_u64).map_or(0, |m| m as u32);
    node.max = match e.get("max").and_then(Value::as_str) {
        Some("*") | None => None,
        Some(m) => m.parse().ok(),
    };
    node.types = e
        .get("type")
        .and_then(Value::as_array)
        .map(|ts| ts.iter().filter_map(|t| t.get("code").and_then(Value::as_str)).map(str::to_owned).collect())
        .unwrap_or_default();
    if let Some(map) = e.as_object() {
        for (k, v) in map {
            if k.starts_with("fixed") {
                node.fixed = Some(v.clone());
            } else if k.starts_with("pattern") {
                node.pattern = Some(v.clone());
            }
        }
    }
    if let Some(b) = e.get("binding")
        && b.get("strength").and_then(Value::as_str) == Some("required")
        && let Some(url) = b.get("valueSet").and_then(Value::as_str)
    {
        let url = url.split('|').next().unwrap_or(url);
        node.binding = R4.value_set(url).or_else(|| value_set(url));
    }
    if let Some(s) = e.get("slicing") {
        let paths = s
            .get("discriminator")
            .and_then(Value::as_array)
            .map(|ds| {
                ds.iter()
                    .filter(|d| matches!(d.get("type").and_then(Value::as_str), Some("value" | "pattern")))
                    .filter_map(|d| d.get("path").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let closed = s.get("rules").and_then(Value::as_str) == Some("closed");
        node.slicing = Some(Slicing { paths, closed });
    }
}

struct Check<'a> {
    url: &'a str,
    issues: &'a mut Vec<Issue>,
}

impl Check<'_> {
    fn report(&mut self, code: IssueKind, expression: String, message: String) {
        if self.issues.len() < super::walk::MAX_ISSUES {
            let message = format!("profile {}: {message}", self.url);
            self.issues.push(Issue { severity: Severity::Error, code, expression, message });
        }
    }

    /// Every child rule of `node`, on one object (`at` is its FHIRPath).
    fn children(&mut self, node: &Node, object: &Map<String, Value>, at: &str) {
        for child in &node.children {
            let values = values_of(child, object);
            self.element(child, &values, at);
        }
    }

    /// One element's rules on its values inside one parent object.
    fn element(&mut self, node: &Node, values: &[(String, &Value)], at: &str) {
        let name = node.name.trim_end_matches("[x]");
        let path = format!("{at}.{name}");
        self.cardinality(node, values.len(), &path, "");
        for (i, (key, v)) in values.iter().enumerate() {
            let here = if node.max == Some(1) && values.len() == 1 { path.clone() } else { format!("{path}[{i}]") };
            if node.name.ends_with("[x]") && !node.types.is_empty() {
                let variant = &key[name.len()..];
                if !node.types.iter().any(|t| t.eq_ignore_ascii_case(variant)) {
                    self.report(IssueKind::Structure, here.clone(), format!("type {variant} is not allowed here"));
                }
            }
            self.value(node, v, &here);
        }
        if node.slices.is_empty() {
            return;
        }
        let paths = node.slicing.as_ref().map(|s| s.paths.as_slice()).unwrap_or_default();
        let mut assigned: Vec<Vec<usize>> = vec![vec![]; node.slices.len()];
        for (i, (key, v)) in values.iter().enumerate() {
            let slice = node.slices.iter().position(|(slice, s)| {
                // A type slice (`value[x]:valueQuantity`) takes the values of its type.
                if node.name.ends_with("[x]") && slice.starts_with(name) {
                    return key == slice;
                }
                paths.iter().all(|p| discriminates(s, p, v))
            });
            match slice {
                Some(s) => assigned[s].push(i),
                None if node.slicing.as_ref().is_some_and(|s| s.closed) => {
                    self.report(
                        IssueKind::Structure,
                        format!("{path}[{i}]"),
                        "matches none of the slices of a closed slicing".into(),
                    );
                }
                None => {}
            }
        }
        for ((slice, s), members) in node.slices.iter().zip(&assigned) {
            self.cardinality(s, members.len(), &path, slice);
            for &i in members {
                self.value(s, values[i].1, &format!("{path}[{i}]"));
            }
        }
    }

    fn cardinality(&mut self, node: &Node, n: usize, path: &str, slice: &str) {
        let what = if slice.is_empty() { String::new() } else { format!(" (slice {slice})") };
        if (n as u64) < u64::from(node.min) {
            let message = format!("needs at least {} value(s){what}, found {n}", node.min);
            self.report(IssueKind::Required, path.to_owned(), message);
        }
        if let Some(max) = node.max
            && n as u64 > u64::from(max)
        {
            let message = format!("allows at most {max} value(s){what}, found {n}");
            self.report(IssueKind::Structure, path.to_owned(), message);
        }
    }

    /// The rules on one value: fixed, pattern, binding, then its children.
    fn value(&mut self, node: &Node, v: &Value, at: &str) {
        if let Some(fixed) = &node.fixed
            && v != fixed
        {
            self.report(IssueKind::Value, at.to_owned(), format!("must be exactly {fixed}"));
        }
        if let Some(pattern) = &node.pattern
            && !matches_pattern(v, pattern)
        {
            self.report(IssueKind::Value, at.to_owned(), format!("must match the pattern {pattern}"));
        }
        if let Some(vs) = &node.binding
            && let Some(bad) = outside(vs, v)
        {
            let message = format!("'{bad}' is not in the required value set {}", vs.url);
            self.report(IssueKind::CodeInvalid, at.to_owned(), message);
        }
        if let Value::Object(map) = v {
            self.children(node, map, at);
        }
    }
}

/// The values of `node` in `object`, each with its JSON key (arrays are
/// flattened; a choice collects every `name{Type}` key).
fn values_of<'v>(node: &Node, object: &'v Map<String, Value>) -> Vec<(String, &'v Value)> {
    let mut out = vec![];
    let mut push = |key: &str, v: &'v Value| match v {
        Value::Array(items) => out.extend(items.iter().map(|i| (key.to_owned(), i))),
        v => out.push((key.to_owned(), v)),
    };
    match node.name.strip_suffix("[x]") {
        Some(base) => {
            for (k, v) in object {
                if k.strip_prefix(base).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase())) {
                    push(k, v);
                }
            }
        }
        None => {
            if let Some(v) = object.get(&node.name) {
                push(&node.name, v);
            }
        }
    }
    out
}

/// Whether `v` fits slice `s` on discriminator `path`: some value at the
/// path equals (or matches) what the slice fixes there. A slice that fixes
/// nothing at the path does not discriminate on it.
fn discriminates(s: &Node, path: &str, v: &Value) -> bool {
    let steps: Vec<&str> = if path == "$this" { vec![] } else { path.split('.').collect() };
    let mut expected = vec![];
    expected_at(s, &steps, &mut expected);
    if expected.is_empty() {
        return true;
    }
    let mut found = vec![];
    collect_at(v, &steps, &mut found);
    expected.iter().any(|(fixed, e)| found.iter().any(|f| if *fixed { *f == *e } else { matches_pattern(f, e) }))
}

/// The fixed (true) and pattern (false) values the slice's subtree sets at
/// `steps`, through nested slices too.
fn expected_at<'n>(node: &'n Node, steps: &[&str], out: &mut Vec<(bool, &'n Value)>) {
    let Some((first, rest)) = steps.split_first() else {
        out.extend(node.fixed.iter().map(|f| (true, f)));
        out.extend(node.pattern.iter().map(|p| (false, p)));
        for (_, s) in &node.slices {
            expected_at(s, steps, out);
        }
        return;
    };
    for child in node.children.iter().filter(|c| c.name == *first) {
        expected_at(child, rest, out);
        for (_, s) in &child.slices {
            expected_at(s, rest, out);
        }
    }
}

fn collect_at<'v>(v: &'v Value, steps: &[&str], out: &mut Vec<&'v Value>) {
    match (v, steps.split_first()) {
        (Value::Array(items), _) => items.iter().for_each(|i| collect_at(i, steps, out)),
        (v, None) => out.push(v),
        (Value::Object(map), Some((first, rest))) => {
            if let Some(next) = map.get(*first) {
                collect_at(next, rest, out);
            }
        }
        _ => {}
    }
}

/// FHIR pattern matching: every property of the pattern is in the value
/// (arrays: each pattern item matches some value item); primitives equal.
fn matches_pattern(v: &Value, pattern: &Value) -> bool {
    match (v, pattern) {
        (Value::Object(vm), Value::Object(pm)) => {
            pm.iter().all(|(k, p)| vm.get(k).is_some_and(|x| matches_pattern(x, p)))
        }
        (Value::Array(vs), Value::Array(ps)) => ps.iter().all(|p| vs.iter().any(|x| matches_pattern(x, p))),
        (v, p) => v == p,
    }
}

/// The first code of `v` outside `vs`: a code string, a Coding, a
/// CodeableConcept (none of its codings of the set's systems may be
/// outside it) or a Quantity (its system and code).
fn outside(vs: &ValueSet, v: &Value) -> Option<String> {
    let coding = |c: &Value| {
        let (system, code) = (c.get("system")?.as_str()?, c.get("code")?.as_str()?);
        (vs.has_coding(system, code) == Some(false)).then(|| code.to_owned())
    };
    match v {
        Value::String(code) => (!vs.has_code(code)).then(|| code.clone()),
        Value::Object(map) if map.contains_key("coding") => map.get("coding")?.as_array()?.iter().find_map(coding),
        Value::Object(_) => coding(v),
        _ => None,
    }
}

/// Value sets given beside profiles: `{url: {system: [codes]}}` built from
/// ValueSet resources with enumerated `compose.include.concept`, and
/// CodeSystems with `concept` lists for whole-system includes.
pub fn value_sets_from(resources: &[Value]) -> HashMap<String, ValueSet> {
    let systems: HashMap<&str, Vec<Box<str>>> = resources
        .iter()
        .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("CodeSystem"))
        .filter_map(|cs| Some((cs.get("url")?.as_str()?, concepts(cs.get("concept")?))))
        .collect();
    let mut out = HashMap::new();
    for vs in resources.iter().filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("ValueSet")) {
        let (Some(url), Some(includes)) =
            (vs.get("url").and_then(Value::as_str), vs.pointer("/compose/include").and_then(Value::as_array))
        else {
            continue;
        };
        let mut by_system: Vec<(Box<str>, Vec<Box<str>>)> = vec![];
        let mut complete = true;
        for inc in includes {
            let Some(system) = inc.get("system").and_then(Value::as_str) else {
                complete = false;
                continue;
            };
            let codes = match inc.get("concept") {
                Some(c) => concepts(c),
                None if inc.get("filter").is_none() => match systems.get(system) {
                    Some(c) => c.clone(),
                    None => {
                        complete = false;
                        continue;
                    }
                },
                None => {
                    complete = false;
                    continue;
                }
            };
            by_system.push((system.into(), codes));
        }
        if complete && !by_system.is_empty() {
            for (_, codes) in &mut by_system {
                codes.sort_unstable();
            }
            out.insert(url.to_owned(), ValueSet { url: url.into(), systems: by_system });
        }
    }
    out
}

fn concepts(list: &Value) -> Vec<Box<str>> {
    let mut out = vec![];
    for c in list.as_array().into_iter().flatten() {
        if let Some(code) = c.get("code").and_then(Value::as_str) {
            out.push(code.into());
        }
        if let Some(nested) = c.get("concept") {
            out.extend(concepts(nested));
        }
    }
    out
}
