//! Turning a [`SearchRequest`] into SQL text and bound arguments: pure.
//!
//! Every client value is a bound argument; only names from the generated
//! definitions and fixed fragments are written into the text. Each
//! condition is an `exists` over `search_values` correlated on the
//! resource's (tenant, type, id), which PostgreSQL runs as a semi-join
//! driven by whichever side is more selective.

use chrono::{DateTime, Utc};

use schemas::ResourceType;
use schemas::search::ParamKind;

use super::request::*;

/// A bound argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Text(String),
    Texts(Vec<String>),
    Time(DateTime<Utc>),
    Int(i64),
}

/// SQL text with its arguments (`$1` is always the tenant).
#[derive(Debug, Clone, PartialEq)]
pub struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
    aliases: usize,
    /// The placeholder of the shared types the tenant reads, if any.
    shared: Option<String>,
}

impl Sql {
    pub fn new(tenant: &str) -> Self {
        Self { text: String::new(), args: vec![Arg::Text(tenant.to_string())], aliases: 0, shared: None }
    }

    /// A statement for a tenant that also reads `shared` types from the
    /// shared space.
    pub fn reading(tenant: &str, shared: &[ResourceType]) -> Self {
        let mut sql = Self::new(tenant);
        if !shared.is_empty() {
            let p = sql.arg(Arg::Texts(shared.iter().map(|t| t.as_str().to_string()).collect()));
            sql.shared = Some(p);
        }
        sql
    }

    /// Rows of resource alias `r` the tenant may see: its own, and the
    /// shared ones of the types it reads.
    fn visible(&self, r: &str) -> String {
        match &self.shared {
            None => format!("{r}.tenant_id = $1"),
            Some(s) => {
                format!("({r}.tenant_id = $1 or ({r}.tenant_id = 'shared' and {r}.resource_type = any({s}::text[])))")
            }
        }
    }

    /// Where a reference held by a row of tenant `from` resolves, for the
    /// target alias `r`: in the same tenant, or, from a tenant (never from
    /// the shared space), in the shared space for the types it reads.
    fn resolves(&self, r: &str, from: &str) -> String {
        match &self.shared {
            None => format!("{r}.tenant_id = {from}"),
            Some(s) => format!(
                "({r}.tenant_id = {from} or ({from} <> 'shared' and {r}.tenant_id = 'shared' \
                 and {r}.resource_type = any({s}::text[])))"
            ),
        }
    }

    /// Which tenants' rows may point at a resource of tenant `at`: its own,
    /// and when `at` is the shared space, the searching tenant's.
    fn referrers(&self, v: &str, at: &str) -> String {
        match &self.shared {
            None => format!("{v}.tenant_id = {at}"),
            Some(_) => format!("({v}.tenant_id = {at} or ({at} = 'shared' and {v}.tenant_id = $1))"),
        }
    }

    /// Binds an argument and returns its placeholder.
    pub fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    fn text(&mut self, s: impl Into<String>) -> String {
        self.arg(Arg::Text(s.into()))
    }

    fn alias(&mut self) -> usize {
        self.aliases += 1;
        self.aliases
    }
}

/// The columns that identify the resource a clause talks about.
#[derive(Debug, Clone)]
pub struct Alias {
    pub tenant: String,
    pub rtype: String,
    pub id: String,
    pub last_updated: String,
}

impl Alias {
    pub fn resource(r: &str) -> Self {
        Self {
            tenant: format!("{r}.tenant_id"),
            rtype: format!("{r}.resource_type"),
            id: format!("{r}.id"),
            last_updated: format!("{r}.last_updated"),
        }
    }
}

fn kind_code(kind: ParamKind) -> &'static str {
    match kind {
        ParamKind::String => "'s'",
        ParamKind::Token => "'t'",
        ParamKind::Date => "'d'",
        ParamKind::Reference => "'r'",
        ParamKind::Number => "'n'",
        ParamKind::Quantity => "'q'",
        ParamKind::Uri => "'u'",
    }
}

/// `like` pattern for a literal prefix.
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The SQL condition of one clause on the resource at `at`.
pub fn clause(sql: &mut Sql, c: &Clause, at: &Alias) -> String {
    match c {
        Clause::Id(ids) => {
            let p = sql.arg(Arg::Texts(ids.clone()));
            format!("{} = any({p}::text[])", at.id)
        }
        Clause::LastUpdated(preds) => {
            let hi = format!("({} + interval '1 microsecond')", at.last_updated);
            let parts: Vec<String> = preds.iter().map(|p| date(sql, p, &at.last_updated, &hi)).collect();
            format!("({})", parts.join(" or "))
        }
        Clause::Missing { name, missing } => {
            let n = sql.alias();
            let p = sql.text(*name);
            let not = if *missing { "not " } else { "" };
            format!(
                "{not}exists (select 1 from search_values v{n} where v{n}.tenant_id = {} and v{n}.resource_type = {} \
                 and v{n}.id = {} and v{n}.param = {p})",
                at.tenant, at.rtype, at.id
            )
        }
        Clause::Values { name, kind, negate, preds } => {
            let n = sql.alias();
            let v = format!("v{n}");
            let p = sql.text(*name);
            let tests: Vec<String> = preds.iter().map(|pr| pred(sql, pr, &v)).collect();
            let not = if *negate { "not " } else { "" };
            format!(
                "{not}exists (select 1 from search_values {v} where {v}.tenant_id = {} and {v}.resource_type = {} \
                 and {v}.id = {} and {v}.param = {p} and {v}.kind = {} and ({}))",
                at.tenant,
                at.rtype,
                at.id,
                kind_code(*kind),
                tests.join(" or ")
            )
        }
        Clause::Chain { name, targets, inner } => {
            let n = sql.alias();
            let (v, r) = (format!("v{n}"), format!("r{n}"));
            let p = sql.text(*name);
            let t = sql.arg(Arg::Texts(targets.iter().map(|t| t.as_str().to_string()).collect()));
            let inner = clause(sql, inner, &Alias::resource(&r));
            format!(
                "exists (select 1 from search_values {v} join resources {r} on {} \
                 and {r}.resource_type = {v}.ref_type and {r}.id = {v}.ref_id and not {r}.deleted \
                 where {v}.tenant_id = {} and {v}.resource_type = {} and {v}.id = {} and {v}.param = {p} \
                 and {v}.kind = 'r' and {v}.ref_type = any({t}::text[]) and {inner})",
                sql.resolves(&r, &format!("{v}.tenant_id")),
                at.tenant,
                at.rtype,
                at.id
            )
        }
        Clause::Text { whole, query } => {
            // Full text over the current version, computed per candidate
            // row (no text index yet): other clauses narrow first.
            let n = sql.alias();
            let (r, v) = (format!("rt{n}"), format!("vt{n}"));
            let q = sql.arg(Arg::Text(query.clone()));
            let doc = if *whole { format!("{v}.resource::text") } else { format!("{v}.resource->'text'->>'div'") };
            format!(
                "exists (select 1 from resources {r} join resource_versions {v} on {v}.tenant_id = {r}.tenant_id \
                 and {v}.resource_type = {r}.resource_type and {v}.id = {r}.id and {v}.version = {r}.version \
                 where {r}.tenant_id = {} and {r}.resource_type = {} and {r}.id = {} \
                 and to_tsvector('simple', coalesce({doc}, '')) @@ plainto_tsquery('simple', {q}::text))",
                at.tenant, at.rtype, at.id
            )
        }
        Clause::Has { source, name, inner } => {
            let n = sql.alias();
            let (v, r) = (format!("v{n}"), format!("r{n}"));
            let s = sql.text(source.as_str());
            let p = sql.text(*name);
            let inner = clause(sql, inner, &Alias::resource(&r));
            format!(
                "exists (select 1 from search_values {v} join resources {r} on {r}.tenant_id = {v}.tenant_id \
                 and {r}.resource_type = {v}.resource_type and {r}.id = {v}.id and not {r}.deleted \
                 where {} and {v}.kind = 'r' and {v}.resource_type = {s} and {v}.param = {p} \
                 and {v}.ref_type = {} and {v}.ref_id = {} and {inner})",
                sql.referrers(&v, &at.tenant),
                at.rtype,
                at.id
            )
        }
    }
}

/// One value test on the `search_values` row `v`.
fn pred(sql: &mut Sql, p: &Pred, v: &str) -> String {
    match p {
        Pred::StringStarts(s) => {
            let a = sql.text(format!("{}%", escape_like(s)));
            format!("{v}.text_norm like {a}")
        }
        Pred::StringExact(s) => format!("{v}.text_exact = {}", sql.text(s.clone())),
        Pred::StringContains(s) => {
            let a = sql.text(format!("%{}%", escape_like(s)));
            format!("{v}.text_norm like {a}")
        }
        Pred::Token { system, code } => {
            let mut parts = Vec::new();
            if let Some(code) = code {
                parts.push(format!("{v}.code = {}", sql.text(code.clone())));
            }
            match system {
                SystemMatch::Any => {}
                SystemMatch::Absent => parts.push(format!("{v}.system is null")),
                SystemMatch::Is(s) => parts.push(format!("{v}.system = {}", sql.text(s.clone()))),
            }
            if parts.is_empty() { "true".into() } else { format!("({})", parts.join(" and ")) }
        }
        Pred::TokenText(s) => {
            let a = sql.text(format!("{}%", escape_like(s)));
            format!("{v}.text_norm like {a}")
        }
        Pred::Date(d) => date(sql, d, &format!("{v}.lo"), &format!("{v}.hi")),
        Pred::Reference { target_type, id } => {
            let i = sql.text(id.clone());
            match target_type {
                Some(t) => format!("({v}.ref_id = {i} and {v}.ref_type = {})", sql.text(t.as_str())),
                None => format!("{v}.ref_id = {i}"),
            }
        }
        Pred::ReferenceUrl(u) => format!("{v}.text_exact = {}", sql.text(u.clone())),
        Pred::Number(n) => number(sql, n, &format!("{v}.num")),
        Pred::Quantity { num, system, code } => {
            let mut parts = vec![number(sql, num, &format!("{v}.num"))];
            if let Some(s) = system {
                parts.push(format!("{v}.system = {}", sql.text(s.clone())));
            }
            if let Some(c) = code {
                let a = sql.text(c.clone());
                parts.push(format!("({v}.code = {a} or {v}.unit = {a})"));
            }
            format!("({})", parts.join(" and "))
        }
        Pred::Uri(u) => format!("{v}.text_exact = {}", sql.text(u.clone())),
        Pred::UriBelow(u) => format!("{v}.text_exact like {}", sql.text(format!("{}%", escape_like(u)))),
        Pred::UriAbove(u) => format!("starts_with({}, {v}.text_exact)", sql.text(u.clone())),
    }
}

/// A date test of the target range `[lo, hi)` against the searched range,
/// per the FHIR prefix definitions.
fn date(sql: &mut Sql, d: &DatePred, lo: &str, hi: &str) -> String {
    let plo = sql.arg(Arg::Time(d.range.lo));
    let phi = sql.arg(Arg::Time(d.range.hi));
    let within = format!("({lo} >= {plo} and {hi} <= {phi})");
    match d.prefix {
        Prefix::Eq => within,
        Prefix::Ne => format!("not {within}"),
        Prefix::Gt => format!("{hi} > {phi}"),
        Prefix::Lt => format!("{lo} < {plo}"),
        Prefix::Ge => format!("({hi} > {phi} or {within})"),
        Prefix::Le => format!("({lo} < {plo} or {within})"),
        Prefix::Sa => format!("{lo} >= {phi}"),
        Prefix::Eb => format!("{hi} <= {plo}"),
        Prefix::Ap => {
            let a = sql.arg(Arg::Time(d.range.lo - d.slack));
            let b = sql.arg(Arg::Time(d.range.hi + d.slack));
            format!("({lo} < {b} and {hi} > {a})")
        }
    }
}

fn number(sql: &mut Sql, n: &NumPred, col: &str) -> String {
    let v = format!("{}::numeric", sql.text(n.value.clone()));
    match n.prefix {
        Prefix::Eq | Prefix::Ne => {
            let h = format!("{}::numeric", sql.text(n.half.clone()));
            let within = format!("({col} >= {v} - {h} and {col} < {v} + {h})");
            if n.prefix == Prefix::Ne { format!("not {within}") } else { within }
        }
        Prefix::Gt | Prefix::Sa => format!("{col} > {v}"),
        Prefix::Lt | Prefix::Eb => format!("{col} < {v}"),
        Prefix::Ge => format!("{col} >= {v}"),
        Prefix::Le => format!("{col} <= {v}"),
        Prefix::Ap => format!("abs({col} - {v}) <= abs({v}) * 0.1"),
    }
}

/// The SQL type a sort key is compared as.
pub fn sort_type(by: SortBy) -> &'static str {
    match by {
        SortBy::Id => "text",
        SortBy::LastUpdated => "timestamptz",
        SortBy::Param(_, ParamKind::Date) => "timestamptz",
        SortBy::Param(_, ParamKind::Number | ParamKind::Quantity) => "numeric",
        SortBy::Param(..) => "text",
    }
}

/// The expression of a sort key for the resource `r`: the smallest value
/// when ascending, the largest when descending, as FHIR asks.
fn sort_expr(sql: &mut Sql, key: &SortKey) -> String {
    let (name, kind) = match key.by {
        SortBy::Id => return "r.id".into(),
        SortBy::LastUpdated => return "r.last_updated".into(),
        SortBy::Param(name, kind) => (name, kind),
    };
    let agg = if key.desc { "max" } else { "min" };
    let col = match kind {
        ParamKind::String => "text_norm",
        ParamKind::Token => "code",
        ParamKind::Date if key.desc => "hi",
        ParamKind::Date => "lo",
        ParamKind::Number | ParamKind::Quantity => "num",
        ParamKind::Reference | ParamKind::Uri => "text_exact",
    };
    let p = sql.text(name);
    format!(
        "(select {agg}(sv.{col}) from search_values sv where sv.tenant_id = r.tenant_id \
         and sv.resource_type = r.resource_type and sv.id = r.id and sv.param = {p} and sv.kind = {})",
        kind_code(kind)
    )
}

/// Where a page starts: after (or, paging back, before) a row's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub backward: bool,
    pub keys: Vec<Option<String>>,
    pub rtype: String,
    pub id: String,
}

/// The filter shared by the page and the count: `from resources r where ...`.
pub fn filter(sql: &mut Sql, req: &SearchRequest) -> String {
    let mut conds = vec![sql.visible("r"), "not r.deleted".to_string()];
    if !req.types.is_empty() {
        let t = sql.arg(Arg::Texts(req.types.iter().map(|t| t.as_str().to_string()).collect()));
        conds.push(format!("r.resource_type = any({t}::text[])"));
    }
    let at = Alias::resource("r");
    for c in &req.clauses {
        conds.push(clause(sql, c, &at));
    }
    format!("from resources r where {}", conds.join(" and "))
}

/// `select count(*)` of the matches.
pub fn count(tenant: &str, req: &SearchRequest) -> Sql {
    let mut sql = Sql::reading(tenant, &req.shared);
    let from = filter(&mut sql, req);
    sql.text = format!("select count(*) {from}");
    sql
}

/// One page of matches: columns `resource_type, id, version, last_updated,
/// resource, k0..kn` (keys as text), in the requested order, at most
/// `limit` rows from `after` (reversed when paging backward).
pub fn page(tenant: &str, req: &SearchRequest, after: Option<&Position>, limit: i64) -> Sql {
    let mut sql = Sql::reading(tenant, &req.shared);
    let keys: Vec<String> = req.sort.iter().map(|k| sort_expr(&mut sql, k)).collect();
    let from = filter(&mut sql, req);
    let backward = after.is_some_and(|p| p.backward);
    let key_cols: String = keys.iter().enumerate().map(|(i, e)| format!(", {e} as k{i}")).collect();
    let key_text: String = (0..keys.len()).map(|i| format!(", s.k{i}::text as k{i}")).collect();
    let mut order: Vec<String> = req
        .sort
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let dir = match (k.desc, backward) {
                (false, false) => "asc nulls last",
                (true, false) => "desc nulls last",
                (false, true) => "desc nulls first",
                (true, true) => "asc nulls first",
            };
            format!("s.k{i} {dir}")
        })
        .collect();
    let tie = if backward { "desc" } else { "asc" };
    order.push(format!("s.resource_type {tie}"));
    order.push(format!("s.id {tie}"));
    let keyset = match after {
        Some(pos) => format!("where {}", keyset(&mut sql, req, pos)),
        None => String::new(),
    };
    let l = sql.arg(Arg::Int(limit));
    sql.text = format!(
        "select s.tenant_id, s.resource_type, s.id, s.version, s.last_updated{key_text},
                (select v.resource::text from resource_versions v where v.tenant_id = s.tenant_id
                  and v.resource_type = s.resource_type and v.id = s.id and v.version = s.version) as resource
         from (select r.tenant_id, r.resource_type, r.id, r.version, r.last_updated{key_cols} {from}) s
         {keyset}
         order by {}
         limit {l}",
        order.join(", ")
    );
    sql
}

/// Rows strictly after (or before) `pos` in the sort order, nulls last.
fn keyset(sql: &mut Sql, req: &SearchRequest, pos: &Position) -> String {
    let mut alternatives = Vec::new();
    let mut equal: Vec<String> = Vec::new();
    for (i, key) in req.sort.iter().enumerate() {
        let col = format!("s.k{i}");
        let ty = sort_type(key.by);
        let bound = pos.keys.get(i).cloned().flatten();
        let (beyond, same) = match bound {
            None if pos.backward => (format!("{col} is not null"), format!("{col} is null")),
            None => ("false".to_string(), format!("{col} is null")),
            Some(b) => {
                let a = sql.arg(Arg::Text(b));
                let op = if key.desc != pos.backward { "<" } else { ">" };
                let beyond = if pos.backward {
                    format!("{col} {op} {a}::{ty}")
                } else {
                    format!("({col} {op} {a}::{ty} or {col} is null)")
                };
                (beyond, format!("{col} = {a}::{ty}"))
            }
        };
        alternatives.push(conjunction(&equal, &beyond));
        equal.push(same);
    }
    let t = sql.text(pos.rtype.clone());
    let i = sql.text(pos.id.clone());
    let op = if pos.backward { "<" } else { ">" };
    alternatives.push(conjunction(&equal, &format!("(s.resource_type, s.id) {op} ({t}, {i})")));
    format!("({})", alternatives.join(" or "))
}

fn conjunction(equal: &[String], last: &str) -> String {
    let mut parts: Vec<&str> = equal.iter().map(String::as_str).collect();
    parts.push(last);
    format!("({})", parts.join(" and "))
}

/// Resources that the `source` resources `sources` (tenant, id) point at
/// via `param`, resolved as references resolve (own tenant, then shared).
pub fn include(tenant: &str, shared: &[ResourceType], inc: &Include, sources: &[(String, String)], limit: i64) -> Sql {
    let mut sql = Sql::reading(tenant, shared);
    let s = sql.text(inc.source.as_str());
    let p = sql.text(inc.param);
    let st = sql.arg(Arg::Texts(sources.iter().map(|x| x.0.clone()).collect()));
    let si = sql.arg(Arg::Texts(sources.iter().map(|x| x.1.clone()).collect()));
    let target = match inc.target {
        Some(t) => format!("and v.ref_type = {}", sql.text(t.as_str())),
        None => String::new(),
    };
    let l = sql.arg(Arg::Int(limit));
    let (visible, resolves) = (sql.visible("r"), sql.resolves("r", "v.tenant_id"));
    sql.text = format!(
        "select distinct r.tenant_id, r.resource_type, r.id, r.version, r.last_updated,
                (select rv.resource::text from resource_versions rv where rv.tenant_id = r.tenant_id
                  and rv.resource_type = r.resource_type and rv.id = r.id and rv.version = r.version) as resource
         from search_values v
         join resources r on {resolves} and r.resource_type = v.ref_type and r.id = v.ref_id
          and not r.deleted and {visible}
         where v.kind = 'r' and v.resource_type = {s} and v.param = {p}
           and (v.tenant_id, v.id) in (select * from unnest({st}::text[], {si}::text[])) {target}
         limit {l}"
    );
    sql
}

/// `source` resources that point at any of `targets` (tenant, type, id)
/// via `param`: the tenant's own, and shared ones only for shared targets.
pub fn revinclude(
    tenant: &str,
    shared: &[ResourceType],
    inc: &Include,
    targets: &[(String, String, String)],
    limit: i64,
) -> Sql {
    let mut sql = Sql::reading(tenant, shared);
    let s = sql.text(inc.source.as_str());
    let p = sql.text(inc.param);
    let tt = sql.arg(Arg::Texts(targets.iter().map(|x| x.0.clone()).collect()));
    let t = sql.arg(Arg::Texts(targets.iter().map(|x| x.1.clone()).collect()));
    let i = sql.arg(Arg::Texts(targets.iter().map(|x| x.2.clone()).collect()));
    let l = sql.arg(Arg::Int(limit));
    let (visible, referrers) = (sql.visible("v"), sql.referrers("v", "x.t"));
    sql.text = format!(
        "select distinct r.tenant_id, r.resource_type, r.id, r.version, r.last_updated,
                (select rv.resource::text from resource_versions rv where rv.tenant_id = r.tenant_id
                  and rv.resource_type = r.resource_type and rv.id = r.id and rv.version = r.version) as resource
         from unnest({tt}::text[], {t}::text[], {i}::text[]) as x(t, rt, id)
         join search_values v on {referrers} and v.ref_type = x.rt and v.ref_id = x.id
         join resources r on r.tenant_id = v.tenant_id and r.resource_type = v.resource_type and r.id = v.id
          and not r.deleted
         where {visible} and v.kind = 'r' and v.resource_type = {s} and v.param = {p}
         limit {l}"
    );
    sql
}
