//! The walk of one resource against the compiled R4 model: element names,
//! JSON shapes, primitive formats, cardinality, choices, required bindings,
//! and the invariants that run natively (`ext-1`, `txt-1`, `txt-2`; `ele-1`
//! is the emptiness check in `mod.rs`).
//!
//! The walk records where it is as a stack of borrowed segments and turns
//! it into a FHIRPath string only when it reports an issue, so a valid
//! resource costs one binary search per key and allocates nothing.

use serde_json::{Map, Value};

use super::model::{Element, Kind, Model, Primitive, TypeDef, TypeId, ValueSet};
use super::narrative;
use super::{Issue, IssueKind, Severity, printable};

/// At most this many issues are reported for one resource.
pub(crate) const MAX_ISSUES: usize = 100;

#[derive(Clone, Copy)]
enum Seg<'a> {
    Field(&'a str),
    /// A `value[x]` variant: `value.ofType(Quantity)`.
    Choice(&'a str, &'a str),
    Index(usize),
}

pub(crate) struct Walker<'a> {
    model: &'a Model,
    root: &'a str,
    path: Vec<Seg<'a>>,
    pub(crate) issues: Vec<Issue>,
    /// Unknown elements are warnings, not errors (a tenant's choice).
    unknown_is_warning: bool,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(model: &'a Model, root: &'a str, unknown_is_warning: bool) -> Self {
        Self { model, root, path: Vec::with_capacity(16), issues: Vec::new(), unknown_is_warning }
    }

    fn report(&mut self, severity: Severity, code: IssueKind, message: String) {
        if self.issues.len() >= MAX_ISSUES {
            return;
        }
        let mut expression = self.root.to_owned();
        for seg in &self.path {
            match seg {
                Seg::Field(f) => {
                    expression.push('.');
                    expression.push_str(&printable(f));
                }
                Seg::Choice(base, ty) => {
                    expression.push_str(&format!(".{base}.ofType({ty})"));
                }
                Seg::Index(i) => expression.push_str(&format!("[{i}]")),
            }
        }
        self.issues.push(Issue { severity, code, expression, message });
    }

    fn error(&mut self, code: IssueKind, message: String) {
        self.report(Severity::Error, code, message);
    }

    /// Walks a resource of type `ty` (its `resourceType` already checked).
    pub(crate) fn resource(&mut self, ty: TypeId, map: &'a Map<String, Value>) {
        self.object(self.model.ty(ty), map, true);
    }

    fn object(&mut self, def: &'a TypeDef, map: &'a Map<String, Value>, is_resource: bool) {
        let mut choices: u64 = 0;
        for (key, value) in map {
            if is_resource && key == "resourceType" {
                continue;
            }
            if let Some(base) = key.strip_prefix('_') {
                self.primitive_extension(def, map, key, base, value);
                continue;
            }
            let Some(elem) = def.element(key) else {
                self.path.push(Seg::Field(key));
                let message = format!("unknown element '{}' in {}", printable(key), def.name);
                let severity = if self.unknown_is_warning { Severity::Warning } else { Severity::Error };
                self.report(severity, IssueKind::Structure, message);
                self.path.pop();
                continue;
            };
            let ty = self.model.ty(elem.ty);
            self.path.push(match &elem.choice {
                Some((_, base)) => Seg::Choice(base, &ty.name),
                None => Seg::Field(key),
            });
            if let Some((group, base)) = &elem.choice {
                if choices & (1 << group) != 0 {
                    self.error(IssueKind::Structure, format!("only one {base}[x] variant may be present"));
                }
                choices |= 1 << group;
            }
            self.element(elem, value, map, key);
            self.path.pop();
        }
        for group in &def.required {
            let present =
                group.iter().any(|k| map.contains_key(&**k) || map.keys().any(|m| m.strip_prefix('_') == Some(&**k)));
            if !present {
                let (seg, name) = match def.element(&group[0]).and_then(|e| e.choice.as_ref()) {
                    Some((_, base)) => (&**base, format!("{base}[x]")),
                    None => (&*group[0], group[0].to_string()),
                };
                self.path.push(Seg::Field(seg));
                self.error(IssueKind::Required, format!("{name} is required (minimum cardinality 1) in {}", def.name));
                self.path.pop();
            }
        }
        if &*def.name == "Extension" {
            self.extension_invariant(def, map);
        }
    }

    /// `ext-1`: an extension has a value or nested extensions, not both.
    fn extension_invariant(&mut self, def: &TypeDef, map: &Map<String, Value>) {
        let nested = map.contains_key("extension");
        let valued = map.keys().any(|k| def.element(k).is_some_and(|e| e.choice.is_some()));
        if nested == valued {
            let message = if nested {
                "ext-1: an extension must have either nested extensions or a value, not both"
            } else {
                "ext-1: an extension must have either nested extensions or a value"
            };
            self.error(IssueKind::Invariant, message.to_owned());
        }
    }

    /// `_name`: the id and extensions of primitive `name`, in its shape.
    fn primitive_extension(
        &mut self,
        def: &TypeDef,
        map: &'a Map<String, Value>,
        key: &'a str,
        base: &str,
        v: &'a Value,
    ) {
        self.path.push(Seg::Field(key));
        let elem = def.element(base).filter(|e| matches!(self.model.ty(e.ty).kind, Kind::Primitive(_)));
        match elem {
            None => {
                let message = format!(
                    "unknown element '{}' in {} ('{}' is not a primitive element)",
                    printable(key),
                    def.name,
                    printable(base)
                );
                let severity = if self.unknown_is_warning { Severity::Warning } else { Severity::Error };
                self.report(severity, IssueKind::Structure, message);
            }
            Some(elem) => {
                let element = self.model.ty(self.model.element);
                match (elem.many, v) {
                    (true, Value::Array(items)) => {
                        for (i, item) in items.iter().enumerate() {
                            self.path.push(Seg::Index(i));
                            match item {
                                Value::Null => {}
                                Value::Object(m) => self.object(element, m, false),
                                _ => self.error(IssueKind::Structure, "must be null or a JSON object".into()),
                            }
                            self.path.pop();
                        }
                        if map.get(base).and_then(Value::as_array).is_some_and(|a| a.len() != items.len()) {
                            self.error(IssueKind::Structure, format!("must have as many items as '{base}'"));
                        }
                    }
                    (false, Value::Object(m)) => self.object(element, m, false),
                    (true, _) => self.error(IssueKind::Structure, "must be an array".into()),
                    (false, _) => self.error(IssueKind::Structure, "must be a JSON object".into()),
                }
            }
        }
        self.path.pop();
    }

    /// One element's value(s); `map` and `key` say where it sits, for the
    /// `_key` sibling that lets a primitive array hold nulls.
    fn element(&mut self, elem: &'a Element, v: &'a Value, map: &Map<String, Value>, key: &str) {
        match (elem.many, v) {
            (true, Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    self.path.push(Seg::Index(i));
                    // Looked up only for a null item: no allocation otherwise.
                    if !(item.is_null() && map.contains_key(&format!("_{key}"))) {
                        self.single(elem, item);
                    }
                    self.path.pop();
                }
            }
            (true, _) => {
                self.error(IssueKind::Structure, "must be an array (its maximum cardinality is *)".into());
            }
            (false, Value::Array(_)) => {
                self.error(
                    IssueKind::Structure,
                    "must be a single value, not an array (its maximum cardinality is 1)".into(),
                );
            }
            (false, v) => self.single(elem, v),
        }
    }

    fn single(&mut self, elem: &'a Element, v: &'a Value) {
        let model = self.model;
        let ty = model.ty(elem.ty);
        let binding = elem.binding.map(|b| &model.value_sets[usize::from(b)]);
        match (&ty.kind, v) {
            (Kind::Primitive(p), v) => self.primitive(ty, p, v, binding),
            (Kind::Complex, Value::Object(map)) => {
                self.object(ty, map, false);
                if let Some(vs) = binding {
                    self.coded(ty, map, vs);
                }
            }
            (Kind::AnyResource | Kind::Resource, Value::Object(map)) => self.contained(map),
            (_, other) => {
                let message = format!("must be a JSON object (a {}), not {}", ty.name, json_kind(other));
                self.error(IssueKind::Structure, message);
            }
        }
    }

    /// A resource inside another (`contained`, `Bundle.entry.resource`).
    fn contained(&mut self, map: &'a Map<String, Value>) {
        let Some(rt) = map.get("resourceType") else {
            self.error(IssueKind::Required, "a resource here needs a resourceType".into());
            return;
        };
        let id = rt.as_str().and_then(|name| self.model.type_id(name));
        match id.filter(|id| matches!(self.model.ty(*id).kind, Kind::Resource)) {
            Some(id) => self.resource(id, map),
            None => {
                let message = format!("'{}' is not an R4 resource type", printable(&rt.to_string()));
                self.path.push(Seg::Field("resourceType"));
                self.error(IssueKind::Value, message);
                self.path.pop();
            }
        }
    }

    fn primitive(&mut self, ty: &TypeDef, p: &Primitive, v: &Value, binding: Option<&ValueSet>) {
        let ok = match (p, v) {
            (Primitive::Boolean, Value::Bool(_)) | (Primitive::Decimal, Value::Number(_)) => true,
            (Primitive::Integer { min }, Value::Number(n)) => {
                n.as_i64().is_some_and(|n| n >= *min && n <= i64::from(i32::MAX))
            }
            (Primitive::Xhtml, Value::String(s)) => match narrative::check_div(s) {
                Ok(()) => true,
                Err(why) => {
                    self.error(IssueKind::Invariant, format!("txt-1: the narrative is not allowed XHTML: {why}"));
                    return;
                }
            },
            (Primitive::Text(re), Value::String(s)) => re.as_ref().is_none_or(|re| re.is_match(s)),
            _ => false,
        };
        if !ok {
            let code = if matches!(
                (p, v),
                (Primitive::Text(_), Value::String(_)) | (Primitive::Integer { .. }, Value::Number(_))
            ) {
                IssueKind::Value
            } else {
                IssueKind::Structure
            };
            let message = format!("{} is not a valid {}", shown(v), ty.name);
            self.error(code, message);
            return;
        }
        if let (Some(vs), Value::String(code)) = (binding, v)
            && !vs.has_code(code)
        {
            self.error(IssueKind::CodeInvalid, not_in(code, vs));
        }
    }

    /// Required bindings on Coding and CodeableConcept: a coding of one of
    /// the value set's systems must use one of its codes. (Codings of other
    /// systems are let through: the table cannot tell translations apart.)
    fn coded(&mut self, ty: &TypeDef, map: &'a Map<String, Value>, vs: &ValueSet) {
        let check = |walker: &mut Self, coding: &Map<String, Value>| {
            let (Some(system), Some(code)) =
                (coding.get("system").and_then(Value::as_str), coding.get("code").and_then(Value::as_str))
            else {
                return;
            };
            if vs.has_coding(system, code) == Some(false) {
                walker.error(IssueKind::CodeInvalid, not_in(code, vs));
            }
        };
        match &*ty.name {
            "Coding" => check(self, map),
            "CodeableConcept" => {
                if let Some(Value::Array(codings)) = map.get("coding") {
                    for (i, c) in codings.iter().enumerate() {
                        if let Some(c) = c.as_object() {
                            self.path.push(Seg::Field("coding"));
                            self.path.push(Seg::Index(i));
                            check(self, c);
                            self.path.truncate(self.path.len() - 2);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn not_in(code: &str, vs: &ValueSet) -> String {
    let codes: Vec<&str> = vs.systems.iter().flat_map(|(_, c)| c.iter().map(|c| &**c)).collect();
    let hint = if codes.len() <= 12 { format!(" (one of: {})", codes.join(", ")) } else { String::new() };
    format!("'{}' is not in the required value set {}{hint}", printable(code), vs.url)
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{}'", printable(s)),
        other => format!("{} {}", json_kind(other), printable(&other.to_string())),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
