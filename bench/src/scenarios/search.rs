//! S1, search: the searches of the index issue, with exact totals, on two
//! tenants of one database. `fresh` holds 10 Synthea bundles and is searched
//! the moment its import has answered (a tenant's first minute); `big` is
//! P2's tenant with all 119. Each search runs with a few clients for a
//! fixed time. Beside it, the same statements the server runs (built by the
//! `query` crate from the same query string, prepared, in a transaction
//! scoped to the tenant as the server's reader role) run straight on
//! PostgreSQL: what the database alone can do for that plan.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use sqlx::postgres::{PgArguments, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor as _, PgPool, Postgres};
use tokio::task::JoinSet;
use tokio::time::Instant;

use query::search::sql::{self, Arg};
use schemas::ResourceType;

use crate::http::Fhir;
use crate::scenarios::Errors;
use crate::scenarios::import::{self, Bundle};
use crate::stats::{Latencies, Summary, rate};

/// One search: a stable key and its query, where `{family}` and
/// `{patient}` are filled in per tenant from its own data.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub key: &'static str,
    pub template: &'static str,
    /// A date-range search (its target is lower).
    pub date_range: bool,
}

/// The four searches the issue measured, then the README's (one is the
/// same as the first).
pub const CASES: [Case; 8] = [
    Case { key: "family", template: "Patient?family={family}", date_range: false },
    Case { key: "code", template: "Observation?code=http://loinc.org|8302-2&_count=20", date_range: false },
    Case { key: "encounter-date", template: "Encounter?date=ge2015-01-01&_count=20", date_range: true },
    Case { key: "clinical-status", template: "Condition?clinical-status=active&_count=20", date_range: false },
    Case {
        key: "birthdate-gender",
        template: "Patient?birthdate=ge1970-01-01&birthdate=lt1980-01-01&gender=female",
        date_range: true,
    },
    Case {
        key: "code-date-subject",
        template: "Observation?code=http://loinc.org|8302-2&date=ge2010-01-01&subject=Patient/{patient}",
        date_range: true,
    },
    Case {
        key: "encounter-include",
        template: "Encounter?date=2015&_include=Encounter:subject&_count=50",
        date_range: true,
    },
    Case { key: "chain", template: "Condition?subject:Patient.family={family}", date_range: false },
];

/// One search on one tenant, over HTTP and straight on PostgreSQL.
#[derive(Debug, Clone, Serialize)]
pub struct SearchRow {
    pub tenant: &'static str,
    pub key: &'static str,
    pub query: String,
    pub date_range: bool,
    pub requests_per_sec: Option<f64>,
    pub latency: Summary,
    /// The `total` of the answer (the same for every request).
    pub total: Option<u64>,
    pub raw_per_sec: Option<f64>,
    pub raw_latency: Summary,
    pub errors: Errors,
}

/// What S1 measured.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    pub clients: usize,
    pub seconds_per_search: f64,
    pub fresh_resources: u64,
    /// How long the fresh tenant's import took (its transactions answer
    /// once applied).
    pub fresh_import_seconds: f64,
    /// The first search on the fresh tenant, right after its import.
    pub fresh_first_search_ms: f64,
    pub rows: Vec<SearchRow>,
}

/// Imports the first 10 bundles into `fresh`, then runs every case there
/// and on `big`.
pub async fn run(
    fhir: &Fhir,
    database_url: &str,
    fresh: &str,
    big: &str,
    bundles: &[Bundle],
    clients: usize,
    each: Duration,
) -> anyhow::Result<SearchResult> {
    let ten = Arc::new(bundles.iter().take(10).cloned().collect::<Vec<_>>());
    let started = Instant::now();
    let imported = import::run(fhir, fresh, ten, 4).await;
    anyhow::ensure!(imported.errors.total == 0, "the fresh tenant's import failed: {:?}", imported.errors.samples);
    let fresh_import_seconds = started.elapsed().as_secs_f64();
    let first = Instant::now();
    fhir.search(fresh, "Encounter?date=ge2015-01-01&_count=20").await.context("the first search")?;
    let fresh_first_search_ms = first.elapsed().as_secs_f64() * 1000.0;

    let pool = reader_pool(database_url, clients).await?;
    let mut rows = Vec::new();
    for (label, tenant) in [("fresh", fresh), ("big", big)] {
        let (family, patient) = sample_patient(fhir, tenant).await?;
        for case in CASES {
            let query = case.template.replace("{family}", &family).replace("{patient}", &patient);
            let total = fhir.search_total(tenant, &query).await.with_context(|| format!("search {query}"))?;
            let (lat, errors) = http_load(fhir, tenant, &query, clients, each).await;
            let raw = raw_load(&pool, tenant, &query, clients, each).await.with_context(|| format!("raw {query}"))?;
            rows.push(SearchRow {
                tenant: label,
                key: case.key,
                query,
                date_range: case.date_range,
                requests_per_sec: rate(lat.count(), each),
                latency: lat.summary(),
                total,
                raw_per_sec: rate(raw.count(), each),
                raw_latency: raw.summary(),
                errors,
            });
        }
    }
    pool.close().await;
    Ok(SearchResult {
        clients,
        seconds_per_search: each.as_secs_f64(),
        fresh_resources: imported.resources,
        fresh_import_seconds,
        fresh_first_search_ms,
        rows,
    })
}

/// A family name and the id of a Patient who has it, from the tenant.
async fn sample_patient(fhir: &Fhir, tenant: &str) -> anyhow::Result<(String, String)> {
    let bundle = fhir.search_json(tenant, "Patient?_count=1&_sort=_id").await?;
    let patient = &bundle["entry"][0]["resource"];
    let family = patient["name"][0]["family"].as_str().context("a Patient with a family name")?;
    let id = patient["id"].as_str().context("a Patient id")?;
    Ok((family.to_owned(), id.to_owned()))
}

async fn http_load(fhir: &Fhir, tenant: &str, query: &str, clients: usize, each: Duration) -> (Latencies, Errors) {
    let deadline = Instant::now() + each;
    let mut users = JoinSet::new();
    for _ in 0..clients {
        let (fhir, tenant, query) = (fhir.clone(), tenant.to_owned(), query.to_owned());
        users.spawn(async move {
            let (mut lat, mut errors) = (Latencies::new(), Errors::default());
            while Instant::now() < deadline {
                let sent = Instant::now();
                match fhir.search(&tenant, &query).await {
                    Ok(()) => lat.record(sent.elapsed()),
                    Err(e) => errors.add("search", &e),
                }
            }
            (lat, errors)
        });
    }
    let (mut lat, mut errors) = (Latencies::new(), Errors::default());
    while let Some(Ok((l, e))) = users.join_next().await {
        lat.merge(&l);
        errors.merge(e);
    }
    (lat, errors)
}

/// Connections as the server's reader role, so row-level security applies
/// to the raw statements as it does to the server's.
async fn reader_pool(database_url: &str, size: usize) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(size.max(1) as u32)
        .after_connect(|conn, _| Box::pin(async move { conn.execute("set role fhirstream_reader").await.map(|_| ()) }))
        .connect(database_url)
        .await
        .context("connect as fhirstream_reader")
}

/// The server's count and first-page statements for `query`, run prepared
/// in a tenant-scoped transaction by `clients` tasks for `each`.
async fn raw_load(
    pool: &PgPool,
    tenant: &str,
    query: &str,
    clients: usize,
    each: Duration,
) -> anyhow::Result<Latencies> {
    let (rtype, params) = query.split_once('?').unwrap_or((query, ""));
    let rt = ResourceType::parse(rtype).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pairs: Vec<(String, String)> =
        params.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let cx = query::search::Context { tenant_base: "http://bench/fhir/x", now: chrono::Utc::now(), strict: true };
    let req = query::search::parse(vec![rt], &pairs, &cx).map_err(|e| anyhow::anyhow!("{e}"))?;
    let count = req.count.unwrap_or(20) as i64;
    let statements = Arc::new([sql::count(tenant, &req), sql::page(tenant, &req, None, count + 1)]);
    let deadline = Instant::now() + each;
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let (pool, tenant, statements) = (pool.clone(), tenant.to_owned(), statements.clone());
        tasks.spawn(async move {
            let mut lat = Latencies::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "select set_config('app.tenant', $1, true), set_config('plan_cache_mode', 'force_custom_plan', true)",
                ).bind(&tenant).execute(&mut *tx).await?;
                for s in statements.iter() {
                    bind_all(sqlx::query(AssertSqlSafe(s.text.clone())), &s.args).fetch_all(&mut *tx).await?;
                }
                tx.commit().await?;
                lat.record(sent.elapsed());
            }
            anyhow::Ok(lat)
        });
    }
    let mut lat = Latencies::new();
    while let Some(done) = tasks.join_next().await {
        lat.merge(&done.context("a raw search task panicked")??);
    }
    Ok(lat)
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, Postgres, PgArguments>,
    args: &[Arg],
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    for a in args {
        q = match a.clone() {
            Arg::Text(s) => q.bind(s),
            Arg::Texts(v) => q.bind(v),
            Arg::Time(t) => q.bind(t),
            Arg::Int(i) => q.bind(i),
        };
    }
    q
}
