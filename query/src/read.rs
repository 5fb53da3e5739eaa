//! Read, vread and instance history.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Executor as _, PgPool, Postgres, Row as _, Transaction};

use schemas::{ResourceId, ResourceType, SnapshotName, TenantId, Version};

use crate::QueryError;

/// One stored version of a resource.
#[derive(Debug, Clone)]
pub struct VersionRow {
    pub version: Version,
    pub op: String,
    pub last_updated: DateTime<Utc>,
    /// The resource JSON; `None` for a delete.
    pub resource: Option<String>,
}

impl VersionRow {
    pub fn is_delete(&self) -> bool {
        self.op == "delete"
    }
}

/// The outcome of reading a resource's current version.
#[derive(Debug, Clone)]
pub enum ReadResult {
    Live(VersionRow),
    /// The resource's newest version is a delete.
    Deleted(VersionRow),
}

/// The read service.
#[derive(Clone)]
pub struct Queries {
    pool: PgPool,
    /// A kept snapshot whose tables answer instead of the live ones.
    snapshot: Option<SnapshotName>,
    /// The statement timeout of every connection, in ms.
    read_timeout_ms: u64,
}

/// The statement timeout of reader connections unless configured (the
/// same bound search has always had).
pub const DEFAULT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(30_000);

/// The role every query-side connection runs as: it owns no table, cannot
/// bypass row-level security, and sees only the rows of the tenant set in
/// its transaction.
pub const READER_ROLE: &str = "fhirstream_reader";

impl Queries {
    /// Opens the query side's own pool; every connection switches to
    /// [`READER_ROLE`] as it is opened, so no query on it escapes RLS.
    pub async fn connect(database_url: &str, size: u32) -> Result<Self, sqlx::Error> {
        Self::connect_with(database_url, size, DEFAULT_READ_TIMEOUT).await
    }

    /// [`Self::connect`] with a statement timeout of `read_timeout` on every
    /// connection: set per session, it bounds every read path (reads,
    /// history and `_at`, conditional lookups, search and includes, export)
    /// without each having to remember it, so no request of one tenant can
    /// hold a reader connection for longer.
    pub async fn connect_with(
        database_url: &str,
        size: u32,
        read_timeout: std::time::Duration,
    ) -> Result<Self, sqlx::Error> {
        let timeout_ms = read_timeout.as_millis().clamp(1, u128::from(u32::MAX));
        let pool = PgPoolOptions::new()
            .max_connections(size.max(1))
            .acquire_timeout(std::time::Duration::from_secs(3))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    conn.execute("set role fhirstream_reader").await?;
                    conn.execute(AssertSqlSafe(format!("set statement_timeout = {timeout_ms}"))).await?;
                    Ok(())
                })
            })
            .connect(database_url)
            .await?;
        Ok(Self { pool, snapshot: None, read_timeout_ms: timeout_ms as u64 })
    }

    /// The same queries, answered from a kept snapshot instead of the live
    /// read model (check [`Self::snapshot_tenant`] first).
    pub fn in_snapshot(&self, snapshot: SnapshotName) -> Self {
        Self { pool: self.pool.clone(), snapshot: Some(snapshot), read_timeout_ms: self.read_timeout_ms }
    }

    /// The tenant a snapshot was built for, and the time it was cut at (if
    /// cut by time); `None` when there is no such snapshot.
    pub async fn snapshot_tenant(
        &self,
        snapshot: &SnapshotName,
    ) -> Result<Option<(String, Option<DateTime<Utc>>)>, QueryError> {
        let meta = format!("\"{}\".replay_meta", snapshot.schema());
        let exists: Option<String> =
            sqlx::query_scalar("select to_regclass($1)::text").bind(&meta).fetch_one(&self.pool).await?;
        if exists.is_none() {
            return Ok(None);
        }
        let row: Option<(String, Option<DateTime<Utc>>)> =
            sqlx::query_as(AssertSqlSafe(format!("select tenant, until_time from {meta} limit 1")))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row)
    }

    /// The statement timeout of every read, in ms.
    pub fn read_timeout_ms(&self) -> u64 {
        self.read_timeout_ms
    }

    /// The reader pool (every connection runs as `fhirstream_reader`).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction scoped to one tenant: row-level security shows it only
    /// that tenant's rows. The setting is transaction-local, so it can never
    /// outlive the request on a pooled connection.
    pub async fn begin(&self, tenant: &TenantId) -> Result<Transaction<'static, Postgres>, QueryError> {
        self.begin_reading(tenant, &[]).await
    }

    /// A transaction of `tenant` that also sees the shared space's rows of
    /// the `shared` types (the tenant's opt-in), and nothing else.
    pub async fn begin_reading(
        &self,
        tenant: &TenantId,
        shared: &[ResourceType],
    ) -> Result<Transaction<'static, Postgres>, QueryError> {
        let mut tx = self.pool.begin().await?;
        let types: Vec<&str> = shared.iter().map(|t| t.as_str()).collect();
        // One round trip for every setting. The statement timeout bounds
        // each statement, so no read can pin a connection. Custom plans:
        // a generic plan of a prepared statement can neither prune
        // partitions by tenant at planning time nor use the values'
        // selectivity.
        sqlx::query(
            "select set_config('app.tenant', $1, true), set_config('app.shared_types', $2, true),
                    set_config('statement_timeout', $3, true), set_config('plan_cache_mode', 'force_custom_plan', true)",
        )
        .bind(tenant.as_str())
        .bind(types.join(","))
        .bind(self.read_timeout_ms.to_string())
        .execute(&mut *tx)
        .await?;
        if let Some(s) = &self.snapshot {
            // Unqualified names now find the snapshot's tables first; the
            // read functions stay in `public`.
            sqlx::query("select set_config('search_path', $1, true)")
                .bind(format!("\"{}\", public", s.schema()))
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// The current version of a resource, or `None` if the tenant has none.
    pub async fn read(
        &self,
        tenant: &TenantId,
        rt: ResourceType,
        id: &ResourceId,
    ) -> Result<Option<ReadResult>, QueryError> {
        let query = sqlx::query("select * from fhirstream_read($1, $2, $3)")
            .bind(tenant.as_str())
            .bind(rt.as_str())
            .bind(id.as_str());
        let row = match self.snapshot {
            None => query.fetch_optional(&self.pool).await?,
            Some(_) => query.fetch_optional(&mut *self.begin(tenant).await?).await?,
        };
        let Some(row) = row else { return Ok(None) };
        let v = version_row(&row)?;
        Ok(Some(if v.is_delete() { ReadResult::Deleted(v) } else { ReadResult::Live(v) }))
    }

    /// One version of a resource.
    pub async fn vread(
        &self,
        tenant: &TenantId,
        rt: ResourceType,
        id: &ResourceId,
        version: Version,
    ) -> Result<Option<VersionRow>, QueryError> {
        let query = sqlx::query("select * from fhirstream_vread($1, $2, $3, $4)")
            .bind(tenant.as_str())
            .bind(rt.as_str())
            .bind(id.as_str())
            .bind(version.get() as i64);
        let row = match self.snapshot {
            None => query.fetch_optional(&self.pool).await?,
            Some(_) => query.fetch_optional(&mut *self.begin(tenant).await?).await?,
        };
        row.as_ref().map(version_row).transpose()
    }
}

fn version_row(row: &sqlx::postgres::PgRow) -> Result<VersionRow, QueryError> {
    let version: i64 = row.try_get("version")?;
    Ok(VersionRow {
        version: Version::new(version as u64)
            .ok_or_else(|| QueryError::Internal(anyhow::anyhow!("stored version {version} is not positive")))?,
        op: row.try_get("op")?,
        last_updated: row.try_get("last_updated")?,
        resource: row.try_get("resource")?,
    })
}
