//! FHIR search over the tenant-partitioned index: parse (pure), build SQL
//! (pure), run it in a transaction that row-level security scopes to the
//! tenant, page by keyset with sealed cursors, and add `_include` and
//! `_revinclude` resources.

pub mod access;
pub mod cursor;
pub mod parse;
pub mod request;
pub mod sql;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Postgres, Row as _, Transaction};

use schemas::TenantId;

use crate::{Queries, QueryError};

pub use cursor::CursorKey;
pub use parse::{Context, parse};
pub use request::{Include, SearchRequest, Summary, Total};
use sql::{Arg, Position, Sql};

/// Why a search cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// A malformed value, prefix, modifier or reference.
    #[error("{0}")]
    Invalid(String),
    /// Parameters not understood, with `Prefer: handling=strict`.
    #[error("unknown or unsupported search parameters: {}", .0.join(", "))]
    Unknown(Vec<String>),
    /// A paging cursor that was not issued for this tenant, caller and query.
    #[error("the paging link is not valid for this search (it belongs to another query, caller or server key)")]
    BadCursor,
    #[error(transparent)]
    Query(#[from] QueryError),
}

impl From<sqlx::Error> for SearchError {
    fn from(e: sqlx::Error) -> Self {
        Self::Query(e.into())
    }
}

/// Limits and identity of a search call.
#[derive(Debug, Clone)]
pub struct SearchOptions<'a> {
    pub default_count: u32,
    pub max_count: u32,
    /// At most this many `_include`/`_revinclude` resources per page.
    pub max_included: u32,
    pub key: &'a CursorKey,
    /// Who asks: cursors are bound to it.
    pub caller: &'a str,
}

/// A resource in a search result.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The tenant the resource lives in: the searching one or `shared`.
    pub tenant: String,
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub last_updated: DateTime<Utc>,
    pub resource: String,
}

/// One page of a search.
#[derive(Debug, Clone)]
pub struct SearchPage {
    pub matches: Vec<Hit>,
    pub included: Vec<Hit>,
    pub total: Option<u64>,
    /// The page size applied.
    pub count: u32,
    /// Sealed cursors for the `next` and `previous` links.
    pub next: Option<String>,
    pub previous: Option<String>,
}

/// What a cursor is bound to: tenant, caller, types and query.
fn binding(tenant: &TenantId, caller: &str, req: &SearchRequest) -> String {
    let mut b = format!("{tenant}\n{caller}\n");
    for t in &req.types {
        b.push_str(t.as_str());
        b.push(',');
    }
    // Order-insensitive: links may list the parameters in another order.
    let mut canonical: Vec<&(String, String)> = req.canonical.iter().filter(|(k, _)| k != "_count").collect();
    canonical.sort();
    for (k, v) in canonical {
        b.push('\n');
        b.push_str(k);
        b.push('=');
        b.push_str(v);
    }
    b
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    for a in args {
        q = match a {
            Arg::Text(s) => q.bind(s),
            Arg::Texts(v) => q.bind(v),
            Arg::Time(t) => q.bind(t),
            Arg::Int(i) => q.bind(i),
        };
    }
    q
}

async fn fetch(tx: &mut Transaction<'static, Postgres>, sql: Sql) -> Result<Vec<sqlx::postgres::PgRow>, SearchError> {
    let q = bind_all(sqlx::query(AssertSqlSafe(sql.text)), sql.args);
    Ok(q.fetch_all(&mut **tx).await?)
}

fn hit(row: &sqlx::postgres::PgRow) -> Result<Hit, SearchError> {
    Ok(Hit {
        tenant: row.try_get("tenant_id")?,
        resource_type: row.try_get("resource_type")?,
        id: row.try_get("id")?,
        version: row.try_get("version")?,
        last_updated: row.try_get("last_updated")?,
        resource: row.try_get::<Option<String>, _>("resource")?.unwrap_or_default(),
    })
}

fn position(row: &sqlx::postgres::PgRow, keys: usize, backward: bool) -> Result<Position, SearchError> {
    let keys =
        (0..keys).map(|i| row.try_get::<Option<String>, _>(format!("k{i}").as_str())).collect::<Result<_, _>>()?;
    Ok(Position { backward, keys, rtype: row.try_get("resource_type")?, id: row.try_get("id")? })
}

/// The exact number of matches.
async fn total(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    req: &SearchRequest,
) -> Result<u64, SearchError> {
    let row = fetch(tx, sql::count(tenant.as_str(), req)).await?;
    let n: i64 = row.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
    Ok(n as u64)
}

impl Queries {
    /// Runs a search in `tenant` and returns one page.
    pub async fn search(
        &self,
        tenant: &TenantId,
        req: &SearchRequest,
        opts: &SearchOptions<'_>,
    ) -> Result<SearchPage, SearchError> {
        let bind = binding(tenant, opts.caller, req);
        let pos = req.cursor.as_deref().map(|c| opts.key.open(&bind, c)).transpose()?;
        if pos.as_ref().is_some_and(|p| p.keys.len() != req.sort.len()) {
            return Err(SearchError::BadCursor);
        }
        let count = req.count.unwrap_or(opts.default_count).min(opts.max_count);
        // The transaction's settings bound every statement, so no search can
        // pin a connection, and plan it for the actual values (see
        // `begin_reading`).
        let mut tx = self.begin_reading(tenant, &req.shared).await?;
        let only_total = req.summary == Summary::Count || count == 0;
        let mut page =
            SearchPage { matches: Vec::new(), included: Vec::new(), total: None, count, next: None, previous: None };
        if only_total {
            page.total = Some(total(&mut tx, tenant, req).await?);
            tx.commit().await?;
            return Ok(page);
        }
        let mut rows = fetch(&mut tx, sql::page(tenant.as_str(), req, pos.as_ref(), i64::from(count) + 1)).await?;
        let more = rows.len() > count as usize;
        if req.total != Total::None {
            // A first page that holds every match is its own total: one
            // statement fewer for the many searches with few matches.
            page.total = match (more, &pos) {
                (false, None) => Some(rows.len() as u64),
                _ => Some(total(&mut tx, tenant, req).await?),
            };
        }
        rows.truncate(count as usize);
        let backward = pos.as_ref().is_some_and(|p| p.backward);
        if backward {
            rows.reverse();
        }
        let n = req.sort.len();
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            let (has_next, has_prev) = if backward { (true, more) } else { (more, pos.is_some()) };
            if has_next {
                page.next = Some(opts.key.seal(&bind, &position(last, n, false)?));
            }
            if has_prev {
                page.previous = Some(opts.key.seal(&bind, &position(first, n, true)?));
            }
        }
        page.matches = rows.iter().map(hit).collect::<Result<_, _>>()?;
        page.included = self.included(&mut tx, tenant, req, &page.matches, opts.max_included).await?;
        tx.commit().await?;
        Ok(page)
    }

    /// `_include` and `_revinclude` of a page: the plain ones over the
    /// matches, then `:iterate` ones once more over what they added.
    async fn included(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        tenant: &TenantId,
        req: &SearchRequest,
        matches: &[Hit],
        max: u32,
    ) -> Result<Vec<Hit>, SearchError> {
        if req.includes.is_empty() && req.revincludes.is_empty() {
            return Ok(Vec::new());
        }
        let mut seen: HashSet<(String, String, String)> =
            matches.iter().map(|h| (h.tenant.clone(), h.resource_type.clone(), h.id.clone())).collect();
        let mut added: Vec<Hit> = Vec::new();
        let mut frontier: Vec<Hit> = matches.to_vec();
        for round in 0..2 {
            let mut found = Vec::new();
            let specs = |list: &[Include]| -> Vec<Include> {
                list.iter().filter(|i| round == 0 || i.iterate).cloned().collect()
            };
            for inc in specs(&req.includes) {
                let ids: Vec<(String, String)> = frontier
                    .iter()
                    .filter(|h| h.resource_type == inc.source.as_str())
                    .map(|h| (h.tenant.clone(), h.id.clone()))
                    .collect();
                let room = i64::from(max) - (added.len() + found.len()) as i64;
                if ids.is_empty() || room <= 0 {
                    continue;
                }
                found.extend(fetch(tx, sql::include(tenant.as_str(), &req.shared, &inc, &ids, room)).await?);
            }
            for inc in specs(&req.revincludes) {
                let targets: Vec<(String, String, String)> =
                    frontier.iter().map(|h| (h.tenant.clone(), h.resource_type.clone(), h.id.clone())).collect();
                let room = i64::from(max) - (added.len() + found.len()) as i64;
                if targets.is_empty() || room <= 0 {
                    continue;
                }
                found.extend(fetch(tx, sql::revinclude(tenant.as_str(), &req.shared, &inc, &targets, room)).await?);
            }
            frontier.clear();
            for row in &found {
                let h = hit(row)?;
                if seen.insert((h.tenant.clone(), h.resource_type.clone(), h.id.clone())) {
                    frontier.push(h.clone());
                    added.push(h);
                }
            }
            if frontier.is_empty() {
                break;
            }
        }
        Ok(added)
    }
}
