//! P4, isolation: a small tenant's read and search latency beside an empty
//! neighbour, then beside a neighbour holding a million resources or more.
//!
//! The neighbour is generated in PostgreSQL (copies of the rows P2's
//! projector wrote for the Synthea tenant, with suffixed ids), because
//! projecting a million resources through the API would take longer than
//! the whole run; what P4 measures is the read path, which reads the same
//! rows either way. The copies go where the projector would put them: the
//! hash partition of the neighbour's tenant id, which P4 picks to be the
//! small tenant's own partition, the worst case.

use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::Fhir;
use crate::payloads::Kind;
use crate::scenarios::read::ReadSet;
use crate::scenarios::{Errors, Rng};
use crate::stats::{Latencies, Summary};

/// One measurement of the small tenant.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub read: Summary,
    pub search: Summary,
    pub errors: Errors,
}

/// What P4 measured.
#[derive(Debug, Clone, Serialize)]
pub struct IsolationResult {
    pub small_tenant_resources: usize,
    pub neighbour_resources: u64,
    pub neighbour_index_rows: u64,
    pub generate_seconds: f64,
    pub same_partition: bool,
    pub empty_neighbour: Probe,
    pub big_neighbour: Probe,
}

/// Reads and searches the small tenant with `concurrency` users: each
/// reads a random resource by id, then searches the Observations of a
/// random Patient (a reference search over the shared index).
pub async fn probe(fhir: &Fhir, tenant: &str, set: &ReadSet, concurrency: usize, duration: Duration) -> Probe {
    let patients: Vec<String> = set.iter().filter(|(k, _)| *k == Kind::Patient).map(|(_, id)| id.clone()).collect();
    let patients = std::sync::Arc::new(patients);
    let deadline = Instant::now() + duration;
    let mut users = JoinSet::new();
    for vu in 0..concurrency {
        let (fhir, tenant, set, patients) = (fhir.clone(), tenant.to_owned(), set.clone(), patients.clone());
        users.spawn(async move {
            let (mut read, mut search, mut errors) = (Latencies::new(), Latencies::new(), Errors::default());
            let mut rng = Rng::new(vu as u64 + 101);
            while Instant::now() < deadline {
                let (kind, id) = &set[rng.below(set.len())];
                let t = Instant::now();
                match fhir.read(&tenant, *kind, id).await {
                    Ok(()) => read.record(t.elapsed()),
                    Err(e) => errors.add("read", &e),
                }
                let patient = &patients[rng.below(patients.len())];
                let t = Instant::now();
                match fhir.search(&tenant, &format!("Observation?subject=Patient/{patient}")).await {
                    Ok(()) => search.record(t.elapsed()),
                    Err(e) => errors.add("search", &e),
                }
            }
            (read, search, errors)
        });
    }
    let (mut read, mut search, mut errors) = (Latencies::new(), Latencies::new(), Errors::default());
    while let Some(done) = users.join_next().await {
        if let Ok((r, s, e)) = done {
            read.merge(&r);
            search.merge(&s);
            errors.merge(e);
        }
    }
    Probe { read: read.summary(), search: search.summary(), errors }
}

/// A neighbour tenant id that hashes into the same partition as `small`.
pub async fn neighbour_in_partition_of(pool: &PgPool, small: &str, prefix: &str) -> anyhow::Result<(String, bool)> {
    // Walk candidate names until one shares the small tenant's remainder.
    let remainder = |t: &str| {
        let t = t.to_owned();
        async move {
            for r in 0..16 {
                let hit: bool =
                    sqlx::query_scalar("select satisfies_hash_partition('resources'::regclass, 16, $2, $1::text)")
                        .bind(&t)
                        .bind(r)
                        .fetch_one(pool)
                        .await?;
                if hit {
                    return Ok::<_, sqlx::Error>(Some(r));
                }
            }
            Ok(None)
        }
    };
    let want = remainder(small).await?;
    for n in 0..512 {
        let candidate = format!("{prefix}-{n}");
        if remainder(&candidate).await? == want {
            return Ok((candidate, true));
        }
    }
    Ok((format!("{prefix}-0"), false))
}

/// Copies `source`'s rows into `neighbour` until it holds at least `target`
/// resources; returns (resources, index rows). ANALYZEs afterwards, as the
/// projector does after a burst.
pub async fn fill(pool: &PgPool, source: &str, neighbour: &str, target: u64) -> anyhow::Result<(u64, u64)> {
    let have: i64 =
        sqlx::query_scalar("select count(*) from resources where tenant_id = $1").bind(source).fetch_one(pool).await?;
    anyhow::ensure!(have > 0, "the source tenant {source} has no resources to copy");
    let copies = target.div_ceil(have as u64) as i64;
    for (table, id_cols) in
        [("resource_versions", vec!["id"]), ("resources", vec!["id"]), ("search_values", vec!["id", "ref_id"])]
    {
        let cols: Vec<String> = sqlx::query_scalar(
            "select column_name::text from information_schema.columns
             where table_schema = 'public' and table_name = $1 order by ordinal_position",
        )
        .bind(table)
        .fetch_all(pool)
        .await?;
        let select: Vec<String> = cols
            .iter()
            .map(|c| match c.as_str() {
                "tenant_id" => "$2".to_owned(),
                c if id_cols.contains(&c) => format!("{c} || '-' || k"),
                c => c.to_owned(),
            })
            .collect();
        let sql = format!(
            "insert into {table} ({}) select {} from {table}, generate_series(1, $3) k where tenant_id = $1",
            cols.join(", "),
            select.join(", ")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(source)
            .bind(neighbour)
            .bind(copies)
            .execute(pool)
            .await
            .with_context(|| format!("copy {table} rows into the neighbour"))?;
    }
    sqlx::raw_sql("analyze resources; analyze resource_versions; analyze search_values").execute(pool).await?;
    let resources: i64 = sqlx::query_scalar("select count(*) from resources where tenant_id = $1")
        .bind(neighbour)
        .fetch_one(pool)
        .await?;
    let index: i64 = sqlx::query_scalar("select count(*) from search_values where tenant_id = $1")
        .bind(neighbour)
        .fetch_one(pool)
        .await?;
    Ok((resources as u64, index as u64))
}
