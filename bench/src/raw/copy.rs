//! Raw baseline (c): PostgreSQL alone. The rows the raw pipeline wrote are
//! copied out, the scratch tables emptied, and the same rows loaded back
//! with `COPY ... FROM STDIN` on one connection — the fastest way in, and
//! the ceiling any import (P2) is measured against.

use std::time::Instant;

use anyhow::Context as _;
use bytes::Bytes;
use futures::TryStreamExt as _;
use serde::Serialize;
use sqlx::PgPool;

use crate::stats::rate;

/// What the COPY measured.
#[derive(Debug, Clone, Serialize)]
pub struct CopyResult {
    pub seconds: f64,
    /// `resource_versions` rows (one per event).
    pub version_rows: u64,
    /// `resources` rows (one per resource).
    pub current_rows: u64,
    pub bytes: u64,
    /// Version rows per second (the current rows ride along).
    pub rows_per_sec: Option<f64>,
}

const TABLES: [&str; 2] = ["bench_raw.resource_versions", "bench_raw.resources"];

pub async fn run(pool: &PgPool) -> anyhow::Result<CopyResult> {
    let mut conn = pool.acquire().await.context("a connection for COPY")?;
    let mut dumps: Vec<Vec<Bytes>> = Vec::new();
    for table in TABLES {
        let chunks: Vec<Bytes> = conn
            .copy_out_raw(&format!("copy (select * from {table}) to stdout"))
            .await
            .with_context(|| format!("copy {table} out"))?
            .try_collect()
            .await
            .with_context(|| format!("read {table}"))?;
        dumps.push(chunks);
    }
    sqlx::raw_sql("truncate bench_raw.resource_versions, bench_raw.resources")
        .execute(&mut *conn)
        .await
        .context("empty the scratch tables")?;
    // Flush the pipeline's dirty pages now rather than during the COPY
    // (best effort: needs superuser or pg_checkpoint).
    let _ = sqlx::raw_sql("checkpoint").execute(&mut *conn).await;

    let mut rows = [0u64; 2];
    let bytes: u64 = dumps.iter().flatten().map(|c| c.len() as u64).sum();
    let started = Instant::now();
    for (i, table) in TABLES.iter().enumerate() {
        let mut copy = conn
            .copy_in_raw(&format!("copy {table} from stdin"))
            .await
            .with_context(|| format!("start copying into {table}"))?;
        for chunk in dumps[i].drain(..) {
            copy.send(chunk).await.with_context(|| format!("copy into {table}"))?;
        }
        rows[i] = copy.finish().await.with_context(|| format!("finish copying into {table}"))?;
    }
    let elapsed = started.elapsed();
    Ok(CopyResult {
        seconds: elapsed.as_secs_f64(),
        version_rows: rows[0],
        current_rows: rows[1],
        bytes,
        rows_per_sec: rate(rows[0], elapsed),
    })
}
