//! The typed form of a FHIR search: what the parser produces and the SQL
//! builder consumes. No strings of the client survive here unparsed, except
//! values that are compared as text.

use chrono::Duration;

use schemas::ResourceType;
use schemas::search::{DateRange, ParamKind};

/// A parsed search over one type (type level) or several (system level).
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The types searched; empty means every type (system level without `_type`).
    pub types: Vec<ResourceType>,
    /// Conditions that must all hold.
    pub clauses: Vec<Clause>,
    pub sort: Vec<SortKey>,
    /// `_count` as asked (the service caps it).
    pub count: Option<u32>,
    pub total: Total,
    pub summary: Summary,
    pub elements: Option<Vec<String>>,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    /// The paging cursor of a `next`/`previous` link.
    pub cursor: Option<String>,
    /// The understood parameters as given, in order, for the `self` link
    /// and for binding a cursor to its query.
    pub canonical: Vec<(String, String)>,
    /// Parameters that were not understood and were ignored.
    pub ignored: Vec<String>,
    /// Types the tenant reads from the shared space: their shared
    /// resources match, resolve references and are included like its own.
    pub shared: Vec<ResourceType>,
}

/// One condition on a resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Clause {
    /// `_id`: any of these ids.
    Id(Vec<String>),
    /// `_lastUpdated`: any of these.
    LastUpdated(Vec<DatePred>),
    /// `name:missing=true|false`.
    Missing { name: &'static str, missing: bool },
    /// Any of `preds` holds for a value of `name`; with `negate` (`:not`),
    /// none does.
    Values { name: &'static str, kind: ParamKind, negate: bool, preds: Vec<Pred> },
    /// `name:Type.inner`: a resource `name` points at satisfies `inner`.
    Chain { name: &'static str, targets: Vec<ResourceType>, inner: Box<Clause> },
    /// `_has:source:name:inner`: some `source` pointing here via `name`
    /// satisfies `inner`.
    Has { source: ResourceType, name: &'static str, inner: Box<Clause> },
    /// `_text` (the narrative) or `_content` (the whole resource): a
    /// PostgreSQL full-text match of every word of `query`.
    Text { whole: bool, query: String },
}

/// A single value test.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    /// Normalised prefix (the default string match).
    StringStarts(String),
    StringExact(String),
    /// Normalised substring.
    StringContains(String),
    Token {
        system: SystemMatch,
        code: Option<String>,
    },
    /// Normalised prefix of the display or text.
    TokenText(String),
    Date(DatePred),
    Reference {
        target_type: Option<ResourceType>,
        id: String,
    },
    /// A reference compared as written (canonical or foreign URL).
    ReferenceUrl(String),
    Number(NumPred),
    Quantity {
        num: NumPred,
        system: Option<String>,
        code: Option<String>,
    },
    Uri(String),
    UriBelow(String),
    UriAbove(String),
}

/// The system part of a token search.
#[derive(Debug, Clone, PartialEq)]
pub enum SystemMatch {
    /// `code`: any system.
    Any,
    /// `|code`: no system.
    Absent,
    /// `system|code` or `system|`.
    Is(String),
}

/// The FHIR comparison prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

/// A date comparison: the searched range and, for `ap`, the slack.
#[derive(Debug, Clone, PartialEq)]
pub struct DatePred {
    pub prefix: Prefix,
    pub range: DateRange,
    pub slack: Duration,
}

/// A number comparison: the value as written and half its precision (the
/// implicit range of `eq` is `value ± half`).
#[derive(Debug, Clone, PartialEq)]
pub struct NumPred {
    pub prefix: Prefix,
    pub value: String,
    pub half: String,
}

/// One `_sort` key.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub by: SortBy,
    pub desc: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SortBy {
    Id,
    LastUpdated,
    Param(&'static str, ParamKind),
}

/// `_include` / `_revinclude`: resources of `source` and their reference
/// parameter `param` (restricted to `target` when given).
#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    pub source: ResourceType,
    pub param: &'static str,
    pub target: Option<ResourceType>,
    pub iterate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    None,
    Estimate,
    Accurate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    False,
    /// The summary elements of the base definitions.
    True,
    Count,
    Text,
    Data,
}
