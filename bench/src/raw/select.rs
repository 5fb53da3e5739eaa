//! Raw baseline (d): the read side's primary-key lookup, prepared, straight
//! against the real `resources`/`resource_versions` tables, for the very
//! rows P3 reads, at P3's concurrency over a pool as big as the server's.
//! It runs as the harness's database user, so row-level security (which a
//! superuser skips) is not part of the baseline: it is part of the server.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::OpError;
use crate::scenarios::read::{ReadResult, ReadSet};
use crate::scenarios::{Errors, Rng};
use crate::stats::{Latencies, rate};

/// The query the server's read runs (query/src/read.rs), minus the
/// per-request transaction that scopes it to a tenant.
const READ: &str = "select v.version, v.op, v.last_updated, v.resource::text as resource
     from resources r
     join resource_versions v
       on v.tenant_id = r.tenant_id and v.resource_type = r.resource_type
      and v.id = r.id and v.version = r.version
     where r.tenant_id = $1 and r.resource_type = $2 and r.id = $3";

pub async fn run(
    database_url: &str,
    pool_size: u32,
    tenant: &str,
    set: &ReadSet,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<ReadResult> {
    let pool = PgPoolOptions::new()
        .max_connections(pool_size.max(1))
        .min_connections(pool_size.max(1))
        .connect(database_url)
        .await
        .context("connect the raw select pool")?;
    let deadline = Instant::now() + duration;
    let mut users = JoinSet::new();
    for vu in 0..concurrency {
        let (pool, tenant, set) = (pool.clone(), tenant.to_owned(), set.clone());
        users.spawn(async move {
            let (mut lat, mut errors, mut rng) = (Latencies::new(), Errors::default(), Rng::new(1000 + vu as u64));
            let mut misses = 0u64;
            while Instant::now() < deadline {
                let (kind, id) = &set[rng.below(set.len())];
                let started = Instant::now();
                let row = sqlx::query(READ).bind(&tenant).bind(kind.as_str()).bind(id).fetch_optional(&pool).await;
                let done = Instant::now();
                if done > deadline {
                    break;
                }
                match row {
                    Ok(Some(_)) => lat.record(done - started),
                    Ok(None) => misses += 1,
                    Err(e) => errors.add("select", &OpError::from(e)),
                }
            }
            (lat, errors, misses)
        });
    }
    let (mut lat, mut errors, mut misses) = (Latencies::new(), Errors::default(), 0);
    while let Some(Ok((l, e, m))) = users.join_next().await {
        lat.merge(&l);
        errors.merge(e);
        misses += m;
    }
    pool.close().await;
    if misses > 0 {
        errors.total += misses;
        errors.by_kind.insert("select: row missing".into(), misses);
    }
    Ok(ReadResult {
        seconds: duration.as_secs_f64(),
        concurrency,
        set_size: set.len(),
        reads: lat.count(),
        reads_per_sec: rate(lat.count(), duration),
        latency: lat.summary(),
        errors,
    })
}
