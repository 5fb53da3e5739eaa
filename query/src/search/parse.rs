//! Parsing FHIR search parameters into a [`SearchRequest`]: pure, so every
//! rule (prefixes, modifiers, escaping, chains) is tested without a database.

use chrono::{DateTime, Duration, Utc};

use schemas::search::{self, ParamKind, SearchParam};
use schemas::{ResourceId, ResourceType};

use super::SearchError;
use super::request::*;

/// What parsing needs besides the parameters.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The tenant's base URL (`{base}/fhir/{tenant}`), so absolute
    /// references to this server are understood.
    pub tenant_base: &'a str,
    /// "Now", for the slack of `ap`.
    pub now: DateTime<Utc>,
    /// `Prefer: handling=strict`: unknown parameters are an error.
    pub strict: bool,
}

/// Most conditions (AND-ed parameters) one search may have. Each is a
/// correlated `exists`: a few hundred of them kept PostgreSQL planning and
/// running one query for the whole statement timeout.
pub const MAX_CLAUSES: usize = 32;
/// Most comma-separated (OR-ed) values of one parameter.
pub const MAX_VALUES: usize = 1000;
/// Most `_include` and `_revinclude` parameters together: each is a query
/// per page and per iteration.
pub const MAX_INCLUDES: usize = 16;

/// Parses the parameters of a search over `types` (empty: every type).
pub fn parse(types: Vec<ResourceType>, pairs: &[(String, String)], cx: &Context) -> Result<SearchRequest, SearchError> {
    let mut req = SearchRequest {
        types,
        clauses: Vec::new(),
        sort: Vec::new(),
        count: None,
        total: Total::Accurate,
        summary: Summary::False,
        elements: None,
        includes: Vec::new(),
        revincludes: Vec::new(),
        cursor: None,
        canonical: Vec::new(),
        ignored: Vec::new(),
        shared: Vec::new(),
    };
    for (key, value) in pairs {
        // PostgreSQL cannot hold NUL in text: refused here, it would be a
        // database error (500) later, and no stored value can contain it.
        if key.contains('\0') || value.contains('\0') {
            return Err(invalid("search parameters must not contain NUL characters"));
        }
        // A lone `\` at the end escapes nothing; unescaped it would vanish
        // and leave an empty value that matches everything.
        if !value.bytes().rev().take_while(|b| *b == b'\\').count().is_multiple_of(2) {
            return Err(invalid(format!("{key}: the value ends with a lone '\\' (write '\\\\' for a backslash)")));
        }
        check_or(key, value)?;
        if parse_one(&mut req, key, value, cx)? {
            if key != "_cursor" {
                req.canonical.push((key.clone(), value.clone()));
            }
        } else {
            req.ignored.push(key.clone());
        }
    }
    // The format parameters apply to every interaction: never unknown.
    req.ignored.retain(|k| k != "_format" && k != "_pretty");
    if cx.strict && !req.ignored.is_empty() {
        return Err(SearchError::Unknown(req.ignored.clone()));
    }
    if req.clauses.len() > MAX_CLAUSES {
        return Err(invalid(format!("a search may combine at most {MAX_CLAUSES} parameters")));
    }
    if req.includes.len() + req.revincludes.len() > MAX_INCLUDES {
        return Err(invalid(format!("a search may have at most {MAX_INCLUDES} _include and _revinclude parameters")));
    }
    Ok(req)
}

/// Applies one parameter; `false` when it is not understood.
fn parse_one(req: &mut SearchRequest, key: &str, value: &str, cx: &Context) -> Result<bool, SearchError> {
    match key {
        "_count" => {
            let n =
                value.parse::<u32>().map_err(|_| invalid(format!("_count '{value}' is not a non-negative integer")))?;
            req.count = Some(n);
        }
        "_total" => {
            req.total = match value {
                "none" => Total::None,
                "estimate" => Total::Estimate,
                "accurate" => Total::Accurate,
                _ => return Err(invalid(format!("_total must be none, estimate or accurate, not '{value}'"))),
            }
        }
        "_summary" => {
            req.summary = match value {
                "count" => Summary::Count,
                "false" => Summary::False,
                "text" => Summary::Text,
                "data" => Summary::Data,
                "true" => Summary::True,
                _ => return Err(invalid(format!("_summary must be true, count, text, data or false, not '{value}'"))),
            }
        }
        "_elements" => {
            let names: Vec<String> = value.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            if let Some(bad) = names.iter().find(|n| !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
                return Err(invalid(format!("_elements: '{bad}' is not an element name")));
            }
            req.elements = Some(names);
        }
        "_sort" => return parse_sort(req, value),
        "_cursor" => req.cursor = Some(value.to_string()),
        "_include" | "_include:iterate" => {
            let inc = parse_include(value, key.ends_with(":iterate"))?;
            if !inc.iterate && !req.types.is_empty() && !req.types.contains(&inc.source) {
                return Err(invalid(format!("_include={value}: {} is not a type being searched", inc.source)));
            }
            req.includes.push(inc);
        }
        "_revinclude" | "_revinclude:iterate" => {
            let inc = parse_include(value, key.ends_with(":iterate"))?;
            req.revincludes.push(inc);
        }
        // Formats are negotiated elsewhere; these change nothing here.
        "_format" | "_pretty" => return Ok(false),
        "_id" => {
            let ids = split_or(value).iter().map(|v| unescape(v)).collect::<Vec<_>>();
            for id in &ids {
                ResourceId::parse(id).map_err(|e| invalid(format!("_id: {e}")))?;
            }
            req.clauses.push(Clause::Id(ids));
        }
        "_lastUpdated" => {
            let preds = split_or(value).iter().map(|v| date_pred(v, cx)).collect::<Result<Vec<_>, _>>()?;
            req.clauses.push(Clause::LastUpdated(preds));
        }
        "_text" | "_content" => {
            if value.trim().is_empty() {
                return Err(invalid(format!("{key} needs words to search for")));
            }
            req.clauses.push(Clause::Text { whole: key == "_content", query: value.to_string() });
        }
        _ if key.starts_with("_has:") => {
            let Some(clause) = parse_has(&req.types, key, value, cx)? else { return Ok(false) };
            req.clauses.push(clause);
        }
        _ => {
            let Some(clause) = parse_param(&req.types, key, value, cx)? else { return Ok(false) };
            req.clauses.push(clause);
        }
    }
    Ok(true)
}

fn invalid(msg: impl Into<String>) -> SearchError {
    SearchError::Invalid(msg.into())
}

/// The definition of `name` shared by every type searched (same kind), or
/// `None` when some type lacks it.
fn lookup(types: &[ResourceType], name: &str) -> Option<&'static SearchParam> {
    let first = match types.first() {
        Some(rt) => search::param(*rt, name)?,
        // Every type: only what every type has (the common parameters).
        None => return common(name),
    };
    types.iter().all(|rt| search::param(*rt, name).is_some_and(|p| p.kind == first.kind)).then_some(first)
}

fn common(name: &str) -> Option<&'static SearchParam> {
    let mut all = ResourceType::all();
    let first = search::param(all.next()?, name)?;
    all.all(|rt| search::param(rt, name).is_some_and(|p| p.kind == first.kind)).then_some(first)
}

/// `name[:modifier]=value` on the searched types, or a chain `name[:Type].inner`.
fn parse_param(types: &[ResourceType], key: &str, value: &str, cx: &Context) -> Result<Option<Clause>, SearchError> {
    if let Some((head, inner)) = key.split_once('.') {
        return parse_chain(types, head, inner, value, cx);
    }
    let (name, modifier) = split_modifier(key);
    let Some(def) = lookup(types, name) else { return Ok(None) };
    if name == "_id" || name == "_lastUpdated" {
        return Err(invalid(format!("{key}: modifiers are not supported on {name}")));
    }
    clause(def, modifier, value, cx).map(Some)
}

fn split_modifier(key: &str) -> (&str, Option<&str>) {
    match key.split_once(':') {
        Some((name, m)) => (name, Some(m)),
        None => (key, None),
    }
}

/// How many reference hops a chain may take (`subject:Patient.organization.name`
/// is two): each hop is a join per candidate row.
const MAX_CHAIN_DEPTH: usize = 2;

/// `subject:Patient.name=x`, `subject.name=x`, or two levels deep
/// (`subject:Patient.organization.name=x`).
fn parse_chain(
    types: &[ResourceType],
    head: &str,
    inner: &str,
    value: &str,
    cx: &Context,
) -> Result<Option<Clause>, SearchError> {
    parse_chain_at(types, head, inner, value, cx, 1)
}

fn parse_chain_at(
    types: &[ResourceType],
    head: &str,
    inner: &str,
    value: &str,
    cx: &Context,
    depth: usize,
) -> Result<Option<Clause>, SearchError> {
    let (name, modifier) = split_modifier(head);
    let Some(def) = lookup(types, name) else { return Ok(None) };
    if def.kind != ParamKind::Reference {
        return Err(invalid(format!("{head}.{inner}: only reference parameters can be chained")));
    }
    let candidates: Vec<ResourceType> = match modifier {
        Some(t) => vec![ResourceType::parse(t).map_err(|e| invalid(format!("{head}: {e}")))?],
        None => def.targets.clone(),
    };
    if let Some((next_head, rest)) = inner.split_once('.') {
        if depth >= MAX_CHAIN_DEPTH {
            return Err(invalid(format!(
                "{head}.{inner}: chains deeper than {MAX_CHAIN_DEPTH} levels are not supported"
            )));
        }
        let (next_name, _) = split_modifier(next_head);
        let targets: Vec<ResourceType> = candidates
            .into_iter()
            .filter(|t| search::param(*t, next_name).is_some_and(|p| p.kind == ParamKind::Reference))
            .collect();
        if targets.is_empty() {
            return Ok(None);
        }
        let Some(inner_clause) = parse_chain_at(&targets, next_head, rest, value, cx, depth + 1)? else {
            return Ok(None);
        };
        return Ok(Some(Clause::Chain { name: def.name, targets, inner: Box::new(inner_clause) }));
    }
    let (inner_name, inner_modifier) = split_modifier(inner);
    let targets: Vec<ResourceType> =
        candidates.into_iter().filter(|t| search::param(*t, inner_name).is_some()).collect();
    let Some(inner_def) = lookup(&targets, inner_name) else { return Ok(None) };
    let inner_clause = match inner_name {
        "_id" => Clause::Id(split_or(value).iter().map(|v| unescape(v)).collect()),
        "_lastUpdated" => {
            Clause::LastUpdated(split_or(value).iter().map(|v| date_pred(v, cx)).collect::<Result<_, _>>()?)
        }
        _ => clause(inner_def, inner_modifier, value, cx)?,
    };
    Ok(Some(Clause::Chain { name: def.name, targets, inner: Box::new(inner_clause) }))
}

/// `_has:Observation:patient:code=1234`: one level only.
fn parse_has(types: &[ResourceType], key: &str, value: &str, cx: &Context) -> Result<Option<Clause>, SearchError> {
    let parts: Vec<&str> = key.splitn(4, ':').collect();
    let [_, source, link, inner] = parts[..] else {
        return Err(invalid(format!("{key}: expected _has:Type:reference:parameter")));
    };
    if inner.starts_with("_has") {
        return Err(invalid(format!("{key}: nested _has is not supported")));
    }
    let source = ResourceType::parse(source).map_err(|e| invalid(format!("{key}: {e}")))?;
    let Some(link_def) = search::param(source, link) else { return Ok(None) };
    if link_def.kind != ParamKind::Reference {
        return Err(invalid(format!("{key}: {link} is not a reference parameter of {source}")));
    }
    if !types.is_empty() && !link_def.targets.is_empty() && !types.iter().all(|t| link_def.targets.contains(t)) {
        return Err(invalid(format!("{key}: {source}.{link} cannot point at the types searched")));
    }
    let (inner_name, inner_modifier) = split_modifier(inner);
    let Some(inner_def) = search::param(source, inner_name) else { return Ok(None) };
    let inner_clause = match inner_name {
        "_id" => Clause::Id(split_or(value).iter().map(|v| unescape(v)).collect()),
        "_lastUpdated" => {
            Clause::LastUpdated(split_or(value).iter().map(|v| date_pred(v, cx)).collect::<Result<_, _>>()?)
        }
        _ => clause(inner_def, inner_modifier, value, cx)?,
    };
    Ok(Some(Clause::Has { source, name: link_def.name, inner: Box::new(inner_clause) }))
}

/// The clause of a regular parameter with an optional modifier.
fn clause(def: &'static SearchParam, modifier: Option<&str>, value: &str, cx: &Context) -> Result<Clause, SearchError> {
    let name = def.name;
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(invalid(format!("{name}:missing must be true or false, not '{value}'"))),
        };
        return Ok(Clause::Missing { name, missing });
    }
    let unsupported =
        |m: &str| invalid(format!("the modifier :{m} is not supported on {name} ({})", def.kind.as_str()));
    let mut negate = false;
    let values = split_or(value);
    if values.iter().all(|v| v.is_empty()) {
        return Err(invalid(format!("{name}: a value is required")));
    }
    let preds = values
        .iter()
        .filter(|v| !v.is_empty())
        .map(|raw| -> Result<Pred, SearchError> {
            Ok(match (def.kind, modifier) {
                (ParamKind::String, None) => Pred::StringStarts(search::normalize(&unescape(raw))),
                (ParamKind::String, Some("exact")) => Pred::StringExact(unescape(raw)),
                (ParamKind::String, Some("contains")) => Pred::StringContains(search::normalize(&unescape(raw))),
                (ParamKind::Token, None) => token(raw),
                (ParamKind::Token, Some("not")) => {
                    negate = true;
                    token(raw)
                }
                (ParamKind::Token, Some("text")) => Pred::TokenText(search::normalize(&unescape(raw))),
                (ParamKind::Date, None) => Pred::Date(date_pred(raw, cx)?),
                (ParamKind::Reference, None) => reference(name, None, raw, cx)?,
                (ParamKind::Reference, Some(m)) if m.starts_with(|c: char| c.is_ascii_uppercase()) => {
                    let t = ResourceType::parse(m).map_err(|e| invalid(format!("{name}:{m}: {e}")))?;
                    reference(name, Some(t), raw, cx)?
                }
                (ParamKind::Number, None) => Pred::Number(num_pred(name, raw)?),
                (ParamKind::Quantity, None) => quantity(name, raw)?,
                (ParamKind::Uri, None) => Pred::Uri(unescape(raw)),
                (ParamKind::Uri, Some("below")) => Pred::UriBelow(unescape(raw)),
                (ParamKind::Uri, Some("above")) => Pred::UriAbove(unescape(raw)),
                (_, Some(m)) => return Err(unsupported(m)),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Clause::Values { name, kind: def.kind, negate, preds })
}

/// Splits on commas that are not escaped (`\,`); escapes stay for the
/// per-type parsing to resolve.
pub(crate) fn split_or(value: &str) -> Vec<String> {
    split_unescaped(value, ',')
}

/// 400 for a parameter with more OR-ed values than [`MAX_VALUES`].
fn check_or(key: &str, value: &str) -> Result<(), SearchError> {
    // A cheap upper bound first: commas, escaped or not.
    if value.bytes().filter(|b| *b == b',').count() < MAX_VALUES {
        return Ok(());
    }
    if split_or(value).len() > MAX_VALUES {
        return Err(invalid(format!("{key}: at most {MAX_VALUES} comma-separated values")));
    }
    Ok(())
}

fn split_unescaped(value: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            cur.extend(chars.next());
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Resolves `\,`, `\|`, `\$` and `\\`.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn token(raw: &str) -> Pred {
    let parts = split_unescaped(raw, '|');
    let non_empty = |s: &String| (!s.is_empty()).then(|| unescape(s));
    match parts.as_slice() {
        [code] => Pred::Token { system: SystemMatch::Any, code: Some(unescape(code)) },
        [system, code, ..] if system.is_empty() => Pred::Token { system: SystemMatch::Absent, code: non_empty(code) },
        [system, code, ..] => Pred::Token { system: SystemMatch::Is(unescape(system)), code: non_empty(code) },
        [] => Pred::Token { system: SystemMatch::Any, code: None },
    }
}

fn prefix(raw: &str) -> (Prefix, &str) {
    let p = match raw.get(..2) {
        Some("eq") => Prefix::Eq,
        Some("ne") => Prefix::Ne,
        Some("gt") => Prefix::Gt,
        Some("lt") => Prefix::Lt,
        Some("ge") => Prefix::Ge,
        Some("le") => Prefix::Le,
        Some("sa") => Prefix::Sa,
        Some("eb") => Prefix::Eb,
        Some("ap") => Prefix::Ap,
        _ => return (Prefix::Eq, raw),
    };
    (p, &raw[2..])
}

fn date_pred(raw: &str, cx: &Context) -> Result<DatePred, SearchError> {
    let (prefix, rest) = prefix(raw);
    let range = search::parse_date_range(rest).map_err(|e| invalid(e.to_string()))?;
    // `ap`: within 10% of the distance from now, and at least the value's
    // own precision.
    let gap = (cx.now - range.lo).abs() / 10;
    let slack = gap.max(range.hi - range.lo).max(Duration::zero());
    Ok(DatePred { prefix, range, slack })
}

fn num_pred(name: &str, raw: &str) -> Result<NumPred, SearchError> {
    let (prefix, rest) = prefix(raw);
    let bad = || invalid(format!("{name}: '{raw}' is not a number with an optional prefix"));
    let (mantissa, exp) = match rest.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().map_err(|_| bad())?),
        None => (rest, 0),
    };
    let digits = mantissa.strip_prefix('-').unwrap_or(mantissa);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) || digits.ends_with('.') || !(-300..=300).contains(&exp)
    {
        return Err(bad());
    }
    let decimals = i32::try_from(frac.len()).map_err(|_| bad())?;
    Ok(NumPred { prefix, value: rest.to_string(), half: format!("5e{}", exp - decimals - 1) })
}

fn quantity(name: &str, raw: &str) -> Result<Pred, SearchError> {
    let parts = split_unescaped(raw, '|');
    let num = num_pred(name, &parts[0])?;
    let part = |i: usize| parts.get(i).filter(|s| !s.is_empty()).map(|s| unescape(s));
    Ok(Pred::Quantity { num, system: part(1), code: part(2) })
}

fn reference(name: &str, typed: Option<ResourceType>, raw: &str, cx: &Context) -> Result<Pred, SearchError> {
    let raw = unescape(raw);
    let bad = |why: String| invalid(format!("{name}: '{raw}' is not a reference ({why})"));
    let local = match raw.strip_prefix(cx.tenant_base).and_then(|r| r.strip_prefix('/')) {
        Some(rest) => rest,
        None if raw.contains("://") || raw.starts_with("urn:") => return Ok(Pred::ReferenceUrl(raw.clone())),
        None => raw.as_str(),
    };
    let segments: Vec<&str> = local.split('/').collect();
    let (rt, id) = match segments[..] {
        [id] => (typed, id),
        [t, id] | [t, id, "_history", _] => {
            let t = ResourceType::parse(t).map_err(|e| bad(e.to_string()))?;
            if typed.is_some_and(|m| m != t) {
                return Err(bad(format!("the modifier names another type than {t}")));
            }
            (Some(t), id)
        }
        _ => return Err(bad("expected [Type/]id or an absolute URL".into())),
    };
    ResourceId::parse(id).map_err(|e| bad(e.to_string()))?;
    Ok(Pred::Reference { target_type: rt, id: id.to_string() })
}

fn parse_sort(req: &mut SearchRequest, value: &str) -> Result<bool, SearchError> {
    let mut keys = Vec::new();
    for part in value.split(',').filter(|p| !p.is_empty()) {
        let (desc, name) = match part.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, part),
        };
        let by = match name {
            "_id" => SortBy::Id,
            "_lastUpdated" => SortBy::LastUpdated,
            _ => match lookup(&req.types, name) {
                Some(def) => SortBy::Param(def.name, def.kind),
                None => return Ok(false),
            },
        };
        keys.push(SortKey { by, desc });
    }
    if keys.len() > 5 {
        return Err(invalid("_sort: at most 5 keys"));
    }
    req.sort = keys;
    Ok(true)
}

fn parse_include(value: &str, iterate: bool) -> Result<Include, SearchError> {
    let parts: Vec<&str> = value.split(':').collect();
    let (source, param, target) = match parts[..] {
        [s, p] => (s, p, None),
        [s, p, t] => (s, p, Some(t)),
        _ => {
            return Err(invalid(format!("'{value}' is not Type:parameter[:targetType] (wildcards are not supported)")));
        }
    };
    let source = ResourceType::parse(source).map_err(|e| invalid(format!("{value}: {e}")))?;
    let def = search::param(source, param)
        .filter(|d| d.kind == ParamKind::Reference)
        .ok_or_else(|| invalid(format!("{value}: {param} is not a reference parameter of {source}")))?;
    let target = target.map(ResourceType::parse).transpose().map_err(|e| invalid(format!("{value}: {e}")))?;
    Ok(Include { source, param: def.name, target, iterate })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Context<'static> {
        Context { tenant_base: "http://h/fhir/t", now: Utc::now(), strict: false }
    }

    fn one(rt: &str, key: &str, value: &str) -> Clause {
        let req = parse(vec![ResourceType::parse(rt).unwrap()], &[(key.into(), value.into())], &cx()).unwrap();
        assert!(req.ignored.is_empty(), "{key} was ignored");
        req.clauses.into_iter().next().unwrap()
    }

    #[test]
    fn nul_and_dangling_escapes_are_refused_before_they_reach_sql() {
        let patient = || vec![ResourceType::parse("Patient").unwrap()];
        for (k, v) in [("name", "a\0"), ("na\0me", "x"), ("name", "x\\"), ("identifier", "s|\\"), ("name", "\\\\\\")] {
            let err = parse(patient(), &[(k.into(), v.into())], &cx()).unwrap_err();
            assert!(matches!(err, SearchError::Invalid(_)), "{k}={v}: {err}");
        }
        assert!(parse(patient(), &[("name".into(), "a\\\\".into())], &cx()).is_ok(), "an escaped backslash");
    }

    #[test]
    fn a_chain_without_a_type_uses_the_targets_that_have_the_parameter() {
        let Clause::Chain { targets, inner, .. } = one("Observation", "subject.gender", "male") else { panic!() };
        assert_eq!(targets, vec![ResourceType::parse("Patient").unwrap()]);
        assert!(matches!(*inner, Clause::Values { name: "gender", .. }));
    }
}
