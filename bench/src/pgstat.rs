//! PostgreSQL's own counters around a phase: commits, rows written, WAL
//! records, bytes and syncs. Read-only transactions write no WAL, so WAL
//! syncs per second are (group commits of) write transactions: writes per
//! sync says how many events a projector batch carried.
//!
//! Backends publish their counters only when idle and at most once a
//! second, so [`around`] waits that long before each snapshot and divides by
//! the phase's own duration.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;

/// How long backends may hold counters back (PostgreSQL's PGSTAT_MIN_INTERVAL
/// is one second).
const STATS_FLUSH: Duration = Duration::from_millis(1200);

/// Runs `work` and reports PostgreSQL's rates during it.
pub async fn around<T>(pool: &PgPool, work: impl Future<Output = T>) -> (T, Option<PgRates>) {
    tokio::time::sleep(STATS_FLUSH).await;
    let before = PgCounters::take(pool).await;
    let started = Instant::now();
    let out = work.await;
    let elapsed = started.elapsed();
    tokio::time::sleep(STATS_FLUSH).await;
    let after = PgCounters::take(pool).await;
    let rates = before.zip(after).and_then(|(b, a)| b.rates_over(&a, elapsed));
    (out, rates)
}

/// Cumulative counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgCounters {
    commits: i64,
    inserted: i64,
    updated: i64,
    wal: Option<(i64, f64, i64)>,
}

impl PgCounters {
    /// Best effort: `None` when the statistics views cannot be read.
    pub async fn take(pool: &PgPool) -> Option<Self> {
        let db: (i64, i64, i64) = sqlx::query_as(
            "select xact_commit, tup_inserted, tup_updated from pg_stat_database where datname = current_database()",
        )
        .fetch_one(pool)
        .await
        .ok()?;
        // pg_stat_wal exists from PostgreSQL 14.
        let wal: Option<(i64, f64, i64)> =
            sqlx::query_as("select wal_records, wal_bytes::float8, wal_sync from pg_stat_wal")
                .fetch_one(pool)
                .await
                .ok();
        Some(Self { commits: db.0, inserted: db.1, updated: db.2, wal })
    }

    /// Rates of the change from `self` to `later`, over `elapsed`.
    pub fn rates_over(&self, later: &Self, elapsed: Duration) -> Option<PgRates> {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let per_sec = |a: i64, b: i64| (b - a) as f64 / secs;
        let wal = self.wal.zip(later.wal);
        Some(PgRates {
            commits_per_sec: per_sec(self.commits, later.commits),
            rows_inserted_per_sec: per_sec(self.inserted, later.inserted),
            rows_updated_per_sec: per_sec(self.updated, later.updated),
            wal_records_per_sec: wal.map(|(a, b)| per_sec(a.0, b.0)),
            wal_mib_per_sec: wal.map(|(a, b)| (b.1 - a.1) / secs / 1_048_576.0),
            wal_syncs_per_sec: wal.map(|(a, b)| per_sec(a.2, b.2)),
        })
    }
}

/// What PostgreSQL did per second during a phase: the server's database for
/// commits and rows, the whole cluster for WAL (other databases' work on the
/// same PostgreSQL shows up there).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PgRates {
    pub commits_per_sec: f64,
    pub rows_inserted_per_sec: f64,
    pub rows_updated_per_sec: f64,
    pub wal_records_per_sec: Option<f64>,
    pub wal_mib_per_sec: Option<f64>,
    pub wal_syncs_per_sec: Option<f64>,
}

impl PgRates {
    /// `4,100 commits/s, 310 WAL syncs/s, ...` for the text report.
    pub fn describe(&self) -> String {
        let n = crate::report::table::number;
        let mut out = vec![
            format!("{} commits/s", n(self.commits_per_sec)),
            format!("{} rows inserted/s", n(self.rows_inserted_per_sec)),
            format!("{} rows updated/s", n(self.rows_updated_per_sec)),
        ];
        if let Some(s) = self.wal_syncs_per_sec {
            out.push(format!("{} WAL syncs/s", n(s)));
        }
        if let Some(m) = self.wal_mib_per_sec {
            out.push(format!("{} MiB/s WAL", n(m)));
        }
        out.join(", ")
    }
}
