//! Read, vread and instance history.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row as _};

use schemas::{ResourceId, ResourceType, TenantId, Version};

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
}

impl Queries {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The current version of a resource, or `None` if the tenant has none.
    pub async fn read(
        &self,
        tenant: &TenantId,
        rt: ResourceType,
        id: &ResourceId,
    ) -> Result<Option<ReadResult>, QueryError> {
        let row = sqlx::query(
            "select v.version, v.op, v.last_updated, v.resource::text as resource
             from resources r
             join resource_versions v
               on v.tenant_id = r.tenant_id and v.resource_type = r.resource_type
              and v.id = r.id and v.version = r.version
             where r.tenant_id = $1 and r.resource_type = $2 and r.id = $3",
        )
        .bind(tenant.as_str())
        .bind(rt.as_str())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
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
        let row = sqlx::query(
            "select version, op, last_updated, resource::text as resource
             from resource_versions
             where tenant_id = $1 and resource_type = $2 and id = $3 and version = $4",
        )
        .bind(tenant.as_str())
        .bind(rt.as_str())
        .bind(id.as_str())
        .bind(version.get() as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(version_row).transpose()
    }

    /// A resource's versions, newest first, at most `count`.
    pub async fn history(
        &self,
        tenant: &TenantId,
        rt: ResourceType,
        id: &ResourceId,
        count: u32,
    ) -> Result<Vec<VersionRow>, QueryError> {
        let rows = sqlx::query(
            "select version, op, last_updated, resource::text as resource
             from resource_versions
             where tenant_id = $1 and resource_type = $2 and id = $3
             order by version desc
             limit $4",
        )
        .bind(tenant.as_str())
        .bind(rt.as_str())
        .bind(id.as_str())
        .bind(i64::from(count))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_row).collect()
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
