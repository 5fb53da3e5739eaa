//! Type- and system-level history: a tenant's versions in stream order,
//! newest first, paged by stream sequence.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use schemas::{ResourceType, TenantId};

use crate::{Queries, QueryError};

/// One version in a history listing.
#[derive(Debug, Clone)]
pub struct Change {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub op: String,
    pub last_updated: DateTime<Utc>,
    /// Stream sequence of the event: the paging position.
    pub seq: i64,
    pub resource: Option<String>,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ChangeFilter {
    pub resource_type: Option<ResourceType>,
    pub since: Option<DateTime<Utc>>,
    /// Only versions older (in stream order) than this sequence.
    pub before_seq: Option<i64>,
}

impl Queries {
    /// Versions matching `filter`, newest first, at most `limit`, and the
    /// number of all versions matching it (ignoring `before_seq`).
    pub async fn changes(
        &self,
        tenant: &TenantId,
        filter: &ChangeFilter,
        limit: i64,
    ) -> Result<(Vec<Change>, u64), QueryError> {
        let mut tx = self.begin(tenant).await?;
        let rt = filter.resource_type.map(|t| t.as_str());
        let total: i64 = sqlx::query_scalar(
            "select count(*) from resource_versions v
             where v.tenant_id = $1 and ($2::text is null or v.resource_type = $2)
               and ($3::timestamptz is null or v.last_updated >= $3)",
        )
        .bind(tenant.as_str())
        .bind(rt)
        .bind(filter.since)
        .fetch_one(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "select v.resource_type, v.id, v.version, v.op, v.last_updated, v.seq, v.resource::text as resource
             from resource_versions v
             where v.tenant_id = $1 and ($2::text is null or v.resource_type = $2)
               and ($3::timestamptz is null or v.last_updated >= $3)
               and ($4::int8 is null or v.seq < $4)
             order by v.seq desc
             limit $5",
        )
        .bind(tenant.as_str())
        .bind(rt)
        .bind(filter.since)
        .bind(filter.before_seq)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let changes = rows
            .iter()
            .map(|r| {
                Ok(Change {
                    resource_type: r.try_get("resource_type")?,
                    id: r.try_get("id")?,
                    version: r.try_get("version")?,
                    op: r.try_get("op")?,
                    last_updated: r.try_get("last_updated")?,
                    seq: r.try_get("seq")?,
                    resource: r.try_get("resource")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok((changes, total as u64))
    }
}
